#![allow(dead_code)]
//! Shared helpers: real data paths, decompression, the hivex oracles.

use std::path::PathBuf;
use std::process::Command;

use vmie_hive::{Hive, HiveOptions};

pub const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/realdata");

pub fn real(rel: &str) -> PathBuf {
    PathBuf::from(REAL).join(rel)
}

/// Read a real-data file, unpacking `.xz`.
pub fn read_real(rel: &str) -> Vec<u8> {
    let raw = std::fs::read(real(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    if rel.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).unwrap();
        out
    } else {
        raw
    }
}

pub fn opts(name: &str) -> HiveOptions {
    HiveOptions {
        name: name.to_string(),
        ..Default::default()
    }
}

pub fn open(rel: &str) -> Hive {
    Hive::from_bytes(read_real(rel), &opts(rel)).unwrap_or_else(|e| panic!("{e}"))
}

/// The hivex tools (hivexregedit, hivexsh) are the oracle of these tests:
/// when they are missing the tests fail, naming the Debian packages, rather
/// than pass without the comparison.
pub fn have_hivex() -> bool {
    let ok = Command::new("hivexregedit").arg("--help").output().is_ok()
        && Command::new("hivexsh").arg("--help").output().is_ok();
    assert!(
        ok,
        "hivexregedit/hivexsh not installed: apt-get install libhivex-bin libwin-hivex-perl (cargo xtask deps does it)"
    );
    ok
}

/// `hivexregedit --export FILE KEY` stdout, or None if it fails.
pub fn hivex_export(file: &std::path::Path, key: &str) -> Option<Vec<u8>> {
    let o = Command::new("hivexregedit")
        .arg("--export")
        .arg(file)
        .arg(key)
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

/// `hivexregedit --export` of in-memory bytes (through a temp file).
pub fn hivex_export_bytes(bytes: &[u8], key: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hive");
    std::fs::write(&f, bytes).unwrap();
    hivex_export(&f, key)
}

/// hivexsh can open the hive and list the root.
pub fn hivexsh_ok(bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hive");
    std::fs::write(&f, bytes).unwrap();
    let mut c = Command::new("hivexsh")
        .arg(&f)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"ls\n").unwrap();
    let o = c.wait_with_output().unwrap();
    if o.status.success() && o.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "hivexsh: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

pub fn show_diff(a: &[u8], b: &[u8]) -> String {
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!(
                "first difference at line {}:\n ours:  {x}\n hivex: {y}",
                i + 1
            );
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines)",
        a.lines().count(),
        b.lines().count()
    )
}
