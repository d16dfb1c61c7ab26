//! Guest-confined path resolution, on the in-memory filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vmie_guestfs::{resolve, FileType, FsError, GuestFs, GuestFsExt, GuestPath, MemFs, NewAttrs};

fn guest() -> MemFs {
    MemFs::new("test")
        .with_file("/usr/lib/os-release", b"ID=debian\n")
        .with_symlink("/etc/os-release", "../usr/lib/os-release")
        .with_symlink("/bin", "usr/bin")
        .with_file("/usr/bin/sh", b"\x7fELF")
        .with_symlink("/loop-a", "/loop-b")
        .with_symlink("/loop-b", "/loop-a")
        .with_symlink("/escape", "../../../..")
        .with_symlink("/etc/escape-file", "../../../../../etc/os-release")
        .with_symlink("/abs", "/etc/os-release")
        .with_file("/etc/hostname", b"vm1\n")
}

#[test]
fn relative_and_absolute_symlinks_resolve_inside_the_guest() {
    let fs = guest();
    assert_eq!(fs.read("/etc/os-release").unwrap(), b"ID=debian\n");
    assert_eq!(fs.read("/abs").unwrap(), b"ID=debian\n");
    assert_eq!(fs.read("/bin/sh").unwrap(), b"\x7fELF");
    assert_eq!(fs.read("usr/../etc/hostname").unwrap(), b"vm1\n");
    // Through a symlink, `..` is the parent of the target (/usr), as on Linux.
    assert!(matches!(
        fs.read("bin/../etc/hostname"),
        Err(FsError::NotFound { .. })
    ));
    // `..` after a symlink is taken from where the symlink led (/usr), as Linux does.
    assert_eq!(fs.metadata("/bin/..").unwrap().0, GuestPath::from("/usr"));
}

#[test]
fn dotdot_never_leaves_the_guest_root() {
    let fs = guest();
    // ../../../../ from anywhere is the guest root, not the host's.
    let (p, m) = fs.metadata("/escape").unwrap();
    assert!(p.is_root());
    assert_eq!(m.file_type, FileType::Directory);
    let err = fs.read("/escape").unwrap_err();
    assert!(matches!(err, FsError::IsADirectory { .. }), "{err}");
    assert!(err.to_string().contains("is a directory"));
    // A symlink that climbs out and comes back down reads the guest's file.
    assert_eq!(fs.read("/etc/escape-file").unwrap(), b"ID=debian\n");
    assert_eq!(fs.read("/../../../etc/hostname").unwrap(), b"vm1\n");
}

#[test]
fn symlink_loops_stop_with_a_clear_error() {
    let fs = guest();
    let err = fs.read("/loop-a").unwrap_err();
    assert!(matches!(err, FsError::SymlinkLoop { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("too many levels of symbolic links"),
        "{err}"
    );
    assert!(err.to_string().contains("/loop-a"), "{err}");
    // lstat of the link itself works.
    assert_eq!(fs.lstat("/loop-a").unwrap().1.file_type, FileType::Symlink);
    assert_eq!(fs.readlink("/loop-a").unwrap(), b"/loop-b");
}

#[test]
fn self_referencing_chain_longer_than_the_limit_is_refused() {
    let mut fs = MemFs::new("chain");
    for i in 0..50 {
        fs = fs.with_symlink(&format!("/l{i}"), &format!("/l{}", i + 1));
    }
    fs = fs.with_file("/l50", b"end");
    assert!(matches!(fs.read("/l0"), Err(FsError::SymlinkLoop { .. })));
    assert_eq!(fs.read("/l20").unwrap(), b"end");
}

#[test]
fn file_in_the_middle_of_a_path_is_not_a_directory() {
    let fs = guest();
    let err = fs.read("/etc/hostname/x").unwrap_err();
    assert!(matches!(err, FsError::NotADirectory { .. }), "{err}");
}

#[test]
fn missing_final_component_resolves_for_creation() {
    let fs = guest();
    let p = resolve(&fs, b"/bin/new-tool", true).unwrap();
    assert_eq!(p, GuestPath::from("/usr/bin/new-tool"));
    assert!(matches!(
        fs.read("/bin/new-tool"),
        Err(FsError::NotFound { .. })
    ));
}

#[test]
fn memfs_writes_keep_attributes() {
    let mut fs = guest();
    let attrs = NewAttrs {
        mode: 0o600,
        uid: 7,
        gid: 8,
        xattrs: vec![vmie_guestfs::Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:etc_t:s0\0".to_vec(),
        }],
    };
    let p = GuestPath::from("/etc/fstab");
    fs.create_file(&p, b"old", &attrs).unwrap();
    let before = fs.symlink_metadata(&p).unwrap();
    fs.replace_file(&p, b"new contents").unwrap();
    let after = fs.symlink_metadata(&p).unwrap();
    assert_eq!(after.inode, before.inode);
    assert_eq!((after.mode, after.uid, after.gid), (0o600, 7, 8));
    assert_eq!(
        after.selinux_label(),
        Some(&b"system_u:object_r:etc_t:s0\0"[..])
    );
    assert!(after.mtime > before.mtime);
    assert_eq!(fs.read("/etc/fstab").unwrap(), b"new contents");
    fs.rename(&p, &GuestPath::from("/etc/fstab.orig")).unwrap();
    assert!(!fs.exists("/etc/fstab").unwrap());
    fs.remove(&GuestPath::from("/etc/fstab.orig")).unwrap();
    assert!(matches!(
        fs.remove(&GuestPath::from("/etc")),
        Err(FsError::NotEmpty { .. })
    ));
    assert!(matches!(
        fs.create_file(&GuestPath::from("/etc/hostname"), b"", &NewAttrs::default()),
        Err(FsError::Exists { .. })
    ));
}

#[test]
fn long_paths_are_refused() {
    let fs = guest();
    let long = "/a".repeat(5000);
    assert!(matches!(fs.read(&long), Err(FsError::PathTooLong { .. })));
}

mod random_graphs {
    use super::*;
    use proptest::prelude::*;

    fn target() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(".."),
                Just("."),
                Just("a"),
                Just("b"),
                Just("l0"),
                Just("l1"),
                Just("l2"),
                Just("f")
            ],
            0..6,
        )
        .prop_flat_map(|parts| (any::<bool>(), Just(parts)))
        .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    proptest! {
        /// Random trees of directories, files and symlinks with random
        /// targets (loops, `..` chains, absolute and relative): resolution
        /// always ends, with a path inside the guest or a known error, and
        /// reading through it returns the guest's own bytes.
        #[test]
        fn resolution_terminates_and_stays_inside(links in proptest::collection::vec(target(), 3), path in target()) {
            let mut fs = MemFs::new("prop")
                .with_file("/f", b"root-f")
                .with_file("/a/f", b"a-f")
                .with_file("/a/b/f", b"ab-f")
                .with_dir("/b");
            for (i, t) in links.iter().enumerate() {
                let dir = ["/", "/a/", "/a/b/"][i % 3];
                fs = fs.with_symlink(&format!("{dir}l{i}"), t);
            }
            match fs.read(&path) {
                Ok(bytes) => prop_assert!([&b"root-f"[..], b"a-f", b"ab-f"].contains(&bytes.as_slice())),
                Err(FsError::NotFound { .. } | FsError::NotADirectory { .. } | FsError::IsADirectory { .. }
                    | FsError::SymlinkLoop { .. } | FsError::NotAFile { .. } | FsError::PathTooLong { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            if let Ok(p) = resolve(&fs, path.as_bytes(), true) {
                prop_assert!(p.components().iter().all(|c| c != b".." && c != b"." && !c.is_empty()));
            }
        }
    }
}

#[test]
fn mounts_route_by_longest_prefix_and_symlinks_cross_them() {
    use vmie_guestfs::Mounts;
    let root = MemFs::new("root")
        .with_file("/etc/fstab", b"root fstab")
        .with_dir("/boot")
        .with_symlink("/vmlinuz", "boot/vmlinuz-6.1");
    let boot = MemFs::new("boot")
        .with_file("/vmlinuz-6.1", b"kernel")
        .with_file("/grub/grub.cfg", b"cfg");
    let mut m = Mounts::new();
    m.mount(GuestPath::root(), Box::new(root));
    m.mount(GuestPath::from("/boot"), Box::new(boot));
    assert_eq!(m.read("/etc/fstab").unwrap(), b"root fstab");
    assert_eq!(m.read("/boot/grub/grub.cfg").unwrap(), b"cfg");
    assert_eq!(m.read("/vmlinuz").unwrap(), b"kernel");
    m.replace_file(&GuestPath::from("/boot/grub/grub.cfg"), b"new")
        .unwrap();
    assert_eq!(m.read("/boot/grub/grub.cfg").unwrap(), b"new");
    m.rename(
        &GuestPath::from("/boot/grub/grub.cfg"),
        &GuestPath::from("/boot/grub/grub.cfg.old"),
    )
    .unwrap();
    assert!(m
        .rename(
            &GuestPath::from("/etc/fstab"),
            &GuestPath::from("/boot/fstab")
        )
        .is_err());
}
