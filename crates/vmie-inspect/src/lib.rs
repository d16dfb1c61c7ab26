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
pub mod stack;
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
    /// LVM metadata limits.
    pub lvm: vmie_lvm::LvmOptions,
    /// Keys for LUKS volumes (`--key`); a volume no key is for stays closed.
    pub keys: Vec<stack::KeySpec>,
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
    /// The logical volume this is, when it is one (`number` is `None`,
    /// `disk` is the disk of its first extent).
    pub lv: Option<LvId>,
    /// What this volume is stacked on, when it is a container's payload
    /// (a LUKS volume opened with a key; `number` is `None`, `start` is
    /// where its bytes begin on `disk`).
    pub stack: Option<stack::StackId>,
}

/// Which logical volume a [`Volume`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvId {
    /// Volume group name.
    pub vg: String,
    /// Logical volume name.
    pub lv: String,
    /// VG UUID (two VGs of one name are told apart by it).
    pub vg_uuid: String,
    /// LV UUID.
    pub lv_uuid: String,
    /// Segment types (`linear`, `striped`).
    pub seg_types: Vec<String>,
    /// Names of the volumes holding its PVs.
    pub pvs: Vec<String>,
    /// Disks (indexes) holding its PVs, without repeats.
    pub pv_disks: Vec<usize>,
    /// Where its bytes lie: (disk, byte offset on the disk, length) per
    /// stripe area, segments in LV order.
    pub disk_ranges: Vec<(usize, u64, u64)>,
    /// Whether the LV is one run of bytes on one disk in LV order (every
    /// segment one stripe, each following the last), so a tool that takes
    /// a disk offset can read it in place.
    pub contiguous: bool,
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
    /// Image path (the archive's, for a disk of an OVA).
    pub path: PathBuf,
    /// For a disk of an OVA, its member's name in the archive.
    pub member: Option<String>,
    /// The image format as qemu-img names it (`raw`, `qcow2`, `vmdk`,
    /// `vpc`, `vhdx`).
    pub format: &'static str,
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
    stack: stack::StackView,
    lvm: LvmView,
}

/// LVM on a VM: what the scan found, the logical volumes opened as
/// [`Volume`]s, and why the others were not.
#[derive(Debug, Default)]
pub struct LvmView {
    /// PVs, VGs (with their metadata and missing PVs), damaged metadata.
    pub scan: vmie_lvm::Scan,
    /// Names of the volumes the scan looked at, by its device index.
    pub pv_volumes: Vec<String>,
    /// Every visible LV that could be mapped, probed like a partition.
    pub volumes: Vec<Volume>,
    /// (VG, LV, why) for every visible LV that is not opened.
    pub refused: Vec<(String, String, String)>,
}

/// Which volume of a disk: by partition number, by filesystem UUID, or the
/// only readable filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSelector {
    /// Partition number as Linux numbers it.
    Number(u32),
    /// Filesystem UUID (case-insensitive).
    Uuid(String),
    /// A logical volume, `VG/LV`.
    Lv {
        /// Volume group name.
        vg: String,
        /// Logical volume name.
        lv: String,
    },
    /// The one volume with a filesystem we can read.
    Auto,
}

impl VolumeSelector {
    /// `N` is a number, `VG/LV` a logical volume, anything else a UUID,
    /// empty is [`VolumeSelector::Auto`].
    pub fn parse(s: &str) -> Self {
        if s.is_empty() {
            Self::Auto
        } else if let Some((vg, lv)) = s.split_once('/') {
            Self::Lv {
                vg: vg.to_string(),
                lv: lv.to_string(),
            }
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
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs | FsKind::Xfs | FsKind::Vfat
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
                    lv: None,
                    stack: None,
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
                    lv: None,
                    stack: None,
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
                member: disk.member().map(str::to_string),
                format: match disk.container() {
                    None | Some(vmie_disk::format::ContainerFormat::Ova) => "raw",
                    Some(f) => f.qemu_name(),
                },
                size: dev.len(),
                table: table.kind,
                disk_id: table.disk_id,
                warnings: table.warnings,
                volumes,
            });
        }
        let parts: Vec<&Volume> = layouts
            .iter()
            .flat_map(|l| l.volumes.iter())
            .filter(|v| !v.is_extended())
            .collect();
        let stack = stack::open_stacked(&parts, opts);
        let lvm = open_lvm(
            &parts
                .iter()
                .copied()
                .chain(stack.volumes.iter())
                .collect::<Vec<_>>(),
            opts,
        );
        Ok(Self {
            disks,
            layouts,
            stack,
            lvm,
        })
    }

    /// LVM on this VM.
    pub fn lvm(&self) -> &LvmView {
        &self.lvm
    }

    /// The disks (for commit).
    pub fn disks(&self) -> &DiskSet {
        &self.disks
    }

    /// Every disk's layout, boot disk first.
    pub fn layouts(&self) -> &[DiskLayout] {
        &self.layouts
    }

    /// Every volume of every disk, then every opened container payload,
    /// then every logical volume.
    pub fn volumes(&self) -> impl Iterator<Item = &Volume> {
        self.layouts
            .iter()
            .flat_map(|l| l.volumes.iter())
            .chain(self.stack.volumes.iter())
            .chain(self.lvm.volumes.iter())
    }

    /// Opened LUKS payloads, and the LUKS volumes left closed (with why).
    pub fn stacked(&self) -> &stack::StackView {
        &self.stack
    }

    /// Find a volume on disk `disk` by selector.
    pub fn select(&self, disk: usize, sel: &VolumeSelector) -> Result<&Volume, InspectError> {
        let layout = self
            .layouts
            .get(disk)
            .ok_or_else(|| InspectError::Select(format!("no disk number {disk}")))?;
        let path = layout.path.display();
        // A disk's own volumes, its opened payloads, and the LVs with an
        // extent on it.
        let readable_vols: Vec<&Volume> = layout
            .volumes
            .iter()
            .chain(self.stack.volumes.iter().filter(|v| v.disk == disk))
            .chain(self.lvm.volumes.iter().filter(|v| v.disk == disk))
            .filter(|v| v.probe.as_ref().is_some_and(|p| readable(p.kind)))
            .collect();
        match sel {
            VolumeSelector::Lv { vg, lv } => self.select_lv(vg, lv),
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
                .chain(self.stack.volumes.iter().filter(|v| v.disk == disk))
                .chain(self.lvm.volumes.iter().filter(|v| v.disk == disk))
                .find(|v| v.probe.as_ref().and_then(|p| p.uuid.as_deref()).is_some_and(|x| x.eq_ignore_ascii_case(u)))
                .ok_or_else(|| InspectError::Select(format!("{path}: no volume with filesystem UUID {u}; its volumes: {}", describe_choices(layout)))),
            VolumeSelector::Auto => match readable_vols.as_slice() {
                [one] => Ok(one),
                [] => Err(InspectError::Select(format!("{path}: no volume with a filesystem vmie-fixup can read; its volumes: {}", describe_choices(layout)))),
                many => Err(InspectError::Select(format!(
                    "{path}: {} volumes have readable filesystems; name one as {path}:N (partition {}), {path}:VG/LV or {path}:UUID",
                    many.len(),
                    many.iter().map(|v| match (&v.lv, v.number) {
                        (Some(l), _) => format!("{}/{}", l.vg, l.lv),
                        (None, Some(n)) => n.to_string(),
                        (None, None) => "whole disk".into(),
                    }).collect::<Vec<_>>().join(", ")
                ))),
            },
        }
    }

    /// The logical volume `vg/lv`.
    fn select_lv(&self, vg: &str, lv: &str) -> Result<&Volume, InspectError> {
        let found: Vec<&Volume> = self
            .lvm
            .volumes
            .iter()
            .filter(|v| v.lv.as_ref().is_some_and(|l| l.vg == vg && l.lv == lv))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => {
                if let Some((_, _, why)) =
                    self.lvm.refused.iter().find(|(g, l, _)| g == vg && l == lv)
                {
                    return Err(InspectError::Select(format!(
                        "logical volume {vg}/{lv} is not opened: {why}"
                    )));
                }
                let known: Vec<String> = self
                    .lvm
                    .volumes
                    .iter()
                    .filter_map(|v| v.lv.as_ref())
                    .map(|l| format!("{}/{}", l.vg, l.lv))
                    .chain(self.lvm.refused.iter().map(|(g, l, _)| format!("{g}/{l} (not opened)")))
                    .collect();
                Err(InspectError::Select(format!(
                    "no logical volume {vg}/{lv} on this VM; its logical volumes: {}",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )))
            }
            many => Err(InspectError::Select(format!(
                "{} volume groups are named {vg} (UUIDs {}); name the volume by its filesystem UUID instead",
                many.len(),
                many.iter()
                    .filter_map(|v| v.lv.as_ref().map(|l| l.vg_uuid.clone()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
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
            FsKind::Vfat => Ok(Box::new(vmie_fat::FatFs::open(
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
            FsKind::Lvm2 => Err(InspectError::Select(format!(
                "{} is an LVM2 physical volume: it holds logical volumes, not files; name one as IMAGE:VG/LV ({})",
                vol.name,
                {
                    let lvs: Vec<String> = self
                        .lvm
                        .volumes
                        .iter()
                        .filter_map(|v| v.lv.as_ref())
                        .filter(|l| l.pvs.contains(&vol.name))
                        .map(|l| format!("{}/{}", l.vg, l.lv))
                        .collect();
                    if lvs.is_empty() { "none opened".to_string() } else { lvs.join(", ") }
                }
            ))),
            FsKind::Luks => Err(InspectError::Fs(FsError::Unsupported {
                fs: vol.name.clone(),
                op: "read files".into(),
                why: match self.stack.volumes.iter().find(|s| {
                    matches!(&s.stack, Some(stack::StackId::Luks { of, .. }) if of == &vol.name)
                }) {
                    Some(p) => format!(
                        "it is a LUKS encrypted container; its files are on its opened payload, {} (select it by its filesystem UUID)",
                        p.name
                    ),
                    None => self
                        .stack
                        .locked
                        .iter()
                        .find(|(n, _)| n == &vol.name)
                        .map_or_else(|| "it is LUKS encrypted".to_string(), |(_, w)| w.clone()),
                },
            })),
            FsKind::LinuxRaid => Err(InspectError::Fs(FsError::Unsupported {
                fs: vol.name.clone(),
                op: "read files".into(),
                why: match self.stack.volumes.iter().find(|s| {
                    matches!(&s.stack, Some(stack::StackId::Md { members, .. }) if members.contains(&vol.name))
                }) {
                    Some(a) => format!(
                        "it is a member of the md array {}; its files are on the array (select it by its filesystem UUID)",
                        a.name
                    ),
                    None => "it is a Linux software RAID member whose array is not opened (see inspect)".to_string(),
                },
            })),
            FsKind::Bitlocker => Err(InspectError::Fs(FsError::Unsupported {
                fs: vol.name.clone(),
                op: "read files".into(),
                why: "it is a BitLocker encrypted volume; vmie-fixup does not open those".to_string(),
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

/// Scan every volume for LVM physical volumes, assemble the volume groups,
/// and open each visible logical volume that can be mapped, probing it
/// like a partition.
fn open_lvm(vols: &[&Volume], opts: &OpenOptions) -> LvmView {
    let devs: Vec<Arc<dyn Device>> = vols.iter().map(|v| v.device.clone()).collect();
    let scan = vmie_lvm::scan(&devs, &opts.lvm);
    let mut view = LvmView {
        pv_volumes: vols.iter().map(|v| v.name.clone()).collect(),
        ..LvmView::default()
    };
    for vg in &scan.vgs {
        for lv in vg.visible_lvs() {
            let dev = match vg.open(lv, &devs) {
                Ok(d) => d,
                Err(e) => {
                    let why = match e {
                        vmie_lvm::LvmError::Refused { why, .. } => why,
                        other => other.to_string(),
                    };
                    view.refused
                        .push((vg.meta.name.clone(), lv.name.clone(), why));
                    continue;
                }
            };
            let pv_idx: Vec<usize> = lv
                .segments
                .iter()
                .flat_map(|s| &s.stripes)
                .filter_map(|(key, _)| {
                    let i = vg.meta.pvs.iter().position(|p| &p.key == key)?;
                    vg.pv_devices.get(i).copied().flatten()
                })
                .collect();
            let mut pvs: Vec<String> = Vec::new();
            let mut pv_disks: Vec<usize> = Vec::new();
            for &i in &pv_idx {
                if let Some(v) = vols.get(i) {
                    if !pvs.contains(&v.name) {
                        pvs.push(v.name.clone());
                    }
                    if !pv_disks.contains(&v.disk) {
                        pv_disks.push(v.disk);
                    }
                }
            }
            let ext = vg.meta.extent_size;
            let mut disk_ranges = Vec::new();
            let mut contiguous = true;
            for seg in &lv.segments {
                let n = seg.stripes.len() as u64;
                if n != 1 {
                    contiguous = false;
                }
                let per = seg.extent_count / n.max(1);
                for (key, first) in &seg.stripes {
                    let Some(pi) = vg.meta.pvs.iter().position(|p| &p.key == key) else {
                        continue;
                    };
                    let Some(v) = vg
                        .pv_devices
                        .get(pi)
                        .copied()
                        .flatten()
                        .and_then(|d| vols.get(d))
                    else {
                        continue;
                    };
                    let at = first
                        .saturating_mul(ext)
                        .saturating_add(vg.meta.pvs[pi].pe_start)
                        .saturating_add(v.start);
                    disk_ranges.push((v.disk, at, per.saturating_mul(ext)));
                }
            }
            if contiguous {
                contiguous = disk_ranges
                    .windows(2)
                    .all(|w| w[0].0 == w[1].0 && w[0].1.saturating_add(w[0].2) == w[1].1);
            }
            let disk = pv_idx
                .first()
                .and_then(|&i| vols.get(i))
                .map_or(0, |v| v.disk);
            let (probe, probe_error) = match vmie_probe::probe(&dev, &opts.probe) {
                Ok(p) => (p, None),
                Err(e) => (None, Some(e.to_string())),
            };
            view.volumes.push(Volume {
                disk,
                number: None,
                start: 0,
                size: dev.len(),
                type_id: None,
                type_name: Some("LVM logical volume"),
                bootable: false,
                part_label: None,
                part_uuid: None,
                probe,
                probe_error,
                name: dev.describe(),
                device: Arc::new(dev),
                extended: false,
                lv: Some(LvId {
                    vg: vg.meta.name.clone(),
                    lv: lv.name.clone(),
                    vg_uuid: vg.meta.uuid.clone(),
                    lv_uuid: lv.uuid.clone(),
                    seg_types: lv.seg_types(),
                    pvs,
                    pv_disks,
                    disk_ranges,
                    contiguous,
                }),
                stack: None,
            });
        }
    }
    view.scan = scan;
    view
}
