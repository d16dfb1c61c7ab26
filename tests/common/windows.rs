//! A Windows guest disk for the end-to-end tests: dfvfs's Windows-made
//! NTFS volume (it has `\\Windows\\System32\\config`) with SOFTWARE and SYSTEM
//! hives built from virt-v2v's .reg exports and an x86-64 PE header as
//! kernel32.dll, copied in by ntfscp, in MBR partition 1 at 1 MiB.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const V2V: &str = "virt-v2v/test-data/phony-guests";

pub fn realdata(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing (../shared/realdata)",
        p.display()
    );
    p
}

pub fn tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// virt-v2v's minimal hive with a .reg export merged in by hivexregedit.
pub fn hive(dir: &Path, name: &str, prefix: &str, reg: &str) -> PathBuf {
    let h = dir.join(name);
    std::fs::copy(realdata(&format!("{V2V}/minimal-hive")), &h).unwrap();
    tool(
        Command::new("hivexregedit")
            .args(["--merge", "--prefix", prefix])
            .arg(&h)
            .arg(realdata(&format!("{V2V}/{reg}"))),
    );
    h
}

/// A one-disk Windows VM: dfvfs's Windows-made NTFS volume (it has
/// \Windows\System32\config) with SOFTWARE from virt-v2v's `software`
/// export, its SYSTEM, and an x86-64 kernel32.dll copied in by ntfscp (no
/// mount), in MBR partition 1 (type 7) at 1 MiB.
pub fn windows_disk(dir: &Path, software: &str) -> PathBuf {
    let vol = dir.join("vol.raw");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(realdata("dfvfs/test_data/windows_volume.qcow2"))
            .arg(&vol),
    );
    let sw = hive(dir, "SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE", software);
    let sys = hive(
        dir,
        "SYSTEM",
        "HKEY_LOCAL_MACHINE\\SYSTEM",
        "windows-system.reg",
    );
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    let k32 = dir.join("kernel32.dll");
    std::fs::write(&k32, pe).unwrap();
    for (f, to) in [
        (&sw, "/Windows/System32/config/SOFTWARE"),
        (&sys, "/Windows/System32/config/SYSTEM"),
        (&k32, "/Windows/System32/kernel32.dll"),
    ] {
        tool(Command::new("ntfscp").arg("-f").arg(&vol).arg(f).arg(to));
    }
    let bytes = std::fs::read(&vol).unwrap();
    let disk = dir.join(format!("{software}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(bytes.len() as u64 + (2 << 20))
        .unwrap();
    let mut sf = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(
        sf.stdin.take().unwrap(),
        "start=2048, size={}, type=7",
        bytes.len() / 512
    )
    .unwrap();
    assert!(sf.wait().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 1 << 20).unwrap();
    disk
}
