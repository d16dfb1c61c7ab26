//! Shared helpers of the vmie-win tests: real data, hives built from the
//! virt-v2v phony-guest `.reg` files, synthetic PE headers, MemFs guests,
//! and the hivex oracle.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vmie_guestfs::MemFs;
use vmie_hive::{merge_with, Hive, HiveOptions, MergeOptions};

/// The virt-v2v phony guests' registry fragments.
pub const V2V: &str = "virt-v2v/test-data/phony-guests";
/// `.reg` prefix of the SOFTWARE fragments (as `hivexregedit --prefix`).
pub const SOFTWARE_PREFIX: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE";
/// `.reg` prefix of `windows-system.reg`.
pub const SYSTEM_PREFIX: &str = "HKEY_LOCAL_MACHINE\\SYSTEM";

/// `../shared/realdata/<rel>` beside the workspace.
pub fn realdata(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/realdata"
    ))
    .join(rel)
}

pub fn read_real(rel: &str) -> Vec<u8> {
    std::fs::read(realdata(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn hive_from(bytes: Vec<u8>, name: &str) -> Hive {
    Hive::from_bytes(
        bytes,
        &HiveOptions {
            name: name.to_string(),
            ..HiveOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A real hive file, read as it is even when dirty (as hivex reads it:
/// SYSTEM_WIN_10_1709 is at sequence 4317/4316 and comes without logs).
pub fn real_hive(rel: &str) -> Hive {
    Hive::from_bytes(
        read_real(rel),
        &HiveOptions {
            name: rel.to_string(),
            ignore_dirty: true,
            ..HiveOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whether a hive file's sequence numbers differ (it was not cleanly written back).
pub fn is_dirty(bytes: &[u8]) -> bool {
    bytes[4..8] != bytes[8..12]
}

/// `minimal-hive` with a phony-guest `.reg` file merged onto it (our merge,
/// `hivexregedit --merge --prefix PREFIX` semantics).
pub fn merged(reg: &str, prefix: Option<&str>) -> Hive {
    let mut h = hive_from(read_real(&format!("{V2V}/minimal-hive")), reg);
    let text = std::fs::read_to_string(realdata(&format!("{V2V}/{reg}"))).unwrap();
    merge_with(
        &mut h,
        &text,
        &MergeOptions {
            prefix: prefix.map(String::from),
        },
    )
    .unwrap_or_else(|e| panic!("{reg}: {e}"));
    h
}

/// The SOFTWARE hive of a phony guest (`win7-32`, `winxp-32`, `win10`,
/// `win11`, `win2k22`, `win2k25`).
pub fn software(guest: &str) -> Hive {
    merged(&format!("{guest}-software.reg"), Some(SOFTWARE_PREFIX))
}

/// The phony guests' SYSTEM hive (`windows-system.reg`).
pub fn system_v2v() -> Hive {
    merged("windows-system.reg", Some(SYSTEM_PREFIX))
}

/// The phony guests' BCD (`windows-bcd.reg`, keys already rooted at `\`).
pub fn bcd_v2v() -> Hive {
    merged("windows-bcd.reg", None)
}

/// A minimal PE image: `MZ`, `e_lfanew` at 0x3c, `PE\0\0` and Machine.
pub fn pe(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    b
}

/// A Windows guest: the hives at `/Windows/System32/config/`, and
/// `kernel32.dll` when given.
pub fn windows_fs(software: &[u8], system: &[u8], kernel32: Option<&[u8]>) -> MemFs {
    let mut fs = MemFs::new("test-windows")
        .with_file("/Windows/System32/config/SOFTWARE", software)
        .with_file("/Windows/System32/config/SYSTEM", system);
    if let Some(k) = kernel32 {
        fs = fs.with_file("/Windows/System32/kernel32.dll", k);
    }
    fs
}

/// hivexregedit is the oracle of the merge cross-check: when it is missing
/// the test fails naming the package, rather than pass without it.
pub fn require_hivex() {
    let ok = Command::new("hivexregedit").arg("--help").output().is_ok();
    assert!(
        ok,
        "hivexregedit not installed: apt-get install libwin-hivex-perl libhivex-bin (cargo xtask deps does it)"
    );
}

/// `hivexregedit --merge [--prefix P] minimal-hive REG` → the merged hive file's bytes.
pub fn hivex_merge(reg: &str, prefix: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hive");
    std::fs::write(&f, read_real(&format!("{V2V}/minimal-hive"))).unwrap();
    let mut c = Command::new("hivexregedit");
    c.arg("--merge");
    if let Some(p) = prefix {
        c.arg("--prefix").arg(p);
    }
    let out = c
        .arg(&f)
        .arg(realdata(&format!("{V2V}/{reg}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit --merge {reg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&f).unwrap()
}
