//! LVM2 physical volume label (`LABELONE` / `LVM2 001` in sectors 0-3).

use crate::bytes::{ensure, Bytes, Miss, PResult};
use crate::util::lvm2_crc;
use crate::{Ctx, FsKind, Probe};

/// Where blkid looks for the `LVM2 001` type string: (kboff, offset).
const MAGICS: [(usize, usize); 4] = [(0, 0x218), (0, 0x018), (1, 0x018), (1, 0x218)];

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let head = ctx.head();
    let (kboff, _) = MAGICS
        .iter()
        .copied()
        .find(|&(kb, off)| head.has(kb * 1024 + off, b"LVM2 001"))
        .ok_or(Miss::Not)?;
    let buf = Bytes(head.get(kboff * 1024, 1024)?);
    let mut sector = (kboff as u64) * 2;
    let label = if buf.has(0, b"LABELONE") {
        Bytes(buf.get(0, 512)?)
    } else if buf.has(512, b"LABELONE") {
        sector += 1;
        Bytes(buf.get(512, 512)?)
    } else {
        return Err(Miss::Not);
    };
    ensure(label.le64(8)? == sector)?;
    ensure(lvm2_crc(label.get(20, 512 - 20)?) == label.le32(16)?)?;

    let mut p = Probe::new(FsKind::Lvm2);
    let raw = label.get(32, 32)?;
    if raw.iter().any(|&c| c != 0) {
        // 6-4-4-4-4-4-6, as blkid's format_lvm_uuid.
        let mut s = String::with_capacity(38);
        for (i, &c) in raw.iter().enumerate() {
            if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
                s.push('-');
            }
            if c == 0 {
                break;
            }
            s.push(char::from(c));
        }
        p.uuid = Some(s);
    }
    p.version = Some("LVM2 001".into());
    p.note("LVM2 physical volume: its logical volumes are listed with its volume group");
    Ok(p)
}
