//! `--check-fs`: the filesystem's own checker, read-only, on every volume a
//! run writes.
//!
//! Our writers refuse what they can see is inconsistent where they are about
//! to allocate (group descriptors against bitmaps, a group's own metadata
//! marked in use, error state). They cannot see everything the filesystem's
//! checker sees without reading the whole volume: a block that an inode uses
//! but whose bitmap bit and counts were all cleared together, a directory
//! entry pointing at a freed inode. `--check-fs` closes that gap at the cost
//! of a full check:
//!
//! 1. before the commit, the checker runs on every volume the run changes, as
//!    it is on the image (the original bytes): any finding refuses the run,
//!    and nothing is written;
//! 2. after the commit, it runs again on the same volumes: any finding rolls
//!    the commit back through its undo journal and refuses the run, so a run
//!    never leaves a volume the checker finds fault with.
//!
//! A dry run does step 1 only.

use std::path::Path;
use std::process::Command;

use vmie_inspect::Vm;
use vmie_probe::FsKind;

/// One volume the run writes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `image partition N`, for messages.
    pub name: String,
    /// The image file.
    pub image: std::path::PathBuf,
    /// Byte offset of the volume in the image.
    pub offset: u64,
    /// What is on it.
    pub kind: FsKind,
}

/// The volumes whose bytes the pending writes touch. A write outside every
/// volume (a partition table, a boot sector gap) names the disk instead and
/// is not checked by a filesystem checker.
pub(crate) fn written_volumes(vm: &Vm) -> Result<Vec<Target>, String> {
    let disks = vm.disks().disks();
    let mut changes = Vec::with_capacity(disks.len());
    for disk in disks {
        let c = disk.overlay().changes().map_err(|e| e.to_string())?;
        // The checkers read the image file at a byte offset: a container's
        // guest bytes are not at their offset in the file.
        if !c.is_empty() && disk.container().is_some() {
            return Err(format!(
                "--check-fs: {} is not a raw image, and the filesystem checkers read raw bytes; convert it first: {}",
                disk.path().display(),
                vmie_disk::format::conversion_command(&disk.path().display().to_string())
            ));
        }
        changes.push(c);
    }
    let mut out = Vec::new();
    for vol in vm.volumes() {
        // A PV's bytes are checked through its logical volumes.
        if vol.is_extended() || vol.probe.as_ref().is_some_and(|p| p.kind == FsKind::Lvm2) {
            continue;
        }
        // (disk, start, length) of the volume's bytes on the disks.
        let ranges = match &vol.lv {
            Some(lv) => lv.disk_ranges.clone(),
            None => vec![(vol.disk, vol.start, vol.size)],
        };
        let touched = ranges.iter().any(|&(d, start, len)| {
            let end = start.saturating_add(len);
            changes.get(d).is_some_and(|c| {
                c.iter()
                    .any(|(off, b)| *off < end && off.saturating_add(b.len() as u64) > start)
            })
        });
        if !touched {
            continue;
        }
        let Some(probe) = &vol.probe else {
            return Err(format!(
                "--check-fs: {} is written but holds no filesystem vmie-fixup recognises",
                vol.name
            ));
        };
        let in_place = vol.lv.as_ref().is_none_or(|lv| lv.contiguous);
        let (Some(&(d, offset, _)), true) = (ranges.first(), in_place) else {
            return Err(format!(
                "--check-fs: {} is striped or in several pieces on the disks, so its checker cannot read it in place; run without --check-fs, or check it after the run from a host where LVM can activate it",
                vol.name
            ));
        };
        let image = disks
            .get(d)
            .map(|x| x.path().to_path_buf())
            .ok_or_else(|| format!("--check-fs: {}: no disk {d}", vol.name))?;
        out.push(Target {
            name: vol.name.clone(),
            image,
            offset,
            kind: probe.kind,
        });
    }
    Ok(out)
}

/// Runs the checker of `t`'s filesystem read-only on the image as it is on
/// disk. `Ok(None)` when clean, `Ok(Some(findings))` when not.
pub(crate) fn check(t: &Target) -> Result<Option<String>, String> {
    let (prog, args): (&str, Vec<String>) = match t.kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => (
            "e2fsck",
            vec![
                "-fn".into(),
                // e2fsprogs' unix I/O manager takes the volume's offset as an
                // option after the file name.
                format!("{}?offset={}", t.image.display(), t.offset),
            ],
        ),
        other => {
            return Err(format!(
                "--check-fs: {}: no checker is wired for {} volumes (vmie-fixup writes only ext2/3/4 today)",
                t.name,
                other.as_str()
            ))
        }
    };
    let out = Command::new(find(prog)?)
        .args(&args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("--check-fs: running {prog} on {}: {e}", t.name))?;
    // e2fsck: 0 clean; 4 errors left uncorrected (-n); 8 operational error.
    if out.status.success() {
        return Ok(None);
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let findings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Pass ") && !l.starts_with("e2fsck "))
        .take(12)
        .collect();
    Ok(Some(format!(
        "{prog} {} ({}): {}",
        args.join(" "),
        out.status,
        findings.join("; ")
    )))
}

/// The checker's path: `PATH`, then the sbin directories a user's `PATH`
/// often lacks.
fn find(prog: &str) -> Result<std::path::PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(std::path::PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("--check-fs needs {prog}, which is not installed (Debian: apt-get install e2fsprogs)")
        })
}

/// Step 1: refuse when any target is not clean before the run writes.
pub(crate) fn before(targets: &[Target]) -> Result<(), String> {
    for t in targets {
        if let Some(f) = check(t)? {
            return Err(format!(
                "{}: the filesystem checker already finds faults, so vmie-fixup will not write to it (repair it first, e.g. e2fsck -f on the guest): {f}",
                t.name
            ));
        }
    }
    Ok(())
}

/// Step 2: after the commit, every target must still be clean; otherwise
/// the commit is rolled back through its journals and the run refused.
pub(crate) fn after(targets: &[Target], images: &[&Path]) -> Result<(), String> {
    let mut bad = Vec::new();
    for t in targets {
        if let Some(f) = check(t)? {
            bad.push(format!("{}: {f}", t.name));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    for image in images {
        vmie_disk::journal::undo(image, &Default::default()).map_err(|e| {
            format!(
                "--check-fs found faults after the commit ({}), and rolling back {} failed: {e}; run vmie-fixup undo {}",
                bad.join(" | "),
                image.display(),
                image.display()
            )
        })?;
    }
    Err(format!(
        "the change left faults the filesystem checker reports, so it was rolled back (the image is as it was): {}",
        bad.join(" | ")
    ))
}
