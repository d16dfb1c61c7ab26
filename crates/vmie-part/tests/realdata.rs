//! Real-world images: util-linux's blkid partition-table test images (with
//! blkid's expected output) and dfvfs test data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{gz_image, mem, qemu_raw, xz_image, REALDATA};
use vmie_part::{read_partitions, PartOptions, PartitionTable, TableKind};

/// One `#N: start size type ...` line of blkid's lowprobe-pt output.
#[derive(Debug)]
struct Expected {
    number: u32,
    start: u64,
    size: u64,
    numeric_type: u32,
    name: Option<String>,
    uuid: Option<String>,
    type_guid: Option<String>,
    nested: bool,
}

/// Parse `tests/expected/blkid/lowprobe-pt-*`: the header line and the
/// partitions (sectors of 512 bytes).
fn expected(file: &str) -> (u64, String, Option<String>, Vec<Expected>) {
    let path = Path::new(REALDATA)
        .join("util-linux-blkid/tests/expected/blkid")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    let get = |key: &str| {
        head.split(", ")
            .find_map(|kv| kv.strip_prefix(key))
            .map(str::to_string)
    };
    let size: u64 = get("size: ").unwrap().parse().unwrap();
    let pt = get("PT: ").unwrap();
    let id = head.split("id=").nth(1).map(|s| s.trim().to_string());
    let quoted = |line: &str, key: &str| {
        line.split(&format!("{key}='"))
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .map(str::to_string)
    };
    let mut parts = Vec::new();
    for line in lines.filter(|l| l.starts_with('#')) {
        let mut f = line.split_whitespace();
        let number = f.next().unwrap().trim_matches(['#', ':']).parse().unwrap();
        let start = f.next().unwrap().parse().unwrap();
        let size = f.next().unwrap().parse().unwrap();
        let ty = f.next().unwrap().trim_start_matches("0x");
        parts.push(Expected {
            number,
            start,
            size,
            numeric_type: u32::from_str_radix(ty, 16).unwrap(),
            name: quoted(line, "name"),
            uuid: quoted(line, "uuid"),
            type_guid: quoted(line, "type"),
            nested: line.trim_end().ends_with(')'),
        });
    }
    (size, pt, id, parts)
}

fn blkid_image(name: &str) -> Vec<u8> {
    xz_image(
        &Path::new(REALDATA)
            .join("util-linux-blkid/tests/ts/blkid/images-pt")
            .join(name),
    )
}

fn check_against(table: &PartitionTable, expected: &[Expected]) {
    let ours: Vec<_> = table.partitions.iter().map(|p| p.number).collect();
    let theirs: Vec<_> = expected.iter().map(|e| e.number).collect();
    assert_eq!(ours, theirs, "partition numbers");
    for (p, e) in table.partitions.iter().zip(expected) {
        let n = e.number;
        assert_eq!(p.start, e.start * 512, "partition {n} start");
        assert_eq!(p.size, e.size * 512, "partition {n} size");
        assert_eq!(p.uuid, e.uuid, "partition {n} uuid");
        assert_eq!(p.name, e.name, "partition {n} name");
        match &e.type_guid {
            Some(guid) => assert_eq!(&p.type_id, guid, "partition {n} type"),
            None => assert_eq!(p.type_id, format!("0x{:02x}", e.numeric_type)),
        }
        assert_eq!(p.device.start(), p.start);
    }
}

#[test]
fn blkid_gpt_image() {
    let data = blkid_image("gpt.img.xz");
    let (size, pt, id, expected) = expected("lowprobe-pt-gpt");
    assert_eq!(data.len() as u64, size);
    assert_eq!(pt, "gpt");
    let table = read_partitions(mem("gpt.img", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.disk_id, id);
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    assert_eq!(expected.len(), 5);
    check_against(&table, &expected);
    let first = &table.partitions[0];
    assert_eq!(first.type_name, Some("Microsoft basic data"));
    assert_eq!(first.name.as_deref(), Some("ThisIsName"));
    assert_eq!(
        vmie_disk::Device::describe(&first.device),
        "gpt.img partition 1"
    );
}

/// dos+bsd: an MBR whose partition 2 (type 0xa5, FreeBSD) holds a BSD
/// disklabel. blkid lists the disklabel's slices as nested partitions 5 and
/// 6; Linux does too (as subpartitions), but we do not read BSD disklabels:
/// we check the DOS partitions exactly and that nothing else is listed.
#[test]
fn blkid_dos_bsd_image() {
    let data = blkid_image("dos+bsd.img.xz");
    let (size, pt, id, expected) = expected("lowprobe-pt-dos+bsd");
    assert_eq!(data.len() as u64, size);
    assert_eq!(pt, "dos");
    let (nested, dos): (Vec<_>, Vec<_>) = expected.into_iter().partition(|e| e.nested);
    assert_eq!(nested.iter().map(|e| e.number).collect::<Vec<_>>(), [5, 6]);
    let table = read_partitions(mem("dos+bsd.img", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert_eq!(table.disk_id, id);
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    check_against(&table, &dos);
    assert_eq!(table.partitions[1].type_name, Some("FreeBSD"));
}

/// dfvfs mbr.raw.gz: primary 1, extended 2, logical 5 (values checked with
/// `sfdisk -d`: start 1/129 sectors, 130/8062, 131/129, label-id 0xdf7c7c37).
#[test]
fn dfvfs_mbr_with_logical() {
    let path = Path::new(REALDATA).join("dfvfs/test_data_history/mbr.raw.gz");
    let data = gz_image(&path);
    let table = read_partitions(mem("mbr.raw", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert_eq!(table.disk_id.as_deref(), Some("df7c7c37"));
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    let got: Vec<_> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.start / 512, p.size / 512, p.type_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1, 129, "0x83"),
            (2, 130, 8062, "0x05"),
            (5, 131, 129, "0x83")
        ]
    );
    assert!(table.partitions[1].is_extended());
    assert_eq!(table.partitions[2].uuid.as_deref(), Some("df7c7c37-05"));
    assert_eq!(table.partitions[1].type_name, Some("Extended"));
}

/// dfvfs windows_volume.qcow2: an NTFS volume on the whole disk. Its boot
/// sector ends in 0x55AA but is not a partition table.
#[test]
fn dfvfs_ntfs_whole_disk_is_not_mbr() {
    let data = qemu_raw(&Path::new(REALDATA).join("dfvfs/test_data/windows_volume.qcow2"));
    assert_eq!(&data[3..11], b"NTFS    ");
    assert_eq!(&data[510..512], &[0x55, 0xaa]);
    let table = read_partitions(mem("windows_volume.raw", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::None);
    assert!(table.partitions.is_empty());
    assert!(
        table
            .warnings
            .iter()
            .any(|w| w.contains("NTFS boot sector")),
        "{:?}",
        table.warnings
    );
}

/// dfvfs ext2.qcow2: a bare ext2 filesystem, no table.
#[test]
fn dfvfs_ext2_whole_disk_has_no_table() {
    let data = qemu_raw(&Path::new(REALDATA).join("dfvfs/test_data/ext2.qcow2"));
    let table = read_partitions(mem("ext2.raw", data), &PartOptions::default()).unwrap();
    assert_eq!(table.kind, TableKind::None);
    assert!(table.partitions.is_empty());
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
}
