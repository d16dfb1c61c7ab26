//! v5 metadata checksums: CRC-32C over the whole structure with the
//! 4-byte CRC field taken as zero, stored little-endian.

use vmie_disk::checksum::crc32c_update;

/// The CRC of `buf` with the field at `off` taken as zero.
pub(crate) fn compute(buf: &[u8], off: usize) -> u32 {
    let c = crc32c_update(!0, &buf[..off]);
    let c = crc32c_update(c, &[0u8; 4]);
    !crc32c_update(c, &buf[off + 4..])
}

/// Whether the CRC stored at `off` matches.
pub(crate) fn verify(buf: &[u8], off: usize) -> bool {
    buf.len() >= off + 4
        && compute(buf, off)
            == u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

/// Store the CRC of `buf` at `off`.
pub(crate) fn update(buf: &mut [u8], off: usize) {
    let c = compute(buf, off);
    buf[off..off + 4].copy_from_slice(&c.to_le_bytes());
}
