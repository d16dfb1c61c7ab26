//! `/etc/fstab` parsing and classification of device specs.

use serde::Serialize;

/// How an fstab `spec` names its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecKind {
    /// `UUID=...`
    Uuid,
    /// `LABEL=...`
    Label,
    /// `PARTUUID=...`
    Partuuid,
    /// `PARTLABEL=...`
    Partlabel,
    /// `/dev/disk/by-path/...`
    ByPath,
    /// `/dev/disk/by-id/...`
    ById,
    /// `/dev/disk/by-uuid/...`
    ByUuid,
    /// `/dev/disk/by-label/...`
    ByLabel,
    /// `/dev/disk/by-partuuid/...`
    ByPartuuid,
    /// `/dev/disk/by-partlabel/...`
    ByPartlabel,
    /// A kernel device name: `/dev/sda1`, `/dev/xvdb`, `/dev/nvme0n1p2`, `/dev/md0`, ...
    Device,
    /// `/dev/mapper/NAME` (LVM, dm-crypt, multipath).
    Mapper,
    /// `/dev/VG/LV`.
    LvmPath,
    /// Network filesystem (`host:/path`, `//server/share`).
    Network,
    /// No device (`proc`, `tmpfs`, `none`, ...).
    Pseudo,
    /// Anything else.
    Other,
}

/// One line of fstab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FstabEntry {
    /// First field, verbatim (octal escapes resolved).
    pub spec: String,
    /// Classification of `spec`.
    pub spec_kind: SpecKind,
    /// The value that identifies the device: the UUID / label / by-* name,
    /// or the device path for the others.
    pub spec_value: String,
    /// Mount point (`none` / `swap` for swap).
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options.
    pub options: String,
    /// dump frequency (0 when absent or invalid).
    pub freq: u32,
    /// fsck pass (0 when absent or invalid).
    pub passno: u32,
    /// 1-based line number.
    pub line: usize,
}

/// Resolve `\040`-style octal escapes as fstab does.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classify an fstab spec. Returns the kind and the identifying value.
pub fn classify_spec(spec: &str, fstype: &str) -> (SpecKind, String) {
    let upper = |p: &str| {
        spec.get(..p.len())
            .filter(|h| h.eq_ignore_ascii_case(p))
            .map(|_| crate::util::unquote(&spec[p.len()..]).to_string())
    };
    for (p, k) in [
        ("UUID=", SpecKind::Uuid),
        ("LABEL=", SpecKind::Label),
        ("PARTUUID=", SpecKind::Partuuid),
        ("PARTLABEL=", SpecKind::Partlabel),
    ] {
        if let Some(v) = upper(p) {
            return (k, v);
        }
    }
    for (p, k) in [
        ("/dev/disk/by-path/", SpecKind::ByPath),
        ("/dev/disk/by-id/", SpecKind::ById),
        ("/dev/disk/by-uuid/", SpecKind::ByUuid),
        ("/dev/disk/by-label/", SpecKind::ByLabel),
        ("/dev/disk/by-partuuid/", SpecKind::ByPartuuid),
        ("/dev/disk/by-partlabel/", SpecKind::ByPartlabel),
    ] {
        if let Some(v) = spec.strip_prefix(p) {
            return (k, v.to_string());
        }
    }
    if spec.starts_with("/dev/mapper/") {
        return (SpecKind::Mapper, spec.to_string());
    }
    if let Some(rest) = spec.strip_prefix("/dev/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() == 1 {
            return (SpecKind::Device, spec.to_string());
        }
        if parts.len() == 2 && !matches!(parts[0], "disk" | "md" | "cciss" | "ida") {
            return (SpecKind::LvmPath, spec.to_string());
        }
        return (SpecKind::Device, spec.to_string());
    }
    if spec.starts_with("//") || (spec.contains(":/") && !spec.starts_with('/')) {
        return (SpecKind::Network, spec.to_string());
    }
    let pseudo_fs = [
        "proc",
        "sysfs",
        "tmpfs",
        "devpts",
        "devtmpfs",
        "none",
        "swap",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "hugetlbfs",
        "mqueue",
        "binfmt_misc",
        "efivarfs",
        "usbfs",
        "rpc_pipefs",
        "nfsd",
        "configfs",
        "pstore",
        "bpf",
        "tracefs",
        "fusectl",
        "ramfs",
    ];
    if !spec.starts_with('/') && (pseudo_fs.contains(&fstype) || pseudo_fs.contains(&spec)) {
        return (SpecKind::Pseudo, spec.to_string());
    }
    (SpecKind::Other, spec.to_string())
}

/// Parse fstab text. Malformed lines (fewer than 3 or more than 6 fields)
/// are skipped, as libmount rejects them.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f.len() > 6 {
            continue;
        }
        let spec = unescape(f[0]);
        let fstype = unescape(f[2]);
        let (spec_kind, spec_value) = classify_spec(&spec, &fstype);
        out.push(FstabEntry {
            spec_kind,
            spec_value,
            spec,
            mountpoint: unescape(f[1]),
            fstype,
            options: f
                .get(3)
                .map(|s| unescape(s))
                .unwrap_or_else(|| "defaults".into()),
            freq: f.get(4).and_then(|s| s.parse().ok()).unwrap_or(0),
            passno: f.get(5).and_then(|s| s.parse().ok()).unwrap_or(0),
            line: i + 1,
        });
        if out.len() >= 10_000 {
            break;
        }
    }
    out
}

/// Bijective base-26 index of drive letters: `a` → 0, `z` → 25, `aa` → 26.
fn letters_index(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    let mut n: u32 = 0;
    for c in s.bytes() {
        if !c.is_ascii_lowercase() {
            return None;
        }
        n = n * 26 + u32::from(c - b'a') + 1;
    }
    Some(n - 1)
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Position of a kernel device name as `(disk index, partition number)`:
/// `/dev/sda1` → `(0, Some(1))`, `/dev/xvdb2` → `(1, Some(2))`,
/// `/dev/nvme0n1p3` → `(0, Some(3))`, `/dev/hdc` → `(2, None)`,
/// `/dev/mmcblk0p1` → `(0, Some(1))`. Anything else → `None`.
pub fn device_position(spec: &str) -> Option<(u32, Option<u32>)> {
    let name = spec.strip_prefix("/dev/")?;
    let part = |s: &str| -> Option<Option<u32>> {
        if s.is_empty() {
            Some(None)
        } else {
            number(s).filter(|n| *n > 0).map(Some)
        }
    };
    for prefix in ["xvd", "sd", "hd", "vd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let split = rest
                .find(|c: char| !c.is_ascii_lowercase())
                .unwrap_or(rest.len());
            let disk = letters_index(&rest[..split])?;
            return Some((disk, part(&rest[split..])?));
        }
    }
    for (prefix, mid) in [("nvme", "n"), ("mmcblk", "")] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let disk = number(&rest[..split])?;
            let mut rest = &rest[split..];
            if !mid.is_empty() {
                rest = rest.strip_prefix(mid)?;
                let s = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                number(&rest[..s])?;
                rest = &rest[s..];
            }
            if rest.is_empty() {
                return Some((disk, None));
            }
            let p = rest.strip_prefix('p')?;
            return Some((disk, Some(number(p).filter(|n| *n > 0)?)));
        }
    }
    None
}
