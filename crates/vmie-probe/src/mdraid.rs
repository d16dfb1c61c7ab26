//! Linux MD RAID member superblocks: v0.90 (at the end), v1.0 (end - 8 KiB),
//! v1.1 (start) and v1.2 (4 KiB).

use crate::bytes::{ensure, some, Bytes, Miss, PResult};
use crate::util::{label_rtrim, uuid_dce};
use crate::{Ctx, FsKind, Probe};

const MAGIC: u32 = 0xa92b_4efc;
const RESERVED: u64 = 0x10000;
/// Size of the fixed part of a v1 superblock.
const SB1_LEN: usize = 256;
/// mdadm's limit on `max_dev` (a 4 KiB superblock).
const MAX_DEV: u32 = 1920;

fn probe0(ctx: &Ctx<'_>, off: u64) -> PResult<Probe> {
    ensure(ctx.len() >= RESERVED)?;
    let buf = ctx.read(off, 64)?;
    let b = Bytes(&buf);
    let le = b.le32(0)? == MAGIC;
    let be = b.be32(0)? == MAGIC;
    ensure(le || be)?;
    let word = |o: usize| if le { b.le32(o) } else { b.be32(o) };
    let major = word(4)?;
    let minor = word(8)?;
    let patch = word(12)?;
    let size = u64::from(word(32)?) << 10;
    let mut uuid = [0u8; 16];
    let mut set = |i: usize, v: u32| {
        if let Some(d) = uuid.get_mut(i * 4..i * 4 + 4) {
            d.copy_from_slice(&v.to_be_bytes());
        }
    };
    set(0, word(20)?);
    if minor >= 90 {
        set(1, word(52)?);
        set(2, word(56)?);
        set(3, word(60)?);
    }
    ensure(some(size.checked_add(RESERVED))? <= ctx.len())?;
    ensure(off >= size)?;
    let mut p = Probe::new(FsKind::LinuxRaid);
    p.version = Some(format!("{major}.{minor}.{patch}"));
    p.uuid = uuid_dce(&uuid);
    p.note(
        "v0.90 superblock at the end of the device; not checked against a partition \
         table covering it (blkid is)",
    );
    Ok(p)
}

fn probe1(ctx: &Ctx<'_>, off: u64) -> PResult<Probe> {
    let buf = ctx.read(off, SB1_LEN)?;
    let b = Bytes(&buf);
    ensure(b.le32(0)? == MAGIC)?;
    ensure(b.le32(4)? == 1)?;
    ensure(b.le64(144)? == off >> 9)?;
    let max_dev = b.le32(220)?;
    ensure(max_dev <= MAX_DEV)?;
    let csummed_len = SB1_LEN + max_dev as usize * 2;
    let full = ctx.read(off, csummed_len)?;
    let mut sum: u64 = 0;
    let mut words = full.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(Bytes(w).le32(0)?);
    }
    if words.remainder().len() == 2 {
        sum += u64::from(Bytes(words.remainder()).le16(0)?);
    }
    let stored = b.le32(216)?;
    sum = sum.saturating_sub(u64::from(stored));
    ensure((sum >> 32) + (sum & 0xffff_ffff) == u64::from(stored))?;

    let mut p = Probe::new(FsKind::LinuxRaid);
    p.uuid = uuid_dce(b.get(16, 16)?);
    if let Some(sub) = uuid_dce(b.get(168, 16)?) {
        p.set("UUID_SUB", sub);
    }
    p.label = label_rtrim(ctx.cap(b.get(32, 32)?));
    let level = b.le32(72)? as i32;
    p.set("MD_LEVEL", level.to_string());
    if let Some(bytes) = b.le64(128)?.checked_mul(512) {
        p.set("MD_DATA_OFFSET", bytes.to_string());
    }
    p.note("MD RAID member: the array must be assembled to reach its contents");
    Ok(p)
}

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let len = ctx.len();
    if len > RESERVED {
        let off0 = (len & !(RESERVED - 1)) - RESERVED;
        match probe0(ctx, off0) {
            Ok(p) => return Ok(p),
            Err(Miss::Io(e)) => return Err(Miss::Io(e)),
            Err(Miss::Not) => {}
        }
        if let Some(off) = (len & !0xfff).checked_sub(0x2000) {
            match probe1(ctx, off) {
                Ok(mut p) => {
                    p.version = Some("1.0".into());
                    return Ok(p);
                }
                Err(Miss::Io(e)) => return Err(Miss::Io(e)),
                Err(Miss::Not) => {}
            }
        }
    }
    for (off, v) in [(0u64, "1.1"), (0x1000, "1.2")] {
        match probe1(ctx, off) {
            Ok(mut p) => {
                p.version = Some(v.into());
                return Ok(p);
            }
            Err(Miss::Io(e)) => return Err(Miss::Io(e)),
            Err(Miss::Not) => {}
        }
    }
    Err(Miss::Not)
}
