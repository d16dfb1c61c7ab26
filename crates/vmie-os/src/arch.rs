//! CPU architecture from an ELF header.

use crate::util::Ctx;

/// Largest binary read to look at its ELF header.
const MAX_BINARY: u64 = 32 << 20;

/// The architecture name (as `uname -m` / virt-inspector) of an ELF image
/// given its first bytes (at least 20).
pub fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = match header.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match header.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = [*header.get(18)?, *header.get(19)?];
    let machine = if le {
        u16::from_le_bytes(m)
    } else {
        u16::from_be_bytes(m)
    };
    Some(match (machine, class64) {
        (3, false) => "i386",
        (62, true) => "x86_64",
        (62, false) => "x32",
        (183, true) => "aarch64",
        (40, false) => "armv7l",
        (21, true) if le => "ppc64le",
        (21, true) => "ppc64",
        (20, false) => "ppc",
        (22, true) => "s390x",
        (22, false) => "s390",
        (243, true) => "riscv64",
        (243, false) => "riscv32",
        (8, false) if le => "mipsel",
        (8, false) => "mips",
        (8, true) if le => "mips64el",
        (8, true) => "mips64",
        (2, false) => "sparc",
        (43, true) => "sparc64",
        (258, true) => "loongarch64",
        (50, true) => "ia64",
        (15, _) => "hppa",
        _ => return None,
    })
}

/// Architecture of the guest's shell (or another core binary).
pub(crate) fn detect_arch(ctx: &Ctx<'_>) -> Option<String> {
    for p in [
        "/bin/sh",
        "/usr/bin/bash",
        "/bin/bash",
        "/bin/busybox",
        "/bin/ls",
        "/usr/bin/ls",
        "/bin/rm",
    ] {
        if let Some(b) = ctx.read_bytes(p, MAX_BINARY) {
            if let Some(a) = elf_arch(&b) {
                return Some(a.to_string());
            }
        }
    }
    None
}
