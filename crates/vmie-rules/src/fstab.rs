//! `/etc/fstab` for the cloud.
//!
//! - Device names that the cloud will change (`/dev/sdX`, `hdX`, `vdX`,
//!   `xvdX`, `nvmeXnYpZ`, `/dev/disk/by-path/…`, `/dev/disk/by-id/…`) become
//!   `UUID=` of the volume they name today.
//! - An entry whose device matches no volume of the VM (a data disk that will
//!   not be attached) gets `nofail`, so boot does not stop for it. The root
//!   entry never does: a root that matches nothing is the preflight's business.
//! - Network and host-shared filesystems (cifs, nfs, vboxsf, vmhgfs, …) are
//!   disabled: the line is commented out with a `#vmie-fixup: ` prefix.
//! - Lines fstab cannot parse are commented out the same way.
//! - No line is ever added or removed, and untouched lines stay byte for byte.
//!
//! Position of a device (`/dev/sdb2` is disk 1, partition 2) follows the
//! order the VM's disks were given in, boot disk first, as the hypervisor
//! presented them.

/// The prefix of lines this action disabled.
pub const DISABLED_PREFIX: &str = "#vmie-fixup: ";

/// Filesystem types that need a network or the old hypervisor.
pub const NETWORK_FS: &[&str] = &[
    "cifs",
    "smbfs",
    "smb3",
    "nfs",
    "nfs4",
    "vboxsf",
    "sshfs",
    "fuse.sshfs",
    "vmhgfs",
    "fuse.vmhgfs-fuse",
    "9p",
    "davfs",
    "glusterfs",
    "ceph",
];

/// A volume of the VM, as the fstab action needs to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// Disk index, boot disk 0.
    pub disk: usize,
    /// Partition number as Linux numbers it; `None` for a whole disk.
    pub partition: Option<u32>,
    /// Filesystem UUID, as blkid prints it.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Partition UUID.
    pub partuuid: Option<String>,
    /// GPT partition name.
    pub partlabel: Option<String>,
    /// (VG, LV) when the volume is an LVM logical volume; `disk` is then
    /// the disk of its first extent and `partition` is `None`, and no
    /// position name (`/dev/sda`) ever names it.
    pub lvm: Option<(String, String)>,
}

/// How a device spec names its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `UUID=` or `/dev/disk/by-uuid/`.
    Uuid(String),
    /// `LABEL=` or `/dev/disk/by-label/`.
    Label(String),
    /// `PARTUUID=` or `/dev/disk/by-partuuid/`.
    PartUuid(String),
    /// `PARTLABEL=` or `/dev/disk/by-partlabel/`.
    PartLabel(String),
    /// A name the cloud will change: disk index and partition.
    Position {
        /// Disk index.
        disk: usize,
        /// Partition number (`None`: whole disk).
        partition: Option<u32>,
    },
    /// `/dev/disk/by-path/…` or `/dev/disk/by-id/…`: hypervisor-specific names.
    Unstable {
        /// Partition number from a `-partN` suffix.
        partition: Option<u32>,
    },
    /// An LVM logical volume by name: `/dev/mapper/VG-LV` (hyphens in the
    /// names doubled) or `/dev/VG/LV`. Stable across a disk move.
    Lvm {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
    },
    /// Other stable device names (`/dev/mapper/` names of dm-crypt or
    /// multipath, `/dev/md/…`).
    Stable,
    /// Not a block device (`tmpfs`, `proc`, `none`, a bind source, …).
    Pseudo,
}

pub use crate::{Change, Outcome};

/// Index of a disk from its Linux letters: `a` → 0, `z` → 25, `aa` → 26.
fn disk_letters(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut n = 0usize;
    for b in s.bytes() {
        n = n * 26 + usize::from(b - b'a') + 1;
    }
    Some(n - 1)
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Classify a device spec (the first fstab field).
pub fn classify(spec: &str) -> Spec {
    let tagged = |prefix: &str| {
        spec.strip_prefix(prefix)
            .map(|v| v.trim_matches('"').to_string())
    };
    if let Some(v) = tagged("UUID=").or_else(|| tagged("/dev/disk/by-uuid/")) {
        return Spec::Uuid(v);
    }
    if let Some(v) = tagged("LABEL=").or_else(|| tagged("/dev/disk/by-label/")) {
        return Spec::Label(v);
    }
    if let Some(v) = tagged("PARTUUID=").or_else(|| tagged("/dev/disk/by-partuuid/")) {
        return Spec::PartUuid(v);
    }
    if let Some(v) = tagged("PARTLABEL=").or_else(|| tagged("/dev/disk/by-partlabel/")) {
        return Spec::PartLabel(v);
    }
    if let Some(rest) = spec
        .strip_prefix("/dev/disk/by-path/")
        .or_else(|| spec.strip_prefix("/dev/disk/by-id/"))
    {
        let partition = rest.rsplit_once("-part").and_then(|(_, n)| number(n));
        return Spec::Unstable { partition };
    }
    let Some(dev) = spec.strip_prefix("/dev/") else {
        return Spec::Pseudo;
    };
    if let Some(name) = dev.strip_prefix("mapper/") {
        return match lvm_mapper_name(name) {
            Some((vg, lv)) => Spec::Lvm { vg, lv },
            None => Spec::Stable,
        };
    }
    if let Some((vg, lv)) = dev.split_once('/') {
        // /dev/VG/LV: two LVM names, the first not a directory udev or the
        // kernel makes under /dev.
        const DEV_DIRS: &[&str] = &[
            "disk",
            "md",
            "block",
            "char",
            "bus",
            "cpu",
            "dri",
            "fd",
            "hugepages",
            "input",
            "mqueue",
            "net",
            "pts",
            "shm",
            "snd",
            "vfio",
            "loop",
            "bsg",
            "dma_heap",
            "usb",
        ];
        let lvm_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 127
                && !n.starts_with('-')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
        };
        if !DEV_DIRS.contains(&vg) && lvm_name(vg) && lvm_name(lv) {
            return Spec::Lvm {
                vg: vg.to_string(),
                lv: lv.to_string(),
            };
        }
        return Spec::Stable;
    }
    // nvme<ctrl>n<ns>[p<part>]
    if let Some(rest) = dev.strip_prefix("nvme") {
        if let Some((ctrl, rest)) = rest.split_once('n') {
            let (ns, part) = match rest.split_once('p') {
                Some((ns, p)) => (ns, Some(p)),
                None => (rest, None),
            };
            if let (Some(c), Some(_)) = (number(ctrl), number(ns)) {
                let partition = match part {
                    Some(p) => match number(p) {
                        Some(n) => Some(n),
                        None => return Spec::Stable,
                    },
                    None => None,
                };
                return Spec::Position {
                    disk: c as usize,
                    partition,
                };
            }
        }
        return Spec::Stable;
    }
    for prefix in ["xvd", "sd", "hd", "vd"] {
        if let Some(rest) = dev.strip_prefix(prefix) {
            let split = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (letters, digits) = rest.split_at(split);
            if let Some(disk) = disk_letters(letters) {
                let partition = if digits.is_empty() {
                    None
                } else {
                    match number(digits) {
                        Some(n) => Some(n),
                        None => return Spec::Stable,
                    }
                };
                return Spec::Position { disk, partition };
            }
        }
    }
    Spec::Stable
}

/// (VG, LV) of a `/dev/mapper/` name: the first single hyphen separates
/// them, a doubled hyphen stands for one. `None` when there is no single
/// hyphen (not an LVM name: dm-crypt, multipath).
pub fn lvm_mapper_name(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

fn eq(a: &Option<String>, b: &str) -> bool {
    a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// The volume a spec names today, if any. `None` for specs that name no
/// volume by design (pseudo filesystems, LVM names); `Some(None)` for specs
/// that name a volume this VM does not have.
pub fn lookup<'v>(spec: &str, volumes: &'v [Volume]) -> Option<Option<&'v Volume>> {
    resolve(&classify(spec), volumes)
}

fn resolve<'v>(spec: &Spec, volumes: &'v [Volume]) -> Option<Option<&'v Volume>> {
    Some(match spec {
        Spec::Uuid(u) => volumes.iter().find(|v| eq(&v.uuid, u)),
        Spec::Label(l) => volumes
            .iter()
            .find(|v| v.label.as_deref() == Some(l.as_str())),
        Spec::PartUuid(u) => volumes.iter().find(|v| eq(&v.partuuid, u)),
        Spec::PartLabel(l) => volumes
            .iter()
            .find(|v| v.partlabel.as_deref() == Some(l.as_str())),
        Spec::Position { disk, partition } => volumes
            .iter()
            .find(|v| v.lvm.is_none() && v.disk == *disk && v.partition == *partition),
        Spec::Unstable { partition } => {
            // by-path and by-id encode the old hypervisor's bus and serials;
            // on a one-disk VM the partition number is enough.
            let disks = volumes.iter().map(|v| v.disk).max().map_or(0, |m| m + 1);
            if disks == 1 {
                volumes
                    .iter()
                    .find(|v| v.lvm.is_none() && v.partition == *partition)
            } else {
                None
            }
        }
        // An LV the VM does not show (its VG incomplete or refused) is
        // left alone: its name still works once the VG is whole.
        Spec::Lvm { vg, lv } => match volumes
            .iter()
            .find(|v| v.lvm.as_ref().is_some_and(|(g, l)| g == vg && l == lv))
        {
            Some(v) => Some(v),
            None => return None,
        },
        Spec::Stable | Spec::Pseudo => return None,
    })
}

/// One line split into fields, remembering every byte between them.
struct Fields<'a> {
    /// Leading whitespace, then (field, following whitespace) pairs.
    lead: &'a str,
    parts: Vec<(&'a str, &'a str)>,
}

fn split(line: &str) -> Fields<'_> {
    let trimmed = line.trim_start_matches([' ', '\t']);
    let lead = &line[..line.len() - trimmed.len()];
    let mut parts = Vec::new();
    let mut rest = trimmed;
    while !rest.is_empty() {
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let (field, after) = rest.split_at(end);
        let ws_end = after.find(|c| c != ' ' && c != '\t').unwrap_or(after.len());
        let (ws, next) = after.split_at(ws_end);
        parts.push((field, ws));
        rest = next;
    }
    Fields { lead, parts }
}

impl Fields<'_> {
    fn join(&self, replace: &[(usize, String)]) -> String {
        let mut out = String::from(self.lead);
        for (i, (field, ws)) in self.parts.iter().enumerate() {
            match replace.iter().find(|(j, _)| *j == i) {
                Some((_, new)) => out.push_str(new),
                None => out.push_str(field),
            }
            out.push_str(ws);
        }
        out
    }
}

/// Why a line is not a valid fstab entry, if it is not.
fn invalid(f: &Fields<'_>) -> Option<String> {
    let n = f.parts.len();
    if n < 2 {
        return Some("a line needs at least a device and a mount point".into());
    }
    if n > 6 {
        return Some(format!("{n} fields; fstab has at most 6"));
    }
    for (i, name) in [(4, "dump frequency"), (5, "fsck pass")] {
        if let Some((v, _)) = f.parts.get(i) {
            if number(v).is_none() {
                return Some(format!("{name} {v:?} is not a number"));
            }
        }
    }
    None
}

fn has_option(opts: &str, name: &str) -> bool {
    opts.split(',').any(|o| o == name)
}

/// Rewrite `text` (an fstab) for a VM whose volumes are `volumes`.
pub fn fix(text: &str, volumes: &[Volume]) -> Outcome {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for (i, (line, eol)) in crate::lines_with_eol(text).enumerate() {
        let lineno = i + 1;
        let body = line.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            out.push_str(line);
            out.push_str(eol);
            continue;
        }
        let f = split(line);
        let mut change = |after: String, reason: String, out: &mut String| {
            changes.push(Change {
                line: lineno,
                before: line.to_string(),
                after: after.clone(),
                reason,
            });
            out.push_str(&after);
            out.push_str(eol);
        };
        if let Some(why) = invalid(&f) {
            change(
                format!("{DISABLED_PREFIX}{line}"),
                format!("not a valid fstab entry: {why}"),
                &mut out,
            );
            continue;
        }
        let spec_text = f.parts[0].0;
        let mountpoint = f.parts[1].0;
        let fstype = f.parts.get(2).map(|p| p.0).unwrap_or("auto");
        if NETWORK_FS.contains(&fstype) || fstype.starts_with("fuse.vmhgfs") {
            change(
                format!("{DISABLED_PREFIX}{line}"),
                format!("{fstype} needs the source network or hypervisor; disabled so boot does not wait for it"),
                &mut out,
            );
            continue;
        }
        let spec = classify(spec_text);
        let mut replace: Vec<(usize, String)> = Vec::new();
        let mut reasons = Vec::new();
        match resolve(&spec, volumes) {
            None => {}
            Some(Some(vol)) => {
                if matches!(spec, Spec::Position { .. } | Spec::Unstable { .. }) {
                    if let Some(u) = &vol.uuid {
                        replace.push((0, format!("UUID={u}")));
                        reasons.push(format!(
                            "{spec_text} is renamed in the cloud; its filesystem has UUID {u}"
                        ));
                    } else if let Some(pu) = &vol.partuuid {
                        replace.push((0, format!("PARTUUID={pu}")));
                        reasons.push(format!(
                            "{spec_text} is renamed in the cloud; its partition has PARTUUID {pu}"
                        ));
                    }
                }
            }
            Some(None) => {
                if mountpoint == "/" {
                    notes.push(format!(
                        "line {lineno}: the root entry {spec_text} matches no volume of this VM"
                    ));
                } else {
                    let opts = f.parts.get(3).map(|p| p.0);
                    match opts {
                        Some(o) if has_option(o, "nofail") => {}
                        Some(o) => {
                            replace.push((3, format!("{o},nofail")));
                            reasons.push(format!("{spec_text} matches no volume of this VM; nofail so boot goes on without it"));
                        }
                        None => {
                            // Only spec, mountpoint and type: give the options field.
                            replace.push((2, format!("{fstype} defaults,nofail")));
                            reasons.push(format!("{spec_text} matches no volume of this VM; nofail so boot goes on without it"));
                        }
                    }
                }
            }
        }
        if replace.is_empty() {
            out.push_str(line);
            out.push_str(eol);
            continue;
        }
        if f.parts.len() == 2 {
            // spec and mountpoint only: the type field must exist before options.
            if let Some(r) = replace.iter_mut().find(|(i, _)| *i == 2) {
                r.0 = 1;
                r.1 = format!("{mountpoint} {}", r.1);
            }
        }
        let after = f.join(&replace);
        change(after, reasons.join("; "), &mut out);
    }
    Outcome {
        text: out,
        changes,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_device_names() {
        assert_eq!(
            classify("/dev/sda1"),
            Spec::Position {
                disk: 0,
                partition: Some(1)
            }
        );
        assert_eq!(
            classify("/dev/xvdb2"),
            Spec::Position {
                disk: 1,
                partition: Some(2)
            }
        );
        assert_eq!(
            classify("/dev/hdc"),
            Spec::Position {
                disk: 2,
                partition: None
            }
        );
        assert_eq!(
            classify("/dev/vdaa3"),
            Spec::Position {
                disk: 26,
                partition: Some(3)
            }
        );
        assert_eq!(
            classify("/dev/nvme0n1p3"),
            Spec::Position {
                disk: 0,
                partition: Some(3)
            }
        );
        assert_eq!(
            classify("/dev/nvme1n1"),
            Spec::Position {
                disk: 1,
                partition: None
            }
        );
        assert_eq!(
            classify("/dev/mapper/vg-root"),
            Spec::Lvm {
                vg: "vg".into(),
                lv: "root".into()
            }
        );
        assert_eq!(
            classify("/dev/mapper/ubuntu--vg-ubuntu--lv"),
            Spec::Lvm {
                vg: "ubuntu-vg".into(),
                lv: "ubuntu-lv".into()
            }
        );
        assert_eq!(classify("/dev/mapper/luks1234"), Spec::Stable);
        assert_eq!(
            classify("/dev/vg00/lv00"),
            Spec::Lvm {
                vg: "vg00".into(),
                lv: "lv00".into()
            }
        );
        assert_eq!(classify("/dev/md/root"), Spec::Stable);
        assert_eq!(classify("UUID=abc"), Spec::Uuid("abc".into()));
        assert_eq!(classify("UUID=\"abc\""), Spec::Uuid("abc".into()));
        assert_eq!(classify("/dev/disk/by-uuid/abc"), Spec::Uuid("abc".into()));
        assert_eq!(classify("LABEL=/boot"), Spec::Label("/boot".into()));
        assert_eq!(
            classify("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part1"),
            Spec::Unstable { partition: Some(1) }
        );
        assert_eq!(
            classify("/dev/disk/by-id/wwn-0x5000c2-part2"),
            Spec::Unstable { partition: Some(2) }
        );
        assert_eq!(classify("tmpfs"), Spec::Pseudo);
        assert_eq!(classify("/dev/sda1x"), Spec::Stable);
    }
}
