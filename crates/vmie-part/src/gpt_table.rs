//! GPT: our own checked parse of the headers and entry array, then the `gpt`
//! crate for the header it would pick anyway, when that is the one we chose.
//!
//! gpt 4.1.0 `open_from_device` reads the primary header at LBA 1 and the
//! backup at the disk's last LBA, accepting a header when its signature is
//! "EFI PART" and the CRC32 of its first 92 bytes matches; it then uses the
//! primary if accepted, else the backup, asserts `part_size == 128` and
//! allocates `num_parts * part_size` bytes. So before calling it we check
//! every header it could use and call it only when the header it will pick is
//! the one we validated (limits, entry array inside the disk, entry array
//! CRC). In every other case (a backup somewhere other than the last LBA, a
//! valid primary header with a damaged entry array, a header size other than
//! 92) we read the already-checked entry array ourselves.

use std::sync::Arc;

use gpt::disk::LogicalBlockSize;
use vmie_disk::{read_vec, Device, DeviceCursor};

use crate::types::gpt_type_name;
use crate::{
    field, guarded, le_u32, le_u64, place, read, Found, Parser, PartError, PartOptions,
    PartitionTable, TableKind,
};

const SIGNATURE: [u8; 8] = *b"EFI PART";
const ENTRY_SIZE: u32 = 128;
/// GPT attribute bit 2: legacy BIOS bootable.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Where a GPT header signature is, trying `preferred` sector size first:
/// `(sector size, LBA)`, looking at LBA 1 then at the last LBA.
pub(crate) fn find_signature(
    disk: &dyn Device,
    preferred: u32,
) -> Result<Option<(u64, u64)>, PartError> {
    let other = if preferred == 512 { 4096 } else { 512 };
    let sizes = [u64::from(preferred), other];
    for ss in sizes {
        if has_signature(disk, ss, 1)? {
            return Ok(Some((ss, 1)));
        }
    }
    for ss in sizes {
        if let Some(last) = last_lba(disk.len(), ss) {
            if last > 1 && has_signature(disk, ss, last)? {
                return Ok(Some((ss, last)));
            }
        }
    }
    Ok(None)
}

/// Last LBA of a disk of `len` bytes, as Linux and the gpt crate compute it.
fn last_lba(len: u64, ss: u64) -> Option<u64> {
    (len / ss).checked_sub(1)
}

fn has_signature(disk: &dyn Device, ss: u64, lba: u64) -> Result<bool, PartError> {
    let Some(off) = lba.checked_mul(ss) else {
        return Ok(false);
    };
    if off.checked_add(ss).is_none_or(|end| end > disk.len()) {
        return Ok(false);
    }
    let mut sig = [0u8; 8];
    read(disk, off, &mut sig, "a GPT header signature")?;
    Ok(sig == SIGNATURE)
}

/// CRC32 of a header's first `len` bytes with its CRC field zeroed.
fn header_crc(buf: &[u8], len: usize) -> Option<u32> {
    let bytes = buf.get(..len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(bytes.get(..16)?);
    h.update(&[0u8; 4]);
    h.update(bytes.get(20..)?);
    Some(h.finalize())
}

/// A header that passed every check.
#[derive(Debug, Clone)]
struct Header {
    lba: u64,
    header_size: u32,
    alternate_lba: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    num_entries: u32,
    entries_crc: u32,
}

#[derive(Debug)]
enum Check {
    /// No header there (no signature, or outside the disk).
    Absent(String),
    /// A header with a bad checksum or inconsistent: Linux would not use it.
    Damaged(String),
    /// A usable header.
    Valid(Header),
}

/// Parse and check the header at `lba`. A header whose checksum is right
/// but whose fields break our limits is an error, whichever header it is.
fn check_header(
    disk: &dyn Device,
    ss: u64,
    lba: u64,
    which: &'static str,
    opts: &PartOptions,
) -> Result<Check, PartError> {
    let len = disk.len();
    let Some(offset) = lba
        .checked_mul(ss)
        .filter(|o| o.checked_add(ss).is_some_and(|end| end <= len))
    else {
        return Ok(Check::Absent(format!(
            "LBA {lba} is beyond the end of the disk ({len} bytes)"
        )));
    };
    let buf = read_vec(disk, offset, ss as usize).map_err(|source| PartError::Read {
        disk: disk.describe(),
        what: format!("the {which} GPT header"),
        offset,
        source,
    })?;
    if field::<8>(&buf, 0) != Some(SIGNATURE) {
        return Ok(Check::Absent(format!(
            "no \"EFI PART\" signature at LBA {lba}"
        )));
    }
    let invalid = |field: &'static str, value: u64, why: String| PartError::GptHeader {
        disk: disk.describe(),
        header: which,
        lba,
        offset,
        field,
        value,
        why,
    };
    let stored_crc = le_u32(&buf, 16);
    let header_size = le_u32(&buf, 12);
    if !(92..=ss).contains(&u64::from(header_size)) {
        // The gpt crate checks the CRC over 92 bytes whatever the size says,
        // so such a header with a valid 92-byte CRC must be refused outright.
        if header_crc(&buf, 92) == Some(stored_crc) {
            return Err(invalid(
                "header size",
                u64::from(header_size),
                format!("must be between 92 and the sector size ({ss})"),
            ));
        }
        return Ok(Check::Damaged(format!(
            "header size {header_size} is out of range"
        )));
    }
    let computed = header_crc(&buf, header_size as usize);
    if computed != Some(stored_crc) {
        return Ok(Check::Damaged(format!(
            "header CRC32 mismatch (stored 0x{stored_crc:08x}, computed 0x{:08x})",
            computed.unwrap_or(0)
        )));
    }
    let h = Header {
        lba,
        header_size,
        alternate_lba: le_u64(&buf, 32),
        last_usable: le_u64(&buf, 48),
        disk_guid: field::<16>(&buf, 56).unwrap_or([0; 16]),
        entries_lba: le_u64(&buf, 72),
        num_entries: le_u32(&buf, 80),
        entries_crc: le_u32(&buf, 88),
    };
    let my_lba = le_u64(&buf, 24);
    let entry_size = le_u32(&buf, 84);
    if entry_size != ENTRY_SIZE {
        return Err(invalid(
            "partition entry size",
            u64::from(entry_size),
            "only 128-byte entries are supported".to_string(),
        ));
    }
    if h.num_entries > opts.max_gpt_entries {
        return Err(invalid(
            "number of partition entries",
            u64::from(h.num_entries),
            format!(
                "more than the limit of {} (PartOptions::max_gpt_entries)",
                opts.max_gpt_entries
            ),
        ));
    }
    let array_len = u64::from(h.num_entries) * u64::from(ENTRY_SIZE);
    let array_off = h.entries_lba.checked_mul(ss);
    if array_off
        .and_then(|o| o.checked_add(array_len))
        .is_none_or(|end| end > len)
    {
        return Err(invalid(
            "partition entry array LBA",
            h.entries_lba,
            format!(
                "the array of {} entries ({array_len} bytes) does not fit in the disk ({len} bytes)",
                h.num_entries
            ),
        ));
    }
    if my_lba != lba {
        return Ok(Check::Damaged(format!(
            "header at LBA {lba} says it is at LBA {my_lba}"
        )));
    }
    Ok(Check::Valid(h))
}

impl Header {
    fn array_offset(&self, ss: u64) -> u64 {
        // Checked in check_header.
        self.entries_lba.saturating_mul(ss)
    }

    fn array_len(&self) -> Option<usize> {
        usize::try_from(u64::from(self.num_entries) * u64::from(ENTRY_SIZE)).ok()
    }
}

/// Read the entry array of a checked header and verify its CRC.
fn read_entries(
    disk: &dyn Device,
    ss: u64,
    h: &Header,
    which: &str,
) -> Result<Result<Vec<u8>, String>, PartError> {
    let offset = h.array_offset(ss);
    let Some(len) = h.array_len() else {
        return Ok(Err(format!(
            "partition entry array of {} entries is too large for this machine",
            h.num_entries
        )));
    };
    let bytes = read_vec(disk, offset, len).map_err(|source| PartError::Read {
        disk: disk.describe(),
        what: format!("the {which} GPT partition entry array"),
        offset,
        source,
    })?;
    let crc = crc32fast::hash(&bytes);
    if crc != h.entries_crc {
        return Ok(Err(format!(
            "partition entry array at byte {offset} has CRC32 0x{crc:08x}, header says 0x{:08x}",
            h.entries_crc
        )));
    }
    Ok(Ok(bytes))
}

/// Whether the gpt crate accepts the header at `lba`: signature and CRC32
/// over the first 92 bytes (whatever the header size field says).
fn gpt_crate_accepts(disk: &dyn Device, ss: u64, lba: u64) -> Result<bool, PartError> {
    let Some(off) = lba.checked_mul(ss) else {
        return Ok(false);
    };
    if off.checked_add(92).is_none_or(|end| end > disk.len()) {
        return Ok(false);
    }
    let mut buf = [0u8; 92];
    read(disk, off, &mut buf, "a GPT header")?;
    Ok(field::<8>(&buf, 0) == Some(SIGNATURE) && header_crc(&buf, 92) == Some(le_u32(&buf, 16)))
}

/// A used entry of the table.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    number: u32,
    type_guid: String,
    part_guid: String,
    first_lba: u64,
    last_lba: u64,
    attributes: u64,
    name: String,
}

/// Format a GUID stored in GPT's mixed-endian layout.
fn guid_string(b: [u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e0, e1, e2, e3, e4, e5] = b;
    format!(
        "{:08x}-{:04x}-{:04x}-{d0:02x}{d1:02x}-{e0:02x}{e1:02x}{e2:02x}{e3:02x}{e4:02x}{e5:02x}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
    )
}

/// Our own parse of a checked entry array.
fn parse_entries(array: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(ENTRY_SIZE as usize).enumerate() {
        let type_raw = field::<16>(e, 0).unwrap_or([0; 16]);
        if type_raw == [0; 16] {
            continue;
        }
        let name: Vec<u16> = e
            .get(56..128)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&c| c != 0)
            .collect();
        out.push(Entry {
            number: u32::try_from(i + 1).unwrap_or(u32::MAX),
            type_guid: guid_string(type_raw),
            part_guid: guid_string(field::<16>(e, 16).unwrap_or([0; 16])),
            first_lba: le_u64(e, 32),
            last_lba: le_u64(e, 40),
            attributes: le_u64(e, 48),
            name: String::from_utf16_lossy(&name),
        });
    }
    out
}

/// The table as the gpt crate reads it (only called when it will read the
/// header we checked).
fn with_gpt_crate(disk: &Arc<dyn Device>, ss: u64) -> Result<(String, Vec<Entry>), gpt::GptError> {
    let lb = if ss == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    };
    let g = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(lb)
        .open_from_device(DeviceCursor::new(Arc::clone(disk)))?;
    let entries = g
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(&number, p)| Entry {
            number,
            type_guid: p.part_type_guid.guid.to_string(),
            part_guid: p.part_guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            attributes: p.flags,
            name: p.name.clone(),
        })
        .collect();
    Ok((g.guid().to_string(), entries))
}

/// Read a GPT disk (sector 0 has a 0xee entry).
pub(crate) fn read_gpt(
    disk: &Arc<dyn Device>,
    opts: &PartOptions,
    mut warnings: Vec<String>,
) -> Result<(PartitionTable, Parser), PartError> {
    let dev: &dyn Device = &**disk;
    let Some((ss, _)) = find_signature(dev, opts.sector_size)? else {
        return Err(PartError::NoUsableGpt {
            disk: dev.describe(),
            why: "no \"EFI PART\" signature at LBA 1 or at the last LBA (512- or 4096-byte \
                  sectors)"
                .to_string(),
        });
    };
    if ss != u64::from(opts.sector_size) {
        warnings.push(format!("GPT found with {ss}-byte logical sectors"));
    }
    let len = dev.len();
    let last = last_lba(len, ss).unwrap_or(0);

    let mut problems: Vec<String> = Vec::new();
    let mut primary_problem = String::new();
    let mut chosen: Option<(Header, Vec<u8>)> = None;
    let mut backup_candidates = Vec::new();
    let mut primary_alternate = None;
    match check_header(dev, ss, 1, "primary", opts)? {
        Check::Valid(h) => {
            primary_alternate = Some(h.alternate_lba);
            if h.alternate_lba > 1 {
                backup_candidates.push(h.alternate_lba);
            }
            match read_entries(dev, ss, &h, "primary")? {
                Ok(array) => chosen = Some((h, array)),
                Err(why) => {
                    problems.push(format!("primary header at LBA 1: {why}"));
                    primary_problem = why;
                }
            }
        }
        Check::Damaged(why) | Check::Absent(why) => {
            problems.push(format!("primary header at LBA 1: {why}"));
            primary_problem = why;
        }
    }
    if last > 1 && !backup_candidates.contains(&last) {
        backup_candidates.push(last);
    }
    let mut backup_ok = false;
    let mut backup_problems = Vec::new();
    for lba in backup_candidates {
        match check_header(dev, ss, lba, "backup", opts)? {
            Check::Valid(h) => {
                if chosen.is_some() {
                    backup_ok = true;
                    continue;
                }
                match read_entries(dev, ss, &h, "backup")? {
                    Ok(array) => {
                        warnings.push(format!(
                            "primary GPT header damaged ({primary_problem}); using the backup \
                             at LBA {lba}"
                        ));
                        chosen = Some((h, array));
                        backup_ok = true;
                    }
                    Err(why) => problems.push(format!("backup header at LBA {lba}: {why}")),
                }
            }
            Check::Damaged(why) | Check::Absent(why) => {
                backup_problems.push(format!("backup header at LBA {lba}: {why}"));
            }
        }
    }
    let Some((header, array)) = chosen else {
        problems.extend(backup_problems);
        return Err(PartError::NoUsableGpt {
            disk: dev.describe(),
            why: problems.join("; "),
        });
    };
    if header.lba == 1 && !backup_ok {
        warnings.push(format!(
            "backup GPT header missing or damaged ({})",
            backup_problems.join("; ")
        ));
    }
    if let Some(alt) = primary_alternate.filter(|&alt| alt != last) {
        warnings.push(format!(
            "the primary GPT header puts the backup at LBA {alt} but the disk's last LBA is \
             {last} (image resized or truncated?)"
        ));
    }
    if header.last_usable > last {
        warnings.push(format!(
            "the GPT's last usable LBA {} is beyond the disk's last LBA {last} (image truncated?)",
            header.last_usable
        ));
    }

    // The gpt crate picks the primary if it accepts it, else the last LBA.
    let crate_pick = if gpt_crate_accepts(dev, ss, 1)? {
        Some(1)
    } else if len >= 3 * ss && gpt_crate_accepts(dev, ss, last)? {
        Some(last)
    } else {
        None
    };
    let ours = || (guid_string(header.disk_guid), parse_entries(&array));
    let mut parser = Parser::Own;
    let (disk_id, entries) = if crate_pick == Some(header.lba) && header.header_size == 92 {
        match guarded(dev, "GPT", "gpt", || with_gpt_crate(disk, ss))? {
            Ok(theirs) => {
                parser = Parser::GptCrate;
                theirs
            }
            Err(e) => {
                warnings.push(format!(
                    "the gpt crate could not read the table ({e}); using our own parse"
                ));
                ours()
            }
        }
    } else {
        ours()
    };

    let mut partitions = Vec::new();
    for e in entries {
        let bytes = e
            .last_lba
            .checked_sub(e.first_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ss));
        let (Some(start), Some(size)) = (e.first_lba.checked_mul(ss), bytes) else {
            warnings.push(format!(
                "partition {} has first LBA {} and last LBA {}; left out",
                e.number, e.first_lba, e.last_lba
            ));
            continue;
        };
        let found = Found {
            number: e.number,
            start,
            size,
            type_name: gpt_type_name(&e.type_guid),
            type_id: e.type_guid,
            bootable: e.attributes & LEGACY_BIOS_BOOTABLE != 0,
            name: (!e.name.is_empty()).then_some(e.name),
            uuid: Some(e.part_guid),
        };
        partitions.extend(place(disk, found, &mut warnings));
    }
    let table = PartitionTable {
        kind: TableKind::Gpt,
        disk_id: Some(disk_id),
        partitions,
        warnings,
    };
    Ok((table, parser))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_layout() {
        // 0FC63DAF-8483-4772-8E79-3D69D8477DE4 as stored on disk.
        let raw = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        assert_eq!(guid_string(raw), "0fc63daf-8483-4772-8e79-3d69d8477de4");
    }

    #[test]
    fn header_crc_needs_the_bytes() {
        assert_eq!(header_crc(&[0u8; 10], 92), None);
        assert!(header_crc(&[0u8; 92], 92).is_some());
    }
}
