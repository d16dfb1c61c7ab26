//! Read-only block devices over virtual-disk containers: qcow2 (v2 and v3),
//! VMDK (monolithicSparse, streamOptimized, and text descriptors with flat,
//! sparse and zero extents), VHD (fixed, dynamic and differencing) and
//! VHDX (fixed and dynamic).
//!
//! Every reader maps a guest offset to "zeros" or "these bytes of the file"
//! (or "this compressed cluster"), reading the image's tables through the
//! image's own [`FileDevice`] so [`FileDevice::read_stats`] counts them
//! (extent and backing files count in the top image's statistics).
//!
//! The image is hostile input: every size, offset and count from it is
//! checked with checked arithmetic against the file's length and against
//! [`ImageLimits`] before anything is allocated or read, and every refusal
//! names the file, the structure and its offset. No table is followed more
//! than once per lookup, so a lookup is at most: top-level table entry,
//! second-level table, data. The one chain followed is an image's parent
//! (qcow2's backing file, a VMDK delta disk's parentFileNameHint, a
//! differencing VHD's parent locators): an unallocated cluster, grain or
//! sector reads from the image below. Its length is
//! capped by [`ImageLimits::max_chain`], a file met twice is a loop, and
//! only regular files are followed, their format recognised by content and
//! checked against what the child declares, and their identity (a VMDK's
//! CID, a VHD's unique id) against what the child recorded (see
//! `open_backing`). A VMDK
//! descriptor's extents are regular files named relative to it, each
//! checked against its file (see [`VmdkDescriptorDevice`]).
//!
//! Writing is refused ([`DiskError::ReadOnly`] naming the format): runs stage
//! their writes in the [`crate::Overlay`] on top, and committing needs a raw
//! image (see [`crate::DiskSet::open`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::format::ContainerFormat;
use crate::{Device, DiskError, FileDevice};

pub(crate) mod ova;
mod qcow2;
pub(crate) mod vhd;
mod vhdx;
mod vmdk;
mod vmdk_desc;

pub use ova::{open_ova, OvaDisk};
pub use qcow2::Qcow2Device;
pub use vhd::VhdDevice;
pub use vhdx::VhdxDevice;
pub use vmdk::VmdkDevice;
pub use vmdk_desc::VmdkDescriptorDevice;

/// Caps on what an image header may make us allocate or cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest top-level table (qcow2 L1, VMDK grain directory, VHD and
    /// VHDX BAT) read at open, in bytes. It is also capped by the file's
    /// length.
    pub max_table_bytes: u64,
    /// Bytes of second-level tables (qcow2 L2, VMDK grain tables) kept cached.
    pub cache_bytes: u64,
    /// Largest cluster or grain, in bytes (a compressed one is inflated into
    /// a buffer of this size).
    pub max_cluster_bytes: u64,
    /// Most images in one chain of backing files (qcow2 backing files,
    /// VMDK and VHD parents), the top image included.
    pub max_chain: usize,
    /// Most extents one VMDK descriptor may list, and most disks one OVF
    /// may list.
    pub max_extents: usize,
    /// Largest text descriptor (a VMDK descriptor, embedded or in its own
    /// file; an OVA's OVF), in bytes.
    pub max_descriptor_bytes: u64,
    /// Most members (tar headers) of an OVA read while looking for its
    /// OVF and disks.
    pub max_archive_members: usize,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_table_bytes: 64 << 20,
            cache_bytes: 16 << 20,
            max_cluster_bytes: 2 << 20,
            max_chain: 16,
            max_extents: 1024,
            max_descriptor_bytes: 1 << 20,
            max_archive_members: 10_000,
        }
    }
}

/// Open `file`, a container of format `fmt`, as a read-only device with the
/// default [`ImageLimits`]. VDI is refused with the conversion command.
pub fn open_image(
    file: Arc<FileDevice>,
    fmt: ContainerFormat,
) -> Result<Arc<dyn Device>, DiskError> {
    open_image_with(file, fmt, &ImageLimits::default())
}

/// [`open_image`] with explicit limits.
pub fn open_image_with(
    file: Arc<FileDevice>,
    fmt: ContainerFormat,
    limits: &ImageLimits,
) -> Result<Arc<dyn Device>, DiskError> {
    open_in_chain(file, fmt, limits, &mut Chain::default())
}

/// The images a chain of backing files has opened so far, top first, by
/// (device, inode): a file met twice is a loop, and the chain's length is
/// capped by [`ImageLimits::max_chain`].
#[derive(Debug, Default)]
pub(crate) struct Chain {
    seen: Vec<(u64, u64)>,
}

impl Chain {
    /// Add `file` to the chain, refusing a loop or a chain too long.
    pub(crate) fn enter(
        &mut self,
        file: &FileDevice,
        limits: &ImageLimits,
    ) -> Result<(), DiskError> {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .file()
            .metadata()
            .map_err(|e| DiskError::io(file.describe(), "stat", e))?;
        let id = (meta.dev(), meta.ino());
        if self.seen.contains(&id) {
            return Err(bad(
                file,
                "backing file chain",
                0,
                "this image is already in its own chain of backing files (a loop)",
            ));
        }
        if self.seen.len() >= limits.max_chain {
            return Err(bad(
                file,
                "backing file chain",
                0,
                format!("the chain is longer than {} images", limits.max_chain),
            ));
        }
        self.seen.push(id);
        Ok(())
    }
}

/// [`open_image_with`] for one link of a chain.
pub(crate) fn open_in_chain(
    file: Arc<FileDevice>,
    fmt: ContainerFormat,
    limits: &ImageLimits,
    chain: &mut Chain,
) -> Result<Arc<dyn Device>, DiskError> {
    chain.enter(file.as_ref(), limits)?;
    Ok(match fmt {
        ContainerFormat::Qcow => Arc::new(Qcow2Device::open_chain(file, limits, chain)?),
        ContainerFormat::Vmdk => vmdk::open_chain(file, limits, chain)?,
        ContainerFormat::Vhd => Arc::new(VhdDevice::open_chain(file, limits, chain)?),
        ContainerFormat::Vhdx => Arc::new(VhdxDevice::open(file, limits)?),
        ContainerFormat::Vdi => {
            return Err(crate::format::conversion_refusal(
                file.as_ref(),
                fmt,
                "vmie-fixup does not read this format",
            ))
        }
        ContainerFormat::Ova => {
            return Err(crate::format::conversion_refusal(
                file.as_ref(),
                fmt,
                "it holds a whole VM, not one disk; it is opened as the VM's disks \
                 (vmie_disk::DiskSet::open), never as a disk, a backing file or a member",
            ))
        }
    })
}

/// A check of a parent's identity before it is read: `Err(why)` refuses it.
pub(crate) type ParentCheck<'a> = dyn Fn(&FileDevice) -> Result<(), String> + 'a;

/// A parent image opened for a child: the name the child gives it, and
/// the device.
pub(crate) type Parent = (String, Arc<dyn Device>);

/// Open the backing file `name` of `child` (found in `what` at `offset`),
/// as qemu resolves it: a relative name is relative to the directory of
/// `child`. Only a regular file is followed (never a device, a protocol such
/// as `nbd:` or a `json:` description). Its format is recognised by content;
/// when the child declares one (`declared`, qemu's name: `raw`, `qcow2`,
/// `vmdk`, `vpc`), the two must agree, so a file declared raw is never read
/// as a container and a container never as raw. `check`, when given, must
/// accept the opened file before it is read as an image (a parent's
/// identity: a VMDK's CID, a VHD's unique id). The file's reads count in
/// the child's statistics. A member of an archive has no directory to
/// resolve a name in: its backing file is refused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_backing(
    child: &FileDevice,
    what: &str,
    offset: u64,
    name: &str,
    declared: Option<&str>,
    check: Option<&ParentCheck<'_>>,
    limits: &ImageLimits,
    chain: &mut Chain,
) -> Result<Arc<dyn Device>, DiskError> {
    let refuse = |why: String| bad(child, what, offset, format!("backing file {name:?}: {why}"));
    if child.member_name().is_some() {
        return Err(refuse(
            "a disk inside an archive cannot name a file beside it; extract the archive first"
                .into(),
        ));
    }
    let protocol = name
        .split_once(':')
        .is_some_and(|(head, _)| !head.is_empty() && !head.contains('/'));
    if name.is_empty() || name.contains('\0') || protocol {
        return Err(refuse(
            "only a plain file name is followed (no protocol, no json: description)".into(),
        ));
    }
    let path = std::path::Path::new(name);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        child
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(path)
    };
    let meta = std::fs::metadata(&path).map_err(|e| refuse(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    let file = Arc::new(FileDevice::open_counted_with(&path, child)?);
    let content = crate::format::detect_container(file.as_ref())?;
    if let Some(d) = declared {
        let agrees = match (d, content) {
            ("raw", None) => true,
            (d, Some(fmt)) => d == fmt.qemu_name(),
            _ => false,
        };
        if !agrees {
            return Err(refuse(format!(
                "declared as {d}, but its content is {}",
                content.map_or("raw", |f| f.qemu_name())
            )));
        }
    }
    if let Some(check) = check {
        check(file.as_ref()).map_err(refuse)?;
    }
    match content {
        None => {
            chain.enter(file.as_ref(), limits)?;
            Ok(file)
        }
        Some(fmt) => open_in_chain(file, fmt, limits, chain),
    }
}

/// Read `out` from `below` (an image's parent) at `pos`: past its end (a
/// parent may be shorter than its child), zeros.
pub(crate) fn read_below(below: &dyn Device, pos: u64, out: &mut [u8]) -> Result<(), DiskError> {
    let have = below.len().saturating_sub(pos).min(out.len() as u64);
    let k = usize::try_from(have).unwrap_or(0);
    if k > 0 {
        below.read_at(pos, &mut out[..k])?;
    }
    out[k..].fill(0);
    Ok(())
}

/// A refusal naming the file, the structure and its offset.
pub(crate) fn bad(
    file: &FileDevice,
    what: &str,
    offset: u64,
    why: impl std::fmt::Display,
) -> DiskError {
    DiskError::NotAnImage {
        path: file.describe(),
        why: format!("{what} at offset {offset}: {why}"),
    }
}

/// A refusal of a feature we do not read, with the conversion advice.
pub(crate) fn unsupported(
    file: &FileDevice,
    fmt: ContainerFormat,
    why: impl std::fmt::Display,
) -> DiskError {
    crate::format::conversion_refusal(file, fmt, &why.to_string())
}

/// Read `len` bytes of `file` at `offset`, refusing (naming `what`) a range
/// outside the file before allocating.
pub(crate) fn read_table(
    file: &FileDevice,
    what: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, DiskError> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= file.len() => {}
        _ => {
            return Err(bad(
                file,
                what,
                offset,
                format!(
                    "{len} bytes reach past the end of the file ({} bytes)",
                    file.len()
                ),
            ))
        }
    }
    let n = usize::try_from(len)
        .map_err(|_| bad(file, what, offset, format!("{len} bytes is too large")))?;
    let mut buf = vec![0u8; n];
    file.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Read `buf.len()` bytes of `file` at `offset` for guest data, refusing
/// (naming `what`) a range outside the file.
pub(crate) fn read_data(
    file: &FileDevice,
    what: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), DiskError> {
    match offset.checked_add(buf.len() as u64) {
        Some(end) if end <= file.len() => file.read_at(offset, buf),
        _ => Err(bad(
            file,
            what,
            offset,
            format!(
                "{} bytes of data reach past the end of the file ({} bytes)",
                buf.len(),
                file.len()
            ),
        )),
    }
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// A bounded cache of second-level tables (and of inflated clusters), keyed
/// by their index. When full it is simply emptied: lookups are local, so the
/// working set refills quickly, and memory stays capped.
#[derive(Debug)]
pub(crate) struct TableCache<T> {
    map: Mutex<HashMap<u64, Arc<T>>>,
    cap: usize,
}

impl<T> TableCache<T> {
    /// A cache of at most `cap` (at least 1) entries.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// The entry for `key`, loading it with `load` when absent.
    pub(crate) fn get(
        &self,
        key: u64,
        name: &dyn Fn() -> String,
        load: impl FnOnce() -> Result<T, DiskError>,
    ) -> Result<Arc<T>, DiskError> {
        let poisoned = || DiskError::Poisoned { device: name() };
        if let Some(t) = self.map.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(t.clone());
        }
        let t = Arc::new(load()?);
        let mut map = self.map.lock().map_err(|_| poisoned())?;
        if map.len() >= self.cap {
            map.clear();
        }
        map.insert(key, t.clone());
        Ok(t)
    }
}

/// Inflate `input` (zlib when `zlib`, else raw deflate) into `out`, which
/// must receive at least `need` bytes (the rest, if the stream ends early,
/// stays as it was); fewer bytes or a damaged stream is a refusal naming
/// `what` at `offset`.
pub(crate) fn inflate(
    file: &FileDevice,
    what: &str,
    offset: u64,
    input: &[u8],
    zlib: bool,
    out: &mut [u8],
    need: usize,
) -> Result<(), DiskError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(zlib);
    loop {
        let before = (d.total_in(), d.total_out());
        let consumed = usize::try_from(d.total_in())
            .unwrap_or(usize::MAX)
            .min(input.len());
        let produced = usize::try_from(d.total_out())
            .unwrap_or(usize::MAX)
            .min(out.len());
        if produced >= out.len() {
            break;
        }
        let status = d
            .decompress(
                &input[consumed..],
                &mut out[produced..],
                FlushDecompress::Finish,
            )
            .map_err(|e| {
                bad(
                    file,
                    what,
                    offset,
                    format!("compressed data is damaged: {e}"),
                )
            })?;
        if status == Status::StreamEnd || (d.total_in(), d.total_out()) == before {
            break;
        }
    }
    let produced = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
    if produced < need {
        return Err(bad(
            file,
            what,
            offset,
            format!("compressed data inflates to {produced} bytes, not {need}"),
        ));
    }
    Ok(())
}
