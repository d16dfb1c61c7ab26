//! Directory entries: 32-byte slots, long-name runs checked against their
//! short entry's checksum, and FAT dates and times.

use vmie_guestfs::Timestamp;

use crate::bpb::FatKind;
use crate::name;

pub(crate) const ATTR_READ_ONLY: u8 = 0x01;
pub(crate) const ATTR_VOLUME: u8 = 0x08;
pub(crate) const ATTR_DIR: u8 = 0x10;
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
pub(crate) const ATTR_LFN: u8 = 0x0F;

/// Most entries a directory may have (the specification's limit: 65536
/// slots, 2 MiB).
pub(crate) const DIR_MAX_BYTES: usize = 65536 * 32;

/// One live entry of a directory: a short entry and the long name before
/// it, when that long name is intact.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The name shown: the long name, else the short one.
    pub name: String,
    /// The short name, as displayed (for lookups by short name).
    pub short_name: String,
    /// First slot (the first long-name entry, or the short entry).
    pub first: usize,
    /// The short entry's slot.
    pub slot: usize,
    /// The short entry.
    pub raw: [u8; 32],
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

impl Entry {
    pub fn attr(&self) -> u8 {
        self.raw[11]
    }

    pub fn is_dir(&self) -> bool {
        self.attr() & ATTR_DIR != 0
    }

    pub fn cluster(&self, kind: FatKind) -> u32 {
        cluster_of(&self.raw, kind)
    }

    pub fn size(&self) -> u32 {
        u32::from_le_bytes([self.raw[28], self.raw[29], self.raw[30], self.raw[31]])
    }

    pub fn mtime(&self) -> Timestamp {
        from_fat(le16(&self.raw, 24), le16(&self.raw, 22), 0)
    }

    pub fn ctime(&self) -> Timestamp {
        from_fat(le16(&self.raw, 16), le16(&self.raw, 14), self.raw[13])
    }

    pub fn atime(&self) -> Timestamp {
        from_fat(le16(&self.raw, 18), 0, 0)
    }

    /// Whether `name` names this entry (long or short name, ignoring case).
    pub fn matches(&self, name: &str) -> bool {
        name::eq_ci(&self.name, name) || name::eq_ci(&self.short_name, name)
    }
}

pub(crate) fn short_of(raw: &[u8]) -> [u8; 11] {
    let mut s = [0u8; 11];
    s.copy_from_slice(&raw[..11]);
    s
}

pub(crate) fn cluster_of(raw: &[u8], kind: FatKind) -> u32 {
    let lo = u32::from(le16(raw, 26));
    let hi = if kind == FatKind::Fat32 {
        u32::from(le16(raw, 20))
    } else {
        0
    };
    hi << 16 | lo
}

pub(crate) fn set_cluster(raw: &mut [u8], c: u32, kind: FatKind) {
    raw[26..28].copy_from_slice(&((c & 0xFFFF) as u16).to_le_bytes());
    let hi = if kind == FatKind::Fat32 {
        (c >> 16) as u16
    } else {
        0
    };
    raw[20..22].copy_from_slice(&hi.to_le_bytes());
}

pub(crate) fn set_size(raw: &mut [u8], size: u32) {
    raw[28..32].copy_from_slice(&size.to_le_bytes());
}

/// Set the modification (and, with `created`, creation) date and time.
pub(crate) fn stamp(raw: &mut [u8], now: Timestamp, created: bool) {
    let (d, t, tenth) = to_fat(now);
    raw[22..24].copy_from_slice(&t.to_le_bytes());
    raw[24..26].copy_from_slice(&d.to_le_bytes());
    raw[18..20].copy_from_slice(&d.to_le_bytes());
    if created {
        raw[13] = tenth;
        raw[14..16].copy_from_slice(&t.to_le_bytes());
        raw[16..18].copy_from_slice(&d.to_le_bytes());
    }
}

/// A new short entry.
pub(crate) fn new_short(short: &[u8; 11], nt: u8, attr: u8, now: Timestamp) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(short);
    e[11] = attr;
    e[12] = nt;
    stamp(&mut e, now, true);
    e
}

/// Whether slot bytes `e` are a `.` or `..` entry.
pub(crate) fn is_dot(e: &[u8]) -> bool {
    &e[..11] == b".          " || &e[..11] == b"..         "
}

/// The live entries of a directory's bytes, `.`, `..` and volume labels
/// left out. Stops at the first slot starting with 0. Refuses more than
/// `max` entries.
pub(crate) fn parse(bytes: &[u8], max: usize) -> Result<Vec<Entry>, String> {
    struct Pending {
        start: usize,
        sum: u8,
        expect: u8,
        chars: Vec<u16>,
    }
    let mut out = Vec::new();
    let mut pending: Option<Pending> = None;
    for (slot, e) in bytes.chunks_exact(32).enumerate() {
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xE5 {
            pending = None;
            continue;
        }
        if e[11] & 0x3F == ATTR_LFN {
            let ord = e[0];
            let chars = name::lfn_chars(e);
            if ord & 0x40 != 0 {
                let n = ord & 0x3F;
                pending = if (1..=20).contains(&n) {
                    let mut all = vec![0xFFFFu16; usize::from(n) * 13];
                    let at = usize::from(n - 1) * 13;
                    all[at..at + 13].copy_from_slice(&chars);
                    Some(Pending {
                        start: slot,
                        sum: e[13],
                        expect: n - 1,
                        chars: all,
                    })
                } else {
                    None
                };
            } else {
                pending = match pending.take() {
                    Some(mut p) if p.expect != 0 && ord == p.expect && e[13] == p.sum => {
                        let at = usize::from(ord - 1) * 13;
                        p.chars[at..at + 13].copy_from_slice(&chars);
                        p.expect -= 1;
                        Some(p)
                    }
                    _ => None,
                };
            }
            continue;
        }
        let p = pending.take();
        if e[11] & ATTR_VOLUME != 0 || is_dot(e) {
            continue;
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(e);
        let short = short_of(e);
        let short_name = name::decode_short(&short, e[12]);
        let (name, first) = match p {
            Some(p) if p.expect == 0 && p.sum == name::checksum(&short) => {
                let end = p
                    .chars
                    .iter()
                    .position(|&c| c == 0)
                    .unwrap_or(p.chars.len());
                let long = String::from_utf16_lossy(&p.chars[..end]);
                if long.is_empty() || long.contains('/') {
                    (short_name.clone(), slot)
                } else {
                    (long, p.start)
                }
            }
            _ => (short_name.clone(), slot),
        };
        if out.len() >= max {
            return Err(format!("more than {max} entries"));
        }
        out.push(Entry {
            name,
            short_name,
            first,
            slot,
            raw,
        });
    }
    Ok(out)
}

// ---- dates ----

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A FAT date and time (taken as UTC: FAT stores local time without a
/// zone) as a timestamp. Date 0 (never set) is the epoch.
pub(crate) fn from_fat(date: u16, time: u16, tenths: u8) -> Timestamp {
    if date == 0 {
        return Timestamp::default();
    }
    let y = 1980 + i64::from(date >> 9);
    let m = u32::from((date >> 5) & 0xF).clamp(1, 12);
    let d = u32::from(date & 0x1F).clamp(1, 31);
    let hh = i64::from((time >> 11).min(23));
    let mm = i64::from(((time >> 5) & 0x3F).min(59));
    let ss = i64::from(((time & 0x1F) * 2).min(59));
    let tenths = u32::from(tenths.min(199));
    Timestamp {
        secs: days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss + i64::from(tenths / 100),
        nanos: (tenths % 100) * 10_000_000,
    }
}

/// A timestamp as FAT (date, time, 10 ms units), clamped to 1980..=2107.
pub(crate) fn to_fat(t: Timestamp) -> (u16, u16, u8) {
    let min = days_from_civil(1980, 1, 1) * 86400;
    let max = days_from_civil(2107, 12, 31) * 86400 + 86399;
    let s = t.secs.clamp(min, max);
    let (y, m, d) = civil_from_days(s.div_euclid(86400));
    let rem = s.rem_euclid(86400);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
    let time = ((hh as u16) << 11) | ((mm as u16) << 5) | (ss as u16 / 2);
    let tenths = ((ss % 2) as u32 * 100 + t.nanos.min(999_999_999) / 10_000_000) as u8;
    (date, time, tenths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for secs in [315_532_800i64, 1_700_000_001, 4_000_000_000] {
            let t = Timestamp { secs, nanos: 0 };
            let (d, tm, tenths) = to_fat(t);
            assert_eq!(from_fat(d, tm, tenths), t);
        }
        // 2026-12-06 13:08:00 from mtools' listing.
        let t = from_fat((46 << 9) | (12 << 5) | 6, (13 << 11) | (8 << 5), 0);
        assert_eq!(t.secs, 1_796_562_480);
    }
}
