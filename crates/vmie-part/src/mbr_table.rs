//! MBR: sanity checks on sector 0, our own bounds-checked walk of the
//! primary entries and the EBR chain (Linux semantics, with limits), and
//! mbrman for tables it reads the same way.

use std::collections::BTreeSet;
use std::sync::Arc;

use vmie_disk::{Device, DeviceCursor};

use crate::types::mbr_type_name;
use crate::{
    field, guarded, le_u32, place, read, Found, Parser, PartError, PartOptions, PartitionTable,
    TableKind,
};

/// Extended partition types as Linux knows them.
fn is_linux_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85)
}

/// Extended partition types as mbrman 0.6.1 knows them (two more than Linux).
fn is_mbrman_extended(sys: u8) -> bool {
    matches!(sys, 0x05 | 0x0f | 0x85 | 0xc5 | 0xd5)
}

/// How many EBRs in a row without a partition we follow (Linux: 100).
const MAX_EMPTY_EBRS: u32 = 100;

/// One 16-byte partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Entry {
    boot: u8,
    sys: u8,
    start: u32,
    sectors: u32,
}

fn entries(sector: &[u8; 512]) -> [Entry; 4] {
    let mut out = [Entry::default(); 4];
    for (i, e) in out.iter_mut().enumerate() {
        let off = 446 + 16 * i;
        if let Some(raw) = field::<16>(sector, off) {
            let [boot, _, _, _, sys, _, _, _, s0, s1, s2, s3, n0, n1, n2, n3] = raw;
            *e = Entry {
                boot,
                sys,
                start: u32::from_le_bytes([s0, s1, s2, s3]),
                sectors: u32::from_le_bytes([n0, n1, n2, n3]),
            };
        }
    }
    out
}

fn has_55aa(sector: &[u8; 512]) -> bool {
    field::<2>(sector, 510) == Some([0x55, 0xaa])
}

/// Sector 0 of the disk.
#[derive(Debug)]
pub(crate) struct Sector0 {
    bytes: [u8; 512],
    entries: [Entry; 4],
}

/// What sector 0 is, when it has the signature and no 0xee entry.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A partition table (with an optional note for the warnings).
    Mbr(Option<String>),
    /// Not a partition table, and why.
    NotMbr(String),
}

impl Sector0 {
    pub(crate) fn new(bytes: [u8; 512]) -> Self {
        let entries = entries(&bytes);
        Self { bytes, entries }
    }

    pub(crate) fn has_signature(&self) -> bool {
        has_55aa(&self.bytes)
    }

    fn disk_signature(&self) -> u32 {
        le_u32(&self.bytes, 440)
    }

    /// Whether an entry has type 0xee (GPT protective).
    pub(crate) fn has_protective_entry(&self) -> bool {
        self.entries.iter().any(|e| e.sys == 0xee)
    }

    /// For a hybrid MBR, the other types listed (e.g. `"0x83, 0x0c"`).
    pub(crate) fn hybrid_types(&self) -> Option<String> {
        let others: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.sys != 0 && e.sys != 0xee)
            .map(|e| format!("0x{:02x}", e.sys))
            .collect();
        (!others.is_empty()).then(|| others.join(", "))
    }

    /// The filesystem whose boot sector this looks like, as blkid would say.
    fn filesystem(&self) -> Option<&'static str> {
        let b = &self.bytes;
        if field::<8>(b, 3) == Some(*b"NTFS    ") {
            return Some("NTFS");
        }
        if field::<8>(b, 3) == Some(*b"EXFAT   ") {
            return Some("exFAT");
        }
        let fat_magic = matches!(
            field::<8>(b, 54).as_ref().map(|m| &m[..]),
            Some(b"FAT12   " | b"FAT16   " | b"FAT     ")
        ) || field::<8>(b, 82) == Some(*b"FAT32   ")
            || field::<5>(b, 82) == Some(*b"MSWIN")
            || field::<5>(b, 54) == Some(*b"MSDOS");
        if !fat_magic {
            return None;
        }
        // The BPB must be sane too (blkid's fat_valid_superblock, in short).
        let bytes_per_sector = field::<2>(b, 11).map(u16::from_le_bytes).unwrap_or(0);
        let per_cluster = field::<1>(b, 13).map(|[v]| v).unwrap_or(0);
        let reserved = field::<2>(b, 14).map(u16::from_le_bytes).unwrap_or(0);
        let fats = field::<1>(b, 16).map(|[v]| v).unwrap_or(0);
        let media = field::<1>(b, 21).map(|[v]| v).unwrap_or(0);
        let sane = matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
            && per_cluster.is_power_of_two()
            && reserved != 0
            && fats != 0
            && (media == 0xf0 || media >= 0xf8);
        sane.then_some("FAT")
    }

    /// Whether the four entries describe a plausible table on a disk of
    /// `disk_len` bytes: valid boot indicators, at least one partition, every
    /// partition starting after sector 0 and ending inside the disk.
    fn plausible(&self, disk_len: u64, ss: u64) -> bool {
        let mut any = false;
        for e in &self.entries {
            if e.boot != 0 && e.boot != 0x80 {
                return false;
            }
            if e.sectors == 0 {
                continue;
            }
            any = true;
            let end = (u64::from(e.start) + u64::from(e.sectors)).checked_mul(ss);
            if e.start == 0 || end.is_none_or(|end| end > disk_len) {
                return false;
            }
        }
        any
    }

    /// Decide whether sector 0 (signature present, no 0xee entry) is a
    /// partition table, as blkid and Linux would.
    pub(crate) fn judge(&self, disk_len: u64, ss: u64) -> Verdict {
        if let Some(fs) = self.filesystem() {
            if self.plausible(disk_len, ss) {
                return Verdict::Mbr(Some(format!(
                    "sector 0 carries a {fs} boot sector signature but also a plausible \
                     partition table; using the partition table"
                )));
            }
            return Verdict::NotMbr(format!(
                "it is a {fs} boot sector (filesystem on the whole disk)"
            ));
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.boot != 0 && e.boot != 0x80 {
                return Verdict::NotMbr(format!(
                    "entry {} (byte {}) has boot indicator 0x{:02x}; only 0x00 and 0x80 are valid",
                    i + 1,
                    446 + 16 * i,
                    e.boot
                ));
            }
        }
        Verdict::Mbr(None)
    }
}

/// A partition as found in the table, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raw {
    number: u32,
    start: u64,
    sectors: u64,
    sys: u8,
    boot: bool,
}

/// Our walk of the table.
#[derive(Debug, Default)]
struct Walk {
    parts: Vec<Raw>,
    /// Whether mbrman reads this table exactly as we do (and safely): if not,
    /// the reason.
    not_plain: Option<String>,
    warnings: Vec<String>,
}

impl Walk {
    fn not_plain(&mut self, why: impl FnOnce() -> String) {
        if self.not_plain.is_none() {
            self.not_plain = Some(why());
        }
    }
}

/// Read an MBR table whose sector 0 passed [`Sector0::judge`].
pub(crate) fn read_mbr(
    disk: &Arc<dyn Device>,
    sector0: &Sector0,
    opts: &PartOptions,
    mut warnings: Vec<String>,
) -> Result<(PartitionTable, Parser), PartError> {
    let ss = u64::from(opts.sector_size);
    let mut parser = Parser::Own;
    let walk = walk(&**disk, sector0, ss, opts)?;
    warnings.extend(walk.warnings.iter().cloned());

    let parts = match &walk.not_plain {
        Some(_) => walk.parts.clone(),
        None => match guarded(&**disk, "MBR", "mbrman", || {
            with_mbrman(disk, opts.sector_size)
        })? {
            Ok(theirs) if theirs == walk.parts => {
                parser = Parser::Mbrman;
                theirs
            }
            Ok(theirs) => {
                warnings.push(format!(
                    "mbrman read the table differently from our own parse ({} vs {} \
                     partitions); using our own parse",
                    theirs.len(),
                    walk.parts.len()
                ));
                walk.parts.clone()
            }
            Err(e) => {
                warnings.push(format!(
                    "mbrman could not read the table ({e}); using our own parse"
                ));
                walk.parts.clone()
            }
        },
    };

    let sig = sector0.disk_signature();
    let mut partitions = Vec::new();
    for r in parts {
        let (Some(start), Some(size)) = (r.start.checked_mul(ss), r.sectors.checked_mul(ss)) else {
            warnings.push(format!(
                "partition {} (sector {}, {} sectors) does not fit in 64 bits; left out",
                r.number, r.start, r.sectors
            ));
            continue;
        };
        let found = Found {
            number: r.number,
            start,
            size,
            type_id: format!("0x{:02x}", r.sys),
            type_name: mbr_type_name(r.sys),
            bootable: r.boot,
            name: None,
            uuid: Some(format!("{sig:08x}-{:02x}", r.number)),
        };
        partitions.extend(place(disk, found, &mut warnings));
    }
    partitions.sort_by_key(|p| p.number);
    if partitions.is_empty() && walk.parts.is_empty() {
        warnings.push("the MBR partition table lists no partitions".to_string());
    }
    let table = PartitionTable {
        kind: TableKind::Mbr,
        disk_id: Some(format!("{sig:08x}")),
        partitions,
        warnings,
    };
    Ok((table, parser))
}

/// Walk the primary entries and every extended partition's EBR chain the way
/// Linux's `msdos_partition` does, with limits, and note whether mbrman would
/// read the same thing.
fn walk(
    disk: &dyn Device,
    sector0: &Sector0,
    ss: u64,
    opts: &PartOptions,
) -> Result<Walk, PartError> {
    let mut w = Walk::default();
    let mut next_logical = 5u32;
    let mut extended_seen = 0u32;
    for (i, e) in sector0.entries.iter().enumerate() {
        let slot = i as u32 + 1;
        if (e.sys == 0) != (e.sectors == 0) {
            w.not_plain(|| {
                format!(
                    "entry {slot} has type 0x{:02x} and {} sectors",
                    e.sys, e.sectors
                )
            });
        }
        if is_mbrman_extended(e.sys) && !is_linux_extended(e.sys) {
            w.not_plain(|| format!("entry {slot} has type 0x{:02x}", e.sys));
        }
        if e.sectors == 0 {
            continue;
        }
        if e.start == 0 {
            w.warnings.push(format!(
                "partition {slot} starts at sector 0, on top of the MBR"
            ));
            w.not_plain(|| format!("partition {slot} starts at sector 0"));
        }
        w.parts.push(Raw {
            number: slot,
            start: u64::from(e.start),
            sectors: u64::from(e.sectors),
            sys: e.sys,
            boot: e.boot == 0x80,
        });
        if is_linux_extended(e.sys) {
            extended_seen += 1;
            if extended_seen > 1 {
                w.not_plain(|| "more than one extended partition".to_string());
            }
            walk_extended(disk, ss, slot, *e, opts, &mut next_logical, &mut w)?;
        }
    }
    w.parts.sort_by_key(|r| r.number);
    Ok(w)
}

/// Follow one extended partition's EBR chain.
fn walk_extended(
    disk: &dyn Device,
    ss: u64,
    slot: u32,
    ext: Entry,
    opts: &PartOptions,
    next_logical: &mut u32,
    w: &mut Walk,
) -> Result<(), PartError> {
    let first = u64::from(ext.start);
    let first_size = u64::from(ext.sectors);
    let mut this = first;
    let mut this_size = first_size;
    let mut visited = BTreeSet::new();
    let mut empty_run = 0u32;
    let mut prev_rel = 0u64;
    let mut ebrs = 0u32;
    let max_ebrs = opts.max_logical.saturating_add(MAX_EMPTY_EBRS);
    let ctx = |n: u32| format!("extended partition {slot}: EBR for partition {n}");

    loop {
        if ebrs >= max_ebrs {
            w.warnings.push(format!(
                "{}: stopped after {ebrs} EBRs (limit {max_ebrs})",
                ctx(*next_logical)
            ));
            w.not_plain(|| "EBR limit reached".to_string());
            return Ok(());
        }
        if !visited.insert(this) {
            w.warnings.push(format!(
                "{} at sector {this}: the EBR chain loops back to an EBR already read; stopped",
                ctx(*next_logical)
            ));
            w.not_plain(|| "EBR loop".to_string());
            return Ok(());
        }
        let offset = this.checked_mul(ss);
        let inside = offset
            .and_then(|o| o.checked_add(512))
            .is_some_and(|end| end <= disk.len());
        let Some(offset) = offset.filter(|_| inside) else {
            w.warnings.push(format!(
                "{} at sector {this} is beyond the end of the disk ({} bytes); later logical \
                 partitions ignored",
                ctx(*next_logical),
                disk.len()
            ));
            w.not_plain(|| "EBR beyond the disk".to_string());
            return Ok(());
        };
        if this > u64::from(u32::MAX) {
            w.not_plain(|| "EBR beyond sector 2^32".to_string());
        }
        let mut buf = [0u8; 512];
        read(disk, offset, &mut buf, &ctx(*next_logical))?;
        if !has_55aa(&buf) {
            if ebrs > 0 {
                w.warnings.push(format!(
                    "{} at byte {offset} has no 0x55AA signature; later logical partitions \
                     ignored",
                    ctx(*next_logical)
                ));
                w.not_plain(|| "EBR without signature".to_string());
            }
            return Ok(());
        }
        ebrs += 1;
        let e = entries(&buf);

        // mbrman takes entry 1 as the logical partition and entry 2 as the link.
        if e.iter().take(2).any(|p| p.boot != 0 && p.boot != 0x80) {
            w.not_plain(|| format!("EBR at byte {offset} has an invalid boot indicator"));
        }
        let [e1, e2, e3, e4] = e;
        if e1.sys == 0 || e1.sectors == 0 || is_mbrman_extended(e1.sys) {
            w.not_plain(|| format!("EBR at byte {offset}: first entry is not a logical partition"));
        }
        if e3.sectors != 0 || e4.sectors != 0 {
            w.not_plain(|| format!("EBR at byte {offset} uses entries 3 and 4"));
        }

        let mut found = false;
        for (i, p) in e.iter().enumerate() {
            if p.sectors == 0 || is_linux_extended(p.sys) {
                continue;
            }
            let rel = u64::from(p.start);
            let size = u64::from(p.sectors);
            let start = this + rel;
            // Linux: entries 3 and 4 sometimes hold garbage; keep them only if
            // they lie inside this EBR's area and the extended partition.
            if i >= 2
                && (rel + size > this_size || start < first || start + size > first + first_size)
            {
                continue;
            }
            if *next_logical - 5 >= opts.max_logical {
                w.warnings.push(format!(
                    "extended partition {slot}: more than {} logical partitions; stopped at \
                     partition {} (limit PartOptions::max_logical)",
                    opts.max_logical,
                    *next_logical - 1
                ));
                w.not_plain(|| "logical partition limit reached".to_string());
                return Ok(());
            }
            if start > u64::from(u32::MAX) {
                w.not_plain(|| "logical partition beyond sector 2^32".to_string());
            }
            w.parts.push(Raw {
                number: *next_logical,
                start,
                sectors: size,
                sys: p.sys,
                boot: p.boot == 0x80,
            });
            found = true;
            let Some(n) = next_logical.checked_add(1) else {
                w.not_plain(|| "partition numbers exhausted".to_string());
                return Ok(());
            };
            *next_logical = n;
        }
        if found {
            empty_run = 0;
        } else {
            empty_run += 1;
            if empty_run > MAX_EMPTY_EBRS {
                w.warnings.push(format!(
                    "extended partition {slot}: {MAX_EMPTY_EBRS} EBRs in a row without a \
                     partition; stopped"
                ));
                w.not_plain(|| "too many empty EBRs".to_string());
                return Ok(());
            }
        }

        // Linux follows the first extended-type entry; mbrman follows entry 2
        // whatever its type, and requires strictly increasing offsets.
        let link = e
            .iter()
            .position(|p| p.sectors != 0 && is_linux_extended(p.sys));
        let Some(link_index) = link else {
            if e2.start != 0 {
                w.not_plain(|| format!("EBR at byte {offset}: entry 2 is not a link"));
            }
            return Ok(());
        };
        let Some(&p) = e.get(link_index) else {
            return Ok(());
        };
        let rel = u64::from(p.start);
        if link_index != 1 {
            w.not_plain(|| format!("EBR at byte {offset}: link is not entry 2"));
        }
        if rel <= prev_rel {
            w.not_plain(|| format!("EBR at byte {offset}: link does not go forward"));
        }
        prev_rel = rel;
        this = first + rel;
        this_size = u64::from(p.sectors);
    }
}

/// Read the table with mbrman (only called on tables [`walk`] found plain).
fn with_mbrman(disk: &Arc<dyn Device>, sector_size: u32) -> Result<Vec<Raw>, mbrman::Error> {
    let mut cursor = DeviceCursor::new(Arc::clone(disk));
    let mbr = mbrman::MBR::read_from(&mut cursor, sector_size)?;
    let mut out = Vec::new();
    for (i, p) in mbr.header.iter() {
        if p.is_used() {
            out.push(Raw {
                number: u32::try_from(i).unwrap_or(u32::MAX),
                start: u64::from(p.starting_lba),
                sectors: u64::from(p.sectors),
                sys: p.sys,
                boot: p.is_active(),
            });
        }
    }
    for (i, l) in mbr.logical_partitions.iter().enumerate() {
        let p = &l.partition;
        out.push(Raw {
            number: u32::try_from(i + 5).unwrap_or(u32::MAX),
            start: u64::from(p.starting_lba),
            sectors: u64::from(p.sectors),
            sys: p.sys,
            boot: p.is_active(),
        });
    }
    // Our walk lists an extended partition before its logicals, then the
    // remaining primaries; compare in number order.
    out.sort_by_key(|r| r.number);
    Ok(out)
}
