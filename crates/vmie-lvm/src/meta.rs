//! The volume-group model read from metadata text, checked for
//! consistency before anything is mapped through it.

use crate::text::{Section, Value};
use crate::LvmOptions;

/// Sector size of every LVM count (`extent_size`, `pe_start`, `stripe_size`).
const SECTOR: u64 = 512;

/// A volume group as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgMeta {
    /// VG name.
    pub name: String,
    /// VG UUID as LVM prints it (with dashes).
    pub uuid: String,
    /// Metadata sequence number: the highest copy wins.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// `status` flags.
    pub status: Vec<String>,
    /// Physical volumes.
    pub pvs: Vec<PvMeta>,
    /// Logical volumes (visible and hidden).
    pub lvs: Vec<LvMeta>,
}

/// A PV as the VG metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMeta {
    /// Key in the metadata (`pv0`).
    pub key: String,
    /// PV UUID with dashes.
    pub uuid: String,
    /// The device name the metadata last saw (`/dev/sda2`), a hint only.
    pub device_hint: Option<String>,
    /// Start of the first extent, in bytes from the PV's start.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
    /// Device size recorded, in bytes.
    pub dev_size: u64,
}

/// One segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegMeta {
    /// First logical extent.
    pub start_extent: u64,
    /// Number of extents.
    pub extent_count: u64,
    /// `type` (`striped`, `linear`, `thin`, `raid1`, …).
    pub seg_type: String,
    /// Stripe size in bytes (0 for one stripe).
    pub stripe_size: u64,
    /// (PV key or LV name, first extent) per stripe.
    pub stripes: Vec<(String, u64)>,
    /// Other LVs this segment names (origin, pool, images, …).
    pub refs: Vec<String>,
}

/// A logical volume as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMeta {
    /// LV name.
    pub name: String,
    /// LV UUID with dashes.
    pub uuid: String,
    /// `status` flags (`READ`, `WRITE`, `VISIBLE`).
    pub status: Vec<String>,
    /// Segments in extent order.
    pub segments: Vec<SegMeta>,
}

impl LvMeta {
    /// Whether the LV is a user-visible volume (not an internal sub-LV).
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }

    /// Extents over all segments.
    pub fn extents(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.extent_count))
    }

    /// Segment types as `lvs` shows them, in order, without repeats: a
    /// one-stripe `striped` segment is `linear`.
    pub fn seg_types(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.segments {
            let t = if s.seg_type == "striped" && s.stripes.len() == 1 {
                "linear".to_string()
            } else {
                s.seg_type.clone()
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

fn strs(sec: &Section, key: &str) -> Vec<String> {
    sec.str_list(key)
        .map(|l| l.into_iter().map(str::to_string).collect())
        .unwrap_or_default()
}

fn sectors(what: &str, n: u64) -> Result<u64, String> {
    n.checked_mul(SECTOR)
        .ok_or_else(|| format!("{what} = {n} sectors overflows"))
}

/// The VG of a parsed metadata text, checked: every LV's segments are
/// contiguous from extent 0, every stripe lies inside its PV's extents.
/// `Err` says what is wrong, for the caller to name where.
pub fn vg_from_text(top: &Section, opts: &LvmOptions) -> Result<VgMeta, String> {
    let mut vgs = top.sections();
    let (name, vg) = vgs
        .next()
        .ok_or("the metadata text has no volume group section")?;
    if vgs.next().is_some() {
        return Err("the metadata text has more than one volume group section".into());
    }
    let uuid = vg
        .str("id")
        .ok_or("the volume group has no id")?
        .to_string();
    let seqno = vg.uint("seqno").ok_or("the volume group has no seqno")?;
    let extent_sectors = vg
        .uint("extent_size")
        .filter(|&e| e > 0)
        .ok_or("the volume group has no extent_size")?;
    let extent_size = sectors("extent_size", extent_sectors)?;
    let mut pvs = Vec::new();
    if let Some(sec) = vg.section("physical_volumes") {
        for (key, pv) in sec.sections() {
            if pvs.len() >= opts.max_pvs {
                return Err(format!("more than {} physical volumes", opts.max_pvs));
            }
            let field = |k: &str| {
                pv.uint(k)
                    .ok_or_else(|| format!("physical volume {key} has no {k}"))
            };
            pvs.push(PvMeta {
                key: key.to_string(),
                uuid: pv
                    .str("id")
                    .ok_or_else(|| format!("physical volume {key} has no id"))?
                    .to_string(),
                device_hint: pv.str("device").map(str::to_string),
                pe_start: sectors("pe_start", field("pe_start")?)?,
                pe_count: field("pe_count")?,
                dev_size: pv
                    .uint("dev_size")
                    .map_or(Ok(0), |s| sectors("dev_size", s))?,
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(sec) = vg.section("logical_volumes") {
        for (lv_name, lv) in sec.sections() {
            if lvs.len() >= opts.max_lvs {
                return Err(format!("more than {} logical volumes", opts.max_lvs));
            }
            lvs.push(lv_from(lv_name, lv, &pvs, opts)?);
        }
    }
    Ok(VgMeta {
        name: name.to_string(),
        uuid,
        seqno,
        extent_size,
        status: strs(vg, "status"),
        pvs,
        lvs,
    })
}

fn lv_from(name: &str, lv: &Section, pvs: &[PvMeta], opts: &LvmOptions) -> Result<LvMeta, String> {
    let mut segments = Vec::new();
    for (key, seg) in lv.sections() {
        if !key.starts_with("segment") {
            continue;
        }
        if segments.len() >= opts.max_segments {
            return Err(format!(
                "logical volume {name} has more than {} segments",
                opts.max_segments
            ));
        }
        let field = |k: &str| {
            seg.uint(k)
                .ok_or_else(|| format!("logical volume {name} {key} has no {k}"))
        };
        let seg_type = seg
            .str("type")
            .ok_or_else(|| format!("logical volume {name} {key} has no type"))?
            .to_string();
        let mut stripes = Vec::new();
        if let Some(Value::List(l)) = seg.value("stripes") {
            for pair in l.chunks(2) {
                match pair {
                    [Value::Str(pv), Value::Int(ext)] => {
                        let ext = u64::try_from(*ext)
                            .map_err(|_| format!("logical volume {name} {key}: negative extent"))?;
                        stripes.push((pv.clone(), ext));
                    }
                    _ => {
                        return Err(format!(
                            "logical volume {name} {key}: stripes are not (name, extent) pairs"
                        ))
                    }
                }
            }
        }
        let mut refs = Vec::new();
        for k in [
            "origin",
            "cow_store",
            "merging_store",
            "thin_pool",
            "pool",
            "metadata",
            "cache_pool",
            "writecache",
            "integrity_meta",
            "vdo_pool",
        ] {
            if let Some(s) = seg.str(k) {
                refs.push(s.to_string());
            }
        }
        for k in ["mirrors", "raids", "raid0_lvs"] {
            refs.extend(strs(seg, k));
        }
        segments.push(SegMeta {
            start_extent: field("start_extent")?,
            extent_count: field("extent_count")?,
            stripe_size: sectors("stripe_size", seg.uint("stripe_size").unwrap_or(0))?,
            seg_type,
            stripes,
            refs,
        });
    }
    if segments.is_empty() {
        return Err(format!("logical volume {name} has no segments"));
    }
    segments.sort_by_key(|s| s.start_extent);
    let mut next = 0u64;
    for s in &segments {
        if s.start_extent != next {
            return Err(format!(
                "logical volume {name}: a segment starts at extent {} where {next} was expected (gap or overlap)",
                s.start_extent
            ));
        }
        if s.extent_count == 0 {
            return Err(format!("logical volume {name}: a segment of 0 extents"));
        }
        next = next
            .checked_add(s.extent_count)
            .ok_or_else(|| format!("logical volume {name}: extent count overflows"))?;
        if matches!(s.seg_type.as_str(), "striped" | "linear") {
            let n = s.stripes.len() as u64;
            if n == 0 {
                return Err(format!(
                    "logical volume {name}: a {} segment with no stripes",
                    s.seg_type
                ));
            }
            if s.extent_count % n != 0 {
                return Err(format!(
                    "logical volume {name}: {} extents do not divide into {n} stripes",
                    s.extent_count
                ));
            }
            if n > 1 && s.stripe_size == 0 {
                return Err(format!("logical volume {name}: {n} stripes of size 0"));
            }
            let per = s.extent_count / n;
            for (pv, start) in &s.stripes {
                let Some(p) = pvs.iter().find(|p| &p.key == pv) else {
                    return Err(format!(
                        "logical volume {name}: a stripe on {pv}, which is not a physical volume of the group"
                    ));
                };
                let end = start
                    .checked_add(per)
                    .ok_or_else(|| format!("logical volume {name}: extent overflow"))?;
                if end > p.pe_count {
                    return Err(format!(
                        "logical volume {name}: extents {start}..{end} lie past the end of {pv} ({} extents)",
                        p.pe_count
                    ));
                }
            }
        }
    }
    Ok(LvMeta {
        name: name.to_string(),
        uuid: lv.str("id").unwrap_or_default().to_string(),
        status: strs(lv, "status"),
        segments,
    })
}
