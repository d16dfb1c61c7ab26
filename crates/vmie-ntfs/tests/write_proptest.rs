//! Random sequences of replace, create, remove, rename (sizes 0 B – 4 MiB),
//! mkdir (new files then go into new directories too) and rmdir (empty:
//! removed; else `NotEmpty`) on fresh mkntfs images of three cluster sizes;
//! after each sequence `ntfsfix -n` is clean, every file reads back through
//! ntfscat and our reader, `ntfsls -l` shows the sizes and the new
//! directories, and the free clusters match the files' runlists, the
//! directories' index allocations and `$MFT`. A refusal (a full index node)
//! must leave the image unchanged. `VMIE_PROPTEST_CASES` (or
//! `PROPTEST_CASES`) sets the cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use vmie_guestfs::{FsError, GuestFs, GuestPath, NewAttrs};

#[derive(Debug, Clone)]
enum Op {
    Replace(usize, usize),
    Create(usize, usize),
    Remove(usize),
    /// Rename file i to a new name (`onto` false) or onto file j of the same
    /// directory.
    Rename(usize, usize, bool),
    /// A new directory in directory i.
    Mkdir(usize),
    /// Remove new directory i (refused as not empty when it holds files).
    Rmdir(usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..1200, 0usize..70_000, 0usize..(4 << 20)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Replace(i, n)),
        3 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Create(i, n)),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(i, j, o)| Op::Rename(i, j, o)),
        1 => any::<usize>().prop_map(Op::Mkdir),
        1 => any::<usize>().prop_map(Op::Rmdir),
    ]
}

const DIRS: [&str; 3] = ["/", "/Windows/System32/config/", "/many/"];

fn run_case(cluster: u32, ops: &[Op], seed: u64) {
    let img = mkntfs_geom(96, 512, cluster);
    let mut rng = XorShift::new(seed);
    let mut files = BTreeMap::new();
    files.insert(
        "/Windows/System32/config/SYSTEM".to_string(),
        rng.bytes(600),
    );
    for i in 0..60 {
        files.insert(format!("/many/entry-{i:03}"), rng.bytes(50));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    img.populate(&["Windows/System32/config", "many"], &refs);
    let mut m = Model::new(&img.path, files);
    for (k, op) in ops.iter().enumerate() {
        let before = std::fs::read(&img.path).unwrap();
        let mut fs = open_rw(&img.path);
        let names: Vec<String> = m.files.keys().cloned().collect();
        let dirs: Vec<String> = DIRS
            .iter()
            .map(|d| d.to_string())
            .chain(m.dirs.iter().map(|d| format!("{d}/")))
            .collect();
        let r = match op {
            Op::Replace(i, n) => {
                let p = names[i % names.len()].clone();
                let data = rng.bytes(*n);
                let r = fs.replace_file(&GuestPath::from(p.as_str()), &data);
                if r.is_ok() {
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
            Op::Rename(i, j, onto) => {
                let from = names[i % names.len()].clone();
                let dir = &from[..=from.rfind('/').unwrap()];
                let siblings: Vec<&String> = names
                    .iter()
                    .filter(|n| n.starts_with(dir) && !n[dir.len()..].contains('/'))
                    .collect();
                let to = if *onto {
                    siblings[j % siblings.len()].clone()
                } else {
                    format!("{dir}renamed-{k}")
                };
                let r = fs.rename(
                    &GuestPath::from(from.as_str()),
                    &GuestPath::from(to.as_str()),
                );
                if r.is_ok() {
                    let data = m.files.remove(&from).unwrap();
                    m.files.insert(to, data);
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
                let new: Vec<String> = m.dirs.iter().cloned().collect();
                if new.is_empty() {
                    continue;
                }
                let d = new[i % new.len()].clone();
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
                    assert!(
                        std::fs::read(&img.path).unwrap() == before,
                        "{op:?}: NotEmpty wrote"
                    );
                    continue;
                }
                r
            }
            Op::Remove(i) => {
                let p = names[i % names.len()].clone();
                let r = fs.remove(&GuestPath::from(p.as_str()));
                if r.is_ok() {
                    m.files.remove(&p);
                }
                r
            }
        };
        match r {
            Ok(()) => {}
            Err(FsError::Unsupported { why, .. }) => {
                assert!(
                    why.contains("splitting not implemented")
                        || why.contains("internal index node")
                        || why.contains("last one of its index block"),
                    "{op:?}: {why}"
                );
                assert!(
                    std::fs::read(&img.path).unwrap() == before,
                    "{op:?}: a refusal wrote"
                );
            }
            Err(e) => panic!("{op:?}: {e}"),
        }
        if m.files.is_empty() {
            break;
        }
    }
    m.verify(&img.path);
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
