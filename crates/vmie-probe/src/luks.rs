//! LUKS1 and LUKS2 headers.

use crate::bytes::{Bytes, Miss, PResult};
use crate::util::{label_rtrim, label_trim};
use crate::{Ctx, FsKind, Probe};

const MAGIC: &[u8] = b"LUKS\xba\xbe";
const MAGIC_2: &[u8] = b"SKUL\xba\xbe";
/// Where LUKS2 puts its secondary header.
const SECONDARY: [u64; 9] = [
    0x04000, 0x008000, 0x010000, 0x020000, 0x40000, 0x080000, 0x100000, 0x200000, 0x400000,
];

fn valid(h: &Bytes<'_>, magic: &[u8], offset: u64) -> PResult<bool> {
    if !h.has(0, magic) {
        return Ok(false);
    }
    if h.be16(6)? == 2 && h.be64(256)? != offset {
        return Ok(false);
    }
    Ok(true)
}

fn attributes(ctx: &Ctx<'_>, h: &Bytes<'_>) -> PResult<Probe> {
    let version = h.be16(6)?;
    let mut p = Probe::new(FsKind::Luks);
    p.version = Some(version.to_string());
    if version == 1 || version == 2 {
        p.uuid = label_rtrim(h.get(168, 40)?);
    }
    if version == 2 {
        p.label = label_rtrim(ctx.cap(h.get(24, 48)?));
        if let Some(s) = label_trim(h.get(208, 48)?) {
            p.set("SUBSYSTEM", s);
        }
    }
    p.state.encrypted = true;
    p.note(format!(
        "LUKS{version} encrypted volume: contents are not readable without a key"
    ));
    Ok(p)
}

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let head = ctx.head();
    let h = Bytes(head.get(0, 512)?);
    if valid(&h, MAGIC, 0)? {
        return attributes(ctx, &h);
    }
    if ctx.opts().luks2_secondary_headers {
        for off in SECONDARY {
            let buf = match ctx.read(off, 512) {
                Ok(b) => b,
                Err(Miss::Not) => break,
                Err(e) => return Err(e),
            };
            let h = Bytes(&buf);
            if valid(&h, MAGIC_2, off)? {
                let mut p = attributes(ctx, &h)?;
                p.note(format!(
                    "primary LUKS2 header missing; secondary header found at {off}"
                ));
                return Ok(p);
            }
        }
    }
    Err(Miss::Not)
}
