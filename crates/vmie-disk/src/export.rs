//! Raw copies of a VM's disks: `vmie-fixup --output FILE` for images that
//! cannot be written in place (streamOptimized VMDK, OVA, qcow2, VHDX,
//! dynamic VHD). Each disk's guest bytes are read through its image reader
//! and written to a new sparse raw file; the fixup then runs on the copies.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{DiskError, DiskSet};

/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

/// What [`write_raw_copies`] wrote for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCopy {
    /// The new raw image.
    pub path: PathBuf,
    /// Its size (the disk's virtual size).
    pub size: u64,
    /// Bytes written (the chunks that are not all zero); the rest is a
    /// hole.
    pub written: u64,
}

fn io(path: &Path, op: &str, source: std::io::Error) -> DiskError {
    DiskError::Io {
        device: path.display().to_string(),
        op: op.to_string(),
        source,
    }
}

/// Write every disk of `set` (boot disk first) as a raw image to the
/// matching path of `outputs`, sparse (chunks of zeros are left as holes).
/// `progress(done, total)` is called after each chunk. Refused before
/// anything is created: a count that is not one output per disk, an output
/// that already exists (never overwritten), two outputs naming one file or
/// an output that is one of the inputs. On an error every file this call
/// created is removed again.
pub fn write_raw_copies(
    set: &DiskSet,
    outputs: &[PathBuf],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<RawCopy>, DiskError> {
    let disks = set.disks();
    if outputs.len() != disks.len() {
        return Err(DiskError::NotAnImage {
            path: outputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            why: format!(
                "the VM has {} disk(s) ({}); give one --output per disk, boot disk first",
                disks.len(),
                disks
                    .iter()
                    .map(|d| match d.member() {
                        Some(m) => format!("{} member {m}", d.path().display()),
                        None => d.path().display().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    for (i, out) in outputs.iter().enumerate() {
        if out.exists() {
            return Err(DiskError::NotAnImage {
                path: out.display().to_string(),
                why:
                    "already exists; --output never overwrites a file (remove it, or name another)"
                        .into(),
            });
        }
        if outputs[..i].contains(out) {
            return Err(DiskError::NotAnImage {
                path: out.display().to_string(),
                why: "given twice as --output".into(),
            });
        }
    }
    let total: u64 = disks.iter().map(|d| d.len()).sum();
    let mut created: Vec<PathBuf> = Vec::new();
    let mut done = 0u64;
    let mut copies = Vec::new();
    let res = (|| -> Result<(), DiskError> {
        for (d, out) in disks.iter().zip(outputs) {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .map_err(|e| io(out, "create", e))?;
            created.push(out.clone());
            let dev = d.device();
            let size = dev.len();
            f.set_len(size).map_err(|e| io(out, "set length", e))?;
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0u64;
            let mut written = 0u64;
            while at < size {
                let n = usize::try_from((size - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                let chunk = &mut buf[..n];
                dev.read_at(at, chunk)?;
                if chunk.iter().any(|b| *b != 0) {
                    std::os::unix::fs::FileExt::write_all_at(&f, chunk, at)
                        .map_err(|e| io(out, &format!("write at byte {at}"), e))?;
                    written += n as u64;
                }
                at += n as u64;
                done += n as u64;
                progress(done, total);
            }
            f.flush().map_err(|e| io(out, "flush", e))?;
            f.sync_all().map_err(|e| io(out, "sync", e))?;
            copies.push(RawCopy {
                path: out.clone(),
                size,
                written,
            });
        }
        Ok(())
    })();
    if let Err(e) = res {
        for p in &created {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(copies)
}
