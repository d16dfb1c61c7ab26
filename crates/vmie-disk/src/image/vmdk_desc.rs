//! VMDK text descriptors ("# Disk DescriptorFile"): a descriptor file whose
//! extents are other files (monolithicFlat, twoGbMaxExtentFlat,
//! twoGbMaxExtentSparse, vmfs, or a monolithicSparse/streamOptimized
//! extent named by a descriptor), and the descriptor embedded in a
//! monolithicSparse extent. A delta (snapshot) disk names its parent with
//! `parentFileNameHint` and `parentCID`; the parent is followed as a chain
//! of backing files (see `open_backing`) and must carry that CID.
//!
//! Every extent is checked before anything is read: a known type and
//! access, a size that fits, a file that is a regular file beside the
//! descriptor (a relative name without `..`), a flat extent's range inside
//! its file, a sparse extent's capacity at least the extent's size; their
//! count is capped by [`ImageLimits::max_extents`] and the descriptor's
//! size by [`ImageLimits::max_descriptor_bytes`].

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::vmdk::VmdkDevice;
use super::{bad, open_backing, read_data, read_table, unsupported, Chain, ImageLimits, Parent};
use crate::format::ContainerFormat;
use crate::{check_range, Device, DiskError, FileDevice};

const FMT: ContainerFormat = ContainerFormat::Vmdk;
/// The first line of a descriptor.
pub(crate) const MAGIC: &[u8] = b"# Disk DescriptorFile";

/// createTypes whose extents we read (the extents decide the rest).
const READ_TYPES: &[&str] = &[
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
    "vmfs",
    "vmfsThin",
    "vmfsPreallocated",
    "vmfsEagerZeroedThick",
];

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Debug, Clone)]
pub(crate) struct ExtentLine {
    /// 1-based line number in the descriptor.
    pub line: usize,
    pub access: String,
    pub sectors: u64,
    pub kind: String,
    pub file: Option<String>,
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Descriptor {
    pub create_type: String,
    pub cid: Option<u32>,
    /// The parent's CID; `None` without a parent (absent or `ffffffff`).
    pub parent_cid: Option<u32>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
}

/// The text of a descriptor: up to the first NUL, UTF-8.
pub(crate) fn text_of(
    f: &FileDevice,
    what: &str,
    at: u64,
    raw: &[u8],
) -> Result<String, DiskError> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec())
        .map_err(|e| bad(f, what, at, format!("it is not UTF-8 text ({e})")))
}

fn parse_hex(v: &str) -> Option<u32> {
    u32::from_str_radix(v.trim(), 16).ok()
}

/// Parse `text`, the descriptor found in `f` at `at` (named `what`).
pub(crate) fn parse(
    f: &FileDevice,
    what: &str,
    at: u64,
    text: &str,
    limits: &ImageLimits,
) -> Result<Descriptor, DiskError> {
    let mut d = Descriptor::default();
    let mut parent_cid_text = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        let err = |why: String| bad(f, &format!("{what} line {n}"), at, why);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_ascii_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if d.extents.len() >= limits.max_extents {
                return Err(err(format!(
                    "more than {} extents (the limit)",
                    limits.max_extents
                )));
            }
            d.extents.push(parse_extent(line, n).map_err(err)?);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue; // other lines are not ours to judge
        };
        let v = v.trim();
        let unquoted = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        match k.trim() {
            "createType" => {
                d.create_type = unquoted
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect()
            }
            "CID" => {
                d.cid = Some(
                    parse_hex(unquoted)
                        .ok_or_else(|| err(format!("CID {unquoted:?} is not hexadecimal")))?,
                )
            }
            "parentCID" => parent_cid_text = Some(unquoted.to_string()),
            "parentFileNameHint" => d.parent_hint = Some(unquoted.to_string()),
            _ => {}
        }
    }
    if let Some(p) = parent_cid_text {
        let cid = parse_hex(&p)
            .ok_or_else(|| bad(f, what, at, format!("parentCID {p:?} is not hexadecimal")))?;
        if cid != u32::MAX {
            d.parent_cid = Some(cid);
        }
    }
    if d.parent_cid.is_some() && d.parent_hint.as_deref().is_none_or(str::is_empty) {
        return Err(bad(
            f,
            what,
            at,
            "a delta disk (parentCID set) without a parentFileNameHint naming its parent",
        ));
    }
    Ok(d)
}

fn parse_extent(line: &str, n: usize) -> Result<ExtentLine, String> {
    let mut rest = line;
    let mut word = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        w
    };
    let access = word().to_string();
    let sectors_text = word().to_string();
    let kind = word().to_ascii_uppercase();
    let sectors = sectors_text
        .parse::<u64>()
        .map_err(|_| format!("extent size {sectors_text:?} is not a number of sectors"))?;
    if kind.is_empty() {
        return Err("the extent line has no type".into());
    }
    let mut file = None;
    let mut offset = 0;
    let r = rest.trim();
    if let Some(q) = r.strip_prefix('"') {
        let close = q
            .find('"')
            .ok_or_else(|| "the extent's file name has no closing quote".to_string())?;
        file = Some(q[..close].to_string());
        let tail = q[close + 1..].trim();
        if !tail.is_empty() {
            let o = tail.split_ascii_whitespace().next().unwrap_or("");
            offset = o
                .parse::<u64>()
                .map_err(|_| format!("extent offset {o:?} is not a number of sectors"))?;
        }
    } else if !r.is_empty() {
        return Err(format!("unexpected {r:?} after the extent type"));
    }
    Ok(ExtentLine {
        line: n,
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// The descriptor text of a VMDK file: the whole file when it is a
/// descriptor, the embedded one of a sparse extent, or `None`.
pub(crate) fn descriptor_of(
    f: &FileDevice,
    limits: &ImageLimits,
) -> Result<Option<String>, DiskError> {
    let mut head = [0u8; 64];
    let n = usize::try_from(f.len().min(64)).unwrap_or(0);
    f.read_at(0, &mut head[..n])?;
    if head.starts_with(MAGIC) {
        if f.len() > limits.max_descriptor_bytes {
            return Err(too_big(f, f.len(), limits));
        }
        let raw = read_table(f, "VMDK descriptor", 0, f.len())?;
        return text_of(f, "VMDK descriptor", 0, &raw).map(Some);
    }
    if head.starts_with(b"KDMV") && n >= 44 {
        let off = super::le64(&head, 28);
        let size = super::le64(&head, 36);
        if off == 0 || size == 0 {
            return Ok(None);
        }
        let at = off
            .checked_mul(512)
            .ok_or_else(|| bad(f, "VMDK header descriptorOffset", 28, "too large"))?;
        let len = size.saturating_mul(512).min(limits.max_descriptor_bytes);
        let raw = read_table(f, "VMDK embedded descriptor", at, len)?;
        return text_of(f, "VMDK embedded descriptor", at, &raw).map(Some);
    }
    Ok(None)
}

fn too_big(f: &FileDevice, len: u64, limits: &ImageLimits) -> DiskError {
    bad(
        f,
        "VMDK descriptor",
        0,
        format!(
            "{len} bytes is larger than the limit of {} bytes for a descriptor",
            limits.max_descriptor_bytes
        ),
    )
}

/// Open the parent of a delta disk `f` described by `d` (its descriptor,
/// named `what`): a VMDK whose CID is `d.parent_cid`.
pub(crate) fn open_parent(
    f: &FileDevice,
    what: &str,
    d: &Descriptor,
    limits: &ImageLimits,
    chain: &mut Chain,
) -> Result<Option<Parent>, DiskError> {
    let (Some(want), Some(hint)) = (d.parent_cid, d.parent_hint.as_deref()) else {
        return Ok(None);
    };
    let check = |p: &FileDevice| -> Result<(), String> {
        let text = descriptor_of(p, limits)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "it has no VMDK descriptor, so no CID".to_string())?;
        let pd = parse(p, "VMDK descriptor", 0, &text, limits).map_err(|e| e.to_string())?;
        match pd.cid {
            Some(cid) if cid == want => Ok(()),
            Some(cid) => Err(format!(
                "its CID is {cid:08x}, not the parentCID {want:08x} this delta disk was made on \
                 (the parent changed since)"
            )),
            None => Err("its descriptor has no CID".into()),
        }
    };
    let dev = open_backing(
        f,
        &format!("{what} parentFileNameHint"),
        0,
        hint,
        Some("vmdk"),
        Some(&check),
        limits,
        chain,
    )?;
    Ok(Some((hint.to_string(), dev)))
}

#[derive(Debug)]
enum Source {
    Flat { file: Arc<FileDevice>, at: u64 },
    Sparse(Box<VmdkDevice>),
    Zero,
}

#[derive(Debug)]
struct Extent {
    start: u64,
    len: u64,
    source: Source,
}

/// A VMDK made of the extents a descriptor file lists, read-only.
#[derive(Debug)]
pub struct VmdkDescriptorDevice {
    name: String,
    create_type: String,
    parent: Option<String>,
    size: u64,
    extents: Vec<Extent>,
}

/// The path of extent `name` of descriptor `f`: a relative name, without
/// `..`, naming a regular file in (or under) the descriptor's directory.
fn extent_path(f: &FileDevice, what: &str, name: &str) -> Result<PathBuf, DiskError> {
    let refuse = |why: String| bad(f, what, 0, format!("extent file {name:?}: {why}"));
    let p = Path::new(name);
    if name.is_empty() || name.contains('\0') {
        return Err(refuse("the name is empty or holds a NUL".into()));
    }
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse(
            "only a name relative to the descriptor's directory, without `..`, is followed".into(),
        ));
    }
    let path = f.path().parent().unwrap_or(Path::new(".")).join(p);
    let meta = std::fs::metadata(&path).map_err(|e| refuse(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    Ok(path)
}

impl VmdkDescriptorDevice {
    /// Open the descriptor file `file` and every extent it lists (and its
    /// parent, for a delta disk).
    pub(crate) fn open(
        file: Arc<FileDevice>,
        limits: &ImageLimits,
        chain: &mut Chain,
    ) -> Result<Self, DiskError> {
        let f = file.as_ref();
        if f.member_name().is_some() {
            return Err(unsupported(
                f,
                FMT,
                "it is a VMDK text descriptor inside an archive, whose extents are files beside \
                 it; extract the archive first",
            ));
        }
        let text = descriptor_of(f, limits)?
            .ok_or_else(|| bad(f, "VMDK descriptor", 0, "no descriptor"))?;
        let d = parse(f, "VMDK descriptor", 0, &text, limits)?;
        let ct = d.create_type.clone();
        if !READ_TYPES.contains(&ct.as_str()) {
            return Err(unsupported(
                f,
                FMT,
                format!("its descriptor's createType {ct:?} is not read (raw device mappings, ESXi sparse and other extents)"),
            ));
        }
        if d.extents.is_empty() {
            return Err(bad(f, "VMDK descriptor", 0, "it lists no extents"));
        }
        let parent = open_parent(f, "VMDK descriptor", &d, limits, chain)?;
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut start = 0u64;
        for e in &d.extents {
            let what = format!("VMDK descriptor line {} ({} extent)", e.line, e.kind);
            let refuse = |why: String| bad(f, &what, 0, why);
            if e.access == "NOACCESS" {
                return Err(refuse("the extent is marked NOACCESS".into()));
            }
            let len = e
                .sectors
                .checked_mul(512)
                .filter(|&l| l > 0)
                .ok_or_else(|| refuse(format!("{} sectors is out of range", e.sectors)))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| refuse("the extents add up past 2^64 bytes".into()))?;
            let name = || {
                e.file
                    .as_deref()
                    .ok_or_else(|| refuse("the extent names no file".into()))
            };
            let source = match e.kind.as_str() {
                "ZERO" => Source::Zero,
                "FLAT" | "VMFS" => {
                    let path = extent_path(f, &what, name()?)?;
                    let x = FileDevice::open_counted_with(&path, f)?;
                    let at = e
                        .offset
                        .checked_mul(512)
                        .ok_or_else(|| refuse(format!("offset {} is too large", e.offset)))?;
                    match at.checked_add(len) {
                        Some(stop) if stop <= x.len() => {}
                        _ => {
                            return Err(refuse(format!(
                                "{len} bytes at offset {at} reach past the end of {} ({} bytes)",
                                path.display(),
                                x.len()
                            )))
                        }
                    }
                    Source::Flat {
                        file: Arc::new(x),
                        at,
                    }
                }
                "SPARSE" => {
                    if e.offset != 0 {
                        return Err(refuse(format!(
                            "a sparse extent starts at offset 0, not {}",
                            e.offset
                        )));
                    }
                    let path = extent_path(f, &what, name()?)?;
                    let x = Arc::new(FileDevice::open_counted_with(&path, f)?);
                    // The extent's own embedded descriptor (if any) is
                    // not followed: this descriptor decides.
                    let (mut dev, _) = VmdkDevice::open_sparse(x, limits)?;
                    if dev.len() < len {
                        return Err(refuse(format!(
                            "{} holds {} bytes, less than the extent's {len}",
                            path.display(),
                            dev.len()
                        )));
                    }
                    if let Some((_, p)) = &parent {
                        dev.set_parent(p.clone(), start);
                    }
                    Source::Sparse(Box::new(dev))
                }
                k => {
                    return Err(unsupported(
                        f,
                        FMT,
                        format!("{what}: extent type {k} is not read"),
                    ))
                }
            };
            extents.push(Extent { start, len, source });
            start = end;
        }
        Ok(Self {
            name: f.describe(),
            create_type: ct,
            parent: parent.map(|(n, _)| n),
            size: start,
            extents,
        })
    }
}

impl Device for VmdkDescriptorDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = self.extents.partition_point(|e| e.start + e.len <= pos);
            let Some(e) = self.extents.get(i) else {
                return Err(DiskError::OutOfBounds {
                    device: self.describe(),
                    offset: pos,
                    len: (buf.len() - done) as u64,
                    size: self.size,
                });
            };
            let within = pos - e.start;
            let n = usize::try_from((e.len - within).min((buf.len() - done) as u64)).unwrap_or(0);
            let out = &mut buf[done..done + n];
            match &e.source {
                Source::Zero => out.fill(0),
                Source::Flat { file, at } => read_data(file, "VMDK flat extent", at + within, out)?,
                Source::Sparse(dev) => dev.read_at(within, out)?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::ReadOnly {
            device: self.describe(),
        })
    }

    fn describe(&self) -> String {
        match &self.parent {
            Some(p) => format!("{} (VMDK {}, parent {p:?})", self.name, self.create_type),
            None => format!("{} (VMDK {})", self.name, self.create_type),
        }
    }
}
