//! Random sequences of create / replace / rename / remove / mkdir (0 B to
//! 2 MiB, biased small) on FAT12, FAT16 and FAT32 volumes made by
//! mkfs.fat and mtools, against a model of the tree. Every operation's
//! outcome is predicted (success, or the refusal the model says; NoSpace is
//! accepted where space may run out) and a failed operation must leave the
//! overlay empty. After each sequence: `fsck.fat -n` is clean, `mdir -/`
//! lists exactly the model's paths, and every file read back by mtools
//! equals the model; the fatfs crate reads the same tree and contents.
//!
//! 24 sequences per FAT type by default; `VMIE_PROPTEST_CASES=N` (or
//! `PROPTEST_CASES=N`) sets the count per type.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vmie_guestfs::{FsError, GuestFs, NewAttrs};

const NAMES: &[&str] = &[
    "a.txt",
    "B.TXT",
    "grub.cfg",
    "Long Name File.cfg",
    "x",
    "Some Dir",
    "d2",
    "MiXeD.Ext",
    ".hidden name",
    "Ünïcödé long name with many characters in it.bin",
    // Long names filling their last long-name slot exactly (13 and 26
    // UTF-16 units: no terminator).
    "Thirteen.char",
    "Twenty-six characters.abcd",
];

#[derive(Debug, Clone)]
enum Op {
    Create {
        parent: u16,
        name: u8,
        size: usize,
        seed: u8,
    },
    Replace {
        file: u16,
        size: usize,
        seed: u8,
    },
    Rename {
        from: u16,
        parent: u16,
        name: u8,
    },
    Remove {
        what: u16,
    },
    Mkdir {
        parent: u16,
        name: u8,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..200,
        3 => 0usize..20_000,
        1 => 0usize..(2 << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = NAMES.len() as u8;
    prop_oneof![
        3 => (any::<u16>(), 0..n, size(), any::<u8>())
            .prop_map(|(parent, name, size, seed)| Op::Create { parent, name, size, seed }),
        3 => (any::<u16>(), size(), any::<u8>()).prop_map(|(file, size, seed)| Op::Replace { file, size, seed }),
        2 => (any::<u16>(), any::<u16>(), 0..n).prop_map(|(from, parent, name)| Op::Rename { from, parent, name }),
        1 => any::<u16>().prop_map(|what| Op::Remove { what }),
        2 => (any::<u16>(), 0..n).prop_map(|(parent, name)| Op::Mkdir { parent, name }),
    ]
}

thread_local! {
    /// Operations that succeeded in this flavour's cases (the test is not vacuous).
    static DONE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// path ("/a/b", as created) -> None for a directory, Some(bytes) for a file.
type Model = BTreeMap<String, Option<Vec<u8>>>;

fn dirs(m: &Model) -> Vec<String> {
    std::iter::once(String::new())
        .chain(
            m.iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.clone()),
        )
        .collect()
}

fn pick<T: Clone>(v: &[T], i: u16) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i as usize % v.len()].clone())
    }
}

fn is_under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(msg()))
    }
}

/// Apply one op; returns Err(test failure) when the outcome is not the
/// predicted one.
fn apply(s: &mut Session, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let attrs = NewAttrs::default();
    let ds = dirs(m);
    let (res, expect_err, may_nospace): (Result<(), FsError>, Option<&str>, bool);
    let update: Box<dyn FnOnce(&mut Model)>;
    match op {
        Op::Create {
            parent,
            name,
            size,
            seed,
        } => {
            let p = format!("{}/{}", pick(&ds, *parent).unwrap(), NAMES[*name as usize]);
            let data = pattern(*size, u32::from(*seed));
            res = s.fs.create_file(&gp(&p), &data, &attrs);
            expect_err = m.contains_key(&p).then_some("exists");
            may_nospace = true;
            update = Box::new(move |m| {
                m.insert(p, Some(data));
            });
        }
        Op::Replace { file, size, seed } => {
            let files: Vec<String> = m
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            let Some(p) = pick(&files, *file) else {
                return Ok(());
            };
            let data = pattern(*size, u32::from(*seed) + 1000);
            res = s.fs.replace_file(&gp(&p), &data);
            expect_err = None;
            may_nospace = true;
            update = Box::new(move |m| {
                m.insert(p, Some(data));
            });
        }
        Op::Rename { from, parent, name } => {
            let all: Vec<String> = m.keys().cloned().collect();
            let Some(src) = pick(&all, *from) else {
                return Ok(());
            };
            let dst = format!("{}/{}", pick(&ds, *parent).unwrap(), NAMES[*name as usize]);
            res = s.fs.rename(&gp(&src), &gp(&dst));
            let src_dir = m[&src].is_none();
            expect_err = if src == dst {
                None
            } else if src_dir && is_under(&dst, &src) {
                Some("unsupported")
            } else if m.get(&dst).is_some_and(Option::is_none) {
                Some("isdir")
            } else if src_dir && m.contains_key(&dst) {
                Some("notdir")
            } else {
                None
            };
            may_nospace = true;
            update = Box::new(move |m| {
                if src == dst {
                    return;
                }
                let moved: Vec<String> = m
                    .keys()
                    .filter(|k| **k == src || is_under(k, &src))
                    .cloned()
                    .collect();
                for k in moved {
                    let v = m.remove(&k).unwrap();
                    m.insert(format!("{dst}{}", &k[src.len()..]), v);
                }
            });
        }
        Op::Remove { what } => {
            let all: Vec<String> = m.keys().cloned().collect();
            let Some(p) = pick(&all, *what) else {
                return Ok(());
            };
            res = s.fs.remove(&gp(&p));
            let busy = m.keys().any(|k| is_under(k, &p));
            expect_err = busy.then_some("notempty");
            may_nospace = false;
            update = Box::new(move |m| {
                m.remove(&p);
            });
        }
        Op::Mkdir { parent, name } => {
            let p = format!("{}/{}", pick(&ds, *parent).unwrap(), NAMES[*name as usize]);
            res = s.fs.mkdir(&gp(&p), &attrs);
            expect_err = m.contains_key(&p).then_some("exists");
            may_nospace = true;
            update = Box::new(move |m| {
                m.insert(p, None);
            });
        }
    }
    match (&res, expect_err) {
        (Ok(()), None) => {
            DONE.with(|d| d.set(d.get() + 1));
            update(m);
            s.commit();
            return Ok(());
        }
        (Err(FsError::NoSpace { .. }), None) if may_nospace => {}
        (Err(FsError::Exists { .. }), Some("exists"))
        | (Err(FsError::IsADirectory { .. }), Some("isdir"))
        | (Err(FsError::NotADirectory { .. }), Some("notdir"))
        | (Err(FsError::Unsupported { .. }), Some("unsupported"))
        | (Err(FsError::NotEmpty { .. }), Some("notempty")) => {}
        _ => {
            return Err(TestCaseError::fail(format!(
                "{op:?}: got {res:?}, expected {expect_err:?}"
            )))
        }
    }
    check(s.overlay.changes().unwrap().is_empty(), || {
        format!("{op:?}: refused ({res:?}) but wrote to the overlay")
    })
}

fn run_case(tpl: &Img, initial: &Model, ops: &[Op]) -> Result<(), TestCaseError> {
    let img = Img {
        dir: tempfile::tempdir().unwrap(),
        path: std::path::PathBuf::new(),
    };
    let path = img.dir.path().join("fat.img");
    std::fs::copy(&tpl.path, &path).unwrap();
    let img = Img { path, ..img };
    let mut m = initial.clone();
    let mut s = open(&img.path);
    for op in ops {
        apply(&mut s, &mut m, op)?;
    }
    drop(s);
    fsck(&img.path);
    let mut want: Vec<String> = m
        .iter()
        .map(|(k, v)| {
            if v.is_none() {
                format!("{k}/")
            } else {
                k.clone()
            }
        })
        .collect();
    want.sort();
    let got = img.tree();
    check(got == want, || {
        format!("mdir -/ lists {got:?}, the model {want:?}")
    })?;
    for (p, v) in &m {
        if let Some(d) = v {
            check(&img.get(p) == d, || {
                format!("mtools reads other bytes in {p}")
            })?;
        }
    }
    // The fatfs crate, a third reader, sees exactly the model: names,
    // kinds and contents.
    let ff = fatfs_tree(&img.path);
    let ff_paths: Vec<&String> = ff.keys().collect();
    let m_paths: Vec<&String> = m.keys().collect();
    check(ff_paths == m_paths, || {
        format!("fatfs lists {ff_paths:?}, the model {m_paths:?}")
    })?;
    for (p, v) in &m {
        check(ff.get(p) == Some(v), || {
            format!("fatfs reads {p} otherwise than the model")
        })?;
    }
    Ok(())
}

fn flavour(bits: u32, kb: u64) {
    let tpl = mkfs(bits, kb, &[]);
    tpl.mmd("/EFI");
    tpl.mmd("/EFI/BOOT");
    let mut initial = Model::new();
    initial.insert("/EFI".into(), None);
    initial.insert("/EFI/BOOT".into(), None);
    for (p, d) in [
        ("/EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1)),
        ("/EFI/BOOT/grub.cfg", b"set timeout=5\n".to_vec()),
        ("/Start Here.txt", pattern(3000, 2)),
    ] {
        tpl.put(p, &d);
        initial.insert(p.into(), Some(d));
    }
    let cases = std::env::var("VMIE_PROPTEST_CASES")
        .or_else(|_| std::env::var("PROPTEST_CASES"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..14), |ops| {
        run_case(&tpl, &initial, &ops)
    });
    if let Err(e) = result {
        panic!("FAT{bits}: {e}");
    }
    let done = DONE.with(std::cell::Cell::get);
    assert!(
        done >= cases as usize,
        "only {done} operations succeeded in {cases} sequences"
    );
}

#[test]
fn prop_fat12() {
    flavour(12, 4096);
}

#[test]
fn prop_fat16() {
    flavour(16, 20_000);
}

#[test]
fn prop_fat32() {
    flavour(32, 40_000);
}
