//! Bounds-checked access to guest bytes.
//!
//! Every getter returns [`Miss::Not`] instead of panicking when the field
//! lies outside the buffer, so a prober can use `?` on any field and a short
//! or truncated structure simply means "not this kind".

use crate::ProbeError;

/// Why a prober gave up: the bytes do not describe this kind (or lie outside
/// the device), or the device failed.
#[derive(Debug)]
pub(crate) enum Miss {
    /// Not this kind (or not determinable from the bytes at hand).
    Not,
    /// An I/O failure, which is reported to the caller.
    Io(ProbeError),
}

impl From<ProbeError> for Miss {
    fn from(e: ProbeError) -> Self {
        Miss::Io(e)
    }
}

pub(crate) type PResult<T> = Result<T, Miss>;

/// `Ok(())` when `cond` holds, otherwise "not this kind".
pub(crate) fn ensure(cond: bool) -> PResult<()> {
    if cond {
        Ok(())
    } else {
        Err(Miss::Not)
    }
}

/// Turn an `Option` into a [`PResult`], `None` meaning "not this kind".
pub(crate) fn some<T>(v: Option<T>) -> PResult<T> {
    v.ok_or(Miss::Not)
}

/// A borrowed byte buffer with checked little/big-endian getters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `len` bytes at `off`.
    pub(crate) fn get(&self, off: usize, len: usize) -> PResult<&'a [u8]> {
        let end = off.checked_add(len).ok_or(Miss::Not)?;
        self.0.get(off..end).ok_or(Miss::Not)
    }

    /// A fixed-size array at `off`.
    pub(crate) fn arr<const N: usize>(&self, off: usize) -> PResult<[u8; N]> {
        let s = self.get(off, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Whether the bytes at `off` equal `magic` (false when out of range).
    pub(crate) fn has(&self, off: usize, magic: &[u8]) -> bool {
        self.get(off, magic.len())
            .map(|s| s == magic)
            .unwrap_or(false)
    }

    pub(crate) fn u8(&self, off: usize) -> PResult<u8> {
        self.0.get(off).copied().ok_or(Miss::Not)
    }

    pub(crate) fn le16(&self, off: usize) -> PResult<u16> {
        Ok(u16::from_le_bytes(self.arr(off)?))
    }

    pub(crate) fn le32(&self, off: usize) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.arr(off)?))
    }

    pub(crate) fn le64(&self, off: usize) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.arr(off)?))
    }

    pub(crate) fn be16(&self, off: usize) -> PResult<u16> {
        Ok(u16::from_be_bytes(self.arr(off)?))
    }

    pub(crate) fn be32(&self, off: usize) -> PResult<u32> {
        Ok(u32::from_be_bytes(self.arr(off)?))
    }

    pub(crate) fn be64(&self, off: usize) -> PResult<u64> {
        Ok(u64::from_be_bytes(self.arr(off)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_refuse_out_of_range() {
        let b = Bytes(&[1, 2, 3, 4]);
        assert_eq!(b.le16(0).ok(), Some(0x0201));
        assert_eq!(b.be16(2).ok(), Some(0x0304));
        assert!(b.le32(1).is_err());
        assert!(b.get(usize::MAX, 2).is_err());
        assert!(!b.has(3, b"\x04\x05"));
        assert!(b.has(3, b"\x04"));
    }
}
