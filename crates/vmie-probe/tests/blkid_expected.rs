//! Every filesystem image of util-linux's blkid test suite, probed and
//! compared tag by tag with the output blkid's own tests expect
//! (tests/expected/blkid/low-probe-*).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{compare, parse_kv, realdata, unxz};
use vmie_disk::MemDevice;
use vmie_probe::{probe, FsKind, ProbeOptions};

const IMAGES: &str = "util-linux-blkid/tests/ts/blkid/images-fs";
const EXPECTED: &str = "util-linux-blkid/tests/expected/blkid";

/// (image, expected kind). Every image of the suite is listed; the test
/// also checks that none was added upstream without being listed here.
const CASES: &[(&str, FsKind)] = &[
    ("bitlocker-win7", FsKind::Bitlocker),
    ("btrfs", FsKind::Btrfs),
    ("ext2", FsKind::Ext2),
    ("ext3", FsKind::Ext3),
    ("ext4", FsKind::Ext4),
    ("luks1", FsKind::Luks),
    ("luks2", FsKind::Luks),
    ("lvm2", FsKind::Lvm2),
    ("mdraid-1", FsKind::LinuxRaid),
    ("ntfs", FsKind::Ntfs),
    ("swap1", FsKind::Swap),
    ("xfs", FsKind::Xfs),
    ("xfs-log", FsKind::XfsExternalLog),
    ("xfs-v5", FsKind::Xfs),
];

#[test]
fn all_images_are_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(realdata(IMAGES))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".img.xz").map(str::to_string))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = CASES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn blkid_expected_output_matches() {
    let mut failures = Vec::new();
    for &(name, kind) in CASES {
        let img = unxz(&realdata(&format!("{IMAGES}/{name}.img.xz")));
        let expected =
            std::fs::read_to_string(realdata(&format!("{EXPECTED}/low-probe-{name}"))).unwrap();
        let want = parse_kv(&expected);
        let dev = MemDevice::new(name, img);
        let started = std::time::Instant::now();
        let got = probe(&dev, &ProbeOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: nothing recognised"));
        assert!(
            started.elapsed().as_secs() < 5,
            "{name}: probing took {:?}",
            started.elapsed()
        );
        eprintln!("{name}: {got:?}");
        if got.kind != kind {
            failures.push(format!("{name}: kind {:?}, want {kind:?}", got.kind));
        }
        for m in compare(&got, &want, &[]) {
            failures.push(format!("{name}: {m}"));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn russian_ntfs_label() {
    let img = unxz(&realdata(&format!("{IMAGES}/ntfs.img.xz")));
    let p = probe(&MemDevice::new("ntfs", img), &ProbeOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(p.label.as_deref(), Some("Новый том"));
    assert_eq!(p.uuid.as_deref(), Some("09CBB6DE30C87310"));
    assert!(!p.state.dirty && !p.state.hibernated, "{:?}", p.state);
}

#[test]
fn containers_are_flagged() {
    for (name, encrypted) in [
        ("luks1", true),
        ("luks2", true),
        ("bitlocker-win7", true),
        ("lvm2", false),
        ("mdraid-1", false),
    ] {
        let img = unxz(&realdata(&format!("{IMAGES}/{name}.img.xz")));
        let p = probe(&MemDevice::new(name, img), &ProbeOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(p.state.encrypted, encrypted, "{name}");
        assert_eq!(
            p.kind.usage(),
            if encrypted { "crypto" } else { "raid" },
            "{name}"
        );
    }
}
