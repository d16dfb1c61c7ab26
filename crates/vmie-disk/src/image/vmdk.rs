//! VMDK hosted sparse extents (VMware's "Virtual Disk Format 5.0"):
//! monolithicSparse and streamOptimized. A grain directory points to grain
//! tables, whose entries point to grains (compressed, behind a marker, in a
//! streamOptimized image). A delta (snapshot) extent reads its unallocated
//! grains from its parent. Text descriptors are read by
//! [`super::VmdkDescriptorDevice`]; ESXi COWD extents are refused.

use std::sync::{Arc, Mutex};

use super::vmdk_desc::{self, Descriptor, VmdkDescriptorDevice};
use super::{
    bad, inflate, le16, le32, le64, read_below, read_data, read_table, unsupported, Chain,
    ImageLimits, TableCache,
};
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Vmdk;
const GD_AT_END: u64 = u64::MAX;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const MARKER_FOOTER: u32 = 3;

/// A VMDK sparse extent, read-only.
#[derive(Debug)]
pub struct VmdkDevice {
    file: Arc<FileDevice>,
    create_type: String,
    size: u64,
    grain_bytes: u64,
    gtes_per_gt: u64,
    gd: Vec<u32>,
    gd_offset: u64,
    compressed: bool,
    gt_cache: TableCache<Vec<u32>>,
    /// The last inflated grain: (grain number, bytes).
    last_grain: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// A delta extent's parent, and where this extent starts in it:
    /// unallocated grains read from there.
    parent: Option<(Arc<dyn Device>, u64)>,
    /// The parent's name, as the delta disk gives it.
    parent_name: Option<String>,
}

/// Refuse a single-file sparse image whose embedded descriptor lists more
/// than its own extent (its data would live in other files).
fn one_extent(f: &FileDevice, d: &Descriptor) -> Result<(), DiskError> {
    if d.extents.len() > 1 {
        return Err(unsupported(
            f,
            FMT,
            format!(
                "its embedded descriptor lists {} extents (one expected)",
                d.extents.len()
            ),
        ));
    }
    Ok(())
}

/// Open `file`, a VMDK (a sparse extent or a text descriptor), as one link
/// of a chain: a delta disk's parent is followed (see
/// `vmdk_desc::open_parent`).
pub(crate) fn open_chain(
    file: Arc<FileDevice>,
    limits: &ImageLimits,
    chain: &mut Chain,
) -> Result<Arc<dyn Device>, DiskError> {
    let mut magic = [0u8; 21];
    let n = usize::try_from(file.len().min(21)).unwrap_or(0);
    file.read_at(0, &mut magic[..n])?;
    if magic.starts_with(vmdk_desc::MAGIC) {
        return Ok(Arc::new(VmdkDescriptorDevice::open(file, limits, chain)?));
    }
    let (mut dev, desc) = VmdkDevice::open_sparse(file, limits)?;
    if let Some(d) = desc {
        let f = dev.file.clone();
        one_extent(f.as_ref(), &d)?;
        if let Some((name, p)) =
            vmdk_desc::open_parent(f.as_ref(), "VMDK embedded descriptor", &d, limits, chain)?
        {
            dev.set_parent(p, 0);
            dev.parent_name = Some(name);
        }
    }
    Ok(Arc::new(dev))
}

struct Header {
    flags: u32,
    capacity: u64,
    grain: u64,
    desc_offset: u64,
    desc_size: u64,
    gtes: u32,
    gd_offset: u64,
    compress: u16,
}

fn header(f: &FileDevice, what: &str, at: u64) -> Result<Header, DiskError> {
    let h = read_table(f, what, at, 512)?;
    if h.get(..4) != Some(b"KDMV".as_slice()) {
        return Err(bad(f, what, at, "no KDMV magic"));
    }
    let version = le32(&h, 4);
    if !(1..=3).contains(&version) {
        return Err(unsupported(
            f,
            FMT,
            format!("sparse extent version {version} is not read (only 1 to 3)"),
        ));
    }
    Ok(Header {
        flags: le32(&h, 8),
        capacity: le64(&h, 12),
        grain: le64(&h, 20),
        desc_offset: le64(&h, 28),
        desc_size: le64(&h, 36),
        gtes: le32(&h, 44),
        gd_offset: le64(&h, 56),
        compress: le16(&h, 77),
    })
}

impl VmdkDevice {
    /// Parse the sparse header (and, for a streamOptimized image whose
    /// grain directory is at the end, the footer), the embedded descriptor
    /// and the grain directory of `file`, a single sparse extent. A delta
    /// extent (its descriptor names a parent) is refused here: open it
    /// through [`super::open_image`], which follows the parent.
    pub fn open(file: Arc<FileDevice>, limits: &ImageLimits) -> Result<Self, DiskError> {
        let (dev, desc) = Self::open_sparse(file, limits)?;
        if let Some(d) = &desc {
            one_extent(dev.file.as_ref(), d)?;
        }
        if let Some(d) = desc.filter(|d| d.parent_cid.is_some()) {
            return Err(unsupported(
                dev.file.as_ref(),
                FMT,
                format!(
                    "it is a delta (snapshot) extent of parent {:?}, opened on its own",
                    d.parent_hint.unwrap_or_default()
                ),
            ));
        }
        Ok(dev)
    }

    /// Read unallocated grains from `parent`, where this extent starts at
    /// `at`.
    pub(crate) fn set_parent(&mut self, parent: Arc<dyn Device>, at: u64) {
        self.parent = Some((parent, at));
    }

    /// [`VmdkDevice::open`], also giving the embedded descriptor (its
    /// parent is not followed).
    pub(crate) fn open_sparse(
        file: Arc<FileDevice>,
        limits: &ImageLimits,
    ) -> Result<(Self, Option<Descriptor>), DiskError> {
        let f = file.as_ref();
        let mut magic = [0u8; 21];
        let n = usize::try_from(f.len().min(21)).unwrap_or(0);
        f.read_at(0, &mut magic[..n])?;
        if magic.starts_with(vmdk_desc::MAGIC) {
            return Err(unsupported(
                f,
                FMT,
                "it is a text descriptor where a sparse extent was expected",
            ));
        }
        if magic.starts_with(b"COWD") {
            return Err(unsupported(
                f,
                FMT,
                "it is an ESXi COWD (vmfsSparse) extent",
            ));
        }
        let mut h = header(f, "VMDK sparse header", 0)?;
        if h.gd_offset == GD_AT_END {
            // streamOptimized: the footer (a copy of the header with the
            // real GD offset) sits before the end-of-stream marker, after a
            // footer marker.
            let at = f
                .len()
                .checked_sub(1024)
                .filter(|_| f.len() >= 1536)
                .ok_or_else(|| {
                    bad(
                        f,
                        "VMDK footer",
                        0,
                        "grain directory is at the end but the file is too short for a footer",
                    )
                })?;
            let marker = read_table(f, "VMDK footer marker", at - 512, 512)?;
            if le32(&marker, 12) != MARKER_FOOTER {
                return Err(bad(
                    f,
                    "VMDK footer marker",
                    at - 512,
                    "not a footer marker",
                ));
            }
            h = header(f, "VMDK footer", at)?;
            if h.gd_offset == GD_AT_END {
                return Err(bad(
                    f,
                    "VMDK footer",
                    at,
                    "grain directory offset is still GD_AT_END",
                ));
            }
        }
        let compressed = h.flags & FLAG_COMPRESSED != 0;
        if compressed && (h.compress != 1 || h.flags & FLAG_MARKERS == 0) {
            return Err(unsupported(
                f,
                FMT,
                format!(
                    "compressed grains with compressAlgorithm {} {} markers are not read",
                    h.compress,
                    if h.flags & FLAG_MARKERS == 0 {
                        "without"
                    } else {
                        "with"
                    }
                ),
            ));
        }
        if !h.grain.is_power_of_two() || h.grain.saturating_mul(512) > limits.max_cluster_bytes {
            return Err(bad(
                f,
                "VMDK header grainSize",
                20,
                format!("{} sectors is out of range", h.grain),
            ));
        }
        if h.gtes == 0 || u64::from(h.gtes) * 4 > limits.cache_bytes {
            return Err(bad(
                f,
                "VMDK header numGTEsPerGT",
                44,
                format!("{} is out of range", h.gtes),
            ));
        }
        let size = h.capacity.checked_mul(512).ok_or_else(|| {
            bad(
                f,
                "VMDK header capacity",
                12,
                format!("{} sectors is too large", h.capacity),
            )
        })?;
        // The embedded descriptor names the createType, and a parent if this
        // is a delta (snapshot) extent.
        let mut create_type = String::new();
        let mut desc = None;
        if h.desc_offset != 0 && h.desc_size != 0 {
            let what = "VMDK embedded descriptor";
            let at = h
                .desc_offset
                .checked_mul(512)
                .ok_or_else(|| bad(f, "VMDK header descriptorOffset", 28, "too large"))?;
            let len = h
                .desc_size
                .saturating_mul(512)
                .min(limits.max_descriptor_bytes);
            let raw = read_table(f, what, at, len)?;
            let text = vmdk_desc::text_of(f, what, at, &raw)?;
            let d = vmdk_desc::parse(f, what, at, &text, limits)?;
            create_type.clone_from(&d.create_type);
            desc = Some(d);
        }
        if create_type.is_empty() {
            create_type = if compressed {
                "streamOptimized"
            } else {
                "monolithicSparse"
            }
            .into();
        }
        let grain_bytes = h.grain * 512;
        let grains = h.capacity.div_ceil(h.grain);
        let gd_entries = grains.div_ceil(u64::from(h.gtes));
        let gd_bytes = gd_entries * 4;
        let gd_offset = h
            .gd_offset
            .checked_mul(512)
            .ok_or_else(|| bad(f, "VMDK header gdOffset", 56, "too large"))?;
        if gd_bytes > limits.max_table_bytes {
            return Err(bad(
                f,
                "VMDK grain directory",
                gd_offset,
                format!(
                    "{gd_bytes} bytes is larger than the limit of {} bytes",
                    limits.max_table_bytes
                ),
            ));
        }
        let raw = read_table(f, "VMDK grain directory", gd_offset, gd_bytes)?;
        let gd = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        let gt_bytes = u64::from(h.gtes) * 4;
        let cap = usize::try_from(limits.cache_bytes / gt_bytes).unwrap_or(1);
        let dev = Self {
            file,
            create_type,
            size,
            grain_bytes,
            gtes_per_gt: u64::from(h.gtes),
            gd,
            gd_offset,
            compressed,
            gt_cache: TableCache::new(cap),
            last_grain: Mutex::new(None),
            parent: None,
            parent_name: None,
        };
        Ok((dev, desc))
    }

    /// The sector of grain `g` in the file: 0 (or 1, a zeroed grain) reads
    /// as zeros.
    fn grain_sector(&self, g: u64) -> Result<u32, DiskError> {
        let f = self.file.as_ref();
        let gd_index = g / self.gtes_per_gt;
        let gt_sector = usize::try_from(gd_index)
            .ok()
            .and_then(|i| self.gd.get(i))
            .copied()
            .unwrap_or(0);
        if gt_sector == 0 {
            return Ok(0);
        }
        let gt = self.gt_cache.get(gd_index, &|| self.describe(), || {
            let what = format!(
                "VMDK grain table (grain directory entry at offset {})",
                self.gd_offset + gd_index * 4
            );
            let raw = read_table(f, &what, u64::from(gt_sector) * 512, self.gtes_per_gt * 4)?;
            Ok(raw.chunks_exact(4).map(|c| le32(c, 0)).collect())
        })?;
        let i = usize::try_from(g % self.gtes_per_gt).unwrap_or(usize::MAX);
        Ok(gt.get(i).copied().unwrap_or(0))
    }

    fn grain(&self, g: u64, sector: u32) -> Result<Arc<Vec<u8>>, DiskError> {
        let f = self.file.as_ref();
        let poisoned = || DiskError::Poisoned {
            device: self.describe(),
        };
        if let Some((last, data)) = self.last_grain.lock().map_err(|_| poisoned())?.as_ref() {
            if *last == g {
                return Ok(data.clone());
            }
        }
        let at = u64::from(sector) * 512;
        let what = "VMDK compressed grain";
        let marker = read_table(f, what, at, 12)?;
        let lba = le64(&marker, 0);
        let len = u64::from(le32(&marker, 8));
        let grain_sectors = self.grain_bytes / 512;
        if lba != g * grain_sectors {
            return Err(bad(
                f,
                what,
                at,
                format!("marker is for sector {lba}, not {}", g * grain_sectors),
            ));
        }
        if len == 0 || len > self.grain_bytes * 2 + 4096 {
            return Err(bad(
                f,
                what,
                at,
                format!("compressed size {len} is out of range"),
            ));
        }
        let input = read_table(f, what, at + 12, len)?;
        let mut out = vec![0u8; usize::try_from(self.grain_bytes).unwrap_or(0)];
        // The last grain may be cut short by the capacity.
        let need =
            usize::try_from(self.grain_bytes.min(self.size - g * self.grain_bytes)).unwrap_or(0);
        inflate(f, what, at, &input, true, &mut out, need)?;
        let out = Arc::new(out);
        *self.last_grain.lock().map_err(|_| poisoned())? = Some((g, out.clone()));
        Ok(out)
    }
}

impl Device for VmdkDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / self.grain_bytes;
            let within = pos % self.grain_bytes;
            let n = usize::try_from((self.grain_bytes - within).min((buf.len() - done) as u64))
                .unwrap_or(0);
            let out = &mut buf[done..done + n];
            match self.grain_sector(g)? {
                0 => match &self.parent {
                    Some((p, at)) => read_below(p.as_ref(), at + pos, out)?,
                    None => out.fill(0),
                },
                1 => out.fill(0),
                s if self.compressed => {
                    let data = self.grain(g, s)?;
                    let w = usize::try_from(within).unwrap_or(0);
                    out.copy_from_slice(&data[w..w + n]);
                }
                s => read_data(
                    self.file.as_ref(),
                    "VMDK grain",
                    u64::from(s) * 512 + within,
                    out,
                )?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::ReadOnly {
            device: self.describe(),
        })
    }

    fn describe(&self) -> String {
        match &self.parent_name {
            Some(p) => format!(
                "{} (VMDK {}, parent {p:?})",
                self.file.describe(),
                self.create_type
            ),
            None => format!("{} (VMDK {})", self.file.describe(), self.create_type),
        }
    }
}
