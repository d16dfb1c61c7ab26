//! The one list of Debian packages that the tests, the fixtures, the demo,
//! the fuzz run, the bench and the boot test need, and `cargo xtask deps`,
//! which installs the missing ones. `.ci/run` calls `cargo xtask deps`; nothing
//! else names packages to install.
//!
//! Whether a package is there is decided by a file it ships (not by a command
//! on `PATH`: `grub-mkimage` comes from grub-common, but the BIOS modules it
//! needs come from grub-pc-bin, and only `moddep.lst` tells them apart).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian package, and files it ships (all must exist for it to count as
/// installed).
pub const PACKAGES: &[(&str, &[&str])] = &[
    (
        "e2fsprogs",
        &[
            "/usr/sbin/mke2fs",
            "/usr/sbin/e2fsck",
            "/usr/sbin/debugfs",
            "/usr/sbin/dumpe2fs",
        ],
    ),
    (
        "xfsprogs",
        &[
            "/usr/sbin/mkfs.xfs",
            "/usr/sbin/xfs_repair",
            "/usr/sbin/xfs_db",
        ],
    ),
    ("btrfs-progs", &["/usr/sbin/mkfs.btrfs", "/usr/bin/btrfs"]),
    (
        "dosfstools",
        &["/usr/sbin/mkfs.vfat", "/usr/sbin/fsck.vfat"],
    ),
    ("mtools", &["/usr/bin/mcopy"]),
    ("fdisk", &["/usr/sbin/sfdisk"]),
    (
        "util-linux",
        &["/usr/sbin/blkid", "/usr/sbin/mkswap", "/usr/bin/umount"],
    ),
    (
        "ntfs-3g",
        &[
            "/usr/bin/ntfs-3g",
            "/usr/sbin/mkntfs",
            "/usr/sbin/ntfscp",
            "/usr/bin/ntfsfix",
            "/usr/sbin/ntfsresize",
            "/usr/bin/ntfsinfo",
        ],
    ),
    ("genisoimage", &["/usr/bin/genisoimage"]),
    ("lvm2", &["/usr/sbin/lvcreate"]),
    ("cryptsetup-bin", &["/usr/sbin/cryptsetup"]),
    ("gzip", &["/usr/bin/gzip"]),
    ("xz-utils", &["/usr/bin/xz"]),
    ("zstd", &["/usr/bin/zstd"]),
    ("lz4", &["/usr/bin/lz4"]),
    ("bzip2", &["/usr/bin/bzip2"]),
    ("cpio", &["/usr/bin/cpio"]),
    ("libhivex-bin", &["/usr/bin/hivexsh", "/usr/bin/hivexget"]),
    ("libwin-hivex-perl", &["/usr/bin/hivexregedit"]),
    ("time", &["/usr/bin/time"]),
    // The boot test: a real Debian guest, GRUB written without mounting, qemu.
    ("debootstrap", &["/usr/sbin/debootstrap"]),
    ("grub-common", &["/usr/bin/grub-mkimage"]),
    (
        "grub-pc-bin",
        &[
            "/usr/lib/grub/i386-pc/moddep.lst",
            "/usr/lib/grub/i386-pc/boot.img",
        ],
    ),
    // qemu-utils and qemu-system-x86 are installed together at Debian's
    // version (see `QEMU`), not from this list.
];

/// Installed together at the version Debian offers for qemu-system-x86: the
/// machine image ships a newer qemu-utils that conflicts with it.
pub const QEMU: &[(&str, &[&str])] = &[
    ("qemu-system-x86", &["/usr/bin/qemu-system-x86_64"]),
    ("qemu-utils", &["/usr/bin/qemu-img"]),
];

/// The Debian package that ships `tool` (a program name), for messages.
pub fn package_of(tool: &str) -> Option<&'static str> {
    PACKAGES.iter().chain(QEMU).find_map(|(pkg, files)| {
        files
            .iter()
            .any(|f| Path::new(f).file_name().is_some_and(|n| n == tool))
            .then_some(*pkg)
    })
}

fn installed(files: &[&str]) -> bool {
    files.iter().all(|f| Path::new(f).is_file())
}

/// The packages of the list that are missing here.
pub fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, files)| !installed(files))
        .map(|(p, _)| *p)
        .collect()
}

fn apt(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    eprintln!("xtask: $ apt-get {}", args.join(" "));
    let st = cmd.status().context("starting apt-get")?;
    if !st.success() {
        bail!("apt-get {} failed: {st}", args.join(" "));
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Install every missing package of the list (apt-get update first), and
/// qemu-system-x86 with qemu-utils at Debian's version. Without root, fails
/// naming what to install.
pub fn deps() -> Result<()> {
    let missing = missing();
    let qemu_missing = QEMU.iter().any(|(_, f)| !installed(f));
    if missing.is_empty() && !qemu_missing {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {} {} (run as root, or: sudo cargo xtask deps)",
            missing.join(" "),
            if qemu_missing { "qemu-system-x86" } else { "" }
        );
    }
    apt(&["update", "-q"])?;
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
    }
    if qemu_missing {
        let out = Command::new("apt-cache")
            .args(["policy", "qemu-system-x86"])
            .output()
            .context("apt-cache policy qemu-system-x86")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .map(|v| v.trim().to_string())
            })
            .filter(|v| v != "(none)")
            .context("no candidate version of qemu-system-x86 in apt's lists")?;
        let utils = format!("qemu-utils={v}");
        let extra = format!("qemu-block-extra={v}");
        apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--allow-downgrades",
            &utils,
            &extra,
            "qemu-system-x86",
        ])?;
    }
    let still = missing_after();
    if !still.is_empty() {
        bail!("installed, but still missing files: {}", still.join(", "));
    }
    Ok(())
}

fn missing_after() -> Vec<String> {
    PACKAGES
        .iter()
        .chain(QEMU)
        .flat_map(|(_, files)| files.iter())
        .filter(|f| !Path::new(f).is_file())
        .map(|f| f.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_package() {
        assert_eq!(package_of("moddep.lst"), Some("grub-pc-bin"));
        assert_eq!(package_of("mkfs.xfs"), Some("xfsprogs"));
        assert_eq!(package_of("qemu-img"), Some("qemu-utils"));
        assert_eq!(package_of("no-such-tool"), None);
    }
}
