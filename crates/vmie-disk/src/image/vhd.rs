//! Microsoft VHD (the "Virtual Hard Disk Image Format Specification"):
//! fixed (the disk's bytes, then a 512-byte footer) and dynamic (a block
//! allocation table of blocks, each a sector bitmap and the sectors).
//! Differencing disks are refused, naming their parent.

use std::sync::Arc;

use super::{bad, be32, be64, read_data, read_table, unsupported, ImageLimits, TableCache};
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Vhd;
const UNALLOCATED: u32 = u32::MAX;

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
    },
}

/// A fixed or dynamic VHD, read-only.
#[derive(Debug)]
pub struct VhdDevice {
    file: Arc<FileDevice>,
    size: u64,
    kind: Kind,
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
    /// Parse the footer (and, for a dynamic disk, the dynamic header and
    /// the block allocation table) of `file`.
    pub fn open(file: Arc<FileDevice>, limits: &ImageLimits) -> Result<Self, DiskError> {
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
                if disk_type == 4 {
                    return Err(unsupported(
                        f,
                        FMT,
                        format!(
                            "it is a differencing disk of parent {:?}; convert the chain (qemu reads the parent)",
                            parent_name(&dh)
                        ),
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
                Ok(Self {
                    file,
                    size,
                    kind: Kind::Dynamic {
                        bat,
                        bat_offset,
                        block_bytes,
                        bitmap_bytes,
                        bitmaps: TableCache::new(cap),
                    },
                })
            }
            t => Err(unsupported(
                f,
                FMT,
                format!("disk type {t} is not read (only fixed 2 and dynamic 3)"),
            )),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Fixed => "fixed",
            Kind::Dynamic { .. } => "dynamic",
        }
    }
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
            if sector == UNALLOCATED {
                out.fill(0);
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
                    run.fill(0);
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
