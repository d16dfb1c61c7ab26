//! Open the disks of a VM and find every volume on them.
//!
//! [`Vm::open`] opens the images (refusing containers and half-written
//! images), reads each partition table, and probes every partition, or the
//! whole disk when there is no table. [`Vm::open_fs`] gives the guest file API
//! of a volume whose filesystem we can read (ext2/3/4 read and written,
//! NTFS read); [`Vm::linux_guest`] and [`Vm::windows_guest`] inspect guests.
#![forbid(unsafe_code)]

mod guest;
pub mod preflight;
mod windows;

pub use guest::{LinuxGuest, MountedTree};
pub use windows::WindowsGuest;

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use vmie_disk::{Device, DiskError, DiskSet};
use vmie_guestfs::{FsError, GuestFs};
use vmie_part::{PartOptions, TableKind};
use vmie_probe::{FsKind, Probe, ProbeOptions};

/// Errors of volume discovery.
#[derive(Debug, Error)]
pub enum InspectError {
    /// Disk layer.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Partition table.
    #[error(transparent)]
    Part(#[from] vmie_part::PartError),
    /// Guest filesystem.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A volume selector that matches nothing, or more than one volume.
    #[error("{0}")]
    Select(String),
}

impl InspectError {
    /// Whether the error is a refusal of the input (exit code 1) rather than
    /// an I/O or internal failure (exit code 3).
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Disk(e) | Self::Fs(FsError::Disk(e)) => e.is_refusal(),
            _ => true,
        }
    }
}

/// Options for opening a VM.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Open the images for writing (a later commit); nothing is written by opening.
    pub writable: bool,
    /// Partition table limits.
    pub part: PartOptions,
    /// Probe limits.
    pub probe: ProbeOptions,
}

/// One volume: a partition, or a whole disk without a partition table.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Index of the disk in the VM (0 = boot disk).
    pub disk: usize,
    /// Partition number as Linux numbers it; `None` for a whole disk.
    pub number: Option<u32>,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type (MBR `0x83`, or the GPT type GUID); `None` for a whole disk.
    pub type_id: Option<String>,
    /// Human name of the partition type.
    pub type_name: Option<&'static str>,
    /// Boot flag (MBR) or legacy-BIOS-bootable attribute (GPT).
    pub bootable: bool,
    /// GPT partition name (PARTLABEL).
    pub part_label: Option<String>,
    /// PARTUUID.
    pub part_uuid: Option<String>,
    /// What is on it, if anything we recognise.
    pub probe: Option<Probe>,
    /// Why probing failed, if it did (I/O error on a damaged image).
    pub probe_error: Option<String>,
    /// `image partition N` or `image`, for messages.
    pub name: String,
    /// The volume's bytes, through the disk's overlay.
    pub device: Arc<dyn Device>,
    /// An MBR extended-partition container (as vmie-part says).
    extended: bool,
}

impl Volume {
    /// Whether this is an MBR extended-partition container.
    pub fn is_extended(&self) -> bool {
        self.extended
    }
}

/// One disk and what is on it.
#[derive(Debug, Clone)]
pub struct DiskLayout {
    /// Image path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Partition table kind.
    pub table: TableKind,
    /// MBR disk signature or GPT disk GUID.
    pub disk_id: Option<String>,
    /// Oddities found while reading the table (backup GPT used, hybrid MBR, ...).
    pub warnings: Vec<String>,
    /// Volumes, in partition-number order (a whole-disk volume when no table).
    pub volumes: Vec<Volume>,
}

/// The disks of a VM with their volumes.
#[derive(Debug)]
pub struct Vm {
    disks: DiskSet,
    layouts: Vec<DiskLayout>,
}

/// Which volume of a disk: by partition number, by filesystem UUID, or the
/// only readable filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSelector {
    /// Partition number as Linux numbers it.
    Number(u32),
    /// Filesystem UUID (case-insensitive).
    Uuid(String),
    /// The one volume with a filesystem we can read.
    Auto,
}

impl VolumeSelector {
    /// `N` is a number, anything else a UUID, empty is [`VolumeSelector::Auto`].
    pub fn parse(s: &str) -> Self {
        if s.is_empty() {
            Self::Auto
        } else if let Ok(n) = s.parse() {
            Self::Number(n)
        } else {
            Self::Uuid(s.to_string())
        }
    }
}

/// Whether we can read files on this kind of filesystem.
pub fn readable(kind: FsKind) -> bool {
    matches!(
        kind,
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs | FsKind::Xfs
    )
}

/// One line per volume of a disk, for messages that ask the user to choose:
/// `1 (ext4 "rootfs"), 2 (extended), 5 (swap), 6 (ext4)`.
pub fn describe_choices(layout: &DiskLayout) -> String {
    let items: Vec<String> = layout
        .volumes
        .iter()
        .map(|v| {
            let what = if v.is_extended() {
                "extended".to_string()
            } else {
                match &v.probe {
                    Some(p) => match &p.label {
                        Some(l) if !l.is_empty() => format!("{} \"{l}\"", p.kind.as_str()),
                        _ => p.kind.as_str().to_string(),
                    },
                    None => "nothing recognised".to_string(),
                }
            };
            match v.number {
                Some(n) => format!("{n} ({what})"),
                None => format!("the whole disk ({what})"),
            }
        })
        .collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Refuses the same image named twice (by path or through another name of
/// the same file): it would be read as two disks of the VM.
fn refuse_duplicates(paths: &[PathBuf]) -> Result<(), InspectError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<((u64, u64), &PathBuf)> = Vec::new();
    for p in paths {
        let Ok(m) = std::fs::metadata(p) else {
            continue; // DiskSet::open names a missing file
        };
        let id = (m.dev(), m.ino());
        if let Some((_, first)) = seen.iter().find(|(x, _)| *x == id) {
            return Err(InspectError::Select(format!(
                "{} and {} are the same image file; give each disk of the VM once",
                first.display(),
                p.display()
            )));
        }
        seen.push((id, p));
    }
    Ok(())
}

impl Vm {
    /// Open the images of a VM (boot disk first) and find their volumes.
    pub fn open(paths: &[PathBuf], opts: &OpenOptions) -> Result<Self, InspectError> {
        refuse_duplicates(paths)?;
        let disks = DiskSet::open(paths, opts.writable)?;
        let mut layouts = Vec::with_capacity(paths.len());
        for (index, disk) in disks.disks().iter().enumerate() {
            let dev = disk.device();
            let table = vmie_part::read_partitions(dev.clone(), &opts.part)?;
            let mut volumes = Vec::new();
            let probe = |d: &dyn Device| match vmie_probe::probe(d, &opts.probe) {
                Ok(p) => (p, None),
                Err(e) => (None, Some(e.to_string())),
            };
            if table.kind == TableKind::None {
                let (p, err) = probe(dev.as_ref());
                volumes.push(Volume {
                    disk: index,
                    number: None,
                    start: 0,
                    size: dev.len(),
                    type_id: None,
                    type_name: None,
                    bootable: false,
                    part_label: None,
                    part_uuid: None,
                    probe: p,
                    probe_error: err,
                    name: dev.describe(),
                    device: dev.clone(),
                    extended: false,
                });
            }
            for part in table.partitions {
                let mut v = Volume {
                    disk: index,
                    number: Some(part.number),
                    start: part.start,
                    size: part.size,
                    type_id: Some(part.type_id.clone()),
                    type_name: part.type_name,
                    bootable: part.bootable,
                    part_label: part.name.clone(),
                    part_uuid: part.uuid.clone(),
                    probe: None,
                    probe_error: None,
                    name: part.device.describe(),
                    extended: part.is_extended(),
                    device: Arc::new(part.device),
                };
                if !v.is_extended() {
                    let (p, err) = probe(v.device.as_ref());
                    v.probe = p;
                    v.probe_error = err;
                }
                volumes.push(v);
            }
            layouts.push(DiskLayout {
                path: disk.path().to_path_buf(),
                size: dev.len(),
                table: table.kind,
                disk_id: table.disk_id,
                warnings: table.warnings,
                volumes,
            });
        }
        Ok(Self { disks, layouts })
    }

    /// The disks (for commit).
    pub fn disks(&self) -> &DiskSet {
        &self.disks
    }

    /// Every disk's layout, boot disk first.
    pub fn layouts(&self) -> &[DiskLayout] {
        &self.layouts
    }

    /// Every volume of every disk.
    pub fn volumes(&self) -> impl Iterator<Item = &Volume> {
        self.layouts.iter().flat_map(|l| l.volumes.iter())
    }

    /// Find a volume on disk `disk` by selector.
    pub fn select(&self, disk: usize, sel: &VolumeSelector) -> Result<&Volume, InspectError> {
        let layout = self
            .layouts
            .get(disk)
            .ok_or_else(|| InspectError::Select(format!("no disk number {disk}")))?;
        let path = layout.path.display();
        let readable_vols: Vec<&Volume> = layout
            .volumes
            .iter()
            .filter(|v| v.probe.as_ref().is_some_and(|p| readable(p.kind)))
            .collect();
        match sel {
            VolumeSelector::Number(n) => layout
                .volumes
                .iter()
                .find(|v| v.number == Some(*n))
                .ok_or_else(|| {
                    InspectError::Select(format!(
                        "{path}: no partition {n}; its volumes: {}",
                        describe_choices(layout)
                    ))
                }),
            VolumeSelector::Uuid(u) => layout
                .volumes
                .iter()
                .find(|v| v.probe.as_ref().and_then(|p| p.uuid.as_deref()).is_some_and(|x| x.eq_ignore_ascii_case(u)))
                .ok_or_else(|| InspectError::Select(format!("{path}: no volume with filesystem UUID {u}; its volumes: {}", describe_choices(layout)))),
            VolumeSelector::Auto => match readable_vols.as_slice() {
                [one] => Ok(one),
                [] => Err(InspectError::Select(format!("{path}: no volume with a filesystem vmie-fixup can read; its volumes: {}", describe_choices(layout)))),
                many => Err(InspectError::Select(format!(
                    "{path}: {} volumes have readable filesystems; name one as {path}:N (partition {}) or {path}:UUID",
                    many.len(),
                    many.iter().filter_map(|v| v.number).map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
                ))),
            },
        }
    }

    /// The guest file API of `vol`.
    pub fn open_fs(&self, vol: &Volume) -> Result<Box<dyn GuestFs>, InspectError> {
        if vol.is_extended() {
            let logicals: Vec<String> = self
                .layouts
                .get(vol.disk)
                .map(|l| {
                    l.volumes
                        .iter()
                        .filter_map(|v| v.number)
                        .filter(|n| *n >= 5)
                        .map(|n| n.to_string())
                        .collect()
                })
                .unwrap_or_default();
            return Err(InspectError::Select(format!(
                "{} is an extended partition: a container of logical partitions ({}), with no files of its own; name one of those",
                vol.name,
                if logicals.is_empty() { "none".to_string() } else { logicals.join(", ") }
            )));
        }
        let Some(probe) = &vol.probe else {
            return Err(InspectError::Select(format!(
                "{}: no filesystem recognised{}",
                vol.name,
                vol.probe_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        };
        match probe.kind {
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Ok(Box::new(vmie_ext4::Ext4Fs::open(
                vol.device.clone(),
                vol.name.clone(),
            )?)),
            FsKind::Ntfs => Ok(Box::new(vmie_ntfs::NtfsFs::open(
                vol.device.clone(),
                vol.name.clone(),
            )?)),
            FsKind::Xfs => Ok(Box::new(vmie_xfs::XfsFs::open(
                vol.device.clone(),
                vol.name.clone(),
            )?)),
            FsKind::Swap => Err(InspectError::Select(format!(
                "{} is a swap area: it holds no files",
                vol.name
            ))),
            FsKind::XfsExternalLog => Err(InspectError::Select(format!(
                "{} is an XFS external log: it holds no files (its filesystem is on another volume)",
                vol.name
            ))),
            FsKind::Lvm2 | FsKind::Luks | FsKind::Bitlocker | FsKind::LinuxRaid => Err(InspectError::Fs(FsError::Unsupported {
                fs: vol.name.clone(),
                op: "read files".into(),
                why: format!(
                    "it is a {} container; vmie-fixup does not open those yet",
                    other_name(probe.kind)
                ),
            })),
            other => Err(InspectError::Fs(FsError::Unsupported {
                fs: vol.name.clone(),
                op: "read files".into(),
                why: format!(
                    "vmie-fixup cannot read {} filesystems yet",
                    other_name(other)
                ),
            })),
        }
    }
}

/// The name people use for a kind of volume.
fn other_name(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Xfs => "XFS",
        FsKind::Btrfs => "Btrfs",
        FsKind::Vfat => "FAT",
        FsKind::Lvm2 => "LVM2 physical volume",
        FsKind::Luks => "LUKS encrypted",
        FsKind::Bitlocker => "BitLocker encrypted",
        FsKind::Iso9660 => "ISO 9660",
        FsKind::LinuxRaid => "Linux software RAID member",
        other => other.as_str(),
    }
}
