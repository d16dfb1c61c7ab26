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
    /// Size of the volume in bytes.
    pub size: u64,
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
        if !c.is_empty() && !disk.in_place() {
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
        // A PV's bytes are checked through its logical volumes, a LUKS
        // volume's through its payload, an md member's through its array.
        if vol.is_extended()
            || vol
                .probe
                .as_ref()
                .is_some_and(|p| matches!(p.kind, FsKind::Lvm2 | FsKind::Luks | FsKind::LinuxRaid))
        {
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
        // The checkers read the image's bytes, which are ciphertext in a
        // LUKS payload; a linear md array is in pieces on its members (a
        // RAID1 array is checked on its first member: every mirror holds
        // the same bytes).
        use vmie_inspect::stack::StackId;
        let stacked = |v: &vmie_inspect::Volume| match &v.stack {
            Some(StackId::Luks { .. }) => Some("inside a LUKS volume"),
            Some(StackId::Md { level, .. }) if level != "raid1" => {
                Some("a linear md array, in pieces on its members")
            }
            _ => None,
        };
        let why = stacked(vol).or_else(|| {
            vol.lv.as_ref().and_then(|l| {
                l.pvs.iter().find_map(|pv| {
                    vm.volumes()
                        .find(|x| &x.name == pv)
                        .and_then(stacked)
                        .map(|_| "a logical volume on an encrypted or linear md volume")
                })
            })
        });
        if let Some(why) = why {
            return Err(format!(
                "--check-fs: {} is {why}, and the filesystem checkers read the image's bytes in place; run without --check-fs, or check it from a host where the volume can be opened",
                vol.name
            ));
        }
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
            size: vol.size,
            kind: probe.kind,
        });
    }
    Ok(out)
}

/// Runs the checker of `t`'s filesystem read-only on the image as it is on
/// disk. `Ok(None)` when clean, `Ok(Some(findings))` when not.
pub(crate) fn check(t: &Target) -> Result<Option<String>, String> {
    // e2fsck reads at an offset; the other checkers read a file or device
    // from its start, so they get a sparse copy of the volume's bytes.
    let mut copy = None;
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
        FsKind::Xfs => {
            let f = volume_copy(t)?;
            let a = vec!["-n".into(), "-f".into(), f.path().display().to_string()];
            copy = Some(f);
            ("xfs_repair", a)
        }
        FsKind::Vfat => {
            let f = volume_copy(t)?;
            let a = vec!["-n".into(), f.path().display().to_string()];
            copy = Some(f);
            ("fsck.fat", a)
        }
        FsKind::Ntfs => {
            let f = volume_copy(t)?;
            let a = vec!["-n".into(), f.path().display().to_string()];
            copy = Some(f);
            ("ntfsfix", a)
        }
        other => {
            return Err(format!(
                "--check-fs: {}: no checker is wired for {} volumes",
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
    drop(copy);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    // e2fsck: 0 clean; 4 errors left uncorrected (-n); 8 operational error.
    // xfs_repair -n and fsck.fat -n: 0 clean, 1 faults found. ntfsfix -n
    // can exit 0 when it would change something, so its words count too.
    let clean = out.status.success() && !(t.kind == FsKind::Ntfs && ntfsfix_would_change(&text));
    if clean {
        return Ok(None);
    }
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

/// Whether `ntfsfix -n`'s output says it would repair something: a clean
/// volume ends with "was processed successfully" and has no step that
/// "FAILED".
fn ntfsfix_would_change(text: &str) -> bool {
    !text.contains("processed successfully")
        || text.lines().any(|l| l.trim_end().ends_with("FAILED"))
}

/// Size of the chunks [`volume_copy`] moves.
const COPY_CHUNK: usize = 1 << 20;

/// A sparse copy of `t`'s bytes in a temporary file, for checkers that
/// cannot read a volume at an offset. Only the image's data extents are
/// read (`SEEK_DATA`/`SEEK_HOLE`), and all-zero chunks stay holes, so a
/// mostly empty volume copies in a fraction of its size.
fn volume_copy(t: &Target) -> Result<tempfile::NamedTempFile, String> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    let err =
        |what: &str, e: &dyn std::fmt::Display| format!("--check-fs: {}: {what}: {e}", t.name);
    let src = std::fs::File::open(&t.image).map_err(|e| err("opening the image", &e))?;
    let mut dst = tempfile::Builder::new()
        .prefix("vmie-fixup-check-")
        .tempfile()
        .map_err(|e| err("creating a temporary copy of the volume", &e))?;
    dst.as_file()
        .set_len(t.size)
        .map_err(|e| err("sizing the temporary copy", &e))?;
    let end = t.offset.saturating_add(t.size);
    let mut pos = t.offset;
    let mut buf = vec![0u8; COPY_CHUNK];
    while pos < end {
        // The next data extent at or after pos; none left: the rest is holes.
        let data = match rustix::fs::seek(&src, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: read everything.
            Err(_) => pos,
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(&src, rustix::fs::SeekFrom::Hole(data))
            .unwrap_or(end)
            .min(end);
        let mut at = data;
        while at < hole {
            let n = usize::try_from(hole - at)
                .unwrap_or(COPY_CHUNK)
                .min(COPY_CHUNK);
            let b = &mut buf[..n];
            src.read_exact_at(b, at)
                .map_err(|e| err(&format!("reading the image at byte {at}"), &e))?;
            if b.iter().any(|&x| x != 0) {
                let f = dst.as_file_mut();
                f.seek(SeekFrom::Start(at - t.offset))
                    .and_then(|_| f.write_all(b))
                    .map_err(|e| err("writing the temporary copy", &e))?;
            }
            at += n as u64;
        }
        pos = hole.max(data.saturating_add(1));
    }
    Ok(dst)
}

/// The checker's path: `PATH`, then the sbin directories a user's `PATH`
/// often lacks.
fn find(prog: &str) -> Result<std::path::PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let package = match prog {
        "xfs_repair" => "xfsprogs",
        "fsck.fat" => "dosfstools",
        "ntfsfix" => "ntfs-3g",
        _ => "e2fsprogs",
    };
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(std::path::PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("--check-fs needs {prog}, which is not installed (Debian: apt-get install {package})")
        })
}

/// Step 1: refuse when any target is not clean before the run writes.
pub(crate) fn before(targets: &[Target]) -> Result<(), String> {
    for t in targets {
        if let Some(f) = check(t)? {
            return Err(format!(
                "{}: the filesystem checker already finds faults, so vmie-fixup will not write to it (repair it first, with the guest's own checker: e2fsck -f, xfs_repair, chkdsk, fsck.fat): {f}",
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
