//! Every libosinfo short id we give for the Linux samples we have (the
//! fixture trees, chef/os_release and python-distro in ../shared/realdata)
//! is one libosinfo knows: its `<short-id>` is in Debian's osinfo-db
//! (`/usr/share/osinfo/os/*/*.xml`, installed by `cargo xtask deps`).
//!
//! Debian 12's osinfo-db is from 2022, older than some samples (Debian 12,
//! Fedora 43, Ubuntu 24.04). An id the database lacks passes only when it is
//! a later release of a line the database has: ids of the same prefix and
//! shape (`ubuntuN.N`, `sleNspN`, `debianN`) are there and ours is above
//! every one of them (when that line is the database's newest), or above
//! every one with its major version, or its
//! major version is one more than one of theirs (openSUSE Leap 16 after
//! 15, though 42.3 came before). Such ids are counted and printed; so are
//! the [`KNOWN_GAPS`]; anything else fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{memfs_from, realdata, require};
use vmie_guestfs::MemFs;
use vmie_os::{inspect_distro, linux_osinfo, InspectOptions};

const OSINFO_OS: &str = "/usr/share/osinfo/os";

/// Every `<short-id>` of osinfo-db's OS files.
fn db_ids() -> BTreeSet<String> {
    let root = Path::new(OSINFO_OS);
    assert!(
        root.is_dir(),
        "{OSINFO_OS} is missing: install Debian's osinfo-db (run `cargo xtask deps` as root)"
    );
    let mut ids = BTreeSet::new();
    for vendor in std::fs::read_dir(root).unwrap() {
        let vendor = vendor.unwrap().path();
        if !vendor.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&vendor).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_none_or(|e| e != "xml") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("<short-id>") {
                rest = &rest[i + "<short-id>".len()..];
                let end = rest.find("</short-id>").unwrap();
                ids.insert(rest[..end].trim().to_string());
                rest = &rest[end..];
            }
        }
    }
    assert!(
        ids.len() > 500,
        "only {} short ids under {OSINFO_OS}: is osinfo-db complete? (run `cargo xtask deps`)",
        ids.len()
    );
    ids
}

/// Well-formed ids of real releases that osinfo-db never listed, and why
/// they are still right.
const KNOWN_GAPS: &[(&str, &str)] = &[(
    "slackware14.1",
    "Slackware 14.1 (2013): osinfo-db lists only slackware14.2 and slackware-current",
)];

/// `ubuntu22.04` → ("ubuntu", ".", [22, 4]); `sle15sp5` → ("sle", "sp",
/// [15, 5]); `debian12` → ("debian", "", [12]).
fn split(id: &str) -> (String, String, Vec<u64>) {
    let start = id.find(|c: char| c.is_ascii_digit()).unwrap_or(id.len());
    let (prefix, rest) = id.split_at(start);
    let mut shape = String::new();
    let mut nums = Vec::new();
    let mut cur = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                nums.push(cur.parse().unwrap());
                cur.clear();
            }
            shape.push(c);
        }
    }
    if !cur.is_empty() {
        nums.push(cur.parse().unwrap());
    }
    (prefix.to_string(), shape, nums)
}

/// `Ok(true)` in the database, `Ok(false)` newer than every id of its kind
/// there, `Err` otherwise.
fn judge(id: &str, db: &BTreeSet<String>) -> Result<bool, String> {
    if db.contains(id) {
        return Ok(true);
    }
    let (prefix, shape, nums) = split(id);
    let same: Vec<Vec<u64>> = db
        .iter()
        .map(|d| split(d))
        .filter(|(p, s, n)| p == &prefix && s == &shape && !n.is_empty())
        .map(|(_, _, n)| n)
        .collect();
    let Some(max) = same.iter().max() else {
        return Err(format!(
            "{id}: osinfo-db has no id of the form {prefix}N{shape}..."
        ));
    };
    // The same release spelt otherwise (`mandriva2011` for `mandriva2011.0`).
    let trim = |n: &[u64]| {
        let mut v = n.to_vec();
        while v.len() > 1 && v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    if let Some(other) = db.iter().find(|d| {
        let (p, _, n) = split(d);
        p == prefix && !n.is_empty() && trim(&n) == trim(&nums)
    }) {
        return Err(format!("{id}: osinfo-db spells this release {other}"));
    }
    let major = nums.first().copied().unwrap_or(0);
    let same_major = same.iter().filter(|n| n.first() == Some(&major)).max();
    // A line the database stopped using (`debian4.0` .. `debian6.0`, then
    // `debian7`) admits no newer releases.
    let newest_major = db
        .iter()
        .map(|d| split(d))
        .filter(|(p, _, n)| p == &prefix && !n.is_empty())
        .filter_map(|(_, _, n)| n.first().copied())
        .max();
    let current_line = max.first().copied() == newest_major;
    let newer = (current_line && &nums > max)
        || same_major.is_some_and(|m| &nums > m)
        || (current_line
            && same_major.is_none()
            && same
                .iter()
                .any(|n| n.first() == Some(&(major.wrapping_sub(1)))));
    if newer {
        Ok(false)
    } else {
        Err(format!(
            "{id}: not in osinfo-db, yet not a later release than its {prefix}{}{shape}...",
            same_major.unwrap_or(max).first().copied().unwrap_or(0)
        ))
    }
}

/// (sample, filesystem) for every Linux sample we have.
fn samples() -> Vec<(String, MemFs)> {
    let mut out = Vec::new();
    let trees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees");
    for e in std::fs::read_dir(&trees).unwrap() {
        let p = e.unwrap().path();
        out.push((
            format!(
                "fixtures/trees/{}",
                p.file_name().unwrap().to_string_lossy()
            ),
            memfs_from(&p),
        ));
    }
    let chef = realdata("chef-os_release");
    require(&chef);
    for e in std::fs::read_dir(&chef).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".md") || name == "LICENSE" || !p.is_file() {
            continue;
        }
        let fs = MemFs::new(&name).with_file("/etc/os-release", &std::fs::read(&p).unwrap());
        out.push((format!("chef-os_release/{name}"), fs));
    }
    let distros = realdata("python-distro/tests/resources/distros");
    require(&distros);
    for e in std::fs::read_dir(&distros).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.push((format!("python-distro/{name}"), memfs_from(&p)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_linux_id_we_give_is_in_osinfo_db() {
    let db = db_ids();
    let version = std::fs::read_to_string("/usr/share/osinfo/VERSION").unwrap_or_default();
    let samples = samples();
    let mut failures = Vec::new();
    let mut in_db = BTreeSet::new();
    let mut newer = BTreeSet::new();
    let mut with_id = 0;
    for (name, fs) in &samples {
        let d = inspect_distro(fs, &InspectOptions::default());
        let Some(id) = linux_osinfo(
            &d.distro,
            d.os_release_id.as_deref(),
            d.major_version,
            d.minor_version,
        ) else {
            continue;
        };
        with_id += 1;
        if let Some((_, why)) = KNOWN_GAPS.iter().find(|(g, _)| *g == id) {
            assert!(
                !db.contains(&id),
                "{id} is in osinfo-db now: drop it from KNOWN_GAPS"
            );
            println!("{name}: {id}, known gap: {why}");
            continue;
        }
        match judge(&id, &db) {
            Ok(true) => {
                in_db.insert(id);
            }
            Ok(false) => {
                newer.insert(id);
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "{} samples, {with_id} with an osinfo id: {} distinct ids in osinfo-db {}, {} newer than it: {}",
        samples.len(),
        in_db.len(),
        version.trim(),
        newer.len(),
        newer.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    assert!(with_id > 100, "only {with_id} samples gave an id");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The fixtures' own guests (Debian 12, Ubuntu 22.04, RHEL 8.6).
    for id in ["ubuntu22.04", "rhel8.6"] {
        assert!(in_db.contains(id), "{id} not seen in the database");
    }
    assert!(newer.contains("debian12"));
}

/// The "newer than the database" escape cannot hide a malformed id.
#[test]
fn the_judge_rejects_malformed_ids() {
    let db = db_ids();
    assert_eq!(judge("ubuntu22.04", &db), Ok(true));
    assert_eq!(judge("ubuntu99.04", &db), Ok(false));
    assert!(judge("ubuntu22.4", &db).is_err(), "minor not zero-padded");
    assert_eq!(judge("sle15sp9", &db), Ok(false));
    assert_eq!(judge("opensuse16.0", &db), Ok(false));
    assert!(judge("oraclelinux8.5", &db).is_err(), "Oracle is olN.M");
    assert!(judge("debian12.4", &db).is_err(), "Debian 4+ is debianN");
    assert!(judge("mandriva2011.0", &db).is_err(), "spelt mandriva2011");
    assert!(judge("debian11.0", &db).is_err(), "spelt debian11");
}
