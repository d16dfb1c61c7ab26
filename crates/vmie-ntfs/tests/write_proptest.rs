//! Random sequences of replace, create, remove, rename within a directory,
//! move into another directory (files, onto existing files, and new
//! directories with what they hold; a directory into its own subtree is
//! refused), mkdir and rmdir (empty: removed; else `NotEmpty`), sizes 0 B –
//! 64 MiB (8–64 MiB in a low-weight bucket), on copies of a base image per
//! cluster size (512, 4096, 65536) that our writer filled once per test
//! binary: `/Windows/System32/config/{SYSTEM,SOFTWARE}` and `/many/` with
//! 5,000 small files (a multi-level `$I30` index). After each sequence
//! `ntfsfix -n` is clean, every changed file reads back through ntfscat and
//! our reader, `ntfsls` lists exactly the model in `/many/` and the sizes
//! elsewhere, every untouched file of `/many/` reads back through our reader
//! (a sample through ntfscat), and the free clusters match the files'
//! runlists, the directories' index allocations and `$MFT`. A refusal
//! (`NoSpace`, a record too small for a runlist) writes nothing (the device
//! counts writes). `VMIE_PROPTEST_CASES` (or `PROPTEST_CASES`) sets the cases
//! (16 by default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use common::*;
use proptest::prelude::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// Entries of `/many/` in the base image.
const MANY: usize = 5000;
/// Size of the images, MiB (sparse).
const IMAGE_MIB: u64 = 224;

#[derive(Debug, Clone)]
enum Op {
    Replace(usize, usize),
    Create(usize, usize),
    Remove(usize),
    /// Rename file i to a new name (`onto` false) or onto file j of the same
    /// directory.
    Rename(usize, usize, bool),
    /// Move file i into directory d: a new name, or onto file j there.
    Move(usize, usize, usize, bool),
    /// Move new directory i (and what it holds) into directory d.
    MoveDir(usize, usize),
    /// A new directory in directory i.
    Mkdir(usize),
    /// Remove new directory i (refused as not empty when it holds files).
    Rmdir(usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..1200,
        3 => 0usize..70_000,
        2 => 0usize..(4 << 20),
        1 => (8usize << 20)..(64 << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Replace(i, n)),
        3 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Create(i, n)),
        3 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(i, j, o)| Op::Rename(i, j, o)),
        2 => (any::<usize>(), any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(i, d, j, o)| Op::Move(i, d, j, o)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, d)| Op::MoveDir(i, d)),
        1 => any::<usize>().prop_map(Op::Mkdir),
        1 => any::<usize>().prop_map(Op::Rmdir),
    ]
}

const DIRS: [&str; 3] = ["/", "/Windows/System32/config/", "/many/"];

fn many_name(i: usize) -> String {
    format!("/many/entry-{i:04}{}", "-x".repeat(i % 17))
}

fn many_data(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; (i * 7) % 97]
}

fn hive(name: &str) -> Vec<u8> {
    name.bytes().cycle().take(600).collect()
}

/// The base image of a cluster size, made once per test binary by our
/// writer (mkntfs, then mkdir and create_file).
fn base(cluster: u32) -> PathBuf {
    static BASES: OnceLock<Mutex<BTreeMap<u32, PathBuf>>> = OnceLock::new();
    let mut bases = BASES.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = bases.get(&cluster) {
        return p.clone();
    }
    let t = std::time::Instant::now();
    let img = mkntfs_geom(IMAGE_MIB, 512, cluster);
    {
        let mut fs = open_rw(&img.path);
        for d in [
            "/Windows",
            "/Windows/System32",
            "/Windows/System32/config",
            "/many",
        ] {
            fs.mkdir(&GuestPath::from(d), &NewAttrs::default()).unwrap();
        }
        for h in ["SYSTEM", "SOFTWARE"] {
            let p = format!("/Windows/System32/config/{h}");
            fs.create_file(&GuestPath::from(p.as_str()), &hive(h), &NewAttrs::default())
                .unwrap();
        }
        for i in 0..MANY {
            fs.create_file(
                &GuestPath::from(many_name(i).as_str()),
                &many_data(i),
                &NewAttrs::default(),
            )
            .unwrap();
        }
    }
    // Kept beside the build (rebuilt by every run of this binary), a sparse
    // copy moved into place.
    let dst = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ntfs-proptest-base-{cluster}.img"));
    let part = dst.with_extension(format!("{}.part", std::process::id()));
    run(
        "cp",
        &[
            std::ffi::OsStr::new("--sparse=always"),
            img.path.as_os_str(),
            part.as_os_str(),
        ],
    );
    std::fs::rename(&part, &dst).unwrap();
    println!(
        "base image for {cluster}-byte clusters in {:?}",
        t.elapsed()
    );
    bases.insert(cluster, dst.clone());
    dst
}

/// Whether a refusal is one this writer may give on these images.
fn acceptable(e: &FsError) -> bool {
    match e {
        FsError::NoSpace { .. } => true,
        FsError::Unsupported { why, .. } => {
            why.contains("does not fit") || why.contains("attribute list")
        }
        _ => false,
    }
}

fn run_case(cluster: u32, ops: &[Op], seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ntfs.img");
    run(
        "cp",
        &[
            std::ffi::OsStr::new("--sparse=always"),
            base(cluster).as_os_str(),
            path.as_os_str(),
        ],
    );
    let mut rng = XorShift::new(seed);
    // Untouched files of /many (index → data), and the model of every other
    // file.
    let mut untouched: BTreeMap<String, usize> = (0..MANY).map(|i| (many_name(i), i)).collect();
    let mut files = BTreeMap::new();
    for h in ["SYSTEM", "SOFTWARE"] {
        files.insert(format!("/Windows/System32/config/{h}"), hive(h));
    }
    let mut m = Model::new(&path, files);
    m.dirs.insert("/many".to_string());
    m.base_free = ntfsinfo_space(&path).2 + m.held(&path);
    let fixed: BTreeSet<String> = [
        "/many",
        "/Windows",
        "/Windows/System32",
        "/Windows/System32/config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut refused = 0;
    for (k, op) in ops.iter().enumerate() {
        let (mut fs, dev) = open_counted(&path);
        let names: Vec<String> = m.files.keys().chain(untouched.keys()).cloned().collect();
        let new_dirs: Vec<String> = m.dirs.difference(&fixed).cloned().collect();
        let dirs: Vec<String> = DIRS
            .iter()
            .map(|d| d.to_string())
            .chain(new_dirs.iter().map(|d| format!("{d}/")))
            .collect();
        // A file of the model by path, taken out of `untouched` when needed.
        let take = |m: &mut Model, untouched: &mut BTreeMap<String, usize>, p: &str| match untouched
            .remove(p)
        {
            Some(i) => many_data(i),
            None => m.files.remove(p).unwrap(),
        };
        let r = match op {
            Op::Replace(i, n) => {
                let p = names[i % names.len()].clone();
                let data = rng.bytes(*n);
                let r = fs.replace_file(&GuestPath::from(p.as_str()), &data);
                if r.is_ok() {
                    take(&mut m, &mut untouched, &p);
                    m.files.insert(p, data);
                }
                r
            }
            Op::Create(i, n) => {
                let p = format!("{}new-{k}-{}", dirs[i % dirs.len()], i % 1000);
                let data = rng.bytes(*n);
                let r = fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default());
                if r.is_ok() {
                    m.files.insert(p, data);
                }
                r
            }
            Op::Remove(i) => {
                let p = names[i % names.len()].clone();
                let r = fs.remove(&GuestPath::from(p.as_str()));
                if r.is_ok() {
                    take(&mut m, &mut untouched, &p);
                }
                r
            }
            Op::Rename(..) | Op::Move(..) => {
                let (i, j, onto, to_dir) = match op {
                    Op::Rename(i, j, o) => {
                        let from = &names[i % names.len()];
                        (*i, *j, *o, from[..=from.rfind('/').unwrap()].to_string())
                    }
                    Op::Move(i, d, j, o) => (*i, *j, *o, dirs[d % dirs.len()].clone()),
                    _ => unreachable!(),
                };
                let from = names[i % names.len()].clone();
                let in_dir: Vec<&String> = names
                    .iter()
                    .filter(|n| n.starts_with(&to_dir) && !n[to_dir.len()..].contains('/'))
                    .collect();
                let to = if onto && !in_dir.is_empty() {
                    in_dir[j % in_dir.len()].clone()
                } else {
                    format!("{to_dir}renamed-{k}")
                };
                let r = fs.rename(
                    &GuestPath::from(from.as_str()),
                    &GuestPath::from(to.as_str()),
                );
                if r.is_ok() && from != to {
                    let data = take(&mut m, &mut untouched, &from);
                    untouched.remove(&to);
                    m.files.insert(to, data);
                }
                r
            }
            Op::MoveDir(i, d) => {
                if new_dirs.is_empty() {
                    continue;
                }
                let src = new_dirs[i % new_dirs.len()].clone();
                let to_dir = dirs[d % dirs.len()].clone();
                let to = format!("{to_dir}moved-{k}");
                let r = fs.rename(
                    &GuestPath::from(src.as_str()),
                    &GuestPath::from(to.as_str()),
                );
                if to_dir.starts_with(&format!("{src}/")) {
                    match &r {
                        Err(FsError::Unsupported { why, .. }) if why.contains("own subtree") => {}
                        other => panic!("{op:?}: {src} -> {to}: {other:?}"),
                    }
                    assert_eq!(
                        dev.writes.load(Ordering::SeqCst),
                        0,
                        "{op:?}: a refusal wrote"
                    );
                    continue;
                }
                if r.is_ok() {
                    let prefix = format!("{src}/");
                    let moved = |p: &String| {
                        if p == &src {
                            Some(to.clone())
                        } else {
                            p.strip_prefix(&prefix).map(|rest| format!("{to}/{rest}"))
                        }
                    };
                    m.files = std::mem::take(&mut m.files)
                        .into_iter()
                        .map(|(p, d)| (moved(&p).unwrap_or(p), d))
                        .collect();
                    m.dirs = std::mem::take(&mut m.dirs)
                        .into_iter()
                        .map(|p| moved(&p).unwrap_or(p))
                        .collect();
                }
                r
            }
            Op::Mkdir(i) => {
                let p = format!("{}dir-{k}", dirs[i % dirs.len()]);
                let r = fs.mkdir(&GuestPath::from(p.as_str()), &NewAttrs::default());
                if r.is_ok() {
                    m.dirs.insert(p);
                }
                r
            }
            Op::Rmdir(i) => {
                if new_dirs.is_empty() {
                    continue;
                }
                let d = new_dirs[i % new_dirs.len()].clone();
                let prefix = format!("{d}/");
                let empty = !m
                    .files
                    .keys()
                    .chain(m.dirs.iter())
                    .any(|p| p.starts_with(&prefix));
                let r = fs.remove(&GuestPath::from(d.as_str()));
                if empty {
                    r.as_ref().unwrap();
                    m.dirs.remove(&d);
                } else {
                    assert!(matches!(r, Err(FsError::NotEmpty { .. })), "{op:?}: {r:?}");
                    assert_eq!(
                        dev.writes.load(Ordering::SeqCst),
                        0,
                        "{op:?}: NotEmpty wrote"
                    );
                    continue;
                }
                r
            }
        };
        match r {
            Ok(()) => {}
            Err(e) if acceptable(&e) => {
                refused += 1;
                assert_eq!(
                    dev.writes.load(Ordering::SeqCst),
                    0,
                    "{op:?}: a refusal ({e}) wrote"
                );
            }
            Err(e) => panic!("{op:?}: {e}"),
        }
    }
    if refused > 0 {
        println!("{refused} refusals in {} ops", ops.len());
    }
    m.verify(&path);
    // /many lists exactly the model; its untouched files read back.
    let want: BTreeSet<String> = m
        .files
        .keys()
        .chain(m.dirs.iter())
        .chain(untouched.keys())
        .filter_map(|p| p.strip_prefix("/many/"))
        .filter(|rest| !rest.contains('/'))
        .map(String::from)
        .collect();
    assert_eq!(ntfsls(&path, "/many"), want, "ntfsls /many");
    let sizes = ntfsls_sizes(&path, "/many");
    let fs = open(&path);
    for (p, &i) in &untouched {
        let name = p.strip_prefix("/many/").unwrap();
        assert_eq!(sizes.get(name), Some(&(many_data(i).len() as u64)), "{p}");
        assert_eq!(fs.read(p).unwrap(), many_data(i), "{p}");
    }
    for (p, &i) in untouched.iter().step_by(1000) {
        assert_eq!(ntfscat(&path, p), many_data(i), "{p}");
    }
}

fn cases() -> u32 {
    std::env::var("VMIE_PROPTEST_CASES")
        .or_else(|_| std::env::var("PROPTEST_CASES"))
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_sequences(cluster in prop_oneof![Just(512u32), Just(4096), Just(65536)],
                        ops in prop::collection::vec(op(), 1..12),
                        seed in any::<u64>()) {
        run_case(cluster, &ops, seed);
    }
}
