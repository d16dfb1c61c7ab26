//! qcow2 backing files against qemu: a chain read through our reader is
//! byte-identical to `qemu-img convert -O raw` of its top image (clusters
//! written in the top, zero clusters over data below, a top larger than its
//! base, a chain of three, relative names), and a hostile chain (a loop, too
//! long, a missing file, a device, a protocol, a format that disagrees with
//! the declared one) is refused naming it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::format::detect_container;
use vmie_disk::image::{open_image, open_image_with, ImageLimits};
use vmie_disk::{Device, DiskError, DiskSet, FileDevice};

fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} (Debian package qemu-utils): {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(p: &Path) -> Result<Arc<dyn Device>, DiskError> {
    open_with(p, &ImageLimits::default())
}

fn open_with(p: &Path, limits: &ImageLimits) -> Result<Arc<dyn Device>, DiskError> {
    let f = Arc::new(FileDevice::open(p)?);
    let fmt = detect_container(f.as_ref())?.expect("a container");
    open_image_with(f, fmt, limits)
}

/// A raw base of `mib` MiB where every 4 KiB block names itself.
fn raw_base(dir: &Path, mib: u64) -> PathBuf {
    let p = dir.join("base.raw");
    let mut data = vec![0u8; (mib << 20) as usize];
    for (i, block) in data.chunks_mut(4096).enumerate() {
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((i * 31 + j * 7) % 251) as u8 + 1;
        }
    }
    std::fs::write(&p, data).unwrap();
    p
}

/// qemu-img create -f qcow2 [-o compat] -F fmt -b backing top [size]
fn overlay(top: &Path, backing: &str, fmt: &str, extra: &[&str]) {
    let mut a = vec!["create", "-q", "-f", "qcow2", "-F", fmt, "-b", backing];
    a.extend_from_slice(extra);
    a.push(s(top));
    tool("qemu-img", &a);
}

fn qemu_io(img: &Path, cmd: &str) {
    tool("qemu-io", &["-f", "qcow2", "-c", cmd, s(img)]);
}

/// Our reading of `img` equals qemu's (`qemu-img convert -O raw`), over the
/// whole device and over unaligned ranges straddling cluster edges.
fn assert_reads_as_qemu(img: &Path) -> Arc<dyn Device> {
    let dir = img.parent().unwrap();
    let want = dir.join(format!(
        "{}.qemu.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    tool("qemu-img", &["convert", "-O", "raw", s(img), s(&want)]);
    let want = std::fs::read(&want).unwrap();
    let dev = open(img).unwrap();
    assert_eq!(dev.len(), want.len() as u64, "{}", dev.describe());
    let mut got = vec![0u8; want.len()];
    dev.read_at(0, &mut got).unwrap();
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(first.is_none(), "{}: differs at {first:?}", dev.describe());
    for (at, len) in [(65_535u64, 3usize), (1_048_000, 2_000), (131_071, 70_000)] {
        if at + len as u64 <= dev.len() {
            let mut b = vec![0u8; len];
            dev.read_at(at, &mut b).unwrap();
            assert_eq!(b, want[at as usize..at as usize + len], "at {at}");
        }
    }
    dev
}

#[test]
fn a_qcow2_over_a_raw_base_reads_as_qemu_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = raw_base(dir.path(), 4);
    let top = dir.path().join("top.qcow2");
    overlay(&top, s(&base), "raw", &[]);
    // Data in the top, a zero cluster over data below, and an untouched rest.
    qemu_io(&top, "write -P 0xab 1M 64k");
    qemu_io(&top, "write -P 0xcd 100000 5000");
    qemu_io(&top, "write -z 2M 128k");
    let dev = assert_reads_as_qemu(&top);
    assert!(
        dev.describe().contains("backing file"),
        "{}",
        dev.describe()
    );
    let mut b = [1u8; 16];
    dev.read_at(2 << 20, &mut b).unwrap();
    assert_eq!(b, [0u8; 16], "a zero cluster hides the base");
    dev.read_at(3 << 20, &mut b).unwrap();
    assert_ne!(b, [0u8; 16], "an unallocated cluster shows the base");
}

#[test]
fn a_top_larger_than_its_base_reads_zeros_past_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = raw_base(dir.path(), 1);
    let top = dir.path().join("top.qcow2");
    overlay(&top, s(&base), "raw", &["-o", "cluster_size=4096"]);
    tool("qemu-img", &["resize", "-q", s(&top), "3M"]);
    qemu_io(&top, "write -P 0x11 2M 4k");
    let dev = assert_reads_as_qemu(&top);
    assert_eq!(dev.len(), 3 << 20);
}

/// raw <- qcow2 v2 (compat 0.10) <- qcow2 v3, named relative to each child,
/// opened from another working directory.
#[test]
fn a_chain_of_three_with_relative_names_reads_as_qemu_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    raw_base(dir.path(), 4);
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    let run = |args: &[&str]| {
        let out = Command::new("qemu-img")
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "-F",
        "raw",
        "-b",
        "base.raw",
        "mid.qcow2",
    ]);
    run(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "mid.qcow2",
        "top.qcow2",
    ]);
    qemu_io(&mid, "write -P 0x22 0 192k");
    qemu_io(&top, "write -P 0x33 128k 128k");
    qemu_io(&mid, "write -P 0x44 3M 1M");
    let dev = assert_reads_as_qemu(&top);
    let mut b = [0u8; 1];
    dev.read_at(64 << 10, &mut b).unwrap();
    assert_eq!(b[0], 0x22, "the middle image shows through the top");
    dev.read_at(130 << 10, &mut b).unwrap();
    assert_eq!(b[0], 0x33, "the top wins");
    // A DiskSet (what the CLI opens) reads it too, and refuses to write it.
    let set = DiskSet::open(std::slice::from_ref(&top), false).unwrap();
    assert_eq!(set.disks().len(), 1);
    let err = DiskSet::open(&[top], true).unwrap_err().to_string();
    assert!(err.contains("qemu-img convert -O raw"), "{err}");
}

#[test]
fn a_loop_of_backing_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&b), "1M"]);
    overlay(&a, "b.qcow2", "qcow2", &[]);
    // Point b back at a without opening it (-u: qemu would loop too).
    tool(
        "qemu-img",
        &["rebase", "-q", "-u", "-F", "qcow2", "-b", "a.qcow2", s(&b)],
    );
    let err = open(&a).unwrap_err().to_string();
    assert!(err.contains("loop"), "{err}");
    // A file backing itself.
    tool(
        "qemu-img",
        &["rebase", "-q", "-u", "-F", "qcow2", "-b", "b.qcow2", s(&b)],
    );
    let err = open(&b).unwrap_err().to_string();
    assert!(err.contains("loop"), "{err}");
}

#[test]
fn a_chain_longer_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    raw_base(dir.path(), 1);
    let mut below = ("base.raw".to_string(), "raw");
    for i in 0..4 {
        let p = dir.path().join(format!("l{i}.qcow2"));
        overlay(&p, &below.0, below.1, &[]);
        below = (format!("l{i}.qcow2"), "qcow2");
    }
    let top = dir.path().join("l3.qcow2");
    // Five images in all: four qcow2 and the raw base.
    let five = ImageLimits {
        max_chain: 5,
        ..ImageLimits::default()
    };
    open_with(&top, &five).unwrap();
    let four = ImageLimits {
        max_chain: 4,
        ..ImageLimits::default()
    };
    let err = open_with(&top, &four).unwrap_err().to_string();
    assert!(err.contains("longer than 4 images"), "{err}");
}

#[test]
fn missing_device_protocol_and_mismatched_backing_files_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    let top = dir.path().join("top.qcow2");
    let cases: [(&str, &str, &str); 5] = [
        ("gone.qcow2", "qcow2", "gone.qcow2"),
        ("/dev/null", "raw", "not a regular file"),
        ("nbd:localhost:10809", "raw", "no protocol"),
        (
            "json:{\"file.filename\":\"/etc/passwd\"}",
            "raw",
            "no protocol",
        ),
        // Declared raw, but a qcow2: never read a container as raw data.
        (
            "base.qcow2",
            "raw",
            "declared as raw, but its content is qcow2",
        ),
    ];
    for (name, fmt, want) in cases {
        let _ = std::fs::remove_file(&top);
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-F",
                fmt,
                "-b",
                name,
                s(&top),
                "1M",
            ],
        );
        let err = open(&top).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("backing file"),
            "{name}: {err}"
        );
    }
    // Declared qcow2 but raw content.
    let raw = raw_base(dir.path(), 1);
    let _ = std::fs::remove_file(&top);
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-F",
            "qcow2",
            "-b",
            s(&raw),
            s(&top),
            "1M",
        ],
    );
    let err = open(&top).unwrap_err().to_string();
    assert!(
        err.contains("declared as qcow2, but its content is raw"),
        "{err}"
    );
}

/// Hostile headers: a backing name size out of range, a name past the end
/// of the file, header extensions without an end marker.
#[test]
fn hostile_backing_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = raw_base(dir.path(), 1);
    let top = dir.path().join("top.qcow2");
    overlay(&top, s(&base), "raw", &[]);
    let good = std::fs::read(&top).unwrap();
    open(&top).unwrap();
    let try_bytes = |b: &[u8], want: &str| {
        let p = dir.path().join("bad.qcow2");
        std::fs::write(&p, b).unwrap();
        let err = match open(&p) {
            Ok(_) => panic!("{want}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{want}: {err}");
    };
    let mut b = good.clone();
    b[16..20].copy_from_slice(&5000u32.to_be_bytes());
    try_bytes(&b, "backing_file_size");
    let mut b = good.clone();
    b[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
    try_bytes(&b, "past the end of the file");
    // Fill the extension area with a non-zero type up to the first cluster.
    let mut b = good.clone();
    let start = u32::from_be_bytes(b[100..104].try_into().unwrap()) as usize;
    let name_at = u64::from_be_bytes(b[8..16].try_into().unwrap()) as usize;
    for at in (start..name_at.min(65536)).step_by(8) {
        if at + 8 > name_at {
            break;
        }
        b[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[at + 4..at + 8].copy_from_slice(&0u32.to_be_bytes());
    }
    // The walk then meets the name's bytes as a huge extension.
    try_bytes(&b, "header extensions");
}

#[test]
fn open_image_default_limits_follow_chains() {
    let dir = tempfile::tempdir().unwrap();
    let base = raw_base(dir.path(), 1);
    let top = dir.path().join("top.qcow2");
    overlay(&top, s(&base), "raw", &[]);
    let f = Arc::new(FileDevice::open(&top).unwrap());
    let fmt = detect_container(f.as_ref()).unwrap().unwrap();
    let dev = open_image(f, fmt).unwrap();
    let mut b = vec![0u8; 4096];
    dev.read_at(0, &mut b).unwrap();
    assert_eq!(b, std::fs::read(&base).unwrap()[..4096]);
}
