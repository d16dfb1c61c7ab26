//! Hostile input: random damage to real tables (proptest) and hand-made
//! attacks on the EBR chain and the GPT headers. `read_partitions` must
//! return `Ok` or `Err`, never panic, never hang, never hand out a window
//! outside the disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{fix_array_crc, fix_header_crc, mem, put_entry, put_u32, put_u64, sfdisk_image};
use proptest::prelude::*;
use vmie_disk::Device;
use vmie_part::{read_partitions, PartError, PartOptions, PartitionTable, TableKind};

const SMALL_MBR: &str = "label: dos\nlabel-id: 0x12345678\n\n\
    start=2, size=20, type=83, bootable\n\
    start=30, size=8000, type=5\n\
    start=40, size=20, type=82\n\
    start=70, size=7000, type=83\n";

const SMALL_GPT: &str = "label: gpt\n\n\
    start=40, size=100, type=L, name=\"a\"\n\
    start=200, size=1000, type=S\n\
    start=1300, size=2000, name=\"c\"\n";

/// 4 MiB images made once by sfdisk: MBR with logicals (every EBR in the
/// first 64 KiB) and GPT.
fn base(which: &str) -> &'static [u8] {
    static MBR: OnceLock<Vec<u8>> = OnceLock::new();
    static GPT: OnceLock<Vec<u8>> = OnceLock::new();
    let (cell, script) = match which {
        "mbr" => (&MBR, SMALL_MBR),
        _ => (&GPT, SMALL_GPT),
    };
    cell.get_or_init(|| {
        let img = sfdisk_image(4 << 20, script);
        std::fs::read(img.path()).unwrap()
    })
}

/// Invariants of any table we return.
fn check_sane(table: &PartitionTable, len: u64) {
    let mut numbers = std::collections::BTreeSet::new();
    for p in &table.partitions {
        assert!(numbers.insert(p.number), "duplicate number {}", p.number);
        assert!(p.size > 0);
        assert!(p.start.checked_add(p.size).is_some_and(|e| e <= len));
        assert_eq!(p.device.len(), p.size);
        assert_eq!(p.device.start(), p.start);
    }
    if table.kind == TableKind::None {
        assert!(table.partitions.is_empty());
    }
}

fn read(data: Vec<u8>, opts: &PartOptions) -> Result<PartitionTable, PartError> {
    let len = data.len() as u64;
    let r = read_partitions(mem("hostile.img", data), opts);
    if let Ok(t) = &r {
        check_sane(t, len);
    }
    if let Err(e) = &r {
        assert!(e.to_string().starts_with("hostile.img"), "{e}");
    }
    r
}

#[test]
fn base_images_read_cleanly() {
    let t = read(base("mbr").to_vec(), &PartOptions::default()).unwrap();
    let got: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start / 512))
        .collect();
    assert_eq!(got, [(1, 2), (2, 30), (5, 40), (6, 70)]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let t = read(base("gpt").to_vec(), &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

fn damage(
    mut data: Vec<u8>,
    flips: &[(usize, u8)],
    tail_flips: &[(usize, u8)],
    fix_crcs: bool,
    truncate: Option<usize>,
) -> Vec<u8> {
    for &(off, x) in flips {
        data[off % 65536] ^= x;
    }
    let n = data.len();
    for &(off, x) in tail_flips {
        data[n - 1 - off % 17408] ^= x;
    }
    if fix_crcs && &data[512..520] == b"EFI PART" {
        fix_array_crc_checked(&mut data, 512);
    }
    if let Some(t) = truncate {
        data.truncate(t % (n + 1));
    }
    data
}

/// Recompute the primary's CRCs when the fields allow it (so that random
/// values reach the limit checks and the gpt crate).
fn fix_array_crc_checked(data: &mut [u8], off: usize) {
    let lba = u64::from_le_bytes(data[off + 72..off + 80].try_into().unwrap());
    let n = u64::from(u32::from_le_bytes(
        data[off + 80..off + 84].try_into().unwrap(),
    ));
    let size = u64::from(u32::from_le_bytes(
        data[off + 84..off + 88].try_into().unwrap(),
    ));
    let end = lba
        .checked_mul(512)
        .and_then(|s| n.checked_mul(size).and_then(|l| s.checked_add(l)));
    if end.is_some_and(|e| e <= data.len() as u64) {
        fix_array_crc(data, off, 512);
    } else {
        fix_header_crc(data, off);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn damaged_mbr_never_panics(
        flips in prop::collection::vec((0usize..65536, 1u8..=255), 1..24),
        truncate in prop::option::of(0usize..(4 << 20)),
        small_limit in any::<bool>(),
    ) {
        let data = damage(base("mbr").to_vec(), &flips, &[], false, truncate);
        let opts = PartOptions {
            max_logical: if small_limit { 1 } else { 128 },
            ..PartOptions::default()
        };
        let _ = read(data, &opts);
    }

    /// Flips aimed at the EBRs and entries, where they matter.
    #[test]
    fn damaged_mbr_entries_never_panic(
        flips in prop::collection::vec(
            (prop::sample::select(vec![446usize, 462, 478, 494, 30 * 512 + 446, 30 * 512 + 462, 68 * 512 + 446, 68 * 512 + 462]),
             0usize..16, any::<u8>()),
            1..12),
    ) {
        let mut data = base("mbr").to_vec();
        for (entry, byte, v) in flips {
            data[entry + byte] = v;
        }
        let _ = read(data, &PartOptions::default());
    }

    #[test]
    fn damaged_gpt_never_panics(
        flips in prop::collection::vec((0usize..65536, 1u8..=255), 1..24),
        tail_flips in prop::collection::vec((0usize..17408, 1u8..=255), 0..8),
        fix_crcs in any::<bool>(),
        truncate in prop::option::of(0usize..(4 << 20)),
    ) {
        let data = damage(base("gpt").to_vec(), &flips, &tail_flips, fix_crcs, truncate);
        let _ = read(data, &PartOptions::default());
    }

    /// Random values in the primary header's fields, CRCs fixed up.
    #[test]
    fn gpt_header_fields_never_panic(
        field in prop::sample::select(vec![12usize, 24, 32, 40, 48, 72, 80, 84]),
        value in prop_oneof![any::<u64>(), 0u64..200, Just(u64::MAX), Just(u64::from(u32::MAX))],
        fix in any::<bool>(),
    ) {
        let mut data = base("gpt").to_vec();
        let width = if matches!(field, 12 | 80 | 84) { 4 } else { 8 };
        data[512 + field..512 + field + width].copy_from_slice(&value.to_le_bytes()[..width]);
        if fix {
            fix_array_crc_checked(&mut data, 512);
        }
        let _ = read(data, &PartOptions::default());
    }
}

/// A disk with an MBR whose partition 2 is an extended partition at sector
/// `ext` of `ext_size` sectors.
fn mbr_with_extended(sectors: usize, ext: u32, ext_size: u32) -> Vec<u8> {
    let mut d = vec![0u8; sectors * 512];
    put_u32(&mut d, 440, 0xcafe_f00d);
    put_entry(&mut d, 0, 0, 0x80, 0x83, 1, 9);
    put_entry(&mut d, 0, 1, 0, 0x05, ext, ext_size);
    d
}

/// Write an EBR at absolute sector `at` (extended starts at `ext`): a logical
/// of `size` sectors one sector after the EBR, and a link to `next` (absolute).
fn ebr(d: &mut [u8], ext: u32, at: u32, size: u32, next: Option<u32>) {
    let off = at as usize * 512;
    put_entry(d, off, 0, 0, 0x83, 1, size);
    if let Some(n) = next {
        put_entry(d, off, 1, 0, 0x05, n - ext, size + 1);
    }
}

#[test]
fn ebr_loop_is_cut() {
    let mut d = mbr_with_extended(4096, 100, 3000);
    ebr(&mut d, 100, 100, 10, Some(200));
    ebr(&mut d, 100, 200, 10, Some(100)); // back to the first EBR
    let t = read(d, &PartOptions::default()).unwrap();
    let numbers: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    assert!(
        t.warnings.iter().any(|w| w.contains("loops back")),
        "{:?}",
        t.warnings
    );

    // An EBR linking to itself.
    let mut d = mbr_with_extended(4096, 100, 3000);
    ebr(&mut d, 100, 100, 10, Some(100));
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(
        t.warnings.iter().any(|w| w.contains("loops back")),
        "{:?}",
        t.warnings
    );
}

fn long_chain(n: u32) -> Vec<u8> {
    let sectors = 100 + 2 * n as usize + 10;
    let mut d = mbr_with_extended(sectors, 100, 2 * n + 5);
    for i in 0..n {
        let at = 100 + 2 * i;
        ebr(&mut d, 100, at, 1, (i + 1 < n).then_some(at + 2));
    }
    d
}

#[test]
fn ebr_chain_of_10000_is_cut_at_the_limit() {
    let d = long_chain(10_000);
    let start = Instant::now();
    let t = read(d.clone(), &PartOptions::default()).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(t.partitions.len(), 2 + 128);
    assert_eq!(t.partitions.last().unwrap().number, 132);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("more than 128 logical partitions")),
        "{:?}",
        t.warnings
    );

    // With a limit above the chain length, all of it is read (by mbrman,
    // which agrees with our walk), still quickly.
    let opts = PartOptions {
        max_logical: 20_000,
        ..PartOptions::default()
    };
    let start = Instant::now();
    let t = read(d, &opts).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(t.partitions.len(), 2 + 10_000);
    assert!(
        t.warnings.is_empty(),
        "{:?}",
        t.warnings[..3.min(t.warnings.len())].to_vec()
    );
    assert_eq!(t.partitions[10_001].number, 10_004);
    assert_eq!(t.partitions[10_001].start, (100 + 2 * 9_999 + 1) * 512);
}

#[test]
fn empty_ebrs_are_bounded() {
    // 500 EBRs linking onwards, none with a partition.
    let mut d = mbr_with_extended(2000, 100, 1800);
    for i in 0..500u32 {
        let off = (100 + 2 * i) as usize * 512;
        put_entry(&mut d, off, 1, 0, 0x05, 2 * (i + 1), 2);
    }
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert!(
        t.warnings.iter().any(|w| w.contains("EBRs in a row")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn partition_past_the_end_is_left_out() {
    let mut d = vec![0u8; 2048 * 512];
    put_entry(&mut d, 0, 0, 0, 0x83, 2, 100);
    put_entry(&mut d, 0, 1, 0, 0x83, 1000, 2000); // ends past sector 2048
    put_entry(&mut d, 0, 2, 0, 0x07, 5000, 10); // starts past the end
    put_entry(&mut d, 0, 3, 0, 0x0c, 200, 100);
    let t = read(d, &PartOptions::default()).unwrap();
    let numbers: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 4]);
    assert!(t
        .warnings
        .iter()
        .any(|w| w.contains("partition 2") && w.contains("ends beyond")));
    assert!(t
        .warnings
        .iter()
        .any(|w| w.contains("partition 3") && w.contains("starts beyond")));

    // A GPT entry past the end.
    let mut d = base("gpt").to_vec();
    let e = 1024 + 128; // entry 2
    put_u64(&mut d, e + 40, 1 << 40);
    fix_array_crc(&mut d, 512, 512);
    let t = read(d, &PartOptions::default()).unwrap();
    let numbers: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 3]);
    assert!(
        t.warnings.iter().any(|w| w.contains("partition 2")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn mbr_partition_at_sector_zero_does_not_reach_mbrman() {
    // mbrman 0.6.1 panics (unwrap on an empty range) when every used entry
    // starts at sector 0.
    let mut d = vec![0u8; 2048 * 512];
    put_entry(&mut d, 0, 0, 0, 0x83, 0, 100);
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 1);
    assert!(
        t.warnings.iter().any(|w| w.contains("sector 0")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn logical_near_u32_max_does_not_overflow() {
    let mut d = mbr_with_extended(4096, 100, u32::MAX - 100);
    put_entry(&mut d, 100 * 512, 0, 0, 0x83, u32::MAX - 50, 10);
    put_entry(&mut d, 100 * 512, 1, 0, 0x05, u32::MAX - 10, 10);
    let t = read(d, &PartOptions::default()).unwrap();
    // Extended ends past the disk, logical too: only partition 1 remains.
    assert_eq!(t.partitions.len(), 1);
    assert!(t.warnings.len() >= 2, "{:?}", t.warnings);
}

#[test]
fn bad_boot_indicator_means_no_table() {
    let mut d = vec![0u8; 2048 * 512];
    put_entry(&mut d, 0, 0, 0x12, 0x83, 2, 100);
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.kind, TableKind::None);
    assert!(
        t.warnings.iter().any(|w| w.contains("boot indicator 0x12")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn type_c5_is_not_extended_for_linux() {
    // mbrman treats 0xc5 as extended, Linux does not: our walk is used.
    let mut d = vec![0u8; 2048 * 512];
    put_entry(&mut d, 0, 0, 0, 0xc5, 2, 100);
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 1);
    assert!(!t.partitions[0].is_extended());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn drdos_style_ebr() {
    // Link in entry 1, logical in entry 2: Linux reads it, mbrman would not.
    let mut d = mbr_with_extended(4096, 100, 3000);
    put_entry(&mut d, 100 * 512, 0, 0, 0x05, 100, 50);
    put_entry(&mut d, 100 * 512, 1, 0, 0x83, 1, 10);
    put_entry(&mut d, 200 * 512, 0, 0, 0x82, 1, 20);
    let t = read(d, &PartOptions::default()).unwrap();
    let got: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start / 512, p.type_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1, "0x83"),
            (2, 100, "0x05"),
            (5, 101, "0x83"),
            (6, 201, "0x82")
        ]
    );
}

/// The GPT test image with the primary header's `field` set to `value` and
/// its CRC recomputed.
fn gpt_with(field: usize, width: usize, value: u64) -> Vec<u8> {
    let mut d = base("gpt").to_vec();
    d[512 + field..512 + field + width].copy_from_slice(&value.to_le_bytes()[..width]);
    fix_header_crc(&mut d, 512);
    d
}

fn gpt_refusal(d: Vec<u8>) -> String {
    let e = read(d, &PartOptions::default()).unwrap_err();
    assert!(matches!(e, PartError::GptHeader { .. }), "{e:?}");
    assert!(e.is_refusal());
    e.to_string()
}

#[test]
fn gpt_entry_size_129_is_refused() {
    let msg = gpt_refusal(gpt_with(84, 4, 129));
    assert!(msg.contains("primary GPT header at LBA 1"), "{msg}");
    assert!(msg.contains("partition entry size is 129"), "{msg}");
}

#[test]
fn gpt_huge_entry_count_is_refused() {
    let msg = gpt_refusal(gpt_with(80, 4, 0xFFFF_FFFF));
    assert!(
        msg.contains("number of partition entries is 4294967295"),
        "{msg}"
    );
    let msg = gpt_refusal(gpt_with(80, 4, 1025));
    assert!(msg.contains("limit of 1024"), "{msg}");
}

#[test]
fn gpt_entry_array_outside_disk_is_refused() {
    let msg = gpt_refusal(gpt_with(72, 8, 8190));
    assert!(msg.contains("partition entry array LBA is 8190"), "{msg}");
    let msg = gpt_refusal(gpt_with(72, 8, u64::MAX));
    assert!(msg.contains("does not fit"), "{msg}");
}

#[test]
fn gpt_header_size_out_of_range_is_refused() {
    // The CRC is computed over 92 bytes, as the gpt crate checks it.
    let mut d = base("gpt").to_vec();
    put_u32(&mut d, 512 + 12, 600);
    put_u32(&mut d, 512 + 16, 0);
    let crc = crc32fast::hash(&d[512..512 + 92]);
    put_u32(&mut d, 512 + 16, crc);
    let msg = gpt_refusal(d);
    assert!(msg.contains("header size is 600"), "{msg}");
}

#[test]
fn hostile_backup_is_refused_too() {
    let mut d = base("gpt").to_vec();
    let off = d.len() - 512;
    put_u32(&mut d, off + 84, 129);
    fix_header_crc(&mut d, off);
    let msg = gpt_refusal(d);
    assert!(msg.contains("backup GPT header at LBA 8191"), "{msg}");
}

#[test]
fn gpt_hostile_header_with_bad_crc_falls_back() {
    // part_size 129 but the CRC does not match: just a damaged primary.
    let mut d = base("gpt").to_vec();
    put_u32(&mut d, 512 + 84, 129);
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t.warnings.iter().any(|w| w.contains("using the backup")));
}

#[test]
fn protective_mbr_without_gpt_is_refused() {
    let mut d = vec![0u8; 2048 * 512];
    put_entry(&mut d, 0, 0, 0, 0xee, 1, 2047);
    let e = read(d, &PartOptions::default()).unwrap_err();
    assert!(matches!(e, PartError::NoUsableGpt { .. }), "{e:?}");
}

#[test]
fn gpt_without_protective_mbr_is_ignored() {
    let mut d = base("gpt").to_vec();
    d[..512].fill(0);
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.kind, TableKind::None);
    assert!(
        t.warnings.iter().any(|w| w.contains("no protective MBR")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn device_shorter_than_its_table() {
    // Only the first 40 sectors of the GPT image: backup and partitions gone.
    let d = base("gpt")[..40 * 512].to_vec();
    let t = read(d, &PartOptions::default()).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.partitions.is_empty());
    assert!(!t.warnings.is_empty());
}

/// Fault injection: a device that panics on every read made inside a panic
/// boundary (`vmie_disk::guard::inside`), that is, by mbrman or the gpt crate
/// (our own parse reads outside any boundary). No table we validate is known
/// to panic those crates, so this is how the boundary itself is proven: were
/// a crate call left unguarded, the panic would end the test.
#[derive(Debug)]
struct PanicsInsideGuard(std::sync::Arc<dyn Device>);

impl Device for PanicsInsideGuard {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), vmie_disk::DiskError> {
        if vmie_disk::guard::inside() {
            panic!("injected panic reading byte {offset}");
        }
        self.0.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), vmie_disk::DiskError> {
        self.0.write_at(offset, buf)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

#[test]
fn a_panic_in_mbrman_or_gpt_is_a_refusal_naming_disk_and_table() {
    for (which, want_table, want_parser) in [("mbr", "MBR", "mbrman"), ("gpt", "GPT", "gpt")] {
        let data = base(which).to_vec();
        // Unharmed, the same image reads.
        read(data.clone(), &PartOptions::default()).unwrap();
        let dev = std::sync::Arc::new(PanicsInsideGuard(mem("hostile.img", data)));
        let e = read_partitions(dev, &PartOptions::default()).unwrap_err();
        match &e {
            PartError::Panicked {
                disk,
                table,
                parser,
                message,
            } => {
                assert_eq!(disk, "hostile.img");
                assert_eq!(*table, want_table);
                assert_eq!(*parser, want_parser);
                assert!(message.contains("injected panic"), "{message}");
            }
            other => panic!("{which}: expected Panicked, got {other:?}"),
        }
        assert!(e.is_refusal());
        let text = e.to_string();
        assert!(
            text.starts_with("hostile.img: the ") && text.contains(want_table),
            "{text}"
        );
        assert!(!vmie_disk::guard::inside());
    }
}
