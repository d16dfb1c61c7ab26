//! `vmie-fixup copy-in` and `vmie-fixup write`: put one file into a guest
//! filesystem, through the overlay, the self-check and the undo journal.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Context};
use vmie_guestfs::{resolve, FileType, FsError, NewAttrs};
use vmie_inspect::{OpenOptions, Vm};

use crate::{classify, refused, split_target, Failure};

/// Create or replace `guest_path` on the volume `target` with `data`.
pub(crate) fn put(
    target: &str,
    guest_path: &str,
    data: &[u8],
    dry_run: bool,
) -> Result<(), Failure> {
    let (image, sel) = split_target(target);
    let opts = OpenOptions {
        writable: !dry_run,
        ..OpenOptions::default()
    };
    let vm = Vm::open(std::slice::from_ref(&image), &opts).map_err(|e| classify(e.into()))?;
    let vol = vm.select(0, &sel).map_err(|e| classify(e.into()))?;
    let mut fs = vm.open_fs(vol).map_err(|e| classify(e.into()))?;
    let p = resolve(fs.as_ref(), guest_path.as_bytes(), true).map_err(|e| classify(e.into()))?;
    let existing = match fs.symlink_metadata(&p) {
        Ok(m) if m.file_type == FileType::Regular => Some(m.size),
        Ok(m) => {
            return Err(refused(anyhow!(
                "{}: {p} exists and is not a regular file ({:?})",
                vol.name,
                m.file_type
            )));
        }
        Err(FsError::NotFound { .. }) => None,
        Err(e) => return Err(classify(e.into())),
    };
    let what = match existing {
        Some(old) => {
            fs.replace_file(&p, data).map_err(|e| classify(e.into()))?;
            format!("replace {p} ({old} -> {} bytes)", data.len())
        }
        None => {
            fs.create_file(&p, data, &NewAttrs::default())
                .map_err(|e| classify(e.into()))?;
            format!("create {p} ({} bytes, mode 0644, root:root)", data.len())
        }
    };
    // Self-check: an independent, freshly opened reader over the same overlay.
    let fresh = vm.open_fs(vol).map_err(|e| classify(e.into()))?;
    let back = fresh
        .read_file(&p, u64::MAX)
        .map_err(|e| refused(anyhow!("self-check: {e}; nothing written")))?;
    if back != data {
        return Err(refused(anyhow!(
            "self-check: {p} reads back differently; nothing written"
        )));
    }
    let changed = vm.disks().disks()[0].overlay().pending_bytes();
    if dry_run {
        outln!("{}: would {what}; {changed} bytes of the image would change (dry run: nothing written)", vol.name);
        return Ok(());
    }
    let report = vm
        .disks()
        .commit(&Default::default())
        .map_err(|e| classify(e.into()))?;
    let journal = report
        .images
        .first()
        .map(|i| i.journal.display().to_string())
        .unwrap_or_else(|| "none (nothing changed)".into());
    outln!("{}: {what}; undo journal {journal}", vol.name);
    Ok(())
}

/// `copy-in IMAGE[:VOL] LOCALFILE GUESTPATH`.
pub(crate) fn copy_in(
    target: &str,
    local: &Path,
    guest_path: &str,
    dry_run: bool,
) -> Result<(), Failure> {
    let data = std::fs::read(local)
        .with_context(|| format!("reading {}", local.display()))
        .map_err(|e| Failure { code: 3, error: e })?;
    put(target, guest_path, &data, dry_run)
}

/// `write IMAGE[:VOL] GUESTPATH` with the contents on standard input.
pub(crate) fn write_stdin(target: &str, guest_path: &str, dry_run: bool) -> Result<(), Failure> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("reading standard input")
        .map_err(|e| Failure { code: 3, error: e })?;
    put(target, guest_path, &data, dry_run)
}
