//! Random sequences of create / replace / rename / remove / mkdir (0 B to 8 MiB,
//! biased small) in a 5,000-entry htree directory and in /etc, across a
//! matrix of filesystem flavours. The model holds every regular file of the
//! image (the 5,000 entries included), so any of them can be picked. After
//! each sequence: every file reads back as the model says through ext4-view
//! (an independent reader, our commit-time self-check), e2fsck -fn is clean,
//! and debugfs dumps the whole tree, which must hold exactly the model's
//! files with exactly their bytes.
//!
//! 40 cases per flavour × 5 flavours = 200 sequences by default;
//! `PROPTEST_CASES=N` sets the cases per flavour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vmie_guestfs::{FsError, GuestFs, NewAttrs};

#[derive(Debug, Clone)]
struct Op {
    kind: u8,
    a: u16,
    b: u16,
    in_big: bool,
    size: usize,
    seed: u8,
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..200,
        3 => 0usize..8192,
        2 => 0usize..(256 << 10),
        1 => 0usize..(8 << 20),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    (
        0u8..4,
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
        size_strategy(),
        any::<u8>(),
    )
        .prop_map(|(kind, a, b, in_big, size, seed)| Op {
            kind,
            a,
            b,
            in_big,
            size,
            seed,
        })
}

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| {
            (i as u32)
                .wrapping_mul(u32::from(seed) | 1)
                .wrapping_add((i >> 9) as u32) as u8
        })
        .collect()
}

type Model = BTreeMap<String, Option<Vec<u8>>>;

/// Every regular file under `dir` (guest path -> bytes), and every directory.
fn host_tree(dir: &Path, prefix: &str, files: &mut Model, dirs: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            dirs.push(name.clone());
            host_tree(&e.path(), &name, files, dirs);
        } else if t.is_file() {
            files.insert(name, Some(std::fs::read(e.path()).unwrap()));
        }
    }
}

fn run_case(template: &Path, initial: &Model, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("case.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(template)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let mut model = initial.clone();
    let mut s = open(&img);
    let mut counter = 0u32;
    let mut dirs: Vec<String> = vec!["/etc".into(), "/big".into()];
    for op in ops {
        let live: Vec<String> = model
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let pick = |n: u16| live.get(usize::from(n) % live.len().max(1)).cloned();
        let fresh = |counter: &mut u32, in_big: bool| {
            *counter += 1;
            if in_big {
                format!("/big/new-{counter}-{}", "n".repeat(usize::from(op.b % 40)))
            } else {
                let d = &dirs[usize::from(op.a) % dirs.len()];
                format!("{d}/new-{counter}.conf")
            }
        };
        let data = content(op.size, op.seed);
        let res = match op.kind {
            0 => {
                let p = fresh(&mut counter, op.in_big);
                let r = s.fs.create_file(&gp(&p), &data, &NewAttrs::default());
                if r.is_ok() {
                    model.insert(p, Some(data));
                }
                r
            }
            1 => match pick(op.a) {
                Some(p) => {
                    let r = s.fs.replace_file(&gp(&p), &data);
                    if r.is_ok() {
                        model.insert(p, Some(data));
                    }
                    r
                }
                None => Ok(()),
            },
            2 => match pick(op.a) {
                Some(from) => {
                    // Half the time over an existing file, else a new name.
                    let to = if op.b % 2 == 0 {
                        pick(op.b / 2).unwrap_or_else(|| fresh(&mut counter, op.in_big))
                    } else {
                        fresh(&mut counter, op.in_big)
                    };
                    let r = s.fs.rename(&gp(&from), &gp(&to));
                    if r.is_ok() && from != to {
                        let v = model.get(&from).cloned().flatten();
                        model.insert(from, None);
                        model.insert(to, v);
                    }
                    r
                }
                None => Ok(()),
            },
            4 => {
                let p = fresh(&mut counter, op.in_big).replace("new-", "dir-");
                let r = s.fs.mkdir(&gp(&p), &NewAttrs::default());
                if r.is_ok() {
                    dirs.push(p);
                }
                r
            }
            _ => match pick(op.a) {
                Some(p) => {
                    let r = s.fs.remove(&gp(&p));
                    if r.is_ok() {
                        model.insert(p, None);
                    }
                    r
                }
                None => Ok(()),
            },
        };
        match res {
            Ok(()) | Err(FsError::NoSpace { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("{op:?}: {e}"))),
        }
    }
    let expected: Vec<_> = model.iter().map(|(k, v)| (gp(k), v.clone())).collect();
    s.fs.verify_paths(&expected)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    s.commit();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    prop_assert!(
        out.status.success(),
        "e2fsck: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // debugfs dumps the whole tree: exactly the model's files, byte for byte,
    // and every directory made.
    let out = dir.path().join("dump");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", out.display()))
        .arg(&img)
        .output()
        .unwrap();
    prop_assert!(st.status.success(), "debugfs rdump failed");
    let (mut got, mut got_dirs) = (Model::new(), Vec::new());
    host_tree(&out, "", &mut got, &mut got_dirs);
    let want: Model = model.into_iter().filter(|(_, v)| v.is_some()).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    prop_assert!(
        missing.is_empty() && extra.is_empty(),
        "debugfs tree differs: missing {:?}, unexpected {:?}",
        missing,
        extra
    );
    for (k, v) in &want {
        prop_assert!(got.get(k) == Some(v), "debugfs: {} has other bytes", k);
    }
    for d in &dirs {
        prop_assert!(got_dirs.contains(d), "debugfs: directory {} missing", d);
    }
    Ok(())
}

fn flavour(kind: &str, args: &[&str]) {
    let t = tree(5000);
    let tpl = mkfs(kind, args, 96, Some(t.path()));
    let mut initial = Model::new();
    host_tree(t.path(), "", &mut initial, &mut Vec::new());
    assert!(initial.len() > 5000);
    assert!(is_htree(&tpl.path, "/big"));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..12), |ops| {
        run_case(&tpl.path, &initial, &ops)
    });
    if let Err(e) = result {
        panic!("{kind} {args:?}: {e}");
    }
}

#[test]
fn prop_ext4() {
    flavour("ext4", &[]);
}

#[test]
fn prop_ext2() {
    flavour("ext2", &[]);
}

#[test]
fn prop_ext4_1k_gdt_csum() {
    flavour("ext4", &["-b", "1024", "-O", "^metadata_csum,uninit_bg"]);
}

#[test]
fn prop_ext4_64bit_seed_noflex_large_dir_orphan_file() {
    flavour(
        "ext4",
        &[
            "-O",
            "64bit,metadata_csum_seed,^flex_bg,large_dir,orphan_file",
        ],
    );
}

#[test]
fn prop_ext3_2k() {
    flavour("ext3", &["-b", "2048"]);
}
