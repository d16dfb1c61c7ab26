//! Editing attributes inside a staged (fixed-up) MFT record: building
//! resident and non-resident attribute headers, and splicing an attribute
//! in, out or to a new length, keeping the end marker and `bytes_in_use`
//! right and refusing anything that would outgrow the record.

use crate::le::{le16, le32, put16, put32, put64};

/// Record header: bytes in use.
const REC_USED: usize = 0x18;
/// Record header: bytes allocated.
const REC_ALLOCATED: usize = 0x1C;
/// Record header: first attribute.
pub(crate) const REC_ATTRS: usize = 0x14;
/// Record header: next attribute instance.
pub(crate) const REC_NEXT_INSTANCE: usize = 0x28;
/// The end marker and the 4 bytes after it.
const END: usize = 8;

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// A resident attribute: header (24 bytes), name, value, padded to 8.
pub(crate) fn resident(
    ty: u32,
    name: &[u16],
    instance: u16,
    value: &[u8],
    indexed: bool,
) -> Vec<u8> {
    let name_off = 24usize;
    let value_off = align8(name_off + 2 * name.len());
    let len = align8(value_off + value.len());
    let mut a = vec![0u8; len];
    put32(&mut a, 0, ty);
    put32(&mut a, 4, len as u32);
    a[8] = 0;
    a[9] = name.len() as u8;
    put16(
        &mut a,
        10,
        if name.is_empty() { 0 } else { name_off as u16 },
    );
    put16(&mut a, 14, instance);
    put32(&mut a, 16, value.len() as u32);
    put16(&mut a, 20, value_off as u16);
    a[22] = u8::from(indexed);
    for (i, c) in name.iter().enumerate() {
        put16(&mut a, name_off + 2 * i, *c);
    }
    a[value_off..value_off + value.len()].copy_from_slice(value);
    a
}

/// Sizes of a non-resident attribute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NrSizes {
    pub highest_vcn: i64,
    pub allocated: u64,
    pub data: u64,
    pub initialized: u64,
}

/// A non-resident, uncompressed attribute of one extent (lowest VCN 0):
/// header (64 bytes), name, mapping pairs, padded to 8.
pub(crate) fn non_resident(
    ty: u32,
    name: &[u16],
    instance: u16,
    flags: u16,
    sizes: NrSizes,
    pairs: &[u8],
) -> Vec<u8> {
    let name_off = 64usize;
    let pairs_off = align8(name_off + 2 * name.len());
    let len = align8(pairs_off + pairs.len());
    let mut a = vec![0u8; len];
    put32(&mut a, 0, ty);
    put32(&mut a, 4, len as u32);
    a[8] = 1;
    a[9] = name.len() as u8;
    put16(
        &mut a,
        10,
        if name.is_empty() { 0 } else { name_off as u16 },
    );
    put16(&mut a, 12, flags);
    put16(&mut a, 14, instance);
    put64(&mut a, 16, 0);
    put64(&mut a, 24, sizes.highest_vcn as u64);
    put16(&mut a, 32, pairs_off as u16);
    put64(&mut a, 40, sizes.allocated);
    put64(&mut a, 48, sizes.data);
    put64(&mut a, 56, sizes.initialized);
    for (i, c) in name.iter().enumerate() {
        put16(&mut a, name_off + 2 * i, *c);
    }
    a[pairs_off..pairs_off + pairs.len()].copy_from_slice(pairs);
    a
}

/// Bytes in use of record `rec`.
pub(crate) fn used(rec: &[u8]) -> usize {
    le32(rec, REC_USED) as usize
}

/// Replace the `old_len` bytes at `off` of `rec` with `new` (an attribute,
/// or nothing to delete one), moving what follows. Refuses (with the bytes
/// it would need) when the record would outgrow its allocated size.
pub(crate) fn splice(rec: &mut [u8], off: usize, old_len: usize, new: &[u8]) -> Result<(), String> {
    let used_now = used(rec);
    let alloc = (le32(rec, REC_ALLOCATED) as usize).min(rec.len());
    if used_now > alloc || off + old_len > used_now.saturating_sub(END) {
        return Err(format!(
            "attribute at {off} ({old_len} bytes) is not inside the {used_now} bytes in use"
        ));
    }
    let new_used = used_now - old_len + new.len();
    if new_used > alloc {
        return Err(format!(
            "the record would need {new_used} bytes, it has {alloc}"
        ));
    }
    let tail: Vec<u8> = rec[off + old_len..used_now].to_vec();
    rec[off..off + new.len()].copy_from_slice(new);
    rec[off + new.len()..new_used].copy_from_slice(&tail);
    rec[new_used..alloc].fill(0);
    put32(rec, REC_USED, new_used as u32);
    Ok(())
}

/// Where a new attribute of type `ty` named `name` goes: before the first
/// attribute that sorts after it (type, then name), else at the end marker.
pub(crate) fn insert_at(rec: &[u8], ty: u32, name: &[u16]) -> usize {
    let mut off = usize::from(le16(rec, REC_ATTRS));
    let end = used(rec).saturating_sub(END);
    while off < end {
        let t = le32(rec, off);
        let len = le32(rec, off + 4) as usize;
        if t == 0xFFFF_FFFF || len == 0 {
            break;
        }
        let nlen = usize::from(rec.get(off + 9).copied().unwrap_or(0));
        let noff = usize::from(le16(rec, off + 10));
        let n: Vec<u16> = (0..nlen).map(|i| le16(rec, off + noff + 2 * i)).collect();
        if t > ty || (t == ty && n.as_slice() > name) {
            return off;
        }
        off += len;
    }
    end
}

/// Take the next attribute instance number of `rec`.
pub(crate) fn next_instance(rec: &mut [u8]) -> u16 {
    let i = le16(rec, REC_NEXT_INSTANCE);
    put16(rec, REC_NEXT_INSTANCE, i.wrapping_add(1));
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        put16(&mut r, REC_ATTRS, 56);
        put32(&mut r, 56, 0xFFFF_FFFF);
        put32(&mut r, REC_USED, 64);
        put32(&mut r, REC_ALLOCATED, 1024);
        r
    }

    #[test]
    fn splices_and_resizes() {
        let mut r = rec();
        let a = resident(0x80, &[], 0, b"hello", false);
        assert_eq!(a.len(), 32);
        let at = insert_at(&r, 0x80, &[]);
        assert_eq!(at, 56);
        splice(&mut r, at, 0, &a).unwrap();
        assert_eq!(used(&r), 96);
        assert_eq!(le32(&r, 88), 0xFFFF_FFFF);
        let si = resident(0x10, &[], 1, &[1; 72], false);
        let at = insert_at(&r, 0x10, &[]);
        assert_eq!(at, 56);
        splice(&mut r, at, 0, &si).unwrap();
        assert_eq!(insert_at(&r, 0x30, &[]), 56 + 96);
        assert!(splice(&mut r, 56 + 96, 0, &[0u8; 2000]).is_err());
        let pairs = [0x11, 5, 9, 0];
        let nr = non_resident(
            0x80,
            &[],
            0,
            0,
            NrSizes {
                highest_vcn: 4,
                allocated: 5 * 4096,
                data: 20000,
                initialized: 20000,
            },
            &pairs,
        );
        assert_eq!(nr.len(), 72);
        let len = le32(&r, 56 + 96 + 4) as usize;
        splice(&mut r, 56 + 96, len, &nr).unwrap();
        assert_eq!(le32(&r, 56 + 96 + 72), 0xFFFF_FFFF);
    }
}
