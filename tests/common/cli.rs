//! The vmie-fixup binary as the end-to-end tests run it, and the helpers
//! every one of them needs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fixture image (`fixtures/recipes/NAME.toml`), built on first use.
pub fn fixture(name: &str) -> PathBuf {
    xtask::fixtures::image(name).unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

/// Run vmie-fixup with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(args)
        .output()
        .unwrap()
}

/// Run vmie-fixup; it must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "vmie-fixup {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run vmie-fixup; it must exit with `code`; its standard error.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "vmie-fixup {args:?}: stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SHA-256 of an image's bytes, without reading its holes (equal digests
/// mean byte-identical images).
pub fn sha256(p: &Path) -> String {
    xtask::fixtures::image::digest(p, &[]).unwrap()
}
