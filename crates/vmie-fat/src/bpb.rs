//! The boot sector and BIOS parameter block: every field checked before use,
//! the FAT type decided by the cluster count as Microsoft's specification
//! says (not by the `FAT12   `/`FAT32   ` label string).

use vmie_guestfs::FsError;

/// FAT12, FAT16 or FAT32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatKind {
    /// Fewer than 4085 clusters.
    Fat12,
    /// 4085 to 65524 clusters.
    Fat16,
    /// 65525 clusters or more.
    Fat32,
}

impl FatKind {
    /// `fat12`, `fat16`, `fat32`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fat12 => "fat12",
            Self::Fat16 => "fat16",
            Self::Fat32 => "fat32",
        }
    }

    /// The smallest end-of-chain value.
    pub(crate) fn eoc_min(self) -> u32 {
        match self {
            Self::Fat12 => 0xFF8,
            Self::Fat16 => 0xFFF8,
            Self::Fat32 => 0x0FFF_FFF8,
        }
    }

    /// The end-of-chain value we write.
    pub(crate) fn eoc(self) -> u32 {
        match self {
            Self::Fat12 => 0xFFF,
            Self::Fat16 => 0xFFFF,
            Self::Fat32 => 0x0FFF_FFFF,
        }
    }

    /// The bad-cluster mark.
    pub(crate) fn bad(self) -> u32 {
        self.eoc_min() - 1
    }
}

/// The geometry of one FAT volume, from a checked boot sector.
#[derive(Debug, Clone)]
pub(crate) struct Geo {
    pub kind: FatKind,
    /// Bytes per sector.
    pub bps: u32,
    /// Bytes per cluster.
    pub cs: u32,
    /// Sectors before the first FAT.
    pub reserved: u64,
    /// Number of FAT copies.
    pub nfats: u32,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// Root directory entries (FAT12/16; 0 on FAT32).
    pub root_entries: u32,
    /// First sector of the data area.
    pub data_start: u64,
    /// Number of data clusters (clusters 2 ..= clusters + 1).
    pub clusters: u32,
    /// First cluster of the root directory (FAT32; 0 otherwise).
    pub root_cluster: u32,
    /// Sector of the FSInfo structure (FAT32 with a valid one).
    pub fsinfo: Option<u64>,
    /// FAT32 with mirroring disabled: the one active FAT.
    pub active_fat: Option<u32>,
    /// Offset of the boot sector's "state" byte (BS_Reserved1; bit 0 = dirty).
    pub state_byte: usize,
    /// Bytes of the volume.
    pub size: u64,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Geo {
    /// Parse and check the boot sector `bs` (at least 512 bytes) of a
    /// device of `dev_len` bytes.
    pub fn parse(bs: &[u8], dev_len: u64, loc: &str) -> Result<Self, FsError> {
        let bad = |detail: String| FsError::Corrupt {
            fs: loc.to_string(),
            place: "boot sector (offset 0)".into(),
            detail,
        };
        if bs.len() < 512 {
            return Err(bad(format!(
                "the volume is {} bytes, smaller than a boot sector",
                bs.len()
            )));
        }
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return Err(bad("no 55 AA boot signature: not a FAT volume".into()));
        }
        let bps = u32::from(le16(bs, 11));
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad(format!(
                "{bps} bytes per sector (must be a power of two from 512 to 4096)"
            )));
        }
        let spc = u32::from(bs[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad(format!(
                "{spc} sectors per cluster (must be a power of two)"
            )));
        }
        let cs = bps * spc;
        if cs > 256 * 1024 {
            return Err(bad(format!("clusters of {cs} bytes (at most 256 KiB)")));
        }
        let reserved = u64::from(le16(bs, 14));
        if reserved == 0 {
            return Err(bad("0 reserved sectors".into()));
        }
        let nfats = u32::from(bs[16]);
        if !(1..=4).contains(&nfats) {
            return Err(bad(format!("{nfats} FATs (1 to 4 accepted)")));
        }
        let root_entries = u32::from(le16(bs, 17));
        let tot16 = u64::from(le16(bs, 19));
        let media = bs[21];
        if media != 0xF0 && media < 0xF8 {
            return Err(bad(format!("media byte 0x{media:02x}")));
        }
        let fat16_sz = u64::from(le16(bs, 22));
        let tot32 = u64::from(le32(bs, 32));
        let fat32_sz = u64::from(le32(bs, 36));
        let total = if tot16 != 0 { tot16 } else { tot32 };
        let fat_sectors = if fat16_sz != 0 { fat16_sz } else { fat32_sz };
        if total == 0 || fat_sectors == 0 {
            return Err(bad(format!(
                "{total} total sectors, {fat_sectors} sectors per FAT"
            )));
        }
        let size = total * u64::from(bps);
        if size > dev_len {
            return Err(bad(format!(
                "the volume claims {size} bytes ({total} sectors of {bps}) but the device has {dev_len}: truncated image?"
            )));
        }
        let root_bytes = u64::from(root_entries) * 32;
        let root_sectors = root_bytes.div_ceil(u64::from(bps));
        let data_start = reserved + u64::from(nfats) * fat_sectors + root_sectors;
        if data_start >= total {
            return Err(bad(format!(
                "the data area would start at sector {data_start}, past the volume's {total} sectors"
            )));
        }
        let clusters64 = (total - data_start) / u64::from(spc);
        let kind = if clusters64 < 4085 {
            FatKind::Fat12
        } else if clusters64 < 65525 {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        };
        if clusters64 == 0 || clusters64 > 0x0FFF_FFF4 {
            return Err(bad(format!("{clusters64} clusters")));
        }
        let clusters = clusters64 as u32;
        // The FAT must hold an entry for every cluster.
        let bits = match kind {
            FatKind::Fat12 => 12,
            FatKind::Fat16 => 16,
            FatKind::Fat32 => 32,
        };
        if (u64::from(clusters) + 2) * bits > fat_sectors * u64::from(bps) * 8 {
            return Err(bad(format!(
                "{fat_sectors} sectors per FAT cannot hold {clusters} {} clusters",
                kind.name()
            )));
        }
        let mut root_cluster = 0;
        let mut fsinfo = None;
        let mut active_fat = None;
        let state_byte;
        if kind == FatKind::Fat32 {
            if root_entries != 0 || fat16_sz != 0 || tot16 != 0 {
                return Err(bad(format!(
                    "{clusters} clusters make FAT32, but the BPB has FAT12/16 fields (root entries {root_entries}, 16-bit FAT size {fat16_sz}, 16-bit total {tot16})"
                )));
            }
            let ext = le16(bs, 40);
            if ext & 0x80 != 0 {
                let a = u32::from(ext & 0xF);
                if a >= nfats {
                    return Err(bad(format!("active FAT {a} of {nfats}")));
                }
                active_fat = Some(a);
            }
            let ver = le16(bs, 42);
            if ver != 0 {
                return Err(bad(format!("FAT32 version {ver:#x} (only 0 is defined)")));
            }
            root_cluster = le32(bs, 44);
            if root_cluster < 2 || root_cluster > clusters + 1 {
                return Err(bad(format!(
                    "root directory cluster {root_cluster} outside clusters 2..={}",
                    clusters + 1
                )));
            }
            let fsi = u64::from(le16(bs, 48));
            if fsi != 0 && fsi != 0xFFFF && fsi < reserved {
                fsinfo = Some(fsi);
            }
            state_byte = 65;
        } else {
            if fat16_sz == 0 {
                return Err(bad(format!(
                    "{clusters} clusters make {}, but the 16-bit FAT size is 0 (a FAT32 BPB)",
                    kind.name()
                )));
            }
            if root_entries == 0 {
                return Err(bad(format!(
                    "{} without root directory entries",
                    kind.name()
                )));
            }
            state_byte = 37;
        }
        Ok(Self {
            kind,
            bps,
            cs,
            reserved,
            nfats,
            fat_sectors,
            root_entries,
            data_start,
            clusters,
            root_cluster,
            fsinfo,
            active_fat,
            state_byte,
            size,
        })
    }

    /// Highest valid cluster number.
    pub fn max_cluster(&self) -> u32 {
        self.clusters + 1
    }

    /// Bytes of one FAT.
    pub fn fat_bytes(&self) -> u64 {
        self.fat_sectors * u64::from(self.bps)
    }

    /// Byte offset of FAT copy `n`.
    pub fn fat_offset(&self, n: u32) -> u64 {
        (self.reserved + u64::from(n) * self.fat_sectors) * u64::from(self.bps)
    }

    /// Byte offset of the FAT12/16 root directory region.
    pub fn root_offset(&self) -> u64 {
        (self.reserved + u64::from(self.nfats) * self.fat_sectors) * u64::from(self.bps)
    }

    /// Byte offset of cluster `c` (which must be in 2 ..= max_cluster).
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start * u64::from(self.bps) + u64::from(c - 2) * u64::from(self.cs)
    }

    /// Whether `c` names a data cluster.
    pub fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && c <= self.max_cluster()
    }

    /// The directory key of the root: its first cluster on FAT32, 0 for
    /// the fixed region.
    pub fn root_key(&self) -> u32 {
        self.root_cluster
    }
}
