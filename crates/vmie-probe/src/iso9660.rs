//! ISO9660 (with the Joliet extension) and High Sierra, as libblkid: label
//! reconstructed from the Joliet and primary volume ids, UUID from the
//! modification (else creation) date.

use crate::bytes::{ensure, some, Bytes, Miss, PResult};
use crate::util::{is_c_space, label_rtrim, label_trim, utf16_label};
use crate::{Ctx, FsKind, Probe};

const SUPERBLOCK: usize = 0x8000;
const SECTOR: usize = 0x800;
const VD_BOOT: u8 = 0;
const VD_PRIMARY: u8 = 1;
const VD_SUPPLEMENTARY: u8 = 2;
const VD_END: u8 = 0xff;
const VD_MAX: usize = 16;
/// Bytes of a descriptor we look at.
const VD_LEN: usize = 1024;

/// A descriptor field: offsets in ISO9660 and High Sierra layout, length.
struct Field {
    iso: usize,
    hs: usize,
    len: usize,
}

const VOLUME_ID: Field = Field {
    iso: 40,
    hs: 40,
    len: 32,
};
const SYSTEM_ID: Field = Field {
    iso: 8,
    hs: 8,
    len: 32,
};
const VOLUME_SET_ID: Field = Field {
    iso: 190,
    hs: 210,
    len: 128,
};
const PUBLISHER_ID: Field = Field {
    iso: 318,
    hs: 338,
    len: 128,
};
const DATA_PREPARER_ID: Field = Field {
    iso: 446,
    hs: 466,
    len: 128,
};
const APPLICATION_ID: Field = Field {
    iso: 574,
    hs: 594,
    len: 128,
};

/// libblkid's `merge_utf16be_ascii`: when the Joliet (UTF-16BE) string is a
/// prefix of the ASCII one, ignoring `_` replacements and case, rebuild the
/// full string as UTF-16BE.
fn merge(utf16: &[u8], ascii: &[u8], len: usize) -> Option<Vec<u8>> {
    const OUT_LEN: usize = 128 * 5 / 2;
    let u16b = |i: usize| utf16.get(i).copied().unwrap_or(0);
    let asc = |i: usize| ascii.get(i).copied().unwrap_or(0);
    let mut out: Vec<u8> = Vec::with_capacity(OUT_LEN);
    let (mut a, mut u) = (0usize, 0usize);
    while u + 1 < len && a < len && out.len() + 1 < OUT_LEN {
        if (0xd8..=0xdb).contains(&u16b(u)) && u + 3 < len && (0xdc..=0xdf).contains(&u16b(u + 2)) {
            out.push(u16b(u));
            out.push(u16b(u + 1));
            u += 2;
        }
        let (hi, lo, c) = (u16b(u), u16b(u + 1), asc(a));
        if c == b'_' {
            out.extend_from_slice(&[hi, lo]);
        } else if hi == 0 && lo == b'_' {
            out.extend_from_slice(&[0, c]);
        } else if hi == 0 && c.eq_ignore_ascii_case(&lo) {
            out.extend_from_slice(&[0, if c.is_ascii_uppercase() { lo } else { c }]);
        } else {
            return None;
        }
        a += 1;
        u += 2;
    }
    while a < len && out.len() + 1 < OUT_LEN {
        out.extend_from_slice(&[0, asc(a)]);
        a += 1;
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

fn str_empty(s: &[u8]) -> bool {
    s.first().is_none_or(|&c| c == 0) || s.iter().all(|&c| is_c_space(c))
}

fn utf16_empty(s: &[u8]) -> bool {
    s.chunks(2)
        .all(|p| p.first() == Some(&0) && p.get(1).is_some_and(|&c| is_c_space(c)))
}

/// UUID from a date `YYYYMMDDHHMMSSCC` (+ offset byte), as blkid: `None` when
/// the date is unset.
fn date_uuid(d: &[u8], offset: u8) -> Option<String> {
    if d.len() != 16 || (d.iter().all(|&c| c == b'0') && offset == 0) {
        return None;
    }
    if d.iter().all(|&c| c == 0) {
        return None;
    }
    let s =
        |r: std::ops::Range<usize>| String::from_utf8_lossy(d.get(r).unwrap_or(&[])).into_owned();
    Some(format!(
        "{}-{}-{}-{}-{}-{}-{}",
        s(0..4),
        s(4..6),
        s(6..8),
        s(8..10),
        s(10..12),
        s(12..14),
        s(14..16)
    ))
}

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let head = ctx.head();
    let is_hs = if head.has(SUPERBLOCK + 1, b"CD001") {
        false
    } else if head.has(SUPERBLOCK + 9, b"CDROM") {
        true
    } else {
        return Err(Miss::Not);
    };
    let shift = if is_hs { 8 } else { 0 };
    let mut boot: Option<Bytes<'_>> = None;
    let mut pvd: Option<Bytes<'_>> = None;
    let mut joliet: Option<Bytes<'_>> = None;
    for i in 0..VD_MAX {
        if boot.is_some() && pvd.is_some() && (is_hs || joliet.is_some()) {
            break;
        }
        let Ok(d) = head.get(SUPERBLOCK + i * SECTOR + shift, VD_LEN) else {
            break;
        };
        let d = Bytes(d);
        let ty = d.u8(0)?;
        if ty == VD_END {
            break;
        } else if boot.is_none() && ty == VD_BOOT {
            boot = Some(d);
        } else if pvd.is_none() && ty == VD_PRIMARY {
            pvd = Some(d);
        } else if !is_hs && joliet.is_none() && ty == VD_SUPPLEMENTARY {
            let esc = d.get(88, 3)?;
            if esc == b"%/@" || esc == b"%/C" || esc == b"%/E" {
                joliet = Some(d);
            }
        }
    }
    let pvd = some(pvd)?;
    let lbs = pvd.le16(128)?;
    let space = pvd.le32(80)?;
    ensure(lbs != 0)?;

    // Validate the root directory record to reduce false positives.
    let rdr = if is_hs { 176 } else { 156 };
    let root_lba = pvd.le32(rdr + 2)?;
    let root_len = pvd.le32(rdr + 10)?;
    ensure(root_len >= 34)?;
    let root_off = u64::from(root_lba) * u64::from(lbs);
    let root = ctx.read(root_off, root_len.min(2048) as usize)?;
    let r = Bytes(&root);
    ensure(r.u8(0)? >= 34 && r.u8(32)? == 1 && r.u8(33)? == 0 && r.le32(2)? == root_lba)?;

    let mut p = Probe::new(FsKind::Iso9660);
    p.block_size = Some(u32::from(lbs));
    p.size = Some(u64::from(space) * u64::from(lbs));
    p.set("FSBLOCKSIZE", lbs.to_string());
    p.set("BLOCK_SIZE", lbs.to_string());
    p.set("FSSIZE", (u64::from(space) * u64::from(lbs)).to_string());

    let f = |d: &Bytes<'_>, fld: &Field, hs: bool| -> PResult<Vec<u8>> {
        Ok(d.get(if hs { fld.hs } else { fld.iso }, fld.len)?.to_vec())
    };
    let cap = |v: Vec<u8>| ctx.cap(&v).to_vec();

    // SYSTEM_ID and VOLUME_SET_ID: Joliet if present (merged when possible).
    for (name, fld) in [("SYSTEM_ID", &SYSTEM_ID), ("VOLUME_SET_ID", &VOLUME_SET_ID)] {
        let ascii = f(&pvd, fld, is_hs)?;
        let value = if let Some(j) = &joliet {
            let ju = f(j, fld, false)?;
            match merge(&ju, &ascii, fld.len) {
                Some(m) => utf16_label(&cap(m), true, true),
                None => utf16_label(&cap(ju), true, true),
            }
        } else {
            label_trim(&cap(ascii))
        };
        if let Some(v) = value {
            p.set(name, v);
        }
    }

    for (name, fld) in [
        ("PUBLISHER_ID", &PUBLISHER_ID),
        ("DATA_PREPARER_ID", &DATA_PREPARER_ID),
        ("APPLICATION_ID", &APPLICATION_ID),
    ] {
        let hs_ascii = f(&pvd, fld, true)?;
        let iso_ascii = f(&pvd, fld, false)?;
        let ascii_hs_empty = !is_hs || str_empty(&hs_ascii) || hs_ascii.first() == Some(&b'_');
        let ascii_iso_empty = is_hs || str_empty(&iso_ascii) || iso_ascii.first() == Some(&b'_');
        let ju = match &joliet {
            Some(j) => Some(f(j, fld, false)?),
            None => None,
        };
        let unicode_empty = match &ju {
            None => true,
            Some(u) => utf16_empty(u) || (u.first() == Some(&0) && u.get(1) == Some(&b'_')),
        };
        let value = match ju {
            Some(u) if !unicode_empty => {
                let merged = if ascii_iso_empty {
                    None
                } else {
                    merge(&u, &iso_ascii, fld.len)
                };
                match merged {
                    Some(m) => utf16_label(&cap(m), true, true),
                    None => utf16_label(&cap(u), true, true),
                }
            }
            _ if !ascii_hs_empty => label_trim(&cap(hs_ascii)),
            _ if !ascii_iso_empty => label_trim(&cap(iso_ascii)),
            _ => None,
        };
        if let Some(v) = value {
            p.set(name, v);
        }
    }

    let (modified, mod_off, created, cre_off) = if is_hs {
        (pvd.get(802, 16)?, 0, pvd.get(786, 16)?, 0)
    } else {
        (
            pvd.get(830, 16)?,
            pvd.u8(846)?,
            pvd.get(813, 16)?,
            pvd.u8(829)?,
        )
    };
    p.uuid = date_uuid(modified, mod_off).or_else(|| date_uuid(created, cre_off));

    if let Some(b) = &boot {
        if let Some(v) = label_trim(b.get(7, 32)?) {
            p.set("BOOT_SYSTEM_ID", v);
        }
    }
    if joliet.is_some() {
        p.version = Some("Joliet Extension".into());
    } else if is_hs {
        p.version = Some("High Sierra".into());
    }

    let ascii = f(&pvd, &VOLUME_ID, false)?;
    p.label = match &joliet {
        Some(j) => {
            let ju = f(j, &VOLUME_ID, false)?;
            match merge(&ju, &ascii, VOLUME_ID.len) {
                Some(m) => utf16_label(&cap(m), true, false),
                None => utf16_label(&cap(ju), true, false),
            }
        }
        None => label_rtrim(&cap(ascii)),
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(s: &str, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
        v.resize(len, 0);
        v
    }

    #[test]
    fn merge_restores_long_label() {
        // Joliet holds 16 characters, the PVD 32 (upper-cased, '_' for
        // characters ISO9660 cannot hold).
        let j = be("Très long label ", 32);
        let a = b"TR_S LONG LABEL WITH MORE TEXT  ";
        let m = merge(&j, a, 32).unwrap_or_default();
        assert_eq!(
            utf16_label(&m, true, false).as_deref(),
            Some("Très long label WITH MORE TEXT")
        );
        assert!(merge(&be("other", 32), a, 32).is_none());
    }

    #[test]
    fn date_uuid_format() {
        assert_eq!(
            date_uuid(b"2024072512345600", 0).as_deref(),
            Some("2024-07-25-12-34-56-00")
        );
        assert_eq!(date_uuid(b"0000000000000000", 0), None);
    }
}
