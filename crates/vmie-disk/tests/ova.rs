//! OVA archives made with GNU tar (ustar, pax and GNU headers) from
//! streamOptimized VMDKs qemu-img writes of real raw disks, with a
//! hand-written OVF that lists the disks out of alphabetical and archive
//! order: `DiskSet::open` gives the VM's disks in the OVF's boot order, each
//! reading like its raw image, reading only a little of the archive;
//! writing is refused; hostile archives and OVFs are refused naming what.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vmie_disk::image::{open_ova, ImageLimits};
use vmie_disk::{Device, DiskSet, FileDevice};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn demo() -> PathBuf {
    xtask::fixtures::image("demo").unwrap_or_else(|e| panic!("building fixture demo: {e:#}"))
}

/// `dev` reads like the raw file `raw`, in 4 MiB chunks.
fn assert_same(raw: &Path, dev: &dyn Device) {
    let r = FileDevice::open(raw).unwrap();
    assert_eq!(dev.len(), r.len(), "{}", dev.describe());
    let mut a = vec![0u8; 4 << 20];
    let mut b = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < r.len() {
        let n = (r.len() - off).min(4 << 20) as usize;
        r.read_at(off, &mut a[..n]).unwrap();
        dev.read_at(off, &mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "{}: differs at {off}", dev.describe());
        off += n as u64;
    }
}

/// An OVF of `disks` (file name, disk id, controller instance id, address),
/// listed in that order, with an IDE controller (id 3) and a SCSI
/// controller (id 4).
fn ovf(disks: &[(&str, &str, &str, &str)]) -> String {
    let mut refs = String::new();
    let mut section = String::new();
    let mut items = String::new();
    for (i, (file, id, parent, addr)) in disks.iter().enumerate() {
        refs += &format!("    <File ovf:href=\"{file}\" ovf:id=\"file{i}\"/>\n");
        section += &format!(
            "    <Disk ovf:capacity=\"1\" ovf:capacityAllocationUnits=\"byte * 2^30\" \
             ovf:diskId=\"{id}\" ovf:fileRef=\"file{i}\" \
             ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n"
        );
        items += &format!(
            "      <Item>\n        <rasd:AddressOnParent>{addr}</rasd:AddressOnParent>\n\
             \x20       <rasd:ElementName>Hard Disk {i}</rasd:ElementName>\n\
             \x20       <rasd:HostResource>ovf:/disk/{id}</rasd:HostResource>\n\
             \x20       <rasd:InstanceID>{}</rasd:InstanceID>\n\
             \x20       <rasd:Parent>{parent}</rasd:Parent>\n\
             \x20       <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>\n",
            10 + i
        );
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
{refs}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{section}  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>IDE 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
{items}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// A small raw disk of `mib` MiB whose 4 KiB blocks name themselves.
fn small_raw(path: &Path, mib: usize, seed: usize) {
    let mut data = vec![0u8; mib << 20];
    for (i, b) in data.chunks_mut(4096).enumerate() {
        if i % 3 != 0 {
            b.fill(((i * 7 + seed) % 251) as u8 + 1);
        }
    }
    std::fs::write(path, data).unwrap();
}

fn stream_vmdk(raw: &Path, out: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(raw),
            s(out),
        ],
    );
}

/// `tar --format=FORMAT -cf ova -C dir members...`
fn tar(format: &str, ova: &Path, dir: &Path, members: &[&str]) {
    let mut a = vec!["--format", format, "-cf", s(ova), "-C", s(dir)];
    a.extend_from_slice(members);
    run("tar", &a);
}

/// The demo guest (boot disk) and a data disk in an OVA whose OVF lists the
/// data disk first (SCSI address 1), the boot disk second (SCSI address
/// 0), and whose archive holds the data disk first too: the boot disk comes
/// first. Each format of tar header; the disks read like their raw images,
/// and opening plus reading the boot disk's first MiB reads a few hundred
/// KiB of a multi-MiB archive.
#[test]
fn ova_disks_come_in_boot_order_and_read_like_their_raw_images() {
    let raw = demo();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_raw(&d.join("data.raw"), 3, 1);
    stream_vmdk(&d.join("data.raw"), &d.join("aa-data.vmdk"));
    stream_vmdk(&raw, &d.join("zz-boot.vmdk"));
    std::fs::write(
        d.join("vm.ovf"),
        ovf(&[
            ("aa-data.vmdk", "vmdisk1", "4", "1"),
            ("zz-boot.vmdk", "vmdisk2", "4", "0"),
        ]),
    )
    .unwrap();
    for format in ["ustar", "pax", "gnu"] {
        let ova = d.join(format!("vm-{format}.ova"));
        tar(format, &ova, d, &["vm.ovf", "aa-data.vmdk", "zz-boot.vmdk"]);
        let set = DiskSet::open(std::slice::from_ref(&ova), false).unwrap();
        let disks = set.disks();
        assert_eq!(disks.len(), 2, "{format}");
        assert_eq!(disks[0].member(), Some("zz-boot.vmdk"), "{format}");
        assert_eq!(disks[1].member(), Some("aa-data.vmdk"), "{format}");
        assert_eq!(disks[0].path(), ova);
        let mut mib = vec![0u8; 1 << 20];
        disks[0].device().read_at(0, &mut mib).unwrap();
        let (bytes, calls) = set.read_stats();
        let size = std::fs::metadata(&ova).unwrap().len();
        eprintln!("{format}: open + 1 MiB of the boot disk read {bytes} bytes in {calls} calls of a {size}-byte OVA");
        assert!(bytes < size / 4, "{format}: {bytes} of {size}");
        assert_same(&d.join("data.raw"), disks[1].device().as_ref());
        if format == "pax" {
            assert_same(&raw, disks[0].device().as_ref());
        }
        assert!(
            disks[0].device().describe().contains("member zz-boot.vmdk"),
            "{}",
            disks[0].device().describe()
        );
        // Writes: staged in the overlay, never committed; opening for writing
        // is refused with what to do.
        disks[0].device().write_at(0, b"x").unwrap();
        let err = set.commit(&Default::default()).unwrap_err().to_string();
        assert!(err.contains("OVA") && err.contains("tar -xf"), "{err}");
        let err = DiskSet::open(std::slice::from_ref(&ova), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OVA") && err.contains("tar -xf"), "{err}");
        std::fs::remove_file(&ova).unwrap();
    }
}

/// An IDE disk comes before a SCSI disk at a lower address, a long member
/// name (a GNU long-name header) is found, and `./` prefixes (`tar -C dir .`
/// style) are ignored.
#[test]
fn ide_before_scsi_and_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long = format!("{}-ide.vmdk", "x".repeat(120));
    small_raw(&d.join("a.raw"), 1, 2);
    small_raw(&d.join("b.raw"), 2, 3);
    stream_vmdk(&d.join("a.raw"), &d.join("scsi.vmdk"));
    stream_vmdk(&d.join("b.raw"), &d.join(&long));
    std::fs::write(
        d.join("vm.ovf"),
        ovf(&[("scsi.vmdk", "d1", "4", "0"), (&long, "d2", "3", "1")]),
    )
    .unwrap();
    let ova = d.join("vm.ova");
    tar(
        "gnu",
        &ova,
        d,
        &["./vm.ovf", "./scsi.vmdk", &format!("./{long}")],
    );
    let set = DiskSet::open(std::slice::from_ref(&ova), false).unwrap();
    let names: Vec<_> = set.disks().iter().map(|x| x.member().unwrap()).collect();
    assert_eq!(names, [long.as_str(), "scsi.vmdk"]);
    assert_same(&d.join("b.raw"), set.disks()[0].device().as_ref());
    assert_same(&d.join("a.raw"), set.disks()[1].device().as_ref());
}

/// Write `bytes` as an OVA and open it: the error text.
fn refused(d: &Path, bytes: &[u8], limits: &ImageLimits) -> String {
    let p = d.join("h.ova");
    std::fs::write(&p, bytes).unwrap();
    let f = FileDevice::open(&p).unwrap();
    match open_ova(&f, limits) {
        Ok(disks) => panic!(
            "opened: {:?}",
            disks.iter().map(|x| &x.name).collect::<Vec<_>>()
        ),
        Err(e) => e.to_string(),
    }
}

fn set_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// An OVA of `ovf_text` and the disk `data.vmdk`.
fn ova_bytes(d: &Path, ovf_text: &str) -> Vec<u8> {
    std::fs::write(d.join("vm.ovf"), ovf_text).unwrap();
    let ova = d.join("t.ova");
    tar("ustar", &ova, d, &["vm.ovf", "data.vmdk"]);
    std::fs::read(ova).unwrap()
}

#[test]
fn hostile_archives_and_ovfs_are_refused_naming_what() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_raw(&d.join("data.raw"), 1, 4);
    stream_vmdk(&d.join("data.raw"), &d.join("data.vmdk"));
    let good_ovf = ovf(&[("data.vmdk", "d1", "4", "0")]);
    let good = ova_bytes(d, &good_ovf);
    let l = ImageLimits::default();
    let p = d.join("ok.ova");
    std::fs::write(&p, &good).unwrap();
    assert_eq!(
        open_ova(&FileDevice::open(&p).unwrap(), &l).unwrap().len(),
        1
    );
    // The disk member cut short: past the end of the archive.
    let disk_header = 512
        * (1 + std::fs::metadata(d.join("vm.ovf"))
            .unwrap()
            .len()
            .div_ceil(512) as usize);
    let err = refused(d, &good[..disk_header + 1024], &l);
    assert!(
        err.contains("past the end of the archive")
            && err.contains(&format!("offset {disk_header}")),
        "{err}"
    );
    // A damaged header: the checksum no longer matches.
    let mut b = good.clone();
    b[disk_header + 10] ^= 1;
    let err = refused(d, &b, &l);
    assert!(
        err.contains("checksum") && err.contains(&format!("offset {disk_header}")),
        "{err}"
    );
    // A huge size field (checksum fixed): past the end.
    let mut b = good.clone();
    b[disk_header + 124..disk_header + 136].copy_from_slice(b"77777777777\0");
    set_checksum(&mut b[disk_header..disk_header + 512]);
    assert!(refused(d, &b, &l).contains("past the end"));
    // Base-256 size beyond u64.
    let mut b = good.clone();
    b[disk_header + 124] = 0x80;
    b[disk_header + 125..disk_header + 136].fill(0xff);
    set_checksum(&mut b[disk_header..disk_header + 512]);
    assert!(refused(d, &b, &l).contains("size field"));
    // Too many members for the limit.
    let two = ImageLimits {
        max_archive_members: 1,
        ..ImageLimits::default()
    };
    assert!(refused(d, &good, &two).contains("more than 1 members"));
    // OVF too large for the limit.
    let tiny = ImageLimits {
        max_descriptor_bytes: 100,
        ..ImageLimits::default()
    };
    assert!(refused(d, &good, &tiny).contains("limit of 100 bytes"));
    // The OVF names a file the archive does not hold.
    let err = refused(
        d,
        &ova_bytes(d, &good_ovf.replace("data.vmdk", "gone.vmdk")),
        &l,
    );
    assert!(
        err.contains("gone.vmdk") && err.contains("no such member"),
        "{err}"
    );
    // Gzip-compressed and chunked files.
    let gz = good_ovf.replace(
        "ovf:id=\"file0\"",
        "ovf:id=\"file0\" ovf:compression=\"gzip\"",
    );
    let err = refused(d, &ova_bytes(d, &gz), &l);
    assert!(
        err.contains("gzip-compressed") && err.contains("data.vmdk"),
        "{err}"
    );
    let ch = good_ovf.replace(
        "ovf:id=\"file0\"",
        "ovf:id=\"file0\" ovf:chunkSize=\"1000\"",
    );
    assert!(refused(d, &ova_bytes(d, &ch), &l).contains("chunks"));
    // Entity bombs: a DTD is refused before parsing; an undefined entity is
    // not well-formed.
    let bomb = good_ovf.replace(
        "<Envelope",
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>\n<Envelope",
    );
    assert!(refused(d, &ova_bytes(d, &bomb), &l).contains("DTD"));
    let undefined = good_ovf.replace("<Info>A virtual machine</Info>", "<Info>&lol9;</Info>");
    assert!(refused(d, &ova_bytes(d, &undefined), &l).contains("not well-formed"));
    // Not an OVF; a disk item naming an unknown disk; two virtual systems;
    // more disks than the limit; no disks.
    assert!(refused(d, &ova_bytes(d, "<html/>"), &l).contains("not an OVF"));
    let unknown = good_ovf.replace("ovf:/disk/d1", "ovf:/disk/nope");
    assert!(refused(d, &ova_bytes(d, &unknown), &l).contains("\"nope\""));
    let twice = good_ovf.replace("</VirtualSystem>", "</VirtualSystem><VirtualSystem/>");
    assert!(refused(d, &ova_bytes(d, &twice), &l).contains("2 virtual systems"));
    let zero = ImageLimits {
        max_extents: 0,
        ..ImageLimits::default()
    };
    assert!(refused(d, &good, &zero).contains("more than the limit of 0"));
    let none = good_ovf.replace("ovf:fileRef=\"file0\"", "");
    assert!(refused(d, &ova_bytes(d, &none), &l).contains("no disk"));
    // The first member is not the OVF.
    let ova = d.join("t.ova");
    tar("ustar", &ova, d, &["data.vmdk", "vm.ovf"]);
    assert!(refused(d, &std::fs::read(&ova).unwrap(), &l).contains("first member is \"data.vmdk\""));
    // A duplicate member.
    std::fs::write(d.join("vm.ovf"), &good_ovf).unwrap();
    tar(
        "ustar",
        &ova,
        d,
        &["--hard-dereference", "vm.ovf", "data.vmdk", "data.vmdk"],
    );
    assert!(refused(d, &std::fs::read(&ova).unwrap(), &l).contains("twice"));
    // Truncated anywhere, damaged anywhere: an error or disks, never a panic.
    for cut in (0..good.len()).step_by(509) {
        let p = d.join("cut.ova");
        std::fs::write(&p, &good[..cut]).unwrap();
        let _ = DiskSet::open(std::slice::from_ref(&p), false);
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = good.clone();
        let at = (x % 4096) as usize;
        b[at] ^= (x >> 32) as u8 | 1;
        let p = d.join("bad.ova");
        std::fs::write(&p, &b).unwrap();
        if let Ok(set) = DiskSet::open(std::slice::from_ref(&p), false) {
            for disk in set.disks() {
                let mut buf = vec![0u8; disk.len().min(1 << 20) as usize];
                let _ = disk.device().read_at(0, &mut buf);
            }
        }
    }
}
