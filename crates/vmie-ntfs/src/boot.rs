//! The NTFS boot sector, validated before the `ntfs` crate sees it.
//!
//! The `ntfs` crate checks some fields itself, but it accepts a volume larger
//! than its device, an MFT outside the volume and file records of up to 254
//! MiB (a positive "clusters per record" count), each of which would let a
//! hostile image make it allocate or seek absurdly. Everything here is checked
//! against the device length with checked arithmetic.

use crate::le::{le16, le64};

/// Smallest sector size NTFS knows (ntfs-3g); the reader needs 512.
const MIN_SECTOR: u32 = 256;
/// Largest sector size Windows supports.
const MAX_SECTOR: u32 = 4096;
/// Largest cluster size Windows supports.
pub(crate) const MAX_CLUSTER: u32 = 2 << 20;
/// File record sizes seen in the wild: 1 KiB, and 4 KiB on 4K-sector disks.
const MIN_RECORD: u32 = 1024;
const MAX_RECORD: u32 = 4096;
/// Index records are 4 KiB in practice; anything up to 64 KiB is accepted.
pub(crate) const MIN_INDEX_RECORD: u32 = 512;
pub(crate) const MAX_INDEX_RECORD: u32 = 64 << 10;
/// The fewest clusters a volume can have and still hold its metadata files.
const MIN_CLUSTERS: u64 = 16;

/// The refusal of a BitLocker volume (OEM ID `-FVE-FS-`).
pub(crate) const BITLOCKER: &str =
    "the volume is BitLocker-encrypted (OEM ID \"-FVE-FS-\"): unlock and decrypt it first";

/// The volume's geometry, as validated from the boot sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per sector.
    pub sector_size: u32,
    /// Bytes per cluster.
    pub cluster_size: u32,
    /// Sectors in the volume (without the backup boot sector).
    pub total_sectors: u64,
    /// Whole clusters in the volume.
    pub total_clusters: u64,
    /// Bytes in the volume (`total_sectors * sector_size`).
    pub size: u64,
    /// First cluster of the MFT.
    pub mft_lcn: u64,
    /// Byte offset of the MFT.
    pub mft_offset: u64,
    /// Bytes per file record.
    pub file_record_size: u32,
    /// Bytes per index record, as the boot sector says.
    pub index_record_size: u32,
    /// Volume serial number.
    pub serial: u64,
    /// First cluster of `$MFTMirr`.
    pub mirr_lcn: u64,
}

/// Validate the 512-byte boot sector `bs` of a device of `dev_len` bytes.
/// The error is a sentence saying what is wrong.
pub(crate) fn parse(bs: &[u8; 512], dev_len: u64) -> Result<Geometry, String> {
    if &bs[3..11] == b"-FVE-FS-" {
        return Err(BITLOCKER.into());
    }
    if &bs[3..11] != b"NTFS    " {
        return Err("no NTFS signature (OEM ID \"NTFS    \")".into());
    }
    if bs[510..512] != [0x55, 0xAA] {
        return Err("no boot sector signature 55 AA".into());
    }
    let sector_size = u32::from(le16(bs, 0x0B));
    if !(MIN_SECTOR..=MAX_SECTOR).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(format!(
            "{sector_size} bytes per sector is not a power of two in {MIN_SECTOR}..={MAX_SECTOR}"
        ));
    }
    if sector_size < 512 {
        return Err(format!(
            "{sector_size}-byte sectors are not supported by the reader (512 at least)"
        ));
    }
    let spc_raw = bs[0x0D];
    let sectors_per_cluster: u32 = match spc_raw {
        0 => return Err("0 sectors per cluster".into()),
        1..=128 if spc_raw.is_power_of_two() => u32::from(spc_raw),
        // 0xF4..=0xFF: 2^(256 - value) sectors, for clusters over 64 KiB.
        0xF4..=0xFF => 1u32 << (256 - u32::from(spc_raw)),
        _ => {
            return Err(format!(
                "sectors per cluster byte {spc_raw:#04x} is invalid"
            ))
        }
    };
    let cluster_size = sector_size
        .checked_mul(sectors_per_cluster)
        .filter(|c| (512..=MAX_CLUSTER).contains(c))
        .ok_or_else(|| {
            format!("cluster size {sector_size} × {sectors_per_cluster} is outside 512 B..=2 MiB")
        })?;
    let total_sectors = le64(bs, 0x28);
    let size = total_sectors
        .checked_mul(u64::from(sector_size))
        .filter(|&s| s <= dev_len)
        .ok_or_else(|| {
            format!(
                "{total_sectors} sectors of {sector_size} bytes do not fit in the {dev_len} bytes of the volume"
            )
        })?;
    let total_clusters = total_sectors / u64::from(sectors_per_cluster);
    if total_clusters < MIN_CLUSTERS {
        return Err(format!(
            "a volume of {total_clusters} clusters is too small for NTFS"
        ));
    }
    let file_record_size = record_size(bs[0x40], cluster_size)
        .filter(|s| (MIN_RECORD..=MAX_RECORD).contains(s) && s.is_power_of_two())
        .ok_or_else(|| {
            format!(
                "file record size byte {:#04x} (cluster size {cluster_size}) is not a power of two in {MIN_RECORD}..={MAX_RECORD}",
                bs[0x40]
            )
        })?;
    let index_record_size = record_size(bs[0x44], cluster_size)
        .filter(|s| (MIN_INDEX_RECORD..=MAX_INDEX_RECORD).contains(s) && s.is_power_of_two())
        .ok_or_else(|| {
            format!(
                "index record size byte {:#04x} (cluster size {cluster_size}) is not a power of two in {MIN_INDEX_RECORD}..={MAX_INDEX_RECORD}",
                bs[0x44]
            )
        })?;
    let mft_lcn = le64(bs, 0x30);
    let mirr_lcn = le64(bs, 0x38);
    if mft_lcn == 0 || mft_lcn >= total_clusters {
        return Err(format!(
            "MFT cluster {mft_lcn} is outside the volume's {total_clusters} clusters"
        ));
    }
    if mirr_lcn >= total_clusters {
        return Err(format!(
            "MFT mirror cluster {mirr_lcn} is outside the volume's {total_clusters} clusters"
        ));
    }
    let mft_offset = mft_lcn * u64::from(cluster_size);
    // The metadata files (records 0..16) must lie inside the volume.
    match mft_offset.checked_add(16 * u64::from(file_record_size)) {
        Some(end) if end <= size => {}
        _ => {
            return Err(format!(
                "the MFT at byte {mft_offset} does not fit in the {size}-byte volume"
            ))
        }
    }
    Ok(Geometry {
        sector_size,
        cluster_size,
        total_sectors,
        total_clusters,
        size,
        mft_lcn,
        mft_offset,
        file_record_size,
        index_record_size,
        serial: le64(bs, 0x48),
        mirr_lcn,
    })
}

/// A record size byte: positive = clusters, negative = 2^-value bytes.
fn record_size(raw: u8, cluster_size: u32) -> Option<u32> {
    let v = raw as i8;
    if v > 0 {
        cluster_size.checked_mul(v as u32)
    } else {
        let exp = u32::from(v.unsigned_abs());
        if (9..=20).contains(&exp) {
            Some(1 << exp)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible boot sector: 512-byte sectors, 8 sectors per cluster.
    fn sample() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[3..11].copy_from_slice(b"NTFS    ");
        b[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        b[0x0D] = 8;
        b[0x28..0x30].copy_from_slice(&32767u64.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&2000u64.to_le_bytes());
        b[0x40] = 0xF6; // 2^10
        b[0x44] = 1; // one cluster
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn accepts_a_plausible_sector() {
        let g = parse(&sample(), 16 << 20).unwrap();
        assert_eq!(g.cluster_size, 4096);
        assert_eq!(g.file_record_size, 1024);
        assert_eq!(g.index_record_size, 4096);
        assert_eq!(g.total_clusters, 32767 / 8);
        assert_eq!(g.mft_offset, 4 * 4096);
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (3, b"NTFT".to_vec(), "signature"),
            (0x0B, 300u16.to_le_bytes().to_vec(), "bytes per sector"),
            (0x0B, 256u16.to_le_bytes().to_vec(), "not supported"),
            (0x0B, 8192u16.to_le_bytes().to_vec(), "bytes per sector"),
            (0x0D, vec![3], "sectors per cluster"),
            (0x0D, vec![0], "sectors per cluster"),
            (0x0D, vec![0xF0], "sectors per cluster"),
            (0x28, (1u64 << 40).to_le_bytes().to_vec(), "do not fit"),
            (0x28, u64::MAX.to_le_bytes().to_vec(), "do not fit"),
            (0x30, 0u64.to_le_bytes().to_vec(), "MFT cluster"),
            (0x30, 5000u64.to_le_bytes().to_vec(), "MFT cluster"),
            (0x30, 4094u64.to_le_bytes().to_vec(), "does not fit"),
            (0x38, u64::MAX.to_le_bytes().to_vec(), "mirror"),
            (0x40, vec![0x7F], "file record size"),
            (0x40, vec![0xE0], "file record size"),
            (0x40, vec![0], "file record size"),
            (0x44, vec![0x40], "index record size"),
        ];
        for (off, bytes, want) in cases {
            let mut b = sample();
            b[off..off + bytes.len()].copy_from_slice(&bytes);
            let err = parse(&b, 16 << 20).unwrap_err();
            assert!(err.contains(want), "{off:#x}: {err}");
        }
    }

    #[test]
    fn large_clusters_use_the_exponent_form() {
        let mut b = sample();
        b[0x0D] = 0xF4; // 2^12 sectors = 2 MiB clusters
        b[0x28..0x30].copy_from_slice(&(64u64 << 12).to_le_bytes());
        b[0x38..0x40].copy_from_slice(&10u64.to_le_bytes());
        b[0x44] = 0xF4; // 4 KiB index records
        let g = parse(&b, 128 << 20).unwrap();
        assert_eq!(g.cluster_size, 2 << 20);
        b[0x0D] = 0xF3; // 2^13 sectors = 4 MiB clusters
        assert!(parse(&b, 128 << 20).is_err());
    }
}
