//! Volumes stacked on other volumes: Linux md RAID arrays (RAID1 and
//! linear, assembled by vmie-md from their members) and LUKS payloads
//! opened with the user's keys. Each becomes a [`Volume`] of its own
//! (probed like a partition, scanned for LVM PVs), whose reads and writes go
//! through the disks' overlays (a RAID1 write reaches every mirror, a LUKS
//! write is encrypted), so dry runs, the undo journal and the commit work on
//! it unchanged. Arrays are assembled first, so a LUKS volume on an array
//! opens too.

use std::sync::Arc;

use vmie_disk::Device;
use vmie_probe::FsKind;

use crate::{OpenOptions, Volume};

/// A key for LUKS volumes, as virt-inspector and virt-v2v take it
/// (`--key SELECTOR:key:STRING`, `--key SELECTOR:file:FILE`).
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// Which volumes it is for: `all`, a LUKS UUID, or the device name the
    /// guest's first boot in libguestfs would give it (`/dev/sda2`).
    pub selector: String,
    /// The key.
    pub key: vmie_luks::Key,
}

impl KeySpec {
    /// Parse `SELECTOR:key:STRING` or `SELECTOR:file:FILENAME` (the file is
    /// read here, whole, as `cryptsetup --key-file` reads it). The selector
    /// may itself hold no colon; the key string may.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (selector, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("--key {s}: expected SELECTOR:key:KEY or SELECTOR:file:FILE"))?;
        if selector.is_empty() {
            return Err(format!(
                "--key {s}: the selector (a device, a LUKS UUID or `all`) is empty"
            ));
        }
        let key = match rest.split_once(':') {
            Some(("key", k)) => vmie_luks::Key::Passphrase(k.as_bytes().to_vec()),
            Some(("file", f)) => {
                let meta = std::fs::metadata(f).map_err(|e| format!("--key {selector}:file:{f}: {e}"))?;
                // cryptsetup's default limit on key files.
                if meta.len() > 8 << 20 {
                    return Err(format!(
                        "--key {selector}:file:{f}: {} bytes, over the 8 MiB a LUKS key file may hold",
                        meta.len()
                    ));
                }
                vmie_luks::Key::File(std::fs::read(f).map_err(|e| format!("--key {selector}:file:{f}: {e}"))?)
            }
            _ if rest == "clevis" => {
                return Err(format!(
                    "--key {selector}:clevis: Clevis keys need the network-bound (Tang) or TPM2 server the guest was bound to; vmie-fixup opens LUKS offline only with a passphrase or key file"
                ))
            }
            _ => return Err(format!("--key {s}: expected SELECTOR:key:KEY or SELECTOR:file:FILE")),
        };
        Ok(Self {
            selector: selector.to_string(),
            key,
        })
    }

    /// Whether this key is for the LUKS volume with UUID `uuid` and guest
    /// device name `device` ([`guest_device`]).
    fn applies(&self, device: Option<&str>, uuid: &str) -> bool {
        self.selector == "all"
            || uuid.eq_ignore_ascii_case(&self.selector)
            || device == Some(self.selector.as_str())
    }
}

/// `sda`, ..., `sdz`, `sdaa`, ... for disk `i` (0-based), as Linux names
/// SCSI disks and libguestfs names the disks it is given.
pub fn disk_name(i: usize) -> String {
    let mut n = i;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("sd{}", String::from_utf8_lossy(&letters))
}

/// `/dev/sdXN` for partition N of disk X (libguestfs's names); `/dev/sdX`
/// for a whole disk; `None` for other volumes.
pub fn guest_device(v: &Volume) -> Option<String> {
    if v.lv.is_some() || v.stack.is_some() {
        return None;
    }
    let disk = disk_name(v.disk);
    Some(match v.number {
        Some(p) => format!("/dev/{disk}{p}"),
        None => format!("/dev/{disk}"),
    })
}

/// What a stacked volume is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackId {
    /// The decrypted payload of a LUKS volume.
    Luks {
        /// The LUKS volume's UUID.
        uuid: String,
        /// LUKS version (1 or 2).
        version: u16,
        /// The name of the volume holding the LUKS header.
        of: String,
        /// The name libguestfs gives the opened device (`/dev/mapper/cryptsda2`).
        mapper: String,
    },
    /// A Linux md RAID array.
    Md {
        /// The array UUID (mdadm's `xxxxxxxx:xxxxxxxx:…` form).
        uuid: String,
        /// `/dev/md/NAME` or `/dev/mdN`, as mdadm names it.
        device: String,
        /// `raid1`, `linear`.
        level: String,
        /// Superblock format (`1.2`, `0.90`, …).
        metadata: String,
        /// The member volumes' names.
        members: Vec<String>,
        /// Whether writes are accepted (a degraded array with a
        /// write-intent bitmap is read-only).
        writable: bool,
    },
}

/// The stacked volumes of a VM, and the containers left closed.
#[derive(Debug, Default)]
pub struct StackView {
    /// Opened payloads, probed like partitions.
    pub volumes: Vec<Volume>,
    /// (volume name, why) for every LUKS volume not opened: no key given,
    /// no key fits, or a refusal of its header.
    pub locked: Vec<(String, String)>,
    /// (array, why) for every md array not opened (a level other than
    /// RAID1 and linear, members missing or disagreeing), and (member, why)
    /// for every member whose superblock is refused.
    pub md_closed: Vec<(String, String)>,
    /// What assembling the arrays noticed (stale members left out, …).
    pub md_warnings: Vec<String>,
}

/// Assemble the md arrays whose members are among `vols`.
fn open_md(vols: &[&Volume], opts: &OpenOptions, view: &mut StackView) {
    let members: Vec<(Arc<dyn Device>, String)> = vols
        .iter()
        .filter(|v| v.probe.as_ref().map(|p| p.kind) == Some(FsKind::LinuxRaid))
        .map(|v| (v.device.clone(), v.name.clone()))
        .collect();
    if members.is_empty() {
        return;
    }
    let asm = match vmie_md::assemble(members, &vmie_md::MdOptions::default()) {
        Ok(a) => a,
        Err(e) => {
            view.md_warnings.push(e.to_string());
            return;
        }
    };
    for r in &asm.rejected {
        view.md_closed.push((r.name.clone(), r.error.to_string()));
    }
    view.md_warnings.extend(asm.warnings.iter().cloned());
    for a in &asm.arrays {
        let device = a
            .dev_path()
            .unwrap_or_else(|| format!("/dev/md/{}", a.uuid_dashed()));
        view.md_warnings
            .extend(a.warnings.iter().map(|w| format!("{device}: {w}")));
        let Some(dev) = a.device() else {
            view.md_closed.push((
                device,
                a.not_opened
                    .clone()
                    .unwrap_or_else(|| "not opened".to_string()),
            ));
            continue;
        };
        let first = a
            .members
            .iter()
            .find_map(|m| vols.iter().find(|v| v.name == m.name).map(|v| (v, m)));
        let (disk, start) = first.map_or((0, 0), |(v, m)| {
            (v.disk, v.start.saturating_add(m.superblock.data_offset))
        });
        let (probe, probe_error) = match vmie_probe::probe(dev.as_ref(), &opts.probe) {
            Ok(p) => (p, None),
            Err(e) => (None, Some(e.to_string())),
        };
        view.volumes.push(Volume {
            disk,
            number: None,
            start,
            size: dev.len(),
            type_id: None,
            type_name: Some("Linux software RAID array"),
            bootable: false,
            part_label: None,
            part_uuid: None,
            probe,
            probe_error,
            name: format!("md array {device}"),
            device: dev,
            extended: false,
            lv: None,
            stack: Some(StackId::Md {
                uuid: a.uuid_mdadm(),
                device,
                level: a.level_name(),
                metadata: a.metadata.to_string(),
                members: a.member_names(),
                writable: a.writable(),
            }),
        });
    }
}

/// Assemble the md arrays among `vols`, then open every LUKS volume among
/// them and the arrays that a key in `opts` is for.
pub(crate) fn open_stacked(vols: &[&Volume], opts: &OpenOptions) -> StackView {
    let mut view = StackView::default();
    open_md(vols, opts, &mut view);
    let arrays = std::mem::take(&mut view.volumes);
    let luks_opts = vmie_luks::Options::default();
    let candidates: Vec<&Volume> = vols.iter().copied().chain(arrays.iter()).collect();
    let mut payloads = Vec::new();
    for v in candidates {
        if v.probe.as_ref().map(|p| p.kind) != Some(FsKind::Luks) {
            continue;
        }
        let info = match vmie_luks::inspect(v.device.as_ref(), &luks_opts) {
            Ok(i) => i,
            Err(e) => {
                view.locked.push((v.name.clone(), e.to_string()));
                continue;
            }
        };
        // libguestfs's name for it, what --key selects and what the
        // decrypted device is named after.
        let device = guest_device(v);
        let keys: Vec<&KeySpec> = opts
            .keys
            .iter()
            .filter(|k| k.applies(device.as_deref(), &info.uuid))
            .collect();
        if keys.is_empty() {
            let selector = device.as_deref().unwrap_or(&info.uuid);
            view.locked.push((
                v.name.clone(),
                format!(
                    "LUKS{} encrypted (UUID {}); give its key with --key {}:key:PASSPHRASE or --key {}:file:FILE",
                    info.version,
                    info.uuid,
                    selector,
                    selector,
                ),
            ));
            continue;
        }
        let mut errors = Vec::new();
        let mut opened = None;
        for k in keys {
            match vmie_luks::open(v.device.clone(), &k.key, &luks_opts) {
                Ok(d) => {
                    opened = Some(d);
                    break;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let Some(dev) = opened else {
            errors.dedup();
            view.locked.push((v.name.clone(), errors.join("; ")));
            continue;
        };
        let dev: Arc<dyn Device> = Arc::new(dev);
        let (probe, probe_error) = match vmie_probe::probe(dev.as_ref(), &opts.probe) {
            Ok(p) => (p, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mapper = match &device {
            Some(d) => format!(
                "/dev/mapper/crypt{}",
                d.trim_start_matches("/dev/")
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
            ),
            None => format!("/dev/mapper/luks-{}", info.uuid),
        };
        payloads.push(Volume {
            disk: v.disk,
            number: None,
            // XTS and CBC keep every byte in place: payload byte i is
            // ciphertext byte `payload_offset + i` of the container.
            start: v.start.saturating_add(info.payload_offset),
            size: dev.len(),
            type_id: None,
            type_name: Some("LUKS payload"),
            bootable: false,
            part_label: None,
            part_uuid: None,
            probe,
            probe_error,
            name: format!("{} (LUKS{} payload)", v.name, info.version),
            device: dev,
            extended: false,
            lv: None,
            stack: Some(StackId::Luks {
                uuid: info.uuid.clone(),
                version: info.version,
                of: v.name.clone(),
                mapper,
            }),
        });
    }
    view.volumes = arrays;
    view.volumes.extend(payloads);
    view
}
