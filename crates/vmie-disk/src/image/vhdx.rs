//! Microsoft VHDX (the MS-VHDX specification, "Virtual Hard Disk v2"):
//! fixed and dynamic. Two checksummed headers (the valid one with the
//! higher sequence number is current), two copies of a checksummed region
//! table locating the block allocation table (BAT) and the metadata region,
//! whose items give the block size, the virtual size and the sector sizes.
//! The BAT maps each payload block to a megabyte offset in the file, with
//! one sector bitmap entry after every chunk of payload entries.
//!
//! Differencing disks (HasParent) are refused naming their parent, and so
//! is an image whose log needs replay: the region table, the metadata and
//! the BAT may be stale until the log is replayed, which writes.

use std::sync::Arc;

use super::{bad, le16, le32, le64, read_data, read_table, unsupported, ImageLimits};
use crate::checksum::crc32c_update;
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Vhdx;
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The header section (file identifier, headers, region tables) is the
/// first megabyte; every region, the log and every block lies after it.
const HEADER_SECTION: u64 = MIB;
const HEADER_AT: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_BYTES: u64 = 4 * KIB;
const REGION_TABLE_AT: [u64; 2] = [192 * KIB, 256 * KIB];
const REGION_TABLE_BYTES: u64 = 64 * KIB;
const METADATA_TABLE_BYTES: u64 = 64 * KIB;
const MAX_TABLE_ENTRIES: u64 = 2047;
const MAX_ITEM_BYTES: u64 = MIB;
const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Sectors described by one sector bitmap block (2^23), which with the
/// logical sector size and the block size gives the chunk ratio.
const SECTORS_PER_BITMAP: u64 = 1 << 23;

/// Payload BAT entry states (the low 3 bits of an entry).
const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

/// A GUID in its on-disk form: the first three fields little-endian.
type Guid = [u8; 16];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

const REGION_BAT: Guid = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const REGION_METADATA: Guid = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const ITEM_FILE_PARAMETERS: Guid = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const ITEM_VIRTUAL_DISK_SIZE: Guid = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// The Virtual Disk ID, which SCSI page 83 reports.
const ITEM_PAGE_83: Guid = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const ITEM_LOGICAL_SECTOR: Guid = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const ITEM_PHYSICAL_SECTOR: Guid = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
const ITEM_PARENT_LOCATOR: Guid = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        g.copy_from_slice(s);
    }
    g
}

fn show_guid(g: &Guid) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10..]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

/// The standard CRC-32C of `b` with the 4-byte checksum field at `at`
/// taken as zero.
fn crc_without(b: &[u8], at: usize) -> u32 {
    let (head, rest) = b.split_at(at.min(b.len()));
    let tail = rest.get(4..).unwrap_or_default();
    let crc = crc32c_update(!0, head);
    let crc = crc32c_update(crc, &[0u8; 4][..rest.len().min(4)]);
    !crc32c_update(crc, tail)
}

/// Whether `b` (a header or region table) carries `sig` and a checksum
/// (at offset 4) that matches; the reason when not.
fn check_structure(b: &[u8], sig: &[u8]) -> Result<(), String> {
    if b.get(..sig.len()) != Some(sig) {
        return Err(format!("no {:?} signature", String::from_utf8_lossy(sig)));
    }
    let stored = le32(b, 4);
    let computed = crc_without(b, 4);
    if stored != computed {
        return Err(format!(
            "CRC-32C is {computed:#010x}, the checksum field says {stored:#010x}"
        ));
    }
    Ok(())
}

/// The fields of the current header that matter to a reader.
struct Header {
    at: u64,
    sequence: u64,
    log_guid: Guid,
    version: u16,
    log_length: u32,
    log_offset: u64,
}

fn read_header(f: &FileDevice, at: u64) -> Result<Header, String> {
    let h = read_table(f, "VHDX header", at, HEADER_BYTES).map_err(|e| e.to_string())?;
    check_structure(&h, b"head")?;
    Ok(Header {
        at,
        sequence: le64(&h, 8),
        log_guid: guid_at(&h, 48),
        version: le16(&h, 66),
        log_length: le32(&h, 68),
        log_offset: le64(&h, 72),
    })
}

/// The current header: the valid one with the higher sequence number.
fn current_header(f: &FileDevice) -> Result<Header, DiskError> {
    let one = read_header(f, HEADER_AT[0]);
    let two = read_header(f, HEADER_AT[1]);
    match (one, two) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(h), Err(_)) | (Err(_), Ok(h)) => Ok(h),
        (Err(a), Err(b)) => Err(bad(
            f,
            "VHDX headers",
            HEADER_AT[0],
            format!(
                "neither header is valid (at offset {}: {a}; at offset {}: {b})",
                HEADER_AT[0], HEADER_AT[1]
            ),
        )),
    }
}

/// A region table entry: where a region lies.
#[derive(Clone, Copy)]
struct Region {
    offset: u64,
    length: u64,
    /// Offset of the entry in the file, for messages.
    entry_at: u64,
}

/// The BAT and metadata regions from the first valid region table.
fn regions(f: &FileDevice) -> Result<(Region, Region), DiskError> {
    let mut reasons = Vec::new();
    for at in REGION_TABLE_AT {
        let t = match read_table(f, "VHDX region table", at, REGION_TABLE_BYTES) {
            Ok(t) => t,
            Err(e) => {
                reasons.push(format!("at offset {at}: {e}"));
                continue;
            }
        };
        if let Err(why) = check_structure(&t, b"regi") {
            reasons.push(format!("at offset {at}: {why}"));
            continue;
        }
        return parse_regions(f, at, &t);
    }
    Err(bad(
        f,
        "VHDX region tables",
        REGION_TABLE_AT[0],
        format!("neither copy is valid ({})", reasons.join("; ")),
    ))
}

fn parse_regions(f: &FileDevice, at: u64, t: &[u8]) -> Result<(Region, Region), DiskError> {
    let count = u64::from(le32(t, 8));
    if count > MAX_TABLE_ENTRIES {
        return Err(bad(
            f,
            "VHDX region table entry count",
            at + 8,
            format!("{count} entries is more than {MAX_TABLE_ENTRIES}"),
        ));
    }
    let mut bat = None;
    let mut metadata = None;
    for i in 0..count {
        let e = usize::try_from(16 + i * 32).unwrap_or(usize::MAX);
        let entry_at = at + 16 + i * 32;
        let id = guid_at(t, e);
        let region = Region {
            offset: le64(t, e + 16),
            length: u64::from(le32(t, e + 24)),
            entry_at,
        };
        let required = le32(t, e + 28) & 1 != 0;
        let slot = if id == REGION_BAT {
            &mut bat
        } else if id == REGION_METADATA {
            &mut metadata
        } else if required {
            return Err(unsupported(
                f,
                FMT,
                format!(
                    "its region table (entry at offset {entry_at}) has a required region {} that vmie-fixup does not know",
                    show_guid(&id)
                ),
            ));
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(bad(
                f,
                "VHDX region table entry",
                entry_at,
                format!("region {} is listed twice", show_guid(&id)),
            ));
        }
        if region.offset < HEADER_SECTION {
            return Err(bad(
                f,
                "VHDX region table entry",
                entry_at,
                format!(
                    "region {} at file offset {} lies in the header section (the first MiB)",
                    show_guid(&id),
                    region.offset
                ),
            ));
        }
        *slot = Some(region);
    }
    match (bat, metadata) {
        (Some(b), Some(m)) => Ok((b, m)),
        (b, _) => Err(bad(
            f,
            "VHDX region table",
            at,
            format!(
                "it has no {} region",
                if b.is_none() { "BAT" } else { "metadata" }
            ),
        )),
    }
}

/// What the metadata region says about the disk.
struct Metadata {
    block_bytes: u64,
    leave_allocated: bool,
    size: u64,
    logical_sector: u32,
    physical_sector: u32,
}

/// Read the metadata item at `offset` (relative to the region) of `len`
/// bytes, for an entry at `entry_at`.
fn read_item(
    f: &FileDevice,
    region: Region,
    entry_at: u64,
    offset: u64,
    len: u64,
    what: &str,
) -> Result<Vec<u8>, DiskError> {
    let at = region.offset.checked_add(offset).ok_or_else(|| {
        bad(
            f,
            "VHDX metadata table entry",
            entry_at,
            "item offset overflows",
        )
    })?;
    read_table(f, what, at, len)
}

fn metadata(f: &FileDevice, region: Region) -> Result<Metadata, DiskError> {
    let what = "VHDX metadata table";
    if region.length < METADATA_TABLE_BYTES {
        return Err(bad(
            f,
            "VHDX metadata region",
            region.entry_at,
            format!(
                "{} bytes cannot hold the {METADATA_TABLE_BYTES}-byte metadata table",
                region.length
            ),
        ));
    }
    let t = read_table(f, what, region.offset, METADATA_TABLE_BYTES)?;
    if t.get(..8) != Some(b"metadata".as_slice()) {
        return Err(bad(f, what, region.offset, "no \"metadata\" signature"));
    }
    let count = u64::from(le16(&t, 10));
    if count > MAX_TABLE_ENTRIES {
        return Err(bad(
            f,
            "VHDX metadata table entry count",
            region.offset + 10,
            format!("{count} entries is more than {MAX_TABLE_ENTRIES}"),
        ));
    }
    let mut file_parameters = None;
    let mut size = None;
    let mut page83 = false;
    let mut logical = None;
    let mut physical = None;
    let mut parent_locator = None;
    for i in 0..count {
        let e = usize::try_from(32 + i * 32).unwrap_or(usize::MAX);
        let entry_at = region.offset + 32 + i * 32;
        let id = guid_at(&t, e);
        let offset = u64::from(le32(&t, e + 16));
        let len = u64::from(le32(&t, e + 20));
        let flags = le32(&t, e + 24);
        let is_user = flags & 1 != 0;
        let required = flags & 4 != 0;
        let entry_bad = |why: String| bad(f, "VHDX metadata table entry", entry_at, why);
        if len > MAX_ITEM_BYTES {
            return Err(entry_bad(format!(
                "item {} of {len} bytes is larger than {MAX_ITEM_BYTES}",
                show_guid(&id)
            )));
        }
        if len > 0
            && (offset < METADATA_TABLE_BYTES
                || offset
                    .checked_add(len)
                    .is_none_or(|end| end > region.length))
        {
            return Err(entry_bad(format!(
                "item {} at offset {offset} ({len} bytes) is not inside the metadata region after its table ({} bytes)",
                show_guid(&id),
                region.length
            )));
        }
        let (slot, need): (&mut Option<(u64, u64, u64)>, u64) = if is_user {
            if required {
                return Err(unsupported(
                    f,
                    FMT,
                    format!(
                        "its metadata (entry at offset {entry_at}) has a required user item {} that vmie-fixup does not know",
                        show_guid(&id)
                    ),
                ));
            }
            continue;
        } else if id == ITEM_FILE_PARAMETERS {
            (&mut file_parameters, 8)
        } else if id == ITEM_VIRTUAL_DISK_SIZE {
            (&mut size, 8)
        } else if id == ITEM_LOGICAL_SECTOR {
            (&mut logical, 4)
        } else if id == ITEM_PHYSICAL_SECTOR {
            (&mut physical, 4)
        } else if id == ITEM_PARENT_LOCATOR {
            (&mut parent_locator, 20)
        } else if id == ITEM_PAGE_83 {
            if page83 {
                return Err(entry_bad(format!(
                    "item {} is listed twice",
                    show_guid(&id)
                )));
            }
            if len < 16 {
                return Err(entry_bad(format!(
                    "the virtual disk ID (page 83 data) item has {len} bytes, not 16"
                )));
            }
            page83 = true;
            continue;
        } else if required {
            return Err(unsupported(
                f,
                FMT,
                format!(
                    "its metadata (entry at offset {entry_at}) has a required item {} that vmie-fixup does not know",
                    show_guid(&id)
                ),
            ));
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(entry_bad(format!(
                "item {} is listed twice",
                show_guid(&id)
            )));
        }
        if len < need {
            return Err(entry_bad(format!(
                "item {} has {len} bytes, fewer than its {need}",
                show_guid(&id)
            )));
        }
        *slot = Some((entry_at, offset, len));
    }
    let missing = |name: &str| {
        bad(
            f,
            what,
            region.offset,
            format!("it has no {name} item, which every VHDX needs"),
        )
    };
    let (fp_entry, fp_off, _) = file_parameters.ok_or_else(|| missing("file parameters"))?;
    let fp = read_item(f, region, fp_entry, fp_off, 8, "VHDX file parameters item")?;
    let fp_at = region.offset + fp_off;
    let block_bytes = u64::from(le32(&fp, 0));
    let fp_flags = le32(&fp, 4);
    if fp_flags & 2 != 0 {
        let parent = parent_locator
            .and_then(|(e, o, l)| {
                read_item(f, region, e, o, l, "VHDX parent locator item")
                    .ok()
                    .and_then(|b| parent_name(&b))
            })
            .unwrap_or_else(|| "(unreadable)".into());
        return Err(unsupported(
            f,
            FMT,
            format!(
                "it is a differencing disk (HasParent) of parent {parent:?}; convert the chain (qemu reads the parent)"
            ),
        ));
    }
    if !block_bytes.is_power_of_two() || !(MIB..=(256 * MIB)).contains(&block_bytes) {
        return Err(bad(
            f,
            "VHDX file parameters block size",
            fp_at,
            format!("{block_bytes} bytes is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    let sector = |slot: Option<(u64, u64, u64)>, name: &str, item: &str| {
        let (e, o, _) = slot.ok_or_else(|| missing(name))?;
        let b = read_item(f, region, e, o, 4, item)?;
        let v = le32(&b, 0);
        if v != 512 && v != 4096 {
            return Err(bad(
                f,
                item,
                region.offset + o,
                format!("{v} bytes is not 512 or 4096"),
            ));
        }
        Ok(v)
    };
    let logical_sector = sector(
        logical,
        "logical sector size",
        "VHDX logical sector size item",
    )?;
    let physical_sector = sector(
        physical,
        "physical sector size",
        "VHDX physical sector size item",
    )?;
    if !page83 {
        return Err(missing("virtual disk ID (page 83 data)"));
    }
    let (s_entry, s_off, _) = size.ok_or_else(|| missing("virtual disk size"))?;
    let s = read_item(f, region, s_entry, s_off, 8, "VHDX virtual disk size item")?;
    let size = le64(&s, 0);
    if size > MAX_VIRTUAL_SIZE || size % u64::from(logical_sector) != 0 {
        return Err(bad(
            f,
            "VHDX virtual disk size item",
            region.offset + s_off,
            format!(
                "{size} bytes is not a multiple of the {logical_sector}-byte logical sector of at most 64 TiB"
            ),
        ));
    }
    Ok(Metadata {
        block_bytes,
        leave_allocated: fp_flags & 1 != 0,
        size,
        logical_sector,
        physical_sector,
    })
}

/// The parent's path from a parent locator item (a 20-byte header, then
/// key/value entries of UTF-16LE strings within the item), if any.
fn parent_name(item: &[u8]) -> Option<String> {
    let count = usize::from(le16(item, 18));
    let text = |off: u32, len: u16| -> Option<String> {
        let start = usize::try_from(off).ok()?;
        let bytes = item.get(start..start.checked_add(usize::from(len))?)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(
            String::from_utf16_lossy(&units)
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
        )
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for i in 0..count.min(256) {
        let e = 20 + i * 12;
        let (Some(k), Some(v)) = (
            text(le32(item, e), le16(item, e + 8)),
            text(le32(item, e + 4), le16(item, e + 10)),
        ) else {
            continue;
        };
        found.push((k, v));
    }
    ["relative_path", "absolute_win32_path", "volume_path"]
        .iter()
        .find_map(|key| found.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
}

/// A fixed or dynamic VHDX, read-only.
#[derive(Debug)]
pub struct VhdxDevice {
    file: Arc<FileDevice>,
    size: u64,
    fixed: bool,
    block_bytes: u64,
    /// Payload blocks per chunk; a sector bitmap entry follows each chunk.
    chunk_ratio: u64,
    logical_sector: u32,
    physical_sector: u32,
    bat: Vec<u64>,
    bat_offset: u64,
}

impl VhdxDevice {
    /// Parse the headers, the region table, the metadata and the BAT of
    /// `file`.
    pub fn open(file: Arc<FileDevice>, limits: &ImageLimits) -> Result<Self, DiskError> {
        let f = file.as_ref();
        let mut ident = [0u8; 8];
        let n = usize::try_from(f.len().min(8)).unwrap_or(0);
        f.read_at(0, &mut ident[..n])?;
        if &ident != b"vhdxfile" {
            return Err(bad(
                f,
                "VHDX file type identifier",
                0,
                "no vhdxfile signature",
            ));
        }
        let h = current_header(f)?;
        if h.log_guid != [0u8; 16] {
            return Err(unsupported(
                f,
                FMT,
                format!(
                    "the VHDX log needs replay (the header at offset {} has LogGuid {}, log of {} bytes at offset {}); \
                     open it once in Hyper-V or run qemu-img check -r all on it, which writes it",
                    h.at,
                    show_guid(&h.log_guid),
                    h.log_length,
                    h.log_offset
                ),
            ));
        }
        if h.version != 1 {
            return Err(unsupported(
                f,
                FMT,
                format!(
                    "the header at offset {} has version {} (only 1 is read)",
                    h.at, h.version
                ),
            ));
        }
        let (bat_region, meta_region) = regions(f)?;
        let m = metadata(f, meta_region)?;
        let chunk_ratio = SECTORS_PER_BITMAP * u64::from(m.logical_sector) / m.block_bytes;
        let blocks = m.size.div_ceil(m.block_bytes);
        // Payload entry b is at b + b / chunk_ratio; the table ends with
        // the last payload entry.
        let entries = if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        let bat_bytes = entries * 8;
        let bat_offset = bat_region.offset;
        if bat_bytes > bat_region.length {
            return Err(bad(
                f,
                "VHDX BAT region",
                bat_region.entry_at,
                format!(
                    "{} bytes cannot hold the {entries} entries a disk of {} bytes in {}-byte blocks needs",
                    bat_region.length, m.size, m.block_bytes
                ),
            ));
        }
        if bat_bytes > limits.max_table_bytes {
            return Err(bad(
                f,
                "VHDX BAT",
                bat_offset,
                format!(
                    "{bat_bytes} bytes is larger than the limit of {} bytes",
                    limits.max_table_bytes
                ),
            ));
        }
        let raw = read_table(f, "VHDX BAT", bat_offset, bat_bytes)?;
        let bat = raw.chunks_exact(8).map(|c| le64(c, 0)).collect();
        Ok(Self {
            file,
            size: m.size,
            fixed: m.leave_allocated,
            block_bytes: m.block_bytes,
            chunk_ratio,
            logical_sector: m.logical_sector,
            physical_sector: m.physical_sector,
            bat,
            bat_offset,
        })
    }

    /// The virtual disk's logical sector size (512 or 4096).
    pub fn logical_sector_size(&self) -> u32 {
        self.logical_sector
    }

    /// The virtual disk's physical sector size (512 or 4096).
    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector
    }

    /// The payload block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_bytes
    }

    /// Where payload block `b` is in the file, or None when it reads as zeros.
    fn map(&self, b: u64) -> Result<Option<u64>, DiskError> {
        let f = self.file.as_ref();
        let index = b + b / self.chunk_ratio;
        let entry_at = self.bat_offset + index * 8;
        let e = usize::try_from(index)
            .ok()
            .and_then(|i| self.bat.get(i))
            .copied()
            .unwrap_or(PAYLOAD_NOT_PRESENT);
        match e & 7 {
            // Not present, undefined and unmapped blocks may read as
            // anything or as zeros: zeros leak nothing.
            PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED => Ok(None),
            PAYLOAD_FULLY_PRESENT => {
                let host = e & !(MIB - 1);
                if host < HEADER_SECTION {
                    return Err(bad(
                        f,
                        "VHDX BAT entry",
                        entry_at,
                        format!(
                            "payload block {b} at file offset {host} lies in the header section"
                        ),
                    ));
                }
                Ok(Some(host))
            }
            PAYLOAD_PARTIALLY_PRESENT => Err(unsupported(
                f,
                FMT,
                format!(
                    "its BAT entry at offset {entry_at} says payload block {b} is partially present, \
                     which only a differencing disk may say"
                ),
            )),
            s => Err(bad(
                f,
                "VHDX BAT entry",
                entry_at,
                format!("payload block {b} has the reserved state {s}"),
            )),
        }
    }
}

impl Device for VhdxDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let b = pos / self.block_bytes;
            let within = pos % self.block_bytes;
            let n = usize::try_from((self.block_bytes - within).min((buf.len() - done) as u64))
                .unwrap_or(0);
            let out = &mut buf[done..done + n];
            match self.map(b)? {
                None => out.fill(0),
                Some(host) => {
                    let what = format!(
                        "VHDX payload block {b} (BAT entry at offset {})",
                        self.bat_offset + (b + b / self.chunk_ratio) * 8
                    );
                    read_data(self.file.as_ref(), &what, host.saturating_add(within), out)?
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
        format!(
            "{} (VHDX {})",
            self.file.describe(),
            if self.fixed { "fixed" } else { "dynamic" }
        )
    }
}
