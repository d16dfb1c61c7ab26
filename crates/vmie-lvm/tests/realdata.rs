//! LVM volumes made on real systems (dfvfs test data: Fedora 31 lvm 2.03.06
//! and lvm 2.02.116), converted from qcow2 with qemu-img: every VG, LV and
//! extent map must be what `lvs` reports, and the ext2 inside each LV must
//! be found through our mapping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::{Device, FileDevice};
use vmie_lvm::{scan, LvmOptions};

fn realdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/dfvfs/test_data_history")
        .join(name)
}

fn raw(dir: &Path, name: &str) -> Arc<dyn Device> {
    let out = dir.join(format!("{name}.raw"));
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(realdata(&format!("{name}.qcow2")))
        .arg(&out)
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success());
    Arc::new(FileDevice::open(&out).unwrap())
}

#[test]
fn fedora_lvm_volume_group() {
    let dir = tempfile::tempdir().unwrap();
    let devs = vec![raw(dir.path(), "lvm")];
    let s = scan(&devs, &LvmOptions::default());
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.pvs.len(), 1);
    assert_eq!(
        vmie_lvm::format_uuid(&s.pvs[0].label.uuid),
        "K994MB-Sn1r-7rpS-hQEW-DgUP-87Dr-9d0MFa"
    );
    let vg = &s.vgs[0];
    assert_eq!(vg.meta.name, "test_volume_group");
    assert_eq!(vg.meta.extent_size, 4 << 20);
    assert!(vg.missing.is_empty());
    let lvs: Vec<_> = vg.visible_lvs().collect();
    assert_eq!(lvs.len(), 1);
    assert_eq!(lvs[0].name, "test_logical_volume");
    assert_eq!(lvs[0].uuid, "0MUZZr-7jgO-iFwW-sSG3-Rb8W-w5td-qAOF8e");
    let dev = vg.open(lvs[0], &devs).unwrap();
    assert_eq!(dev.len(), 4 << 20);
    // lvs: /dev/loop0:0-0 with pe_start 1 MiB.
    assert_eq!(dev.segments()[0].stripes[0].1, 1 << 20);
    let p = vmie_probe::probe(&dev, &vmie_probe::ProbeOptions::default())
        .unwrap()
        .expect("a filesystem in the LV");
    assert_eq!(p.kind, vmie_probe::FsKind::Ext2);
}

#[test]
fn lvm2_02_two_logical_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let devs = vec![raw(dir.path(), "lvmtest")];
    let s = scan(&devs, &LvmOptions::default());
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let vg = &s.vgs[0];
    assert_eq!(vg.meta.name, "vg_test");
    let names: Vec<(&str, u64)> = vg
        .visible_lvs()
        .map(|l| (l.name.as_str(), vg.lv_size(l)))
        .collect();
    assert_eq!(names, [("lv_test1", 8 << 20), ("lv_test2", 4 << 20)]);
    let lv2 = vg.visible_lvs().nth(1).unwrap();
    let dev = vg.open(lv2, &devs).unwrap();
    // lvs: lv_test2 is /dev/loop0:2-2.
    assert_eq!(dev.segments()[0].stripes[0].1, (1 << 20) + 2 * (4 << 20));
    // Reads through the LV equal the disk bytes at the mapped offset.
    let mut a = vec![0u8; 8192];
    let mut b = vec![0u8; 8192];
    dev.read_at(4096, &mut a).unwrap();
    devs[0]
        .read_at((1 << 20) + 2 * (4 << 20) + 4096, &mut b)
        .unwrap();
    assert_eq!(a, b);
    for lv in vg.visible_lvs() {
        let dev = vg.open(lv, &devs).unwrap();
        let p = vmie_probe::probe(&dev, &vmie_probe::ProbeOptions::default()).unwrap();
        assert_eq!(
            p.map(|p| p.kind),
            Some(vmie_probe::FsKind::Ext2),
            "{}",
            lv.name
        );
    }
}
