//! Moves between directories (rename into another directory): two
//! directories of 3,000 entries each made by our writer (multi-level
//! indexes), 2,000 random moves between them (files and directories, new
//! names and the same names, onto existing files), checked by ntfsfix,
//! ntfsls, ntfscat and our reader; a directory moved into its own subtree is
//! refused and nothing is written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// Names of a directory through our reader.
fn our_names(img: &Path, dir: &str) -> BTreeSet<String> {
    let fs = open(img);
    fs.read_dir(&GuestPath::from(dir))
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

/// ntfsfix clean, and ntfs-3g's listing and ours equal the model for both
/// directories.
fn check(img: &Path, model: &BTreeMap<&str, BTreeSet<String>>) {
    ntfsfix_clean(img);
    for (dir, want) in model {
        assert_eq!(&ntfsls(img, dir), want, "ntfsls {dir}");
        assert_eq!(&our_names(img, dir), want, "our read_dir {dir}");
    }
}

fn moves(cluster: u32) {
    const N: usize = 3000;
    let img = mkntfs_geom(96, 512, cluster);
    let mut rng = XorShift::new(u64::from(cluster) ^ 0x3077e);
    let mut model: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    // Path -> contents of every file.
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    {
        let mut fs = open_rw(&img.path);
        for d in ["/a", "/b"] {
            fs.mkdir(&GuestPath::from(d), &NewAttrs::default()).unwrap();
            model.insert(d, BTreeSet::new());
        }
        for i in 0..2 * N {
            let dir = if i % 2 == 0 { "/a" } else { "/b" };
            let name = format!("n{:05}{}", (i * 7919) % (2 * N), "-x".repeat(i % 11));
            let p = format!("{dir}/{name}");
            if (i / 2) % 25 == 3 {
                // A directory with one file in it.
                fs.mkdir(&GuestPath::from(p.as_str()), &NewAttrs::default())
                    .unwrap();
                let inner = format!("{p}/inner");
                let n = rng.below(200) as usize;
                let d = rng.bytes(n);
                fs.create_file(&GuestPath::from(inner.as_str()), &d, &NewAttrs::default())
                    .unwrap();
                data.insert(inner, d);
            } else {
                let n = rng.below(300) as usize;
                let d = rng.bytes(n);
                fs.create_file(&GuestPath::from(p.as_str()), &d, &NewAttrs::default())
                    .unwrap();
                data.insert(p, d);
            }
            model.get_mut(dir).unwrap().insert(name);
        }
    }
    check(&img.path, &model);

    // A directory into its own subtree, or into itself: refused, nothing
    // written.
    let sub = model["/a"]
        .iter()
        .find(|n| data.contains_key(&format!("/a/{n}/inner")))
        .unwrap()
        .clone();
    let before = std::fs::read(&img.path).unwrap();
    {
        let mut fs = open_rw(&img.path);
        fs.mkdir(
            &GuestPath::from(format!("/a/{sub}/deeper").as_str()),
            &NewAttrs::default(),
        )
        .unwrap();
    }
    let before_deeper = std::fs::read(&img.path).unwrap();
    assert!(before != before_deeper);
    for to in [
        format!("/a/{sub}/deeper/x"),
        format!("/a/{sub}/x"),
        format!("/a/{sub}/deeper/{sub}"),
    ] {
        let mut fs = open_rw(&img.path);
        match fs.rename(
            &GuestPath::from(format!("/a/{sub}").as_str()),
            &GuestPath::from(to.as_str()),
        ) {
            Err(FsError::Unsupported { why, .. }) => {
                assert!(why.contains("own subtree"), "{why}")
            }
            other => panic!("{to}: {other:?}"),
        }
        drop(fs);
        assert!(std::fs::read(&img.path).unwrap() == before_deeper, "{to}");
    }
    {
        let mut fs = open_rw(&img.path);
        fs.remove(&GuestPath::from(format!("/a/{sub}/deeper").as_str()))
            .unwrap();
    }

    // Random moves both ways, some onto an existing file of the other
    // directory (which is removed).
    let t = std::time::Instant::now();
    let mut fs = open_rw(&img.path);
    for k in 0..2000usize {
        let (from_dir, to_dir) = if rng.below(2) == 0 {
            ("/a", "/b")
        } else {
            ("/b", "/a")
        };
        let names: Vec<String> = model[from_dir].iter().cloned().collect();
        let name = names[rng.below(names.len() as u64) as usize].clone();
        let from = format!("{from_dir}/{name}");
        let is_dir = data.contains_key(&format!("{from}/inner"));
        let targets: Vec<String> = model[to_dir]
            .iter()
            .filter(|n| !data.contains_key(&format!("{to_dir}/{n}/inner")))
            .cloned()
            .collect();
        let new_name = match rng.below(4) {
            0 if !is_dir && !targets.is_empty() => {
                targets[rng.below(targets.len() as u64) as usize].clone()
            }
            1 => format!("moved-{k}"),
            _ if !model[to_dir].contains(&name) => name.clone(),
            _ => format!("moved-{k}-{name}"),
        };
        let to = format!("{to_dir}/{new_name}");
        fs.rename(
            &GuestPath::from(from.as_str()),
            &GuestPath::from(to.as_str()),
        )
        .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
        model.get_mut(from_dir).unwrap().remove(&name);
        model.get_mut(to_dir).unwrap().insert(new_name);
        if is_dir {
            let d = data.remove(&format!("{from}/inner")).unwrap();
            data.insert(format!("{to}/inner"), d);
        } else {
            let d = data.remove(&from).unwrap();
            data.insert(to, d);
        }
        if k % 500 == 499 {
            drop(fs);
            check(&img.path, &model);
            fs = open_rw(&img.path);
        }
    }
    drop(fs);
    println!("2000 moves in {:?}", t.elapsed());
    check(&img.path, &model);
    // Contents follow their files (moved directories' files included).
    let fs = open(&img.path);
    for (p, d) in &data {
        assert_eq!(&fs.read(p).unwrap(), d, "{p}");
    }
    for (p, d) in data.iter().step_by(97) {
        assert_eq!(&ntfscat(&img.path, p), d, "{p}");
    }
    for (p, d) in data.iter().filter(|(p, _)| p.ends_with("/inner")).take(5) {
        assert_eq!(&ntfscat(&img.path, p), d, "{p}");
    }
}

#[test]
fn moves_4096() {
    moves(4096);
}

#[test]
fn moves_512() {
    moves(512);
}
