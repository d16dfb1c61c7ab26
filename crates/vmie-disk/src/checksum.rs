//! CRC-32C (Castagnoli), used by ext4 `metadata_csum`, XFS v5 and Btrfs
//! superblocks: one table for every parser.

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Continue a raw CRC-32C register over `data` (no initial or final
/// inversion: callers that want the standard CRC pass `!0` and invert).
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(!super::crc32c_update(!0, b"123456789"), 0xE306_9283);
    }
}
