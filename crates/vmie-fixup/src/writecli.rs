//! `vmie-fixup copy-in` and `vmie-fixup write`: put one file into the guest
//! (its whole tree, or one volume with `IMAGE:VOL`), through the overlay,
//! the self-check and the undo journal.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::guesttree::{open_tree, parse_target, put_files, Put};
use crate::human::quiet;
use crate::Failure;

/// Create or replace `guest_path` in the tree `target` names with `data`.
pub(crate) fn put(
    target: &str,
    disks: &[PathBuf],
    guest_path: &str,
    data: Vec<u8>,
    dry_run: bool,
) -> Result<(), Failure> {
    let t = parse_target(target, disks)?;
    let mut tree = open_tree(&t, !dry_run)?;
    let puts = [Put {
        path: guest_path.to_string(),
        data,
        backup: false,
    }];
    let (lines, journals) = put_files(&mut tree, &puts, dry_run)?;
    if !quiet() {
        for l in lines {
            outln!("{l}");
        }
        if !journals.is_empty() {
            outln!("undo journal: {}", journals.join(", "));
        }
    }
    Ok(())
}

/// `copy-in IMAGE[:VOL] LOCALFILE GUESTPATH`.
pub(crate) fn copy_in(
    target: &str,
    disks: &[PathBuf],
    local: &Path,
    guest_path: &str,
    dry_run: bool,
) -> Result<(), Failure> {
    let data = std::fs::read(local)
        .with_context(|| format!("reading {}", local.display()))
        .map_err(|e| Failure {
            code: if local.exists() { 3 } else { 2 },
            error: e,
        })?;
    put(target, disks, guest_path, data, dry_run)
}

/// `write IMAGE[:VOL] GUESTPATH` with the contents on standard input.
pub(crate) fn write_stdin(
    target: &str,
    disks: &[PathBuf],
    guest_path: &str,
    dry_run: bool,
) -> Result<(), Failure> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("reading standard input")
        .map_err(|e| Failure { code: 3, error: e })?;
    put(target, disks, guest_path, data, dry_run)
}
