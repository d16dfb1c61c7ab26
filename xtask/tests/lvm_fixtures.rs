//! The LVM fixtures are what they claim: each is built by the real LVM tools,
//! then checked again on the finished images (fresh loop devices, `lvs`,
//! `pvs`, `pvck`, `blkid`, `debugfs`) against its manifest. Needs root (loop
//! devices), as CI runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use xtask::lvm::{self, Fixture, LvmEnv, PvPlace, Vg};

/// A scratch directory for one test's `LVM_SYSTEM_DIR`, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch> {
        let d = std::env::temp_dir().join(format!("vmie-lvm-test-{tag}-{}", std::process::id()));
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loop devices on every PV the manifest names, in an isolated LVM.
fn env_for(f: &Fixture, scratch: &Path, vgs: &[&Vg]) -> Result<LvmEnv> {
    let places: Vec<PvPlace> = vgs
        .iter()
        .flat_map(|vg| &vg.pvs)
        .map(|pv| PvPlace {
            disk: pv.disk,
            file: f.disks[pv.disk].clone(),
            offset: pv.offset,
            size: pv.size,
        })
        .collect();
    LvmEnv::new(scratch, &places)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `blkid -p -O OFFSET DISK` as KEY=VALUE pairs.
fn blkid(disk: &Path, offset: u64) -> Result<Vec<(String, String)>> {
    let text = run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(disk))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Everything every fixture must satisfy: `pvs`/`vgs`/`lvs` re-run on the
/// images report what the manifest says; each linear segment starts where
/// its PV range says (our own arithmetic on the raw `lvs` row); every
/// filesystem is read back byte for byte through the mapping, and blkid
/// finds it at the first mapping entry of a linear LV.
fn check(name: &str) -> Result<Fixture> {
    let f = lvm::fixture(name)?;
    let m = &f.manifest;
    ensure!(m.name == name);
    for (d, info) in f.disks.iter().zip(&m.disks) {
        ensure!(std::fs::metadata(d)?.len() == info.size, "{}", d.display());
    }
    // VGs of the same name are looked at one at a time, as a host would have
    // to (lvm refuses to show two VGs named alike together).
    for (i, vg) in m.vgs.iter().enumerate() {
        let scratch = Scratch::new(&format!("{name}-{i}"))?;
        let env = env_for(&f, &scratch.0, &[vg])?;
        let again = env.describe()?;
        ensure!(
            again.len() == 1,
            "{name}: {} VGs on {}'s PVs",
            again.len(),
            vg.name
        );
        let a = &again[0];
        ensure!(
            (&a.name, &a.uuid, a.extent_size, a.seqno)
                == (&vg.name, &vg.uuid, vg.extent_size, vg.seqno),
            "{name}: VG {} differs: {a:?}",
            vg.name
        );
        ensure!(
            a.pvs == vg.pvs,
            "{name}: PVs differ:\n{:?}\n{:?}",
            a.pvs,
            vg.pvs
        );
        ensure!(a.lvs.len() == vg.lvs.len(), "{name}: LV count");
        for (x, y) in a.lvs.iter().zip(&vg.lvs) {
            ensure!(
                (&x.name, &x.uuid, x.hidden, x.size, &x.segments, &x.mapping)
                    == (&y.name, &y.uuid, y.hidden, y.size, &y.segments, &y.mapping),
                "{name}: LV {} differs from the manifest",
                y.name
            );
        }
        // Independent arithmetic on the raw rows.
        for row in env.lvs_rows()? {
            let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            if s("segtype") != "linear" {
                continue;
            }
            let lv_name = s("lv_name").trim_matches(['[', ']']).to_string();
            let lv = vg.lvs.iter().find(|l| l.name == lv_name).context("LV")?;
            let ranges = s("seg_pe_ranges");
            let (dev, range) = ranges.rsplit_once(':').context("range")?;
            let first: u64 = range.split_once('-').context("range")?.0.parse()?;
            let k = (0..vg.pvs.len())
                .find(|&k| env.dev(k) == dev)
                .context("PV device")?;
            let pv = &vg.pvs[k];
            let seg_start: u64 = s("seg_start").parse()?;
            let want = pv.offset + pv.pe_start + first * vg.extent_size;
            ensure!(
                lv.mapping
                    .iter()
                    .any(|e| e.lv_offset == seg_start && e.disk == pv.disk && e.disk_offset == want),
                "{name}: {lv_name} segment at {seg_start} should start at disk {} byte {want}: {:?}",
                pv.disk,
                lv.mapping
            );
        }
        drop(env);
        for lv in &vg.lvs {
            let Some(fs) = &lv.filesystem else { continue };
            if lv.mapping.is_empty() {
                continue; // raid1: checked through its images
            }
            ensure!(fs.size == lv.size, "{name}: {} fs size", lv.name);
            ensure!(
                lvm::sha256_mapped(&lv.mapping, &f.disks)? == fs.sha256,
                "{name}: {} read through the mapping is not the filesystem made",
                lv.name
            );
            if lv.segments.iter().all(|s| s.segtype == "linear") {
                let e = lv.mapping[0];
                let kv = blkid(&f.disks[e.disk], e.disk_offset)?;
                ensure!(
                    get(&kv, "TYPE") == Some(fs.kind.as_str()),
                    "{name}: {}: {kv:?}",
                    lv.name
                );
                ensure!(
                    get(&kv, "UUID") == Some(fs.uuid.as_str()),
                    "{name}: {}: {kv:?}",
                    lv.name
                );
                ensure!(
                    get(&kv, "LABEL") == fs.label.as_deref(),
                    "{name}: {}: {kv:?}",
                    lv.name
                );
            }
        }
    }
    Ok(f)
}

fn lv<'a>(f: &'a Fixture, vg: &str, lv: &str) -> Result<&'a lvm::Lv> {
    f.manifest
        .lv(vg, lv)
        .with_context(|| format!("no LV {vg}/{lv}"))
}

#[test]
fn lvm_single() -> Result<()> {
    let f = check("lvm-single")?;
    let d = &f.manifest.disks[0];
    ensure!(d.table == "dos" && d.partitions.len() == 2);
    let (p1, p2) = (&d.partitions[0], &d.partitions[1]);
    ensure!(p2.ptype == "8e", "p2 type {}", p2.ptype);
    let kv = blkid(&f.disks[0], p1.start)?;
    ensure!(
        get(&kv, "TYPE") == Some("ext4") && get(&kv, "LABEL") == Some("boot"),
        "{kv:?}"
    );
    ensure!(get(&blkid(&f.disks[0], p2.start)?, "TYPE") == Some("LVM2_member"));
    let vg = &f.manifest.vgs[0];
    ensure!(vg.name == "vgtest" && vg.pvs[0].offset == p2.start);
    let root = lv(&f, "vgtest", "root")?;
    let swap = lv(&f, "vgtest", "swap")?;
    ensure!(swap.filesystem.as_ref().is_some_and(|s| s.kind == "swap"));
    // The root's fstab, read by debugfs at the LV's disk offset.
    let spec = format!(
        "{}?offset={}",
        f.disks[0].display(),
        root.mapping[0].disk_offset
    );
    let fstab = run(Command::new("debugfs").args(["-R", "cat /etc/fstab", &spec]))?;
    for want in ["/dev/mapper/vgtest-root", "/dev/sda1", "/dev/vgtest/swap"] {
        ensure!(fstab.contains(want), "fstab lacks {want}:\n{fstab}");
    }
    Ok(())
}

#[test]
fn lvm_span() -> Result<()> {
    let f = check("lvm-span")?;
    ensure!(f.manifest.disks.iter().all(|d| d.table == "none"));
    let data = lv(&f, "vgspan", "data")?;
    ensure!(data.segments.len() == 2, "{:?}", data.segments);
    let disks: Vec<usize> = data.mapping.iter().map(|e| e.disk).collect();
    ensure!(disks.contains(&0) && disks.contains(&1), "{disks:?}");
    // The part on each disk holds filesystem data, not only zeros.
    for e in &data.mapping {
        let len = usize::try_from(e.len)?;
        let bytes = std::fs::read(&f.disks[e.disk])?;
        let part = &bytes[usize::try_from(e.disk_offset)?..][..len];
        ensure!(
            part.iter().any(|&b| b != 0),
            "nothing of the fs on disk {}",
            e.disk
        );
    }
    Ok(())
}

#[test]
fn lvm_striped() -> Result<()> {
    let f = check("lvm-striped")?;
    let s = lv(&f, "vgstripe", "stripes")?;
    ensure!(s.segments.len() == 1);
    let seg = &s.segments[0];
    ensure!(seg.segtype == "striped" && seg.stripes == 2 && seg.stripe_size == 64 << 10);
    ensure!(
        s.mapping.len() as u64 == s.size / (64 << 10),
        "{} entries",
        s.mapping.len()
    );
    for (k, e) in s.mapping.iter().enumerate() {
        ensure!(e.disk == k % 2 && e.len == 64 << 10, "entry {k}: {e:?}");
    }
    // The stripes start at different PV extents (a linear LV fills extent 0
    // of the first PV).
    ensure!(
        seg.areas[0].first == 1 && seg.areas[1].first == 0,
        "{:?}",
        seg.areas
    );
    // The superblock lies in the first stripe, where blkid finds it.
    let fs = s.filesystem.as_ref().context("fs")?;
    let e = s.mapping[0];
    let kv = blkid(&f.disks[0], e.disk_offset)?;
    ensure!(
        get(&kv, "UUID") == Some(fs.uuid.as_str()),
        "superblock in stripe 0: {kv:?}"
    );
    Ok(())
}

#[test]
fn lvm_wrapped() -> Result<()> {
    let f = check("lvm-wrapped")?;
    let vg = &f.manifest.vgs[0];
    let pv = &vg.pvs[0];
    let mda = pv.mda.as_ref().context("no mda")?;
    ensure!(mda.wraps && mda.size < 64 << 10, "{mda:?}");
    ensure!(vg.lvs.len() == 1 && vg.lvs[0].name == "survivor");
    // pvck, LVM's own dump of the header, agrees that the text wraps.
    let scratch = Scratch::new("pvck")?;
    let env = env_for(&f, &scratch.0, &[vg])?;
    let dump = env.run(&["pvck", "--dump", "headers", env.dev(0)])?;
    let field = |k: &str| -> Result<u64> {
        let line = dump
            .lines()
            .find(|l| l.trim_start().starts_with(k))
            .with_context(|| format!("no {k} in pvck output:\n{dump}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context(k.to_string())?
            .parse()?)
    };
    let (off, size, area) = (
        field("mda_header_1.raw_locn[0].offset ")?,
        field("mda_header_1.raw_locn[0].size ")?,
        field("mda_header_1.size ")?,
    );
    ensure!(off + size > area, "pvck: {off} + {size} <= {area}");
    ensure!((off, size, area) == (mda.text_offset, mda.text_size, mda.size));
    Ok(())
}

#[test]
fn lvm_thin() -> Result<()> {
    let f = check("lvm-thin")?;
    let t = lv(&f, "vgthin", "thinvol")?;
    ensure!(t.segments[0].segtype == "thin" && t.mapping.is_empty() && !t.hidden);
    let p = lv(&f, "vgthin", "pool")?;
    ensure!(p.segments[0].segtype == "thin-pool");
    ensure!(p.segments[0].areas[0].lv.as_deref() == Some("pool_tdata"));
    for sub in ["pool_tdata", "pool_tmeta", "lvol0_pmspare"] {
        ensure!(lv(&f, "vgthin", sub)?.hidden, "{sub} not hidden");
    }
    ensure!(!lv(&f, "vgthin", "plain")?.mapping.is_empty());
    Ok(())
}

#[test]
fn lvm_samename() -> Result<()> {
    let f = check("lvm-samename")?;
    let vgs = &f.manifest.vgs;
    ensure!(vgs.len() == 2 && vgs.iter().all(|v| v.name == "vgdup"));
    ensure!(vgs[0].uuid != vgs[1].uuid);
    ensure!(vgs[0].pvs[0].disk != vgs[1].pvs[0].disk);
    let labels: Vec<_> = vgs
        .iter()
        .map(|v| v.lvs[0].filesystem.as_ref().and_then(|f| f.label.clone()))
        .collect();
    ensure!(labels[0] != labels[1], "{labels:?}");
    Ok(())
}

#[test]
fn lvm_raid1() -> Result<()> {
    let f = check("lvm-raid1")?;
    let m = lv(&f, "vgraid", "mirror")?;
    let seg = &m.segments[0];
    ensure!(seg.segtype == "raid1" && seg.areas.len() == 2 && m.mapping.is_empty());
    let fs = m.filesystem.as_ref().context("fs")?;
    for leg in ["mirror_rimage_0", "mirror_rimage_1"] {
        let l = lv(&f, "vgraid", leg)?;
        ensure!(l.hidden && l.size == m.size);
        ensure!(
            lvm::sha256_mapped(&l.mapping, &f.disks)? == fs.sha256,
            "{leg}"
        );
    }
    let disks: Vec<usize> = ["mirror_rimage_0", "mirror_rimage_1"]
        .iter()
        .map(|n| lv(&f, "vgraid", n).map(|l| l.mapping[0].disk))
        .collect::<Result<_>>()?;
    ensure!(disks == [0, 1], "{disks:?}");
    Ok(())
}
