//! qcow2 v2 and v3 (qemu's docs/interop/qcow2.txt): a two-level table (L1,
//! then L2 tables of one cluster each) maps guest clusters to host clusters.

use std::sync::{Arc, Mutex};

use super::{
    bad, be32, be64, inflate, open_backing, read_below, read_data, read_table, unsupported, Chain,
    ImageLimits, TableCache,
};
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Qcow;
/// Offset bits of L1 and standard L2 entries (bits 9..=55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
/// Incompatible feature bits: dirty, corrupt, external data file,
/// compression type, extended L2.
const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 2;
const INCOMPAT_DATA_FILE: u64 = 4;
const INCOMPAT_COMPRESSION: u64 = 8;
const INCOMPAT_EXTENDED_L2: u64 = 16;
/// Header extension: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Longest backing file name qemu writes (it refuses longer ones).
const MAX_BACKING_NAME: u32 = 1023;

/// A qcow2 image, read-only.
#[derive(Debug)]
pub struct Qcow2Device {
    file: Arc<FileDevice>,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    l1_offset: u64,
    l2_cache: TableCache<Vec<u64>>,
    /// The last inflated compressed cluster: (host descriptor, bytes).
    last_compressed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// The image below (qcow2 "backing file"), with its name as written.
    backing: Option<(String, Arc<dyn Device>)>,
}

enum Map {
    /// Not allocated here: the backing file's bytes (zeros without one).
    Unallocated,
    /// Reads as zeros (v3 zero flag), whatever is below.
    Zero,
    Data(u64),
    Compressed(u64),
}

impl Qcow2Device {
    /// Parse the header and read the L1 table of `file`, opening its
    /// chain of backing files (see `open_backing`).
    pub fn open(file: Arc<FileDevice>, limits: &ImageLimits) -> Result<Self, DiskError> {
        let mut chain = Chain::default();
        chain.enter(file.as_ref(), limits)?;
        Self::open_chain(file, limits, &mut chain)
    }

    pub(crate) fn open_chain(
        file: Arc<FileDevice>,
        limits: &ImageLimits,
        chain: &mut Chain,
    ) -> Result<Self, DiskError> {
        let f = file.as_ref();
        if f.len() < 72 {
            return Err(bad(
                f,
                "qcow2 header",
                0,
                format!("file is only {} bytes", f.len()),
            ));
        }
        let h = read_table(f, "qcow2 header", 0, f.len().min(4096))?;
        if h.get(..4) != Some(b"QFI\xfb".as_slice()) {
            return Err(bad(f, "qcow2 header", 0, "no QFI\\xfb magic"));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(
                f,
                FMT,
                format!("qcow version {version} is not read (only 2 and 3)"),
            ));
        }
        let backing_offset = be64(&h, 8);
        let backing_size = be32(&h, 16);
        let cluster_bits = be32(&h, 20);
        let size = be64(&h, 24);
        let crypt = be32(&h, 32);
        let l1_size = be32(&h, 36);
        let l1_offset = be64(&h, 40);
        if !(9..=21).contains(&cluster_bits) || (1u64 << cluster_bits) > limits.max_cluster_bytes {
            return Err(bad(
                f,
                "qcow2 header cluster_bits",
                20,
                format!("{cluster_bits} is out of range (9..=21)"),
            ));
        }
        if crypt != 0 {
            return Err(unsupported(
                f,
                FMT,
                format!("it is encrypted (crypt_method {crypt})"),
            ));
        }
        if version >= 3 {
            if h.len() < 104 {
                return Err(bad(f, "qcow2 v3 header", 0, "shorter than 104 bytes"));
            }
            let incompat = be64(&h, 72);
            if incompat & INCOMPAT_CORRUPT != 0 {
                return Err(unsupported(
                    f,
                    FMT,
                    "qemu marked it corrupt (incompatible feature bit 1); repair it with qemu-img check -r all",
                ));
            }
            if incompat & INCOMPAT_DATA_FILE != 0 {
                return Err(unsupported(
                    f,
                    FMT,
                    "its data is in an external data file (incompatible feature bit 2)",
                ));
            }
            if incompat & INCOMPAT_COMPRESSION != 0 {
                return Err(unsupported(
                    f,
                    FMT,
                    "it uses a compression type other than zlib (incompatible feature bit 3)",
                ));
            }
            if incompat & INCOMPAT_EXTENDED_L2 != 0 {
                return Err(unsupported(
                    f,
                    FMT,
                    "it uses extended L2 entries (incompatible feature bit 4)",
                ));
            }
            let unknown = incompat
                & !(INCOMPAT_DIRTY
                    | INCOMPAT_CORRUPT
                    | INCOMPAT_DATA_FILE
                    | INCOMPAT_COMPRESSION
                    | INCOMPAT_EXTENDED_L2);
            if unknown != 0 {
                return Err(unsupported(
                    f,
                    FMT,
                    format!("unknown incompatible feature bits {unknown:#x}"),
                ));
            }
        }
        let cluster = 1u64 << cluster_bits;
        // One L1 entry maps an L2 table's worth of clusters.
        let per_l1 = cluster
            .checked_mul(cluster / 8)
            .ok_or_else(|| bad(f, "qcow2 header cluster_bits", 20, "too large"))?;
        let needed = size.div_ceil(per_l1);
        if u64::from(l1_size) < needed {
            return Err(bad(
                f,
                "qcow2 header l1_size",
                36,
                format!(
                    "{l1_size} entries cannot map a virtual size of {size} bytes ({needed} needed)"
                ),
            ));
        }
        // Entries past what the size needs are never used: read only those.
        let l1_bytes = needed * 8;
        if l1_bytes > limits.max_table_bytes {
            return Err(bad(
                f,
                "qcow2 L1 table",
                l1_offset,
                format!(
                    "{l1_bytes} bytes is larger than the limit of {} bytes",
                    limits.max_table_bytes
                ),
            ));
        }
        if l1_offset % 512 != 0 && needed > 0 {
            return Err(bad(f, "qcow2 L1 table", l1_offset, "offset is not aligned"));
        }
        let raw = if needed > 0 {
            read_table(f, "qcow2 L1 table", l1_offset, l1_bytes)?
        } else {
            Vec::new()
        };
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let l2_bytes = cluster;
        let cap = usize::try_from(limits.cache_bytes / l2_bytes).unwrap_or(1);
        let backing = if backing_offset != 0 {
            let what = "qcow2 backing file name";
            if backing_size == 0 || backing_size > MAX_BACKING_NAME {
                return Err(bad(
                    f,
                    "qcow2 header backing_file_size",
                    16,
                    format!("{backing_size} is out of range (1..={MAX_BACKING_NAME})"),
                ));
            }
            let raw = read_table(f, what, backing_offset, u64::from(backing_size))?;
            let name = String::from_utf8(raw)
                .map_err(|_| bad(f, what, backing_offset, "the name is not UTF-8"))?;
            let declared = backing_format(f, version, cluster)?;
            let dev = open_backing(
                f,
                what,
                backing_offset,
                &name,
                declared.as_deref(),
                None,
                limits,
                chain,
            )?;
            Some((name, dev))
        } else {
            None
        };
        Ok(Self {
            file,
            version,
            cluster_bits,
            size,
            l1,
            l1_offset,
            l2_cache: TableCache::new(cap),
            last_compressed: Mutex::new(None),
            backing,
        })
    }

    fn cluster(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    fn l2(&self, l1_index: u64) -> Result<Option<Arc<Vec<u64>>>, DiskError> {
        let f = self.file.as_ref();
        let entry = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let l2_offset = entry & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(None);
        }
        let entry_at = self.l1_offset + l1_index * 8;
        if l2_offset % self.cluster() != 0 {
            return Err(bad(
                f,
                "qcow2 L1 entry",
                entry_at,
                format!("L2 table offset {l2_offset} is not cluster aligned"),
            ));
        }
        let t = self.l2_cache.get(l1_index, &|| self.describe(), || {
            let raw = read_table(
                f,
                &format!("qcow2 L2 table (L1 entry at offset {entry_at})"),
                l2_offset,
                self.cluster(),
            )?;
            Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
        })?;
        Ok(Some(t))
    }

    fn map(&self, guest_cluster: u64) -> Result<Map, DiskError> {
        let f = self.file.as_ref();
        let per_l2 = self.cluster() / 8;
        let Some(l2) = self.l2(guest_cluster / per_l2)? else {
            return Ok(Map::Unallocated);
        };
        let i = usize::try_from(guest_cluster % per_l2).unwrap_or(usize::MAX);
        let e = l2.get(i).copied().unwrap_or(0);
        if e & COMPRESSED != 0 {
            return Ok(Map::Compressed(e));
        }
        if self.version >= 3 && e & ZERO != 0 {
            return Ok(Map::Zero);
        }
        let host = e & OFFSET_MASK;
        if host == 0 {
            return Ok(Map::Unallocated);
        }
        if host % self.cluster() != 0 {
            return Err(bad(
                f,
                "qcow2 L2 entry",
                guest_cluster << self.cluster_bits,
                format!("data cluster offset {host} for this guest offset is not cluster aligned"),
            ));
        }
        Ok(Map::Data(host))
    }

    fn compressed(&self, desc: u64) -> Result<Arc<Vec<u8>>, DiskError> {
        let f = self.file.as_ref();
        let poisoned = || DiskError::Poisoned {
            device: self.describe(),
        };
        if let Some((d, data)) = self
            .last_compressed
            .lock()
            .map_err(|_| poisoned())?
            .as_ref()
        {
            if *d == desc {
                return Ok(data.clone());
            }
        }
        let shift = 62 - (self.cluster_bits - 8);
        let host = desc & ((1u64 << shift) - 1);
        let sectors = ((desc & !COMPRESSED & !(1u64 << 63)) >> shift) + 1;
        let what = "qcow2 compressed cluster";
        if host >= f.len() {
            return Err(bad(
                f,
                what,
                host,
                format!("starts past the end of the file ({} bytes)", f.len()),
            ));
        }
        // The size is a whole number of sectors from the sector holding the
        // start; the last cluster of the file may end before that.
        let len = (sectors * 512 - (host % 512)).min(f.len() - host);
        let input = read_table(f, what, host, len)?;
        let mut out = vec![0u8; usize::try_from(self.cluster()).unwrap_or(0)];
        let need = out.len();
        inflate(f, what, host, &input, false, &mut out, need)?;
        let out = Arc::new(out);
        *self.last_compressed.lock().map_err(|_| poisoned())? = Some((desc, out.clone()));
        Ok(out)
    }
}

/// The backing format header extension of a qcow2 image, if any. The
/// extensions follow the header (at 72 in v2, at `header_length` in v3) and
/// end with a zero type, all within the first cluster.
fn backing_format(f: &FileDevice, version: u32, cluster: u64) -> Result<Option<String>, DiskError> {
    let what = "qcow2 header extensions";
    let h = read_table(f, what, 0, cluster.min(f.len()))?;
    let mut at = if version >= 3 {
        let len = be32(&h, 100);
        if len < 104 || u64::from(len) > cluster {
            return Err(bad(
                f,
                "qcow2 header header_length",
                100,
                format!("{len} is out of range (104..={cluster})"),
            ));
        }
        len as usize
    } else {
        72
    };
    let mut found = None;
    loop {
        let Some(head) = h.get(at..at + 8) else {
            return Err(bad(
                f,
                what,
                at as u64,
                "they run past the first cluster without an end marker",
            ));
        };
        let kind = be32(head, 0);
        let len = be32(head, 4) as usize;
        if kind == 0 {
            return Ok(found);
        }
        let data = at + 8;
        let Some(body) = data.checked_add(len).and_then(|end| h.get(data..end)) else {
            return Err(bad(
                f,
                what,
                at as u64,
                format!("extension {kind:#x} of {len} bytes runs past the first cluster"),
            ));
        };
        if kind == EXT_BACKING_FORMAT {
            found = Some(String::from_utf8_lossy(body).into_owned());
        }
        at = data + len.div_ceil(8) * 8;
    }
}

impl Device for Qcow2Device {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.size, offset, buf.len())?;
        let mask = self.cluster() - 1;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = pos & mask;
            let n = usize::try_from((self.cluster() - within).min((buf.len() - done) as u64))
                .unwrap_or(0);
            let out = &mut buf[done..done + n];
            match self.map(pos >> self.cluster_bits)? {
                Map::Zero => out.fill(0),
                Map::Unallocated => match &self.backing {
                    None => out.fill(0),
                    // The image below may be shorter: past its end, zeros.
                    Some((_, below)) => read_below(below.as_ref(), pos, out)?,
                },
                Map::Data(host) => {
                    read_data(self.file.as_ref(), "qcow2 data cluster", host + within, out)?
                }
                Map::Compressed(desc) => {
                    let data = self.compressed(desc)?;
                    let w = usize::try_from(within).unwrap_or(0);
                    out.copy_from_slice(&data[w..w + n]);
                }
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
        match &self.backing {
            None => format!("{} (qcow2 v{})", self.file.describe(), self.version),
            Some((name, _)) => format!(
                "{} (qcow2 v{}, backing file {name:?})",
                self.file.describe(),
                self.version
            ),
        }
    }
}
