//! Btrfs: the primary superblock at 64 KiB, checksum verified.

use sha2::{Digest, Sha256};

use crate::bytes::{ensure, Bytes, PResult};
use crate::util::{crc32c, label_rtrim, uuid_dce, xxh64};
use crate::{Ctx, FsKind, Probe};

const SB_OFF: u64 = 64 * 1024;
const SB_LEN: usize = 4096;

const SUPER_FLAG_ERROR: u64 = 1 << 2;
const SUPER_FLAG_SEEDING: u64 = 1 << 32;
const SUPER_FLAG_METADUMP: u64 = 1 << 33;

/// mixed_backref .. raid_stripe_tree, simple_quota.
const KNOWN_INCOMPAT: u64 = 0x7fff | 0x1_0000;
/// free_space_tree, free_space_tree_valid, verity, block_group_tree.
const KNOWN_COMPAT_RO: u64 = 0xf;

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    // blkid's minimum device size for btrfs.
    ensure(ctx.len() >= 1024 * 1024)?;
    let buf = ctx.read(SB_OFF, SB_LEN)?;
    let b = Bytes(&buf);
    ensure(b.has(0x40, b"_BHRfS_M"))?;

    let csum_type = b.le16(196)?;
    let data = b.get(32, SB_LEN - 32)?;
    let mut p = Probe::new(FsKind::Btrfs);
    match csum_type {
        0 => ensure(crc32c(data) == b.le32(0)?)?,
        1 => ensure(xxh64(data, 0) == b.le64(0)?)?,
        2 => {
            let d = Sha256::digest(data);
            ensure(d.as_slice() == b.get(0, 32)?)?;
        }
        other => p.note(format!(
            "superblock checksum type {other} not verified (as blkid)"
        )),
    }
    let sectorsize = b.le32(144)?;
    ensure(sectorsize != 0)?;

    if b.u8(299)? != 0 {
        p.label = label_rtrim(ctx.cap(b.get(299, 256)?));
    }
    p.uuid = uuid_dce(b.get(32, 16)?);
    if let Some(sub) = uuid_dce(b.get(201 + 66, 16)?) {
        p.set("UUID_SUB", sub);
    }
    let total = b.le64(112)?;
    p.block_size = Some(sectorsize);
    p.size = Some(total);
    p.set("FSBLOCKSIZE", sectorsize.to_string());
    p.set("BLOCK_SIZE", sectorsize.to_string());
    p.set(
        "FSLASTBLOCK",
        (total >> sectorsize.checked_ilog2().unwrap_or(0)).to_string(),
    );
    p.set("FSSIZE", total.to_string());

    let flags = b.le64(56)?;
    let log_root = b.le64(96)?;
    let num_devices = b.le64(136)?;
    let compat_ro = b.le64(180)?;
    let incompat = b.le64(188)?;
    if log_root != 0 {
        p.state.needs_recovery = true;
        p.note(format!(
            "log_root is {log_root}: a tree log (fsync log) will be replayed on mount"
        ));
    }
    if flags & SUPER_FLAG_ERROR != 0 {
        p.state.errors = true;
        p.note("superblock flag ERROR is set: the filesystem was forced read-only by errors");
    }
    if flags & SUPER_FLAG_SEEDING != 0 {
        p.note("seeding device: read-only seed filesystem");
    }
    if flags & SUPER_FLAG_METADUMP != 0 {
        p.note("image made by btrfs-image (metadump), not a real filesystem");
    }
    if num_devices > 1 {
        p.note(format!(
            "filesystem spans {num_devices} devices; this is one of them"
        ));
    }
    for bit in 0..64 {
        let m = 1u64 << bit;
        if incompat & !KNOWN_INCOMPAT & m != 0 {
            p.state
                .unknown_features
                .push(format!("btrfs incompat 0x{m:x}"));
        }
        if compat_ro & !KNOWN_COMPAT_RO & m != 0 {
            p.state
                .unknown_features
                .push(format!("btrfs compat_ro 0x{m:x}"));
        }
    }
    Ok(p)
}
