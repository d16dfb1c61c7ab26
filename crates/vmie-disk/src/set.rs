//! The images that make up one VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::ContainerFormat;
use crate::journal::{self, CommitOptions, CommitReport};
use crate::{format, image, Device, DiskError, FileDevice, Overlay};

/// One disk of a VM: the image file, the device that reads it (the file
/// itself for a raw image, a [`crate::image`] reader for a container) and
/// the overlay every run writes through.
#[derive(Debug, Clone)]
pub struct Disk {
    path: PathBuf,
    file: Arc<FileDevice>,
    container: Option<ContainerFormat>,
    /// The member's name, for a disk of an OVA.
    member: Option<String>,
    /// A container whose guest bytes are the file's bytes at the same
    /// offsets (a fixed VHD): written in place like a raw image.
    in_place: bool,
    overlay: Arc<Overlay>,
}

impl Disk {
    /// Path of the image as given (the OVA's, for a disk of an OVA: see
    /// [`Disk::member`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For a disk of an OVA, its member's name in the archive.
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }

    /// The overlay: read and write the disk through this.
    pub fn device(&self) -> Arc<dyn Device> {
        self.overlay.clone()
    }

    /// The overlay itself (for commit and change listing).
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// The image file: the disk's bytes for a raw image, the container
    /// file for a qcow2, VMDK, VHD or VHDX image (see [`Disk::container`]),
    /// the member's window onto the archive for a disk of an OVA.
    pub fn file(&self) -> &Arc<FileDevice> {
        &self.file
    }

    /// Whether the disk is written in place although it is a container: a
    /// fixed VHD, whose guest bytes are the file's first bytes (the footer
    /// after them is never written).
    pub fn in_place(&self) -> bool {
        self.container.is_none() || self.in_place
    }

    /// The container format when the image is not raw (it is then open
    /// read-only, through a [`crate::image`] reader): for a disk of an OVA,
    /// the member's format, or [`ContainerFormat::Ova`] for a raw member.
    pub fn container(&self) -> Option<ContainerFormat> {
        self.container
    }

    /// Size of the disk in bytes (the virtual size of a container).
    pub fn len(&self) -> u64 {
        self.overlay.len()
    }

    /// Whether the disk has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The disks of one VM, in the order given; the first is the boot disk.
#[derive(Debug, Clone)]
pub struct DiskSet {
    disks: Vec<Disk>,
}

impl DiskSet {
    /// Open `paths`. `writable` opens them for a later commit
    /// and takes each image's writers' lock (see [`journal::lock_image`]) for
    /// as long as the set lives; nothing is written before
    /// [`DiskSet::commit`] except the removal of a temporary journal that a
    /// killed run left beside an image (it never changed the image).
    ///
    /// Read only, a qcow2, VMDK, VHD or VHDX image opens through its reader
    /// ([`crate::image::open_image`]), its overlay on top, so dry runs stage
    /// their writes in memory as on a raw image. An OVA opens as the disks
    /// its OVF lists, in its boot order (see [`crate::image::open_ova`]),
    /// each read in place from the archive.
    ///
    /// A fixed VHD opens for writing too: its guest bytes are the file's
    /// first bytes at the same offsets, so the overlay commits to the file
    /// and the journal undoes it as on a raw image; its footer, after the
    /// guest bytes, is never written.
    ///
    /// Refused: for writing, every other container format and OVAs, with the
    /// conversion command, before any lock or journal is touched; VDI always;
    /// for writing, an image another run holds the lock of; and images with a journal that
    /// is not complete: a run or an undo was interrupted (its journal is
    /// `PREPARED` or `UNDOING`: run `vmie-fixup undo` first), or, when read
    /// only, another run is writing the image right now.
    pub fn open(paths: &[PathBuf], writable: bool) -> Result<Self, DiskError> {
        let mut disks = Vec::with_capacity(paths.len());
        for path in paths {
            let file = Arc::new(if writable {
                FileDevice::open_rw(path)?
            } else {
                FileDevice::open(path)?
            });
            let container = format::detect_container(file.as_ref())?;
            let in_place =
                container == Some(ContainerFormat::Vhd) && image::vhd::is_fixed(file.as_ref())?;
            if writable && !in_place {
                format::ensure_raw(file.as_ref())?;
                journal::lock_image(file.file(), path)?;
            }
            if container == Some(ContainerFormat::Ova) {
                if let Some(p) = journal::pending_journal(path)? {
                    return Err(pending_error(path, &p, writable));
                }
                for member in image::open_ova(file.as_ref(), &image::ImageLimits::default())? {
                    let m = Arc::new(member.file);
                    let fmt = format::detect_container(m.as_ref())?;
                    let base: Arc<dyn Device> = match fmt {
                        None => m.clone(),
                        Some(fmt) => image::open_image(m.clone(), fmt)?,
                    };
                    disks.push(Disk {
                        path: path.clone(),
                        file: m,
                        container: Some(fmt.unwrap_or(ContainerFormat::Ova)),
                        member: Some(member.name),
                        in_place: false,
                        overlay: Arc::new(Overlay::new(base)),
                    });
                }
                continue;
            }
            let base: Arc<dyn Device> = match container {
                None => file.clone(),
                Some(fmt) => image::open_image(file.clone(), fmt)?,
            };
            if writable {
                journal::remove_stale_temp_journal(path, None)?;
            }
            if let Some(p) = journal::pending_journal(path)? {
                return Err(pending_error(path, &p, writable));
            }
            let overlay = Arc::new(Overlay::new(base));
            disks.push(Disk {
                path: path.clone(),
                file,
                container,
                member: None,
                in_place,
                overlay,
            });
        }
        Ok(Self { disks })
    }

    /// (bytes, calls) read from all images so far (with their extent and
    /// backing files; an OVA's disks counted once).
    pub fn read_stats(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for (i, d) in self.disks.iter().enumerate() {
            if self.disks[..i]
                .iter()
                .any(|e| e.file.shares_read_stats(&d.file))
            {
                continue;
            }
            let (b, n) = d.file().read_stats();
            total = (total.0 + b, total.1 + n);
        }
        total
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
    ///
    /// Refused, before the journal is touched, when a disk is a container
    /// other than a fixed VHD (such a set was opened read-only: the journal
    /// records and restores raw bytes of the image file, which a
    /// container's guest bytes are not).
    pub fn commit(&self, opts: &CommitOptions) -> Result<CommitReport, DiskError> {
        if let Some(d) = self.disks.iter().find(|d| d.member.is_some()) {
            return Err(image::ova::refusal(
                &crate::FileDevice::open(&d.path)?,
                "vmie-fixup reads it, but writes raw disk images (and fixed VHDs) only",
            ));
        }
        if let Some(d) = self.disks.iter().find(|d| !d.in_place()) {
            return Err(format::ensure_raw(d.file.as_ref())
                .err()
                .unwrap_or_else(|| DiskError::ReadOnly {
                    device: d.path.display().to_string(),
                }));
        }
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

/// Why an image with a journal that is not complete cannot be used, and what
/// to do about it.
fn pending_error(path: &Path, p: &journal::Pending, writable: bool) -> DiskError {
    let image = path.display();
    let j = p.journal.display();
    // A writer holds the lock itself, so the journal's run is gone; a reader
    // may be looking at a run in progress.
    if !writable && journal::locked_by_other(path) {
        return DiskError::Journal {
            path: image.to_string(),
            why: format!(
                "image is in use by another vmie-fixup run, which is writing or undoing it \
                 (journal {j}); try again when that run has finished"
            ),
        };
    }
    let why = match p.kind {
        journal::PendingKind::Prepared => format!(
            "an earlier run was interrupted while writing this image (journal {j}); \
             run `vmie-fixup undo {image}` to restore it first"
        ),
        journal::PendingKind::Undoing => format!(
            "an undo of this image was interrupted and the image is partly restored \
             (journal {j} is marked UNDOING); run `vmie-fixup undo {image}` to finish \
             restoring it first"
        ),
        journal::PendingKind::Unreadable => format!(
            "undo journal {j} beside this image cannot be read or is in no known state, \
             so whether the image is whole is unknown; run `vmie-fixup undo {image}` to \
             check and apply it"
        ),
    };
    DiskError::Journal {
        path: image.to_string(),
        why,
    }
}
