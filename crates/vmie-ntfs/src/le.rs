//! Little-endian field access that cannot panic.
//!
//! Parsers check every range before reading it; these helpers are the second
//! line: a read outside the slice yields 0 instead of a panic.

/// `u16` at `o`, or 0 when `b` is too short.
pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    match b.get(o..o.saturating_add(2)) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

/// `u32` at `o`, or 0 when `b` is too short.
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

/// `u64` at `o`, or 0 when `b` is too short.
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Byte at `o`, or 0 when `b` is too short.
pub(crate) fn byte(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

/// Store `v` at `o` (the caller checked the range; out of range is a no-op).
pub(crate) fn put16(b: &mut [u8], o: usize, v: u16) {
    if let Some(s) = b.get_mut(o..o.saturating_add(2)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Store `v` at `o` (out of range is a no-op).
pub(crate) fn put32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Store `v` at `o` (out of range is a no-op).
pub(crate) fn put64(b: &mut [u8], o: usize, v: u64) {
    if let Some(s) = b.get_mut(o..o.saturating_add(8)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_zero() {
        let b = [1u8, 2, 3];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le16(&b, 2), 0);
        assert_eq!(le32(&b, 0), 0);
        assert_eq!(le64(&b, usize::MAX), 0);
        assert_eq!(byte(&b, 3), 0);
    }
}
