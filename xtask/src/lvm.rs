//! LVM2 test images made by the real LVM tools (`cargo xtask lvm`, and
//! [`fixture()`] for tests).
//!
//! Each fixture is one or more raw disks in `target/fixtures/lvm/NAME/`
//! (`disk0.raw`, `disk1.raw`, …) and `manifest.json`: every VG with its PVs
//! (disk, byte offset, `pe_start`) and every LV with its segments and the
//! exact byte mapping `lv_offset → (disk, disk_offset, len)`, computed from
//! what `pvs`/`lvs` report (never from our own reading of the metadata), and
//! the filesystem written into it (kind, UUID, label, SHA-256 of its bytes).
//!
//! The kernel here need not have device-mapper: PVs are loop devices
//! (`losetup -o OFFSET --sizelimit SIZE` for a partition), LVs are created
//! with `-an -Zn --driverloaded n` (metadata only), and every filesystem is
//! made in a scratch file and copied to the disk bytes the LV maps to (for a
//! striped LV, stripe by stripe). Every LVM command runs with its own
//! `LVM_SYSTEM_DIR`, whose `lvm.conf` accepts only this build's loop devices
//! and keeps no backups, archives, hints or devices file, so the host's LVM
//! state and concurrent builds are never seen or changed. Thin pools and
//! raid1 LVs cannot be created without device-mapper, so their metadata is
//! written by `vgcfgrestore --force` from the VG's own `vgcfgbackup` text
//! with those LVs added.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fixtures::{self, image, tools};

/// Bump to rebuild every LVM fixture (this file's text is hashed too).
const STAMP_VERSION: &str = "vmie-lvm-fixtures-1";

const MIB: u64 = 1 << 20;

/// The fixtures: name and what it holds.
pub const NAMES: &[(&str, &str)] = &[
    (
        "lvm-single",
        "MBR disk: p1 ext4 /boot, p2 (8e) PV of vgtest with LVs root (ext4) and swap",
    ),
    (
        "lvm-rhel8",
        "RHEL 8 as anaconda lays it out on LVM, as a VMware export leaves it: p1 ext4 /boot (BLS, grubenv kernelopts root=/dev/mapper/rhel-root), p2 PV of VG rhel with LVs root (ext4, the rhel8-root tree; fstab names /boot as /dev/sda1) and swap",
    ),
    (
        "lvm-rhel8-xfs",
        "lvm-rhel8 with its root LV on XFS, as RHEL 8's installer formats it (CRC, finobt, sparse inodes, reflink; made by mkfs.xfs -p)",
    ),
    (
        "lvm-span",
        "two whole-disk PVs, VG vgspan, LV data (ext4) spanning both",
    ),
    (
        "lvm-striped",
        "two whole-disk PVs, VG vgstripe, LV stripes (-i 2 -I 64k, ext4)",
    ),
    (
        "lvm-wrapped",
        "one PV with a 16 KiB metadata area whose committed copy wraps around its end; LV survivor (ext4)",
    ),
    (
        "lvm-thin",
        "VG vgthin with a thin pool and thin LV thinvol (metadata only, no filesystem)",
    ),
    (
        "lvm-samename",
        "two disks, each its own VG named vgdup (different UUIDs), one ext4 LV each",
    ),
    (
        "lvm-raid1",
        "two PVs, VG vgraid, raid1 LV mirror (ext4 in both images) written by vgcfgrestore",
    ),
];

// ---------------------------------------------------------------------------
// manifest.json

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// `lvm version`'s first line.
    pub lvm_version: String,
    pub disks: Vec<DiskInfo>,
    pub vgs: Vec<Vg>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskInfo {
    /// File name next to manifest.json.
    pub file: String,
    pub size: u64,
    /// "dos" or "none".
    pub table: String,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Partition {
    pub number: u32,
    /// Bytes.
    pub start: u64,
    pub size: u64,
    /// MBR type without 0x: "83", "8e".
    #[serde(rename = "type")]
    pub ptype: String,
    pub filesystem: Option<Filesystem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vg {
    pub name: String,
    /// As LVM prints it (6-4-4-4-4-4-6).
    pub uuid: String,
    /// Bytes.
    pub extent_size: u64,
    pub seqno: u64,
    pub pvs: Vec<Pv>,
    pub lvs: Vec<Lv>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pv {
    pub uuid: String,
    /// Index into `disks`.
    pub disk: usize,
    /// Byte offset of the PV (its sector 0) on the disk.
    pub offset: u64,
    /// Bytes of the disk the PV covers.
    pub size: u64,
    /// Bytes from the PV's start to its first extent.
    pub pe_start: u64,
    pub pe_count: u64,
    /// The first metadata area, as found in the image after the build.
    pub mda: Option<MdaInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MdaInfo {
    /// Byte offset of the mda_header on the disk.
    pub disk_offset: u64,
    /// The area's size (mda_header.size).
    pub size: u64,
    /// `raw_locn[0]` (the committed copy): offset into the area and length.
    pub text_offset: u64,
    pub text_size: u64,
    /// text_offset + text_size > size: the text continues after the header.
    pub wraps: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lv {
    pub name: String,
    pub uuid: String,
    /// A sub-LV (`lvs -a` shows it in brackets: `_tdata`, `_rimage_0`, …).
    pub hidden: bool,
    /// Bytes.
    pub size: u64,
    pub segments: Vec<Segment>,
    /// Where every byte of the LV is: sorted by `lv_offset`, contiguous runs
    /// merged. Empty for LVs not made of PV extents (thin, thin-pool, raid1:
    /// see `segments[].areas`).
    pub mapping: Vec<Extent>,
    pub filesystem: Option<Filesystem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    /// Bytes into the LV.
    pub start: u64,
    pub size: u64,
    /// `lvs` segtype: "linear", "striped", "thin", "thin-pool", "raid1", …
    #[serde(rename = "type")]
    pub segtype: String,
    pub stripes: u32,
    /// Bytes; 0 unless striped.
    pub stripe_size: u64,
    pub areas: Vec<Area>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Area {
    /// The PV's UUID, for an area of physical extents.
    pub pv: Option<String>,
    /// The sub-LV's name, for an area of another LV (thin pool, raid).
    pub lv: Option<String>,
    /// First and last extent (inclusive) of the PV or sub-LV.
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Extent {
    pub lv_offset: u64,
    pub disk: usize,
    pub disk_offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Filesystem {
    /// "ext4" or "swap".
    pub kind: String,
    pub uuid: String,
    pub label: Option<String>,
    /// Bytes of the filesystem image (the LV or partition size).
    pub size: u64,
    /// SHA-256 of those bytes, to compare with what the mapping reads back.
    pub sha256: String,
}

/// A built fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub dir: PathBuf,
    pub disks: Vec<PathBuf>,
    pub manifest: Manifest,
}

impl Manifest {
    /// The LV `vg/lv` (the first VG of that name).
    pub fn lv(&self, vg: &str, lv: &str) -> Option<&Lv> {
        self.vgs
            .iter()
            .filter(|v| v.name == vg)
            .flat_map(|v| &v.lvs)
            .find(|l| l.name == lv)
    }
}

// ---------------------------------------------------------------------------
// loop devices and an isolated LVM

/// A loop device, detached on drop.
#[derive(Debug)]
pub struct Loop {
    pub dev: String,
}

impl Loop {
    /// `losetup -f --show -o OFFSET --sizelimit SIZE FILE`.
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<Loop> {
        let out = tools::run(
            Command::new("losetup")
                .args(["-f", "--show", "-o"])
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(size.to_string())
                .arg(file),
            None,
        )?;
        let dev = String::from_utf8(out.stdout)?.trim().to_string();
        ensure!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Ok(Loop { dev })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Where a PV lies: disk index, file, byte offset and size.
#[derive(Debug, Clone)]
pub struct PvPlace {
    pub disk: usize,
    pub file: PathBuf,
    pub offset: u64,
    pub size: u64,
}

/// LVM confined to a set of loop devices: its own `LVM_SYSTEM_DIR` whose
/// filter accepts only them, no backups/archives/hints/devices file, its own
/// locking directory. Loops are detached when it is dropped.
#[derive(Debug)]
pub struct LvmEnv {
    dir: PathBuf,
    places: Vec<PvPlace>,
    loops: Vec<Loop>,
}

impl LvmEnv {
    /// Attaches a loop device for every place and writes `dir/lvm.conf`.
    pub fn new(dir: &Path, places: &[PvPlace]) -> Result<LvmEnv> {
        fs::create_dir_all(dir.join("lock"))?;
        let mut loops = Vec::new();
        for p in places {
            loops.push(Loop::attach(&p.file, p.offset, p.size)?);
        }
        let mut filter = String::new();
        for l in &loops {
            write!(filter, "\"a|^{}$|\", ", l.dev)?;
        }
        let conf = format!(
            "devices {{\n  filter = [ {filter}\"r|.*|\" ]\n  global_filter = [ {filter}\"r|.*|\" ]\n  \
             use_devicesfile = 0\n  obtain_device_list_from_udev = 0\n  hints = \"none\"\n}}\n\
             backup {{\n  backup = 0\n  archive = 0\n}}\n\
             global {{\n  locking_dir = \"{}\"\n  use_lvmlockd = 0\n}}\n\
             activation {{\n  udev_sync = 0\n  udev_rules = 0\n  monitoring = 0\n}}\n",
            tools::plain_path(&dir.join("lock"))?
        );
        fs::write(dir.join("lvm.conf"), conf)?;
        Ok(LvmEnv {
            dir: dir.to_path_buf(),
            places: places.to_vec(),
            loops,
        })
    }

    /// The loop device of place `i`.
    pub fn dev(&self, i: usize) -> &str {
        &self.loops[i].dev
    }

    /// `lvm ARGS` in this environment; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = tools::run(
            Command::new("lvm")
                .args(args)
                .env("LVM_SYSTEM_DIR", &self.dir)
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .env("LC_ALL", "C"),
            None,
        )?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `lvm CMD --reportformat json --units b --nosuffix ARGS`: the rows of
    /// the report's `key` ("pv", "vg", "lv", "seg").
    pub fn report(&self, cmd: &str, key: &str, args: &[&str]) -> Result<Vec<serde_json::Value>> {
        let mut a = vec![cmd, "--reportformat", "json", "--units", "b", "--nosuffix"];
        a.extend(args);
        let text = self.run(&a)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("lvm {cmd} JSON: {text}"))?;
        let mut rows = Vec::new();
        for r in v["report"].as_array().context("no report")? {
            if let Some(a) = r[key].as_array() {
                rows.extend(a.iter().cloned());
            }
        }
        Ok(rows)
    }

    /// The `lvs -a` rows, one per segment, with the fields the mapping is
    /// computed from.
    pub fn lvs_rows(&self) -> Result<Vec<serde_json::Value>> {
        self.report(
            "lvs",
            "lv",
            &[
                "--driverloaded",
                "n",
                "-a",
                "-o",
                "vg_name,vg_uuid,lv_name,lv_uuid,lv_size,segtype,seg_start,seg_size,seg_pe_ranges,stripes,stripe_size",
            ],
        )
    }

    /// Every VG these loop devices hold, as `pvs`, `vgs` and `lvs` report it.
    pub fn describe(&self) -> Result<Vec<Vg>> {
        let pvs = self.report(
            "pvs",
            "pv",
            &[
                "-o",
                "pv_name,pv_uuid,pe_start,dev_size,pv_pe_count,vg_uuid",
            ],
        )?;
        let vgs = self.report(
            "vgs",
            "vg",
            &["-o", "vg_name,vg_uuid,vg_extent_size,vg_seqno"],
        )?;
        let segs = self.lvs_rows()?;
        let s = |v: &serde_json::Value, k: &str| -> Result<String> {
            Ok(v[k]
                .as_str()
                .with_context(|| format!("no {k} in {v}"))?
                .to_string())
        };
        let n = |v: &serde_json::Value, k: &str| -> Result<u64> {
            let t = s(v, k)?;
            t.parse::<u64>()
                .with_context(|| format!("{k} = {t:?} is not a number"))
        };
        let mut out = Vec::new();
        for vg in &vgs {
            let vg_uuid = s(vg, "vg_uuid")?;
            let extent = n(vg, "vg_extent_size")?;
            // pv_name -> (uuid, disk, disk offset of the first extent)
            let mut pv_list = Vec::new();
            let mut by_dev = Vec::new();
            for p in pvs
                .iter()
                .filter(|p| p["vg_uuid"].as_str() == Some(&vg_uuid))
            {
                let dev = s(p, "pv_name")?;
                let i = self
                    .loops
                    .iter()
                    .position(|l| l.dev == dev)
                    .with_context(|| format!("pvs names {dev}, not one of ours"))?;
                let place = &self.places[i];
                let pv = Pv {
                    uuid: s(p, "pv_uuid")?,
                    disk: place.disk,
                    offset: place.offset,
                    size: n(p, "dev_size")?,
                    pe_start: n(p, "pe_start")?,
                    pe_count: n(p, "pv_pe_count")?,
                    mda: read_mda(&place.file, place.offset)?,
                };
                by_dev.push((dev, pv.clone()));
                pv_list.push(pv);
            }
            // pvs lists by device name, and loop device numbers depend on
            // what else holds loops at the time: order by place instead.
            pv_list.sort_by_key(|p| (p.disk, p.offset));
            let mut lvs: Vec<Lv> = Vec::new();
            for r in segs
                .iter()
                .filter(|r| r["vg_uuid"].as_str() == Some(&vg_uuid))
            {
                let raw_name = s(r, "lv_name")?;
                let hidden = raw_name.starts_with('[');
                let name = raw_name.trim_matches(|c| c == '[' || c == ']').to_string();
                let seg = Segment {
                    start: n(r, "seg_start")?,
                    size: n(r, "seg_size")?,
                    segtype: s(r, "segtype")?,
                    stripes: u32::try_from(n(r, "stripes")?)?,
                    stripe_size: n(r, "stripe_size")?,
                    areas: parse_areas(&s(r, "seg_pe_ranges")?, &by_dev)?,
                };
                let uuid = s(r, "lv_uuid")?;
                let size = n(r, "lv_size")?;
                match lvs.iter_mut().find(|l| l.uuid == uuid) {
                    Some(l) => l.segments.push(seg),
                    None => lvs.push(Lv {
                        name,
                        uuid,
                        hidden,
                        size,
                        segments: vec![seg],
                        mapping: Vec::new(),
                        filesystem: None,
                    }),
                }
            }
            for l in &mut lvs {
                l.segments.sort_by_key(|s| s.start);
                l.mapping = mapping(l, extent, &pv_list)?;
            }
            lvs.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(Vg {
                name: s(vg, "vg_name")?,
                uuid: vg_uuid,
                extent_size: extent,
                seqno: n(vg, "vg_seqno")?,
                pvs: pv_list,
                lvs,
            });
        }
        Ok(out)
    }
}

/// "/dev/loop3:0-1 /dev/loop4:0-1" or "pool_tdata:0-1".
fn parse_areas(ranges: &str, by_dev: &[(String, Pv)]) -> Result<Vec<Area>> {
    let mut out = Vec::new();
    for word in ranges.split_whitespace() {
        let (name, range) = word
            .rsplit_once(':')
            .with_context(|| format!("PE range {word:?}"))?;
        let (a, b) = range
            .split_once('-')
            .with_context(|| format!("PE range {word:?}"))?;
        let (first, last) = (a.parse()?, b.parse()?);
        let pv = by_dev.iter().find(|(d, _)| d == name).map(|(_, p)| p);
        out.push(Area {
            pv: pv.map(|p| p.uuid.clone()),
            lv: match pv {
                Some(_) => None,
                None if name.starts_with("/dev/") => bail!("PE range on unknown device {name}"),
                None => Some(name.trim_matches(|c| c == '[' || c == ']').to_string()),
            },
            first,
            last,
        });
    }
    Ok(out)
}

/// The byte mapping of a linear or striped LV from its segments; empty when
/// any segment is something else or lies on another LV.
fn mapping(lv: &Lv, extent: u64, pvs: &[Pv]) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    let mut push = |e: Extent| match out.last_mut() {
        Some(l)
            if l.disk == e.disk
                && l.lv_offset + l.len == e.lv_offset
                && l.disk_offset + l.len == e.disk_offset =>
        {
            l.len += e.len
        }
        _ => out.push(e),
    };
    for seg in &lv.segments {
        if !matches!(seg.segtype.as_str(), "linear" | "striped")
            || seg.areas.iter().any(|a| a.pv.is_none())
        {
            return Ok(Vec::new());
        }
        let n = seg.areas.len() as u64;
        ensure!(
            n == u64::from(seg.stripes) && n > 0,
            "{}: {} areas for {} stripes",
            lv.name,
            n,
            seg.stripes
        );
        let starts = seg
            .areas
            .iter()
            .map(|a| {
                let pv = pvs
                    .iter()
                    .find(|p| Some(&p.uuid) == a.pv.as_ref())
                    .context("area on a PV of another VG")?;
                ensure!(
                    (a.last + 1 - a.first) * extent * n == seg.size,
                    "{}: area of {} extents in a segment of {} bytes",
                    lv.name,
                    a.last + 1 - a.first,
                    seg.size
                );
                Ok((pv.disk, pv.offset + pv.pe_start + a.first * extent))
            })
            .collect::<Result<Vec<_>>>()?;
        if n == 1 {
            push(Extent {
                lv_offset: seg.start,
                disk: starts[0].0,
                disk_offset: starts[0].1,
                len: seg.size,
            });
            continue;
        }
        let chunk = seg.stripe_size;
        ensure!(
            chunk > 0 && seg.size % (chunk * n) == 0,
            "{}: striped segment of {} bytes, stripe size {chunk}",
            lv.name,
            seg.size
        );
        for k in 0..seg.size / chunk {
            let (disk, base) = starts[(k % n) as usize];
            push(Extent {
                lv_offset: seg.start + k * chunk,
                disk,
                disk_offset: base + (k / n) * chunk,
                len: chunk,
            });
        }
    }
    let total: u64 = out.iter().map(|e| e.len).sum();
    ensure!(
        total == lv.size,
        "{}: mapping covers {total} of {} bytes",
        lv.name,
        lv.size
    );
    Ok(out)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The first metadata area of the PV at `offset` of `file`, from its
/// label's pv_header and the mda_header (only for the wrap check and the
/// manifest; the mapping comes from `lvs`).
pub fn read_mda(file: &Path, offset: u64) -> Result<Option<MdaInfo>> {
    // The label is in one of the first four sectors.
    let head = image::read_at(file, offset, 2048)?;
    let Some(sector) = (0..4).find(|s| &head[s * 512..s * 512 + 8] == b"LABELONE") else {
        bail!("no LVM label at {offset} of {}", file.display());
    };
    let label = &head[sector * 512..sector * 512 + 512];
    let pvh = usize::try_from(u32::from_le_bytes([
        label[20], label[21], label[22], label[23],
    ]))?;
    ensure!(pvh + 48 <= 512, "pv_header offset {pvh}");
    // uuid[32], device_size, then data areas and metadata areas, each list
    // ended by a zero entry.
    let mut at = pvh + 40;
    let mut lists = 0;
    let mut mda = None;
    while at + 16 <= 512 && lists < 2 {
        let (off, size) = (le64(label, at), le64(label, at + 8));
        at += 16;
        if off == 0 {
            lists += 1;
        } else if lists == 1 && mda.is_none() {
            mda = Some((off, size));
        }
    }
    let Some((mda_off, _)) = mda else {
        return Ok(None);
    };
    let h = image::read_at(file, offset + mda_off, 512)?;
    ensure!(
        &h[4..20] == b" LVM2 x[5A%r0N*>",
        "no mda_header at {}",
        offset + mda_off
    );
    let size = le64(&h, 32);
    let (text_offset, text_size) = (le64(&h, 40), le64(&h, 48));
    Ok(Some(MdaInfo {
        disk_offset: offset + mda_off,
        size,
        text_offset,
        text_size,
        wraps: text_offset + text_size > size,
    }))
}

// ---------------------------------------------------------------------------
// filesystems

/// A deterministic, incompressible byte pattern (xorshift64).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A small data tree: `/hello` naming the fixture and `/blob`, `blob_len`
/// bytes of pattern (so file data, not just metadata, crosses stripes and
/// PVs).
fn data_tree(dir: &Path, name: &str, blob_len: usize) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("hello"), format!("{name}\n"))?;
    fs::write(dir.join("blob"), pattern(blob_len, 0x5eed_1ab5))?;
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// ext4 of `size` bytes from `tree` in `file`, checked by e2fsck.
fn make_ext4(file: &Path, size: u64, tree: &Path, uuid: &str, label: &str) -> Result<Filesystem> {
    image::create_sparse(file, size)?;
    tools::run(
        Command::new("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args(["-q", "-F", "-t", "ext4", "-g", "8192", "-d"])
            .arg(tree)
            .args(["-U", uuid, "-L", label, "-E"])
            .arg(format!("hash_seed={uuid},root_owner=0:0"))
            .arg(file),
        None,
    )?;
    tools::run(Command::new("e2fsck").arg("-fn").arg(file), None)?;
    Ok(Filesystem {
        kind: "ext4".into(),
        uuid: uuid.into(),
        label: Some(label.into()),
        size,
        sha256: sha256_file(file)?,
    })
}

fn make_swap(file: &Path, size: u64, uuid: &str, label: &str) -> Result<Filesystem> {
    image::create_sparse(file, size)?;
    tools::run(
        Command::new("mkswap")
            .args(["-q", "-U", uuid, "-L", label])
            .arg(file),
        None,
    )?;
    Ok(Filesystem {
        kind: "swap".into(),
        uuid: uuid.into(),
        label: Some(label.into()),
        size,
        sha256: sha256_file(file)?,
    })
}

pub fn sha256_file(file: &Path) -> Result<String> {
    let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Copies `scratch` (the LV's bytes) to the disks by `map`, skipping
/// all-zero 64 KiB blocks (the disks are fresh sparse files and LVs were
/// created with -Zn, so those bytes are zero already).
pub fn scatter(scratch: &Path, map: &[Extent], disks: &[PathBuf]) -> Result<()> {
    let mut src = File::open(scratch)?;
    let mut outs = disks
        .iter()
        .map(|d| OpenOptions::new().write(true).open(d))
        .collect::<std::io::Result<Vec<_>>>()?;
    let block = image::BLOCK as u64;
    let mut buf = vec![0u8; image::BLOCK];
    for e in map {
        let mut done = 0;
        while done < e.len {
            let n = (e.len - done).min(block);
            let b = &mut buf[..usize::try_from(n)?];
            src.seek(SeekFrom::Start(e.lv_offset + done))?;
            src.read_exact(b)?;
            if b.iter().any(|&x| x != 0) {
                let out = &mut outs[e.disk];
                out.seek(SeekFrom::Start(e.disk_offset + done))?;
                out.write_all(b)?;
            }
            done += n;
        }
    }
    Ok(())
}

/// Reads an LV's bytes through `map` and returns their SHA-256 (what
/// [`Filesystem::sha256`] must equal).
pub fn sha256_mapped(map: &[Extent], disks: &[PathBuf]) -> Result<String> {
    let mut files = disks
        .iter()
        .map(File::open)
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut next = 0;
    for e in map {
        ensure!(e.lv_offset == next, "mapping has a gap at {next}");
        let f = &mut files[e.disk];
        f.seek(SeekFrom::Start(e.disk_offset))?;
        let mut left = e.len;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64))?;
            f.read_exact(&mut buf[..n])?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        next += e.len;
    }
    Ok(format!("{:x}", h.finalize()))
}

// ---------------------------------------------------------------------------
// building

/// What a layout builder has to work with.
struct Ctx {
    name: &'static str,
    work: PathBuf,
    disks: Vec<PathBuf>,
    infos: Vec<DiskInfo>,
}

impl Ctx {
    fn disk(&mut self, size: u64, sfdisk: Option<&str>) -> Result<usize> {
        let i = self.disks.len();
        let file = format!("disk{i}.raw");
        let path = self.work.join(&file);
        image::create_sparse(&path, size)?;
        let mut partitions = Vec::new();
        if let Some(script) = sfdisk {
            tools::run(
                Command::new("sfdisk")
                    .args(["--no-reread", "--no-tell-kernel", "-q"])
                    .arg(&path),
                Some(script.as_bytes()),
            )?;
            let out = tools::run(Command::new("sfdisk").arg("-J").arg(&path), None)?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            for (k, p) in v["partitiontable"]["partitions"]
                .as_array()
                .context("no partitions")?
                .iter()
                .enumerate()
            {
                partitions.push(Partition {
                    number: u32::try_from(k + 1)?,
                    start: p["start"].as_u64().context("start")? * 512,
                    size: p["size"].as_u64().context("size")? * 512,
                    ptype: p["type"].as_str().context("type")?.to_string(),
                    filesystem: None,
                });
            }
        }
        self.infos.push(DiskInfo {
            file,
            size,
            table: if sfdisk.is_some() { "dos" } else { "none" }.into(),
            partitions,
        });
        self.disks.push(path);
        Ok(i)
    }

    /// The whole of disk `i` as a PV.
    fn whole(&self, i: usize) -> PvPlace {
        PvPlace {
            disk: i,
            file: self.disks[i].clone(),
            offset: 0,
            size: self.infos[i].size,
        }
    }

    /// Partition `n` of disk `i` as a PV.
    fn part(&self, i: usize, n: u32) -> Result<PvPlace> {
        let p = self.infos[i]
            .partitions
            .iter()
            .find(|p| p.number == n)
            .context("no such partition")?;
        Ok(PvPlace {
            disk: i,
            file: self.disks[i].clone(),
            offset: p.start,
            size: p.size,
        })
    }

    fn env(&self, tag: &str, places: &[PvPlace]) -> Result<LvmEnv> {
        LvmEnv::new(&self.work.join(format!("lvm-{tag}")), places)
    }

    fn scratch(&self, what: &str) -> PathBuf {
        self.work.join(format!("{what}.fs"))
    }
}

/// `lvcreate -an -Zn --driverloaded n` (metadata only) of LV `name` in
/// `vg`, with `extra` options, on `pvs` (all of the VG's when empty).
pub fn lvcreate(env: &LvmEnv, vg: &str, name: &str, extra: &[&str], pvs: &[&str]) -> Result<()> {
    let mut a = vec![
        "lvcreate",
        "--driverloaded",
        "n",
        "-an",
        "-Zn",
        "-y",
        "-q",
        "-n",
        name,
    ];
    a.extend(extra);
    a.push(vg);
    a.extend(pvs);
    env.run(&a).map(drop)
}

/// Puts ext4 (or swap) into LV `lv` of `vgs[vgi]` and records it.
fn fill_lv(ctx: &Ctx, vgs: &mut [Vg], vgi: usize, lv: &str, fs: FsMaker<'_>) -> Result<()> {
    let l = vgs[vgi]
        .lvs
        .iter_mut()
        .find(|l| l.name == lv)
        .with_context(|| format!("no LV {lv}"))?;
    ensure!(!l.mapping.is_empty(), "LV {lv} has no extent mapping");
    let scratch = ctx.scratch(&format!("{}-{lv}", vgs_tag(vgi)));
    let made = match fs {
        FsMaker::Ext4 { tree, uuid, label } => make_ext4(&scratch, l.size, tree, uuid, label)?,
        FsMaker::Xfs { tree, uuid, label } => {
            crate::guest::mkfs_xfs(tree, &ctx.work, &scratch, l.size, label, uuid)?;
            tools::run(Command::new("xfs_repair").arg("-n").arg(&scratch), None)?;
            Filesystem {
                kind: "xfs".into(),
                uuid: uuid.into(),
                label: Some(label.into()),
                size: l.size,
                sha256: sha256_file(&scratch)?,
            }
        }
        FsMaker::Swap { uuid, label } => make_swap(&scratch, l.size, uuid, label)?,
    };
    scatter(&scratch, &l.mapping, &ctx.disks)?;
    fs::remove_file(&scratch)?;
    l.filesystem = Some(made);
    Ok(())
}

fn vgs_tag(i: usize) -> String {
    format!("vg{i}")
}

enum FsMaker<'a> {
    Ext4 {
        tree: &'a Path,
        uuid: &'a str,
        label: &'a str,
    },
    Xfs {
        tree: &'a Path,
        uuid: &'a str,
        label: &'a str,
    },
    Swap {
        uuid: &'a str,
        label: &'a str,
    },
}

fn build_layout(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    match ctx.name {
        "lvm-single" => single(ctx),
        "lvm-rhel8" => rhel8(ctx, false),
        "lvm-rhel8-xfs" => rhel8(ctx, true),
        "lvm-span" => span(ctx),
        "lvm-striped" => striped(ctx),
        "lvm-wrapped" => wrapped(ctx),
        "lvm-thin" => thin(ctx),
        "lvm-samename" => samename(ctx),
        "lvm-raid1" => raid1(ctx),
        other => bail!("unknown LVM fixture {other}"),
    }
}

/// The fstab of a RHEL-like guest whose root and swap are LVs of `vg`.
pub fn rhel_like_root_tree(dir: &Path, vg: &str) -> Result<()> {
    write_file(
        &dir.join("etc/os-release"),
        "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n\
         VERSION_ID=\"9.3\"\nPLATFORM_ID=\"platform:el9\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n",
    )?;
    write_file(
        &dir.join("etc/redhat-release"),
        "Rocky Linux release 9.3 (Blue Onyx)\n",
    )?;
    write_file(
        &dir.join("etc/fstab"),
        &format!(
            "# /etc/fstab as the VMware guest had it\n/dev/mapper/{vg}-root  /  ext4  defaults  1 1\n\
             /dev/sda1  /boot  ext4  defaults  1 2\n/dev/{vg}/swap  swap  swap  defaults  0 0\n"
        ),
    )?;
    write_file(&dir.join("etc/hostname"), "lvm-guest\n")?;
    Ok(())
}

/// An MBR disk of `size` bytes: partition 1 a bootable /boot of `boot`
/// (sfdisk size), partition 2 (8e) the one PV of VG `vg`, whose LVs are
/// created in order with their `lvcreate` size options.
fn boot_and_pv_disk(
    ctx: &mut Ctx,
    size: u64,
    label_id: &str,
    boot: &str,
    vg: &str,
    lvs: &[(&str, &[&str])],
) -> Result<(usize, Vec<Vg>)> {
    let table = format!(
        "label: dos\nlabel-id: {label_id}\nstart=2048, size={boot}, type=83, bootable\ntype=8e\n"
    );
    let d = ctx.disk(size, Some(&table))?;
    let env = ctx.env("0", &[ctx.part(d, 2)?])?;
    let dev = env.dev(0).to_string();
    env.run(&["pvcreate", "-q", "-y", &dev])?;
    env.run(&["vgcreate", "-q", "-s", "4m", vg, &dev])?;
    for (name, opts) in lvs {
        lvcreate(&env, vg, name, opts, &[])?;
    }
    let vgs = env.describe()?;
    Ok((d, vgs))
}

/// ext4 from `tree` (label `boot`) into partition 1 of disk `d`.
fn fill_boot(ctx: &mut Ctx, d: usize, tree: &Path, uuid: &str) -> Result<()> {
    let p1 = ctx.infos[d].partitions[0].clone();
    let scratch = ctx.scratch("boot");
    let fsinfo = make_ext4(&scratch, p1.size, tree, uuid, "boot")?;
    image::copy_sparse(&scratch, &ctx.disks[d], p1.start, p1.size)?;
    fs::remove_file(&scratch)?;
    ctx.infos[d].partitions[0].filesystem = Some(fsinfo);
    Ok(())
}

fn single(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let (d, mut vgs) = boot_and_pv_disk(
        ctx,
        256 * MIB,
        "0x5eed1201",
        "32M",
        "vgtest",
        &[("root", &["-L", "160m"]), ("swap", &["-l", "100%FREE"])],
    )?;

    let tree = ctx.work.join("root-tree");
    rhel_like_root_tree(&tree, "vgtest")?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "root",
        FsMaker::Ext4 {
            tree: &tree,
            uuid: "12120001-0000-4000-8000-000000000002",
            label: "root",
        },
    )?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "swap",
        FsMaker::Swap {
            uuid: "12120001-0000-4000-8000-000000000003",
            label: "swap",
        },
    )?;
    let boot_tree = ctx.work.join("boot-tree");
    write_file(
        &boot_tree.join("grub2/grub.cfg"),
        "linux /vmlinuz root=/dev/mapper/vgtest-root ro rd.lvm.lv=vgtest/root rd.lvm.lv=vgtest/swap\n",
    )?;
    fill_boot(ctx, d, &boot_tree, "12120001-0000-4000-8000-000000000001")?;
    Ok(vgs)
}

fn span(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let a = ctx.disk(32 * MIB, None)?;
    let b = ctx.disk(64 * MIB, None)?;
    let env = ctx.env("0", &[ctx.whole(a), ctx.whole(b)])?;
    let (d0, d1) = (env.dev(0).to_string(), env.dev(1).to_string());
    env.run(&["pvcreate", "-q", "-y", &d0, &d1])?;
    env.run(&["vgcreate", "-q", "-s", "4m", "vgspan", &d0, &d1])?;
    // The 7 extents of the 32 MiB PV, then 9 of the second (asked for in
    // two steps: given both PVs at once, LVM starts on the emptier one).
    lvcreate(&env, "vgspan", "data", &["-l", "7"], &[&d0])?;
    env.run(&[
        "lvextend",
        "--driverloaded",
        "n",
        "-q",
        "-l",
        "+9",
        "vgspan/data",
        &d1,
    ])?;
    let mut vgs = env.describe()?;
    drop(env);
    let tree = ctx.work.join("tree");
    data_tree(&tree, ctx.name, 4 << 20)?;
    // A minimal Linux root, so the guest's root spans the two disks (the
    // preflight check lvm-root-spans-disks).
    write_file(
        &tree.join("etc/os-release"),
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    )?;
    write_file(
        &tree.join("etc/fstab"),
        "/dev/mapper/vgspan-data  /  ext4  errors=remount-ro  0 1\n",
    )?;
    fs::create_dir_all(tree.join("bin"))?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "data",
        FsMaker::Ext4 {
            tree: &tree,
            uuid: "12120002-0000-4000-8000-000000000001",
            label: "spandata",
        },
    )?;
    Ok(vgs)
}

fn striped(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let a = ctx.disk(64 * MIB, None)?;
    let b = ctx.disk(64 * MIB, None)?;
    let env = ctx.env("0", &[ctx.whole(a), ctx.whole(b)])?;
    let (d0, d1) = (env.dev(0).to_string(), env.dev(1).to_string());
    env.run(&["pvcreate", "-q", "-y", &d0, &d1])?;
    env.run(&["vgcreate", "-q", "-s", "4m", "vgstripe", &d0, &d1])?;
    // A linear LV first, so the stripes start at different extents.
    lvcreate(&env, "vgstripe", "pad", &["-l", "1"], &[&d0])?;
    lvcreate(
        &env,
        "vgstripe",
        "stripes",
        &["-L", "40m", "-i", "2", "-I", "64k"],
        &[],
    )?;
    let mut vgs = env.describe()?;
    drop(env);
    let tree = ctx.work.join("tree");
    data_tree(&tree, ctx.name, 4 << 20)?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "stripes",
        FsMaker::Ext4 {
            tree: &tree,
            uuid: "12120003-0000-4000-8000-000000000001",
            label: "stripes",
        },
    )?;
    Ok(vgs)
}

/// lvcreate/lvremove until the committed metadata wraps around the end of
/// the small metadata area (at most this many cycles).
const WRAP_CYCLES: usize = 600;

fn wrapped(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let a = ctx.disk(64 * MIB, None)?;
    let place = ctx.whole(a);
    let env = ctx.env("0", std::slice::from_ref(&place))?;
    let d0 = env.dev(0).to_string();
    env.run(&[
        "pvcreate",
        "-q",
        "-y",
        "--metadatasize",
        "16k",
        "--dataalignment",
        "64k",
        &d0,
    ])?;
    env.run(&["vgcreate", "-q", "-s", "1m", "vgwrap", &d0])?;
    lvcreate(&env, "vgwrap", "survivor", &["-L", "24m"], &[])?;
    let mut cycles = 0;
    loop {
        let m = read_mda(&place.file, place.offset)?.context("no metadata area")?;
        if m.wraps {
            break;
        }
        ensure!(
            cycles < WRAP_CYCLES,
            "metadata did not wrap after {cycles} lvcreate/lvremove cycles ({m:?})"
        );
        cycles += 1;
        lvcreate(&env, "vgwrap", "scratch", &["-L", "1m"], &[])?;
        env.run(&[
            "lvremove",
            "--driverloaded",
            "n",
            "-y",
            "-q",
            "vgwrap/scratch",
        ])?;
    }
    eprintln!("lvm: {}: metadata wrapped after {cycles} cycles", ctx.name);
    let mut vgs = env.describe()?;
    drop(env);
    let tree = ctx.work.join("tree");
    data_tree(&tree, ctx.name, 1 << 20)?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "survivor",
        FsMaker::Ext4 {
            tree: &tree,
            uuid: "12120004-0000-4000-8000-000000000001",
            label: "survivor",
        },
    )?;
    Ok(vgs)
}

/// Rewrites the VG's metadata with `vgcfgrestore --force`: `renames` turn
/// plain LVs made by lvcreate into hidden sub-LVs, and `extra` LV sections
/// (in LVM's text format) are added.
fn restore_with(
    env: &LvmEnv,
    work: &Path,
    vg: &str,
    renames: &[(&str, &str)],
    extra: &str,
) -> Result<()> {
    let backup = work.join(format!("{vg}.vgcfg"));
    let b = tools::plain_path(&backup)?.to_string();
    env.run(&["vgcfgbackup", "-q", "-f", &b, vg])?;
    let mut text = fs::read_to_string(&backup)?;
    for (from, to) in renames {
        let head = format!("\n\t\t{from} {{\n");
        let at = text
            .find(&head)
            .with_context(|| format!("no LV {from} in the vgcfgbackup text"))?;
        let body_end = at
            + text[at..]
                .find("segment_count")
                .context("no segment_count")?;
        let body = text[at..body_end]
            .replacen(&head, &format!("\n\t\t{to} {{\n"), 1)
            .replacen(
                "status = [\"READ\", \"WRITE\", \"VISIBLE\"]",
                "status = [\"READ\", \"WRITE\"]",
                1,
            );
        text.replace_range(at..body_end, &body);
    }
    // Close of logical_volumes: the last "\t}\n" before the final "}".
    let end = text.rfind("\n\t}\n").context("no end of logical_volumes")?;
    text.insert_str(end + 1, extra);
    fs::write(&backup, text)?;
    env.run(&["vgcfgrestore", "-q", "--force", "-f", &b, vg])?;
    Ok(())
}

fn thin(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let a = ctx.disk(64 * MIB, None)?;
    let env = ctx.env("0", &[ctx.whole(a)])?;
    let d0 = env.dev(0).to_string();
    env.run(&["pvcreate", "-q", "-y", &d0])?;
    env.run(&["vgcreate", "-q", "-s", "4m", "vgthin", &d0])?;
    lvcreate(&env, "vgthin", "plain", &["-L", "8m"], &[])?;
    for (n, size) in [("pdata", "16m"), ("pmeta", "4m"), ("pspare", "4m")] {
        lvcreate(&env, "vgthin", n, &["-L", size], &[])?;
    }
    // As `lvcreate --type thin-pool -L 16m -n pool` and
    // `lvcreate -V 40m --thinpool pool -n thinvol` would write it.
    let extra = "\t\tpool {
\t\t\tid = \"vmieTP-pool-0000-0000-0000-0000-000001\"
\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]
\t\t\tflags = []
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 4
\t\t\t\ttype = \"thin-pool\"
\t\t\t\tmetadata = \"pool_tmeta\"
\t\t\t\tpool = \"pool_tdata\"
\t\t\t\ttransaction_id = 1
\t\t\t\tchunk_size = 128
\t\t\t\tdiscards = \"passdown\"
\t\t\t\tzero_new_blocks = 0
\t\t\t}
\t\t}

\t\tthinvol {
\t\t\tid = \"vmieTV-thin-0000-0000-0000-0000-000002\"
\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]
\t\t\tflags = []
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 10
\t\t\t\ttype = \"thin\"
\t\t\t\tthin_pool = \"pool\"
\t\t\t\ttransaction_id = 0
\t\t\t\tdevice_id = 1
\t\t\t}
\t\t}
";
    restore_with(
        &env,
        &ctx.work,
        "vgthin",
        &[
            ("pdata", "pool_tdata"),
            ("pmeta", "pool_tmeta"),
            ("pspare", "lvol0_pmspare"),
        ],
        extra,
    )?;
    let vgs = env.describe()?;
    Ok(vgs)
}

fn samename(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let mut vgs = Vec::new();
    for (i, label) in [(0usize, "dupone"), (1, "duptwo")] {
        let d = ctx.disk(48 * MIB, None)?;
        // One environment per disk: neither LVM sees the other VG.
        let env = ctx.env(&i.to_string(), &[ctx.whole(d)])?;
        let dev = env.dev(0).to_string();
        env.run(&["pvcreate", "-q", "-y", &dev])?;
        env.run(&["vgcreate", "-q", "-s", "4m", "vgdup", &dev])?;
        lvcreate(&env, "vgdup", "data", &["-L", "32m"], &[])?;
        let mut these = env.describe()?;
        drop(env);
        ensure!(these.len() == 1, "disk {d}: {} VGs", these.len());
        let tree = ctx.work.join(format!("tree{i}"));
        data_tree(&tree, label, 64 << 10)?;
        let uuid = format!("12120006-0000-4000-8000-00000000000{}", i + 1);
        fill_lv(
            ctx,
            &mut these,
            0,
            "data",
            FsMaker::Ext4 {
                tree: &tree,
                uuid: &uuid,
                label,
            },
        )?;
        vgs.extend(these);
    }
    Ok(vgs)
}

fn raid1(ctx: &mut Ctx) -> Result<Vec<Vg>> {
    let a = ctx.disk(64 * MIB, None)?;
    let b = ctx.disk(64 * MIB, None)?;
    let env = ctx.env("0", &[ctx.whole(a), ctx.whole(b)])?;
    let (d0, d1) = (env.dev(0).to_string(), env.dev(1).to_string());
    env.run(&["pvcreate", "-q", "-y", &d0, &d1])?;
    env.run(&["vgcreate", "-q", "-s", "4m", "vgraid", &d0, &d1])?;
    // `lvcreate --type raid1` refuses without device-mapper: make the legs
    // (rmeta 1 extent, rimage 8 extents, one pair per PV) and describe the
    // raid1 LV over them as lvcreate would.
    for (n, size, dev) in [
        ("m0", "4m", &d0),
        ("i0", "32m", &d0),
        ("m1", "4m", &d1),
        ("i1", "32m", &d1),
    ] {
        lvcreate(&env, "vgraid", n, &["-L", size], &[dev])?;
    }
    let extra = "\t\tmirror {
\t\t\tid = \"vmieR1-raid-0000-0000-0000-0000-000001\"
\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]
\t\t\tflags = []
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 8
\t\t\t\ttype = \"raid1\"
\t\t\t\tdevice_count = 2
\t\t\t\tregion_size = 4096
\t\t\t\traids = [
\t\t\t\t\t\"mirror_rmeta_0\", \"mirror_rimage_0\",
\t\t\t\t\t\"mirror_rmeta_1\", \"mirror_rimage_1\"
\t\t\t\t]
\t\t\t}
\t\t}
";
    restore_with(
        &env,
        &ctx.work,
        "vgraid",
        &[
            ("m0", "mirror_rmeta_0"),
            ("i0", "mirror_rimage_0"),
            ("m1", "mirror_rmeta_1"),
            ("i1", "mirror_rimage_1"),
        ],
        extra,
    )?;
    let mut vgs = env.describe()?;
    drop(env);
    // The same ext4 in both images, as a synced mirror holds it; the raid1
    // LV itself gets the record (its mapping is empty: it lies on sub-LVs).
    let tree = ctx.work.join("tree");
    data_tree(&tree, ctx.name, 1 << 20)?;
    let mut made = None;
    for leg in ["mirror_rimage_0", "mirror_rimage_1"] {
        fill_lv(
            ctx,
            &mut vgs,
            0,
            leg,
            FsMaker::Ext4 {
                tree: &tree,
                uuid: "12120007-0000-4000-8000-000000000001",
                label: "mirror",
            },
        )?;
        made = vgs[0]
            .lvs
            .iter()
            .find(|l| l.name == leg)
            .and_then(|l| l.filesystem.clone());
    }
    let m = vgs[0]
        .lvs
        .iter_mut()
        .find(|l| l.name == "mirror")
        .context("no raid1 LV")?;
    m.filesystem = made;
    Ok(vgs)
}

// ---------------------------------------------------------------------------
// stamp, lock, entry points

pub fn out_dir() -> PathBuf {
    fixtures::default_out_dir().join("lvm")
}

fn lvm_version() -> Result<String> {
    let out = tools::run(Command::new("lvm").arg("version"), None)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn stamp(name: &str, version: &str) -> String {
    let mut h = Sha256::new();
    for part in [STAMP_VERSION, include_str!("lvm.rs"), name, version] {
        h.update(part.len().to_le_bytes());
        h.update(part);
    }
    format!("{:x}", h.finalize())
}

/// An exclusive `flock` on `path`, held until dropped (released by the
/// kernel if the process dies).
struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(FileLock(f))
    }
}

fn load(dir: &Path) -> Result<Fixture> {
    let manifest: Manifest = serde_json::from_str(&fs::read_to_string(dir.join("manifest.json"))?)?;
    let disks = manifest.disks.iter().map(|d| dir.join(&d.file)).collect();
    Ok(Fixture {
        dir: dir.to_path_buf(),
        disks,
        manifest,
    })
}

/// The LVM fixture `name` (one of [`NAMES`]), built first if missing or
/// stale. Concurrent callers wait for one build. Needs root (loop devices).
pub fn fixture(name: &str) -> Result<Fixture> {
    ensure_built(name, false)
}

fn ensure_built(name: &str, force: bool) -> Result<Fixture> {
    let (name, description) = *NAMES.iter().find(|(n, _)| *n == name).with_context(|| {
        format!(
            "unknown LVM fixture {name}; one of: {}",
            NAMES.iter().map(|n| n.0).collect::<Vec<_>>().join(", ")
        )
    })?;
    let version = lvm_version().context("lvm (Debian package lvm2) is needed")?;
    let base = out_dir();
    fs::create_dir_all(&base)?;
    let _lock = FileLock::acquire(&base.join(format!("{name}.lock")))?;
    let dir = base.join(name);
    let want = stamp(name, &version);
    if !force && fs::read_to_string(dir.join("stamp")).is_ok_and(|s| s.trim() == want) {
        if let Ok(f) = load(&dir) {
            if f.disks.iter().all(|d| d.is_file()) {
                return Ok(f);
            }
        }
    }
    eprintln!("lvm: building {name} ...");
    let t0 = Instant::now();
    let work = base.join(format!("{name}.work"));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let mut ctx = Ctx {
        name,
        work: work.clone(),
        disks: Vec::new(),
        infos: Vec::new(),
    };
    let vgs = build_layout(&mut ctx).with_context(|| format!("building LVM fixture {name}"))?;
    let manifest = Manifest {
        name: name.into(),
        description: description.into(),
        lvm_version: version,
        disks: ctx.infos,
        vgs,
    };
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    fs::write(work.join("manifest.json"), text)?;
    // Only the outputs move into place; scratch trees and lvm.conf go.
    let fresh = base.join(format!("{name}.new"));
    if fresh.exists() {
        fs::remove_dir_all(&fresh)?;
    }
    fs::create_dir_all(&fresh)?;
    for d in &manifest.disks {
        fs::rename(work.join(&d.file), fresh.join(&d.file))?;
    }
    fs::rename(work.join("manifest.json"), fresh.join("manifest.json"))?;
    fs::write(fresh.join("stamp"), format!("{want}\n"))?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&fresh, &dir)?;
    fs::remove_dir_all(&work)?;
    eprintln!(
        "lvm: built {name} in {:.1}s -> {}",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    load(&dir)
}

/// `cargo xtask lvm [--force] [NAME...]`
pub fn run(args: &[String]) -> Result<()> {
    let force = args.iter().any(|a| a == "--force");
    let mut names: Vec<&str> = args
        .iter()
        .filter(|a| *a != "--force")
        .map(String::as_str)
        .collect();
    if names.is_empty() {
        names = NAMES.iter().map(|n| n.0).collect();
    }
    for n in names {
        let f = ensure_built(n, force)?;
        println!("{n:<14} {}", f.dir.display());
    }
    Ok(())
}

/// RHEL 8 on LVM: the `rhel8-root` and `rhel8-boot` fixture trees with the
/// names anaconda gives an LVM install (VG `rhel`, LVs `root` and `swap`),
/// and a VMware-era `/dev/sda1` for /boot, which the fixup must rewrite
/// while it keeps every `/dev/mapper/rhel-*` name.
fn rhel8(ctx: &mut Ctx, xfs: bool) -> Result<Vec<Vg>> {
    let (d, mut vgs) = boot_and_pv_disk(
        ctx,
        1024 * MIB,
        "0x4ae80100",
        "256M",
        "rhel",
        &[("swap", &["-L", "64m"]), ("root", &["-l", "100%FREE"])],
    )?;

    let trees = crate::fixtures::fixtures_dir().join("trees");
    let root_tree = ctx.work.join("root-tree");
    let boot_tree = ctx.work.join("boot-tree");
    for (from, to) in [("rhel8-root", &root_tree), ("rhel8-boot", &boot_tree)] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(trees.join(from))
            .arg(to)
            .status()
            .context("cp")?;
        ensure!(st.success(), "copying the {from} tree failed");
    }
    write_file(
        &root_tree.join("etc/fstab"),
        &"\n#\n# /etc/fstab\n# Created by anaconda on Tue Jan 10 10:11:12 2023\n#\n\
/dev/mapper/rhel-root   /                       ROOTFS    defaults        1 1\n\
/dev/sda1               /boot                   ext4    defaults        1 2\n\
/dev/mapper/rhel-swap   none                    swap    defaults        0 0\n\
/dev/sdb1               /var/lib/pgsql          xfs     defaults        0 0\n\
//fileserver/backup     /mnt/backup             cifs    credentials=/root/.smb 0 0\n"
            .replace("ROOTFS", if xfs { "xfs " } else { "ext4" }),
    )?;
    // lvm2 2.03.12+ with use_devicesfile = 1 (RHEL 9's default, optional
    // on 8.5+) keeps the PVs it may use in a devices file, by device id.
    write_file(
        &root_tree.join("etc/lvm/devices/system.devices"),
        "# LVM uses devices listed in this file.\n# Created by LVM command vgimportdevices pid 1234 at Tue Jan 10 10:11:12 2023\nVERSION=1.1.1\nIDTYPE=sys_wwid IDNAME=naa.6000c29b2f9d8e0a1b2c3d4e5f607182 DEVNAME=/dev/sda2 PVID=0LKIptA6vOoLD29HJjqWlrMN1nJfCW4Z PART=2\n",
    )?;
    let grub = root_tree.join("etc/default/grub");
    let text = fs::read_to_string(&grub)?.replace(
        "resume=/dev/sda3 rhgb",
        "resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb",
    );
    write_file(&grub, &text)?;
    // grubenv is a 1024-byte block: keep its size when editing kernelopts.
    let env_file = boot_tree.join("grub2/grubenv");
    let old = fs::read_to_string(&env_file)?;
    let new_opts = "kernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet \n";
    let mut lines: Vec<String> = Vec::new();
    for l in old.split_inclusive('\n') {
        if l.starts_with("kernelopts=") {
            lines.push(new_opts.to_string());
        } else {
            lines.push(l.to_string());
        }
    }
    let mut body: String = lines.concat();
    let grow = body.len().saturating_sub(old.len());
    // Take the growth out of the '#' padding.
    if let Some(pos) = body.rfind("##") {
        let pad_end = body[pos..].find('\n').map_or(body.len(), |e| pos + e);
        let pad_start = body[..pad_end].rfind('\n').map_or(0, |n| n + 1);
        let pad_len = pad_end - pad_start;
        ensure!(pad_len > grow, "grubenv padding too short");
        body.replace_range(pad_start..pad_start + grow, "");
    }
    ensure!(
        body.len() == old.len(),
        "grubenv must stay {} bytes",
        old.len()
    );
    write_file(&env_file, &body)?;
    let (uuid, label) = ("4ae80102-0000-4000-8000-000000000002", "root");
    let root_fs = if xfs {
        FsMaker::Xfs {
            tree: &root_tree,
            uuid,
            label,
        }
    } else {
        FsMaker::Ext4 {
            tree: &root_tree,
            uuid,
            label,
        }
    };
    fill_lv(ctx, &mut vgs, 0, "root", root_fs)?;
    fill_lv(
        ctx,
        &mut vgs,
        0,
        "swap",
        FsMaker::Swap {
            uuid: "4ae80103-0000-4000-8000-000000000003",
            label: "swap",
        },
    )?;
    fill_boot(ctx, d, &boot_tree, "4ae80101-0000-4000-8000-000000000001")?;
    Ok(vgs)
}
