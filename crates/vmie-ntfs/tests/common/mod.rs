//! Shared helpers of the vmie-ntfs tests: the real images in
//! `../shared/realdata`, images made by the real ntfs-3g tools (mkntfs,
//! ntfscp) and read back by them (ntfsls, ntfscat, ntfsinfo), and raw record
//! patching for the crafted cases.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice, MemDevice};
use vmie_guestfs::{FileType, GuestFs, GuestFsExt, GuestPath};
use vmie_ntfs::NtfsFs;

/// A file under `../shared/realdata` (beside the checkout).
pub fn realdata(rel: &str) -> PathBuf {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/realdata"
    ))
    .join(rel);
    assert!(
        p.exists(),
        "{} is missing: these tests need ../shared/realdata beside the workspace",
        p.display()
    );
    p
}

/// The ntfs-rs test filesystem (2 MiB, mkntfs, 512-byte clusters).
pub fn testfs1() -> PathBuf {
    realdata("ntfs-rs/testdata/testfs1")
}

/// dfVFS's `windows_volume.qcow2` converted to raw by `qemu-img convert`, in
/// a temporary directory (kept alive by the returned guard).
pub fn windows_volume_raw() -> (tempfile::TempDir, PathBuf) {
    let src = realdata("dfvfs/test_data/windows_volume.qcow2");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("windows_volume.raw");
    run(
        "qemu-img",
        &[
            OsStr::new("convert"),
            OsStr::new("-O"),
            OsStr::new("raw"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
    );
    (dir, dst)
}

/// A tool the tests need: found on `PATH` or in the sbin directories, or the
/// test fails saying what to install (tests never skip).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    let package = match name {
        "qemu-img" => "qemu-utils",
        _ => "ntfs-3g",
    };
    panic!("{name} is not installed: these tests need it (apt-get install {package})");
}

/// Run `name ARGS`, which must succeed; its stdout.
pub fn run<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Vec<u8> {
    let out = Command::new(tool(name))
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {:?} failed ({}): {}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Open an image file read-only.
pub fn open(path: &Path) -> NtfsFs {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(path).unwrap());
    NtfsFs::open(dev, path.display().to_string()).unwrap()
}

/// Open image bytes held in memory.
pub fn open_bytes(bytes: Vec<u8>) -> Result<NtfsFs, vmie_guestfs::FsError> {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("mem.img", bytes));
    NtfsFs::open(dev, "mem.img")
}

/// A small deterministic generator (xorshift64*).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A fresh image: a sparse file of `mib` MiB formatted by
/// `mkntfs -F -q -f -s 512 [-c CLUSTER]`.
pub struct Img {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn mkntfs(mib: u64, cluster: Option<u32>, label: &str) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ntfs.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let mut args: Vec<String> = ["-F", "-q", "-f", "-s", "512", "-L", label]
        .map(String::from)
        .to_vec();
    if let Some(c) = cluster {
        args.extend(["-c".to_string(), c.to_string()]);
    }
    args.push(path.display().to_string());
    run("mkntfs", &args);
    Img { dir, path }
}

impl Img {
    /// Copy `data` into the root directory as `name` with ntfscp.
    pub fn add(&self, name: &str, data: &[u8]) {
        let local = self.dir.path().join("ntfscp.src");
        std::fs::write(&local, data).unwrap();
        run(
            "ntfscp",
            &[
                OsStr::new("-f"),
                self.path.as_os_str(),
                local.as_os_str(),
                OsStr::new(&format!("/{name}")),
            ],
        );
    }
}

/// `ntfsls -R`: directory → names (without `.` and `..`), as ntfs-3g sees it.
pub fn ntfsls_tree(img: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let out = run(
        "ntfsls",
        &[OsStr::new("-f"), OsStr::new("-R"), img.as_os_str()],
    );
    let mut tree: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in String::from_utf8(out).unwrap().lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') && line.ends_with(':') {
            let dir = line[..line.len() - 1].to_string();
            tree.entry(dir.clone()).or_default();
            cur = Some(dir);
        } else if line != "." && line != ".." {
            let dir = cur
                .clone()
                .expect("ntfsls printed a name before a directory");
            tree.entry(dir).or_default().insert(line.to_string());
        }
    }
    tree
}

/// `ntfsls -p DIR`: the names in one directory.
pub fn ntfsls(img: &Path, dir: &str) -> BTreeSet<String> {
    let out = run(
        "ntfsls",
        &[
            OsStr::new("-f"),
            OsStr::new("-p"),
            OsStr::new(dir),
            img.as_os_str(),
        ],
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && *l != "." && *l != "..")
        .map(String::from)
        .collect()
}

/// `ntfsls -i -p DIR`: name → MFT record number.
pub fn ntfsls_inodes(img: &Path, dir: &str) -> BTreeMap<String, u64> {
    let out = run(
        "ntfsls",
        &[
            OsStr::new("-f"),
            OsStr::new("-i"),
            OsStr::new("-p"),
            OsStr::new(dir),
            img.as_os_str(),
        ],
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (num, name) = l.split_once(' ')?;
            Some((name.to_string(), num.parse().ok()?))
        })
        .filter(|(n, _)| n != "." && n != "..")
        .collect()
}

/// `ntfscat`: a file's contents as ntfs-3g reads them.
pub fn ntfscat(img: &Path, path: &str) -> Vec<u8> {
    run(
        "ntfscat",
        &[OsStr::new("-f"), img.as_os_str(), OsStr::new(path)],
    )
}

/// `ntfsinfo -m`: (cluster size, clusters in the volume, free clusters).
pub fn ntfsinfo_space(img: &Path) -> (u64, u64, u64) {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[OsStr::new("-f"), OsStr::new("-m"), img.as_os_str()],
    ))
    .unwrap();
    let field = |key: &str| -> u64 {
        let line = out
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("ntfsinfo -m printed no {key:?}:\n{out}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    (
        field("Cluster Size:"),
        field("Volume Size in Clusters:"),
        field("Free Clusters:"),
    )
}

/// Every directory's names through our reader (recursively from the root).
pub fn our_tree(fs: &dyn GuestFs) -> BTreeMap<String, BTreeSet<String>> {
    let mut tree = BTreeMap::new();
    let mut todo = vec![GuestPath::root()];
    while let Some(dir) = todo.pop() {
        let mut names = BTreeSet::new();
        for e in fs.read_dir(&dir).unwrap() {
            let p = dir.join(&e.name);
            if e.file_type == FileType::Directory {
                todo.push(p);
            }
            names.insert(String::from_utf8(e.name).unwrap());
        }
        tree.insert(dir.to_string(), names);
    }
    tree
}

/// Exercise every read primitive on whatever `fs` holds, up to `budget`
/// entries; errors are fine, panics are not. Returns entries visited.
pub fn exercise(fs: &NtfsFs, budget: usize) -> usize {
    let _ = fs.volume_info();
    let mut n = 0;
    let mut todo = vec![GuestPath::root()];
    while let Some(dir) = todo.pop() {
        let _ = fs.symlink_metadata(&dir);
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            n += 1;
            if n > budget {
                return n;
            }
            let p = dir.join(&e.name);
            let upper = dir.join(&e.name.to_ascii_uppercase());
            let _ = fs.symlink_metadata(&upper);
            match fs.symlink_metadata(&p).map(|m| m.file_type) {
                Ok(FileType::Directory) => todo.push(p),
                Ok(FileType::Symlink) => {
                    let _ = fs.read_link(&p);
                }
                Ok(_) => {
                    let _ = fs.read_file(&p, 4 << 20);
                }
                Err(_) => {
                    let _ = fs.read_file(&p, 4 << 20);
                    let _ = fs.read_dir(&p);
                }
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------
// Raw patching of images made by mkntfs (contiguous MFT), for crafted cases.

/// Boot sector facts: (cluster size, MFT byte offset, file record size).
pub fn layout(img: &[u8]) -> (u64, u64, usize) {
    let bps = u64::from(u16::from_le_bytes([img[11], img[12]]));
    let cluster = bps * u64::from(img[13]);
    let mft_lcn = u64::from_le_bytes(img[0x30..0x38].try_into().unwrap());
    let rec = img[0x40] as i8;
    let rec_size = if rec > 0 {
        cluster as usize * rec as usize
    } else {
        1usize << (-rec)
    };
    (cluster, mft_lcn * cluster, rec_size)
}

/// Undo the update sequence protection of the record at `buf` in place.
pub fn unprotect(buf: &mut [u8]) {
    let ofs = u16::from_le_bytes([buf[4], buf[5]]) as usize;
    let count = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    for i in 0..count - 1 {
        let at = i * 512 + 510;
        buf[at] = buf[ofs + 2 + 2 * i];
        buf[at + 1] = buf[ofs + 3 + 2 * i];
    }
}

/// Protect the record at `buf` again (the inverse of [`unprotect`]).
pub fn protect(buf: &mut [u8]) {
    let ofs = u16::from_le_bytes([buf[4], buf[5]]) as usize;
    let count = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    for i in 0..count - 1 {
        let at = i * 512 + 510;
        buf[ofs + 2 + 2 * i] = buf[at];
        buf[ofs + 3 + 2 * i] = buf[at + 1];
        buf[at] = buf[ofs];
        buf[at + 1] = buf[ofs + 1];
    }
}

/// Patch MFT record `rn` of the image at `path` (fixups handled).
pub fn patch_record(path: &Path, rn: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let mut img = std::fs::read(path).unwrap();
    let (_, mft, size) = layout(&img);
    let at = (mft + rn * size as u64) as usize;
    let mut rec = img[at..at + size].to_vec();
    assert_eq!(&rec[0..4], b"FILE", "record {rn} is not at {at}");
    unprotect(&mut rec);
    f(&mut rec);
    protect(&mut rec);
    img[at..at + size].copy_from_slice(&rec);
    std::fs::write(path, img).unwrap();
}

/// Offsets of the attributes of type `ty` in an unprotected record.
pub fn find_attrs(rec: &[u8], ty: u32) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = u16::from_le_bytes([rec[0x14], rec[0x15]]) as usize;
    loop {
        let t = u32::from_le_bytes(rec[off..off + 4].try_into().unwrap());
        if t == 0xFFFF_FFFF {
            return out;
        }
        if t == ty {
            out.push(off);
        }
        off += u32::from_le_bytes(rec[off + 4..off + 8].try_into().unwrap()) as usize;
    }
}

/// Append a resident attribute of type `ty` with `value` to an unprotected
/// record (before its end marker).
pub fn append_resident(rec: &mut [u8], ty: u32, value: &[u8]) {
    let used = u32::from_le_bytes(rec[0x18..0x1C].try_into().unwrap()) as usize;
    let end = used - 8; // the end marker (and its padding) is the last 8 bytes
    assert_eq!(&rec[end..end + 4], &[0xFF; 4]);
    let len = (24 + value.len()).div_ceil(8) * 8;
    assert!(used + len <= rec.len(), "no room in the record");
    let instance = u16::from_le_bytes([rec[0x28], rec[0x29]]);
    rec[0x28..0x2A].copy_from_slice(&(instance + 1).to_le_bytes());
    let mut a = vec![0u8; len];
    a[0..4].copy_from_slice(&ty.to_le_bytes());
    a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    a[14..16].copy_from_slice(&instance.to_le_bytes());
    a[16..20].copy_from_slice(&(value.len() as u32).to_le_bytes());
    a[20..22].copy_from_slice(&24u16.to_le_bytes());
    a[24..24 + value.len()].copy_from_slice(value);
    rec[end..end + len].copy_from_slice(&a);
    rec[end + len..end + len + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    rec[0x18..0x1C].copy_from_slice(&((used + len) as u32).to_le_bytes());
}

/// Patch every `$I30` index key named `name` in the INDX blocks of the image
/// at `path`; `f` gets the whole entry (header, key, subnode VCN). Returns how
/// many entries were patched.
pub fn patch_index_entries(path: &Path, name: &str, mut f: impl FnMut(&mut [u8])) -> usize {
    let mut img = std::fs::read(path).unwrap();
    let want: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let block = 4096usize;
    let mut patched = 0;
    let mut at = 0;
    while at + block <= img.len() {
        if &img[at..at + 4] != b"INDX" {
            at += 512;
            continue;
        }
        let mut rec = img[at..at + block].to_vec();
        unprotect(&mut rec);
        let node = 24;
        let start = node + u32::from_le_bytes(rec[node..node + 4].try_into().unwrap()) as usize;
        let end = node + u32::from_le_bytes(rec[node + 4..node + 8].try_into().unwrap()) as usize;
        let mut p = start;
        while p + 16 <= end {
            let elen = u16::from_le_bytes([rec[p + 8], rec[p + 9]]) as usize;
            let flags = rec[p + 12];
            if flags & 2 != 0 || elen == 0 {
                break;
            }
            let nlen = rec[p + 16 + 64] as usize;
            if rec[p + 16 + 66..p + 16 + 66 + 2 * nlen] == want[..] {
                f(&mut rec[p..p + elen]);
                patched += 1;
            }
            p += elen;
        }
        protect(&mut rec);
        img[at..at + block].copy_from_slice(&rec);
        at += block;
    }
    std::fs::write(path, img).unwrap();
    patched
}

/// A fresh image of `mib` MiB: `mkntfs -F -q -f -s SECTOR -c CLUSTER`.
pub fn mkntfs_geom(mib: u64, sector: u32, cluster: u32) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ntfs.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let args: Vec<String> = vec![
        "-F".into(),
        "-q".into(),
        "-f".into(),
        "-s".into(),
        sector.to_string(),
        "-c".into(),
        cluster.to_string(),
        "-L".into(),
        "vmie-w".into(),
        path.display().to_string(),
    ];
    run("mkntfs", &args);
    Img { dir, path }
}

impl Img {
    /// Make directories and files through the real ntfs-3g driver (a FUSE
    /// mount: needs root and /dev/fuse), then unmount.
    pub fn populate(&self, dirs: &[&str], files: &[(&str, &[u8])]) {
        let mnt = self.dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run("ntfs-3g", &[self.path.as_os_str(), mnt.as_os_str()]);
        let result = std::panic::catch_unwind(|| {
            for d in dirs {
                std::fs::create_dir_all(mnt.join(d.trim_start_matches('/'))).unwrap();
            }
            for (p, data) in files {
                std::fs::write(mnt.join(p.trim_start_matches('/')), data).unwrap();
            }
        });
        let out = Command::new("umount").arg(&mnt).output().unwrap();
        assert!(out.status.success(), "umount: {out:?}");
        result.unwrap();
    }
}

/// `ntfsls -l -p DIR`: name → size as the directory index records it.
pub fn ntfsls_sizes(img: &Path, dir: &str) -> BTreeMap<String, u64> {
    let out = run(
        "ntfsls",
        &[
            OsStr::new("-f"),
            OsStr::new("-l"),
            OsStr::new("-p"),
            OsStr::new(dir),
            img.as_os_str(),
        ],
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8(out).unwrap().lines() {
        // "   SIZE Mon DD HH:MM YYYY NAME"
        let mut rest = line.trim_start();
        let mut fields = Vec::new();
        for _ in 0..5 {
            let (f, r) = rest.split_once(' ').unwrap_or((rest, ""));
            fields.push(f.to_string());
            rest = r.trim_start();
        }
        if rest.is_empty() || rest == "." || rest == ".." {
            continue;
        }
        if let Ok(size) = fields[0].parse() {
            m.insert(rest.to_string(), size);
        }
    }
    m
}

/// `ntfsfix -n`: must exit 0 and report the volume processed.
pub fn ntfsfix_clean(img: &Path) {
    let out = Command::new(tool("ntfsfix"))
        .arg("-n")
        .arg(img)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ntfsfix -n failed: {text}");
    assert!(
        text.contains("was processed successfully"),
        "ntfsfix -n: {text}"
    );
    assert!(
        text.contains("$MFTMirr completed successfully"),
        "ntfsfix -n: {text}"
    );
    let l = text.to_lowercase();
    for bad in ["corrupt", "mismatch", "error", "failed"] {
        assert!(!l.contains(bad), "ntfsfix -n reported {bad:?}: {text}");
    }
}

/// Clusters `$DATA` of `path` occupies, as ntfsinfo reads its attribute
/// (0 when resident).
pub fn ntfsinfo_data_clusters(img: &Path, path: &str, cluster: u64) -> u64 {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-F"),
            OsStr::new(path),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    let Some(data) = out.split("Dumping attribute $DATA").nth(1) else {
        return 0;
    };
    let data = data.split("Dumping attribute").next().unwrap();
    if data.contains("Resident: \t\t Yes") {
        return 0;
    }
    let line = data
        .lines()
        .find_map(|l| l.trim().strip_prefix("Allocated size:"))
        .unwrap_or_else(|| panic!("no allocated size for {path}: {data}"));
    line.split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / cluster
}

/// Boot sector facts: (cluster size, MFT byte offset, record size).
pub fn geometry(img: &Path) -> (u64, u64, usize) {
    let b = std::fs::read(img).unwrap();
    let sector = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let spc = u64::from(b[13]);
    let cs = if spc > 0x80 {
        sector << (256 - spc)
    } else {
        sector * spc
    };
    let mft = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) * cs;
    let raw = b[0x40] as i8;
    let rs = if raw > 0 {
        (cs as usize) * raw as usize
    } else {
        1 << (-raw)
    };
    (cs, mft, rs)
}

/// The value offset of the first attribute of type `ty` in record `rec`
/// (resident) or the attribute offset (non-resident).
pub fn find_attr(rec: &[u8], ty: u32) -> usize {
    let mut off = u16::from_le_bytes([rec[0x14], rec[0x15]]) as usize;
    loop {
        let t = u32::from_le_bytes(rec[off..off + 4].try_into().unwrap());
        assert_ne!(t, 0xFFFF_FFFF, "no attribute {ty:#x}");
        if t == ty {
            return off;
        }
        off += u32::from_le_bytes(rec[off + 4..off + 8].try_into().unwrap()) as usize;
    }
}

/// Byte offset on the volume of the first cluster of a non-resident
/// attribute at `off` of `rec` (its first run).
pub fn first_run_offset(rec: &[u8], off: usize, cs: u64) -> u64 {
    let pairs = off + u16::from_le_bytes([rec[off + 32], rec[off + 33]]) as usize;
    let h = rec[pairs];
    let (cl, ll) = ((h & 0xF) as usize, (h >> 4) as usize);
    let mut lcn = [0u8; 8];
    lcn[..ll].copy_from_slice(&rec[pairs + 1 + cl..pairs + 1 + cl + ll]);
    u64::from_le_bytes(lcn) * cs
}

/// Mount the image read-only through ntfs-3g (FUSE) and read `path`.
pub fn fuse_read(img: &Img, path: &str) -> Vec<u8> {
    let mnt = img.dir.path().join("mnt-ro");
    std::fs::create_dir_all(&mnt).unwrap();
    run(
        "ntfs-3g",
        &[
            OsStr::new("-o"),
            OsStr::new("ro"),
            img.path.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    let data = std::fs::read(mnt.join(path.trim_start_matches('/')));
    let out = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "umount: {out:?}");
    data.unwrap()
}

/// The clock writes are stamped with in the write tests.
pub const CLOCK: vmie_guestfs::Timestamp = vmie_guestfs::Timestamp {
    secs: 1_700_000_000,
    nanos: 123_456_700,
};

/// Open an image file for writing, with the fixed clock.
pub fn open_rw(path: &Path) -> NtfsFs {
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open_rw(path).unwrap());
    NtfsFs::open(dev, path.display().to_string())
        .unwrap()
        .with_clock(CLOCK)
}

/// The model: every regular file a test made, by path.
#[derive(Debug)]
pub struct Model {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Directories whose index allocation is counted (the files' parents
    /// and their ancestors are counted as well).
    pub dirs: BTreeSet<String>,
    /// Free clusters with no user file, directory index or `$MFT`.
    pub base_free: u64,
    pub cluster: u64,
}

impl Model {
    /// After populating: the base is what is free plus what the files,
    /// the directories' indexes and `$MFT` hold.
    pub fn new(img: &Path, files: BTreeMap<String, Vec<u8>>) -> Self {
        let (cluster, _, free) = ntfsinfo_space(img);
        let mut m = Self {
            files,
            dirs: BTreeSet::new(),
            base_free: 0,
            cluster,
        };
        m.base_free = free + m.held(img);
        m
    }

    /// Every directory counted: `/`, the listed ones, and every ancestor of
    /// a file or listed directory.
    pub fn all_dirs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::from(["/".to_string()]);
        for p in self.files.keys().chain(self.dirs.iter()) {
            let mut gp = GuestPath::from(p.as_str());
            if self.dirs.contains(p) {
                out.insert(p.clone());
            }
            while !gp.is_root() {
                gp = gp.parent();
                out.insert(gp.to_string());
            }
        }
        out
    }

    /// Clusters the files' data, the directories' index allocations and
    /// `$MFT` hold.
    pub fn held(&self, img: &Path) -> u64 {
        let files: u64 = self
            .files
            .keys()
            .map(|p| ntfsinfo_data_clusters(img, p, self.cluster))
            .sum();
        let dirs: u64 = self
            .all_dirs()
            .iter()
            .map(|d| index_alloc_clusters(img, d, self.cluster))
            .sum();
        files + dirs + mft_clusters(img, self.cluster)
    }

    pub fn verify(&self, img: &Path) {
        ntfsfix_clean(img);
        let (_, _, free) = ntfsinfo_space(img);
        let fs = open(img);
        let mut dirs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (p, data) in &self.files {
            assert_eq!(&fs.read(p).unwrap(), data, "{p} through our reader");
            assert_eq!(&ntfscat(img, p), data, "{p} through ntfscat");
            let gp = GuestPath::from(p.as_str());
            dirs.entry(gp.parent().to_string()).or_default().insert(
                String::from_utf8(gp.file_name().unwrap().to_vec()).unwrap(),
                data.len() as u64,
            );
        }
        assert_eq!(
            free + self.held(img),
            self.base_free,
            "free clusters vs the files' runlists, the index allocations and $MFT"
        );
        for (dir, want) in dirs {
            let listed = ntfsls_sizes(img, &dir);
            for (name, size) in &want {
                assert_eq!(
                    listed.get(name),
                    Some(size),
                    "ntfsls -l {dir}: {name}: {listed:?}"
                );
            }
        }
        for d in &self.dirs {
            let gp = GuestPath::from(d.as_str());
            let name = String::from_utf8(gp.file_name().unwrap().to_vec()).unwrap();
            let parent = gp.parent().to_string();
            assert!(ntfsls(img, &parent).contains(&name), "ntfsls {parent}: {d}");
            assert_eq!(
                fs.symlink_metadata(&gp).unwrap().file_type,
                FileType::Directory,
                "{d}"
            );
        }
    }
}

/// Clusters of `dir`'s `$I30` `$INDEX_ALLOCATION` as ntfsinfo reads it
/// (0 when it has none).
pub fn index_alloc_clusters(img: &Path, dir: &str, cluster: u64) -> u64 {
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
    let Some(a) = out.split("Dumping attribute $INDEX_ALLOCATION").nth(1) else {
        return 0;
    };
    let a = a.split("Dumping attribute").next().unwrap();
    let line = a
        .lines()
        .find_map(|l| l.trim().strip_prefix("Allocated size:"))
        .unwrap_or_else(|| panic!("no allocated size for {dir}'s index: {a}"));
    line.split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / cluster
}

/// Clusters of `$MFT`'s non-resident attributes (`$DATA`, `$BITMAP`) as
/// ntfsinfo reads record 0.
pub fn mft_clusters(img: &Path, cluster: u64) -> u64 {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-i"),
            OsStr::new("0"),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Allocated size:"))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .map(|b| b.div_ceil(cluster))
        .sum()
}

/// MFT records `$MFT` holds (its `$DATA` size over the record size).
pub fn mft_records(img: &Path) -> u64 {
    let out = String::from_utf8(run(
        "ntfsinfo",
        &[
            OsStr::new("-f"),
            OsStr::new("-i"),
            OsStr::new("0"),
            img.as_os_str(),
        ],
    ))
    .unwrap();
    let data = out.split("Dumping attribute $DATA").nth(1).unwrap();
    let size: u64 = data
        .lines()
        .find_map(|l| l.trim().strip_prefix("Data size:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    size / geometry(img).2 as u64
}

/// A file device that counts its writes, to check that a refusal wrote
/// nothing without reading the whole image again.
#[derive(Debug)]
pub struct Counted {
    inner: FileDevice,
    pub writes: std::sync::atomic::AtomicU64,
}

impl Device for Counted {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), vmie_disk::DiskError> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), vmie_disk::DiskError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write_at(offset, buf)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Open an image file for writing through a [`Counted`] device, with the
/// fixed clock.
pub fn open_counted(path: &Path) -> (NtfsFs, Arc<Counted>) {
    let dev = Arc::new(Counted {
        inner: FileDevice::open_rw(path).unwrap(),
        writes: std::sync::atomic::AtomicU64::new(0),
    });
    let d: Arc<dyn Device> = dev.clone();
    let fs = NtfsFs::open(d, path.display().to_string())
        .unwrap()
        .with_clock(CLOCK);
    (fs, dev)
}
