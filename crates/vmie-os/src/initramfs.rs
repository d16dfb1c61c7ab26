//! Initramfs images: concatenated cpio `newc` (`070701`) / `crc` (`070702`)
//! archives, each either stored or compressed (gzip, xz, zstd, lz4 legacy
//! and frame, legacy lzma), as the kernel unpacks them; an uncompressed
//! early-microcode archive first is the usual case.
//!
//! Everything is bounded by [`InitramfsLimits`]: the compressed size is
//! checked by the caller before reading, decompression stops with an error
//! past `max_decompressed` bytes (all segments together), and at most
//! `max_entries` cpio entries are read. Only names, modes and sizes are
//! kept, never file contents (except a small `conf/modules`). gzip, zstd
//! and lz4 frames are parsed as they decompress, so memory stays small
//! whatever the image's size (a 39 MB zstd image of 138 MB: 45 MB peak RSS
//! for a whole `inspect`, 307 MB when it was decompressed whole); lz4's
//! legacy format, xz and lzma are decompressed into a bounded buffer first.
//! Zero bytes between members are skipped one at a time, and an archive
//! must start at a multiple of 4 bytes, as in the kernel's unpacker; an xz
//! stream is handed to lzma-rs up to its footer, so what follows it (an
//! archive appended by driver injection) is read too. lzma-rs holds a whole xz block in memory
//! before writing any of it, so an xz stream is first walked (its LZMA2
//! chunk headers declare their sizes) and refused when it declares more
//! than the limit. The decompressors and the cpio parser run behind
//! `vmie_disk::guard::catch`: a panic becomes an error naming the segment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use serde::Serialize;

use crate::OsError;

/// Bounds for one initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsLimits {
    /// Most bytes produced by decompression, over all segments.
    pub max_decompressed: u64,
    /// Most cpio entries (over all archives).
    pub max_entries: usize,
    /// Most segments (cpio archives and compressed streams).
    pub max_segments: usize,
}

impl Default for InitramfsLimits {
    fn default() -> Self {
        Self {
            max_decompressed: 1 << 30,
            max_entries: 200_000,
            max_segments: 64,
        }
    }
}

/// One cpio entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpioEntry {
    /// Path, without a leading `./` or `/`.
    pub name: String,
    /// `st_mode`.
    pub mode: u32,
    /// Size of the file data.
    pub size: u64,
}

/// Largest `conf/modules` kept (initramfs-tools' list of modules to load).
const MAX_CONF_MODULES: u64 = 64 << 10;

/// The decoded listing of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Initramfs {
    /// Segments in order: `cpio`, or the compression of a compressed part
    /// (`gzip`, `xz`, `zstd`, `lz4-legacy`, `lz4`, `lzma`) followed by the
    /// archives it held.
    pub segments: Vec<String>,
    /// All entries of all archives.
    pub entries: Vec<CpioEntry>,
    /// Why decoding stopped early, if it did (data after the last archive
    /// that is neither padding, cpio nor a known compression).
    pub note: Option<String>,
    /// The text of the last `conf/modules` (initramfs-tools' modules to
    /// load at boot), when one of at most 64 KiB is present.
    #[serde(skip)]
    pub conf_modules: Option<String>,
    /// Whether reading stopped before the end of the image because every
    /// module asked for (see [`parse_initramfs_until`]) had been seen: the
    /// entries are then a prefix of the image's, and what needs the whole
    /// listing (appending to the image) must read it again.
    pub stopped_early: bool,
    /// Modules still to be seen before reading may stop (normalised
    /// names); empty when no early stop was asked for.
    #[serde(skip)]
    want: BTreeSet<String>,
}

impl Initramfs {
    /// Kernel modules in the image: normalised names (`-` → `_`, no
    /// `.ko[.xz|.zst|.gz]`), sorted, deduplicated.
    pub fn module_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.mode & 0o170000 == 0o100000 || e.mode & 0o170000 == 0)
            .filter_map(|e| module_name(&e.name))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Which tool built the image, from the files only it puts there:
    /// `initramfs-tools` (`conf/initramfs.conf`, `scripts/local`) or
    /// `dracut` (`usr/lib/dracut/`, `lib/dracut/`).
    pub fn generator(&self) -> Option<&'static str> {
        let has = |f: &dyn Fn(&str) -> bool| self.entries.iter().any(|e| f(&e.name));
        if has(&|n| n == "conf/initramfs.conf" || n == "scripts/local") {
            Some("initramfs-tools")
        } else if has(&|n| n.starts_with("usr/lib/dracut/") || n.starts_with("lib/dracut/")) {
            Some("dracut")
        } else {
            None
        }
    }

    /// Why another cpio archive may not be appended to this image, if so.
    /// The kernel unpacks the members in order and needs to know where each
    /// compressed member ends: gzip, xz and zstd say so; lz4's legacy format
    /// and legacy lzma do not (the kernel's decoders read them to the end of
    /// the buffer), and data nobody recognised would swallow what follows.
    pub fn append_refusal(&self) -> Option<String> {
        if self.stopped_early {
            return Some("it was listed only up to the drivers asked about, not to its end".into());
        }
        if let Some(n) = &self.note {
            return Some(format!(
                "the image ends in data that is not an initramfs member ({n})"
            ));
        }
        match self.segments.iter().rev().find(|s| *s != "cpio") {
            Some(c) if c == "lz4-legacy" || c == "lzma" => Some(format!(
                "its last member is {c}-compressed, a format whose end the kernel cannot \
                 find, so an archive after it would not be unpacked"
            )),
            _ => None,
        }
    }

    /// Directories and symlinks of the image (names as in [`CpioEntry`]).
    pub fn dirs(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|e| matches!(e.mode & 0o170000, 0o040000 | 0o120000))
            .map(|e| e.name.clone())
            .collect()
    }

    /// Directories holding a `modules.dep` or `modules.dep.bin`, such as
    /// `usr/lib/modules/6.1.0-13-amd64`.
    pub fn module_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| {
                e.name
                    .strip_suffix("/modules.dep.bin")
                    .or_else(|| e.name.strip_suffix("/modules.dep"))
            })
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The module name of a path ending in `.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`
/// (`-` replaced by `_`, as modprobe treats them as equal).
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next().unwrap_or(path);
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz", ".ko.bz2"] {
        if let Some(stem) = base.strip_suffix(ext) {
            if !stem.is_empty() {
                return Some(stem.replace('-', "_"));
            }
        }
    }
    None
}

/// Where a driver is available to the kernel at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverState {
    /// Built into the kernel (`modules.builtin`).
    Builtin,
    /// A module inside the initramfs.
    Initramfs,
    /// A module on the root filesystem but not in the initramfs (usable
    /// only once root is mounted: not for the root disk).
    RootOnly,
    /// Not found.
    Missing,
}

/// The drivers a cloud import cares about (normalised names).
pub const DRIVERS: &[&str] = &[
    "nvme",
    "nvme_core",
    "xen_blkfront",
    "xen_netfront",
    "ena",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_pci",
    "ahci",
    "ata_piix",
    "mptspi",
    "vmw_pvscsi",
    "hv_storvsc",
    "hv_netvsc",
];

/// Summary of one kernel's initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct InitramfsInfo {
    /// Guest path.
    pub path: String,
    /// Size on disk.
    pub size: u64,
    /// Segments (see [`Initramfs::segments`]).
    pub segments: Vec<String>,
    /// Number of cpio entries.
    pub entries: usize,
    /// Module names it holds (normalised).
    pub modules: Vec<String>,
    /// Whether every entry was listed: false when reading stopped once
    /// every driver asked about was found ([`crate::InspectOptions`]'s
    /// `initramfs_early_stop`; `entries` and `modules` are then what came
    /// before it), and when it could not be read.
    pub complete: bool,
    /// Why it could not be (fully) read, if so.
    pub error: Option<String>,
    /// `initramfs-tools` or `dracut`, when recognised.
    pub generator: Option<String>,
    /// Why an archive may not be appended to it (see
    /// [`Initramfs::append_refusal`]).
    #[serde(skip)]
    pub append_refusal: Option<String>,
    /// See [`Initramfs::conf_modules`].
    #[serde(skip)]
    pub conf_modules: Option<String>,
    /// See [`Initramfs::dirs`].
    #[serde(skip)]
    pub dirs: BTreeSet<String>,
    /// See [`Initramfs::module_dirs`].
    #[serde(skip)]
    pub module_dirs: Vec<String>,
}

const CPIO_HEADER: usize = 110;

fn hex8(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    u64::from_str_radix(s, 16).ok()
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn is_cpio(d: &[u8]) -> bool {
    d.starts_with(b"070701") || d.starts_with(b"070702")
}

/// The mode, file size and name size of the newc/crc header `h` (110
/// bytes, magic already checked) of the entry at `at`; `ctx` says where,
/// for the refusal.
fn cpio_header(h: &[u8], at: u64, ctx: &str) -> Result<(u64, u64, u64), OsError> {
    let field = |i: usize| -> Result<u64, OsError> {
        h.get(6 + i * 8..6 + (i + 1) * 8)
            .and_then(hex8)
            .ok_or_else(|| OsError::Initramfs(format!("{ctx}: bad header field at offset {at}")))
    };
    let (mode, filesize, namesize) = (field(1)?, field(6)?, field(11)?);
    if namesize == 0 || namesize > 4096 {
        return Err(OsError::Initramfs(format!(
            "{ctx}: bad name size {namesize} at offset {at}"
        )));
    }
    Ok((mode, filesize, namesize))
}

/// An entry's name as stored (with its NUL), as we keep it: without a
/// leading `./` or `/`.
fn cpio_name(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    String::from_utf8_lossy(raw)
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// Record an entry (not the trailer) and, for a small `conf/modules`, its
/// text (`data`, when the caller has it). `Ok(true)` when it was the last
/// module asked for: reading may stop (`stopped_early` is then set).
fn push_entry(
    out: &mut Initramfs,
    limits: &InitramfsLimits,
    name: String,
    mode: u64,
    size: u64,
    data: Option<&[u8]>,
) -> Result<bool, OsError> {
    if out.entries.len() >= limits.max_entries {
        return Err(OsError::Initramfs(format!(
            "more than {} cpio entries; not read further",
            limits.max_entries
        )));
    }
    if let Some(text) = data.filter(|_| name == "conf/modules" && size <= MAX_CONF_MODULES) {
        out.conf_modules = Some(String::from_utf8_lossy(text).into_owned());
    }
    let is_file = matches!(mode & 0o170000, 0o100000 | 0);
    if is_file && !out.want.is_empty() {
        if let Some(m) = module_name(&name) {
            if out.want.remove(&m) && out.want.is_empty() {
                out.stopped_early = true;
            }
        }
    }
    out.entries.push(CpioEntry {
        name,
        mode: u32::try_from(mode).unwrap_or(0),
        size,
    });
    Ok(out.stopped_early)
}

/// Parse one cpio archive at the start of `d`, appending entries. Returns
/// the bytes consumed (up to and including the trailer entry). File data
/// is skipped without copying (see [`parse_cpio_stream`] for archives
/// inside a compressed stream).
fn parse_cpio(d: &[u8], out: &mut Initramfs, limits: &InitramfsLimits) -> Result<usize, OsError> {
    let err = |m: String| OsError::Initramfs(m);
    let mut pos = 0usize;
    loop {
        let h = d
            .get(pos..pos.saturating_add(CPIO_HEADER))
            .ok_or_else(|| err(format!("cpio: truncated header at offset {pos}")))?;
        if !is_cpio(h) {
            return Err(err(format!("cpio: bad magic at offset {pos}")));
        }
        let (mode, filesize, namesize) = cpio_header(h, pos as u64, "cpio")?;
        let name_start = pos + CPIO_HEADER;
        let name_end = name_start
            .checked_add(usize::try_from(namesize).map_err(|_| err("cpio: name size".into()))?)
            .ok_or_else(|| err("cpio: overflow".into()))?;
        let raw = d
            .get(name_start..name_end)
            .ok_or_else(|| err(format!("cpio: truncated name at offset {pos}")))?;
        let name = cpio_name(raw);
        let data_start = align4(name_end);
        let size = usize::try_from(filesize).map_err(|_| err("cpio: file size".into()))?;
        let data_end = data_start
            .checked_add(size)
            .ok_or_else(|| err("cpio: overflow".into()))?;
        if data_end > d.len() {
            return Err(err(format!(
                "cpio: {name}: {size} bytes of data past the end of the archive"
            )));
        }
        pos = align4(data_end);
        if name == "TRAILER!!!" {
            return Ok(pos.min(d.len()));
        }
        let data = d.get(data_start..data_end);
        if push_entry(out, limits, name, mode, filesize, data)? {
            return Ok(pos.min(d.len()));
        }
    }
}

/// A `Write` that refuses to grow past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: u64,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if (self.buf.len() as u64).saturating_add(b.len() as u64) > self.cap {
            return Err(std::io::Error::other("decompressed size over the limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn over(cap: u64) -> OsError {
    OsError::Initramfs(format!("decompressed size over the limit of {cap} bytes"))
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The kernel's legacy lz4 format: magic, then blocks of
/// `u32 LE compressed size` + data (each ≤ 8 MiB decompressed), until the
/// input ends or a block cannot be a block (the next segment).
fn lz4_legacy(d: &[u8], cap: u64) -> Result<(Vec<u8>, usize), OsError> {
    let mut pos = 4usize;
    let mut out = Capped {
        buf: Vec::new(),
        cap,
    };
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let max_comp = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    while let Some(sz) = d.get(pos..pos + 4) {
        if sz == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let n = u32::from_le_bytes([sz[0], sz[1], sz[2], sz[3]]) as usize;
        if n == 0 || n > max_comp || pos + 4 + n > d.len() {
            break;
        }
        let Some(chunk) = d.get(pos + 4..pos + 4 + n) else {
            break;
        };
        match lz4_flex::block::decompress_into(chunk, &mut block) {
            Ok(k) => {
                out.write_all(block.get(..k).unwrap_or_default())
                    .map_err(|_| over(cap))?;
            }
            Err(e) if out.buf.is_empty() => {
                return Err(OsError::Initramfs(format!("lz4: {e}")));
            }
            Err(_) => break,
        }
        pos += 4 + n;
    }
    Ok((out.buf, pos))
}

/// A compression the kernel's initramfs unpacker knows, by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4Legacy,
    Lz4,
    Lzma,
    Bzip2,
}

impl Compression {
    fn of(d: &[u8]) -> Option<Self> {
        Some(
            if d.starts_with(&[0x1f, 0x8b]) || d.starts_with(&[0x1f, 0x9e]) {
                Self::Gzip
            } else if d.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
                Self::Xz
            } else if d.starts_with(&ZSTD_MAGIC) {
                Self::Zstd
            } else if d.starts_with(&LZ4_LEGACY_MAGIC) {
                Self::Lz4Legacy
            } else if d.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
                Self::Lz4
            } else if d.starts_with(&[0x5d, 0, 0]) {
                // Legacy .lzma: properties 0x5d, dictionary size, size (as the
                // kernel checks).
                Self::Lzma
            } else if d.starts_with(b"BZh") {
                Self::Bzip2
            } else {
                return None;
            },
        )
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Lz4Legacy => "lz4-legacy",
            Self::Lz4 => "lz4",
            Self::Lzma => "lzma",
            Self::Bzip2 => "bzip2",
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader that refuses to produce more than `left` bytes (the
/// decompression budget), remembering that it refused.
struct Budget<R> {
    inner: R,
    left: u64,
    used: u64,
    over: bool,
}

impl<R: Read> Budget<R> {
    fn new(inner: R, left: u64) -> Self {
        Self {
            inner,
            left,
            used: 0,
            over: false,
        }
    }
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Ask for at most one byte past the budget, so going over shows.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.over = true;
            return Err(std::io::Error::other("decompressed size over the limit"));
        }
        self.left -= n as u64;
        self.used += n as u64;
        Ok(n)
    }
}

/// Concatenated zstd frames as one stream (the kernel reads them so),
/// decoded by libzstd (the `zstd` crate): four times ruzstd's speed on a
/// real 138 MB initramfs (see ARCHITECTURE.md). Each frame is decoded in
/// single-frame mode, so the input slice stops exactly at the frame's end
/// and whatever follows (an appended uncompressed archive) is left to the
/// caller.
struct ZstdFrames<'a, 'b> {
    /// The frame being read; `None` once the last one ended (the input
    /// slice, advanced through the decoder, then starts after it).
    dec: Option<zstd::stream::read::Decoder<'static, &'b mut &'a [u8]>>,
    /// Whether frames' content checksums are verified.
    verify: bool,
}

/// Largest zstd window accepted, as a power of two: libzstd's default
/// decompression limit (128 MiB), which every frame the zstd tool makes
/// without `--long` meets; a frame asking for more is refused before any
/// window is allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

fn zstd_frame<'a, 'b>(
    input: &'b mut &'a [u8],
    verify: bool,
) -> std::io::Result<zstd::stream::read::Decoder<'static, &'b mut &'a [u8]>> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    if !verify {
        dec.set_parameter(zstd::zstd_safe::DParameter::ForceIgnoreChecksum(true))?;
    }
    Ok(dec)
}

impl<'a, 'b> ZstdFrames<'a, 'b> {
    /// `verify`: check each frame's content checksum (XXH64 of everything
    /// decoded) at its end. A listing that may stop early leaves it off:
    /// it would hash what it then never checks (8% of a fix run's
    /// instructions on a real guest); the cpio structure is still checked
    /// entry by entry.
    fn new(input: &'b mut &'a [u8], verify: bool) -> std::io::Result<Self> {
        Ok(Self {
            dec: Some(zstd_frame(input, verify)?),
            verify,
        })
    }
}

impl Read for ZstdFrames<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame ended: another one may follow.
            let input = match self.dec.take() {
                Some(d) => d.finish(),
                None => return Ok(0),
            };
            if input.starts_with(&ZSTD_MAGIC) {
                self.dec = Some(zstd_frame(input, self.verify)?);
            } else {
                return Ok(0);
            }
        }
    }
}

/// Decompress the stream at the start of `d` and parse the cpio archives it
/// holds as they come out (nothing but `conf/modules` is kept, so memory
/// stays small whatever the image's size), appending to `out`. Returns the
/// compressed bytes consumed and the bytes produced. lz4's legacy format
/// and the lzma-rs decoders (xz, lzma) produce a bounded buffer first.
fn decode_and_parse(
    kind: Compression,
    d: &[u8],
    budget: u64,
    out: &mut Initramfs,
    limits: &InitramfsLimits,
) -> Result<(usize, u64), OsError> {
    let name = kind.name();
    let ierr = |e: String| OsError::Initramfs(format!("{name}: {e}"));
    let mut s: &[u8] = d;
    let streamed = |r: &mut Budget<&mut dyn Read>, out: &mut Initramfs| -> Result<u64, OsError> {
        match parse_cpio_stream(r, name, out, limits) {
            Ok(()) => Ok(r.used),
            Err(_) if r.over => Err(over(budget)),
            Err(e) => Err(e),
        }
    };
    let produced = match kind {
        Compression::Gzip => {
            let mut dec = flate2::bufread::GzDecoder::new(&mut s);
            streamed(&mut Budget::new(&mut dec, budget), out)?
        }
        Compression::Zstd => {
            let verify = out.want.is_empty();
            let mut frames = ZstdFrames::new(&mut s, verify).map_err(|e| ierr(e.to_string()))?;
            let n = streamed(&mut Budget::new(&mut frames, budget), out)?;
            drop(frames);
            n
        }
        Compression::Lz4 => {
            let mut dec = lz4_flex::frame::FrameDecoder::new(&mut s);
            streamed(&mut Budget::new(&mut dec, budget), out)?
        }
        Compression::Lz4Legacy => {
            let (v, used) = lz4_legacy(d, budget)?;
            parse_cpio_stream(&mut &v[..], name, out, limits)?;
            return Ok((used, v.len() as u64));
        }
        Compression::Xz => {
            let declared = xz_declared_size(d);
            if declared > budget {
                return Err(OsError::Initramfs(format!(
                    "xz: the stream declares at least {declared} decompressed bytes, over the limit \
                     of {budget} bytes (InitramfsLimits::max_decompressed); not decompressed"
                )));
            }
            let mut buf = Capped {
                buf: Vec::new(),
                cap: budget,
            };
            let end = xz_stream_end(d).unwrap_or(d.len());
            let mut stream = d.get(..end).unwrap_or(d);
            let r = lzma_rs::xz_decompress(&mut stream, &mut buf);
            s = d.get(end - stream.len()..).unwrap_or_default();
            match r {
                Ok(()) => {}
                Err(_) if buf.buf.len() as u64 >= budget => return Err(over(budget)),
                Err(e) => return Err(ierr(e.to_string())),
            }
            parse_cpio_stream(&mut &buf.buf[..], name, out, limits)?;
            buf.buf.len() as u64
        }
        Compression::Lzma => {
            let mut buf = Capped {
                buf: Vec::new(),
                cap: budget,
            };
            let opts = lzma_rs::decompress::Options {
                memlimit: Some(usize::try_from(budget.min(256 << 20)).unwrap_or(256 << 20)),
                ..Default::default()
            };
            match lzma_rs::lzma_decompress_with_options(&mut s, &mut buf, &opts) {
                Ok(()) => {}
                Err(_) if buf.buf.len() as u64 >= budget => return Err(over(budget)),
                Err(e) => return Err(ierr(e.to_string())),
            }
            parse_cpio_stream(&mut &buf.buf[..], name, out, limits)?;
            buf.buf.len() as u64
        }
        Compression::Bzip2 => {
            return Err(OsError::Initramfs(
                "bzip2-compressed initramfs is not supported".into(),
            ))
        }
    };
    Ok((d.len() - s.len(), produced))
}

/// Read exactly `buf.len()` bytes, or fewer only at the end of `r`.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parse the cpio archives of a decompressed stream as they are read from
/// `r` (`what` names the compression), until it ends: archives separated by
/// zero padding; anything else is noted and the rest of the stream skipped.
/// File data is skipped, except `conf/modules` (kept when small).
fn parse_cpio_stream(
    r: &mut dyn Read,
    what: &str,
    out: &mut Initramfs,
    limits: &InitramfsLimits,
) -> Result<(), OsError> {
    let io = |e: std::io::Error| OsError::Initramfs(format!("{what}: {e}"));
    let trunc = |at: u64, part: &str| {
        OsError::Initramfs(format!(
            "{what} stream: cpio: truncated {part} at offset {at}"
        ))
    };
    let skip = |r: &mut dyn Read, n: u64| -> std::io::Result<u64> {
        std::io::copy(&mut r.take(n), &mut std::io::sink())
    };
    let mut pos = 0u64;
    let mut in_archive = false;
    let mut word = [0u8; 4];
    loop {
        let start = pos;
        let n = read_full(r, &mut word).map_err(io)?;
        pos += n as u64;
        if n == 0 {
            return if in_archive {
                Err(trunc(start, "header"))
            } else {
                Ok(())
            };
        }
        if !in_archive && word[..n].iter().all(|b| *b == 0) {
            continue;
        }
        let mut h = [0u8; CPIO_HEADER];
        h[..n].copy_from_slice(&word[..n]);
        let m = if n == 4 {
            read_full(r, &mut h[4..]).map_err(io)?
        } else {
            0
        };
        pos += m as u64;
        if !is_cpio(&h[..n + m]) {
            if in_archive {
                return Err(OsError::Initramfs(format!(
                    "{what} stream: cpio: bad magic at offset {start}"
                )));
            }
            out.note = Some(format!(
                "{what} stream: unrecognised data at offset {start}; stopped"
            ));
            skip(r, u64::MAX).map_err(io)?;
            return Ok(());
        }
        if n + m < CPIO_HEADER {
            return Err(trunc(start, "header"));
        }
        if !in_archive {
            if out.segments.len() >= limits.max_segments {
                out.note = Some(format!("more than {} segments", limits.max_segments));
                skip(r, u64::MAX).map_err(io)?;
                return Ok(());
            }
            out.segments.push("cpio".into());
            in_archive = true;
        }
        let (mode, filesize, namesize) = cpio_header(&h, start, &format!("{what} stream: cpio"))?;
        let mut raw = vec![0u8; namesize as usize];
        if read_full(r, &mut raw).map_err(io)? < raw.len() {
            return Err(trunc(start, "name"));
        }
        pos += namesize;
        let pad = (4 - pos % 4) % 4;
        if skip(r, pad).map_err(io)? < pad {
            return Err(trunc(start, "name"));
        }
        pos += pad;
        let name = cpio_name(&raw);
        let is_trailer = name == "TRAILER!!!";
        let mut kept = None;
        if name == "conf/modules" && filesize <= MAX_CONF_MODULES {
            let mut text = vec![0u8; filesize as usize];
            if read_full(r, &mut text).map_err(io)? < text.len() {
                return Err(trunc(start, "data"));
            }
            kept = Some(text);
        } else if skip(r, filesize).map_err(io)? < filesize {
            return Err(OsError::Initramfs(format!(
                "{what} stream: cpio: {name}: {filesize} bytes of data past the end of the archive"
            )));
        }
        pos += filesize;
        let pad = (4 - pos % 4) % 4;
        // The trailer's padding may be cut by the end of the stream.
        let got = skip(r, pad).map_err(io)?;
        if got < pad && !is_trailer {
            return Err(trunc(start, "data"));
        }
        pos += got;
        if is_trailer {
            in_archive = false;
            continue;
        }
        if push_entry(out, limits, name, mode, filesize, kept.as_deref())? {
            // Every module asked for was seen: the rest of the stream is
            // not decompressed.
            return Ok(());
        }
    }
}

/// The most bytes lzma-rs can produce (and hold in memory at once) from the
/// xz stream at the start of `d`: the sizes its LZMA2 chunk headers declare,
/// plus one longest match per chunk (lzma-rs checks a chunk's size before
/// each symbol, so it may overshoot by one match). The walk follows the xz
/// container as lzma-rs reads it (stream header, then blocks: header,
/// LZMA2 chunks, padding, check) and stops where lzma-rs would stop with an
/// error, at the index or at the end of the data.
fn xz_declared_size(d: &[u8]) -> u64 {
    xz_walk(d).0
}

/// Where the xz stream at the start of `d` ends (after its index and
/// footer), when its structure can be followed: lzma-rs refuses data after
/// a stream, and the kernel's decoder stops at the stream's end, so an
/// archive appended after an xz image is read by handing lzma-rs the stream
/// alone. `None` when the walk cannot follow it (then all of `d` is given,
/// and lzma-rs reports the damage).
fn xz_stream_end(d: &[u8]) -> Option<usize> {
    let (_, index) = xz_walk(d);
    let start = index?;
    let mut pos = start + 1;
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for i in 0..9 {
            let b = *d.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let records = varint(&mut pos)?;
    for _ in 0..records.min(1 << 20) {
        varint(&mut pos)?;
        varint(&mut pos)?;
    }
    // Index padding to a multiple of 4, then its CRC32, then the footer.
    pos = start + align4(pos - start) + 4;
    let end = pos.checked_add(12)?;
    (d.get(end - 2..end)? == b"YZ").then_some(end)
}

fn xz_walk(d: &[u8]) -> (u64, Option<usize>) {
    const MAX_MATCH: u64 = 273;
    // Check field size by check type (xz format 2.1.1.2).
    let check_size = match d.get(7).map(|f| f & 0x0f) {
        Some(0) => 0usize,
        Some(t @ 1..=15) => 4usize << ((t - 1) / 3),
        _ => return (0, None),
    };
    let mut total = 0u64;
    let mut pos = 12usize; // after the stream header
                           // A block starts with its header size byte; 0 is the index.
    while let Some(&b) = d.get(pos).filter(|&&b| b != 0) {
        let block_start = pos;
        pos = pos.saturating_add((usize::from(b) + 1) * 4);
        loop {
            let Some(&control) = d.get(pos) else {
                return (total, None);
            };
            let (unpacked, header, packed) = match control {
                0 => break,
                1 | 2 => {
                    let Some(s) = d.get(pos + 1..pos + 3) else {
                        return (total, None);
                    };
                    let n = usize::from(u16::from_be_bytes([s[0], s[1]])) + 1;
                    (n as u64, 3usize, n)
                }
                0x80..=0xff => {
                    let Some(s) = d.get(pos + 1..pos + 5) else {
                        return (total, None);
                    };
                    let unpacked = (u64::from(control & 0x1f) << 16
                        | u64::from(u16::from_be_bytes([s[0], s[1]])))
                        + 1
                        + MAX_MATCH;
                    let packed = usize::from(u16::from_be_bytes([s[2], s[3]])) + 1;
                    let props = usize::from(control >= 0xc0);
                    (unpacked, 5 + props, packed)
                }
                _ => return (total, None),
            };
            total = total.saturating_add(unpacked);
            pos = pos.saturating_add(header).saturating_add(packed);
        }
        pos += 1; // the end-of-LZMA2 byte
        let padded = block_start + align4(pos - block_start);
        pos = padded.saturating_add(check_size);
    }
    (total, d.get(pos).filter(|b| **b == 0).map(|_| pos))
}

/// Skip zero bytes (padding between members), one at a time as the
/// kernel's unpacker does; an archive after them must start at a multiple
/// of 4 bytes.
fn skip_zeros(d: &[u8], mut pos: usize) -> usize {
    while d.get(pos) == Some(&0) {
        pos += 1;
    }
    pos
}

/// Run a decompressor or the cpio parser behind the panic boundary: a panic
/// becomes [`OsError::Initramfs`] naming the segment (`what`).
fn guarded<T>(what: impl Fn() -> String, f: impl FnOnce() -> T) -> Result<T, OsError> {
    vmie_disk::guard::catch(&what, f).map_err(|p| {
        OsError::Initramfs(format!(
            "{}: the decoder failed on corrupt data ({})",
            what(),
            p.message
        ))
    })
}

/// Decode an initramfs image, listing every entry.
pub fn parse_initramfs(data: &[u8], limits: &InitramfsLimits) -> Result<Initramfs, OsError> {
    parse_initramfs_until(data, limits, &BTreeSet::new())
}

/// Decode an initramfs image, stopping as soon as a module file of each
/// name in `want` (normalised names, see [`module_name`]) has been listed:
/// the answer to "does it hold these drivers" is then known, and the rest
/// is neither decompressed nor parsed ([`Initramfs::stopped_early`]). On
/// a real Debian 12 initramfs (138 MB of cpio) the last cloud driver comes
/// at 70% of the stream. With `want` empty, or when one of them is not in
/// the image, the whole image is read, as [`parse_initramfs`] does.
pub fn parse_initramfs_until(
    data: &[u8],
    limits: &InitramfsLimits,
    want: &BTreeSet<String>,
) -> Result<Initramfs, OsError> {
    let mut out = Initramfs {
        want: want.clone(),
        ..Initramfs::default()
    };
    let mut budget = limits.max_decompressed;
    let mut pos = 0usize;
    while pos < data.len() {
        pos = skip_zeros(data, pos);
        let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) else {
            break;
        };
        if out.segments.len() >= limits.max_segments {
            out.note = Some(format!("more than {} segments", limits.max_segments));
            break;
        }
        if is_cpio(rest) && pos % 4 != 0 {
            // The kernel looks for an archive only at a multiple of 4.
            out.note = Some(format!(
                "cpio archive at offset {pos}, not a multiple of 4 bytes (the kernel does not \
                 unpack it); stopped"
            ));
            break;
        }
        if is_cpio(rest) {
            let n = guarded(
                || format!("cpio archive at offset {pos}"),
                || parse_cpio(rest, &mut out, limits),
            )??;
            out.segments.push("cpio".into());
            if out.stopped_early {
                break;
            }
            pos += n.max(4);
            continue;
        }
        let Some(kind) = Compression::of(rest) else {
            if out.segments.is_empty() {
                return Err(OsError::Initramfs(
                    "neither a cpio archive nor a known compression".into(),
                ));
            }
            out.note = Some(format!("unrecognised data at offset {pos}; stopped"));
            break;
        };
        out.segments.push(kind.name().into());
        let (used, produced) = guarded(
            || format!("compressed stream at offset {pos}"),
            || decode_and_parse(kind, rest, budget, &mut out, limits),
        )??;
        budget = budget.saturating_sub(produced);
        if used == 0 || out.stopped_early {
            break;
        }
        pos += used;
    }
    Ok(out)
}

/// Driver availability for one kernel: `modules_builtin` is the text of
/// `/lib/modules/V/modules.builtin` (if read), `initramfs_modules` the
/// normalised module names of its initramfs, `root_modules` those found
/// under `/lib/modules/V` on the root filesystem.
pub fn driver_states(
    modules_builtin: Option<&str>,
    initramfs_modules: &[String],
    root_modules: &[String],
) -> BTreeMap<String, DriverState> {
    let builtin: Vec<String> = modules_builtin
        .map(|t| t.lines().filter_map(module_name).collect())
        .unwrap_or_default();
    DRIVERS
        .iter()
        .map(|d| {
            let d = d.to_string();
            let st = if builtin.contains(&d) {
                DriverState::Builtin
            } else if initramfs_modules.contains(&d) {
                DriverState::Initramfs
            } else if root_modules.contains(&d) {
                DriverState::RootOnly
            } else {
                DriverState::Missing
            };
            (d, st)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No input is known to panic flate2, lzma-rs, ruzstd or lz4_flex (a
    /// 100 s mutation run over streams of each found none), so the boundary
    /// is tested at the call-site helper every decoder call goes through.
    #[test]
    fn a_panic_in_a_decoder_becomes_an_error_naming_the_segment() {
        let r: Result<(), _> = guarded(
            || "compressed stream at offset 4096".to_string(),
            || panic!("index out of bounds"),
        );
        let e = r.unwrap_err();
        assert!(e.is_refusal());
        assert_eq!(
            e.to_string(),
            OsError::Initramfs(
                "compressed stream at offset 4096: the decoder failed on corrupt data (index out \
                 of bounds)"
                    .into()
            )
            .to_string()
        );
        assert!(!vmie_disk::guard::inside());
        assert_eq!(guarded(String::new, || 5).unwrap(), 5);
    }

    #[test]
    fn xz_walk_reads_chunk_headers() {
        // Stream header (check CRC32), one block with a 12-byte header, an
        // uncompressed chunk of 3 bytes, an LZMA chunk declaring 0x1_0000
        // bytes, the end of the block, padding and check, then the index.
        let mut d = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 0, 1, 0, 0, 0, 0];
        d.extend([2u8; 12]);
        d.extend([1, 0, 2, b'a', b'b', b'c']);
        d.extend([0xe0, 0xff, 0xff, 0, 1, 0x5d, 0xaa, 0xbb]);
        d.push(0);
        while d.len() % 4 != 0 {
            d.push(0);
        }
        d.extend([0; 4]);
        assert_eq!(xz_declared_size(&d), 3 + 0x1_0000 + 273);
        // Cut inside the LZMA chunk header: only what lzma-rs could decode.
        assert_eq!(xz_declared_size(&d[..12 + 12 + 6 + 3]), 3);
        assert_eq!(xz_declared_size(&d[..5]), 0);
    }
}
