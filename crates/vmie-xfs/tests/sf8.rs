//! Shortform directories with 8-byte inode numbers: on a volume whose AG 2
//! starts above inode 2^32 (three 1 TiB AGs, sparse), the kernel puts a
//! directory and its files there, so the directory stores 8-byte inode
//! numbers (`i8count`). Our writer adds, removes, renames and replaces
//! entries in it; moves a file with a large inode number into a directory
//! of 4-byte entries (converted to 8-byte ones as the kernel does) and
//! back (converted back to 4-byte). xfs_repair -n is clean after every commit,
//! xfs_db reads `i8count`, and the kernel reads the result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// The largest AG mkfs.xfs makes (2^28 - 1 blocks): 28 bits of AG block,
/// 3 of inode within the block (512-byte inodes in 4 KiB), so AG 2's
/// inode numbers start at 2^32.
const AG_BLOCKS: u64 = (1 << 28) - 1;

fn p(s: &str) -> GuestPath {
    GuestPath::lexical(s.as_bytes())
}

fn i8count(img: &std::path::Path, path: &str) -> u64 {
    let out = xfs_db(
        img,
        false,
        &[&format!("path {path}"), "p u3.sfdir3.hdr.i8count"],
    );
    let out = if out.contains('=') {
        out
    } else {
        xfs_db(
            img,
            false,
            &[&format!("path {path}"), "p u.sfdir2.hdr.i8count"],
        )
    };
    out.rsplit('=')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("i8count of {path}: {out}"))
}

fn check(img: &std::path::Path, what: &str) {
    let (ok, out) = repair_n(img);
    assert!(ok, "{what}: {out}");
}

#[test]
fn shortform_directories_with_8_byte_inode_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(3 * AG_BLOCKS * 4096)
        .unwrap();
    sh(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-K", "-l", "size=64m", "-d"])
        .arg(format!("agsize={AG_BLOCKS}b"))
        .arg(&img));
    // The kernel's inode64 rotor spreads new directories over the AGs:
    // make directories until one is in AG 2 (inode numbers past 2^32).
    let (high, low) = {
        let m = Mounted::new(&img, false);
        let (mut high, mut low) = (None, None);
        for i in 0..12 {
            let d = m.path(&format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&d).unwrap());
            if ino > u64::from(u32::MAX) && high.is_none() {
                for f in ["a", "b", "c"] {
                    std::fs::write(d.join(f), format!("{f} in d{i}\n")).unwrap();
                }
                high = Some(format!("d{i}"));
            } else if ino <= u64::from(u32::MAX) && low.is_none() {
                std::fs::write(d.join("small"), b"small\n").unwrap();
                low = Some(format!("d{i}"));
            }
        }
        (
            high.expect("no directory landed past inode 2^32"),
            low.expect("no directory below inode 2^32"),
        )
    };
    eprintln!("high {high}, low {low}");
    let ld = format!("/{low}");
    let hd = format!("/{high}");
    assert!(i8count(&img, &hd) > 0, "{hd} holds 8-byte inode numbers");
    assert_eq!(i8count(&img, &ld), 0);
    check(&img, "as the kernel left it");

    // In the 8-byte directory: add (a new inode near it, also past 2^32),
    // remove, rename, rename over an existing entry.
    let (ov, mut fs) = over(&img);
    fs.create_file(&p(&format!("{hd}/new")), b"new\n", &NewAttrs::default())
        .unwrap();
    fs.remove(&p(&format!("{hd}/a"))).unwrap();
    fs.rename(&p(&format!("{hd}/b")), &p(&format!("{hd}/b2")))
        .unwrap();
    fs.rename(&p(&format!("{hd}/new")), &p(&format!("{hd}/c")))
        .unwrap();
    // A new directory whose parent's inode number needs 8 bytes.
    fs.mkdir(&p(&format!("{hd}/sub")), &NewAttrs::default())
        .unwrap();
    fs.create_file(&p(&format!("{hd}/sub/f")), b"f\n", &NewAttrs::default())
        .unwrap();
    commit(&ov, &img);
    check(&img, "after the changes in the 8-byte directory");
    assert!(i8count(&img, &hd) > 0);
    assert!(i8count(&img, &format!("{hd}/sub")) > 0);

    // Into a 4-byte directory: its entries become 8-byte ones; out again:
    // back to 4.
    let (ov, mut fs) = over(&img);
    fs.rename(&p(&format!("{hd}/b2")), &p(&format!("{ld}/moved")))
        .unwrap();
    commit(&ov, &img);
    check(&img, "after moving a high inode into the 4-byte directory");
    assert_eq!(i8count(&img, &ld), 1);
    let (ov, mut fs) = over(&img);
    assert_eq!(
        fs.read(&format!("{ld}/moved")).unwrap(),
        format!("b in {high}\n").as_bytes()
    );
    fs.rename(&p(&format!("{ld}/moved")), &p(&format!("{hd}/back")))
        .unwrap();
    // And a small inode into the 8-byte directory.
    fs.rename(&p(&format!("{ld}/small")), &p(&format!("{hd}/small")))
        .unwrap();
    commit(&ov, &img);
    check(&img, "after moving it back");
    assert_eq!(i8count(&img, &ld), 0);

    let m = Mounted::new(&img, true);
    let mut names: Vec<String> = std::fs::read_dir(m.path(&high))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["back", "c", "small", "sub"]);
    assert_eq!(
        std::fs::read(m.path(&format!("{high}/sub/f"))).unwrap(),
        b"f\n"
    );
    assert_eq!(
        std::fs::read(m.path(&format!("{high}/c"))).unwrap(),
        b"new\n"
    );
    assert_eq!(
        std::fs::read(m.path(&format!("{high}/back"))).unwrap(),
        format!("b in {high}\n").as_bytes()
    );
    assert_eq!(
        std::fs::read(m.path(&format!("{high}/small"))).unwrap(),
        b"small\n"
    );
    drop(m);

    // A full 4-byte directory (as many 20-byte names as its data fork
    // holds: 28 bytes each with ftype and a 4-byte number) takes a file
    // whose number needs 8 bytes by a rename over one of its names: 8-byte
    // entries would not fit, so it becomes a block directory, as the
    // kernel converts it.
    let forkoff: usize = xfs_db(&img, false, &[&format!("path {ld}"), "p core.forkoff"])
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lit = if forkoff > 0 { forkoff * 8 } else { 512 - 176 };
    let k = (lit - 6) / 28;
    assert!(
        10 + 32 * k > lit,
        "{k} entries of 8 bytes would still fit in {lit}"
    );
    let (ov, mut fs) = over(&img);
    let names: Vec<String> = (0..k)
        .map(|i| format!("name-{i:02}-xxxxxxxxxxxx"))
        .collect();
    for n in &names {
        fs.create_file(&p(&format!("{ld}/{n}")), n.as_bytes(), &NewAttrs::default())
            .unwrap();
    }
    commit(&ov, &img);
    check(&img, "after filling the 4-byte directory");
    let f = xfs_db_format(&img, &ld);
    assert!(f.0.contains("local"), "{ld} is still shortform: {f:?}");
    let (ov, mut fs) = over(&img);
    fs.rename(
        &p(&format!("{hd}/c")),
        &p(&format!("{ld}/{}", names[k / 2])),
    )
    .unwrap();
    commit(&ov, &img);
    check(&img, "after the rename that outgrows the inode");
    assert!(
        xfs_db_format(&img, &ld).0.contains("extents"),
        "{ld} became a block directory"
    );
    let m = Mounted::new(&img, true);
    let mut listed: Vec<String> = std::fs::read_dir(m.path(&low))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, names);
    assert_eq!(
        std::fs::read(m.path(&format!("{low}/{}", names[k / 2]))).unwrap(),
        b"new\n"
    );
    assert_eq!(
        std::fs::read(m.path(&format!("{low}/{}", names[k / 2 + 1]))).unwrap(),
        names[k / 2 + 1].as_bytes()
    );
}
