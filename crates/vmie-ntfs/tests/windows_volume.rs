//! dfVFS's `windows_volume.qcow2` (a 34 MiB NTFS volume with
//! `Windows/System32/config/syslog`), converted to raw by the real qemu-img.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_guestfs::{FileType, GuestFs, GuestFsExt};

#[test]
fn reads_the_syslog_as_ntfs_3g_does() {
    let (_dir, img) = windows_volume_raw();
    let fs = open(&img);
    let want = ntfscat(&img, "/Windows/System32/config/syslog");
    assert_eq!(want.len(), 1247);
    assert!(want.starts_with(b"Jan 22 07:52:33 myhostname"));
    assert_eq!(fs.read("/Windows/System32/config/syslog").unwrap(), want);
    // Windows paths are case-insensitive.
    assert_eq!(fs.read("/WINDOWS/system32/Config/SYSLOG").unwrap(), want);
    let (p, m) = fs.metadata("/windows/SYSTEM32/config/syslog").unwrap();
    assert_eq!(p.to_string(), "/windows/SYSTEM32/config/syslog");
    assert_eq!((m.file_type, m.size), (FileType::Regular, 1247));
    // ntfsls -l: Aug  6 12:32 2016.
    assert!(
        (1_470_441_600..1_470_528_000).contains(&m.mtime.secs),
        "{:?}",
        m.mtime
    );
}

#[test]
fn tree_and_space_match_the_ntfs_3g_tools() {
    let (_dir, img) = windows_volume_raw();
    let fs = open(&img);
    assert_eq!(our_tree(&fs), ntfsls_tree(&img));
    let (_, root) = fs.list("/").unwrap();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].name, b"Windows");
    assert_eq!(root[0].file_type, FileType::Directory);

    let v = fs.volume_info().unwrap();
    let (cluster, clusters, free) = ntfsinfo_space(&img);
    assert_eq!(u64::from(v.cluster_size), cluster);
    assert_eq!(v.total_bytes / cluster, clusters);
    assert_eq!(v.free_bytes, free * cluster);
    assert_eq!((v.major_version, v.minor_version), (3, 1));
    assert_eq!(v.label, "");
    assert!(!v.dirty);
    assert_eq!(fs.kind(), "ntfs");
}
