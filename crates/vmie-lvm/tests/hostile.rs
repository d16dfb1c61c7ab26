//! Hostile LVM metadata: a real PV (dfvfs's lvm 2.03 image) whose label,
//! metadata-area header or metadata text is damaged, with the checksums
//! re-sealed where the test wants the parser, not the checksum, to decide.
//! Every case is an error naming what is wrong, never a panic, never an
//! unbounded allocation, never a mapping outside the device.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use vmie_disk::checksum::lvm2_crc;
use vmie_disk::{Device, MemDevice};
use vmie_lvm::{scan, LvmOptions, Scan};

const MDA: usize = 4096;

fn base() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lvm.raw");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/dfvfs/test_data_history/lvm.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(src)
        .arg(&out)
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success());
    std::fs::read(out).unwrap()
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The committed text of the base image.
fn text_of(img: &[u8]) -> String {
    let off = le64(img, MDA + 40) as usize;
    let len = le64(img, MDA + 48) as usize;
    String::from_utf8_lossy(&img[MDA + off..MDA + off + len])
        .trim_end_matches('\0')
        .to_string()
}

/// Replace the committed text and re-seal its checksum and the header's.
fn reseal(img: &mut [u8], text: &[u8]) {
    let off = le64(img, MDA + 40) as usize;
    let size = le64(img, MDA + 32) as usize;
    assert!(off + text.len() <= size, "the test text must fit the ring");
    img[MDA + off..MDA + off + text.len()].copy_from_slice(text);
    img[MDA + 48..MDA + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    img[MDA + 56..MDA + 60].copy_from_slice(&lvm2_crc(text).to_le_bytes());
    let c = lvm2_crc(&img[MDA + 4..MDA + 512]);
    img[MDA..MDA + 4].copy_from_slice(&c.to_le_bytes());
}

fn scan_of(img: Vec<u8>, opts: &LvmOptions) -> (Scan, Vec<Arc<dyn Device>>) {
    let devs: Vec<Arc<dyn Device>> = vec![Arc::new(MemDevice::new("pv.raw", img))];
    (scan(&devs, opts), devs)
}

/// The scan refuses the group and names `word`; no LV opens.
fn refused(img: Vec<u8>, word: &str) {
    let (s, devs) = scan_of(img, &LvmOptions::default());
    let mut said: Vec<String> = s.problems.clone();
    for vg in &s.vgs {
        for lv in &vg.meta.lvs {
            match vg.open(lv, &devs) {
                Ok(d) => panic!("{} opened ({} bytes) though {word}", lv.name, d.len()),
                Err(e) => said.push(e.to_string()),
            }
        }
    }
    assert!(
        said.iter().any(|p| p.contains(word)),
        "expected {word:?} in {said:?}"
    );
}

#[test]
fn the_base_reads() {
    let img = base();
    let (s, devs) = scan_of(img.clone(), &LvmOptions::default());
    assert!(s.problems.is_empty());
    let vg = &s.vgs[0];
    vg.open(&vg.meta.lvs[0], &devs).unwrap();
    // Re-sealing the same text changes nothing.
    let mut same = img.clone();
    reseal(&mut same, text_of(&img).as_bytes());
    let (s2, _) = scan_of(same, &LvmOptions::default());
    assert_eq!(s2.vgs[0].meta, vg.meta);
}

#[test]
fn damaged_checksums_are_named() {
    let img = base();
    let mut label = img.clone();
    label[512 + 40] ^= 1; // inside the PV header, covered by the label CRC
    refused(label, "PV label checksum");
    let mut header = img.clone();
    header[MDA + 100] ^= 1;
    refused(header, "metadata-area header checksum");
    let mut text = img.clone();
    let off = le64(&img, MDA + 40) as usize;
    text[MDA + off + 10] ^= 1;
    refused(text, "metadata text checksum");
}

#[test]
fn hostile_text_is_refused_by_name() {
    let img = base();
    let t = text_of(&img);
    let with = |from: &str, to: &str| {
        assert!(t.contains(from), "{from} not in the base text");
        let mut m = img.clone();
        reseal(&mut m, t.replacen(from, to, 1).as_bytes());
        m
    };
    // Extents far past the PV's end.
    refused(
        with("extent_count = 1", "extent_count = 1099511627776"),
        "past the end",
    );
    // A count that does not fit the parser's integers.
    refused(
        with("extent_count = 1", "extent_count = 99999999999999999999999"),
        "out of range",
    );
    // pe_count larger than the device, and an LV using those extents:
    // the map would leave the device.
    let mut m = img.clone();
    reseal(
        &mut m,
        t.replacen("pe_count = 1", "pe_count = 100000", 1)
            .replacen("extent_count = 1", "extent_count = 3", 1)
            .as_bytes(),
    );
    refused(m, "has only");
    // A stripe on a PV the group does not have.
    refused(
        with("stripes = [\n\"pv0\"", "stripes = [\n\"pv9\""),
        "not a physical volume",
    );
    // An LV stacked on itself.
    refused(
        with(
            "stripes = [\n\"pv0\"",
            "stripes = [\n\"test_logical_volume\"",
        ),
        "not a physical volume",
    );
    // An LV without segments (found by random_text_damage).
    refused(with("segment1 {", "notasegment {"), "has no segments");
    // Segments that leave a gap.
    refused(
        with("start_extent = 0", "start_extent = 5"),
        "gap or overlap",
    );
    // Thin, by segment type.
    refused(
        with("type = \"striped\"", "type = \"thin\""),
        "segment type thin",
    );
    // An old-style snapshot of the LV: writing the origin would corrupt it.
    let snap = "snap {\nid = \"aaaaaa-bbbb-cccc-dddd-eeee-ffff-000000\"\nstatus = [\"READ\", \"VISIBLE\"]\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"test_logical_volume\"\ncow_store = \"snap\"\n}\n}\n";
    let mut m = img.clone();
    reseal(
        &mut m,
        t.replacen(
            "logical_volumes {\n",
            &format!("logical_volumes {{\n{snap}"),
            1,
        )
        .as_bytes(),
    );
    refused(m, "origin of snapshot snap");
    // Cache, RAID, VDO and integrity, by segment type.
    for (ty, word) in [
        ("cache", "a cache"),
        ("writecache", "a cache"),
        ("raid5", "RAID"),
        ("mirror", "old-style mirror"),
        ("vdo", "VDO"),
        ("integrity", "dm-integrity"),
    ] {
        refused(
            with("type = \"striped\"", &format!("type = \"{ty}\"")),
            word,
        );
    }
    // Unknown kinds of values and broken syntax.
    refused(with("seqno = ", "seqno = = "), "expected a value");
    refused(with("{", "{ {"), "expected");
    // Nesting deeper than the limit.
    let deep = format!("{}{}{}", "a {".repeat(200), t, "}".repeat(200));
    let mut m = img.clone();
    reseal(&mut m, deep.as_bytes());
    refused(m, "deeper");
}

#[test]
fn limits_bound_what_is_read() {
    let img = base();
    let opts = LvmOptions {
        max_metadata: 64,
        ..LvmOptions::default()
    };
    let (s, _) = scan_of(img.clone(), &opts);
    assert!(s.vgs.is_empty());
    assert!(s.problems[0].contains("limit 64"), "{:?}", s.problems);
    // A text size past the ring is refused before any allocation.
    let mut m = img.clone();
    m[MDA + 48..MDA + 56].copy_from_slice(&u64::MAX.to_le_bytes());
    let c = lvm2_crc(&m[MDA + 4..MDA + 512]);
    m[MDA..MDA + 4].copy_from_slice(&c.to_le_bytes());
    refused(m, "metadata text is");
    // An offset outside the ring.
    let mut m = img.clone();
    m[MDA + 40..MDA + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let c = lvm2_crc(&m[MDA + 4..MDA + 512]);
    m[MDA..MDA + 4].copy_from_slice(&c.to_le_bytes());
    refused(m, "outside the ring");
    // A PV header listing more metadata areas than lvm2 ever writes (2):
    // only the first two are read, and it is said.
    let mut m = img.clone();
    let lab = 512;
    let mut p = lab + 32 + 40;
    let data = (le64(&m, p), le64(&m, p + 8));
    p += 16;
    assert_eq!(le64(&m, p), 0, "one data area");
    p += 16;
    let mda = (le64(&m, p), le64(&m, p + 8));
    let mut at = lab + 32 + 40;
    for (o, z) in [data, (0, 0), mda, mda, mda, mda, (0, 0)] {
        m[at..at + 8].copy_from_slice(&o.to_le_bytes());
        m[at + 8..at + 16].copy_from_slice(&z.to_le_bytes());
        at += 16;
    }
    let c = lvm2_crc(&m[lab + 20..lab + 512]);
    m[lab + 16..lab + 20].copy_from_slice(&c.to_le_bytes());
    let (s, _) = scan_of(m, &LvmOptions::default());
    assert_eq!(s.vgs.len(), 1, "{:?}", s.problems);
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("lists 4 metadata areas; only the first 2")),
        "{:?}",
        s.problems
    );
    // A truncated image: the metadata area runs past the end.
    refused(img[..MDA + 1024].to_vec(), "past the device end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Random byte changes in the text, re-sealed: an error or a group
    /// whose every LV maps inside the device, never a panic.
    #[test]
    fn random_text_damage(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..12)) {
        let img = base_cached();
        let mut t = text_of(img).into_bytes();
        for (at, b) in edits {
            let i = at % t.len();
            t[i] = b;
        }
        let mut m = img.clone();
        reseal(&mut m, &t);
        let (s, devs) = scan_of(m, &LvmOptions::default());
        for vg in &s.vgs {
            for lv in &vg.meta.lvs {
                if let Ok(d) = vg.open(lv, &devs) {
                    for seg in d.segments() {
                        for (_, off) in &seg.stripes {
                            prop_assert!(*off < devs[0].len());
                        }
                    }
                    prop_assert!(d.len() > 0, "{} opened with no bytes", lv.name);
                    let mut b = vec![0u8; 512.min(d.len() as usize)];
                    d.read_at(0, &mut b).unwrap();
                }
            }
        }
    }
}

fn base_cached() -> &'static Vec<u8> {
    static B: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    B.get_or_init(base)
}
