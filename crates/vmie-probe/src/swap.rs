//! Linux swap (v0 `SWAP-SPACE`, v1 `SWAPSPACE2`) and swap areas holding a
//! hibernation image (blkid `swsuspend`).

use crate::bytes::{ensure, Bytes, Miss, PResult};
use crate::util::{label_rtrim, uuid_dce};
use crate::{Ctx, FsKind, Probe};

/// Page sizes whose last 10 bytes may hold the signature.
const PAGE_SIZES: [usize; 5] = [0x1000, 0x2000, 0x4000, 0x8000, 0x10000];
const TOI_MAGIC: &[u8] = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c";
/// blkid: 10 pages.
const MIN_SIZE: u64 = 10 * 4096;

/// Fill in what a v1 header at 1024 says. `v1` requests the version and
/// page-count checks blkid applies to `SWAPSPACE2`.
fn set_info(ctx: &Ctx<'_>, p: &mut Probe, pagesize: usize, v1: bool) -> PResult<()> {
    let b = ctx.head();
    let hdr = Bytes(b.get(1024, 1024 - 4)?);
    let raw_version = hdr.le32(0)?;
    let little = raw_version == 1;
    if v1 {
        ensure(raw_version == 1 || raw_version.swap_bytes() == 1)?;
        let lastpage_raw = hdr.le32(4)?;
        ensure(lastpage_raw != 0)?;
        let lastpage = if little {
            lastpage_raw
        } else {
            lastpage_raw.swap_bytes()
        };
        let ps = pagesize as u64;
        p.set("ENDIANNESS", if little { "LITTLE" } else { "BIG" });
        p.set("FSBLOCKSIZE", pagesize.to_string());
        p.set("FSSIZE", (ps * u64::from(lastpage)).to_string());
        p.set("FSLASTBLOCK", (u64::from(lastpage) + 1).to_string());
        p.size = Some(ps * u64::from(lastpage));
        p.block_size = u32::try_from(pagesize).ok();
    }
    // blkid's check that the header area is not garbage: padding[32..34].
    let pad = 4 + 4 + 4 + 16 + 16;
    if hdr.le32(pad + 32 * 4)? == 0 && hdr.le32(pad + 33 * 4)? == 0 {
        if hdr.u8(28)? != 0 {
            p.label = label_rtrim(hdr.get(28, 16)?);
        }
        p.uuid = uuid_dce(hdr.get(12, 16)?);
    }
    Ok(())
}

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    ensure(ctx.len() >= MIN_SIZE)?;
    let b = ctx.head();
    for ps in PAGE_SIZES {
        let off = ps - 10;
        if b.has(off, b"SWAP-SPACE") {
            ensure(!b.has(0, TOI_MAGIC))?;
            let mut p = Probe::new(FsKind::Swap);
            p.version = Some("0".into());
            return Ok(p);
        }
        if b.has(off, b"SWAPSPACE2") {
            ensure(!b.has(0, TOI_MAGIC))?;
            let mut p = Probe::new(FsKind::Swap);
            set_info(ctx, &mut p, ps, true)?;
            p.version = Some("1".into());
            return Ok(p);
        }
    }
    Err(Miss::Not)
}

pub(crate) fn probe_swsuspend(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    ensure(ctx.len() >= MIN_SIZE)?;
    let b = ctx.head();
    let found = if b.has(0, TOI_MAGIC) {
        Some((0x1000, "tuxonice"))
    } else {
        PAGE_SIZES.iter().find_map(|&ps| {
            let off = ps - 10;
            [
                (&b"S1SUSPEND"[..], "s1suspend"),
                (b"S2SUSPEND", "s2suspend"),
                (b"ULSUSPEND", "ulsuspend"),
                (b"LINHIB0001", "linhib0001"),
            ]
            .iter()
            .find(|(m, _)| b.has(off, m))
            .map(|&(_, v)| (ps, v))
        })
    };
    let Some((ps, version)) = found else {
        return Err(Miss::Not);
    };
    let mut p = Probe::new(FsKind::Swap);
    set_info(ctx, &mut p, ps, false)?;
    p.version = Some(version.into());
    p.set("TYPE", "swsuspend");
    p.state.hibernated = true;
    p.note(format!(
        "swap area holds a Linux hibernation image ({version}); the system will resume \
         from it, so its filesystems must not be changed"
    ));
    Ok(p)
}
