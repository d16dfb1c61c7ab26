//! Microsoft VHD (the "Virtual Hard Disk Image Format Specification"):
//! fixed (the disk's bytes, then a 512-byte footer) and dynamic (a block
//! allocation table of blocks, each a sector bitmap and the sectors) and
//! differencing (a dynamic disk over a parent: an unallocated block, and a
//! sector whose bitmap bit is clear, read from the parent). The parent is
//! found through the parent locators (`W2ru` relative, `W2ku` absolute
//! Windows paths in UTF-16, `MacX` file URLs) or the parent's name, beside
//! the child; it must be a VHD whose unique id is the one the child
//! recorded, and is followed as a chain of backing files (see
//! `open_backing`).

use std::sync::Arc;

use super::{
    bad, be32, be64, open_backing, read_below, read_data, read_table, unsupported, Chain,
    ImageLimits, Parent, TableCache,
};
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Vhd;
const UNALLOCATED: u32 = u32::MAX;
/// Largest parent locator read, in bytes (a path of 32 K UTF-16 units).
const MAX_LOCATOR: u64 = 64 << 10;

#[derive(Debug)]
enum Kind {
    Fixed,
    Dynamic {
        bat: Vec<u32>,
        bat_offset: u64,
        block_bytes: u64,
        /// Bytes of a block's sector bitmap, padded to a sector.
        bitmap_bytes: u64,
        bitmaps: TableCache<Vec<u8>>,
        /// A differencing disk's parent.
        parent: Option<Parent>,
    },
}

/// Whether `f` is a fixed VHD whose footer is sound: its guest bytes are
/// then the file's first bytes, at the same offsets, so it can be written
/// in place like a raw image (the footer after them is never touched).
pub(crate) fn is_fixed(f: &FileDevice) -> Result<bool, DiskError> {
    if f.len() < 1024 {
        return Ok(false);
    }
    let footer_at = f.len() - 512;
    let footer = read_table(f, "VHD footer", footer_at, 512)?;
    Ok(footer.get(..8) == Some(b"conectix".as_slice())
        && be32(&footer, 60) == 2
        && be64(&footer, 48) <= footer_at
        && be64(&footer, 48) > 0)
}

/// A fixed or dynamic VHD, read-only.
#[derive(Debug)]
pub struct VhdDevice {
    file: Arc<FileDevice>,
    size: u64,
    kind: Kind,
}

/// A VHD's unique id (footer offset 68), from its footer (the last sector,
/// or the copy at the start).
fn unique_id(f: &FileDevice) -> Result<[u8; 16], String> {
    let mut footer = [0u8; 512];
    for at in [f.len().saturating_sub(512), 0] {
        if f.len() >= 512 {
            f.read_at(at, &mut footer).map_err(|e| e.to_string())?;
            if footer.starts_with(b"conectix") {
                let mut id = [0u8; 16];
                id.copy_from_slice(&footer[68..84]);
                return Ok(id);
            }
        }
    }
    Err("it has no VHD footer".into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The names a differencing disk gives its parent, in the order they are
/// tried: the locators (relative `W2ru` first, then absolute `W2ku`, then
/// `MacX` URLs) and the parent's name, each as a path with `/`; a Windows
/// absolute path (`C:\dir\p.vhd`) also as its last component beside the
/// child. Locator data is read only inside the file and capped.
fn parent_names(f: &FileDevice, dh_at: u64, dh: &[u8]) -> Result<Vec<String>, DiskError> {
    let mut by_kind: [Vec<String>; 3] = Default::default();
    for i in 0..8u64 {
        let e = usize::try_from(576 + 24 * i).unwrap_or(usize::MAX);
        let code = dh.get(e..e + 4).unwrap_or_default();
        let kind = match code {
            b"W2ru" => 0,
            b"W2ku" => 1,
            b"MacX" => 2,
            _ => continue, // unused, or a platform we do not resolve
        };
        let len = u64::from(be32(dh, e + 8));
        let at = be64(dh, e + 16);
        let what = format!("VHD parent locator {i}");
        if len == 0 || len > MAX_LOCATOR {
            return Err(bad(
                f,
                &what,
                dh_at + 576 + 24 * i,
                format!("{len} bytes of path is out of range (1..={MAX_LOCATOR})"),
            ));
        }
        let raw = read_table(f, &what, at, len)?;
        let name = if kind == 2 {
            let t = String::from_utf8_lossy(&raw).into_owned();
            let t = t.trim_end_matches('\0');
            let t = t.strip_prefix("file://").unwrap_or(t);
            t.strip_prefix("localhost").unwrap_or(t).to_string()
        } else {
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16_lossy(&units)
        };
        by_kind[kind].push(name);
    }
    let own = parent_name(dh);
    let mut names: Vec<String> = Vec::new();
    let all: Vec<String> = by_kind
        .iter()
        .flatten()
        .chain(std::iter::once(&own))
        .map(|n| n.replace('\\', "/"))
        .collect();
    // A Windows absolute path (`C:/dir/p.vhd`): also its last component,
    // beside the child.
    let bases: Vec<String> = all
        .iter()
        .filter(|n| n.as_bytes().get(1) == Some(&b':'))
        .filter_map(|n| n.rsplit('/').next().map(str::to_string))
        .collect();
    for n in all.iter().chain(bases.iter()) {
        let n = n.strip_prefix("./").unwrap_or(n);
        if !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Where `name` (a parent name of `child`) points: relative names are
/// relative to the child's directory.
fn resolve(child: &FileDevice, name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        child
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(p)
    }
}

/// The parent's name in a differencing disk's dynamic header (UTF-16 BE).
fn parent_name(h: &[u8]) -> String {
    let units: Vec<u16> = h
        .get(64..576)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

impl VhdDevice {
    /// Parse the footer (and, for a dynamic or differencing disk, the
    /// dynamic header and the block allocation table) of `file`, opening a
    /// differencing disk's chain of parents.
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
        if f.len() < 512 {
            return Err(bad(
                f,
                "VHD footer",
                0,
                format!("file is only {} bytes", f.len()),
            ));
        }
        // The footer is the last sector; a dynamic disk has a copy at the
        // start, used when the end one is gone.
        let mut footer_at = f.len() - 512;
        let mut footer = read_table(f, "VHD footer", footer_at, 512)?;
        if footer.get(..8) != Some(b"conectix".as_slice()) {
            footer_at = 0;
            footer = read_table(f, "VHD footer copy", 0, 512)?;
            if footer.get(..8) != Some(b"conectix".as_slice()) {
                return Err(bad(f, "VHD footer", f.len() - 512, "no conectix cookie"));
            }
        }
        // The checksums are not checked: they protect against nothing a
        // hostile image could not recompute, and every field is checked
        // against the file anyway (qemu refuses some real images on them).
        let data_offset = be64(&footer, 16);
        let size = be64(&footer, 48);
        let disk_type = be32(&footer, 60);
        match disk_type {
            2 => {
                if footer_at == 0 || size > footer_at {
                    return Err(bad(
                        f,
                        "VHD footer current size",
                        footer_at + 48,
                        format!("fixed disk of {size} bytes does not fit before the footer at offset {}", f.len() - 512),
                    ));
                }
                Ok(Self {
                    file,
                    size,
                    kind: Kind::Fixed,
                })
            }
            3 | 4 => {
                let dh = read_table(f, "VHD dynamic header", data_offset, 1024)?;
                if dh.get(..8) != Some(b"cxsparse".as_slice()) {
                    return Err(bad(
                        f,
                        "VHD dynamic header",
                        data_offset,
                        "no cxsparse cookie",
                    ));
                }
                let bat_offset = be64(&dh, 16);
                let max_entries = be32(&dh, 28);
                let block_bytes = u64::from(be32(&dh, 32));
                if !block_bytes.is_power_of_two() || !(512..=(256 << 20)).contains(&block_bytes) {
                    return Err(bad(
                        f,
                        "VHD dynamic header block size",
                        data_offset + 32,
                        format!("{block_bytes} bytes is out of range"),
                    ));
                }
                let needed = size.div_ceil(block_bytes);
                if needed > u64::from(max_entries) {
                    return Err(bad(
                        f,
                        "VHD dynamic header max table entries",
                        data_offset + 28,
                        format!("{max_entries} blocks cannot hold a disk of {size} bytes ({needed} needed)"),
                    ));
                }
                let bat_bytes = needed * 4;
                if bat_bytes > limits.max_table_bytes {
                    return Err(bad(
                        f,
                        "VHD block allocation table",
                        bat_offset,
                        format!(
                            "{bat_bytes} bytes is larger than the limit of {} bytes",
                            limits.max_table_bytes
                        ),
                    ));
                }
                let raw = read_table(f, "VHD block allocation table", bat_offset, bat_bytes)?;
                let bat = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
                let bitmap_bytes = (block_bytes / 512).div_ceil(8).div_ceil(512) * 512;
                let cap = usize::try_from(limits.cache_bytes / bitmap_bytes).unwrap_or(1);
                let parent = if disk_type == 4 {
                    Some(open_parent(f, data_offset, &dh, limits, chain)?)
                } else {
                    None
                };
                Ok(Self {
                    file,
                    size,
                    kind: Kind::Dynamic {
                        bat,
                        bat_offset,
                        block_bytes,
                        bitmap_bytes,
                        bitmaps: TableCache::new(cap),
                        parent,
                    },
                })
            }
            t => Err(unsupported(
                f,
                FMT,
                format!("disk type {t} is not read (only fixed 2, dynamic 3 and differencing 4)"),
            )),
        }
    }

    fn kind_name(&self) -> String {
        match &self.kind {
            Kind::Fixed => "fixed".into(),
            Kind::Dynamic { parent: None, .. } => "dynamic".into(),
            Kind::Dynamic {
                parent: Some((name, _)),
                ..
            } => format!("differencing, parent {name:?}"),
        }
    }
}

/// Open the parent of the differencing disk `f` (its dynamic header `dh`
/// at `dh_at`): the first of its names that exists, which must be a VHD
/// with the unique id the child recorded.
fn open_parent(
    f: &FileDevice,
    dh_at: u64,
    dh: &[u8],
    limits: &ImageLimits,
    chain: &mut Chain,
) -> Result<Parent, DiskError> {
    let names = parent_names(f, dh_at, dh)?;
    let mut want = [0u8; 16];
    want.copy_from_slice(dh.get(40..56).unwrap_or(&[0u8; 16]));
    let Some(name) = names
        .iter()
        .find(|n| std::fs::metadata(resolve(f, n)).is_ok())
    else {
        return Err(bad(
            f,
            "VHD parent locators",
            dh_at + 576,
            format!("differencing disk: none of the parent's names {names:?} is a file beside it"),
        ));
    };
    let check = |p: &FileDevice| -> Result<(), String> {
        let got = unique_id(p)?;
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "its unique id is {}, not {} that this differencing disk was made on",
                hex(&got),
                hex(&want)
            ))
        }
    };
    let dev = open_backing(
        f,
        "VHD parent locator",
        dh_at + 576,
        name,
        Some("vpc"),
        Some(&check),
        limits,
        chain,
    )?;
    Ok((name.clone(), dev))
}

impl Device for VhdDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.size, offset, buf.len())?;
        let f = self.file.as_ref();
        let Kind::Dynamic {
            bat,
            bat_offset,
            block_bytes,
            bitmap_bytes,
            bitmaps,
            parent,
        } = &self.kind
        else {
            return read_data(f, "VHD fixed disk data", offset, buf);
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let b = pos / block_bytes;
            let within = pos % block_bytes;
            let n =
                usize::try_from((block_bytes - within).min((buf.len() - done) as u64)).unwrap_or(0);
            let out = &mut buf[done..done + n];
            let sector = usize::try_from(b)
                .ok()
                .and_then(|i| bat.get(i))
                .copied()
                .unwrap_or(UNALLOCATED);
            // Not here: the parent's bytes, or zeros without a parent.
            let below = |at: u64, out: &mut [u8]| match parent {
                Some((_, p)) => read_below(p.as_ref(), at, out),
                None => {
                    out.fill(0);
                    Ok(())
                }
            };
            if sector == UNALLOCATED {
                below(pos, out)?;
                done += n;
                continue;
            }
            let block_at = u64::from(sector) * 512;
            let bitmap = bitmaps.get(b, &|| self.describe(), || {
                let what = format!(
                    "VHD block bitmap (BAT entry at offset {})",
                    bat_offset + b * 4
                );
                read_table(f, &what, block_at, *bitmap_bytes)
            })?;
            let data_at = block_at + bitmap_bytes;
            // Runs of sectors present in the bitmap are read; the others are zero.
            let mut i = 0usize;
            while i < n {
                let s = (within + i as u64) / 512;
                let present = bitmap
                    .get(usize::try_from(s / 8).unwrap_or(usize::MAX))
                    .is_some_and(|byte| byte & (0x80 >> (s % 8)) != 0);
                let sector_end = usize::try_from((s + 1) * 512 - within).unwrap_or(n).min(n);
                let mut j = sector_end;
                while j < n {
                    let s2 = (within + j as u64) / 512;
                    let p2 = bitmap
                        .get(usize::try_from(s2 / 8).unwrap_or(usize::MAX))
                        .is_some_and(|byte| byte & (0x80 >> (s2 % 8)) != 0);
                    if p2 != present {
                        break;
                    }
                    j = (j + 512).min(n);
                }
                let run = &mut out[i..j];
                if present {
                    read_data(f, "VHD block data", data_at + within + i as u64, run)?;
                } else {
                    below(pos + i as u64, run)?;
                }
                i = j;
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
        format!("{} (VHD {})", self.file.describe(), self.kind_name())
    }
}
