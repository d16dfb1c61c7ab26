//! The qcow2, VMDK, VHD and VHDX readers against qemu-img: every image qemu-img
//! writes from a real raw disk (partitions, ext4, swap) reads back
//! byte-identical, real images from dfVFS read as qemu reads them, and
//! hostile headers and tables are refused without a panic or a giant
//! allocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::format::detect_container;
use vmie_disk::image::{open_image, open_image_with, ImageLimits};
use vmie_disk::{Device, DiskError, DiskSet, FileDevice};

const REALDATA: &str = "/work/shared/realdata/dfvfs/test_data";

fn demo() -> PathBuf {
    xtask::fixtures::image("demo").unwrap_or_else(|e| panic!("building fixture demo: {e:#}"))
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img convert -O <args> src dir/name`.
fn convert(src: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let dst = dir.join(name);
    let mut a = vec!["convert", "-O"];
    a.extend_from_slice(args);
    a.push(s(src));
    a.push(s(&dst));
    qemu_img(&a);
    dst
}

fn open(p: &Path) -> Result<Arc<dyn Device>, DiskError> {
    let f = Arc::new(FileDevice::open(p)?);
    let fmt = detect_container(f.as_ref())?.expect("a container");
    open_image(f, fmt)
}

/// A small deterministic generator for the random ranges.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `dev` reads exactly like the raw image `raw` over its whole length (in
/// 1 MiB chunks), and over random unaligned ranges; bytes past the raw
/// image's end (a VHD's size rounded to its geometry) read as zero.
fn assert_same(raw: &Path, dev: &dyn Device) {
    let r = FileDevice::open(raw).unwrap();
    assert!(
        dev.len() >= r.len(),
        "{}: {} < {}",
        dev.describe(),
        dev.len(),
        r.len()
    );
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < dev.len() {
        let n = (dev.len() - off).min(1 << 20) as usize;
        let m = r.len().saturating_sub(off).min(n as u64) as usize;
        a[..n].fill(0);
        r.read_at(off, &mut a[..m]).unwrap();
        dev.read_at(off, &mut b[..n]).unwrap();
        assert!(
            a[..n] == b[..n],
            "{}: differs in the MiB at {off}",
            dev.describe()
        );
        off += n as u64;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let len = (rng.next() % 300_000.min(r.len() / 2)) as usize;
        let at = rng.next() % (r.len() - len as u64);
        let mut x = vec![0u8; len];
        let mut y = vec![0u8; len];
        r.read_at(at, &mut x).unwrap();
        dev.read_at(at, &mut y).unwrap();
        assert!(x == y, "{}: {len} bytes at {at} differ", dev.describe());
    }
    // Past the end is an error, never a short read.
    assert!(dev.read_at(dev.len() - 1, &mut [0u8; 2]).is_err());
}

fn demo_as(name: &str, args: &[&str], describes: &str) {
    let raw = demo();
    let dir = tempfile::tempdir().unwrap();
    let img = convert(&raw, dir.path(), name, args);
    let dev = open(&img).unwrap();
    assert!(dev.describe().ends_with(describes), "{}", dev.describe());
    assert_same(&raw, dev.as_ref());
    // Read only: writes are refused naming the format.
    let err = dev.write_at(0, &[0]).unwrap_err().to_string();
    assert!(
        err.contains(describes) && err.contains("read-only"),
        "{err}"
    );
}

#[test]
fn qcow2_v3_reads_like_the_raw_image() {
    demo_as("vm.qcow2", &["qcow2"], "(qcow2 v3)");
}

#[test]
fn qcow2_compressed_reads_like_the_raw_image() {
    demo_as("vm.qcow2", &["qcow2", "-c"], "(qcow2 v3)");
}

#[test]
fn qcow2_v2_reads_like_the_raw_image() {
    demo_as("vm.qcow2", &["qcow2", "-o", "compat=0.10"], "(qcow2 v2)");
}

#[test]
fn qcow2_small_and_large_clusters_read_like_the_raw_image() {
    demo_as(
        "vm.qcow2",
        &["qcow2", "-o", "cluster_size=512"],
        "(qcow2 v3)",
    );
    demo_as(
        "vm.qcow2",
        &["qcow2", "-c", "-o", "cluster_size=2M"],
        "(qcow2 v3)",
    );
}

#[test]
fn vmdk_monolithic_sparse_reads_like_the_raw_image() {
    demo_as("vm.vmdk", &["vmdk"], "(VMDK monolithicSparse)");
}

#[test]
fn vmdk_stream_optimized_reads_like_the_raw_image() {
    demo_as(
        "vm.vmdk",
        &["vmdk", "-o", "subformat=streamOptimized"],
        "(VMDK streamOptimized)",
    );
    // As VMware and OVF exports write it: the header's grain directory
    // offset is GD_AT_END and the footer holds the real one.
    let raw = demo();
    let dir = tempfile::tempdir().unwrap();
    let img = convert(
        &raw,
        dir.path(),
        "vm.vmdk",
        &["vmdk", "-o", "subformat=streamOptimized"],
    );
    let at_end = dir.path().join("at-end.vmdk");
    std::fs::write(&at_end, gd_at_end(&std::fs::read(&img).unwrap())).unwrap();
    let dev = open(&at_end).unwrap();
    assert!(dev.describe().ends_with("(VMDK streamOptimized)"));
    assert_same(&raw, dev.as_ref());
}

/// qemu-img writes the grain directory offset of a streamOptimized VMDK in
/// its header; VMware writes GD_AT_END there and appends a footer marker, the
/// footer (the header with the real offset) and an end-of-stream marker.
fn gd_at_end(so: &[u8]) -> Vec<u8> {
    let header = so[..512].to_vec();
    let mut b = so.to_vec();
    put_le64(&mut b, 56, u64::MAX);
    b.resize(b.len().div_ceil(512) * 512, 0);
    let mut marker = [0u8; 512];
    put_le32(&mut marker, 12, 3);
    b.extend_from_slice(&marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]);
    b
}

#[test]
fn vhd_dynamic_reads_like_the_raw_image() {
    demo_as("vm.vhd", &["vpc"], "(VHD dynamic)");
}

#[test]
fn vhd_fixed_reads_like_the_raw_image() {
    demo_as("vm.vhd", &["vpc", "-o", "subformat=fixed"], "(VHD fixed)");
}

/// VDI is not read: refused with the conversion command. (VMDK descriptors
/// and split extents are read: see tests/vmdk_descriptors.rs.)
#[test]
fn vdi_is_refused_with_the_conversion_command() {
    let raw = demo();
    let dir = tempfile::tempdir().unwrap();
    let img = convert(&raw, dir.path(), "vm.vdi", &["vdi"]);
    let err = open(&img).unwrap_err().to_string();
    assert!(err.contains("qemu-img convert -O raw"), "{err}");
    assert!(err.contains("VDI"), "{err}");
}

/// Images written by other tools (dfVFS's test data), compared with what
/// qemu-img reads from them.
#[test]
fn dfvfs_images_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, describes) in [
        ("ext2.qcow2", "(qcow2 v3)"),
        ("ext2.vmdk", "(VMDK monolithicSparse)"),
        ("ext2.vhd", "(VHD dynamic)"),
    ] {
        let img = Path::new(REALDATA).join(name);
        if !img.exists() {
            eprintln!("skipping {name}: {REALDATA} is not here");
            continue;
        }
        let raw = convert(&img, dir.path(), &format!("{name}.raw"), &["raw"]);
        let dev = open(&img).unwrap();
        assert!(dev.describe().ends_with(describes), "{}", dev.describe());
        assert_eq!(dev.len(), std::fs::metadata(&raw).unwrap().len());
        assert_same(&raw, dev.as_ref());
    }
}

/// Sum-complement checksum of a VHD footer or dynamic header whose checksum
/// field is at `at`.
fn fix_vhd_checksum(b: &mut [u8], at: usize) {
    b[at..at + 4].fill(0);
    let sum = b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
    b[at..at + 4].copy_from_slice(&(!sum).to_be_bytes());
}

/// dfVFS's image.vhd has checksums qemu refuses; with them recomputed (in a
/// copy) qemu reads it, and we read the original as qemu reads the copy.
#[test]
fn dfvfs_image_vhd_reads_as_qemu_reads_it() {
    let img = Path::new(REALDATA).join("image.vhd");
    if !img.exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut b = std::fs::read(&img).unwrap();
    let n = b.len();
    fix_vhd_checksum(&mut b[n - 512..], 64);
    fix_vhd_checksum(&mut b[..512], 64);
    fix_vhd_checksum(&mut b[512..1536], 36);
    let fixed = dir.path().join("fixed.vhd");
    std::fs::write(&fixed, &b).unwrap();
    let raw = convert(&fixed, dir.path(), "image.raw", &["raw"]);
    let dev = open(&img).unwrap();
    assert_eq!(dev.len(), std::fs::metadata(&raw).unwrap().len());
    assert_same(&raw, dev.as_ref());
}

/// `DiskSet::open`: containers read through their reader with the overlay on
/// top (a dry run's writes stay in memory); opening for writing is refused
/// with the conversion command before any lock; commit is refused.
#[test]
fn disk_set_reads_containers_and_refuses_to_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("small.raw");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&raw, &data).unwrap();
    let q = convert(&raw, dir.path(), "small.qcow2", &["qcow2"]);
    let before = std::fs::read(&q).unwrap();
    let set = DiskSet::open(std::slice::from_ref(&q), false).unwrap();
    let disk = &set.disks()[0];
    assert_eq!(disk.len(), 1 << 20);
    assert!(disk.container().is_some());
    let dev = disk.device();
    let mut got = vec![0u8; data.len()];
    dev.read_at(0, &mut got).unwrap();
    assert_eq!(got, data);
    dev.write_at(100, b"staged").unwrap();
    let mut w = [0u8; 6];
    dev.read_at(100, &mut w).unwrap();
    assert_eq!(&w, b"staged");
    let (bytes, calls) = set.read_stats();
    assert!(bytes > 0 && calls > 0);
    let err = set.commit(&Default::default()).unwrap_err().to_string();
    assert!(err.contains("qemu-img convert -O raw"), "{err}");
    let err = DiskSet::open(std::slice::from_ref(&q), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "qemu-img convert -O raw '{}' '{}'",
            q.display(),
            dir.path().join("small.raw").display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&q).unwrap(), before, "the image is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "no lock or journal files: {leftovers:?}"
    );
}

// ---- hostile images -------------------------------------------------------

/// A 1 MiB raw image of mixed content, and its conversions.
fn small_images(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let raw = dir.join("small.raw");
    let mut data = vec![0u8; 1 << 20];
    let mut rng = Rng(42);
    for (i, b) in data.iter_mut().enumerate() {
        // Half random (incompressible), half a pattern, some zero holes.
        *b = match (i >> 16) % 4 {
            0 => rng.next() as u8,
            1 => (i % 13) as u8,
            2 => 0,
            _ => (i >> 9) as u8,
        };
    }
    std::fs::write(&raw, &data).unwrap();
    [
        ("q3.qcow2", vec!["qcow2"]),
        ("qc.qcow2", vec!["qcow2", "-c"]),
        ("q2.qcow2", vec!["qcow2", "-o", "compat=0.10"]),
        ("s.vmdk", vec!["vmdk"]),
        ("so.vmdk", vec!["vmdk", "-o", "subformat=streamOptimized"]),
        ("d.vhd", vec!["vpc"]),
        ("f.vhd", vec!["vpc", "-o", "subformat=fixed"]),
        ("d.vhdx", vec!["vhdx"]),
        ("f.vhdx", vec!["vhdx", "-o", "subformat=fixed"]),
    ]
    .into_iter()
    .map(|(n, a)| {
        let p = convert(&raw, dir, n, &a);
        (p.clone(), std::fs::read(&p).unwrap())
    })
    .collect()
}

/// Open `bytes` as an image and read (at most the first 4 MiB of) it all;
/// every outcome but a panic is fine. Returns the first error, if any.
fn try_image(dir: &Path, name: &str, bytes: &[u8]) -> Option<String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let f = Arc::new(FileDevice::open(&p).unwrap());
    let fmt = match detect_container(f.as_ref()) {
        Ok(Some(fmt)) => fmt,
        Ok(None) => return Some("not a container any more".into()),
        Err(e) => return Some(e.to_string()),
    };
    let limits = ImageLimits::default();
    let dev = match open_image_with(f, fmt, &limits) {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0;
    let end = dev.len().min(4 << 20);
    while off < end {
        let n = (end - off).min(buf.len() as u64) as usize;
        if let Err(e) = dev.read_at(off, &mut buf[..n]) {
            return Some(e.to_string());
        }
        off += n as u64;
    }
    None
}

fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn put_le32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_le64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn truncated_images_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for (p, bytes) in small_images(dir.path()) {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let mut cuts: Vec<usize> = vec![0, 1, 4, 71, 100, 511, 512, 513, 1024, 1536, 4096];
        cuts.extend((1..16).map(|i| bytes.len() * i / 16));
        cuts.push(bytes.len() - 1);
        for cut in cuts.into_iter().filter(|&c| c < bytes.len()) {
            let _ = try_image(dir.path(), &format!("cut-{name}"), &bytes[..cut]);
        }
        // The whole image reads cleanly.
        assert_eq!(
            try_image(dir.path(), &format!("whole-{name}"), &bytes),
            None,
            "{name}"
        );
    }
}

#[test]
fn random_damage_is_an_error_or_data_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    for (p, bytes) in small_images(dir.path()) {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        for _ in 0..150 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.next() % 8 {
                // Mostly headers and tables (the first 64 KiB and the last sectors).
                let at = match rng.next() % 3 {
                    0 => (rng.next() % 1024) as usize,
                    1 => (rng.next() % (64 << 10).min(b.len() as u64)) as usize,
                    _ => b.len() - 1 - (rng.next() % 1536) as usize,
                };
                b[at] = rng.next() as u8;
            }
            let _ = try_image(dir.path(), &format!("dmg-{name}"), &b);
        }
    }
}

fn image_bytes(dir: &Path, name: &str) -> Vec<u8> {
    small_images(dir)
        .into_iter()
        .find(|(p, _)| p.file_name().unwrap() == name)
        .unwrap()
        .1
}

/// Expect `bytes` to be refused with a message containing every one of `want`.
fn refused(dir: &Path, name: &str, bytes: &[u8], want: &[&str]) {
    let err =
        try_image(dir, name, bytes).unwrap_or_else(|| panic!("{name}: {want:?} was accepted"));
    for w in want {
        assert!(err.contains(w), "{name}: {err:?} lacks {w:?}");
    }
    assert!(err.contains(name), "names the file: {err}");
}

#[test]
fn hostile_qcow2_headers_and_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = image_bytes(dir.path(), "q3.qcow2");
    let l1_offset = u64::from_be_bytes(q[40..48].try_into().unwrap()) as usize;
    let d = dir.path();
    for bits in [0u32, 8, 22, 63, u32::MAX] {
        let mut b = q.clone();
        put_be32(&mut b, 20, bits);
        refused(d, "bits.qcow2", &b, &["cluster_bits", "offset 20"]);
    }
    // A huge virtual size needs more L1 entries than the header has.
    let mut b = q.clone();
    put_be64(&mut b, 24, u64::MAX);
    refused(d, "size.qcow2", &b, &["l1_size", "offset 36"]);
    // ... and with a matching l1_size the L1 table is past the file or the limit.
    put_be32(&mut b, 36, u32::MAX);
    put_be64(&mut b, 24, 1 << 50);
    refused(d, "l1.qcow2", &b, &["L1 table"]);
    let mut b = q.clone();
    put_be64(&mut b, 40, 1 << 40);
    refused(d, "l1off.qcow2", &b, &["L1 table", "past the end"]);
    // An L2 table or a data cluster past the end of the file.
    let mut b = q.clone();
    put_be64(&mut b, l1_offset, (1 << 63) | (1 << 40));
    refused(d, "l2.qcow2", &b, &["L2 table", "past the end"]);
    let mut b = q.clone();
    let l2 = (u64::from_be_bytes(b[l1_offset..l1_offset + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    put_be64(&mut b, l2, 1 << 40);
    refused(d, "data.qcow2", &b, &["data cluster", "past the end"]);
    // An L2 entry whose data is the L1 table, the header and the L2 table
    // itself: just bytes, read once each; nothing loops.
    let mut b = q.clone();
    for (i, target) in [0, l1_offset as u64, l2 as u64].into_iter().enumerate() {
        put_be64(&mut b, l2 + 8 * i, target & !0xffff | (1 << 63));
    }
    let _ = try_image(d, "self.qcow2", &b);
    // Features we do not read.
    for (bit, what) in [
        (1u64 << 1, "corrupt"),
        (1 << 2, "external data file"),
        (1 << 3, "compression type"),
        (1 << 4, "extended L2"),
        (1 << 20, "unknown incompatible"),
    ] {
        let mut b = q.clone();
        put_be64(&mut b, 72, bit);
        refused(d, "feat.qcow2", &b, &[what, "qemu-img convert"]);
    }
    let mut b = q.clone();
    put_be32(&mut b, 32, 1);
    refused(d, "crypt.qcow2", &b, &["encrypted"]);
    let mut b = q.clone();
    put_be32(&mut b, 4, 4);
    refused(d, "v4.qcow2", &b, &["version 4"]);
    // A compressed cluster whose stream is garbage.
    let qc = image_bytes(d, "qc.qcow2");
    let l1 = u64::from_be_bytes(qc[40..48].try_into().unwrap()) as usize;
    let l2 =
        (u64::from_be_bytes(qc[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00) as usize;
    // The second cluster holds a pattern (the first is random, so stored
    // uncompressed).
    let e = u64::from_be_bytes(qc[l2 + 8..l2 + 16].try_into().unwrap());
    assert!(e & (1 << 62) != 0, "second cluster is compressed");
    let host = (e & ((1 << 54) - 1)) as usize;
    let mut b = qc.clone();
    b[host..host + 64].fill(0xff);
    refused(
        d,
        "deflate.qcow2",
        &b,
        &["compressed cluster", &format!("offset {host}")],
    );
}

#[test]
fn hostile_vmdk_headers_and_tables_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let v = image_bytes(d, "s.vmdk");
    let gd = u64::from_le_bytes(v[56..64].try_into().unwrap()) as usize * 512;
    let mut b = v.clone();
    put_le64(&mut b, 56, 1 << 40);
    refused(d, "gd.vmdk", &b, &["grain directory"]);
    let mut b = v.clone();
    put_le64(&mut b, 12, u64::MAX / 256);
    refused(d, "cap.vmdk", &b, &["capacity"]);
    let mut b = v.clone();
    put_le64(&mut b, 12, 1 << 40);
    refused(d, "gdbig.vmdk", &b, &["grain directory"]);
    for grain in [0u64, 3, 1 << 20, u64::MAX] {
        let mut b = v.clone();
        put_le64(&mut b, 20, grain);
        refused(d, "grain.vmdk", &b, &["grainSize", "offset 20"]);
    }
    for n in [0u32, u32::MAX] {
        let mut b = v.clone();
        put_le32(&mut b, 44, n);
        refused(d, "gtes.vmdk", &b, &["numGTEsPerGT"]);
    }
    let mut b = v.clone();
    put_le32(&mut b, gd, u32::MAX);
    refused(d, "gt.vmdk", &b, &["grain table", "past the end"]);
    let gt = u32::from_le_bytes(v[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let mut b = v.clone();
    put_le32(&mut b, gt, u32::MAX - 7);
    refused(d, "grainoff.vmdk", &b, &["VMDK grain", "past the end"]);
    // streamOptimized: the footer and the grain markers.
    let so = gd_at_end(&image_bytes(d, "so.vmdk"));
    assert_eq!(try_image(d, "end.vmdk", &so), None);
    let n = so.len();
    let mut b = so.clone();
    b[n - 1024..n - 1020].copy_from_slice(b"XXXX");
    refused(
        d,
        "footer.vmdk",
        &b,
        &["footer", &format!("offset {}", n - 1024)],
    );
    let mut b = so.clone();
    put_le32(&mut b, n - 1536 + 12, 0);
    refused(d, "marker.vmdk", &b, &["footer marker"]);
    let mut b = so.clone();
    put_le64(&mut b, n - 1024 + 56, u64::MAX);
    refused(d, "gdend.vmdk", &b, &["GD_AT_END"]);
    let sgd =
        u64::from_le_bytes(so[n - 1024 + 56..n - 1024 + 64].try_into().unwrap()) as usize * 512;
    let sgt = u32::from_le_bytes(so[sgd..sgd + 4].try_into().unwrap()) as usize * 512;
    let grain = u32::from_le_bytes(so[sgt..sgt + 4].try_into().unwrap()) as usize * 512;
    let mut b = so.clone();
    put_le64(&mut b, grain, 12345);
    refused(
        d,
        "lba.vmdk",
        &b,
        &["compressed grain", "marker is for sector 12345"],
    );
    let mut b = so.clone();
    put_le32(&mut b, grain + 8, u32::MAX);
    refused(d, "csize.vmdk", &b, &["compressed size"]);
    let mut b = so.clone();
    b[grain + 12..grain + 40].fill(0x55);
    refused(d, "zlib.vmdk", &b, &["compressed grain", "damaged"]);
}

#[test]
fn hostile_vhd_headers_and_tables_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let v = image_bytes(d, "d.vhd");
    let n = v.len();
    let dh = u64::from_be_bytes(v[n - 512 + 16..n - 512 + 24].try_into().unwrap()) as usize;
    let bat = u64::from_be_bytes(v[dh + 16..dh + 24].try_into().unwrap()) as usize;
    let mut b = v.clone();
    put_be64(&mut b, n - 512 + 16, 1 << 40);
    refused(d, "dh.vhd", &b, &["dynamic header", "past the end"]);
    let mut b = v.clone();
    put_be64(&mut b, dh + 16, 1 << 40);
    refused(
        d,
        "bat.vhd",
        &b,
        &["block allocation table", "past the end"],
    );
    let mut b = v.clone();
    put_be32(&mut b, dh + 28, 0);
    refused(d, "entries.vhd", &b, &["max table entries"]);
    for bs in [0u32, 511, 3 << 20, u32::MAX] {
        let mut b = v.clone();
        put_be32(&mut b, dh + 32, bs);
        refused(d, "bs.vhd", &b, &["block size"]);
    }
    let mut b = v.clone();
    put_be64(&mut b, n - 512 + 48, u64::MAX);
    refused(d, "size.vhd", &b, &["max table entries"]);
    let mut b = v.clone();
    put_be32(&mut b, bat, u32::MAX - 1);
    refused(d, "block.vhd", &b, &["VHD block bitmap", "past the end"]);
    let mut b = v.clone();
    put_be32(&mut b, n - 512 + 60, 5);
    refused(d, "type.vhd", &b, &["disk type 5"]);
    let f = image_bytes(d, "f.vhd");
    let n = f.len();
    let mut b = f.clone();
    put_be64(&mut b, n - 512 + 48, n as u64);
    refused(d, "fixed.vhd", &b, &["current size", "does not fit"]);
}

/// A header asking for the largest tables it can describe is refused by the
/// limits before anything of that size is allocated.
#[test]
fn table_sizes_are_capped_by_the_limits() {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("big.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&q),
        "16G",
    ]);
    let f = Arc::new(FileDevice::open(&q).unwrap());
    let small = ImageLimits {
        max_table_bytes: 1 << 20,
        ..ImageLimits::default()
    };
    let fmt = detect_container(f.as_ref()).unwrap().unwrap();
    let err = open_image_with(f, fmt, &small).unwrap_err().to_string();
    assert!(err.contains("L1 table") && err.contains("limit"), "{err}");
}

// ---- VHDX -------------------------------------------------------------------

#[test]
fn vhdx_dynamic_reads_like_the_raw_image_and_like_qemu() {
    demo_as("vm.vhdx", &["vhdx"], "(VHDX dynamic)");
    // And as qemu reads it back.
    let raw = demo();
    let dir = tempfile::tempdir().unwrap();
    let img = convert(&raw, dir.path(), "vm.vhdx", &["vhdx"]);
    let back = convert(&img, dir.path(), "back.raw", &["raw"]);
    let dev = open(&img).unwrap();
    assert_eq!(dev.len(), std::fs::metadata(&back).unwrap().len());
    assert_same(&back, dev.as_ref());
}

#[test]
fn vhdx_fixed_reads_like_the_raw_image() {
    demo_as(
        "vm.vhdx",
        &["vhdx", "-o", "subformat=fixed"],
        "(VHDX fixed)",
    );
}

#[test]
fn vhdx_block_and_log_sizes_read_like_the_raw_image() {
    for opts in [
        "block_size=1M,log_size=4M",
        "block_size=256M",
        "block_size=8M,block_state_zero=off",
    ] {
        demo_as("vm.vhdx", &["vhdx", "-o", opts], "(VHDX dynamic)");
    }
}

/// Past the first chunk (the 16 payload blocks of 256 MiB that a sector
/// bitmap entry follows in the BAT) blocks are found behind the interleaved
/// entries: a sparse 6 GiB raw image with a distinct pattern in every block.
#[test]
fn vhdx_blocks_past_the_first_chunk_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(6 << 30).unwrap();
    let block = 256u64 << 20;
    let mut rng = Rng(99);
    for b in 0..24u64 {
        use std::os::unix::fs::FileExt;
        let chunk: Vec<u8> = (0..(64 << 10)).map(|_| rng.next() as u8).collect();
        // Skip a few blocks (holes), and put one pattern across a block edge.
        if b % 5 != 3 {
            f.write_all_at(&chunk, b * block + (b % 7) * 4096).unwrap();
        }
        if b == 17 {
            f.write_all_at(&chunk, b * block - 1000).unwrap();
        }
    }
    drop(f);
    for (name, opts) in [
        ("b256.vhdx", "block_size=256M"),
        ("b32.vhdx", "block_size=32M"),
    ] {
        let img = convert(&raw, dir.path(), name, &["vhdx", "-o", opts]);
        let dev = open(&img).unwrap();
        let r = FileDevice::open(&raw).unwrap();
        assert_eq!(dev.len(), r.len());
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        for blk in 0..24u64 {
            for at in [blk * block, (blk * block).saturating_sub(1 << 19)] {
                r.read_at(at, &mut a).unwrap();
                dev.read_at(at, &mut b).unwrap();
                assert!(a == b, "{name}: the MiB at {at} differs");
            }
        }
        std::fs::remove_file(&img).unwrap();
    }
}

const KIB: usize = 1024;

/// The on-disk form of a GUID (first three fields little-endian).
fn guid(s: &str) -> [u8; 16] {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    let x: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&[x[3], x[2], x[1], x[0]]);
    g[4..6].copy_from_slice(&[x[5], x[4]]);
    g[6..8].copy_from_slice(&[x[7], x[6]]);
    g[8..].copy_from_slice(&x[8..]);
    g
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recompute the CRC-32C of the header or region table of `len` bytes at `at`.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let crc = !vmie_disk::checksum::crc32c_update(!0, &b[at..at + len]);
    put_le32(b, at + 4, crc);
}

/// The offset of the current header (the higher sequence number) and of
/// the other one.
fn vhdx_headers(b: &[u8]) -> (usize, usize) {
    if le64(b, 128 * KIB + 8) > le64(b, 64 * KIB + 8) {
        (128 * KIB, 64 * KIB)
    } else {
        (64 * KIB, 128 * KIB)
    }
}

/// The file offset of a region from the first region table.
fn vhdx_region(b: &[u8], id: &str) -> usize {
    let t = 192 * KIB;
    let g = guid(id);
    (0..le32(b, t + 8) as usize)
        .map(|i| t + 16 + 32 * i)
        .find(|&e| b[e..e + 16] == g)
        .map(|e| le64(b, e + 16) as usize)
        .unwrap()
}

const BAT: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const LOGICAL_SECTOR: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";

/// (table entry offset, item offset) of a metadata item.
fn vhdx_item(b: &[u8], id: &str) -> (usize, usize) {
    let m = vhdx_region(b, METADATA);
    let g = guid(id);
    let n = u16::from_le_bytes([b[m + 10], b[m + 11]]) as usize;
    (0..n)
        .map(|i| m + 32 + 32 * i)
        .find(|&e| b[e..e + 16] == g)
        .map(|e| (e, m + le32(b, e + 16) as usize))
        .unwrap()
}

/// Add a metadata table entry (id, item bytes, flags) with the item at
/// 512 KiB into the metadata region, where qemu-img writes nothing.
fn add_item(b: &mut [u8], id: &[u8; 16], item: &[u8], flags: u32) {
    let m = vhdx_region(b, METADATA);
    let n = u16::from_le_bytes([b[m + 10], b[m + 11]]) as usize;
    let e = m + 32 + 32 * n;
    b[e..e + 16].copy_from_slice(id);
    put_le32(b, e + 16, 512 * KIB as u32);
    put_le32(b, e + 20, item.len() as u32);
    put_le32(b, e + 24, flags);
    b[m + 10..m + 12].copy_from_slice(&(n as u16 + 1).to_le_bytes());
    b[m + 512 * KIB..m + 512 * KIB + item.len()].copy_from_slice(item);
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn hostile_vhdx_headers_and_tables_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let v = image_bytes(d, "d.vhdx");
    assert_eq!(try_image(d, "ok.vhdx", &v), None);
    let (cur, old) = vhdx_headers(&v);

    // A damaged current header: the other one is used.
    let mut b = v.clone();
    b[cur + 1000] ^= 1;
    assert_eq!(try_image(d, "hdr1.vhdx", &b), None);
    // ... and it is the other one that is read: a log to replay in it
    // shows.
    b[old + 48] = 1;
    fix_crc(&mut b, old, 4 * KIB);
    refused(
        d,
        "hdr1log.vhdx",
        &b,
        &["log needs replay", &format!("header at offset {old}")],
    );
    // The stale header's log does not matter while the current one is valid.
    let mut b = v.clone();
    b[old + 48] = 1;
    fix_crc(&mut b, old, 4 * KIB);
    assert_eq!(try_image(d, "stale.vhdx", &b), None);
    // Both damaged.
    let mut b = v.clone();
    b[cur + 1000] ^= 1;
    b[old..old + 4].copy_from_slice(b"HEAD");
    refused(
        d,
        "hdr2.vhdx",
        &b,
        &["neither header is valid", "CRC-32C", "signature"],
    );

    // A log to replay is refused, and nothing is written.
    let mut b = v.clone();
    b[cur + 48..cur + 64].copy_from_slice(&[0xab; 16]);
    fix_crc(&mut b, cur, 4 * KIB);
    refused(
        d,
        "log.vhdx",
        &b,
        &[
            "log needs replay",
            "qemu-img check -r all",
            "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB",
        ],
    );
    assert_eq!(std::fs::read(d.join("log.vhdx")).unwrap(), b);
    let mut b = v.clone();
    put_le32(&mut b, cur + 64, 2 << 16);
    fix_crc(&mut b, cur, 4 * KIB);
    refused(d, "ver.vhdx", &b, &["version 2"]);

    // Region tables: a damaged first copy falls back to the second.
    let mut b = v.clone();
    b[192 * KIB + 40] ^= 0x40;
    assert_eq!(try_image(d, "reg1.vhdx", &b), None);
    b[256 * KIB + 40] ^= 0x40;
    refused(d, "reg2.vhdx", &b, &["region tables", "neither copy"]);
    // An unknown required region.
    let mut b = v.clone();
    for t in [192 * KIB, 256 * KIB] {
        let n = le32(&b, t + 8) as usize;
        let e = t + 16 + 32 * n;
        b[e..e + 16].copy_from_slice(&[0x11; 16]);
        put_le64(&mut b, e + 16, 64 << 20);
        put_le32(&mut b, e + 24, 1 << 20);
        put_le32(&mut b, e + 28, 1);
        put_le32(&mut b, t + 8, n as u32 + 1);
        fix_crc(&mut b, t, 64 * KIB);
    }
    refused(
        d,
        "region.vhdx",
        &b,
        &[
            "required region",
            "11111111-1111",
            "qemu-img convert -O raw",
        ],
    );
    // A region inside the header section, or past the end of the file.
    let bat_entry = (0..2)
        .map(|i| 192 * KIB + 16 + 32 * i)
        .find(|&e| b[e..e + 16] == guid(BAT))
        .unwrap();
    let mut b = v.clone();
    put_le64(&mut b, bat_entry + 16, 64 * KIB as u64);
    fix_crc(&mut b, 192 * KIB, 64 * KIB);
    refused(
        d,
        "inhdr.vhdx",
        &b,
        &["header section", &format!("offset {bat_entry}")],
    );
    let mut b = v.clone();
    put_le64(&mut b, bat_entry + 16, 1 << 40);
    fix_crc(&mut b, 192 * KIB, 64 * KIB);
    refused(d, "batoff.vhdx", &b, &["VHDX BAT", "past the end"]);

    // Metadata items.
    let (_, fp) = vhdx_item(&v, FILE_PARAMETERS);
    for bs in [0u32, 512, 3 << 20, 512 << 20, 1 << 31, u32::MAX] {
        let mut b = v.clone();
        put_le32(&mut b, fp, bs);
        refused(d, "bs.vhdx", &b, &["block size", &format!("offset {fp}")]);
    }
    let (_, sz) = vhdx_item(&v, VIRTUAL_DISK_SIZE);
    for size in [u64::MAX, (64 << 40) + 512, 1000] {
        let mut b = v.clone();
        put_le64(&mut b, sz, size);
        refused(
            d,
            "size.vhdx",
            &b,
            &["virtual disk size", &size.to_string()],
        );
    }
    // A size the BAT region cannot map.
    let mut b = v.clone();
    put_le64(&mut b, sz, 64 << 40);
    refused(d, "batsize.vhdx", &b, &["BAT region", "cannot hold"]);
    let (_, ls) = vhdx_item(&v, LOGICAL_SECTOR);
    let mut b = v.clone();
    put_le32(&mut b, ls, 1024);
    refused(d, "ls.vhdx", &b, &["logical sector size", "1024"]);
    let (e, _) = vhdx_item(&v, LOGICAL_SECTOR);
    let mut b = v.clone();
    b[e] ^= 1;
    refused(d, "unknown.vhdx", &b, &["required item", "8141BF1C-A96F"]);
    put_le32(&mut b, e + 24, 0);
    refused(d, "nols.vhdx", &b, &["no logical sector size item"]);
    let mut b = v.clone();
    put_le32(&mut b, e + 16, 100);
    refused(d, "lsoff.vhdx", &b, &["metadata table entry", "not inside"]);
    let mut b = v.clone();
    add_item(&mut b, &[0x22; 16], &[0; 8], 4);
    refused(d, "item.vhdx", &b, &["required item", "22222222-2222"]);
    // An unknown item that is not required is ignored.
    let mut b = v.clone();
    add_item(&mut b, &[0x22; 16], &[0; 8], 0);
    assert_eq!(try_image(d, "optional.vhdx", &b), None);
    let m = vhdx_region(&v, METADATA);
    let mut b = v.clone();
    b[m..m + 8].copy_from_slice(b"METADATA");
    refused(d, "meta.vhdx", &b, &["metadata table", "signature"]);

    // A differencing disk is refused naming its parent.
    let mut b = v.clone();
    put_le32(&mut b, fp + 4, 2);
    refused(
        d,
        "diff.vhdx",
        &b,
        &[
            "differencing disk",
            "(unreadable)",
            "qemu-img convert -O raw",
        ],
    );
    // A parent locator: a 20-byte header (locator type, key/value count),
    // 12-byte key/value entries, then the UTF-16LE strings.
    let strings = [
        utf16("parent_linkage"),
        utf16("{00000000-0000-0000-0000-000000000000}"),
        utf16("relative_path"),
        utf16(".\\base.vhdx"),
    ];
    let mut item = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913").to_vec();
    item.extend_from_slice(&[0, 0, 2, 0]);
    let mut offs = Vec::new();
    let mut at = 20 + 2 * 12;
    for s in &strings {
        offs.push(at as u32);
        at += s.len();
    }
    for i in 0..2 {
        item.extend_from_slice(&offs[2 * i].to_le_bytes());
        item.extend_from_slice(&offs[2 * i + 1].to_le_bytes());
        item.extend_from_slice(&(strings[2 * i].len() as u16).to_le_bytes());
        item.extend_from_slice(&(strings[2 * i + 1].len() as u16).to_le_bytes());
    }
    for s in &strings {
        item.extend_from_slice(s);
    }
    add_item(
        &mut b,
        &guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"),
        &item,
        4,
    );
    refused(
        d,
        "parent.vhdx",
        &b,
        &["differencing disk", ".\\\\base.vhdx"],
    );

    // BAT entries.
    let bat = vhdx_region(&v, BAT);
    assert_eq!(le64(&v, bat) & 7, 6, "the first block is present");
    let mut b = v.clone();
    put_le64(&mut b, bat, (1 << 40) | 6);
    refused(
        d,
        "eof.vhdx",
        &b,
        &[
            "payload block 0",
            &format!("BAT entry at offset {bat}"),
            "past the end",
        ],
    );
    let mut b = v.clone();
    put_le64(&mut b, bat, 6);
    refused(d, "zero.vhdx", &b, &["payload block 0", "header section"]);
    let mut b = v.clone();
    put_le64(&mut b, bat, (le64(&v, bat) & !7) | 4);
    refused(d, "state.vhdx", &b, &["reserved state 4"]);
    let mut b = v.clone();
    put_le64(&mut b, bat, (le64(&v, bat) & !7) | 7);
    refused(
        d,
        "partial.vhdx",
        &b,
        &["partially present", "differencing"],
    );
    // Zero, unmapped and undefined blocks read as zeros.
    for state in [0u64, 1, 2, 3] {
        let mut b = v.clone();
        put_le64(&mut b, bat, (le64(&v, bat) & !7) | state);
        assert_eq!(try_image(d, "hole.vhdx", &b), None);
        let p = d.join("hole.vhdx");
        let dev = open(&p).unwrap();
        let mut x = vec![1u8; 4096];
        dev.read_at(0, &mut x).unwrap();
        assert!(x.iter().all(|&c| c == 0), "state {state}");
    }
    // Truncated in every structure.
    for cut in [100, 70 * KIB, 130 * KIB, 200 * KIB, 300 * KIB, bat, m + 100] {
        assert!(
            try_image(d, "cut.vhdx", &v[..cut]).is_some(),
            "cut at {cut}"
        );
    }
}

/// Random damage to the header section, the BAT and the metadata region:
/// an error or data, never a panic or a huge allocation.
#[test]
fn random_vhdx_damage_is_an_error_or_data() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let mut rng = Rng(1234);
    for name in ["d.vhdx", "f.vhdx"] {
        let v = image_bytes(d, name);
        let bat = vhdx_region(&v, BAT);
        let m = vhdx_region(&v, METADATA);
        for i in 0..200 {
            let mut b = v.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = match rng.next() % 4 {
                    0 => 64 * KIB + (rng.next() % 4096) as usize * if i % 2 == 0 { 1 } else { 0 },
                    1 => 192 * KIB + (rng.next() % 512) as usize,
                    2 => bat + (rng.next() % 256) as usize,
                    _ => m + (rng.next() % 512) as usize,
                };
                b[at] = rng.next() as u8;
            }
            // Some with checksums recomputed, so the damage is read.
            if i % 3 == 0 {
                fix_crc(&mut b, 64 * KIB, 4 * KIB);
                fix_crc(&mut b, 128 * KIB, 4 * KIB);
                fix_crc(&mut b, 192 * KIB, 64 * KIB);
            }
            let _ = try_image(d, name, &b);
        }
    }
}

/// A BAT larger than the limit is refused before it is read.
#[test]
fn vhdx_bat_size_is_capped_by_the_limits() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.vhdx");
    qemu_img(&["create", "-f", "vhdx", "-o", "block_size=1M", s(&p), "1T"]);
    let small = ImageLimits {
        max_table_bytes: 1 << 20,
        ..ImageLimits::default()
    };
    let f = Arc::new(FileDevice::open(&p).unwrap());
    let err = open_image_with(
        f.clone(),
        detect_container(f.as_ref()).unwrap().unwrap(),
        &small,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("VHDX BAT") && err.contains("limit"), "{err}");
    // With the default limits it opens, all zeros, and reading it reads
    // only tables.
    let dev = open_image(f.clone(), vmie_disk::format::ContainerFormat::Vhdx).unwrap();
    assert_eq!(dev.len(), 1 << 40);
    let mut x = vec![1u8; 1 << 20];
    dev.read_at((1 << 40) - (1 << 20), &mut x).unwrap();
    assert!(x.iter().all(|&c| c == 0));
    let (bytes, _) = f.read_stats();
    assert!(bytes < 16 << 20, "{bytes}");
}
