//! The checks every write makes before it changes anything: the volume must
//! be one Windows left cleanly, or our change would be lost or undone.
//!
//! - The NTFS version (`$VOLUME_INFORMATION`): only 3.1 (Windows XP and
//!   later) is written; the records we make have its layout.
//! - `$Volume`'s dirty flag (`VOLUME_IS_DIRTY`, 0x0001 of
//!   `$VOLUME_INFORMATION` flags): an unclean shutdown or a scheduled chkdsk.
//! - A hibernated Windows (hibernation or Fast Startup): `\hiberfil.sys`
//!   whose first four bytes are `hibr`, `HIBR`, `wake` or `WAKE` (Windows
//!   zeroes the header when it resumes or boots normally; a zeroed or empty
//!   file is fine). Windows resuming would restore its cached view of the
//!   volume over ours.
//! - `$LogFile`: its two restart pages (at byte 0 and at the system page
//!   size the first gives) are `RSTR` records with a 512-byte-stride update
//!   sequence; each is fixed up and checked (version 1.1 or 2.0, the only
//!   ones ntfs-3g and Linux know; any other is refused), and the one with the
//!   higher `current_lsn` is current. Version 2.0 is refused as ntfs-3g
//!   refuses it (`ntfs_volume_check_logfile`): Windows 8 and later write it
//!   while they may keep the volume's metadata cached for Fast Startup, and
//!   leave it after an abrupt stop; a full shutdown leaves 1.1. A 1.1 restart
//!   area is clean when the log is closed (`client_in_use_list` is `0xFFFF`,
//!   Windows 2000) or when it has `RESTART_VOLUME_IS_CLEAN` (0x0002, XP and
//!   later, which leave the log open); these are the rules of ntfs-3g and
//!   Linux (`logfile.c`). A log
//!   whose first two pages are all 0xFF is empty (mkntfs and ntfs-3g leave it
//!   so) and clean. A `CHKD` page (chkdsk changed the log) or anything else
//!   is refused: Windows would replay a log that is not clean over our
//!   changes.
//! - BitLocker (OEM ID `-FVE-FS-`) is refused when the volume is opened.

use vmie_guestfs::FsError;

use crate::dirw::Dir;
use crate::le::{le16, le32, le64};
use crate::record::{self, Body, AT_DATA};
use crate::tx::{data_runs, Tx};

const LOGFILE_RECORD: u64 = 2;
const VOLUME_RECORD: u64 = 3;
const ROOT_RECORD: u64 = 5;
const AT_VOLUME_INFORMATION: u32 = 0x70;
const VOLUME_IS_DIRTY: u16 = 0x0001;
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const LOGFILE_NO_CLIENT: u16 = 0xFFFF;

fn refuse(tx: &Tx<'_>, why: String) -> FsError {
    FsError::Unsupported {
        fs: tx.loc.to_string(),
        op: "write".into(),
        why,
    }
}

/// Run every volume check; `up` is the `$UpCase` table.
pub(crate) fn check(tx: &mut Tx<'_>, up: &[u16]) -> Result<(), FsError> {
    volume_flags(tx)?;
    hibernation(tx, up)?;
    logfile(tx)
}

fn volume_flags(tx: &mut Tx<'_>) -> Result<(), FsError> {
    let r = tx.parsed(VOLUME_RECORD)?;
    let v = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_VOLUME_INFORMATION)
        .and_then(|a| r.resident(a))
        .filter(|v| v.len() >= 12)
        .ok_or_else(|| tx.corrupt("$Volume (MFT record 3)", "no $VOLUME_INFORMATION"))?;
    let (major, minor) = (v[8], v[9]);
    if (major, minor) != (3, 1) {
        return Err(refuse(
            tx,
            format!("NTFS {major}.{minor} is not written (only 3.1, Windows XP and later)"),
        ));
    }
    let flags = le16(v, 10);
    if flags & VOLUME_IS_DIRTY != 0 {
        return Err(refuse(
            tx,
            format!(
                "the volume is marked dirty ($Volume flags {flags:#06x}): Windows did not shut down cleanly or chkdsk is scheduled; boot Windows, let chkdsk finish and shut down cleanly"
            ),
        ));
    }
    Ok(())
}

/// The first `n` bytes of the unnamed `$DATA` of record `rn` (zeros past
/// what is stored).
fn data_head(tx: &mut Tx<'_>, rn: u64, n: usize) -> Result<Vec<u8>, FsError> {
    let r = tx.parsed(rn)?;
    let mut out = vec![0u8; n];
    let Some(a) = r
        .attrs
        .iter()
        .find(|a| a.ty == AT_DATA && a.name.is_empty())
    else {
        return Ok(out);
    };
    match &a.body {
        Body::Resident(_) => {
            let v = r.resident(a).unwrap_or_default();
            let k = v.len().min(n);
            out[..k].copy_from_slice(&v[..k]);
        }
        Body::NonResident {
            init_size, runs, ..
        } => {
            let k = (*init_size).min(n as u64);
            let v = record::read_runs(tx_dev(tx), tx.geo, runs, k)
                .map_err(|d| tx.corrupt(format!("MFT record {rn}"), d))?;
            out[..v.len()].copy_from_slice(&v);
        }
    }
    Ok(out)
}

fn tx_dev<'a>(tx: &Tx<'a>) -> &'a dyn vmie_disk::Device {
    tx.device()
}

fn hibernation(tx: &mut Tx<'_>, up: &[u16]) -> Result<(), FsError> {
    let root = Dir::open(tx, ROOT_RECORD, "/")?;
    let name: Vec<u16> = "hiberfil.sys".encode_utf16().collect();
    let Ok(hit) = root.seek(tx, up, &name, false)? else {
        return Ok(());
    };
    let rn = hit.entry.file_ref & 0xFFFF_FFFF_FFFF;
    let head = data_head(tx, rn, 4)?;
    if [b"hibr", b"HIBR", b"wake", b"WAKE"]
        .iter()
        .any(|m| head == m.as_slice())
    {
        return Err(refuse(
            tx,
            format!(
                "Windows is hibernated (\\hiberfil.sys starts with {:?}: hibernation or Fast Startup); boot Windows and shut it down fully (shutdown /s /t 0, or turn off Fast Startup)",
                String::from_utf8_lossy(&head)
            ),
        ));
    }
    Ok(())
}

/// One restart page: `(current_lsn, clean, version 2.0)`.
fn restart_page(tx: &Tx<'_>, page: &mut [u8], at: u64) -> Result<(u64, bool, bool), FsError> {
    let bad = |d: String| refuse(tx, format!("$LogFile restart page at byte {at}: {d}"));
    if page.get(0..4) == Some(b"CHKD".as_slice()) {
        return Err(bad("chkdsk left it (CHKD): run chkdsk in Windows".into()));
    }
    record::fixup(page, b"RSTR").map_err(bad)?;
    let (minor, major) = (le16(page, 26) as i16, le16(page, 28) as i16);
    if !matches!((major, minor), (1, 1) | (2, 0)) {
        return Err(bad(format!(
            "log version {major}.{minor} is unknown (1.1 and 2.0 are)"
        )));
    }
    let ra = usize::from(le16(page, 24));
    if ra < 30 || ra + 16 > page.len() {
        return Err(bad(format!("restart area offset {ra} is outside the page")));
    }
    let lsn = le64(page, ra);
    let in_use = le16(page, ra + 12);
    let flags = le16(page, ra + 14);
    Ok((
        lsn,
        in_use == LOGFILE_NO_CLIENT || flags & RESTART_VOLUME_IS_CLEAN != 0,
        major == 2,
    ))
}

fn logfile(tx: &mut Tx<'_>) -> Result<(), FsError> {
    let r = tx.parsed(LOGFILE_RECORD)?;
    let place = "$LogFile (MFT record 2)";
    let (runs, size) = data_runs(&r).ok_or_else(|| tx.corrupt(place, "no non-resident $DATA"))?;
    let first = 4096u64;
    if size < 2 * first {
        return Err(tx.corrupt(place, format!("{size} bytes is too small for a log")));
    }
    let head = record::read_runs(tx.device(), tx.geo, &runs, 2 * first)
        .map_err(|d| tx.corrupt(place, d))?;
    if head.iter().all(|&b| b == 0xFF) {
        return Ok(()); // empty: mkntfs, or ntfs-3g after a mount
    }
    let page_size = if head.get(0..4) == Some(b"RSTR".as_slice()) {
        u64::from(le32(&head, 16))
    } else {
        first
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() || 2 * page_size > size {
        return Err(refuse(
            tx,
            format!("$LogFile system page size {page_size} is invalid"),
        ));
    }
    let pages = record::read_runs(tx.device(), tx.geo, &runs, 2 * page_size)
        .map_err(|d| tx.corrupt(place, d))?;
    let mut best: Option<(u64, bool, bool)> = None;
    let mut errs = Vec::new();
    for i in 0..2u64 {
        let mut p = pages[(i * page_size) as usize..((i + 1) * page_size) as usize].to_vec();
        match restart_page(tx, &mut p, i * page_size) {
            Ok(v) if best.is_none_or(|b| v.0 > b.0) => best = Some(v),
            Ok(_) => {}
            Err(e) => errs.push(e),
        }
    }
    match best {
        Some((_, _, true)) => Err(refuse(
            tx,
            "$LogFile is version 2.0: Windows 8 or later may keep this volume's metadata cached (Fast Startup, hybrid shutdown) or was stopped abruptly; boot Windows and shut it down fully (shutdown /s /t 0)".into(),
        )),
        Some((_, true, false)) => Ok(()),
        Some((lsn, false, false)) => Err(refuse(
            tx,
            format!(
                "$LogFile is not clean (current LSN {lsn}, the volume was not shut down cleanly): boot Windows and shut it down cleanly"
            ),
        )),
        None => Err(errs.into_iter().next().unwrap_or_else(|| refuse(tx, "$LogFile has no restart page".into()))),
    }
}
