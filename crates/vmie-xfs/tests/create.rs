//! The allocating writer: files grown past their blocks, new files,
//! symlinks and directories in shortform, block and leaf directories, on
//! every mkfs profile a guest may carry; after every operation
//! xfs_repair -n is clean and both our reader (fresh) and xfs_db read the
//! result back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs, Xattr};
use vmie_xfs::XfsFs;

#[test]
fn create_grow_symlink_mkdir_in_every_form_and_profile() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES {
        let img = mkfs(args, 300, Some(&proto));
        assert_eq!(xfs_db_format(&img.path, "/small").0, "1 (local)", "{name}");
        let bs = if name.ends_with("1k") { 1024 } else { 4096 };
        let (fmt, size) = xfs_db_format(&img.path, "/leaf");
        assert!(
            fmt.starts_with("2") && size > bs,
            "{name}: /leaf is {fmt} {size}"
        );
        let mut want = t.clone();
        let mut step = 0;
        let mut run = |want: &mut BTreeMap<String, Node>,
                       what: String,
                       f: &mut dyn FnMut(&mut XfsFs) -> Result<(), FsError>,
                       changes: Vec<(String, Node)>| {
            let (ov, mut fs) = over(&img.path);
            f(&mut fs).unwrap_or_else(|e| panic!("{name}: {what}: {e}"));
            commit(&ov, &img.path);
            for (k, n) in changes {
                want.insert(k, n);
            }
            check_all(&img.path, want, &format!("{name} step {step}: {what}"));
            step += 1;
        };
        for dir in ["small", "block", "leaf"] {
            let p = format!("{dir}/new-file");
            let data = bytes(77, 5000);
            let (gp, d) = (GuestPath::lexical(format!("/{p}").as_bytes()), data.clone());
            run(
                &mut want,
                format!("create /{p}"),
                &mut |fs| fs.create_file(&gp, &d, &selinux()),
                vec![(p.clone(), regular(data))],
            );
            let (_, fs) = open(&img.path);
            let m = fs.lstat(&format!("/{p}")).unwrap().1;
            assert_eq!(
                m.selinux_label(),
                Some(&b"system_u:object_r:etc_t:s0\0"[..])
            );
            let p = format!("{dir}/empty");
            let gp = GuestPath::lexical(format!("/{p}").as_bytes());
            run(
                &mut want,
                format!("create empty /{p}"),
                &mut |fs| fs.create_file(&gp, b"", &NewAttrs::default()),
                vec![(p.clone(), regular(Vec::new()))],
            );
        }
        // Symlinks: inline and remote; a directory with a file in it.
        for (ln, target) in [("short", b"fstab".to_vec()), ("long", vec![b'x'; 900])] {
            let p = format!("etc/{ln}-link");
            let gp = GuestPath::lexical(format!("/{p}").as_bytes());
            let tg = target.clone();
            run(
                &mut want,
                format!("symlink /{p}"),
                &mut |fs| fs.symlink(&gp, &tg, &NewAttrs::default()),
                vec![(p, Node::Link(target))],
            );
        }
        let gp = GuestPath::lexical(b"/etc/sub.d");
        run(
            &mut want,
            "mkdir /etc/sub.d".into(),
            &mut |fs| {
                fs.mkdir(
                    &gp,
                    &NewAttrs {
                        mode: 0o750,
                        ..selinux()
                    },
                )
            },
            vec![(
                "etc/sub.d".into(),
                Node::Dir {
                    mode: 0o750,
                    uid: 0,
                    gid: 0,
                },
            )],
        );
        let gp = GuestPath::lexical(b"/etc/sub.d/inner");
        run(
            &mut want,
            "create /etc/sub.d/inner".into(),
            &mut |fs| fs.create_file(&gp, b"inner\n", &selinux()),
            vec![("etc/sub.d/inner".into(), regular(b"inner\n".to_vec()))],
        );
        // Grow past the owned blocks, shrink (blocks stay past EOF), regrow.
        for (i, len) in [200_000usize, 10, 700_000, 0, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let data = bytes(300 + i as u64, len);
            let d = data.clone();
            let gp = GuestPath::lexical(b"/etc/fstab");
            run(
                &mut want,
                format!("replace /etc/fstab with {len} bytes"),
                &mut |fs| fs.replace_file(&gp, &d),
                vec![("etc/fstab".into(), regular(data))],
            );
        }
        let (ov, mut fs) = over(&img.path);
        // Existing names are refused.
        let err = fs
            .create_file(
                &GuestPath::lexical(b"/etc/fstab"),
                b"x",
                &NewAttrs::default(),
            )
            .unwrap_err();
        assert!(matches!(err, FsError::Exists { .. }), "{err}");
        assert!(!ov.is_dirty());
        eprintln!("{name}: {step} operations checked");
    }
}

/// Filling a block directory until it converts to leaf form and grows new
/// data blocks; on 1 KiB blocks until the leaf block is full, which is
/// refused without a write.
#[test]
fn block_directory_fills_into_leaf_form() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in [PROFILES[0], PROFILES[2], PROFILES[5]] {
        let img = mkfs(args, 300, Some(&proto));
        let mut want = t.clone();
        let mut refused = false;
        let mut out_of_inodes = false;
        let mut forms = std::collections::BTreeSet::new();
        for round in 0..8 {
            let (ov, mut fs) = over(&img.path);
            for i in 0..40 {
                let p = format!("block/added-{round}-{i:03}-{}", "n".repeat(i % 30));
                let data = bytes(round * 100 + i as u64, i * 13);
                match fs.create_file(
                    &GuestPath::lexical(format!("/{p}").as_bytes()),
                    &data,
                    &selinux(),
                ) {
                    Ok(()) => {
                        want.insert(p, regular(data));
                    }
                    Err(e) if e.to_string().contains("leaf block is full") => {
                        refused = true;
                        break;
                    }
                    Err(e) => {
                        assert!(
                            e.to_string()
                                .contains("no existing inode chunk has a free inode"),
                            "{name}: {e}"
                        );
                        out_of_inodes = true;
                        break;
                    }
                }
            }
            commit(&ov, &img.path);
            forms.insert(xfs_db_format(&img.path, "/block").1);
            check_all(&img.path, &want, &format!("{name} round {round}"));
            if refused || out_of_inodes {
                // The refusal left the overlay clean after the last commit.
                let (ov, mut fs) = over(&img.path);
                assert!(fs
                    .create_file(
                        &GuestPath::lexical(b"/block/one-more-name-please"),
                        b"x",
                        &NewAttrs::default()
                    )
                    .is_err());
                assert!(!ov.is_dirty());
                break;
            }
        }
        eprintln!("{name}: /block sizes seen {forms:?}, refused at a full leaf: {refused}, out of free inodes: {out_of_inodes}, entries {}", listing(&want, "block").len());
        assert!(
            forms.len() >= 2,
            "{name}: the directory never grew a data block"
        );
    }
}

/// Random sequences of create, replace, remove and rename (0 B to 1 MiB,
/// within and across directories, over existing files) in directories of
/// every form we write, on every profile; xfs_repair -n clean and
/// everything read back after each sequence. 48 sequences in CI;
/// `VMIE_PROPTEST_CASES=N` (set by `cargo xtask test --full`) runs N per
/// profile.
#[test]
fn random_sequences_stay_consistent() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let start = Instant::now();
    let sequences = std::env::var("VMIE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(48, |n| n.saturating_mul(PROFILES.len() as u64));
    let mut ops = 0;
    let mut kinds = [0usize; 4];
    let mut kernel_reads_n = 0usize;
    for seq in 0..sequences {
        let (name, args) = PROFILES[(seq as usize) % PROFILES.len()];
        let img = mkfs(args, 300, Some(&proto));
        let mut want = t.clone();
        let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let (ov, mut fs) = over(&img.path);
        for op in 0..16 {
            let dir = ["small", "block", "leaf", "etc"][rnd(4) as usize];
            let len = match rnd(4) {
                0 => 0,
                1 => rnd(5000) as usize,
                2 => rnd(100_000) as usize,
                _ => rnd(1 << 20) as usize + 1,
            };
            let data = bytes(seq * 1000 + op, len);
            let existing: Vec<String> = want
                .iter()
                .filter(|(k, n)| {
                    k.starts_with(&format!("{dir}/")) && matches!(n, Node::File { .. })
                })
                .map(|(k, _)| k.clone())
                .collect();
            let choice = if existing.is_empty() { 1 } else { rnd(6) };
            let pick = |r: u64| existing[(r % existing.len().max(1) as u64) as usize].clone();
            let nl = 1 + rnd(40) as usize;
            let nm: String = (0..nl).map(|_| (b'a' + rnd(26) as u8) as char).collect();
            let to_dir = ["small", "block", "leaf", "etc"][rnd(4) as usize];
            kinds[[0, 1, 1, 2, 3, 0][choice as usize]] += 1;
            match choice {
                0 | 5 => {
                    let p = pick(rnd(1 << 20));
                    fs.replace_file(&GuestPath::lexical(format!("/{p}").as_bytes()), &data)
                        .unwrap_or_else(|e| panic!("{name} seq {seq}: replace /{p}: {e}"));
                    want.insert(p, regular(data));
                }
                1 | 2 => {
                    let p = format!("{dir}/{nm}-{seq}-{op}");
                    fs.create_file(
                        &GuestPath::lexical(format!("/{p}").as_bytes()),
                        &data,
                        &selinux(),
                    )
                    .unwrap_or_else(|e| panic!("{name} seq {seq}: create /{p}: {e}"));
                    want.insert(p, regular(data));
                }
                3 => {
                    let p = pick(rnd(1 << 20));
                    fs.remove(&GuestPath::lexical(format!("/{p}").as_bytes()))
                        .unwrap_or_else(|e| panic!("{name} seq {seq}: remove /{p}: {e}"));
                    want.remove(&p);
                }
                _ => {
                    // To a new name, or over an existing file.
                    let p = pick(rnd(1 << 20));
                    let q = if rnd(3) == 0 {
                        let others: Vec<&String> = want
                            .iter()
                            .filter(|(k, n)| {
                                **k != p
                                    && k.starts_with(&format!("{to_dir}/"))
                                    && matches!(n, Node::File { .. })
                            })
                            .map(|(k, _)| k)
                            .collect();
                        match others.first() {
                            Some(o) => (*o).clone(),
                            None => format!("{to_dir}/{nm}-{seq}-{op}"),
                        }
                    } else {
                        format!("{to_dir}/{nm}-{seq}-{op}")
                    };
                    fs.rename(
                        &GuestPath::lexical(format!("/{p}").as_bytes()),
                        &GuestPath::lexical(format!("/{q}").as_bytes()),
                    )
                    .unwrap_or_else(|e| panic!("{name} seq {seq}: rename /{p} /{q}: {e}"));
                    let n = want.remove(&p).unwrap();
                    want.insert(q, n);
                }
            }
            ops += 1;
        }
        commit(&ov, &img.path);
        assert_clean(&img.path, &format!("{name} sequence {seq}"));
        for d in ["small", "block", "leaf", "etc"] {
            assert_eq!(
                xfs_db_ls(&img.path, &format!("/{d}")),
                listing(&want, d),
                "{name} seq {seq} /{d}"
            );
        }
        let (_, fs) = open(&img.path);
        compare(&fs, &want);
        kernel_reads_n += usize::from(kernel_check(
            &img.path,
            &want,
            &format!("{name} sequence {seq}"),
        ));
    }
    assert!(
        kernel_reads_n > 0,
        "no sequence was read back by the kernel"
    );
    eprintln!(
        "{sequences} sequences ({kernel_reads_n} read back by the kernel), {ops} operations (replace, create, remove, rename: {kinds:?}) in {:?}",
        start.elapsed()
    );
}

/// A /etc the size of a RHEL one (about 250 entries: leaf form): the
/// fixup's backup beside /etc/fstab, then the grown original.
#[test]
fn rhel_sized_etc_gets_a_backup_and_a_grown_fstab() {
    let mut t = BTreeMap::new();
    t.insert(
        "etc".to_string(),
        Node::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    );
    let real = std::fs::read_dir("/work/main/target/guest-cache/bookworm/etc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut names: Vec<String> = real;
    for i in 0..250 {
        if names.len() >= 250 {
            break;
        }
        names.push(format!("rhel-{i}.conf"));
    }
    for (i, n) in names.iter().enumerate() {
        t.insert(format!("etc/{n}"), regular(bytes(i as u64, i * 7 % 3000)));
    }
    t.insert(
        "etc/fstab".into(),
        regular(b"/dev/sda1 / xfs defaults 0 0\n/dev/sda2 swap swap defaults 0 0\n".to_vec()),
    );
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    for (name, args) in PROFILES {
        let img = mkfs(args, 300, Some(&proto));
        let (fmt, size) = xfs_db_format(&img.path, "/etc");
        assert!(
            fmt.starts_with('2') && size > 4096,
            "{name}: /etc is {fmt}, {size} bytes"
        );
        let (ov, mut fs) = over(&img.path);
        let fstab = GuestPath::lexical(b"/etc/fstab");
        let old = fs.read("/etc/fstab").unwrap();
        let m = fs.lstat("/etc/fstab").unwrap().1;
        let bak = GuestPath::lexical(b"/etc/fstab.vmie.bak");
        fs.create_file(&bak, &old, &NewAttrs::like(&m)).unwrap();
        let new = format!("UUID=0123 / xfs defaults 0 0\n# {}\n", "x".repeat(6000));
        fs.replace_file(&fstab, new.as_bytes()).unwrap();
        fs.verify_paths(&[
            (fstab.clone(), Some(new.as_bytes().to_vec())),
            (bak.clone(), Some(old.clone())),
        ])
        .unwrap();
        commit(&ov, &img.path);
        t.insert("etc/fstab.vmie.bak".into(), regular(old.clone()));
        let mut want = t.clone();
        want.insert("etc/fstab".into(), regular(new.into_bytes()));
        check_all(&img.path, &want, name);
        t.remove("etc/fstab.vmie.bak");
    }
}

/// Allocation on an rmapbt filesystem works (tests/rmap.rs has the
/// rest); running out of space is refused without a write; a name that
/// does not fit is refused.
#[test]
fn refusals_write_nothing() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let img = mkfs(&["-m", "rmapbt=1"], 300, Some(&proto));
    let (ov, mut fs) = over(&img.path);
    let p = GuestPath::lexical(b"/etc/new");
    fs.create_file(&p, b"data", &NewAttrs::default()).unwrap();
    commit(&ov, &img.path);
    assert_clean(&img.path, "rmapbt: a file with a block");

    // No space: a file larger than the free space.
    let img = mkfs(&["-m", "finobt=1"], 300, Some(&proto));
    let (ov, mut fs) = over(&img.path);
    let err = fs
        .create_file(&p, &vec![7u8; 290 << 20], &NewAttrs::default())
        .unwrap_err();
    assert!(matches!(err, FsError::NoSpace { .. }), "{err}");
    assert!(!ov.is_dirty());
    let err = fs
        .replace_file(&GuestPath::lexical(b"/etc/fstab"), &vec![7u8; 290 << 20])
        .unwrap_err();
    assert!(matches!(err, FsError::NoSpace { .. }), "{err}");
    assert!(!ov.is_dirty());
    // Names XFS cannot hold.
    let long = GuestPath::lexical(format!("/etc/{}", "n".repeat(256)).as_bytes());
    assert!(fs.create_file(&long, b"x", &NewAttrs::default()).is_err());
    // An xattr namespace we do not write.
    let acl = NewAttrs {
        xattrs: vec![Xattr {
            name: b"system.posix_acl_access".to_vec(),
            value: vec![2, 0, 0, 0],
        }],
        ..NewAttrs::default()
    };
    let err = fs.create_file(&p, b"x", &acl).unwrap_err();
    assert!(err.to_string().contains("system.posix_acl_access"), "{err}");
    assert!(!ov.is_dirty());
    assert_clean(&img.path, "after refusals");
}

/// Patch `len` bytes at `at` of the image with `f`, re-sealing a v5 CRC
/// at `crc` (relative to `at`).
fn patch(img: &Path, at: u64, len: usize, crc: Option<usize>, f: &mut dyn FnMut(&mut [u8])) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut b = vec![0u8; len];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut b).unwrap();
    f(&mut b);
    if let Some(o) = crc {
        b[o..o + 4].fill(0);
        let c = !vmie_disk::checksum::crc32c_update(!0, &b);
        b[o..o + 4].copy_from_slice(&c.to_le_bytes());
    }
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&b).unwrap();
}

fn db_num(out: &str, k: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{k} = ")))
        .unwrap_or_else(|| panic!("{k} in {out}"))
        .trim()
        .parse()
        .unwrap()
}

/// Corrupted AG headers and btree blocks (CRCs re-sealed, so only our
/// checks can notice): every write refuses with an error naming the
/// structure, never panics, and leaves the device bytes unchanged.
#[test]
fn corrupted_allocation_metadata_is_refused() {
    let t = forms_tree();
    let work = tempfile::tempdir().unwrap();
    let proto = protofile(&t, work.path());
    let base = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
    let sb = xfs_db(
        &base.path,
        false,
        &["sb 0", "print agcount agblocks blocksize"],
    );
    let (agcount, agblocks, bs) = (
        db_num(&sb, "agcount"),
        db_num(&sb, "agblocks"),
        db_num(&sb, "blocksize"),
    );
    // (what, byte offset and length, crc offset, change)
    type Change = Box<dyn Fn(&mut [u8], u64)>;
    type Case = (String, Vec<(u64, usize, usize)>, Change, &'static str);
    let mut cases: Vec<Case> = Vec::new();
    let agfs: Vec<(u64, usize, usize)> = (0..agcount)
        .map(|a| (a * agblocks * bs + 512, 512, 216))
        .collect();
    let agis: Vec<(u64, usize, usize)> = (0..agcount)
        .map(|a| (a * agblocks * bs + 1024, 512, 312))
        .collect();
    cases.push((
        "AGF free count above the AG".into(),
        agfs.clone(),
        Box::new(|b, _| b[52..56].copy_from_slice(&u32::MAX.to_be_bytes())),
        "AGF",
    ));
    cases.push((
        "AGF bnobt levels".into(),
        agfs.clone(),
        Box::new(|b, _| b[28..32].copy_from_slice(&40u32.to_be_bytes())),
        "bnobt",
    ));
    cases.push((
        "AGI free count above the count".into(),
        agis.clone(),
        Box::new(|b, _| b[28..32].copy_from_slice(&u32::MAX.to_be_bytes())),
        "AGI",
    ));
    let mut roots = Vec::new();
    let mut bnoroots = Vec::new();
    let mut iroots = Vec::new();
    for a in 0..agcount {
        let o = xfs_db(
            &base.path,
            false,
            &[&format!("agf {a}"), "print bnoroot cntroot"],
        );
        for k in ["bnoroot", "cntroot"] {
            roots.push(((a * agblocks + db_num(&o, k)) * bs, bs as usize, 52));
        }
        bnoroots.push(((a * agblocks + db_num(&o, "bnoroot")) * bs, bs as usize, 52));
        let o = xfs_db(
            &base.path,
            false,
            &[&format!("agi {a}"), "print root free_root"],
        );
        for k in ["root", "free_root"] {
            iroots.push(((a * agblocks + db_num(&o, k)) * bs, bs as usize, 52));
        }
    }
    // The two free-space trees disagree (each alone looks fine).
    cases.push((
        "bnobt records shifted".into(),
        bnoroots,
        Box::new(|b, _| {
            let n = u16::from_be_bytes([b[6], b[7]]) as usize;
            for i in 0..n {
                let o = 56 + i * 8;
                let v = u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) + 1;
                b[o..o + 4].copy_from_slice(&v.to_be_bytes());
            }
        }),
        "is not recorded",
    ));
    cases.push((
        "free-space btree record count".into(),
        roots,
        Box::new(|b, _| b[6..8].copy_from_slice(&0xFFFFu16.to_be_bytes())),
        "records",
    ));
    cases.push((
        "inode btree free masks".into(),
        iroots.clone(),
        Box::new(|b, _| {
            let n = u16::from_be_bytes([b[6], b[7]]) as usize;
            for i in 0..n {
                b[56 + i * 16 + 8..56 + i * 16 + 16].fill(0);
            }
        }),
        "",
    ));
    cases.push((
        "inode btree owner".into(),
        iroots,
        Box::new(|b, _| b[48..52].copy_from_slice(&77u32.to_be_bytes())),
        "owner",
    ));
    for (what, places, change, needle) in cases {
        let img = mkfs(&["-m", "finobt=1,reflink=0"], 300, Some(&proto));
        for (at, len, crc) in &places {
            patch(&img.path, *at, *len, Some(*crc), &mut |b| change(b, *at));
        }
        let before = std::fs::read(&img.path).unwrap();
        let (ov, mut fs) = over(&img.path);
        let r1 = fs.create_file(
            &GuestPath::lexical(b"/etc/new"),
            &bytes(1, 10_000),
            &NewAttrs::default(),
        );
        // Only the block allocator reads the free-space structures.
        let rs = if places[0].2 == 312 || what.starts_with("inode") {
            vec![&r1]
        } else {
            let r2 = fs.replace_file(&GuestPath::lexical(b"/etc/fstab"), &bytes(2, 100_000));
            assert!(r2.is_err(), "{what}: replace");
            eprintln!("{what}: {}", r2.as_ref().unwrap_err());
            vec![&r1]
        };
        for r in rs {
            let e = r.as_ref().expect_err(&what);
            assert!(
                matches!(e, FsError::Corrupt { .. } | FsError::Unsupported { .. }),
                "{what}: {e}"
            );
            assert!(e.to_string().contains(needle), "{what}: {e}");
        }
        eprintln!("{what}: {}", r1.unwrap_err());
        assert!(!ov.is_dirty(), "{what}: the overlay was written");
        drop(fs);
        assert!(
            std::fs::read(&img.path).unwrap() == before,
            "{what}: the image changed"
        );
    }
}
