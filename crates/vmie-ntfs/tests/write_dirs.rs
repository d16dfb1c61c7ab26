//! Directories on the write side: mkdir at several depths, files created
//! inside new directories (200 in one: the root index moves down into a new
//! `$INDEX_ALLOCATION`, then leaves split), removal of files and of emptied
//! directories, `NotEmpty` for the others; on 512 B, 4 KiB and 64 KiB
//! clusters. After every step `ntfsfix -n` is clean, `ntfsls -R` lists
//! exactly the expected tree (and so does our reader), every file reads back
//! through ntfscat and our reader, and the free clusters match the files'
//! runlists plus the directories' index allocations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

use common::*;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

/// The expected volume: directories and files made by the test.
struct Tree {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, Vec<u8>>,
    base_free: u64,
    cluster: u64,
}

fn parent_and_name(p: &str) -> (String, String) {
    let gp = GuestPath::from(p);
    (
        gp.parent().to_string(),
        String::from_utf8(gp.file_name().unwrap().to_vec()).unwrap(),
    )
}

impl Tree {
    fn new(img: &Path) -> Self {
        let (cluster, _, free) = ntfsinfo_space(img);
        let mut t = Self {
            dirs: BTreeSet::from(["/".to_string()]),
            files: BTreeMap::new(),
            base_free: 0,
            cluster,
        };
        t.base_free = free + t.held(img);
        t
    }

    fn held(&self, img: &Path) -> u64 {
        let files: u64 = self
            .files
            .keys()
            .map(|p| ntfsinfo_data_clusters(img, p, self.cluster))
            .sum();
        let dirs: u64 = self
            .dirs
            .iter()
            .map(|d| index_alloc_clusters(img, d, self.cluster))
            .sum();
        files + dirs + mft_clusters(img, self.cluster)
    }

    fn expected(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for d in &self.dirs {
            t.entry(d.clone()).or_default();
            if d != "/" {
                let (p, n) = parent_and_name(d);
                t.entry(p).or_default().insert(n);
            }
        }
        for f in self.files.keys() {
            let (p, n) = parent_and_name(f);
            t.entry(p).or_default().insert(n);
        }
        t
    }

    fn verify(&self, img: &Path) {
        ntfsfix_clean(img);
        let want = self.expected();
        assert_eq!(ntfsls_tree(img), want, "ntfsls -R");
        let fs = open(img);
        assert_eq!(our_tree(&fs), want, "our reader");
        for (p, d) in &self.files {
            assert_eq!(&ntfscat(img, p), d, "{p} through ntfscat");
            assert_eq!(&fs.read(p).unwrap(), d, "{p} through our reader");
        }
        let (_, _, free) = ntfsinfo_space(img);
        assert_eq!(
            free + self.held(img),
            self.base_free,
            "free clusters vs the files' runlists and the index allocations"
        );
    }

    fn mkdir(&mut self, img: &Path, p: &str) {
        open_rw(img)
            .mkdir(&GuestPath::from(p), &NewAttrs::default())
            .unwrap_or_else(|e| panic!("mkdir {p}: {e}"));
        self.dirs.insert(p.to_string());
    }

    fn create(&mut self, img: &Path, p: &str, data: Vec<u8>) {
        open_rw(img)
            .create_file(&GuestPath::from(p), &data, &NewAttrs::default())
            .unwrap_or_else(|e| panic!("create {p}: {e}"));
        self.files.insert(p.to_string(), data);
    }

    fn remove(&mut self, img: &Path, p: &str) {
        open_rw(img)
            .remove(&GuestPath::from(p))
            .unwrap_or_else(|e| panic!("remove {p}: {e}"));
        self.files.remove(p);
        self.dirs.remove(p);
    }
}

/// The record flags, `$FILE_NAME` attributes and `$INDEX_ROOT` header of a
/// directory as ntfsinfo prints them.
fn dir_facts(img: &Path, dir: &str) -> Vec<String> {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-F"),
            OsStr::new(dir),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    out.lines()
        .map(str::trim)
        .filter(|l| {
            [
                "MFT Record Flags:",
                "File attributes:",
                "Indexed Attr Type:",
                "Collation Rule:",
                "Index Block Size:",
                "Clusters Per Block:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn dirs(cluster: u32) {
    let img = mkntfs_geom(48, 512, cluster);
    let mut rng = XorShift::new(u64::from(cluster) + 7);
    // mkntfs leaves no free MFT record on small clusters: the first mkdir
    // grows $MFT.
    let mut t = Tree::new(&img.path);

    // A directory made by ntfs-3g, for comparison of what mkdir writes.
    let reference = mkntfs_geom(16, 512, cluster);
    reference.populate(&["ref"], &[]);
    let want_facts = dir_facts(&reference.path, "/ref");

    // mkdir at several depths.
    for d in ["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/x", "/a/y"] {
        t.mkdir(&img.path, d);
        t.verify(&img.path);
    }
    let mut facts = dir_facts(&img.path, "/a/b/c");
    // ntfs-3g's $SECURITY_DESCRIPTOR attribute is the only difference.
    facts.retain(|l| want_facts.contains(l));
    assert_eq!(facts, want_facts, "mkdir vs ntfs-3g's directory");
    assert!(
        want_facts.iter().any(|l| l.contains("I30_INDEX")),
        "{want_facts:?}"
    );
    // Exists, and not-a-directory parents.
    let mut fs = open_rw(&img.path);
    assert!(matches!(
        fs.mkdir(&GuestPath::from("/a/b"), &NewAttrs::default()),
        Err(FsError::Exists { .. })
    ));
    drop(fs);

    // Files in new directories, at every depth.
    for (i, d) in ["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/x"]
        .iter()
        .enumerate()
    {
        for j in 0..3 {
            let n = rng.below(9000) as usize;
            t.create(&img.path, &format!("{d}/f{i}{j}.txt"), rng.bytes(n));
        }
    }
    t.verify(&img.path);

    // ntfs-3g itself writes into a directory we made.
    img.populate(&[], &[("/a/b/c/fuse.txt", b"from ntfs-3g")]);
    t.files
        .insert("/a/b/c/fuse.txt".to_string(), b"from ntfs-3g".to_vec());
    // What ntfs-3g allocated for itself (it may grow $MFT) is not ours to
    // count.
    let (_, _, free) = ntfsinfo_space(&img.path);
    t.base_free = free + t.held(&img.path);
    t.verify(&img.path);

    // 200 files in a new directory: the root index moves down into an
    // $INDEX_ALLOCATION, then leaves split.
    t.mkdir(&img.path, "/big");
    for i in 0..200 {
        let n = rng.below(600) as usize;
        t.create(&img.path, &format!("/big/file-{i:03}"), rng.bytes(n));
        if i == 10 || i == 199 {
            t.verify(&img.path);
        }
    }
    assert!(index_alloc_clusters(&img.path, "/big", t.cluster) > 0);
    let blocks = ntfsinfo_indx_blocks(&img.path, "/big");
    // 200 entries need more leaves than one root in a record can point
    // at: the root (then internal) moved down a second time, leaving one end
    // entry above a three-level tree.
    let info = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-F"),
            OsStr::new("/big"),
            img.path.as_os_str(),
        ],
    ))
    .unwrap();
    let root_entries = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Index entries total:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(root_entries, "1", "{info}");
    assert!(blocks >= 3, "{blocks} index blocks in /big");
    // Subdirectories inside the big one, and files in them.
    t.mkdir(&img.path, "/big/sub");
    t.create(&img.path, "/big/sub/inner", rng.bytes(5000));
    t.verify(&img.path);

    // A non-empty directory is not removed, and nothing is written.
    for d in ["/a/b/c/d", "/big"] {
        let before = std::fs::read(&img.path).unwrap();
        let r = open_rw(&img.path).remove(&GuestPath::from(d));
        assert!(matches!(r, Err(FsError::NotEmpty { .. })), "{d}: {r:?}");
        assert!(std::fs::read(&img.path).unwrap() == before, "{d}");
    }

    // Empty the small directories and remove them, deepest first.
    for d in ["/a/b/c/d", "/a/b/c", "/a/b", "/a/y", "/a", "/x"] {
        let inside: Vec<String> = t
            .files
            .keys()
            .filter(|p| parent_and_name(p).0 == d)
            .cloned()
            .collect();
        for p in inside {
            t.remove(&img.path, &p);
        }
        t.remove(&img.path, d);
        t.verify(&img.path);
    }
    t.remove(&img.path, "/big/sub/inner");
    t.remove(&img.path, "/big/sub");
    t.verify(&img.path);
}

/// `INDX blocks total` of a directory's index, as ntfsinfo counts them.
fn ntfsinfo_indx_blocks(img: &Path, dir: &str) -> u64 {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-F"),
            OsStr::new(dir),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("INDX blocks total:"))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn dirs_4096() {
    dirs(4096);
}

#[test]
fn dirs_512() {
    dirs(512);
}

#[test]
fn dirs_65536() {
    dirs(65536);
}

/// MFT records 24 and up in use: `$Extend`'s three (24–26, as mkntfs makes
/// them) and every file of the tree.
fn used_records(img: &Path, dirs: &BTreeSet<String>) -> BTreeSet<u64> {
    let mut used = BTreeSet::from([24, 25, 26]);
    for d in dirs {
        used.extend(ntfsls_inodes(img, d).into_values().filter(|&i| i >= 24));
    }
    used
}

/// A tiny volume whose `$MFT` ntfscp laid out (20 files); our writer then
/// fills every free record and grows `$MFT` (several times) for more files
/// and a directory, exactly when no record is free.
fn mft_growth(cluster: u32) {
    let img = mkntfs_geom(if cluster > 4096 { 32 } else { 8 }, 512, cluster);
    let mut rng = XorShift::new(u64::from(cluster) + 99);
    let mut files = BTreeMap::new();
    for i in 0..20 {
        let n = rng.below(600) as usize;
        let data = rng.bytes(n);
        img.add(&format!("cp{i:03}"), &data);
        files.insert(format!("/cp{i:03}"), data);
    }
    let mut t = Tree::new(&img.path);
    t.files = files;
    t.base_free = ntfsinfo_space(&img.path).2 + t.held(&img.path);
    t.verify(&img.path);
    t.mkdir(&img.path, "/grown");
    let mut growths = 0;
    let mut full_before = 0;
    for i in 0..120 {
        let records = mft_records(&img.path);
        let full = used_records(&img.path, &t.dirs).len() as u64 == records - 24;
        full_before += u64::from(full);
        let n = rng.below(5000) as usize;
        let data = rng.bytes(n);
        let dir = if i % 2 == 0 { "" } else { "/grown" };
        t.create(&img.path, &format!("{dir}/new{i:03}"), data);
        let after = mft_records(&img.path);
        if after != records {
            assert!(full, "$MFT grew ({records} -> {after}) with a record free");
            assert!(after > records);
            growths += 1;
        }
        if growths > 0 && i % 40 == 0 {
            t.verify(&img.path);
        }
    }
    assert!(growths >= 2, "{growths} growths");
    assert_eq!(growths, full_before, "a full $MFT did not grow");
    t.verify(&img.path);
    let after = mft_records(&img.path);
    let used = used_records(&img.path, &t.dirs);
    assert_eq!(used.len(), t.files.len() + t.dirs.len() - 1 + 3);
    assert!(used.iter().all(|&r| r < after));
    // A freed record is reused before $MFT grows again.
    t.remove(&img.path, "/new000");
    t.create(&img.path, "/again", b"again".to_vec());
    assert_eq!(mft_records(&img.path), after);
    t.verify(&img.path);
}

#[test]
fn mft_growth_4096() {
    mft_growth(4096);
}

#[test]
fn mft_growth_512() {
    mft_growth(512);
}

#[test]
fn mft_growth_65536() {
    mft_growth(65536);
}

/// When the grown `$MFT` runlist would not fit in record 0 (which would
/// need an `$ATTRIBUTE_LIST`), creating a file with no free record is
/// refused and nothing is written. Crafted: record 0 filled up to its last
/// byte, and the clusters after `$MFT` marked in use so the growth needs a
/// second run.
#[test]
fn mft_growth_refused_without_attribute_list() {
    let img = mkntfs_geom(16, 512, 4096);
    let bytes = std::fs::read(&img.path).unwrap();
    let (cs, mft, rs) = layout(&bytes);
    let rec0 = |rn: u64| {
        let at = (mft + rn * rs as u64) as usize;
        let mut r = bytes[at..at + rs].to_vec();
        unprotect(&mut r);
        r
    };
    let r0 = rec0(0);
    let data = find_attr(&r0, 0x80);
    let mft_lcn = first_run_offset(&r0, data, cs) / cs;
    let mft_clusters = u64::from_le_bytes(r0[data + 40..data + 48].try_into().unwrap()) / cs;
    let r6 = rec0(6);
    let bitmap = first_run_offset(&r6, find_attr(&r6, 0x80), cs) as usize;
    let mut bytes = bytes;
    for c in mft_lcn + mft_clusters..mft_lcn + mft_clusters + 256 {
        bytes[bitmap + (c / 8) as usize] |= 1 << (c % 8);
    }
    std::fs::write(&img.path, &bytes).unwrap();
    patch_record(&img.path, 0, |rec| {
        let used = u32::from_le_bytes(rec[0x18..0x1C].try_into().unwrap()) as usize;
        let room = rec.len() - used;
        append_resident(rec, 0x100, &vec![0u8; room - 24]);
        assert_eq!(
            u32::from_le_bytes(rec[0x18..0x1C].try_into().unwrap()) as usize,
            rec.len()
        );
    });
    // The records $MFT has preallocated (about 500 here) go first; then it
    // must grow.
    let mut made = 0;
    let why = loop {
        assert!(made < 2000, "never refused");
        let before = std::fs::read(&img.path).unwrap();
        let p = format!("/new{made}");
        match open_rw(&img.path).create_file(
            &GuestPath::from(p.as_str()),
            b"x",
            &NewAttrs::default(),
        ) {
            Ok(()) => made += 1,
            Err(FsError::Unsupported { why, op, .. }) => {
                assert!(op.contains(&p), "{op}");
                assert!(
                    std::fs::read(&img.path).unwrap() == before,
                    "a refusal wrote"
                );
                break why;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(why.contains("$MFT cannot grow"), "{why}");
    assert!(why.contains("$ATTRIBUTE_LIST"), "{why}");
    let before = std::fs::read(&img.path).unwrap();
    let mut fs = open_rw(&img.path);
    match fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default()) {
        Err(FsError::Unsupported { why, .. }) => assert!(why.contains("$MFT cannot grow"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        std::fs::read(&img.path).unwrap() == before,
        "a refusal wrote"
    );
}

/// One open volume across writes: files in records `$MFT` only has after
/// it grew (in this same instance) are listed and read back by it.
#[test]
fn same_instance_sees_grown_mft() {
    let img = mkntfs_geom(16, 512, 4096);
    let before = mft_records(&img.path);
    let mut fs = open_rw(&img.path);
    let mut rng = XorShift::new(5);
    fs.mkdir(&GuestPath::from("/d"), &NewAttrs::default())
        .unwrap();
    let mut files = BTreeMap::new();
    for i in 0..40 {
        let n = rng.below(3000) as usize;
        let data = rng.bytes(n);
        let p = format!("/d/f{i:02}");
        fs.create_file(&GuestPath::from(p.as_str()), &data, &NewAttrs::default())
            .unwrap();
        assert_eq!(&fs.read(&p).unwrap(), &data, "{p}");
        files.insert(p, data);
    }
    let names: BTreeSet<String> = fs
        .read_dir(&GuestPath::from("/d"))
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert_eq!(names.len(), 40);
    for (p, d) in &files {
        assert_eq!(&fs.read(p).unwrap(), d, "{p}");
    }
    drop(fs);
    assert!(mft_records(&img.path) > before);
    ntfsfix_clean(&img.path);
    for (p, d) in &files {
        assert_eq!(&ntfscat(&img.path, p), d, "{p}");
    }
}
