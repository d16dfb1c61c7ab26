//! The superblock as the writer needs it: geometry, features and the feature
//! gate that decides whether we may write at all.

use vmie_guestfs::FsError;

use crate::csum::crc32c;

pub(crate) const COMPAT_SPARSE_SUPER2: u32 = 0x200;

pub(crate) const INCOMPAT_COMPRESSION: u32 = 0x1;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_EXTENTS: u32 = 0x40;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_MMP: u32 = 0x100;
pub(crate) const INCOMPAT_FLEX_BG: u32 = 0x200;
pub(crate) const INCOMPAT_EA_INODE: u32 = 0x400;
pub(crate) const INCOMPAT_DIRDATA: u32 = 0x1000;
pub(crate) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub(crate) const INCOMPAT_LARGEDIR: u32 = 0x4000;
pub(crate) const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub(crate) const INCOMPAT_ENCRYPT: u32 = 0x10000;
pub(crate) const INCOMPAT_CASEFOLD: u32 = 0x20000;

pub(crate) const RO_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_LARGE_FILE: u32 = 0x2;
pub(crate) const RO_BTREE_DIR: u32 = 0x4;
pub(crate) const RO_HUGE_FILE: u32 = 0x8;
pub(crate) const RO_GDT_CSUM: u32 = 0x10;
pub(crate) const RO_DIR_NLINK: u32 = 0x20;
pub(crate) const RO_EXTRA_ISIZE: u32 = 0x40;
pub(crate) const RO_HAS_SNAPSHOT: u32 = 0x80;
pub(crate) const RO_QUOTA: u32 = 0x100;
pub(crate) const RO_BIGALLOC: u32 = 0x200;
pub(crate) const RO_METADATA_CSUM: u32 = 0x400;
pub(crate) const RO_REPLICA: u32 = 0x800;
pub(crate) const RO_READONLY: u32 = 0x1000;
pub(crate) const RO_PROJECT: u32 = 0x2000;
pub(crate) const RO_SHARED_BLOCKS: u32 = 0x4000;
pub(crate) const RO_VERITY: u32 = 0x8000;
pub(crate) const RO_ORPHAN_PRESENT: u32 = 0x10000;

/// Incompatible features the writer understands.
const INCOMPAT_OK: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_FLEX_BG
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

/// Read-only-compatible features the writer understands.
const RO_OK: u32 = RO_SPARSE_SUPER
    | RO_LARGE_FILE
    | RO_HUGE_FILE
    | RO_GDT_CSUM
    | RO_DIR_NLINK
    | RO_EXTRA_ISIZE
    | RO_METADATA_CSUM
    | RO_PROJECT
    | RO_VERITY;

fn incompat_name(bit: u32) -> &'static str {
    match bit {
        INCOMPAT_COMPRESSION => "compression",
        INCOMPAT_RECOVER => "needs_recovery",
        INCOMPAT_JOURNAL_DEV => "journal_dev",
        INCOMPAT_META_BG => "meta_bg",
        INCOMPAT_MMP => "mmp",
        INCOMPAT_EA_INODE => "ea_inode",
        INCOMPAT_DIRDATA => "dirdata",
        _ => "unknown",
    }
}

fn ro_name(bit: u32) -> &'static str {
    match bit {
        RO_BTREE_DIR => "btree_dir",
        RO_HAS_SNAPSHOT => "snapshot",
        RO_QUOTA => "quota",
        RO_BIGALLOC => "bigalloc",
        RO_REPLICA => "replica",
        RO_READONLY => "read-only",
        RO_SHARED_BLOCKS => "shared_blocks",
        RO_ORPHAN_PRESENT => "orphan_present",
        _ => "unknown",
    }
}

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    match b.get(o..o + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    match b.get(o..o + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

pub(crate) fn put16(b: &mut [u8], o: usize, v: u16) {
    if let Some(s) = b.get_mut(o..o + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn put32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Geometry and features of one filesystem, validated.
#[derive(Debug, Clone)]
pub(crate) struct Geo {
    pub bs: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub bpg: u64,
    pub ipg: u32,
    pub inodes_count: u32,
    pub inode_size: usize,
    pub groups: u32,
    pub desc_size: usize,
    pub gdt_blocks: u64,
    pub reserved_gdt: u64,
    pub first_ino: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro: u32,
    pub uuid: [u8; 16],
    pub csum_seed: u32,
    pub hash_seed: [u32; 4],
    pub hash_unsigned: bool,
    pub backup_bgs: [u32; 2],
    pub want_extra_isize: u16,
    /// Groups per flex group (1 without `flex_bg`): the groups whose
    /// bitmaps and inode tables may share a group's blocks.
    pub flex: u32,
}

impl Geo {
    pub fn metadata_csum(&self) -> bool {
        self.ro & RO_METADATA_CSUM != 0
    }
    pub fn gdt_csum(&self) -> bool {
        self.ro & RO_GDT_CSUM != 0
    }
    /// Group descriptors carry uninit flags and `itable_unused`.
    pub fn uninit_bg(&self) -> bool {
        self.metadata_csum() || self.gdt_csum()
    }
    pub fn extents(&self) -> bool {
        self.incompat & INCOMPAT_EXTENTS != 0
    }
    pub fn filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }
    pub fn is64(&self) -> bool {
        self.incompat & INCOMPAT_64BIT != 0
    }

    /// Parse the 1024-byte superblock of a filesystem on a device of
    /// `dev_len` bytes. Geometry errors are `Corrupt`.
    pub fn parse(sb: &[u8], dev_len: u64, loc: &str) -> Result<Self, FsError> {
        let corrupt = |detail: String| FsError::Corrupt {
            fs: loc.to_string(),
            place: "superblock (offset 1024)".into(),
            detail,
        };
        if le16(sb, 0x38) != 0xEF53 {
            return Err(corrupt("no ext2/3/4 magic".into()));
        }
        let log = le32(sb, 0x18);
        if log > 6 {
            return Err(corrupt(format!("block size 2^(10+{log})")));
        }
        let bs = 1024u64 << log;
        let incompat = le32(sb, 0x60);
        let mut blocks_count = u64::from(le32(sb, 0x04));
        if incompat & INCOMPAT_64BIT != 0 {
            blocks_count |= u64::from(le32(sb, 0x150)) << 32;
        }
        if blocks_count.checked_mul(bs).is_none_or(|n| n > dev_len) {
            return Err(corrupt(format!(
                "{blocks_count} blocks of {bs} bytes exceed the volume"
            )));
        }
        let first_data_block = u64::from(le32(sb, 0x14));
        let bpg = u64::from(le32(sb, 0x20));
        let ipg = le32(sb, 0x28);
        if bpg == 0 || bpg > bs * 8 || ipg == 0 || u64::from(ipg) > bs * 8 {
            return Err(corrupt(format!(
                "{bpg} blocks or {ipg} inodes per group for {bs}-byte blocks"
            )));
        }
        if first_data_block >= blocks_count || first_data_block > 1 {
            return Err(corrupt(format!("first data block {first_data_block}")));
        }
        let groups64 = (blocks_count - first_data_block).div_ceil(bpg);
        let groups = u32::try_from(groups64).map_err(|_| corrupt("too many groups".into()))?;
        let inodes_count = le32(sb, 0x00);
        if u64::from(inodes_count) != u64::from(ipg) * groups64 {
            return Err(corrupt(format!(
                "{inodes_count} inodes is not {ipg} per group x {groups} groups"
            )));
        }
        let rev = le32(sb, 0x4C);
        let (inode_size, first_ino) = if rev == 0 {
            (128usize, 11u32)
        } else {
            (usize::from(le16(sb, 0x58)), le32(sb, 0x54))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > bs {
            return Err(corrupt(format!("inode size {inode_size}")));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return Err(corrupt(format!("first inode {first_ino}")));
        }
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            let d = usize::from(le16(sb, 0xFE));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(corrupt(format!("group descriptor size {d}")));
            }
            d
        } else {
            32
        };
        let gdt_blocks = (groups64 * desc_size as u64).div_ceil(bs);
        let reserved_gdt = u64::from(le16(sb, 0xCE));
        if first_data_block + 1 + gdt_blocks + reserved_gdt
            > blocks_count.min(bpg + first_data_block)
        {
            return Err(corrupt("group descriptors do not fit in group 0".into()));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        let ro = le32(sb, 0x64);
        let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
            le32(sb, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        let hash_seed = [
            le32(sb, 0xEC),
            le32(sb, 0xF0),
            le32(sb, 0xF4),
            le32(sb, 0xF8),
        ];
        Ok(Self {
            bs,
            blocks_count,
            first_data_block,
            bpg,
            ipg,
            inodes_count,
            inode_size,
            groups,
            desc_size,
            gdt_blocks,
            reserved_gdt,
            first_ino,
            compat: le32(sb, 0x5C),
            incompat,
            ro,
            uuid,
            csum_seed,
            hash_seed,
            hash_unsigned: le32(sb, 0x160) & 0x2 != 0,
            backup_bgs: [le32(sb, 0x24C), le32(sb, 0x250)],
            want_extra_isize: le16(sb, 0x15E),
            flex: if incompat & INCOMPAT_FLEX_BG != 0 {
                1u32 << sb[0x174].min(31)
            } else {
                1
            },
        })
    }

    /// The feature gate: may we write to this filesystem at all?
    ///
    /// A journal that needs recovery (`needs_recovery`) is refused rather
    /// than replayed: replaying would mean writing the journal's blocks home
    /// first, a second write path to prove; the kernel or `e2fsck` replays it
    /// when the guest next mounts, after which we can write.
    pub fn check_writable(&self, sb: &[u8], loc: &str) -> Result<(), FsError> {
        let refuse = |why: String| FsError::Unsupported {
            fs: loc.to_string(),
            op: "write".into(),
            why,
        };
        let bad_in = self.incompat & !INCOMPAT_OK;
        if bad_in & INCOMPAT_RECOVER != 0 {
            return Err(refuse(
                "the journal needs recovery (needs_recovery); we do not replay journals: \
                 boot the guest once or run e2fsck first"
                    .into(),
            ));
        }
        if bad_in != 0 {
            let bit = 1u32 << bad_in.trailing_zeros();
            return Err(refuse(format!(
                "incompatible feature {} (0x{bit:x}) is not supported by the writer",
                incompat_name(bit)
            )));
        }
        let bad_ro = self.ro & !RO_OK;
        if bad_ro != 0 {
            let bit = 1u32 << bad_ro.trailing_zeros();
            let extra = if bit == RO_QUOTA {
                " (quota usage would not be kept up to date)"
            } else {
                ""
            };
            return Err(refuse(format!(
                "read-only-compatible feature {} (0x{bit:x}) is not supported by the writer{extra}",
                ro_name(bit)
            )));
        }
        if self.metadata_csum() && sb.get(0x175) != Some(&1) {
            return Err(refuse("unknown metadata checksum type".into()));
        }
        let state = le16(sb, 0x3A);
        if state & 1 == 0 {
            return Err(refuse(
                "the filesystem was not cleanly unmounted (state not clean): run e2fsck first"
                    .into(),
            ));
        }
        if state & 2 != 0 {
            return Err(refuse(
                "the filesystem has errors recorded (state ERROR_FS): run e2fsck first".into(),
            ));
        }
        if self.metadata_csum() {
            let want = crc32c(!0, &sb[..0x3FC]);
            if le32(sb, 0x3FC) != want {
                return Err(FsError::Corrupt {
                    fs: loc.to_string(),
                    place: "superblock (offset 1024)".into(),
                    detail: "superblock checksum mismatch".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether group `g` holds a superblock backup (and group descriptors).
    pub fn has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if self.ro & RO_SPARSE_SUPER == 0 || g == 1 {
            return true;
        }
        for base in [3u32, 5, 7] {
            let mut p = base;
            while p < g {
                match p.checked_mul(base) {
                    Some(n) => p = n,
                    None => break,
                }
            }
            if p == g {
                return true;
            }
        }
        false
    }

    /// First block of group `g`.
    pub fn group_first(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.bpg
    }

    /// Number of blocks in group `g` (the last may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks_count - self.group_first(g)).min(self.bpg)
    }
}
