//! Images partitioned by sfdisk (util-linux), compared with `sfdisk -J`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{mem, put_entry, run, sfdisk_image, sfdisk_json, tool};
use serde_json::Value;
use vmie_disk::{Device, FileDevice};
use vmie_part::{read_partitions, PartOptions, PartitionTable, TableKind};

const MIB: u64 = 1 << 20;

fn open(path: &Path) -> Arc<dyn Device> {
    Arc::new(FileDevice::open(path).unwrap())
}

/// Compare every partition with sfdisk's JSON: number (from the node name),
/// start, size, type, bootable, and for GPT uuid and name.
fn compare_with_sfdisk(table: &PartitionTable, json: &Value) {
    let pt = &json["partitiontable"];
    let ss = pt["sectorsize"].as_u64().unwrap();
    let label = pt["label"].as_str().unwrap();
    let id = pt["id"].as_str().unwrap().to_lowercase();
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(table.partitions.len(), parts.len(), "{table:#?}");
    for (p, j) in table.partitions.iter().zip(parts) {
        let node = j["node"].as_str().unwrap();
        let number: u32 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p.number, number, "{node}");
        assert_eq!(p.start, j["start"].as_u64().unwrap() * ss, "{node} start");
        assert_eq!(p.size, j["size"].as_u64().unwrap() * ss, "{node} size");
        assert_eq!(p.device.len(), p.size);
        let ty = j["type"].as_str().unwrap().to_lowercase();
        match label {
            "dos" => {
                assert_eq!(p.type_id, format!("0x{:0>2}", ty), "{node} type");
                assert_eq!(p.bootable, j["bootable"].as_bool().unwrap_or(false));
                let sig = id.trim_start_matches("0x");
                assert_eq!(p.uuid, Some(format!("{sig}-{number:02x}")), "{node} uuid");
                assert_eq!(p.name, None);
            }
            "gpt" => {
                assert_eq!(p.type_id, ty, "{node} type");
                let uuid = j["uuid"].as_str().map(str::to_lowercase);
                assert_eq!(p.uuid, uuid, "{node} uuid");
                assert_eq!(p.name.as_deref(), j["name"].as_str(), "{node} name");
                let attrs = j["attrs"].as_str().unwrap_or("");
                assert_eq!(p.bootable, attrs.contains("LegacyBIOSBootable"));
            }
            other => panic!("label {other}"),
        }
    }
    let ours = table.disk_id.clone().unwrap();
    assert_eq!(ours, id.trim_start_matches("0x"));
}

const MBR_SCRIPT: &str = "label: dos\nlabel-id: 0xa1b2c3d4\n\n\
    start=2048, size=20480, type=83, bootable\n\
    start=22528, size=100000, type=5\n\
    start=24576, size=20480, type=82\n\
    start=47104, size=30000, type=83\n";

#[test]
fn mbr_with_logicals() {
    let img = sfdisk_image(64 * MIB, MBR_SCRIPT);
    let table = read_partitions(open(img.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    let numbers: Vec<_> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    compare_with_sfdisk(&table, &sfdisk_json(img.path()));
    let p = &table.partitions;
    assert!(p[0].bootable && !p[2].bootable);
    assert_eq!(p[1].type_name, Some("Extended"));
    assert!(p[1].is_extended() && !p[0].is_extended());
    assert_eq!(p[2].type_name, Some("Linux swap / Solaris"));
    assert_eq!(p[2].uuid.as_deref(), Some("a1b2c3d4-05"));
    assert_eq!(
        p[3].device.describe(),
        format!("{} partition 6", img.path().display())
    );
}

pub const GPT_SCRIPT: &str = "label: gpt\nlabel-id: 11111111-2222-3333-4444-555555555555\n\n\
    start=2048, size=20480, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, \
      uuid=AAAAAAAA-0000-4000-8000-000000000001, name=\"EFI system\", attrs=\"LegacyBIOSBootable\"\n\
    size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, \
      uuid=aaaaaaaa-0000-4000-8000-000000000002, name=\"root fs\"\n\
    size=10240, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, \
      uuid=aaaaaaaa-0000-4000-8000-000000000003, name=\"swap\"\n";

#[test]
fn gpt_with_names_and_uuids() {
    let img = sfdisk_image(64 * MIB, GPT_SCRIPT);
    let table = read_partitions(open(img.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    compare_with_sfdisk(&table, &sfdisk_json(img.path()));
    let names: Vec<_> = table.partitions.iter().map(|p| p.type_name).collect();
    assert_eq!(
        names,
        [
            Some("EFI System"),
            Some("Linux filesystem"),
            Some("Linux swap")
        ]
    );
    assert!(table.partitions[0].bootable);
    assert_eq!(
        table.disk_id.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
}

fn gpt_bytes() -> (Vec<u8>, Value) {
    let img = sfdisk_image(64 * MIB, GPT_SCRIPT);
    (std::fs::read(img.path()).unwrap(), sfdisk_json(img.path()))
}

/// Primary header zeroed: the backup at the last LBA is used, with a warning.
#[test]
fn gpt_primary_zeroed_uses_backup() {
    let (mut data, json) = gpt_bytes();
    data[512..1024].fill(0);
    let last = data.len() as u64 / 512 - 1;
    let table = read_partitions(mem("g.img", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    compare_with_sfdisk(&table, &json);
    let want = format!("using the backup at LBA {last}");
    assert!(
        table
            .warnings
            .iter()
            .any(|w| w.contains("primary GPT header damaged") && w.contains(&want)),
        "{:?}",
        table.warnings
    );
}

/// Primary header CRC broken by a flipped byte, and separately the primary
/// entry array damaged (header fine): both fall back to the backup.
#[test]
fn gpt_primary_corrupted_uses_backup() {
    let (orig, json) = gpt_bytes();
    for (what, off) in [("header", 512 + 40), ("entry array", 1024 + 20)] {
        let mut data = orig.clone();
        data[off] ^= 0x5a;
        let table = read_partitions(mem("g.img", data), &PartOptions::default()).unwrap();
        compare_with_sfdisk(&table, &json);
        assert!(
            table
                .warnings
                .iter()
                .any(|w| w.contains("using the backup")),
            "{what}: {:?}",
            table.warnings
        );
    }
}

/// Backup damaged, primary fine: primary used, warning about the backup.
#[test]
fn gpt_backup_damaged_warns() {
    let (mut data, json) = gpt_bytes();
    let n = data.len();
    data[n - 512..].fill(0);
    let table = read_partitions(mem("g.img", data), &PartOptions::default()).unwrap();
    compare_with_sfdisk(&table, &json);
    assert!(
        table
            .warnings
            .iter()
            .any(|w| w.contains("backup GPT header missing or damaged")),
        "{:?}",
        table.warnings
    );
}

/// Both headers gone while the protective MBR stays: a clear refusal.
#[test]
fn gpt_both_headers_damaged_is_refused() {
    let (mut data, _) = gpt_bytes();
    let n = data.len();
    data[512 + 3] ^= 1;
    data[n - 512 + 3] ^= 1;
    let e = read_partitions(mem("g.img", data), &PartOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("g.img: protective MBR"), "{msg}");
    assert!(e.is_refusal());
}

/// Hybrid MBR: the protective entry shrunk to the GPT area, plus a second
/// entry (type 0x0c) mirroring GPT partition 1.
#[test]
fn hybrid_mbr_is_read_as_gpt() {
    let (mut data, json) = gpt_bytes();
    put_entry(&mut data, 0, 0, 0, 0xee, 1, 2047);
    put_entry(&mut data, 0, 1, 0x80, 0x0c, 2048, 20480);
    let table = read_partitions(mem("h.img", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    compare_with_sfdisk(&table, &json);
    assert!(
        table
            .warnings
            .iter()
            .any(|w| w.contains("hybrid MBR") && w.contains("0x0c")),
        "{:?}",
        table.warnings
    );
}

/// A GPT whose backup is not at the last LBA (image grown after
/// partitioning): the primary's alternate LBA is followed, and when the
/// primary is damaged our own parse reads the backup the gpt crate cannot
/// find.
#[test]
fn gpt_grown_image() {
    let (mut data, json) = gpt_bytes();
    data.resize(data.len() + 8 * MIB as usize, 0);
    let table = read_partitions(mem("g.img", data.clone()), &PartOptions::default()).unwrap();
    compare_with_sfdisk(&table, &json);
    assert!(
        table
            .warnings
            .iter()
            .any(|w| w.contains("resized or truncated")),
        "{:?}",
        table.warnings
    );
    data[512..1024].fill(0);
    let table = read_partitions(mem("g.img", data), &PartOptions::default()).unwrap_err();
    // With the primary gone the backup's position is unknown (it is not at
    // the last LBA): refused, as Linux does.
    assert!(table.to_string().contains("no usable GPT"), "{table}");
}

/// 4096-byte logical sectors (made with `fdisk -b 4096`, since sfdisk 2.38
/// has no sector-size option): found even though 512 is asked for.
#[test]
fn gpt_4k_sectors() {
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(64 * MIB).unwrap();
    run(
        Command::new(tool("fdisk"))
            .args(["-b", "4096"])
            .arg(img.path()),
        Some("g\nn\n1\n256\n2815\nx\nn\nbig\nr\nw\n"),
    );
    let table = read_partitions(open(img.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.partitions.len(), 1);
    let p = &table.partitions[0];
    assert_eq!((p.start, p.size), (256 * 4096, 2560 * 4096));
    assert_eq!(p.name.as_deref(), Some("big"));
    assert_eq!(p.type_name, Some("Linux filesystem"));
    assert!(
        table.warnings.iter().any(|w| w.contains("4096-byte")),
        "{:?}",
        table.warnings
    );
    let opts = PartOptions {
        sector_size: 4096,
        ..PartOptions::default()
    };
    let table = read_partitions(open(img.path()), &opts).unwrap();
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    assert_eq!(table.partitions[0].start, 256 * 4096);
}

#[test]
fn no_table_zeros_and_ext4() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(16 * MIB).unwrap();
    let table = read_partitions(open(f.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::None);
    assert!(table.partitions.is_empty() && table.warnings.is_empty());
    assert_eq!(table.disk_id, None);

    run(
        Command::new(tool("mkfs.ext4"))
            .args(["-F", "-q"])
            .arg(f.path()),
        None,
    );
    let table = read_partitions(open(f.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::None);
    assert!(table.partitions.is_empty() && table.warnings.is_empty());
}

/// FAT on the whole disk: its boot sector has 0x55AA and FAT strings.
#[test]
fn no_table_whole_disk_fat() {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(64 * MIB).unwrap();
    run(Command::new(tool("mkfs.vfat")).arg(f.path()), None);
    let table = read_partitions(open(f.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::None, "{table:?}");
    assert!(
        table.warnings.iter().any(|w| w.contains("FAT boot sector")),
        "{:?}",
        table.warnings
    );
}

/// An MBR with an empty table is still an MBR (as blkid says), with a warning.
#[test]
fn empty_mbr() {
    let img = sfdisk_image(8 * MIB, "label: dos\nlabel-id: 0x01020304\n");
    let table = read_partitions(open(img.path()), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert_eq!(table.disk_id.as_deref(), Some("01020304"));
    assert!(table.partitions.is_empty());
    assert_eq!(table.warnings.len(), 1, "{:?}", table.warnings);
}
