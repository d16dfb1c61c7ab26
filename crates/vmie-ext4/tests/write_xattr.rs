//! Extended attributes and inode attributes survive replace_file (in-inode
//! and in an external xattr block, which counts in i_blocks); new files get
//! their mode, owner and security.selinux label.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, NewAttrs, Xattr};

fn debugfs(img: &Path, req: &str, write: bool) -> String {
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    let out = c.args(["-R", req]).arg(img).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn xattrs_and_attributes_survive() {
    for args in [&[][..], &["-t", "ext3"][..], &["-O", "^metadata_csum"][..]] {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/fstab"), b"old\n").unwrap();
        std::fs::write(t.path().join("etc/big"), b"old\n").unwrap();
        let (kind, rest) = match args {
            ["-t", k] => (*k, &[][..]),
            a => ("ext4", a),
        };
        let img = mkfs(kind, rest, 32, Some(t.path()));
        debugfs(&img.path, "ea_set /etc/fstab user.small hello", true);
        debugfs(&img.path, "sif /etc/fstab uid 1234", true);
        debugfs(&img.path, "sif /etc/fstab mode 0100640", true);
        // Too big for the inode body: goes to an xattr block.
        for n in [300, 500] {
            let v = t.path().join(format!("v{n}"));
            std::fs::write(&v, "v".repeat(n)).unwrap();
            debugfs(
                &img.path,
                &format!("ea_set -f {} /etc/big user.l{n}", v.display()),
                true,
            );
        }
        fsck(&img.path);
        let list_small = debugfs(&img.path, "ea_list /etc/fstab", false);
        let list_big = debugfs(&img.path, "ea_list /etc/big", false);
        assert!(list_big.contains("user.l500"), "{list_big}");
        let st = debugfs(&img.path, "stat /etc/big", false);
        assert!(!st.contains("File ACL: 0"), "no xattr block: {st}");
        let mut s = open(&img.path);
        let data = vec![b'n'; 100_000];
        s.fs.replace_file(&gp("/etc/fstab"), &data).unwrap();
        s.fs.replace_file(&gp("/etc/big"), &data[..5000]).unwrap();
        let attrs = NewAttrs {
            mode: 0o640,
            uid: 42,
            gid: 43,
            xattrs: vec![Xattr {
                name: b"security.selinux".to_vec(),
                value: b"system_u:object_r:etc_t:s0\0".to_vec(),
            }],
        };
        s.fs.create_file(&gp("/etc/labelled"), b"x", &attrs)
            .unwrap();
        s.commit();
        fsck(&img.path);
        assert_eq!(debugfs(&img.path, "ea_list /etc/fstab", false), list_small);
        assert_eq!(debugfs(&img.path, "ea_list /etc/big", false), list_big);
        assert_eq!(cat(&img.path, "/etc/fstab"), data);
        assert_eq!(cat(&img.path, "/etc/big"), &data[..5000]);
        let st = debugfs(&img.path, "stat /etc/fstab", false);
        assert!(
            st.contains("User:  1234") && st.contains("Mode:  0640"),
            "{st}"
        );
        let st = debugfs(&img.path, "stat /etc/labelled", false);
        assert!(
            st.contains("User:    42") && st.contains("Group:    43"),
            "{st}"
        );
        assert!(st.contains("Mode:  0640"), "{st}");
        let ea = debugfs(&img.path, "ea_list /etc/labelled", false);
        assert!(
            ea.contains("security.selinux") && ea.contains("etc_t"),
            "{ea}"
        );
        // Removing a file with an xattr block frees it.
        let mut s = open(&img.path);
        s.fs.remove(&gp("/etc/big")).unwrap();
        s.commit();
        fsck(&img.path);
    }
}

/// No room in the inode body (128-byte inodes, or values too large): the
/// attributes go to a new xattr block, counted in i_blocks.
#[test]
fn new_xattrs_in_a_block() {
    for args in [
        &["-I", "128", "-O", "^metadata_csum"][..],
        &[][..],
        &["-t", "ext2"][..],
    ] {
        let (kind, rest) = match args {
            ["-t", k] => (*k, &[][..]),
            a => ("ext4", a),
        };
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        let img = mkfs(kind, rest, 32, Some(t.path()));
        let mut s = open(&img.path);
        let label = Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:etc_t:s0\0".to_vec(),
        };
        let big = Xattr {
            name: b"user.big".to_vec(),
            value: vec![b'q'; 400],
        };
        let attrs = NewAttrs {
            xattrs: vec![label.clone(), big],
            ..NewAttrs::default()
        };
        s.fs.create_file(&gp("/etc/a"), b"a", &attrs).unwrap();
        s.fs.mkdir(&gp("/etc/d"), &attrs).unwrap();
        s.fs.symlink(&gp("/etc/l"), b"a", &attrs).unwrap();
        let small = NewAttrs {
            xattrs: vec![label],
            ..NewAttrs::default()
        };
        s.fs.create_file(&gp("/etc/b"), b"b", &small).unwrap();
        s.commit();
        fsck(&img.path);
        for p in ["/etc/a", "/etc/d", "/etc/l", "/etc/b"] {
            let ea = debugfs(&img.path, &format!("ea_list {p}"), false);
            assert!(
                ea.contains("security.selinux") && ea.contains("etc_t"),
                "{p}: {ea}"
            );
        }
        let ea = debugfs(&img.path, "ea_list /etc/a", false);
        assert!(ea.contains("user.big (400)"), "{ea}");
        let mut s = open(&img.path);
        for p in ["/etc/a", "/etc/d", "/etc/l", "/etc/b"] {
            s.fs.remove(&gp(p)).unwrap();
        }
        s.commit();
        fsck(&img.path);
    }
}
