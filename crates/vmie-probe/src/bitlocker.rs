//! BitLocker (Vista, Windows 7+ and BitLocker To Go) volumes.

use crate::bytes::{ensure, Bytes, Miss, PResult};
use crate::util::utf16_label;
use crate::{Ctx, FsKind, Probe};

const MAGIC_VISTA: &[u8] = b"\xeb\x52\x90-FVE-FS-";
const MAGIC_WIN7: &[u8] = b"\xeb\x58\x90-FVE-FS-";
const MAGIC_TOGO: &[u8] = b"\xeb\x58\x90MSWIN4.1";
const FVE: &[u8] = b"-FVE-FS-";

const ENTRY_DESCRIPTION: u16 = 0x0007;
const VALUE_STRING: u16 = 0x0002;
/// Block header (64 bytes) + metadata header (48 bytes).
const FVE_HEAD: usize = 64 + 48;
/// Largest FVE metadata we read.
const MAX_FVE: usize = 64 * 1024;

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let b = ctx.head();
    let meta_off = if b.has(0, MAGIC_VISTA) {
        None
    } else if b.has(0, MAGIC_WIN7) {
        Some(b.le64(176)?)
    } else if b.has(0, MAGIC_TOGO) {
        Some(b.le64(440)?)
    } else {
        return Err(Miss::Not);
    };
    let mut p = Probe::new(FsKind::Bitlocker);
    p.state.encrypted = true;
    p.note("BitLocker encrypted volume: contents are not readable without a key");
    let Some(off) = meta_off else {
        p.note("Vista BitLocker: FVE metadata not parsed");
        return Ok(p);
    };
    ensure(off != 0 && off % 64 == 0)?;
    let head = ctx.read(off, FVE_HEAD)?;
    let h = Bytes(&head);
    ensure(h.has(0, FVE))?;

    p.version = Some(h.le16(10)?.to_string());
    let size = h.le32(64)? as usize;
    let avail = size.min(MAX_FVE);
    if avail < size {
        p.note(format!(
            "FVE metadata of {size} bytes: only {MAX_FVE} examined"
        ));
    }
    match ctx.read(off, 64 + avail) {
        Ok(meta) => {
            let m = Bytes(&meta);
            let mut pos = 48usize;
            while pos + 8 < avail {
                let esize = usize::from(m.le16(64 + pos)?);
                if pos % 2 != 0 || esize < 8 || pos + esize > size {
                    p.note("FVE metadata entries are malformed (blkid refuses this volume)");
                    break;
                }
                if pos + esize > avail {
                    break;
                }
                let ty = m.le16(64 + pos + 2)?;
                let vt = m.le16(64 + pos + 4)?;
                if ty == ENTRY_DESCRIPTION && vt == VALUE_STRING {
                    let data = m.get(64 + pos + 8, esize - 8)?;
                    p.label = utf16_label(ctx.cap(data), false, false);
                    break;
                }
                pos += esize;
            }
        }
        Err(Miss::Not) => p.note("FVE metadata extends past the device"),
        Err(e) => return Err(e),
    }
    let id = h.arr::<16>(80)?;
    if id != [0; 16] {
        p.uuid = Some(format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-\
             {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            id[3],
            id[2],
            id[1],
            id[0],
            id[5],
            id[4],
            id[7],
            id[6],
            id[8],
            id[9],
            id[10],
            id[11],
            id[12],
            id[13],
            id[14],
            id[15]
        ));
    }
    Ok(p)
}
