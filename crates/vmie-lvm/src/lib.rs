//! LVM2, read side: find physical volumes on a VM's disks, read their
//! metadata, assemble volume groups across disks, and give each logical
//! volume whose data can be mapped safely as a [`Device`] over the same
//! overlay as the partitions, so writes, dry runs and undo work unchanged.
//!
//! LVM metadata is never written. Only `linear` and `striped` segments are
//! mapped; every other segment type (thin, cache, raid, mirror, snapshot,
//! vdo, integrity), an origin with snapshots, and any LV of a group with a
//! missing PV is refused by name.
#![forbid(unsafe_code)]

mod device;
mod label;
pub mod meta;
pub mod text;

use std::sync::Arc;

use thiserror::Error;
use vmie_disk::{Device, DiskError};

pub use device::{LvDevice, SegmentMap};
pub use label::{format_uuid, read_area, read_label, PvLabel};
pub use meta::{LvMeta, PvMeta, SegMeta, VgMeta};

/// Limits on what hostile metadata may make us read or allocate.
#[derive(Debug, Clone, Copy)]
pub struct LvmOptions {
    /// Largest metadata text read from one area (lvm2's default area is
    /// 1 MiB; `--metadatasize` can make it larger).
    pub max_metadata: u64,
    /// Metadata texts read by one scan, all PVs together.
    pub max_total_metadata: u64,
    /// Metadata areas read per PV (lvm2 keeps at most 2: one at the start
    /// of the PV, one at its end).
    pub max_areas_per_pv: usize,
    /// Physical volumes in one group.
    pub max_pvs: usize,
    /// Logical volumes in one group.
    pub max_lvs: usize,
    /// Segments of one LV.
    pub max_segments: usize,
    /// Text parser limits.
    pub text: text::TextLimits,
}

impl Default for LvmOptions {
    fn default() -> Self {
        Self {
            max_metadata: 16 << 20,
            max_total_metadata: 64 << 20,
            max_areas_per_pv: 2,
            max_pvs: 1024,
            max_lvs: 4096,
            max_segments: 65_536,
            text: text::TextLimits::default(),
        }
    }
}

/// What can go wrong reading LVM.
#[derive(Debug, Error)]
pub enum LvmError {
    /// Disk layer.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A label, header or metadata text that is damaged.
    #[error("{what}: LVM metadata at offset {offset}: {why}")]
    Corrupt {
        /// The device or area.
        what: String,
        /// Byte offset on the device.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A logical volume we will not open.
    #[error("logical volume {vg}/{lv}: {why}")]
    Refused {
        /// VG name.
        vg: String,
        /// LV name.
        lv: String,
        /// Why, naming the segment type or the missing PV.
        why: String,
    },
}

impl LvmError {
    /// Whether this refuses the input (as opposed to an I/O failure).
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Disk(e) => e.is_refusal(),
            _ => true,
        }
    }
}

/// A PV found on one of the devices handed to [`scan`].
#[derive(Debug, Clone)]
pub struct FoundPv {
    /// Index of the device in the slice handed to [`scan`].
    pub device: usize,
    /// Its label.
    pub label: PvLabel,
}

/// A PV the VG metadata names but no device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPv {
    /// PV UUID with dashes.
    pub uuid: String,
    /// The device name the metadata last saw.
    pub device_hint: Option<String>,
}

impl MissingPv {
    /// `UUID (last seen as /dev/sdb1)`, for messages.
    pub fn describe(&self) -> String {
        match &self.device_hint {
            Some(h) => format!("{} (last seen as {h})", self.uuid),
            None => self.uuid.clone(),
        }
    }
}

/// The missing PVs of a group, for messages: `A (last seen as …), B`.
pub fn describe_missing(missing: &[MissingPv]) -> String {
    missing
        .iter()
        .map(MissingPv::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A volume group assembled from the PVs found.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// Its metadata (the copy with the highest seqno).
    pub meta: VgMeta,
    /// For each PV of `meta.pvs`, the device index it was found on.
    pub pv_devices: Vec<Option<usize>>,
    /// PVs the metadata names that no given disk holds.
    pub missing: Vec<MissingPv>,
}

/// What [`scan`] found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every PV label found.
    pub pvs: Vec<FoundPv>,
    /// Volume groups, in the order their first PV was found.
    pub vgs: Vec<VolumeGroup>,
    /// Damaged labels or metadata, and disagreements, one sentence each.
    pub problems: Vec<String>,
}

/// The whole LVM picture of `devs` (partitions and whole disks of a VM):
/// every PV label, every VG with its metadata, which PVs are missing.
/// Damaged metadata is reported in `problems`, never a panic.
pub fn scan(devs: &[Arc<dyn Device>], opts: &LvmOptions) -> Scan {
    let mut out = Scan::default();
    // (device index, vg) per readable metadata copy.
    let mut copies: Vec<(usize, VgMeta)> = Vec::new();
    let mut budget = opts.max_total_metadata;
    for (i, dev) in devs.iter().enumerate() {
        let label = match read_label(dev.as_ref()) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        if label.metadata_areas.len() > opts.max_areas_per_pv {
            out.problems.push(format!(
                "{}: the PV header lists {} metadata areas; only the first {} are read",
                dev.describe(),
                label.metadata_areas.len(),
                opts.max_areas_per_pv
            ));
        }
        for &area in label.metadata_areas.iter().take(opts.max_areas_per_pv) {
            let area_opts = LvmOptions {
                max_metadata: opts.max_metadata.min(budget),
                ..*opts
            };
            let text = match read_area(dev.as_ref(), area, &area_opts) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    out.problems.push(e.to_string());
                    continue;
                }
            };
            budget = budget.saturating_sub(text.len() as u64);
            let parsed = text::parse(&text, opts.text)
                .map_err(|e| e.to_string())
                .and_then(|top| meta::vg_from_text(&top, opts));
            match parsed {
                Ok(vg) => copies.push((i, vg)),
                Err(why) => out.problems.push(format!(
                    "{}: LVM metadata text in the area at {}: {why}",
                    dev.describe(),
                    area.0
                )),
            }
        }
        out.pvs.push(FoundPv { device: i, label });
    }
    // One VG per UUID: the copy with the highest seqno.
    let mut uuids: Vec<&str> = Vec::new();
    for (_, vg) in &copies {
        if !uuids.contains(&vg.uuid.as_str()) {
            uuids.push(&vg.uuid);
        }
    }
    for uuid in uuids {
        let mine: Vec<&(usize, VgMeta)> = copies.iter().filter(|(_, v)| v.uuid == uuid).collect();
        let Some(best) = mine.iter().map(|(_, v)| v).max_by_key(|v| v.seqno) else {
            continue;
        };
        if mine.iter().any(|(_, v)| v.seqno == best.seqno && v != best) {
            out.problems.push(format!(
                "volume group {} ({uuid}): two metadata copies with seqno {} disagree; its logical volumes are not opened",
                best.name, best.seqno
            ));
            continue;
        }
        let mut pv_devices = Vec::new();
        let mut missing = Vec::new();
        let mut dup = None;
        for pv in &best.pvs {
            let want: String = pv.uuid.chars().filter(|c| *c != '-').collect();
            let on: Vec<usize> = out
                .pvs
                .iter()
                .filter(|f| f.label.uuid == want)
                .map(|f| f.device)
                .collect();
            if on.len() > 1 {
                dup = Some(pv.uuid.clone());
            }
            if on.is_empty() {
                missing.push(MissingPv {
                    uuid: pv.uuid.clone(),
                    device_hint: pv.device_hint.clone(),
                });
            }
            pv_devices.push(on.first().copied());
        }
        if let Some(d) = dup {
            out.problems.push(format!(
                "volume group {} ({uuid}): PV {d} is on more than one of the given disks (the same disk twice, or a copy); its logical volumes are not opened",
                best.name
            ));
            continue;
        }
        out.vgs.push(VolumeGroup {
            meta: best.clone(),
            pv_devices,
            missing,
        });
    }
    out
}

/// Segment types whose data is a plain map of extents onto PVs.
fn mappable(seg_type: &str) -> bool {
    matches!(seg_type, "striped" | "linear")
}

impl VolumeGroup {
    /// The visible logical volumes.
    pub fn visible_lvs(&self) -> impl Iterator<Item = &LvMeta> {
        self.meta.lvs.iter().filter(|l| l.visible())
    }

    /// LV size in bytes.
    pub fn lv_size(&self, lv: &LvMeta) -> u64 {
        lv.extents().saturating_mul(self.meta.extent_size)
    }

    /// Why `lv` cannot be opened, if it cannot.
    pub fn refusal(&self, lv: &LvMeta) -> Option<String> {
        if !self.missing.is_empty() {
            return Some(format!(
                "its volume group is missing physical volume(s) {}: give every disk of the VM",
                describe_missing(&self.missing)
            ));
        }
        if let Some(s) = lv.segments.iter().find(|s| !mappable(&s.seg_type)) {
            let kind = match s.seg_type.as_str() {
                "thin" | "thin-pool" => "thin provisioning",
                "cache" | "cache-pool" | "writecache" => "a cache (data may be in the cache only)",
                "snapshot" => "an old-style snapshot",
                "mirror" => "an old-style mirror",
                t if t.starts_with("raid") => "RAID (every leg would have to be written)",
                "vdo" | "vdo-pool" => "VDO compression and deduplication",
                "integrity" => "dm-integrity",
                _ => "a segment type vmie-fixup does not map",
            };
            return Some(format!(
                "segment type {} ({kind}) is not supported",
                s.seg_type
            ));
        }
        if let Some(s) = self.meta.lvs.iter().find(|o| {
            o.segments
                .iter()
                .any(|s| s.seg_type == "snapshot" && s.refs.first() == Some(&lv.name))
        }) {
            return Some(format!(
                "it is the origin of snapshot {}: writing it would corrupt the snapshot",
                s.name
            ));
        }
        if let Some((pv, _)) = lv
            .segments
            .iter()
            .flat_map(|s| &s.stripes)
            .find(|(pv, _)| !self.meta.pvs.iter().any(|p| &p.key == pv))
        {
            return Some(format!(
                "a segment is stacked on {pv}, not on a physical volume"
            ));
        }
        None
    }

    /// `lv` as a device over the PV devices (`devs` is the slice handed
    /// to [`scan`]). Refused as [`VolumeGroup::refusal`] says, and when a
    /// PV's extents lie past the end of its device.
    pub fn open(&self, lv: &LvMeta, devs: &[Arc<dyn Device>]) -> Result<LvDevice, LvmError> {
        let refused = |why: String| LvmError::Refused {
            vg: self.meta.name.clone(),
            lv: lv.name.clone(),
            why,
        };
        if let Some(why) = self.refusal(lv) {
            return Err(refused(why));
        }
        let ext = self.meta.extent_size;
        let mut segs = Vec::new();
        for s in &lv.segments {
            let n = s.stripes.len() as u64;
            let per = s.extent_count / n.max(1);
            let area_len = per
                .checked_mul(ext)
                .ok_or_else(|| refused("segment size overflows".into()))?;
            let mut stripes = Vec::new();
            for (key, start) in &s.stripes {
                let idx = self
                    .meta
                    .pvs
                    .iter()
                    .position(|p| &p.key == key)
                    .ok_or_else(|| refused(format!("no PV {key}")))?;
                let pv = &self.meta.pvs[idx];
                let dev = self
                    .pv_devices
                    .get(idx)
                    .copied()
                    .flatten()
                    .and_then(|d| devs.get(d))
                    .ok_or_else(|| refused(format!("PV {} is missing", pv.uuid)))?;
                let at = start
                    .checked_mul(ext)
                    .and_then(|o| o.checked_add(pv.pe_start))
                    .ok_or_else(|| refused("extent offset overflows".into()))?;
                let end = at
                    .checked_add(area_len)
                    .ok_or_else(|| refused("extent offset overflows".into()))?;
                if end > dev.len() {
                    return Err(refused(format!(
                        "segment at extent {} maps to bytes {at}..{end} of {}, which has only {} bytes",
                        s.start_extent,
                        dev.describe(),
                        dev.len()
                    )));
                }
                stripes.push((dev.clone(), at));
            }
            let start = s
                .start_extent
                .checked_mul(ext)
                .ok_or_else(|| refused("segment start overflows".into()))?;
            let len = s
                .extent_count
                .checked_mul(ext)
                .ok_or_else(|| refused("segment size overflows".into()))?;
            let stripe_size = if n > 1 { s.stripe_size } else { len };
            if stripe_size == 0 || area_len % stripe_size != 0 {
                return Err(refused(format!(
                    "segment at extent {}: stripe size {} does not divide its {area_len}-byte stripes",
                    s.start_extent, s.stripe_size
                )));
            }
            segs.push(device::Mapped {
                start,
                len,
                stripe_size,
                stripes,
            });
        }
        LvDevice::new(format!("{}/{}", self.meta.name, lv.name), segs).map_err(refused)
    }
}

/// `/dev/mapper/` name of an LV: hyphens in VG and LV names doubled.
pub fn mapper_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapper_names_double_hyphens() {
        assert_eq!(mapper_name("rhel", "root"), "rhel-root");
        assert_eq!(
            mapper_name("ubuntu-vg", "ubuntu-lv"),
            "ubuntu--vg-ubuntu--lv"
        );
    }
}
