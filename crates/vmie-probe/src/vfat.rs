//! FAT12/16/32 as libblkid's `vfat` prober, plus the dirty flags.

use crate::bytes::{ensure, some, Bytes, Miss, PResult};
use crate::util::{label_rtrim, label_trim};
use crate::{Ctx, FsKind, Probe};

const FAT12_MAX: u32 = 0xff4;
const FAT16_MAX: u32 = 0xfff4;
const FAT32_MAX: u32 = 0x0fff_fff6;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
const ATTR_MASK: u8 = 0x3f;
const ENTRY_FREE: u8 = 0xe5;
const NO_NAME: &[u8; 11] = b"NO NAME    ";

/// Largest piece of a directory read at once.
const DIR_CHUNK: u64 = 16 * 1024;

/// Signatures in libblkid's order: (offset, magic).
const MAGICS: &[(usize, &[u8])] = &[
    (0x52, b"MSWIN"),
    (0x52, b"FAT32   "),
    (0x36, b"MSDOS"),
    (0x36, b"FAT16   "),
    (0x36, b"FAT12   "),
    (0x36, b"FAT     "),
    (0, b"\xeb"),
    (0, b"\xe9"),
    (0x1fe, b"\x55\xaa"),
];

pub(crate) fn probe(ctx: &Ctx<'_>, _deep: bool) -> PResult<Probe> {
    let b = ctx.head();
    let (_, magic) = some(MAGICS.iter().find(|(off, m)| b.has(*off, m)))?;
    if magic.len() <= 2 {
        // FATs without a magic string: ask for more evidence.
        ensure(b.has(0x1fe, b"\x55\xaa"))?;
        ensure(!b.has(0x36, b"JFS     ") && !b.has(0x36, b"HPFS    "))?;
    }
    let fats = b.u8(0x10)?;
    let reserved = b.le16(0x0e)?;
    let media = b.u8(0x15)?;
    let cluster_size = b.u8(0x0d)?;
    let sector_size = b.le16(0x0b)?;
    ensure(fats != 0 && reserved != 0)?;
    ensure(media >= 0xf8 || media == 0xf0)?;
    ensure(cluster_size.is_power_of_two())?;
    ensure(sector_size.is_power_of_two() && (512..=4096).contains(&sector_size))?;

    let dir_entries = u32::from(b.le16(0x11)?);
    let mut sect_count = u32::from(b.le16(0x13)?);
    if sect_count == 0 {
        sect_count = b.le32(0x20)?;
    }
    let fat16_length = u32::from(b.le16(0x16)?);
    let fat32_length = b.le32(0x24)?;
    let fat_length = if fat16_length == 0 {
        fat32_length
    } else {
        fat16_length
    };
    let fat_size = some(fat_length.checked_mul(u32::from(fats)))?;
    let dir_size = (dir_entries * 32).div_ceil(u32::from(sector_size));
    let overhead = some(
        u32::from(reserved)
            .checked_add(fat_size)
            .and_then(|x| x.checked_add(dir_size)),
    )?;
    let cluster_count = some(sect_count.checked_sub(overhead))? / u32::from(cluster_size);
    let max_count = if fat16_length == 0 && fat32_length != 0 {
        FAT32_MAX
    } else if cluster_count > FAT12_MAX {
        FAT16_MAX
    } else {
        FAT12_MAX
    };
    ensure(cluster_count <= max_count)?;

    let mut p = Probe::new(FsKind::Vfat);
    let sector = u64::from(sector_size);
    let mut vol_label: Option<[u8; 11]> = None;
    let mut boot_label: Option<[u8; 11]> = None;
    let mut serno: Option<[u8; 4]> = None;
    let mut version = None;
    let mut fat_bits = 12;
    let dirty_flag_off;

    if fat16_length != 0 {
        let root_start = (u64::from(reserved) + u64::from(fat_size)) * sector;
        vol_label = search_label(ctx, root_start, dir_entries)?;
        let sign = b.u8(0x26)?;
        if sign == 0x29 {
            boot_label = Some(b.arr(0x2b)?);
        }
        if sign == 0x28 || sign == 0x29 {
            serno = Some(b.arr(0x27)?);
        }
        p.set("SEC_TYPE", "msdos");
        if cluster_count < FAT12_MAX {
            version = Some("FAT12");
        } else if cluster_count < FAT16_MAX {
            version = Some("FAT16");
            fat_bits = 16;
        }
        dirty_flag_off = 0x25;
    } else if fat32_length != 0 {
        fat_bits = 32;
        let cluster_bytes = u32::from(cluster_size) * u32::from(sector_size);
        let start_data = u64::from(reserved) + u64::from(fat_size);
        let entries = u64::from(fat32_length) * sector / 4;
        let mut next = u64::from(b.le32(0x2c)?);
        let mut loops = 99;
        while next != 0 && next < entries && loops > 0 {
            loops -= 1;
            let Some(rel) = next.checked_sub(2) else {
                break;
            };
            let off = (start_data + rel * u64::from(cluster_size)) * sector;
            if let Some(l) = search_label(ctx, off, cluster_bytes / 32)? {
                vol_label = Some(l);
                break;
            }
            let fat_entry = u64::from(reserved) * sector + next * 4;
            match ctx.read(fat_entry, 4) {
                Ok(e) => next = u64::from(Bytes(&e).le32(0)? & 0x0fff_ffff),
                Err(Miss::Not) => break,
                Err(e) => return Err(e),
            }
        }
        version = Some("FAT32");
        if b.u8(0x42)? == 0x29 {
            boot_label = Some(b.arr(0x47)?);
        }
        serno = Some(b.arr(0x43)?);
        let fsinfo = b.le16(0x30)?;
        if fsinfo != 0 {
            let buf = ctx.read(u64::from(fsinfo) * sector, 512)?;
            let f = Bytes(&buf);
            ensure(f.has(0, b"RRaA") || f.has(0, b"RRdA") || f.has(0, &[0; 4]))?;
            ensure(f.has(484, b"rrAa") || f.has(484, &[0; 4]))?;
        }
        dirty_flag_off = 0x41;
    } else {
        dirty_flag_off = 0x25;
    }

    if let Some(bl) = boot_label {
        if &bl != NO_NAME {
            if let Some(l) = label_trim(&bl) {
                p.set("LABEL_FATBOOT", l);
            }
        }
    }
    if let Some(vl) = vol_label {
        p.label = label_rtrim(&vl);
    }
    if let Some(s) = serno {
        if s != [0; 4] {
            p.uuid = Some(format!("{:02X}{:02X}-{:02X}{:02X}", s[3], s[2], s[1], s[0]));
        }
    }
    p.version = version.map(str::to_string);
    let cluster_bytes = u32::from(cluster_size) * u32::from(sector_size);
    p.block_size = Some(cluster_bytes);
    p.size = Some(sector * u64::from(sect_count));
    p.set("FSBLOCKSIZE", cluster_bytes.to_string());
    p.set("BLOCK_SIZE", sector_size.to_string());
    p.set("FSSIZE", (sector * u64::from(sect_count)).to_string());

    // Dirty state: Linux's flag in the boot sector, and the clean-shutdown
    // and no-error bits Windows keeps in FAT entry 1.
    if b.u8(dirty_flag_off)? & 0x01 != 0 {
        p.state.dirty = true;
        p.note("boot sector dirty flag set: not cleanly unmounted by Linux");
    }
    let fat1_off = u64::from(reserved) * sector;
    match fat_bits {
        16 => {
            if let Ok(f) = ctx.read(fat1_off, 4) {
                let e = Bytes(&f).le16(2)?;
                if e & 0x8000 == 0 {
                    p.state.dirty = true;
                    p.note("FAT[1] clean-shutdown bit clear: not cleanly unmounted");
                }
                if e & 0x4000 == 0 {
                    p.state.errors = true;
                    p.note("FAT[1] hard-error bit clear: disk I/O errors were recorded");
                }
            }
        }
        32 => {
            if let Ok(f) = ctx.read(fat1_off, 8) {
                let e = Bytes(&f).le32(4)?;
                if e & 0x0800_0000 == 0 {
                    p.state.dirty = true;
                    p.note("FAT[1] clean-shutdown bit clear: not cleanly unmounted");
                }
                if e & 0x0400_0000 == 0 {
                    p.state.errors = true;
                    p.note("FAT[1] hard-error bit clear: disk I/O errors were recorded");
                }
            }
        }
        _ => {}
    }
    Ok(p)
}

/// Look for the volume label entry among `entries` directory entries at
/// `offset`, reading in bounded chunks.
fn search_label(ctx: &Ctx<'_>, offset: u64, entries: u32) -> PResult<Option<[u8; 11]>> {
    let total = u64::from(entries) * 32;
    let mut done = 0u64;
    while done < total {
        let len = (total - done).min(DIR_CHUNK);
        let Some(off) = offset.checked_add(done) else {
            return Ok(None);
        };
        let buf = match ctx.read(off, len as usize) {
            Ok(b) => b,
            Err(Miss::Not) => return Ok(None),
            Err(e) => return Err(e),
        };
        for ent in buf.chunks_exact(32) {
            let e = Bytes(ent);
            let first = e.u8(0)?;
            if first == 0 {
                return Ok(None);
            }
            let attr = e.u8(11)?;
            if first == ENTRY_FREE
                || e.le16(20)? != 0
                || e.le16(26)? != 0
                || attr & ATTR_MASK == ATTR_LONG_NAME
            {
                continue;
            }
            if attr & (ATTR_VOLUME_ID | ATTR_DIR) == ATTR_VOLUME_ID {
                let mut name: [u8; 11] = e.arr(0)?;
                if name[0] == 0x05 {
                    name[0] = 0xe5;
                }
                return Ok(Some(name));
            }
        }
        done += len;
    }
    Ok(None)
}
