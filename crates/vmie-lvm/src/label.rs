//! The on-disk parts of a physical volume: the label (`LABELONE` in one of
//! sectors 0-3), the PV header after it, and each metadata area's header
//! and ring buffer (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`).

use vmie_disk::checksum::{lvm2_crc, lvm2_crc_update, LVM2_CRC_INITIAL};
use vmie_disk::Device;

use crate::{LvmError, LvmOptions};

const SECTOR: u64 = 512;
/// The metadata-area header is one sector; the ring's text follows it.
const MDA_HEADER_SIZE: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e";
/// `raw_locn.flags`: this copy of the metadata area is ignored.
const RAW_LOCN_IGNORED: u32 = 1;

/// A physical volume's label and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Sector (0-3) holding the label.
    pub sector: u64,
    /// PV UUID as stored: 32 characters without dashes.
    pub uuid: String,
    /// Device size the PV header records, in bytes (0 when unknown).
    pub device_size: u64,
    /// Data areas (offset, size) in bytes; size 0 means "to the end".
    pub data_areas: Vec<(u64, u64)>,
    /// Metadata areas (offset, size) in bytes.
    pub metadata_areas: Vec<(u64, u64)>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// LVM prints PV and VG UUIDs in groups 6-4-4-4-4-4-6.
pub fn format_uuid(raw: &str) -> String {
    if raw.len() != 32 || !raw.is_ascii() {
        return raw.to_string();
    }
    let mut out = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6usize, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&raw[at..at + n]);
        at += n;
    }
    out
}

/// Find and check the PV label on `dev`. `Ok(None)`: no label (not a PV);
/// an error: a label whose checksum or header is wrong.
pub fn read_label(dev: &dyn Device) -> Result<Option<PvLabel>, LvmError> {
    let name = dev.describe();
    for sector in 0..4u64 {
        let at = sector * SECTOR;
        if at + SECTOR > dev.len() {
            break;
        }
        let mut buf = [0u8; SECTOR as usize];
        dev.read_at(at, &mut buf)?;
        if &buf[0..8] != b"LABELONE" || &buf[24..32] != b"LVM2 001" {
            continue;
        }
        let bad = |why: String| LvmError::Corrupt {
            what: name.clone(),
            offset: at,
            why,
        };
        if le64(&buf, 8) != sector {
            return Err(bad(format!(
                "the PV label says it is in sector {}, it was found in sector {sector}",
                le64(&buf, 8)
            )));
        }
        let want = le32(&buf, 16);
        let got = lvm2_crc(&buf[20..]);
        if want != got {
            return Err(bad(format!(
                "PV label checksum 0x{want:08x} does not match its contents (0x{got:08x})"
            )));
        }
        let off = le32(&buf, 20) as usize;
        // pv_header: uuid[32], device_size u64, then two NULL-terminated
        // lists of {offset u64, size u64}, all inside this sector.
        if !(32..=SECTOR as usize - 40).contains(&off) {
            return Err(bad(format!(
                "PV header offset {off} is outside the label sector"
            )));
        }
        let uuid_bytes = &buf[off..off + 32];
        if !uuid_bytes.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("the PV UUID is not 32 letters and digits".into()));
        }
        let uuid = String::from_utf8_lossy(uuid_bytes).into_owned();
        let device_size = le64(&buf, off + 32);
        let mut p = off + 40;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            loop {
                if p + 16 > SECTOR as usize {
                    return Err(bad(
                        "the PV header's area lists run past the label sector".into()
                    ));
                }
                let (o, s) = (le64(&buf, p), le64(&buf, p + 8));
                p += 16;
                if o == 0 {
                    break;
                }
                list.push((o, s));
            }
        }
        let [data_areas, metadata_areas] = lists;
        return Ok(Some(PvLabel {
            sector,
            uuid,
            device_size,
            data_areas,
            metadata_areas,
        }));
    }
    Ok(None)
}

/// The committed metadata text of one metadata area, checksum verified.
/// `Ok(None)`: the area is empty or marked ignored.
pub fn read_area(
    dev: &dyn Device,
    area: (u64, u64),
    opts: &LvmOptions,
) -> Result<Option<Vec<u8>>, LvmError> {
    let name = dev.describe();
    let (start, size) = area;
    let bad = |offset: u64, why: String| LvmError::Corrupt {
        what: format!("{name} metadata area at {start}"),
        offset,
        why,
    };
    let end = start
        .checked_add(size)
        .filter(|&e| e <= dev.len())
        .ok_or_else(|| {
            bad(
                start,
                format!("the area ({size} bytes) runs past the device end"),
            )
        })?;
    let _ = end;
    if size <= MDA_HEADER_SIZE {
        return Err(bad(start, format!("the area is only {size} bytes")));
    }
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_at(start, &mut h)?;
    let want = le32(&h, 0);
    let got = lvm2_crc(&h[4..]);
    if want != got {
        return Err(bad(
            start,
            format!("metadata-area header checksum 0x{want:08x} does not match (0x{got:08x})"),
        ));
    }
    if &h[4..20] != MDA_MAGIC {
        return Err(bad(
            start,
            "metadata-area header has the wrong magic".into(),
        ));
    }
    let version = le32(&h, 20);
    if version != 1 {
        return Err(bad(
            start,
            format!("metadata-area header version {version}, not 1"),
        ));
    }
    if le64(&h, 24) != start {
        return Err(bad(
            start,
            format!("metadata-area header says it starts at {}", le64(&h, 24)),
        ));
    }
    let mda_size = le64(&h, 32);
    if mda_size != size {
        return Err(bad(
            start,
            format!("metadata-area header says the area is {mda_size} bytes, the PV header {size}"),
        ));
    }
    // raw_locn[0]: the committed copy.
    let offset = le64(&h, 40);
    let len = le64(&h, 48);
    let checksum = le32(&h, 56);
    let flags = le32(&h, 60);
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if offset < MDA_HEADER_SIZE || offset >= size {
        return Err(bad(
            start,
            format!("the metadata text's offset {offset} is outside the ring"),
        ));
    }
    if len == 0 || len > size - MDA_HEADER_SIZE || len > opts.max_metadata {
        return Err(bad(
            start,
            format!(
                "the metadata text is {len} bytes (ring {} bytes, limit {})",
                size - MDA_HEADER_SIZE,
                opts.max_metadata
            ),
        ));
    }
    let len_us = usize::try_from(len).map_err(|_| bad(start, "too large".into()))?;
    let mut text = vec![0u8; len_us];
    // A copy may wrap around the end of the ring to just after the header.
    let first = (size - offset).min(len);
    let first_us = usize::try_from(first).map_err(|_| bad(start, "too large".into()))?;
    dev.read_at(start + offset, &mut text[..first_us])?;
    if first < len {
        dev.read_at(start + MDA_HEADER_SIZE, &mut text[first_us..])?;
    }
    let got = lvm2_crc_update(LVM2_CRC_INITIAL, &text);
    if got != checksum {
        return Err(bad(
            start + offset,
            format!("the metadata text checksum 0x{checksum:08x} does not match (0x{got:08x})"),
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_groups() {
        assert_eq!(
            super::format_uuid("abcdef0123456789abcdef0123456789"),
            "abcdef-0123-4567-89ab-cdef-0123-456789"
        );
    }
}
