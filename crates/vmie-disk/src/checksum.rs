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

/// LVM2's seed for its label, metadata-area header and metadata text
/// checksums (`INITIAL_CRC` in lvm2's `lib/misc/crc.h`).
pub const LVM2_CRC_INITIAL: u32 = 0xf597_a6cf;

/// Continue LVM2's checksum register over `data`: CRC-32 (reflected
/// polynomial 0xEDB88320) computed a nibble at a time, with no final
/// inversion. Start from [`LVM2_CRC_INITIAL`]; a text that wraps around the
/// metadata ring is summed in two calls.
pub fn lvm2_crc_update(mut crc: u32, data: &[u8]) -> u32 {
    const T: [u32; 16] = [
        0x0000_0000,
        0x1db7_1064,
        0x3b6e_20c8,
        0x26d9_30ac,
        0x76dc_4190,
        0x6b6b_51f4,
        0x4db2_6158,
        0x5005_713c,
        0xedb8_8320,
        0xf00f_9344,
        0xd6d6_a3e8,
        0xcb61_b38c,
        0x9b64_c2b0,
        0x86d3_d2d4,
        0xa00a_e278,
        0xbdbd_f21c,
    ];
    for &b in data {
        crc ^= u32::from(b);
        crc = (crc >> 4) ^ T[(crc & 0xf) as usize];
        crc = (crc >> 4) ^ T[(crc & 0xf) as usize];
    }
    crc
}

/// LVM2's checksum of `data` (label header, metadata-area header).
pub fn lvm2_crc(data: &[u8]) -> u32 {
    lvm2_crc_update(LVM2_CRC_INITIAL, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lvm2_split_equals_whole() {
        let data = b"vgname { id = \"x\" }";
        let whole = super::lvm2_crc(data);
        let (a, b) = data.split_at(7);
        let split = super::lvm2_crc_update(super::lvm2_crc_update(super::LVM2_CRC_INITIAL, a), b);
        assert_eq!(whole, split);
        assert_ne!(whole, super::lvm2_crc(b"vgname { id = \"y\" }"));
    }

    #[test]
    fn check_value() {
        assert_eq!(!super::crc32c_update(!0, b"123456789"), 0xE306_9283);
    }
}
