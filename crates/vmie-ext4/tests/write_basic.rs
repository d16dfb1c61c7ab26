//! Each write operation once on each filesystem flavour, checked by e2fsck
//! and debugfs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use vmie_guestfs::{GuestFs, NewAttrs, Xattr};

const FLAVOURS: &[(&str, &[&str])] = &[
    ("ext2", &[]),
    ("ext3", &[]),
    ("ext4", &[]),
    ("ext4", &["-b", "1024"]),
    ("ext4", &["-b", "2048"]),
    ("ext4", &["-O", "^metadata_csum,uninit_bg"]),
    ("ext4", &["-O", "64bit,metadata_csum_seed"]),
    ("ext4", &["-O", "^flex_bg"]),
    // A 5,000-entry linear directory.
    ("ext4", &["-O", "^dir_index"]),
    ("ext4", &["-O", "sparse_super2"]),
    ("ext4", &["-O", "orphan_file"]),
    ("ext4", &["-O", "large_dir"]),
    // ext4-view cannot read metadata_csum with 128-byte inodes at all.
    ("ext4", &["-I", "128", "-O", "^metadata_csum"]),
];

fn all_ops(kind: &str, args: &[&str]) {
    let t = tree(5000);
    let img = mkfs(kind, args, 128, Some(t.path()));
    fsck(&img.path);
    assert_eq!(is_htree(&img.path, "/big"), !args.contains(&"^dir_index"));
    let mut s = open(&img.path);
    let fs = &mut s.fs;
    let fstab = b"UUID=abcd / ext4 defaults 0 1\n/dev/sdb1 /data xfs defaults 0 2\n".to_vec();
    fs.replace_file(&gp("/etc/fstab"), &fstab).unwrap();
    let big: Vec<u8> = (0..(2 << 20) + 123)
        .map(|i: u32| (i * 7 % 253) as u8)
        .collect();
    fs.replace_file(&gp("/boot/grub.cfg"), &big).unwrap();
    fs.replace_file(&gp("/blob"), b"").unwrap();
    fs.replace_file(&gp("/etc/hosts"), b"::1 localhost\n")
        .unwrap();
    let attrs = NewAttrs {
        mode: 0o600,
        uid: 1000,
        gid: 100,
        xattrs: vec![Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:etc_t:s0\0".to_vec(),
        }],
    };
    fs.create_file(&gp("/etc/new.conf"), b"hello\n", &attrs)
        .unwrap();
    fs.mkdir(&gp("/etc/sub"), &NewAttrs::default()).unwrap();
    fs.create_file(&gp("/etc/sub/deep"), &big[..70000], &NewAttrs::default())
        .unwrap();
    fs.symlink(&gp("/etc/fast"), b"/etc/fstab", &NewAttrs::default())
        .unwrap();
    let long = vec![b'x'; 200];
    fs.symlink(&gp("/etc/slow"), &long, &NewAttrs::default())
        .unwrap();
    for i in 0..300 {
        fs.create_file(
            &gp(&format!("/big/added-{i:04}-name-that-is-quite-long-{i}")),
            format!("{i}").as_bytes(),
            &NewAttrs::default(),
        )
        .unwrap();
    }
    fs.rename(&gp("/etc/new.conf"), &gp("/big/moved.conf"))
        .unwrap();
    fs.rename(
        &gp("/big/entry-00001-with-a-longer-name"),
        &gp("/etc/hosts"),
    )
    .unwrap();
    fs.remove(&gp("/big/entry-00002-with-a-longer-name"))
        .unwrap();
    fs.mkdir(&gp("/etc/sub2"), &NewAttrs::default()).unwrap();
    fs.rename(&gp("/etc/sub2"), &gp("/big/sub2")).unwrap();
    fs.remove(&gp("/big/sub2")).unwrap();
    fs.remove(&gp("/link")).unwrap();
    fs.verify_paths(&[
        (gp("/etc/fstab"), Some(fstab.clone())),
        (gp("/big/moved.conf"), Some(b"hello\n".to_vec())),
        (gp("/etc/new.conf"), None),
        (gp("/etc/hosts"), Some(b"1\n".to_vec())),
    ])
    .unwrap();
    s.commit();
    fsck(&img.path);
    assert_eq!(cat(&img.path, "/etc/fstab"), fstab);
    assert_eq!(cat(&img.path, "/boot/grub.cfg"), big);
    assert_eq!(cat(&img.path, "/blob"), b"");
    assert_eq!(cat(&img.path, "/etc/sub/deep"), &big[..70000]);
    assert_eq!(cat(&img.path, "/big/moved.conf"), b"hello\n");
    assert_eq!(cat(&img.path, "/etc/hosts"), b"1\n");
    assert_eq!(
        cat(&img.path, "/big/added-0299-name-that-is-quite-long-299"),
        b"299"
    );
    assert!(!exists(&img.path, "/big/entry-00002-with-a-longer-name"));
    assert!(!exists(&img.path, "/link"));
    assert!(!exists(&img.path, "/big/sub2"));
    assert_eq!(is_htree(&img.path, "/big"), !args.contains(&"^dir_index"));
}

#[test]
fn ext4_default() {
    all_ops("ext4", &[]);
}

#[test]
fn flavours() {
    for (kind, args) in FLAVOURS {
        eprintln!("== {kind} {args:?}");
        all_ops(kind, args);
    }
}

/// Features neither ext4-view (our reader and self-check) nor the writer
/// handles are refused when the filesystem is opened, naming the feature,
/// before anything is read or written.
#[test]
fn inline_data_and_meta_bg_are_refused_at_open() {
    for feature in ["inline_data", "meta_bg,^resize_inode"] {
        let img = mkfs("ext4", &["-O", feature], 32, None);
        let base = std::sync::Arc::new(vmie_disk::FileDevice::open_rw(&img.path).unwrap());
        let err = vmie_ext4::Ext4Fs::open(base, "test").unwrap_err();
        let name = feature.split(',').next().unwrap();
        assert!(
            matches!(err, vmie_guestfs::FsError::Unsupported { .. })
                && err.to_string().contains(name),
            "{err}"
        );
    }
}
