//! Shared helpers: XFS images made by the real mkfs.xfs from a protofile
//! (no mount needed), attributes set by xfs_db -x, checks by xfs_repair -n.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice, Overlay};
use vmie_guestfs::{FileType, GuestFs, GuestFsExt, GuestPath, NewAttrs, Xattr};
use vmie_xfs::XfsFs;

/// What a path holds in the source tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link(Vec<u8>),
}

/// Deterministic bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The test tree: every directory form, symlinks inline and remote,
/// files from empty to 3 MiB. `remote_links` adds symlinks whose targets
/// do not fit in the inode: mkfs.xfs 6.1 writes those without their v5
/// block header (xfs_repair -n and our reader both refuse them), so they
/// are only asked of v4 images.
pub fn tree_with(remote_links: bool) -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    let dir = |m: u32| Node::Dir {
        mode: m,
        uid: 0,
        gid: 0,
    };
    let file = |seed: u64, len: usize, mode: u32, uid: u32| Node::File {
        data: bytes(seed, len),
        mode,
        uid,
        gid: uid + 1,
    };
    t.insert("etc".into(), dir(0o755));
    t.insert(
        "etc/fstab".into(),
        Node::File {
            data: b"UUID=1234 / xfs defaults 0 0\n/dev/sda2 swap swap defaults 0 0\n".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    );
    t.insert("etc/empty".into(), file(1, 0, 0o600, 0));
    t.insert("etc/one".into(), file(2, 1, 0o640, 7));
    t.insert("etc/page".into(), file(3, 4096, 0o644, 1000));
    t.insert("etc/odd".into(), file(4, 10_001, 0o755, 65534));
    t.insert("etc/big".into(), file(5, 3 << 20, 0o644, 0));
    t.insert("etc/short-link".into(), Node::Link(b"fstab".to_vec()));
    t.insert("etc/inline-link".into(), Node::Link([b'i'; 300].to_vec()));
    if remote_links {
        t.insert("etc/long-link".into(), Node::Link([b'a'; 600].to_vec()));
        t.insert("etc/max-link".into(), Node::Link(vec![b'x'; 1023]));
    }
    t.insert("etc/abs-link".into(), Node::Link(b"/etc/page".to_vec()));
    // Block form: a few dozen entries.
    t.insert("block".into(), dir(0o700));
    for i in 0..40 {
        t.insert(
            format!("block/entry-{i:03}"),
            file(100 + i, (i * 37) as usize, 0o644, 0),
        );
    }
    // Leaf form: more than one directory block, one leaf block.
    t.insert("leaf".into(), dir(0o755));
    for i in 0..300 {
        t.insert(
            format!("leaf/a-rather-long-file-name-to-fill-blocks-{i:05}"),
            file(1000 + i, 3, 0o644, 0),
        );
    }
    // Node form: leaf entries overflow one 4 KiB leaf block (about 500).
    t.insert("node".into(), dir(0o755));
    for i in 0..1500 {
        t.insert(
            format!("node/n{i:05}"),
            file(10_000 + i, (i % 5) as usize, 0o644, 0),
        );
    }
    t.insert("node/sub".into(), dir(0o751));
    t.insert("node/sub/deep".into(), file(9, 12, 0o444, 3));
    t
}

/// The tree without remote symlinks.
pub fn tree() -> BTreeMap<String, Node> {
    tree_with(false)
}

fn mode_str(kind: char, mode: u32) -> String {
    let u = if mode & 0o4000 != 0 { 'u' } else { '-' };
    let g = if mode & 0o2000 != 0 { 'g' } else { '-' };
    format!("{kind}{u}{g}{:03o}", mode & 0o777)
}

/// Write the tree's files under `root` and a protofile naming them.
pub fn protofile(t: &BTreeMap<String, Node>, root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut out = String::from("dummy\n0 0\nd--755 0 0\n");
    fn emit(t: &BTreeMap<String, Node>, prefix: &str, src: &Path, out: &mut String, depth: usize) {
        for (path, node) in t {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            if rest.is_empty() || rest.contains('/') {
                continue;
            }
            let pad = " ".repeat(depth);
            match node {
                Node::File {
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    let f = src.join(path.replace('/', "_"));
                    std::fs::write(&f, data).unwrap();
                    out.push_str(&format!(
                        "{pad}{rest} {} {uid} {gid} {}\n",
                        mode_str('-', *mode),
                        f.display()
                    ));
                }
                Node::Link(target) => {
                    out.push_str(&format!(
                        "{pad}{rest} l--777 0 0 {}\n",
                        String::from_utf8(target.clone()).unwrap()
                    ));
                }
                Node::Dir { mode, uid, gid } => {
                    out.push_str(&format!(
                        "{pad}{rest} {} {uid} {gid}\n",
                        mode_str('d', *mode)
                    ));
                    emit(t, &format!("{path}/"), src, out, depth + 1);
                    out.push_str(&format!("{pad}$\n"));
                }
            }
        }
    }
    emit(t, "", &src, &mut out, 1);
    out.push_str("$\n");
    let p = root.join("proto");
    std::fs::write(&p, out).unwrap();
    p
}

pub struct Img {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// mkfs.xfs with `args` over a sparse image of `mib` MiB, populated from
/// `proto` when given.
pub fn mkfs(args: &[&str], mib: u64, proto: Option<&Path>) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    let mut cmd = Command::new("mkfs.xfs");
    cmd.args(["-q", "-f"]).args(args);
    if let Some(p) = proto {
        cmd.arg("-p").arg(p);
    }
    cmd.arg(&path);
    let out = cmd.output().expect("mkfs.xfs (xfsprogs) must be installed");
    assert!(
        out.status.success(),
        "mkfs.xfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Img { dir, path }
}

/// Run xfs_db with commands; returns stdout.
pub fn xfs_db(img: &Path, expert: bool, cmds: &[&str]) -> String {
    let mut cmd = Command::new("xfs_db");
    cmd.arg(if expert { "-x" } else { "-r" });
    for c in cmds {
        cmd.arg("-c").arg(c);
    }
    cmd.arg(img);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "xfs_db {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// xfs_repair -n: (ok, output).
pub fn repair_n(img: &Path) -> (bool, String) {
    let out = Command::new("xfs_repair")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn open(img: &Path) -> (Arc<dyn Device>, XfsFs) {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(img).unwrap());
    let fs = XfsFs::open(Arc::clone(&dev), "test.img").unwrap();
    (dev, fs)
}

/// Compare everything our reader sees with the tree; returns the number
/// of comparisons made.
pub fn compare(fs: &dyn GuestFs, t: &BTreeMap<String, Node>) -> usize {
    let mut n = 0;
    for (path, node) in t {
        let p = format!("/{path}");
        let (_, m) = fs.lstat(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        match node {
            Node::File {
                data,
                mode,
                uid,
                gid,
            } => {
                assert_eq!(m.file_type, FileType::Regular, "{p}");
                assert_eq!(
                    (m.mode, m.uid, m.gid, m.size),
                    (*mode, *uid, *gid, data.len() as u64),
                    "{p}"
                );
                let got = fs.read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
                assert!(got == *data, "{p}: contents differ");
            }
            Node::Dir { mode, uid, gid } => {
                assert_eq!(m.file_type, FileType::Directory, "{p}");
                assert_eq!((m.mode, m.uid, m.gid), (*mode, *uid, *gid), "{p}");
                let (_, entries) = fs.list(&p).unwrap();
                let mut want: Vec<(Vec<u8>, FileType)> = t
                    .iter()
                    .filter_map(|(q, n)| {
                        let rest = q.strip_prefix(&format!("{path}/"))?;
                        (!rest.contains('/')).then(|| {
                            let ft = match n {
                                Node::File { .. } => FileType::Regular,
                                Node::Dir { .. } => FileType::Directory,
                                Node::Link(_) => FileType::Symlink,
                            };
                            (rest.as_bytes().to_vec(), ft)
                        })
                    })
                    .collect();
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let got: Vec<(Vec<u8>, FileType)> =
                    entries.into_iter().map(|e| (e.name, e.file_type)).collect();
                assert_eq!(got, want, "{p}: listing");
            }
            Node::Link(target) => {
                assert_eq!(m.file_type, FileType::Symlink, "{p}");
                assert_eq!(fs.readlink(&p).unwrap(), *target, "{p}");
            }
        }
        n += 1;
    }
    n
}

/// Walk the whole tree from the root, reading everything readable; never
/// panics on corrupt input (that is what the hostile tests check).
pub fn walk_all(fs: &dyn GuestFs) -> usize {
    let mut todo = vec![GuestPath::root()];
    let mut seen = 0usize;
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs.read_dir(&d) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > 20_000 {
                return seen;
            }
            let p = d.join(&e.name);
            let _ = fs.symlink_metadata(&p);
            match e.file_type {
                FileType::Directory => todo.push(p),
                FileType::Symlink => {
                    let _ = fs.read_link(&p);
                }
                _ => {
                    let _ = fs.read_file(&p, 8 << 20);
                }
            }
        }
    }
    seen
}

/// The file's bytes as xfs_db maps them: its size, and its extents read
/// from the image file directly.
pub fn xfs_db_read(img: &Path, path: &str) -> Vec<u8> {
    let out = xfs_db(
        img,
        false,
        &[
            &format!("path {path}"),
            "print core.size",
            "bmap",
            "sb 0",
            "print blocksize agblocks agblklog",
        ],
    );
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .trim()
            .parse()
            .unwrap()
    };
    let size = field("core.size");
    let bs = field("blocksize");
    let agblocks = field("agblocks");
    let mut data = vec![0u8; size as usize];
    let mut f = std::fs::File::open(img).unwrap();
    for l in out.lines().filter(|l| l.starts_with("data offset")) {
        // data offset 0 startblock 1234 (0/1234) count 3 flag 0
        let w: Vec<&str> = l.split_whitespace().collect();
        let off: u64 = w[2].parse().unwrap();
        let agpair = w[5].trim_matches(|c| c == '(' || c == ')');
        let (ag, agbno) = agpair.split_once('/').unwrap();
        let (ag, agbno): (u64, u64) = (ag.parse().unwrap(), agbno.parse().unwrap());
        let count: u64 = w[7].parse().unwrap();
        assert_eq!(w[9], "0", "unwritten extent in {l}");
        for b in 0..count {
            let fo = (off + b) * bs;
            if fo >= size {
                break;
            }
            let n = (size - fo).min(bs) as usize;
            f.seek(SeekFrom::Start((ag * agblocks + agbno + b) * bs))
                .unwrap();
            f.read_exact(&mut data[fo as usize..fo as usize + n])
                .unwrap();
        }
    }
    data
}

/// xfs_db's listing of a directory (names, without . and ..); every entry
/// must be reported with a good hash.
pub fn xfs_db_ls(img: &Path, dir: &str) -> Vec<Vec<u8>> {
    let out = xfs_db(img, false, &[&format!("ls {dir}")]);
    let mut names = Vec::new();
    for l in out.lines().skip(1) {
        assert!(l.ends_with(" (good)"), "xfs_db ls {dir}: {l}");
        let l = &l[..l.len() - 7];
        // off ino type hash namelen name
        let nl: usize = l.split_whitespace().nth(4).unwrap().parse().unwrap();
        let name = l.as_bytes()[l.len() - nl..].to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// The data fork format and size of a path, as xfs_db prints them.
pub fn xfs_db_format(img: &Path, path: &str) -> (String, u64) {
    let out = xfs_db(
        img,
        false,
        &[&format!("path {path}"), "print core.format core.size"],
    );
    let f = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .trim()
            .to_string()
    };
    (f("core.format"), f("core.size").parse().unwrap())
}

/// xfs_repair -n must exit 0 and print nothing but its phase banners.
pub fn assert_clean(img: &Path, what: &str) {
    let (ok, out) = repair_n(img);
    assert!(ok, "{what}: xfs_repair -n failed:\n{out}");
    let benign = [
        "Phase ",
        "        - ",
        "Cannot get host filesystem geometry.",
        "Repair may fail if there is a sector size mismatch between",
        "the image and the host filesystem.",
        "No modify flag set, skipping",
    ];
    for l in out.lines() {
        assert!(
            benign.iter().any(|b| l.starts_with(b)),
            "{what}: xfs_repair -n reports: {l}\n{out}"
        );
    }
}

pub fn over(img: &Path) -> (Arc<Overlay>, XfsFs) {
    let base: Arc<dyn Device> = Arc::new(FileDevice::open(img).unwrap());
    let ov = Arc::new(Overlay::new(base));
    let fs = XfsFs::open(ov.clone(), "test.img").unwrap();
    (ov, fs)
}

pub fn commit(ov: &Overlay, img: &Path) {
    let f = FileDevice::open_rw(img).unwrap();
    for (off, data) in ov.changes().unwrap() {
        f.write_at(off, &data).unwrap();
    }
    ov.discard().unwrap();
}

pub const PROFILES: [(&str, &[&str]); 6] = [
    ("v4", &["-m", "crc=0"]),
    ("v5-nofinobt", &["-m", "finobt=0,reflink=0"]),
    ("v5-finobt", &["-m", "finobt=1,reflink=0"]),
    ("v5-reflink", &["-m", "reflink=1"]),
    (
        "v5-bigtime-inobtcount",
        &["-m", "reflink=1,bigtime=1,inobtcount=1"],
    ),
    ("v5-1k", &["-b", "size=1024", "-m", "reflink=1"]),
];

pub fn selinux() -> NewAttrs {
    NewAttrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:etc_t:s0\0".to_vec(),
        }],
    }
}

/// A small tree with one directory of each form: shortform (`small`),
/// block (`block`), leaf (`leaf`), node (`node`).
pub fn forms_tree() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    let dir = || Node::Dir {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let file = |seed: u64, len: usize| Node::File {
        data: bytes(seed, len),
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    t.insert("etc".into(), dir());
    t.insert(
        "etc/fstab".into(),
        Node::File {
            data: b"/dev/sda1 / xfs defaults 0 0\n".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    );
    t.insert("small".into(), dir());
    for i in 0..6 {
        t.insert(format!("small/f{i}"), file(i, 100 * i as usize));
    }
    t.insert("block".into(), dir());
    for i in 0..20 {
        t.insert(format!("block/entry-{i:03}"), file(50 + i, 3000));
    }
    t.insert("leaf".into(), dir());
    for i in 0..200 {
        t.insert(
            format!("leaf/a-long-name-to-fill-blocks-{i:04}"),
            file(200 + i, 10),
        );
    }
    t.insert("node".into(), dir());
    for i in 0..1200 {
        t.insert(format!("node/n{i:05}"), file(2000 + i, 1));
    }
    t
}

pub fn listing(t: &BTreeMap<String, Node>, dir: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = t
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{dir}/")))
        .filter(|r| !r.contains('/'))
        .map(|r| r.as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// Everything checked after a change: xfs_repair -n clean, xfs_db lists
/// each directory with good hashes and reads each file's bytes through its
/// own block map, and a fresh reader sees exactly `want`.
pub fn check_all(img: &Path, want: &BTreeMap<String, Node>, what: &str) {
    assert_clean(img, what);
    for (k, n) in want {
        match n {
            Node::Dir { .. } => {
                assert_eq!(
                    xfs_db_ls(img, &format!("/{k}")),
                    listing(want, k),
                    "{what}: /{k}"
                )
            }
            Node::File { data, .. } if data.len() > 1000 || k.starts_with("etc") => {
                assert!(
                    xfs_db_read(img, &format!("/{k}")) == *data,
                    "{what}: xfs_db reads /{k}"
                )
            }
            _ => {}
        }
    }
    let (_, fs) = open(img);
    compare(&fs, want);
}

pub fn regular(data: Vec<u8>) -> Node {
    Node::File {
        data,
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// Superblock 0's fields `names` (as xfs_db prints them), in order.
pub fn sb_fields(img: &Path, names: &[&str]) -> Vec<u64> {
    let o = xfs_db(img, false, &["sb 0", &format!("print {}", names.join(" "))]);
    names
        .iter()
        .map(|k| {
            o.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("xfs_db printed no {k}: {o}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// xfs_db's block map of a path: (file offset, block count) per extent,
/// in file blocks.
pub fn xfs_db_bmap(img: &Path, path: &str) -> Vec<(u64, u64)> {
    let out = xfs_db(img, false, &[&format!("path {path}"), "bmap"]);
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let off = w.iter().position(|x| *x == "offset")?;
            let cnt = w.iter().position(|x| *x == "count")?;
            Some((w.get(off + 1)?.parse().ok()?, w.get(cnt + 1)?.parse().ok()?))
        })
        .collect()
}

/// Whether directory `path` is in node form by xfs_db's block map: it
/// maps a block in the free segment (64 GiB), which only node and btree
/// directories have.
pub fn xfs_db_is_node_dir(img: &Path, path: &str, block_size: u64) -> bool {
    let free = (64u64 << 30) / block_size;
    xfs_db_bmap(img, path)
        .iter()
        .any(|&(off, n)| off + n > free)
}

/// Run `cmd`, which must succeed; its standard output.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image mounted by the host's kernel on a loop device (the suite
/// runs as root), unmounted on drop. Tests use it to make what only the
/// kernel makes (reflinked files) and to read results back through the
/// kernel's own XFS; the tool itself never mounts.
pub struct Mounted {
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(img: &Path, ro: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = if ro { "loop,ro" } else { "loop" };
        let out = Command::new("mount")
            .args(["-t", "xfs", "-o", opts])
            .arg(img)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t xfs -o {opts} {} (needs root and a kernel with XFS): {}",
            img.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Mounted {
    /// Unmount, retrying while the mount is busy: another test thread's
    /// child may hold a copy of a descriptor into it between its fork and
    /// exec (runs of the whole suite left such mounts behind). Lazily
    /// detached as a last resort, so no mount outlives the test.
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(self.dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Whether the host's kernel can mount `img`: v5 only (this machine's
/// kernel, 6.18 with XFS built in, has no `CONFIG_XFS_SUPPORT_V4`:
/// "Deprecated V4 format (crc=0) not supported by kernel"); v4 volumes are
/// read back by xfs_repair, xfs_db and our reader.
pub fn kernel_reads(img: &Path) -> bool {
    let mut sb = [0u8; 8];
    let mut f = std::fs::File::open(img).unwrap();
    f.read_exact(&mut sb).unwrap();
    let mut v = [0u8; 2];
    f.seek(SeekFrom::Start(100)).unwrap();
    f.read_exact(&mut v).unwrap();
    &sb[..4] == b"XFSB" && u16::from_be_bytes(v) & 0xf == 5
}

/// The kernel, the final reader: mounted read-only, every path of `want`
/// has its type, mode, owner and contents (or link target), every
/// directory lists exactly its entries, and nothing else is in the root.
/// Returns false, checking nothing, on a volume the kernel cannot mount
/// ([`kernel_reads`]).
pub fn kernel_check(img: &Path, want: &BTreeMap<String, Node>, what: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    if !kernel_reads(img) {
        return false;
    }
    let m = Mounted::new(img, true);
    let names = |dir: &Path| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{what}: the kernel lists {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    let mut root: Vec<Vec<u8>> = want
        .keys()
        .filter(|k| !k.contains('/'))
        .map(|k| k.as_bytes().to_vec())
        .collect();
    root.sort();
    let mut got_root = names(m.dir.path());
    got_root.retain(|n| n != b"lost+found");
    assert_eq!(got_root, root, "{what}: the kernel lists /");
    for (k, n) in want {
        let p = m.path(k);
        let md = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{what}: the kernel: /{k}: {e}"));
        match n {
            Node::File {
                data,
                mode,
                uid,
                gid,
            } => {
                assert!(md.file_type().is_file(), "{what}: the kernel: /{k} type");
                assert_eq!(
                    (md.mode() & 0o7777, md.uid(), md.gid()),
                    (*mode, *uid, *gid),
                    "{what}: the kernel: /{k}"
                );
                let got = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("{what}: the kernel reads /{k}: {e}"));
                assert!(got == *data, "{what}: the kernel reads /{k} differently");
            }
            Node::Dir { mode, uid, gid } => {
                assert!(md.file_type().is_dir(), "{what}: the kernel: /{k} type");
                assert_eq!(
                    (md.mode() & 0o7777, md.uid(), md.gid()),
                    (*mode, *uid, *gid),
                    "{what}: the kernel: /{k}"
                );
                assert_eq!(names(&p), listing(want, k), "{what}: the kernel lists /{k}");
            }
            Node::Link(target) => {
                assert!(md.file_type().is_symlink(), "{what}: the kernel: /{k} type");
                let got = std::fs::read_link(&p).unwrap();
                assert_eq!(
                    got.as_os_str().as_bytes(),
                    &target[..],
                    "{what}: the kernel: /{k} target"
                );
            }
        }
    }
    true
}

/// Byte offset of the first block a btree-form file's inode root points
/// to (its first bmbt leaf or node), as xfs_db reads it.
pub fn first_bmbt_child(img: &Path, path: &str, v5: bool) -> u64 {
    let f = if v5 { "u3" } else { "u" };
    let o = xfs_db(
        img,
        false,
        &[&format!("path {path}"), &format!("print {f}.bmbt.ptrs[1]")],
    );
    let fsb: u64 = o.split('=').nth(1).unwrap().trim().parse().unwrap();
    let o = xfs_db(img, false, &[&format!("convert fsblock {fsb} daddr")]);
    let d: u64 = o
        .split('(')
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    d * 512
}

/// Recompute a v5 long-form btree block's CRC (at byte 64) after a test
/// changed it, so only the damage it meant is left.
pub fn reseal(b: &mut [u8]) {
    b[64..68].fill(0);
    let c = !vmie_disk::checksum::crc32c_update(!0, b);
    b[64..68].copy_from_slice(&c.to_le_bytes());
}

/// The directory's hash of a name (xfs_da_hashname), written here apart
/// from the crate's own so that tests aim at leaves independently.
pub fn da_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    let mut n = name;
    while n.len() >= 4 {
        h = (u32::from(n[0]) << 21)
            ^ (u32::from(n[1]) << 14)
            ^ (u32::from(n[2]) << 7)
            ^ u32::from(n[3])
            ^ h.rotate_left(28);
        n = &n[4..];
    }
    match *n {
        [a, b, c] => (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(c) ^ h.rotate_left(21),
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ h.rotate_left(14),
        [a] => u32::from(a) ^ h.rotate_left(7),
        _ => h,
    }
}

/// Append files of `bytes` in all (sparse, at most 32 MiB each: mkfs.xfs
/// 6.1 leaves broken AG headers behind files that cross into the next AG)
/// to the root of the protofile `proto`, their sources made in `dir`.
pub fn add_fillers(proto: &Path, dir: &Path, mut bytes: u64) {
    let text = std::fs::read_to_string(proto).unwrap();
    let mut text = text.strip_suffix("$\n").unwrap().to_string();
    let mut k = 0;
    while bytes > 0 {
        let len = bytes.min(32 << 20);
        let fpath = dir.join(format!("filler{k}"));
        std::fs::File::create(&fpath).unwrap().set_len(len).unwrap();
        text += &format!(" filler{k} ---644 0 0 {}\n", fpath.display());
        bytes -= len;
        k += 1;
    }
    text += "$\n";
    std::fs::write(proto, text).unwrap();
}
