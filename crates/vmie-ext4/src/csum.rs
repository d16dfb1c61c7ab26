//! The checksums ext4 uses: CRC32C (Castagnoli, as the kernel's `crc32c_le`
//! without pre/post inversion) for `metadata_csum`, and CRC16 (ANSI,
//! reflected 0xA001) for the older `uninit_bg`/`gdt_csum` group descriptors.

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC16: [u16; 256] = crc16_table();

/// Continue a raw CRC32C (no inversion) over `data`.
pub(crate) fn crc32c(crc: u32, data: &[u8]) -> u32 {
    vmie_disk::checksum::crc32c_update(crc, data)
}

/// Continue a CRC16 over `data`.
pub(crate) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = CRC16[((crc ^ u16::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC check value (init 0), the same polynomial.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
