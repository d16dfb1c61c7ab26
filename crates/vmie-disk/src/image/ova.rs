//! OVA: a tar archive holding an OVF descriptor (its first member) and the
//! VM's disk images, read in place: each disk is a [`FileDevice::member`]
//! window onto the archive, opened by content like any image.
//!
//! The tar headers (ustar, GNU and pax; checksums, sizes and octal or
//! base-256 fields checked; every member inside the file) are read one by
//! one, at most [`ImageLimits::max_archive_members`] of them. The OVF (at
//! most [`ImageLimits::max_descriptor_bytes`]) is parsed by `roxmltree`
//! behind the panic boundary, with DTDs refused before parsing (no entity
//! is ever expanded). The disks come in the order of the first virtual
//! system's hardware: disk items (`rasd:ResourceType` 17) sorted by their
//! controller's kind (IDE, then SATA/other storage, then SCSI, then the
//! rest, as a BIOS meets them), the controller's order among those of its
//! kind, then `rasd:AddressOnParent`; disks no item names follow in
//! DiskSection order. A gzip-compressed or chunked file is refused naming
//! it.

use std::collections::HashMap;

use super::{bad, ImageLimits};
use crate::{Device, DiskError, FileDevice};

/// One disk of an OVA: its member name (the OVF's `ovf:href`) and the
/// member's window onto the archive.
#[derive(Debug)]
pub struct OvaDisk {
    /// The member's name in the archive.
    pub name: String,
    /// The member's bytes (a window onto the archive).
    pub file: FileDevice,
}

/// Whether the 512 bytes `head` are a tar header (ustar magic and a
/// matching checksum): an OVA, whose first member must then be its OVF
/// ([`open_ova`] refuses any other archive, naming its first member).
pub(crate) fn looks_like_ova(head: &[u8]) -> bool {
    head.len() >= 512
        && head.get(257..262) == Some(b"ustar".as_slice())
        && checksum_ok(&head[..512])
}

/// Whether the checksum of the tar header `h` (512 bytes) matches, summed
/// as unsigned or (old tars) signed bytes.
fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = number(&h[148..156]) else {
        return false;
    };
    let field = |i: usize| (148..156).contains(&i);
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if field(i) { b' ' } else { b }))
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| i64::from(if field(i) { b' ' as i8 } else { b as i8 }))
        .sum();
    stored == unsigned || i64::try_from(stored).ok() == Some(signed)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A numeric tar field: octal digits (space or NUL terminated), or GNU
/// base-256 (high bit of the first byte set).
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let t: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&c| c == b' ')
        .take_while(|&c| c != 0 && c != b' ')
        .collect();
    if t.is_empty() {
        return Some(0);
    }
    let mut v = 0u64;
    for c in t {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// A regular member of the archive.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    at: u64,
    size: u64,
}

/// Largest pax extended header or GNU long name read.
const MAX_EXTENDED: u64 = 64 << 10;

/// The regular members of the tar archive `f`, in order.
fn members(f: &FileDevice, limits: &ImageLimits) -> Result<Vec<Member>, DiskError> {
    let mut out: Vec<Member> = Vec::new();
    let mut at = 0u64;
    let mut next_name: Option<String> = None;
    let mut count = 0usize;
    while at.checked_add(512).is_some_and(|e| e <= f.len()) {
        let what = "OVA tar header";
        let mut h = [0u8; 512];
        f.read_at(at, &mut h)?;
        if h.iter().all(|&b| b == 0) {
            break; // end of archive
        }
        count += 1;
        if count > limits.max_archive_members {
            return Err(bad(
                f,
                what,
                at,
                format!(
                    "more than {} members (the limit)",
                    limits.max_archive_members
                ),
            ));
        }
        if h.get(257..262) != Some(b"ustar".as_slice()) {
            return Err(bad(f, what, at, "no ustar magic"));
        }
        if !checksum_ok(&h) {
            return Err(bad(
                f,
                what,
                at,
                "the header's checksum does not match its bytes",
            ));
        }
        let size = number(&h[124..136])
            .ok_or_else(|| bad(f, what, at, "the size field is not a number"))?;
        let data = at + 512;
        let end = data
            .checked_add(size)
            .filter(|&e| e <= f.len())
            .ok_or_else(|| {
                bad(
                    f,
                    what,
                    at,
                    format!(
                        "the member's {size} bytes reach past the end of the archive ({} bytes)",
                        f.len()
                    ),
                )
            })?;
        let posix = h.get(257..263) == Some(b"ustar\0".as_slice());
        let mut name = cstr(&h[..100]);
        if posix {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let kind = h[156];
        let extended = |f: &FileDevice| -> Result<Vec<u8>, DiskError> {
            if size > MAX_EXTENDED {
                return Err(bad(
                    f,
                    what,
                    at,
                    format!("an extended header of {size} bytes (more than {MAX_EXTENDED})"),
                ));
            }
            let mut b = vec![0u8; usize::try_from(size).unwrap_or(0)];
            f.read_at(data, &mut b)?;
            Ok(b)
        };
        match kind {
            b'x' => {
                let b = extended(f)?;
                if let Some(p) = pax_path(&b) {
                    next_name = Some(p);
                }
            }
            b'L' => next_name = Some(cstr(&extended(f)?)),
            b'0' | 0 | b'7' => {
                let name = next_name.take().unwrap_or(name);
                let name = name.strip_prefix("./").unwrap_or(&name).to_string();
                if out.iter().any(|m| m.name == name) {
                    return Err(bad(
                        f,
                        what,
                        at,
                        format!("member {name:?} is in the archive twice"),
                    ));
                }
                out.push(Member {
                    name,
                    at: data,
                    size,
                });
            }
            _ => next_name = None, // directories, links, global headers: not disks
        }
        at = end
            .checked_next_multiple_of(512)
            .ok_or_else(|| bad(f, what, at, "member size too large"))?;
    }
    Ok(out)
}

/// The `path` record of a pax extended header (`LEN path=VALUE\n`).
fn pax_path(b: &[u8]) -> Option<String> {
    let mut rest = b;
    let mut path = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return None;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    path
}

/// A file of the OVF's References.
#[derive(Debug)]
struct RefFile {
    href: String,
    compression: Option<String>,
    chunked: bool,
}

/// The element children of `n` named `name` (any namespace).
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    n.children()
        .filter(|c| c.is_element() && c.tag_name().name() == name)
        .collect()
}

/// What the OVF says: the disks' files, in boot order.
fn disk_files(f: &FileDevice, xml: &str, limits: &ImageLimits) -> Result<Vec<RefFile>, DiskError> {
    let what = "OVA descriptor (OVF)";
    let refuse = |why: String| bad(f, what, 0, why);
    let upper = xml.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
        return Err(refuse(
            "it has a DTD (<!DOCTYPE or <!ENTITY); an OVF has none, and entities are not expanded"
                .into(),
        ));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1 << 20,
    };
    let parsed = crate::guard::catch(
        || format!("{}: {what}", f.describe()),
        || roxmltree::Document::parse_with_options(xml, opts).map_err(|e| e.to_string()),
    )
    .map_err(|p| refuse(format!("the XML parser failed: {p}")))?;
    let doc = parsed.map_err(|e| refuse(format!("it is not well-formed XML: {e}")))?;
    let attr = |n: roxmltree::Node, name: &str| {
        n.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value().to_string())
    };
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return Err(refuse(format!(
            "its root element is <{}>, not an OVF <Envelope>",
            root.tag_name().name()
        )));
    }
    // References: id -> file.
    let mut files: HashMap<String, RefFile> = HashMap::new();
    for r in child(root, "References") {
        for file in child(r, "File") {
            let id = attr(file, "id").ok_or_else(|| refuse("a File without ovf:id".into()))?;
            let href =
                attr(file, "href").ok_or_else(|| refuse(format!("File {id:?} has no ovf:href")))?;
            files.insert(
                id,
                RefFile {
                    href,
                    compression: attr(file, "compression").filter(|c| c != "identity"),
                    chunked: attr(file, "chunkSize").is_some(),
                },
            );
        }
    }
    // DiskSection: disk id -> file id, in order.
    // A blank disk (no file) is created empty on import: nothing to read.
    let mut disks: Vec<(String, Option<String>)> = Vec::new();
    for sec in child(root, "DiskSection") {
        for d in child(sec, "Disk") {
            let id = attr(d, "diskId").ok_or_else(|| refuse("a Disk without ovf:diskId".into()))?;
            disks.push((id, attr(d, "fileRef")));
        }
    }
    if disks.len() > limits.max_extents {
        return Err(refuse(format!(
            "{} disks is more than the limit of {}",
            disks.len(),
            limits.max_extents
        )));
    }
    // The first virtual system's disk items, in boot order.
    let systems: Vec<_> = root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "VirtualSystem")
        .collect();
    if systems.len() > 1 {
        return Err(refuse(format!(
            "it holds {} virtual systems; vmie-fixup reads one VM",
            systems.len()
        )));
    }
    let text = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let items: Vec<_> = systems
        .first()
        .map(|s| {
            s.descendants()
                .filter(|n| {
                    n.is_element()
                        && matches!(n.tag_name().name(), "Item" | "StorageItem")
                        && n.ancestors()
                            .any(|a| a.tag_name().name() == "VirtualHardwareSection")
                })
                .collect()
        })
        .unwrap_or_default();
    let rank = |rt: &str| match rt {
        "5" => 0u8, // IDE
        "20" => 1,  // other storage (SATA AHCI, NVMe)
        "6" => 2,   // parallel SCSI HBA
        _ => 3,
    };
    // Controllers: InstanceID -> (kind rank, order among controllers of that kind).
    let mut controllers: HashMap<String, (u8, usize)> = HashMap::new();
    let mut per_kind = [0usize; 4];
    for it in &items {
        let rt = text(*it, "ResourceType").unwrap_or_default();
        if matches!(rt.as_str(), "5" | "6" | "20") {
            if let Some(id) = text(*it, "InstanceID") {
                let r = rank(&rt);
                controllers.insert(id, (r, per_kind[usize::from(r)]));
                per_kind[usize::from(r)] += 1;
            }
        }
    }
    let mut ordered: Vec<((u8, usize, u64, usize), String)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if text(*it, "ResourceType").as_deref() != Some("17") {
            continue;
        }
        let Some(host) = text(*it, "HostResource") else {
            continue;
        };
        let host = host.strip_prefix("ovf:").unwrap_or(&host);
        let file_id = if let Some(disk) = host.strip_prefix("/disk/") {
            match disks.iter().find(|(id, _)| id == disk) {
                Some((_, Some(r))) => r.clone(),
                Some((_, None)) => continue,
                None => {
                    return Err(refuse(format!(
                        "a disk item names disk {disk:?}, which DiskSection does not list"
                    )))
                }
            }
        } else if let Some(file) = host.strip_prefix("/file/") {
            file.to_string()
        } else {
            continue;
        };
        let (r, c) = text(*it, "Parent")
            .and_then(|p| controllers.get(&p).copied())
            .unwrap_or((3, usize::MAX));
        let addr = text(*it, "AddressOnParent")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        ordered.push(((r, c, addr, i), file_id));
    }
    ordered.sort();
    let mut ids: Vec<String> = ordered.into_iter().map(|(_, id)| id).collect();
    for (_, r) in &disks {
        let Some(r) = r else { continue };
        if !ids.contains(r) {
            ids.push(r.clone());
        }
    }
    if ids.is_empty() {
        return Err(refuse("it lists no disk with a file".into()));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let file = files
            .remove(&id)
            .ok_or_else(|| refuse(format!("a disk refers to file {id:?}, which References does not list (or lists once for two disks)")))?;
        out.push(file);
    }
    Ok(out)
}

/// Open the disks of the OVA `f` in the OVF's boot order, each as a
/// read-only member window (not yet opened as an image).
pub fn open_ova(f: &FileDevice, limits: &ImageLimits) -> Result<Vec<OvaDisk>, DiskError> {
    let members = members(f, limits)?;
    let Some(ovf) = members.first() else {
        return Err(bad(f, "OVA", 0, "the archive holds no file"));
    };
    if !ovf.name.to_ascii_lowercase().ends_with(".ovf") {
        return Err(bad(
            f,
            "OVA",
            0,
            format!(
                "its first member is {:?}, not the .ovf descriptor an OVA starts with",
                ovf.name
            ),
        ));
    }
    if ovf.size > limits.max_descriptor_bytes {
        return Err(bad(
            f,
            "OVA descriptor (OVF)",
            ovf.at,
            format!(
                "{} bytes is larger than the limit of {} bytes",
                ovf.size, limits.max_descriptor_bytes
            ),
        ));
    }
    let mut raw = vec![0u8; usize::try_from(ovf.size).unwrap_or(0)];
    f.read_at(ovf.at, &mut raw)?;
    let raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&raw);
    let xml = std::str::from_utf8(raw).map_err(|e| {
        bad(
            f,
            "OVA descriptor (OVF)",
            ovf.at,
            format!("{:?} is not UTF-8 ({e})", ovf.name),
        )
    })?;
    let files = disk_files(f, xml, limits)?;
    let mut out = Vec::with_capacity(files.len());
    for rf in files {
        let name = rf.href.strip_prefix("./").unwrap_or(&rf.href);
        let refuse = |why: String| {
            bad(
                f,
                "OVA descriptor (OVF)",
                0,
                format!("disk file {name:?}: {why}"),
            )
        };
        if let Some(c) = &rf.compression {
            return Err(refuse(format!(
                "it is stored {c}-compressed in the archive and cannot be read in place; \
                 extract the archive, decompress and convert it"
            )));
        }
        if rf.chunked {
            return Err(refuse(
                "it is stored in chunks (ovf:chunkSize); extract the archive and join them".into(),
            ));
        }
        let m = members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| refuse("the archive has no such member".into()))?;
        if m.size == 0 {
            return Err(refuse("the member is empty".into()));
        }
        out.push(OvaDisk {
            name: m.name.clone(),
            file: f.member(m.at, m.size, &m.name)?,
        });
    }
    Ok(out)
}

/// The refusal of the OVA `f` for the reason `why`, with what to do instead
/// (extract, then convert each disk).
pub(crate) fn refusal(f: &dyn Device, why: &str) -> DiskError {
    let path = f.describe();
    DiskError::NotAnImage {
        why: format!(
            "this is an OVA archive: {why}. Extract it and convert each disk first: \
             tar -xf '{path}' && qemu-img convert -O raw DISK.vmdk DISK.raw; \
             or have the fixup run write fixed raw copies, one --output per disk, boot disk first: \
             vmie-fixup --output disk1.raw [--output disk2.raw ...] '{path}'"
        ),
        path,
    }
}
