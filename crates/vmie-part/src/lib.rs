//! Partition tables of raw disk images: MBR (with extended/logical
//! partitions) and GPT, numbered and named the way Linux sees them.
//!
//! [`read_partitions`] looks at sector 0 and decides:
//!
//! - no `0x55AA` signature, or a filesystem boot sector (FAT, NTFS, exFAT)
//!   rather than a partition table: [`TableKind::None`] (the caller probes the
//!   whole disk);
//! - a protective (or hybrid) MBR with a type `0xee` entry: GPT, read with the
//!   [`gpt`] crate;
//! - otherwise MBR, read with the [`mbrman`] crate.
//!
//! Neither crate is safe on hostile input (`gpt` asserts on the entry size and
//! allocates by the header's entry count; `mbrman` follows any EBR chain to its
//! end, adds `u32` sector numbers unchecked and unwraps on a table whose
//! partitions all start at sector 0). So every table is first parsed here with
//! bounds-checked code and limits ([`PartOptions`]); a crate only sees a table
//! we checked and whose result we can predict. Where a table is legal for
//! Linux but outside what a crate handles the way Linux does (a damaged
//! primary GPT header, a broken or looping EBR chain, DR-DOS style EBRs), our
//! own checked parse is used, with a warning where the table is damaged.
//! As defence in depth every call into either crate is made behind
//! `vmie_disk::guard::catch`: a panic becomes [`PartError::Panicked`], a
//! refusal naming the disk and the table.
//!
//! Damage Linux tolerates is a warning in [`PartitionTable::warnings`], not an
//! error: a partition past the end of the disk is left out, the others kept.
#![forbid(unsafe_code)]

mod error;
mod gpt_table;
mod mbr_table;
mod types;

use std::sync::Arc;

use vmie_disk::{Device, Window};

pub use error::PartError;

/// Limits and geometry for [`read_partitions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOptions {
    /// Largest GPT entry count accepted in a header (default 1024; the usual
    /// value is 128). A checksum-valid header with more is refused.
    pub max_gpt_entries: u32,
    /// Most logical partitions read from an MBR extended partition (default
    /// 128); a longer EBR chain is cut there with a warning.
    pub max_logical: u32,
    /// Logical sector size in bytes: 512 (default) or 4096. For GPT the other
    /// size is tried too when no header is found with this one.
    pub sector_size: u32,
}

impl Default for PartOptions {
    fn default() -> Self {
        Self {
            max_gpt_entries: 1024,
            max_logical: 128,
            sector_size: 512,
        }
    }
}

/// Which kind of partition table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// DOS/MBR partition table.
    Mbr,
    /// GUID partition table.
    Gpt,
    /// No partition table: the whole disk is one volume (or nothing).
    None,
}

impl TableKind {
    /// `"mbr"`, `"gpt"` or `"none"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
            TableKind::None => "none",
        }
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One partition.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Number as Linux gives it: MBR primaries 1-4 by slot, logicals 5, 6, ...
    /// in EBR-chain order; GPT entry index + 1.
    pub number: u32,
    /// Start in bytes from the start of the disk.
    pub start: u64,
    /// Size in bytes. For an MBR extended partition this is its real size
    /// (Linux shows 1 KiB).
    pub size: u64,
    /// MBR: `"0x83"` (lower-case hex); GPT: the type GUID, lower-case.
    pub type_id: String,
    /// fdisk's name for the type, when known.
    pub type_name: Option<&'static str>,
    /// MBR: boot indicator 0x80; GPT: attribute bit 2 (legacy BIOS bootable).
    pub bootable: bool,
    /// GPT partition name (PARTLABEL), when not empty.
    pub name: Option<String>,
    /// PARTUUID: the GPT unique partition GUID (lower-case), or for MBR
    /// `"{disk signature:08x}-{number:02x}"` as Linux shows it.
    pub uuid: Option<String>,
    /// Bounds-checked window onto the disk, named `"<disk> partition N"`.
    pub device: Window,
}

impl Partition {
    /// Whether this is an MBR extended partition (types 0x05, 0x0f, 0x85): a
    /// container of logical partitions with no filesystem of its own.
    pub fn is_extended(&self) -> bool {
        matches!(self.type_id.as_str(), "0x05" | "0x0f" | "0x85")
    }
}

/// The partition table of a disk.
#[derive(Debug, Clone)]
pub struct PartitionTable {
    /// Kind of table.
    pub kind: TableKind,
    /// MBR disk signature (8 lower-case hex digits) or GPT disk GUID.
    pub disk_id: Option<String>,
    /// Partitions, by number.
    pub partitions: Vec<Partition>,
    /// Damage and oddities found and worked around, for the user.
    pub warnings: Vec<String>,
}

impl PartitionTable {
    fn none(warnings: Vec<String>) -> Self {
        Self {
            kind: TableKind::None,
            disk_id: None,
            partitions: Vec::new(),
            warnings,
        }
    }
}

/// Read the partition table of `disk`.
///
/// Never panics and never allocates by a size read from the disk without
/// checking it against the disk and `opts` first.
pub fn read_partitions(
    disk: Arc<dyn Device>,
    opts: &PartOptions,
) -> Result<PartitionTable, PartError> {
    read_traced(disk, opts).map(|(table, _)| table)
}

/// Which parser produced the partition list (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parser {
    /// No table.
    Nothing,
    /// mbrman, after our walk agreed it reads the table as Linux does.
    Mbrman,
    /// The gpt crate, on the header we validated.
    GptCrate,
    /// Our own checked parse.
    Own,
}

fn read_traced(
    disk: Arc<dyn Device>,
    opts: &PartOptions,
) -> Result<(PartitionTable, Parser), PartError> {
    if opts.sector_size != 512 && opts.sector_size != 4096 {
        return Err(PartError::SectorSize {
            disk: disk.describe(),
            sector_size: opts.sector_size,
        });
    }
    let mut warnings = Vec::new();
    if disk.len() < 512 {
        warnings.push(format!(
            "{}: disk is {} bytes, smaller than one sector; no partition table",
            disk.describe(),
            disk.len()
        ));
        return Ok((PartitionTable::none(warnings), Parser::Nothing));
    }
    let mut sector0 = [0u8; 512];
    read(&*disk, 0, &mut sector0, "the MBR (sector 0)")?;
    let mbr = mbr_table::Sector0::new(sector0);

    if !mbr.has_signature() {
        if let Some((ss, lba)) = gpt_table::find_signature(&*disk, opts.sector_size)? {
            warnings.push(format!(
                "a GPT header signature is present at LBA {lba} ({ss}-byte sectors) but sector 0 \
                 has no MBR signature (0x55AA), so there is no protective MBR; ignored, as Linux \
                 does"
            ));
        }
        return Ok((PartitionTable::none(warnings), Parser::Nothing));
    }

    if mbr.has_protective_entry() {
        if let Some(types) = mbr.hybrid_types() {
            warnings.push(format!(
                "hybrid MBR: besides the protective 0xee entry, sector 0 lists partitions of type \
                 {types}; using the GPT, as Linux does"
            ));
        }
        return gpt_table::read_gpt(&disk, opts, warnings);
    }

    match mbr.judge(disk.len(), u64::from(opts.sector_size)) {
        mbr_table::Verdict::NotMbr(why) => {
            warnings.push(format!(
                "sector 0 has the 0x55AA signature but is not an MBR partition table: {why}"
            ));
            Ok((PartitionTable::none(warnings), Parser::Nothing))
        }
        mbr_table::Verdict::Mbr(note) => {
            warnings.extend(note);
            if let Some((ss, lba)) = gpt_table::find_signature(&*disk, opts.sector_size)? {
                warnings.push(format!(
                    "a GPT header signature is present at LBA {lba} ({ss}-byte sectors) but the \
                     MBR is not protective (no 0xee entry); using the MBR, as Linux does"
                ));
            }
            mbr_table::read_mbr(&disk, &mbr, opts, warnings)
        }
    }
}

/// Read `buf.len()` bytes at `offset`, naming what was read on failure.
fn read(disk: &dyn Device, offset: u64, buf: &mut [u8], what: &str) -> Result<(), PartError> {
    disk.read_at(offset, buf).map_err(|source| PartError::Read {
        disk: disk.describe(),
        what: what.to_string(),
        offset,
        source,
    })
}

/// Run a call into a third-party table parser (`mbrman`, `gpt`) behind the
/// panic boundary: a panic becomes [`PartError::Panicked`] naming the disk
/// and the table. Those crates only see tables we validated; this is defence
/// in depth.
fn guarded<T>(
    disk: &dyn Device,
    table: &'static str,
    parser: &'static str,
    f: impl FnOnce() -> T,
) -> Result<T, PartError> {
    vmie_disk::guard::catch(
        || {
            format!(
                "{}: the {table} partition table ({parser})",
                disk.describe()
            )
        },
        f,
    )
    .map_err(|p| PartError::Panicked {
        disk: disk.describe(),
        table,
        parser,
        message: p.message,
    })
}

/// A partition found in a table, before its bounds are checked.
#[derive(Debug)]
struct Found {
    number: u32,
    start: u64,
    size: u64,
    type_id: String,
    type_name: Option<&'static str>,
    bootable: bool,
    name: Option<String>,
    uuid: Option<String>,
}

/// Turn `found` into a [`Partition`] if it lies inside the disk; otherwise
/// leave it out with a warning, as Linux does ("partition beyond end of
/// device").
fn place(disk: &Arc<dyn Device>, found: Found, warnings: &mut Vec<String>) -> Option<Partition> {
    let len = disk.len();
    let what = format!(
        "partition {} (type {}) at byte {}",
        found.number, found.type_id, found.start
    );
    if found.size == 0 {
        warnings.push(format!("{what} has size 0; left out"));
        return None;
    }
    if found.start >= len {
        warnings.push(format!(
            "{what} starts beyond the end of the disk ({len} bytes); left out"
        ));
        return None;
    }
    match found.start.checked_add(found.size) {
        Some(end) if end <= len => {}
        _ => {
            warnings.push(format!(
                "{what}, {} bytes long, ends beyond the end of the disk ({len} bytes); left out",
                found.size
            ));
            return None;
        }
    }
    let name = format!("{} partition {}", disk.describe(), found.number);
    match Window::new(Arc::clone(disk), found.start, found.size, name) {
        Ok(device) => Some(Partition {
            number: found.number,
            start: found.start,
            size: found.size,
            type_id: found.type_id,
            type_name: found.type_name,
            bootable: found.bootable,
            name: found.name,
            uuid: found.uuid,
            device,
        }),
        Err(e) => {
            warnings.push(format!("{what}: {e}; left out"));
            None
        }
    }
}

/// Fixed-size little-endian field access on a byte slice; out-of-range reads
/// give `None` (never a panic).
fn field<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    field::<4>(b, off).map(u32::from_le_bytes).unwrap_or(0)
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    field::<8>(b, off).map(u64::from_le_bytes).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use vmie_disk::MemDevice;

    /// A 4 MiB image partitioned by sfdisk, in memory.
    fn sfdisk(script: &str) -> Vec<u8> {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(4 << 20).unwrap();
        let sfdisk = ["/usr/sbin/sfdisk", "/sbin/sfdisk", "sfdisk"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
            .unwrap();
        let mut child = Command::new(sfdisk)
            .args(["--no-reread", "--no-tell-kernel", "-q"])
            .arg(f.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sfdisk is required");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        std::fs::read(f.path()).unwrap()
    }

    fn traced(data: Vec<u8>, opts: &PartOptions) -> (PartitionTable, Parser) {
        read_traced(mem(data), opts).unwrap()
    }

    fn put_entry(d: &mut [u8], sector: usize, slot: usize, sys: u8, start: u32, size: u32) {
        let e = sector * 512 + 446 + 16 * slot;
        d[e + 4] = sys;
        d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        d[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
        d[sector * 512 + 510] = 0x55;
        d[sector * 512 + 511] = 0xaa;
    }

    const MBR: &str = "label: dos\nlabel-id: 0x12345678\n\n\
        start=2, size=20, type=83, bootable\nstart=30, size=8000, type=5\n\
        start=40, size=20, type=82\nstart=70, size=7000, type=83\n";
    const GPT: &str = "label: gpt\n\nstart=40, size=100, type=L, name=\"a\"\n\
        start=200, size=1000, type=S\n";

    #[test]
    fn normal_tables_go_through_the_crates() {
        let (t, parser) = traced(sfdisk(MBR), &PartOptions::default());
        assert_eq!((t.partitions.len(), parser), (4, Parser::Mbrman));
        let (t, parser) = traced(sfdisk(GPT), &PartOptions::default());
        assert_eq!((t.partitions.len(), parser), (2, Parser::GptCrate));
        assert_eq!(t.partitions[0].name.as_deref(), Some("a"));
    }

    #[test]
    fn damaged_primary_gpt() {
        let gpt = sfdisk(GPT);
        // Header zeroed: the gpt crate falls back to the last LBA, as we do.
        let mut d = gpt.clone();
        d[512..1024].fill(0);
        let (t, parser) = traced(d, &PartOptions::default());
        assert_eq!((t.partitions.len(), parser), (2, Parser::GptCrate));
        // Entry array damaged, header fine: the gpt crate would fail on the
        // primary, so the backup is read by our own parse, with the same
        // result.
        let mut d = gpt;
        d[1024 + 60] ^= 1;
        let (t2, parser) = traced(d, &PartOptions::default());
        assert_eq!(parser, Parser::Own);
        let key = |t: &PartitionTable| {
            t.partitions
                .iter()
                .map(|p| {
                    (
                        p.number,
                        p.start,
                        p.size,
                        p.type_id.clone(),
                        p.uuid.clone(),
                        p.name.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&t), key(&t2));
    }

    #[test]
    fn real_images_go_through_the_crates() {
        let root = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/realdata"
        ));
        let images = root.join("util-linux-blkid/tests/ts/blkid/images-pt");
        for (name, want) in [
            ("gpt.img.xz", Parser::GptCrate),
            ("dos+bsd.img.xz", Parser::Mbrman),
        ] {
            let xz = std::fs::read(images.join(name)).unwrap();
            let mut data = Vec::new();
            lzma_rs::xz_decompress(&mut &xz[..], &mut data).unwrap();
            assert_eq!(traced(data, &PartOptions::default()).1, want, "{name}");
        }
        let gz = root.join("dfvfs/test_data_history/mbr.raw.gz");
        let out = Command::new("gzip").arg("-dc").arg(gz).output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            traced(out.stdout, &PartOptions::default()).1,
            Parser::Mbrman
        );
    }

    #[test]
    fn long_plain_chain_goes_through_mbrman() {
        let n = 2000u32;
        let mut d = vec![0u8; (100 + 2 * n as usize + 10) * 512];
        put_entry(&mut d, 0, 0, 0x83, 1, 9);
        put_entry(&mut d, 0, 1, 0x05, 100, 2 * n + 5);
        for i in 0..n {
            let at = 100 + 2 * i as usize;
            put_entry(&mut d, at, 0, 0x83, 1, 1);
            if i + 1 < n {
                put_entry(&mut d, at, 1, 0x05, 2 * (i + 1), 2);
            }
        }
        let opts = PartOptions {
            max_logical: 5000,
            ..PartOptions::default()
        };
        let (t, parser) = traced(d.clone(), &opts);
        assert_eq!(
            (t.partitions.len(), parser),
            (2 + n as usize, Parser::Mbrman)
        );
        // Cut at the limit: mbrman, whose walk has no limit, is not used.
        let (t, parser) = traced(d, &PartOptions::default());
        assert_eq!((t.partitions.len(), parser), (2 + 128, Parser::Own));
    }

    fn mem(data: Vec<u8>) -> Arc<dyn Device> {
        Arc::new(MemDevice::new("t.img", data))
    }

    #[test]
    fn kind_strings() {
        assert_eq!(TableKind::Mbr.as_str(), "mbr");
        assert_eq!(TableKind::Gpt.as_str(), "gpt");
        assert_eq!(TableKind::None.to_string(), "none");
    }

    #[test]
    fn tiny_and_empty_disks_have_no_table() {
        for len in [0usize, 1, 511] {
            let t = read_partitions(mem(vec![0; len]), &PartOptions::default());
            assert!(
                matches!(t, Ok(ref t) if t.kind == TableKind::None),
                "{len}: {t:?}"
            );
        }
        let t = read_partitions(mem(vec![0; 1 << 20]), &PartOptions::default());
        assert!(matches!(t, Ok(ref t) if t.kind == TableKind::None && t.warnings.is_empty()));
    }

    #[test]
    fn odd_sector_size_refused() {
        let opts = PartOptions {
            sector_size: 1024,
            ..PartOptions::default()
        };
        let e = read_partitions(mem(vec![0; 4096]), &opts);
        assert!(matches!(e, Err(PartError::SectorSize { .. })));
    }

    #[test]
    fn field_access_is_checked() {
        assert_eq!(field::<4>(&[1, 2, 3], 0), None);
        assert_eq!(field::<2>(&[1, 2, 3], usize::MAX), None);
        assert_eq!(le_u32(&[1, 0, 0, 0, 9], 0), 1);
    }
}
