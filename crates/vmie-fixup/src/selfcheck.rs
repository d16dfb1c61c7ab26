//! The self-check: every changed path re-read through freshly opened
//! filesystems over the same overlay, before anything is committed.

use vmie_guestfs::{FsError, GuestFs, GuestPath};
use vmie_inspect::{LinuxGuest, Vm};
use vmie_rules::engine::{FileChange, FileOpDone};

/// Reads every changed path (and backup) back through freshly opened
/// filesystems over the same overlays, independent of the writer's
/// in-memory state, and compares; `Err` says which path differs. [`plan`]
/// runs it before a plan can be committed; it only reads.
///
/// [`plan`]: crate::plan
pub fn self_check(vm: &Vm, writer: &LinuxGuest, changes: &[FileChange]) -> Result<(), String> {
    // The writer's root volume, by name: no need to reopen and re-test every
    // filesystem as linux_roots() would.
    let root = vm
        .volumes()
        .find(|r| r.name == writer.root)
        .ok_or_else(|| format!("self-check: root {} no longer found", writer.root))?;
    let fresh = vm
        .mount_guest(root)
        .map_err(|e| format!("self-check: reopening {}: {e}", writer.root))?
        .mounts;
    compare(&fresh, &writer.mounts, changes)
}

/// [`self_check`] for a Windows guest: the system volume `root` (by name)
/// and its system partitions opened afresh, compared with the writer's `fs`; every changed hive also
/// parsed again from the fresh read.
pub fn self_check_windows(
    vm: &Vm,
    root: &str,
    writer: &dyn GuestFs,
    changes: &[FileChange],
) -> Result<(), String> {
    let (fresh, _) = crate::windows_mounts(vm, root)
        .map_err(|e| format!("self-check: reopening {root} and its system partitions: {e}"))?;
    compare(&fresh, writer, changes)?;
    for c in changes.iter().filter(|c| !c.registry.is_empty()) {
        let bytes = fresh
            .read_file(&GuestPath::from(c.path.as_str()), u64::MAX)
            .map_err(|e| format!("self-check: {}: {e}", c.path))?;
        let opts = vmie_hive::HiveOptions {
            name: c.path.clone(),
            ..vmie_hive::HiveOptions::default()
        };
        vmie_hive::Hive::from_bytes(bytes, &opts).map_err(|e| {
            format!(
                "self-check failed: {} does not parse as a hive: {e}; nothing was written to the image",
                c.path
            )
        })?;
    }
    Ok(())
}

/// Every changed path (and backup) of `changes` read through `fresh` and
/// `writer`, compared.
fn compare(
    fresh: &dyn GuestFs,
    writer: &dyn GuestFs,
    changes: &[FileChange],
) -> Result<(), String> {
    let mut paths: Vec<(String, bool)> = Vec::new();
    for c in changes {
        match &c.op {
            FileOpDone::Removed => paths.push((c.path.clone(), false)),
            FileOpDone::Renamed { to } => {
                paths.push((c.path.clone(), false));
                paths.push((to.clone(), true));
            }
            FileOpDone::Modified | FileOpDone::Created => paths.push((c.path.clone(), true)),
        }
        if let Some(b) = &c.backup {
            paths.push((b.clone(), true));
        }
    }
    for (p, must_exist) in paths {
        let gp = GuestPath::from(p.as_str());
        let theirs = fresh.read_file(&gp, u64::MAX);
        match (must_exist, theirs) {
            (true, Ok(t)) => {
                let ours = writer
                    .read_file(&gp, u64::MAX)
                    .map_err(|e| format!("self-check: {p}: {e}"))?;
                if ours != t {
                    return Err(format!("self-check failed: {p} reads back differently from what was written; nothing was written to the image"));
                }
            }
            (false, Err(FsError::NotFound { .. })) => {}
            (true, Err(e)) => {
                return Err(format!(
                    "self-check failed: {p}: {e}; nothing was written to the image"
                ))
            }
            (false, Ok(_)) => {
                return Err(format!(
                    "self-check failed: {p} should be gone; nothing was written to the image"
                ))
            }
            (false, Err(e)) => return Err(format!("self-check failed: {p}: {e}")),
        }
    }
    Ok(())
}
