//! Helpers shared by the integration tests: images made with sfdisk, raw
//! bytes of real-world images, and small MBR/GPT builders for hand-made
//! hostile cases.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use vmie_disk::{Device, MemDevice};

/// Root of the shared real-world test data.
/// `../shared/realdata` beside the checkout, wherever the checkout is.
pub const REALDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/realdata");

pub fn mem(name: &str, data: Vec<u8>) -> Arc<dyn Device> {
    Arc::new(MemDevice::new(name, data))
}

/// The first of `names` found (in PATH or in /usr/sbin, /sbin); panics naming
/// the tool when it is missing: these tests must not be skipped silently.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/sbin",
        "/usr/bin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool `{name}` is not installed");
}

/// Run a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Vec<u8> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A sparse file of `size` bytes partitioned by sfdisk with `script`.
pub fn sfdisk_image(size: u64, script: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    run(
        Command::new(tool("sfdisk"))
            .args(["--no-reread", "--no-tell-kernel", "-q"])
            .arg(f.path()),
        Some(script),
    );
    f
}

/// `sfdisk -J` of an image.
pub fn sfdisk_json(path: &Path) -> serde_json::Value {
    let out = run(Command::new(tool("sfdisk")).arg("-J").arg(path), None);
    serde_json::from_slice(&out).unwrap()
}

/// xz-compressed image, decompressed in memory.
pub fn xz_image(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &data[..], &mut out).unwrap();
    out
}

/// gzip-compressed image, decompressed with `gzip -dc`.
pub fn gz_image(path: &Path) -> Vec<u8> {
    assert!(path.is_file(), "{} missing", path.display());
    run(Command::new(tool("gzip")).arg("-dc").arg(path), None)
}

/// A qcow2/vmdk/vhd image converted to raw with qemu-img, in memory.
pub fn qemu_raw(path: &Path) -> Vec<u8> {
    assert!(path.is_file(), "{} missing", path.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("disk.raw");
    run(
        Command::new(tool("qemu-img"))
            .args(["convert", "-O", "raw"])
            .arg(path)
            .arg(&out),
        None,
    );
    std::fs::read(out).unwrap()
}

pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Write an MBR-style entry `slot` (0-based) of the sector at `sector_off`.
pub fn put_entry(
    disk: &mut [u8],
    sector_off: usize,
    slot: usize,
    boot: u8,
    sys: u8,
    start: u32,
    sectors: u32,
) {
    let e = sector_off + 446 + 16 * slot;
    disk[e] = boot;
    disk[e + 4] = sys;
    put_u32(disk, e + 8, start);
    put_u32(disk, e + 12, sectors);
    disk[sector_off + 510] = 0x55;
    disk[sector_off + 511] = 0xaa;
}

/// Recompute the CRC32 of the GPT header at byte `off` (header size 92 unless
/// the header says otherwise).
pub fn fix_header_crc(disk: &mut [u8], off: usize) {
    let size = u32::from_le_bytes(disk[off + 12..off + 16].try_into().unwrap()) as usize;
    let size = size.clamp(92, 512);
    put_u32(disk, off + 16, 0);
    let crc = crc32fast::hash(&disk[off..off + size]);
    put_u32(disk, off + 16, crc);
}

/// Recompute the entry-array CRC of the header at `off` and then its CRC.
pub fn fix_array_crc(disk: &mut [u8], off: usize, ss: usize) {
    let lba = u64::from_le_bytes(disk[off + 72..off + 80].try_into().unwrap()) as usize;
    let n = u32::from_le_bytes(disk[off + 80..off + 84].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(disk[off + 84..off + 88].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&disk[lba * ss..lba * ss + n * size]);
    put_u32(disk, off + 88, crc);
    fix_header_crc(disk, off);
}
