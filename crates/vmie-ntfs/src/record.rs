//! Our own parse of MFT file records: the validation that runs before the
//! `ntfs` crate touches a record's attributes.
//!
//! The `ntfs` crate reads a file record, applies the update sequence fixup and
//! checks the header sizes, but then indexes into the record while walking
//! attributes with only some of the bounds checked, and turns data runs into
//! byte positions it later adds to without overflow checks. So before any of
//! its attribute methods runs on a record we parse the same bytes ourselves
//! and refuse the record unless
//!
//! - every attribute header, resident value and name lies inside the attribute
//!   and the attribute inside the record (resident headers at least 24 bytes,
//!   non-resident ones at least 64, so the crate's fixed-offset reads stay in
//!   the record);
//! - every attribute type is one the crate knows;
//! - every data run decodes, has a nonzero length and lies inside the volume;
//! - an attribute list is at most [`MAX_ATTRIBUTE_LIST`] bytes, and every
//!   extension record it names passes the same checks (the crate reads those
//!   records' attributes when it follows the list).

use std::ops::Range;

use crate::boot::Geometry;
use crate::le::{byte, le16, le32, le64};

/// `$ATTRIBUTE_LIST`.
pub(crate) const AT_ATTRIBUTE_LIST: u32 = 0x20;
/// `$DATA`.
pub(crate) const AT_DATA: u32 = 0x80;
/// End of the attributes.
const AT_END: u32 = 0xFFFF_FFFF;

/// The attribute types the `ntfs` crate knows (it refuses the others).
const KNOWN_TYPES: [u32; 16] = [
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0, 0x100,
];

/// File record flag: in use.
pub(crate) const REC_IN_USE: u16 = 0x0001;

/// Largest attribute list accepted (Windows keeps them far smaller).
pub(crate) const MAX_ATTRIBUTE_LIST: u64 = 256 << 10;

/// The blocks the update sequence protects are always 512 bytes.
const USA_STRIDE: usize = 512;

/// One data run: `clusters` clusters at `lcn`, or sparse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// First cluster, `None` for a sparse run.
    pub lcn: Option<u64>,
    /// Length in clusters (nonzero).
    pub clusters: u64,
}

/// Where an attribute's value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// Inside the record, at this range of the record buffer.
    Resident(Range<usize>),
    /// In data runs.
    NonResident {
        /// First VCN this extent covers.
        lowest_vcn: i64,
        /// Bytes of value (of the whole attribute, in its first extent).
        data_size: u64,
        /// Bytes written; the rest reads as zeros.
        init_size: u64,
        /// The runs.
        runs: Vec<Run>,
    },
}

/// One attribute header, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawAttr {
    /// Offset of the attribute in the record.
    pub off: usize,
    /// Length of the attribute.
    pub len: usize,
    /// Attribute flags (compressed, encrypted, sparse).
    pub flags: u16,
    /// Type code.
    pub ty: u32,
    /// Name (UTF-16 code units).
    pub name: Vec<u16>,
    /// The value.
    pub body: Body,
}

/// A file record after the update sequence fixup, with its attributes
/// validated.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    /// The fixed-up record.
    pub data: Vec<u8>,
    /// Record flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u16,
    /// The attributes, in record order.
    pub attrs: Vec<RawAttr>,
}

impl RawRecord {
    /// The resident value of `attr`, if it has one.
    pub fn resident<'a>(&'a self, attr: &RawAttr) -> Option<&'a [u8]> {
        match &attr.body {
            Body::Resident(r) => self.data.get(r.clone()),
            Body::NonResident { .. } => None,
        }
    }
}

/// Apply the update sequence fixup to a record that must start with `sig`, as
/// the `ntfs` crate does (so both see the same bytes).
pub(crate) fn fixup(buf: &mut [u8], sig: &[u8; 4]) -> Result<(), String> {
    if buf.get(0..4) != Some(sig.as_slice()) {
        return Err(format!(
            "no {} signature",
            String::from_utf8_lossy(sig.as_slice())
        ));
    }
    let usa_ofs = usize::from(le16(buf, 4));
    let usa_count = usize::from(le16(buf, 6));
    let sectors = usa_count
        .checked_sub(1)
        .ok_or("update sequence count is 0")?;
    if usa_ofs + 2 * usa_count > buf.len() || sectors * USA_STRIDE > buf.len() {
        return Err(format!(
            "update sequence array ({usa_count} entries at {usa_ofs}) exceeds the {}-byte record",
            buf.len()
        ));
    }
    let usn = [byte(buf, usa_ofs), byte(buf, usa_ofs + 1)];
    for i in 0..sectors {
        let at = i * USA_STRIDE + USA_STRIDE - 2;
        let src = usa_ofs + 2 + 2 * i;
        let fix = [byte(buf, src), byte(buf, src + 1)];
        match buf.get_mut(at..at + 2) {
            Some(end) if end == usn.as_slice() => end.copy_from_slice(&fix),
            _ => {
                return Err(format!(
                    "update sequence number mismatch in block {i}: torn write or corruption"
                ))
            }
        }
    }
    Ok(())
}

/// Parse and validate the file record `data` (as read from the device).
pub(crate) fn parse(geo: &Geometry, mut data: Vec<u8>) -> Result<RawRecord, String> {
    fixup(&mut data, b"FILE")?;
    parse_fixed(geo, data)
}

/// Parse and validate a file record whose update sequence fixup is applied
/// already (a record staged in a write transaction).
pub(crate) fn parse_fixed(geo: &Geometry, data: Vec<u8>) -> Result<RawRecord, String> {
    if data.get(0..4) != Some(b"FILE".as_slice()) {
        return Err("no FILE signature".into());
    }
    let len = data.len();
    let seq = le16(&data, 0x10);
    let first = usize::from(le16(&data, 0x14));
    let flags = le16(&data, 0x16);
    let used = le32(&data, 0x18) as usize;
    let allocated = le32(&data, 0x1C) as usize;
    if allocated > len || used > allocated {
        return Err(format!(
            "record sizes (used {used}, allocated {allocated}) exceed the {len}-byte record"
        ));
    }
    let mut attrs = Vec::new();
    let mut off = first;
    loop {
        if off + 4 > len {
            break;
        }
        let ty = le32(&data, off);
        if ty == AT_END {
            break;
        }
        let attr = parse_attr(geo, &data, off)
            .map_err(|e| format!("attribute {ty:#x} at record offset {off}: {e}"))?;
        off += le32(&data, off + 4) as usize;
        attrs.push(attr);
    }
    Ok(RawRecord {
        data,
        flags,
        seq,
        attrs,
    })
}

/// Validate the attribute at `off` of record `data`.
fn parse_attr(geo: &Geometry, data: &[u8], off: usize) -> Result<RawAttr, String> {
    let remaining = data.len() - off;
    if remaining < 16 {
        return Err("header runs past the end of the record".into());
    }
    let ty = le32(data, off);
    if !KNOWN_TYPES.contains(&ty) {
        return Err("unknown attribute type".into());
    }
    let alen = le32(data, off + 4) as usize;
    if alen < 16 || alen > remaining {
        return Err(format!(
            "length {alen} is outside 16..={remaining} (the rest of the record)"
        ));
    }
    let a = &data[off..off + alen];
    let non_resident = byte(a, 8) != 0;
    let name_len = usize::from(byte(a, 9)) * 2;
    let name_off = usize::from(le16(a, 10));
    let mut name = Vec::new();
    if name_len != 0 && name_off != 0 {
        if name_off >= alen || name_off + name_len > alen {
            return Err(format!(
                "name ({name_len} bytes at {name_off}) runs past the attribute"
            ));
        }
        name = a[name_off..name_off + name_len]
            .chunks_exact(2)
            .map(|c| le16(c, 0))
            .collect();
    }
    let body = if non_resident {
        if alen < 64 {
            return Err(format!("non-resident header needs 64 bytes, has {alen}"));
        }
        let runs_off = usize::from(le16(a, 32));
        if runs_off > alen {
            return Err(format!("data runs offset {runs_off} is past the attribute"));
        }
        Body::NonResident {
            lowest_vcn: le64(a, 16) as i64,
            data_size: le64(a, 48),
            init_size: le64(a, 56),
            runs: parse_runs(geo, &a[runs_off..])?,
        }
    } else {
        if alen < 24 {
            return Err(format!("resident header needs 24 bytes, has {alen}"));
        }
        let vlen = le32(a, 16) as usize;
        let voff = usize::from(le16(a, 20));
        match voff.checked_add(vlen) {
            Some(end) if end <= alen => Body::Resident(off + voff..off + end),
            _ => {
                return Err(format!(
                    "resident value ({vlen} bytes at {voff}) runs past the attribute"
                ))
            }
        }
    };
    Ok(RawAttr {
        off,
        len: alen,
        flags: le16(a, 12),
        ty,
        name,
        body,
    })
}

/// Decode mapping pairs the way the `ntfs` crate does, refusing runs outside
/// the volume.
pub(crate) fn parse_runs(geo: &Geometry, b: &[u8]) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let mut p = 0usize;
    let mut prev_lcn: u64 = 0;
    while let Some(&header) = b.get(p) {
        if header == 0 {
            break;
        }
        let count_len = usize::from(header & 0x0F);
        let lcn_len = usize::from(header >> 4);
        if count_len > 8 || lcn_len > 8 {
            return Err(format!("data run header {header:#04x} is invalid"));
        }
        let fields = b
            .get(p + 1..p + 1 + count_len + lcn_len)
            .ok_or("data runs end in the middle of a run")?;
        let (count_bytes, lcn_bytes) = fields.split_at(count_len);
        let clusters = count_bytes
            .iter()
            .rev()
            .fold(0u64, |v, &x| (v << 8) | u64::from(x));
        if clusters == 0 {
            return Err("a data run of 0 clusters".into());
        }
        let delta = signed(lcn_bytes);
        // Like the crate, a zero delta marks a sparse run.
        let lcn = if delta == 0 {
            None
        } else {
            let lcn = prev_lcn
                .checked_add_signed(delta)
                .ok_or_else(|| format!("data run cluster {prev_lcn} {delta:+} is out of range"))?;
            match lcn.checked_add(clusters) {
                Some(end) if end <= geo.total_clusters => {}
                _ => {
                    return Err(format!(
                        "data run of {clusters} clusters at cluster {lcn} is outside the volume's {} clusters",
                        geo.total_clusters
                    ))
                }
            }
            prev_lcn = lcn;
            Some(lcn)
        };
        runs.push(Run { lcn, clusters });
        p += 1 + count_len + lcn_len;
    }
    Ok(runs)
}

/// A little-endian two's-complement integer of 0..=8 bytes.
fn signed(b: &[u8]) -> i64 {
    let Some(&last) = b.last() else {
        return 0;
    };
    let fill = if last & 0x80 != 0 { 0xFF } else { 0 };
    let mut buf = [fill; 8];
    for (d, s) in buf.iter_mut().zip(b) {
        *d = *s;
    }
    i64::from_le_bytes(buf)
}

/// The record numbers an attribute list names (other than `own`), in order,
/// each once. `list` is the list's value.
pub(crate) fn list_records(list: &[u8], own: u64) -> Result<Vec<u64>, String> {
    let mut out: Vec<u64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut p = 0usize;
    // The crate stops at an entry that runs past the end of a resident list;
    // we stop there too (its entries are all we need to check).
    while p < list.len() {
        let e = &list[p..];
        if e.len() < 26 {
            return Err(format!("attribute list entry at {p} is truncated"));
        }
        let elen = usize::from(le16(e, 4));
        let name_len = usize::from(byte(e, 6)) * 2;
        if 26 + name_len > elen {
            return Err(format!(
                "attribute list entry at {p} is {elen} bytes, too short for its name"
            ));
        }
        let rn = le64(e, 16) & 0xFFFF_FFFF_FFFF;
        if rn != own && seen.insert(rn) {
            out.push(rn);
        }
        p += elen;
    }
    Ok(out)
}

/// Read the first `len` bytes of the value in `runs` from `dev` (for small
/// metadata values such as attribute lists).
pub(crate) fn read_runs(
    dev: &dyn vmie_disk::Device,
    geo: &Geometry,
    runs: &[Run],
    len: u64,
) -> Result<Vec<u8>, String> {
    let want = usize::try_from(len).map_err(|_| format!("{len} bytes is too large"))?;
    let mut out = Vec::with_capacity(want);
    let cs = u64::from(geo.cluster_size);
    for run in runs {
        if out.len() >= want {
            break;
        }
        let run_bytes = run.clusters.saturating_mul(cs);
        let take = run_bytes.min((want - out.len()) as u64) as usize;
        match run.lcn {
            None => out.resize(out.len() + take, 0),
            Some(lcn) => {
                let start = out.len();
                out.resize(start + take, 0);
                dev.read_at(lcn * cs, &mut out[start..])
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if out.len() < want {
        return Err(format!(
            "data runs hold {} of the {want} bytes of the value",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(clusters: u64) -> Geometry {
        Geometry {
            sector_size: 512,
            cluster_size: 4096,
            total_sectors: clusters * 8,
            total_clusters: clusters,
            size: clusters * 4096,
            mft_lcn: 4,
            mft_offset: 4 * 4096,
            file_record_size: 1024,
            index_record_size: 4096,
            serial: 0,
            mirr_lcn: 2,
        }
    }

    #[test]
    fn runs_decode_and_stay_in_the_volume() {
        let g = geo(1000);
        // 0x21: 1-byte count, 2-byte LCN. 16 clusters at 0x100, then 8 sparse,
        // then 4 at 0x100 - 0x10.
        let b = [0x21, 16, 0x00, 0x01, 0x01, 8, 0x11, 4, 0xF0, 0];
        let runs = parse_runs(&g, &b).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    lcn: Some(0x100),
                    clusters: 16
                },
                Run {
                    lcn: None,
                    clusters: 8
                },
                Run {
                    lcn: Some(0xF0),
                    clusters: 4
                },
            ]
        );
        // Past the volume.
        assert!(parse_runs(&g, &[0x21, 16, 0xE0, 0x03, 0]).is_err());
        // Negative LCN.
        assert!(parse_runs(&g, &[0x11, 1, 0x80, 0]).is_err());
        // Zero clusters, bad header, truncated.
        assert!(parse_runs(&g, &[0x11, 0, 5, 0]).is_err());
        assert!(parse_runs(&g, &[0x19, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5]).is_err());
        assert!(parse_runs(&g, &[0x21, 1, 5]).is_err());
        // Huge counts do not overflow.
        assert!(parse_runs(
            &g,
            &[0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1]
        )
        .is_err());
    }

    #[test]
    fn fixup_checks_and_restores() {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4] = 0x30; // USA at 48
        r[6] = 3; // USN + 2 entries
        r[48] = 0xAB;
        r[49] = 0xCD;
        r[50] = 1;
        r[51] = 2;
        r[52] = 3;
        r[53] = 4;
        r[510] = 0xAB;
        r[511] = 0xCD;
        r[1022] = 0xAB;
        r[1023] = 0xCD;
        let mut ok = r.clone();
        fixup(&mut ok, b"FILE").unwrap();
        assert_eq!(&ok[510..512], &[1, 2]);
        assert_eq!(&ok[1022..1024], &[3, 4]);
        let mut torn = r.clone();
        torn[1023] = 0;
        assert!(fixup(&mut torn, b"FILE").is_err());
        let mut huge = r.clone();
        huge[6] = 0xFF;
        huge[7] = 0xFF;
        assert!(fixup(&mut huge, b"FILE").is_err());
        let mut none = r;
        none[6] = 0;
        assert!(fixup(&mut none, b"FILE").is_err());
    }

    #[test]
    fn attribute_lists_name_other_records_once() {
        let mut l = Vec::new();
        for rn in [5u64, 40, 40, 41] {
            let mut e = vec![0u8; 32];
            e[4] = 32;
            e[16..24].copy_from_slice(&(rn | (3 << 48)).to_le_bytes());
            l.extend(e);
        }
        assert_eq!(list_records(&l, 5).unwrap(), vec![40, 41]);
        l[4] = 10;
        assert!(list_records(&l, 5).is_err());
        assert!(list_records(&[0u8; 20], 5).is_err());
    }
}
