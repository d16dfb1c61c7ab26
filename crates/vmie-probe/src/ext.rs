//! ext2/ext3/ext4, told apart by feature flags exactly as libblkid does.

use crate::bytes::{ensure, Bytes, Miss, PResult};
use crate::util::{crc32c_update, label_rtrim, uuid_dce};
use crate::{Ctx, FsKind, Probe};

const SB_OFF: u64 = 1024;
const SB_LEN: usize = 1024;

// s_feature_compat
const COMPAT_HAS_JOURNAL: u32 = 0x0004;

// s_feature_ro_compat
const RO_SPARSE_SUPER: u32 = 0x0001;
const RO_LARGE_FILE: u32 = 0x0002;
const RO_BTREE_DIR: u32 = 0x0004;
const RO_METADATA_CSUM: u32 = 0x0400;
const RO_ORPHAN_PRESENT: u32 = 0x1_0000;

// s_feature_incompat
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_RECOVER: u32 = 0x0004;
const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const INCOMPAT_META_BG: u32 = 0x0010;
const INCOMPAT_64BIT: u32 = 0x0080;
const INCOMPAT_MMP: u32 = 0x0100;

// s_flags
const FLAGS_TEST_FILESYS: u32 = 0x0004;

// s_state
const STATE_VALID: u16 = 0x0001;
const STATE_ERROR: u16 = 0x0002;
const STATE_ORPHAN: u16 = 0x0004;

const EXT2_RO_SUPP: u32 = RO_SPARSE_SUPER | RO_LARGE_FILE | RO_BTREE_DIR;
const EXT2_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const EXT3_RO_SUPP: u32 = EXT2_RO_SUPP;
const EXT3_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

/// Every incompat bit e2fsprogs defines.
const KNOWN_INCOMPAT: u32 = 0x0001 // compression
    | INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_JOURNAL_DEV
    | INCOMPAT_META_BG
    | 0x0040 // extent
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | 0x0200 // flex_bg
    | 0x0400 // ea_inode
    | 0x1000 // dirdata
    | 0x2000 // metadata_csum_seed
    | 0x4000 // large_dir
    | 0x8000 // inline_data
    | 0x1_0000 // encrypt
    | 0x2_0000; // casefold

/// Every ro_compat bit e2fsprogs defines.
const KNOWN_RO_COMPAT: u32 = EXT2_RO_SUPP
    | 0x0008 // huge_file
    | 0x0010 // gdt_csum (uninit_bg)
    | 0x0020 // dir_nlink
    | 0x0040 // extra_isize
    | 0x0080 // has_snapshot
    | 0x0100 // quota
    | 0x0200 // bigalloc
    | RO_METADATA_CSUM
    | 0x0800 // replica
    | 0x1000 // read-only
    | 0x2000 // project
    | 0x4000 // shared_blocks
    | 0x8000 // verity
    | RO_ORPHAN_PRESENT;

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let buf = ctx.read(SB_OFF, SB_LEN)?;
    let sb = Bytes(&buf);
    ensure(sb.has(0x38, b"\x53\xef"))?;

    let log_block_size = sb.le32(0x18)?;
    let state = sb.le16(0x3a)?;
    let minor_rev = sb.le16(0x3e)?;
    let rev = sb.le32(0x4c)?;
    let fc = sb.le32(0x5c)?;
    let fi = sb.le32(0x60)?;
    let frc = sb.le32(0x64)?;
    let s_flags = sb.le32(0x160)?;

    let mut csum_bad = false;
    if frc & RO_METADATA_CSUM != 0 {
        let stored = sb.le32(0x3fc)?;
        let calc = crc32c_update(!0, sb.get(0, 0x3fc)?);
        csum_bad = stored != calc;
    } else if log_block_size >= 256 {
        // blkid's sanity check for superblocks without a checksum.
        return Err(Miss::Not);
    }

    // Distinguish from an external journal device (blkid "jbd").
    ensure(fi & INCOMPAT_JOURNAL_DEV == 0)?;

    let ext3_unsupported = (frc & !EXT3_RO_SUPP) != 0 || (fi & !EXT3_INCOMPAT_SUPP) != 0;
    let ext2_unsupported = (frc & !EXT2_RO_SUPP) != 0 || (fi & !EXT2_INCOMPAT_SUPP) != 0;
    let has_journal = fc & COMPAT_HAS_JOURNAL != 0;

    let (kind, ver, ext4dev) = if s_flags & FLAGS_TEST_FILESYS != 0 {
        (FsKind::Ext4, 4, true)
    } else if ext3_unsupported {
        (FsKind::Ext4, 4, false)
    } else if has_journal {
        (FsKind::Ext3, 3, false)
    } else if !ext2_unsupported {
        (FsKind::Ext2, 2, false)
    } else {
        // No journal but RECOVER set: blkid recognises none of ext2/3/4.
        return Err(Miss::Not);
    };

    let mut p = Probe::new(kind);
    if ext4dev {
        p.set("TYPE", "ext4dev");
        p.note("s_flags has TEST_FILESYS: blkid reports this as ext4dev");
    }
    p.label = label_rtrim(ctx.cap(sb.get(0x78, 16)?));
    p.uuid = uuid_dce(sb.get(0x68, 16)?);
    if has_journal {
        if let Some(j) = uuid_dce(sb.get(0xd0, 16)?) {
            p.set("EXT_JOURNAL", j);
        }
    }
    if ver != 2 && (fi & !EXT2_INCOMPAT_SUPP) == 0 {
        p.set("SEC_TYPE", "ext2");
    }
    p.version = Some(format!("{rev}.{minor_rev}"));

    let blocks_lo = u64::from(sb.le32(0x04)?);
    let blocks = if fi & INCOMPAT_64BIT != 0 {
        blocks_lo | (u64::from(sb.le32(0x150)?) << 32)
    } else {
        blocks_lo
    };
    // 1024 << 21 is the largest block size that fits a u32.
    if log_block_size <= 21 {
        let bs = 1024u32 << log_block_size;
        p.block_size = Some(bs);
        p.size = blocks.checked_mul(u64::from(bs));
        p.set("FSBLOCKSIZE", bs.to_string());
        p.set("BLOCK_SIZE", bs.to_string());
        if let Some(s) = p.size {
            p.set("FSSIZE", s.to_string());
        }
    } else {
        p.note(format!(
            "s_log_block_size {log_block_size} gives no usable block size"
        ));
    }
    p.set("FSLASTBLOCK", blocks.to_string());

    // State.
    if csum_bad {
        p.note(
            "superblock checksum (metadata_csum) does not match; blkid would not \
             recognise this superblock",
        );
    }
    if fi & INCOMPAT_RECOVER != 0 {
        p.state.needs_recovery = true;
        p.note("incompat RECOVER set: the journal must be replayed (needs_recovery)");
    }
    if state & STATE_ERROR != 0 {
        p.state.errors = true;
        p.note("s_state has ERROR_FS: the kernel recorded errors, e2fsck is required");
    }
    if state & STATE_VALID == 0 {
        p.state.errors = true;
        p.note("s_state lacks VALID_FS: not cleanly unmounted or check in progress");
    }
    if state & STATE_ORPHAN != 0 {
        p.note("s_state has ORPHAN_FS: orphan inodes are being recovered");
    }
    let error_count = sb.le32(0x194)?;
    if error_count != 0 {
        p.note(format!("s_error_count is {error_count}"));
    }
    if sb.le32(0xe8)? != 0 {
        p.note("s_last_orphan is set: orphan inodes await cleanup on next mount");
    }
    if frc & RO_ORPHAN_PRESENT != 0 {
        p.note("ro_compat orphan_present: the orphan file has entries");
    }
    if fi & INCOMPAT_MMP != 0 {
        p.note("multi-mount protection (mmp) is enabled");
    }
    if has_journal && sb.le32(0xe4)? != 0 && sb.le32(0xe0)? == 0 {
        p.note("the journal is on an external device; it was not checked");
    }
    let unknown_in = fi & !KNOWN_INCOMPAT;
    let unknown_ro = frc & !KNOWN_RO_COMPAT;
    for bit in 0..32 {
        let m = 1u32 << bit;
        if unknown_in & m != 0 {
            p.state
                .unknown_features
                .push(format!("ext4 incompat 0x{m:08x}"));
        }
        if unknown_ro & m != 0 {
            p.state
                .unknown_features
                .push(format!("ext4 ro_compat 0x{m:08x}"));
        }
    }
    Ok(p)
}
