//! The images that make up one VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::journal::{self, CommitOptions, CommitReport};
use crate::{format, Device, DiskError, FileDevice, Overlay};

/// One disk of a VM: the raw image and the overlay every run writes through.
#[derive(Debug, Clone)]
pub struct Disk {
    path: PathBuf,
    file: Arc<FileDevice>,
    overlay: Arc<Overlay>,
}

impl Disk {
    /// Path of the image as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The overlay: read and write the disk through this.
    pub fn device(&self) -> Arc<dyn Device> {
        self.overlay.clone()
    }

    /// The overlay itself (for commit and change listing).
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// The image file underneath the overlay.
    pub fn file(&self) -> &Arc<FileDevice> {
        &self.file
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// Whether the image has no bytes.
    pub fn is_empty(&self) -> bool {
        self.file.len() == 0
    }
}

/// The disks of one VM, in the order given; the first is the boot disk.
#[derive(Debug, Clone)]
pub struct DiskSet {
    disks: Vec<Disk>,
}

impl DiskSet {
    /// Open `paths` as raw images. `writable` opens them for a later commit;
    /// nothing is written before [`DiskSet::commit`].
    ///
    /// Refused: container formats (qcow2, VMDK, VHD, VHDX, VDI), and images
    /// that an interrupted run left half-written (their undo journal is still
    /// in the prepared state: run `vmie-fixup undo` first).
    pub fn open(paths: &[PathBuf], writable: bool) -> Result<Self, DiskError> {
        let mut disks = Vec::with_capacity(paths.len());
        for path in paths {
            let file = Arc::new(if writable {
                FileDevice::open_rw(path)?
            } else {
                FileDevice::open(path)?
            });
            format::ensure_raw(file.as_ref())?;
            if let Some(j) = journal::interrupted_journal(path)? {
                return Err(DiskError::journal(
                    path.display().to_string(),
                    format!(
                        "an earlier run was interrupted while writing this image (journal {}); \
                         run `vmie-fixup undo {}` to restore it first",
                        j.display(),
                        path.display()
                    ),
                ));
            }
            let overlay = Arc::new(Overlay::new(file.clone()));
            disks.push(Disk {
                path: path.clone(),
                file,
                overlay,
            });
        }
        Ok(Self { disks })
    }

    /// (bytes, calls) read from all images so far.
    pub fn read_stats(&self) -> (u64, u64) {
        self.disks.iter().fold((0, 0), |(b, n), d| {
            let (b2, n2) = d.file().read_stats();
            (b + b2, n + n2)
        })
    }

    /// The disks, boot disk first.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// Whether any disk has pending changes.
    pub fn is_dirty(&self) -> bool {
        self.disks.iter().any(|d| d.overlay.is_dirty())
    }

    /// Write every pending change to the images through the undo journal
    /// (see [`journal::commit`]). A dry run simply never calls this.
    pub fn commit(&self, opts: &CommitOptions) -> Result<CommitReport, DiskError> {
        let targets: Vec<journal::Target<'_>> = self
            .disks
            .iter()
            .map(|d| journal::Target {
                path: &d.path,
                file: d.file.as_ref(),
                overlay: d.overlay.as_ref(),
            })
            .collect();
        journal::commit(&targets, opts)
    }
}
