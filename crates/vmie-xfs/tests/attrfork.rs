//! Removing files whose attribute fork is a bmbt: the kernel sets
//! hundreds of remote-valued xattrs on a file while another file grows
//! by synced blocks between them, so the attr fork's extents interleave
//! and its map becomes a B+tree in the inode. Our writer then removes
//! the file, and replaces another such file by a rename; the attr fork's
//! bmbt blocks and value blocks are freed (with their rmapbt records on
//! rmapbt volumes). xfs_repair -n is clean after each step and the
//! kernel reads the result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath};

/// Give `name` (in the mounted volume) `n` xattrs of 5,000 bytes each,
/// with a synced 4 KiB append to `spacer` after each, so each value's
/// blocks stand apart.
fn interleaved_xattrs(m: &Mounted, name: &str, spacer: &str, n: usize) {
    let script = format!(
        "import os\n\
         a = {a:?}\n\
         b = os.open({b:?}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n\
         for i in range({n}):\n\
         \x20   os.setxattr(a, 'user.v%04d' % i, bytes([i % 251]) * 5000)\n\
         \x20   os.write(b, b'y' * 4096)\n\
         \x20   os.fsync(b)\n\
         os.close(b)\n",
        a = m.path(name).display().to_string(),
        b = m.path(spacer).display().to_string(),
    );
    sh(Command::new("/usr/bin/python3").arg("-c").arg(script));
}

#[test]
fn files_with_btree_attr_forks_are_removed_and_replaced() {
    for (profile, args) in [("v5", &[][..]), ("rmapbt", &["-m", "rmapbt=1"][..])] {
        let img = mkfs(args, 300, None);
        {
            let m = Mounted::new(&img.path, false);
            for f in ["a", "b"] {
                std::fs::write(m.path(f), f.as_bytes()).unwrap();
                interleaved_xattrs(&m, f, &format!("spacer-{f}"), 300);
            }
        }
        for f in ["a", "b"] {
            let out = xfs_db(&img.path, false, &[&format!("path /{f}"), "p core.aformat"]);
            assert!(
                out.contains("(btree)"),
                "{profile}: /{f}'s attr fork is not a btree: {out}"
            );
        }
        let free_before = xfs_db(&img.path, false, &["sb 0", "p fdblocks"]);

        let (ov, mut fs) = over(&img.path);
        let st = fs.lstat("/a").unwrap().1;
        assert_eq!(
            st.xattrs.as_ref().map(Vec::len),
            Some(300),
            "{profile}: our reader lists every xattr"
        );
        fs.remove(&GuestPath::lexical(b"/a")).unwrap();
        fs.rename(
            &GuestPath::lexical(b"/spacer-a"),
            &GuestPath::lexical(b"/b"),
        )
        .unwrap();
        commit(&ov, &img.path);
        let (ok, out) = repair_n(&img.path);
        assert!(ok, "{profile}: {out}");
        let free_after = xfs_db(&img.path, false, &["sb 0", "p fdblocks"]);
        assert_ne!(free_before, free_after, "{profile}: nothing was freed");

        let m = Mounted::new(&img.path, true);
        let mut names: Vec<String> = std::fs::read_dir(m.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b", "spacer-b"], "{profile}");
        assert_eq!(
            std::fs::read(m.path("b")).unwrap(),
            vec![b'y'; 300 * 4096],
            "{profile}: /b is the renamed spacer"
        );
    }
}
