//! `cargo xtask deps` and `cargo xtask test`: what CI and a new developer run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the tests and fixtures need, with a command each provides
/// (checked to decide whether to install). Keep in step with `.ci/run`.
pub const PACKAGES: &[(&str, &str)] = &[
    ("e2fsprogs", "mkfs.ext4"),
    ("e2fsprogs", "debugfs"),
    ("xfsprogs", "mkfs.xfs"),
    ("btrfs-progs", "mkfs.btrfs"),
    ("dosfstools", "mkfs.vfat"),
    ("mtools", "mcopy"),
    ("fdisk", "sfdisk"),
    ("util-linux", "blkid"),
    ("ntfs-3g", "mkntfs"),
    ("genisoimage", "genisoimage"),
    ("cryptsetup-bin", "cryptsetup"),
    ("qemu-utils", "qemu-img"),
    ("gzip", "gzip"),
    ("xz-utils", "xz"),
    ("zstd", "zstd"),
    ("lz4", "lz4"),
    ("bzip2", "bzip2"),
    ("libhivex-bin", "hivexsh"),
    ("libwin-hivex-perl", "hivexregedit"),
];

fn have(cmd: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| Path::new(d).join(cmd).is_file());
    found
}

/// Install the missing Debian packages (apt-get update first), or say which
/// are missing when we are not root.
pub fn deps() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, c)| !have(c))
        .map(|(p, _)| *p)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        bail!(
            "missing Debian packages: {} (run as root, or: sudo apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", format!("{cmd:?}").replace('"', ""));
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// The whole suite: packages, formatting, lints, fixtures, every test, and a
/// qemu boot of one real Debian guest before and after the fixup
/// (`VMIE_SKIP_BOOT_TEST=1` leaves the boot out, for quick local runs).
pub fn test(extra: &[String]) -> Result<()> {
    deps()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = crate::fixtures::workspace_root();
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Build every fixture once up front, so the tests (which run in parallel)
    // find them ready.
    let names = crate::fixtures::recipe_names()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::fixtures::ensure_built(&refs, &crate::fixtures::default_out_dir())?;
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace"])
        .args(extra))?;
    // Only a boot proves the guest works: one layout, unfixed (must fail) and
    // fixed on virtio and NVMe (must pass). All layouts: cargo xtask boot-test.
    if std::env::var_os("VMIE_SKIP_BOOT_TEST").is_none() {
        crate::guest::boot_test(&["mbr-logical-swap".to_string()])?;
    }
    Ok(())
}
