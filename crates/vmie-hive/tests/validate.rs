#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Whole-hive validation before the first edit (issue 11): a hive corrupted
//! in a way its checksum does not catch is refused, naming the cell offset
//! and key path, and nothing is edited; whatever we accept, hivex opens and
//! walks, before and after our edits.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use vmie_hive::{export_hivex_bytes, reg_type, Edit, Hive, KeyId};

/// Cells are addressed relative to the first hbin at 0x1000; a record's
/// fields start after the 4-byte cell size.
fn field(off: u32, at: usize) -> usize {
    0x1000 + off as usize + 4 + at
}

fn rd32(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap())
}

fn wr32(b: &mut [u8], pos: usize, v: u32) {
    b[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
}

/// Re-seal the base block so the corruption gets past the checksum.
fn reseal(b: &mut [u8]) {
    let x = (0..127).fold(0u32, |x, i| x ^ rd32(b, i * 4));
    let x = match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    };
    wr32(b, 0x1FC, x);
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// hivex's minimal hive with `\A` (subkeys `A1`, `A2`, values) and `\B`
/// (a value in its own data cell), written by our editor.
fn fixture() -> Vec<u8> {
    let mut h = Hive::from_bytes(read_real("hivex/images/minimal"), &opts("minimal")).unwrap();
    h.create_key("\\", "A").unwrap();
    h.create_key("\\A", "A1").unwrap();
    h.create_key("\\A", "A2").unwrap();
    h.set_value("\\A", "one", reg_type::DWORD, &1u32.to_le_bytes())
        .unwrap();
    h.set_value("\\A\\A1", "s", reg_type::SZ, &utf16z("hello"))
        .unwrap();
    h.create_key("\\", "B").unwrap();
    h.set_value("\\B", "bin", reg_type::BINARY, &[7u8; 40])
        .unwrap();
    h.to_bytes()
}

/// A subtree of the real Windows 7 SYSTEM hive (Tcpip with its 17 keys, and
/// Select) merged onto hivex's minimal hive.
fn system_subtree() -> Vec<u8> {
    let system = open("regipy/SYSTEM");
    let mut h = Hive::from_bytes(read_real("hivex/images/minimal"), &opts("subtree")).unwrap();
    h.ensure_key("\\ControlSet001\\Services").unwrap();
    for key in ["\\ControlSet001\\Services\\Tcpip", "\\Select"] {
        let text = export_hivex_bytes(&system, Some(key), None).unwrap();
        vmie_hive::merge(&mut h, &String::from_utf8(text).unwrap()).unwrap();
    }
    h.to_bytes()
}

const MERGE: &str =
    "Windows Registry Editor Version 5.00\n\n[\\VmieMerged]\n\"x\"=dword:00000001\n\n";

/// What the refusal must look like: an error naming the cell offset and the
/// key path; `merge` changes nothing.
fn assert_refused(bytes: &[u8], offset: u32, path: &str, what: &str) {
    let mut h = match Hive::from_bytes(bytes.to_vec(), &opts("mutated")) {
        Ok(h) => h,
        Err(e) => panic!("{what}: refused already at open, expected the validation to: {e}"),
    };
    let err = h.validate().expect_err(what).to_string();
    let off = format!("{offset:#x}");
    assert!(
        err.contains(&off) && err.contains(&format!("(key {path})")) && err.contains("mutated"),
        "{what}: error should name cell {off} and key {path}: {err}"
    );
    let merged = vmie_hive::merge(&mut h, MERGE).expect_err(what).to_string();
    assert_eq!(
        merged, err,
        "{what}: merge refuses with the validation error"
    );
    assert!(h.bytes() == bytes, "{what}: merge changed the hive");
    let e = h
        .set_value("\\", "v", reg_type::DWORD, &[0; 4])
        .expect_err(what);
    assert_eq!(e.to_string(), err);
    assert!(h.bytes() == bytes, "{what}: set_value changed the hive");
}

/// Accepted: hivexregedit opens and walks it, and after a merge too.
fn assert_accepted_and_hivex_walks(bytes: &[u8], what: &str) {
    let mut h = Hive::from_bytes(bytes.to_vec(), &opts("mutated")).unwrap();
    h.validate()
        .unwrap_or_else(|e| panic!("{what}: should be accepted: {e}"));
    have_hivex();
    assert!(
        hivex_export_bytes(bytes, "\\").is_some(),
        "{what}: we accept it but hivexregedit --export fails"
    );
    let rep = vmie_hive::merge(&mut h, MERGE).unwrap();
    let out = h.to_bytes();
    vmie_hive::verify_with_nt_hive(&out, &rep.edits).unwrap();
    assert!(
        hivex_export_bytes(&out, "\\").is_some(),
        "{what}: hivexregedit --export fails on our merge result"
    );
}

#[test]
fn corrupt_keys_and_lists_are_refused_naming_the_cell() {
    let base = fixture();
    let h = Hive::from_bytes(base.clone(), &opts("fixture")).unwrap();
    h.validate().unwrap();
    let a = h.open_key("\\A").unwrap().0;
    let a1 = h.open_key("\\A\\A1").unwrap().0;
    let bkey = h.open_key("\\B").unwrap().0;
    let b_vk = h.values(KeyId(bkey)).unwrap()[0].0;
    let lf = rd32(&base, field(a, 0x1C));
    let vlist = rd32(&base, field(a, 0x28));
    let sk = rd32(&base, field(a, 0x2C));
    assert_eq!(&base[field(lf, 0)..field(lf, 2)], b"lh");

    type Mutate = Box<dyn Fn(&mut Vec<u8>)>;
    type Mutation = (&'static str, u32, String, Mutate);
    let under_a = |off: u32| format!("\\A\\<subkey at {off:#x}>");
    let cases: Vec<Mutation> = vec![
        (
            "nk subkey count + 1",
            a,
            "\\A".into(),
            Box::new(move |b| wr32(b, field(a, 0x14), 3)),
        ),
        (
            "nk name length beyond the cell",
            a,
            format!("\\<subkey at {a:#x}>"),
            Box::new(move |b| {
                b[field(a, 0x48)..field(a, 0x4A)].copy_from_slice(&0x7FFFu16.to_le_bytes())
            }),
        ),
        (
            "nk value-list offset into the middle of a cell",
            vlist + 8,
            "\\A".into(),
            Box::new(move |b| wr32(b, field(a, 0x28), vlist + 8)),
        ),
        (
            "nk signature",
            a1,
            "\\A".into(),
            Box::new(move |b| b[field(a1, 0)] = b'x'),
        ),
        (
            "nk parent offset",
            a1,
            under_a(a1),
            Box::new(move |b| wr32(b, field(a1, 0x10), bkey)),
        ),
        (
            "nk security cell reference count",
            sk,
            "\\".into(),
            Box::new(move |b| wr32(b, field(sk, 0xC), 1)),
        ),
        (
            "lh element pointing at a value (vk) cell",
            b_vk,
            "\\A".into(),
            Box::new(move |b| wr32(b, field(lf, 4), b_vk)),
        ),
        (
            "lh element pointing into the middle of a key cell",
            a1 + 8,
            "\\A".into(),
            Box::new(move |b| wr32(b, field(lf, 4), a1 + 8)),
        ),
        (
            "lh element repeating the other (a key listed twice)",
            a1,
            under_a(a1),
            Box::new(move |b| {
                let first = rd32(b, field(lf, 4));
                wr32(b, field(lf, 12), first)
            }),
        ),
        (
            "lh count beyond its cell",
            lf,
            "\\A".into(),
            Box::new(move |b| b[field(lf, 2)..field(lf, 4)].copy_from_slice(&500u16.to_le_bytes())),
        ),
        (
            "value data length beyond its cell",
            rd32(&base, field(b_vk, 8)),
            "\\B".into(),
            Box::new(move |b| wr32(b, field(b_vk, 4), 4000)),
        ),
    ];
    for (what, offset, path, mutate) in &cases {
        let mut b = base.clone();
        mutate(&mut b);
        reseal(&mut b);
        assert_refused(&b, *offset, path, what);
    }

    // Harmless corruptions (the lh hash, the timestamp, the largest-name
    // hint, a value type) are accepted, and hivex walks them.
    let benign: Vec<(&str, Mutate)> = vec![
        (
            "lh hash",
            Box::new(move |b| wr32(b, field(lf, 8), 0xDEAD_BEEF)),
        ),
        (
            "nk timestamp",
            Box::new(move |b| wr32(b, field(a, 8), 0x7777_7777)),
        ),
        (
            "nk max name length",
            Box::new(move |b| wr32(b, field(a, 0x34), 2)),
        ),
        (
            "vk type",
            Box::new(move |b| wr32(b, field(b_vk, 0xC), 0x1234)),
        ),
    ];
    for (what, mutate) in &benign {
        let mut b = base.clone();
        mutate(&mut b);
        reseal(&mut b);
        assert_accepted_and_hivex_walks(&b, what);
    }
}

#[test]
fn the_oracle_fails_on_what_we_refuse() {
    // The batch oracle below must be able to fail: a key listed twice makes
    // hivex's walk report a cycle, a subkey count off by one its child count.
    let base = fixture();
    let h = Hive::from_bytes(base.clone(), &opts("fixture")).unwrap();
    let a = h.open_key("\\A").unwrap().0;
    let mut b = base.clone();
    wr32(&mut b, field(a, 0x14), 3);
    reseal(&mut b);
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, &base).unwrap();
    std::fs::write(&bad, &b).unwrap();
    let r = hivex_walk_batch(&[good, bad]);
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(r[1].is_err(), "hivex should refuse the bad subkey count");
}

/// hivexregedit's own export code (`Win::Hivex->open` and
/// `Win::Hivex::Regedit::reg_export`, what `hivexregedit --export` runs),
/// over many files in one perl process: Ok per file, or hivex's error.
fn hivex_walk_batch(files: &[PathBuf]) -> Vec<Result<(), String>> {
    have_hivex();
    if files.is_empty() {
        return Vec::new();
    }
    let script = r#"
use strict; use warnings;
use Win::Hivex; use Win::Hivex::Regedit qw(reg_export);
open my $null, '>', '/dev/null' or die;
for my $f (@ARGV) {
    my $ok = eval { my $h = Win::Hivex->open($f); reg_export($h, "\\", $null); 1 };
    if ($ok) { print "OK\n" } else { my $e = "$@"; $e =~ s/\s+/ /g; print "FAIL $e\n" }
}
"#;
    let o = Command::new("timeout")
        .arg("300")
        .arg("perl")
        .arg("-e")
        .arg(script)
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        files.len(),
        "perl oracle: {} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    lines
        .iter()
        .map(|l| {
            if *l == "OK" {
                Ok(())
            } else {
                Err(l.to_string())
            }
        })
        .collect()
}

/// xorshift64*: a reproducible stream of corruptions (seed from
/// `VMIE_HIVE_SEED`).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Starts of allocated cells (relative offsets), from the hbin chain.
fn allocated_cells(b: &[u8]) -> Vec<u32> {
    let end = rd32(b, 0x28) as usize;
    let mut out = Vec::new();
    let mut h = 0;
    while h < end {
        let size = rd32(b, 0x1000 + h + 8) as usize;
        let mut c = h + 0x20;
        while c < h + size {
            let raw = rd32(b, 0x1000 + c) as i32;
            if raw < 0 {
                out.push(c as u32);
            }
            c += raw.unsigned_abs() as usize;
        }
        h += size;
    }
    out
}

/// One structured corruption: a byte or a dword, in the base block, anywhere
/// in the hbins, or in a record (an allocated cell's first 0x50 bytes);
/// values random, off by one, 0, -1, or another cell's offset.
fn corrupt(rng: &mut Rng, b: &mut [u8], cells: &[u32]) -> String {
    let len = b.len();
    let pos = match rng.below(10) {
        0 => rng.below(0x200),
        1..=3 => 0x1000 + rng.below(len - 0x1000 - 4),
        _ => {
            let c = cells[rng.below(cells.len())] as usize;
            (0x1000 + c + rng.below(0x50)).min(len - 4)
        }
    };
    if rng.below(3) == 0 {
        let old = b[pos];
        let v = if rng.below(2) == 0 {
            rng.next() as u8
        } else {
            old ^ (1 << rng.below(8))
        };
        b[pos] = v;
        format!("byte at {pos:#x}: {old:#04x} -> {v:#04x}")
    } else {
        let pos = pos & !3;
        let old = rd32(b, pos);
        let v = match rng.below(7) {
            0 => rng.next() as u32,
            1 => old.wrapping_add(1),
            2 => old.wrapping_sub(1),
            3 => 0,
            4 => u32::MAX,
            5 => cells[rng.below(cells.len())],
            _ => old.wrapping_add(8),
        };
        wr32(b, pos, v);
        format!("dword at {pos:#x}: {old:#x} -> {v:#x}")
    }
}

/// Edits every accepted hive gets: a new value and key at the root; for the
/// first two root subkeys that a path addresses, a new value, a replaced value
/// (its data cell freed), and a deleted subtree (cells and security released).
fn edit(h: &mut Hive) -> vmie_hive::Result<Vec<Edit>> {
    let mut edits = Vec::new();
    let addressable: Vec<String> = h
        .subkeys(h.root())?
        .into_iter()
        .filter_map(|k| {
            let p = h.key_path(k).ok()?;
            (h.open_key(&p).ok() == Some(k)).then_some(p)
        })
        .take(2)
        .collect();
    let set = |h: &mut Hive, edits: &mut Vec<Edit>, key: &str, name: &str, t: u32, d: Vec<u8>| {
        h.set_value(key, name, t, &d).map(|_| {
            edits.push(Edit::SetValue {
                key: key.to_string(),
                name: name.to_string(),
                vtype: t,
                data: d,
            })
        })
    };
    set(
        h,
        &mut edits,
        "\\",
        "VmieNew",
        reg_type::DWORD,
        vec![1, 0, 0, 0],
    )?;
    h.create_key("\\", "VmieKey")?;
    edits.push(Edit::CreateKey {
        path: "\\VmieKey".into(),
    });
    set(h, &mut edits, "\\VmieKey", "s", reg_type::SZ, utf16z("x"))?;
    if let Some(p) = addressable.first() {
        set(h, &mut edits, p, "VmieSub", reg_type::BINARY, vec![9; 40])?;
        let k = h.open_key(p)?;
        if let Some(v) = h.values(k)?.first() {
            let name = h.value(*v)?.name;
            if h.get_value(k, &name)?.is_some() {
                set(h, &mut edits, p, &name, reg_type::BINARY, vec![5; 100])?;
            }
        }
    }
    if let Some(p) = addressable.get(1) {
        h.delete_key(p)?;
        edits.push(Edit::DeleteKey { path: p.clone() });
    }
    Ok(edits)
}

/// Random corruptions of hivex's minimal hive, our fixture, a real SYSTEM
/// subtree, a real BCD and a real hive with big data values: either we refuse before editing (and nothing changes), or we
/// accept, hivex walks the input, our edits succeed and pass the self-check,
/// and hivex walks the result. `VMIE_HIVE_CORRUPTIONS` raises the count
/// (default 500, 100 per hive), `VMIE_HIVE_SEED` changes the stream.
#[test]
fn random_corruptions_are_refused_or_stay_readable_by_hivex() {
    let n: usize = std::env::var("VMIE_HIVE_CORRUPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seed: u64 = std::env::var("VMIE_HIVE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0005_EED1);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("minimal", read_real("hivex/images/minimal")),
        ("fixture", fixture()),
        ("system-subtree", system_subtree()),
        ("regipy/BCD", read_real("regipy/BCD")),
        ("BigDataHive", read_real("yarp/hives_for_tests/BigDataHive")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let (mut refused, mut accepted) = (0usize, 0usize);
    for i in 0..n {
        let (name, base) = &seeds[i % seeds.len()];
        let cells = allocated_cells(base);
        let mut b = base.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(2) {
            what.push(corrupt(&mut rng, &mut b, &cells));
        }
        if rng.below(10) != 0 {
            reseal(&mut b);
        }
        let what = format!("case {i} ({name}, seed {seed}): {}", what.join(", "));
        let Ok(mut h) = Hive::from_bytes(b.clone(), &opts("mutated")) else {
            refused += 1;
            continue;
        };
        if let Err(e) = h.validate() {
            // Refused before the first edit: no edit goes through, nothing changes.
            refused += 1;
            assert!(
                vmie_hive::merge(&mut h, MERGE).is_err(),
                "{what}: merge after {e}"
            );
            assert!(h.bytes() == b.as_slice(), "{what}: refused hive changed");
            continue;
        }
        accepted += 1;
        let before = dir.path().join(format!("{i}-in"));
        std::fs::write(&before, &b).unwrap();
        files.push((before, format!("{what}: accepted input")));
        let edits =
            edit(&mut h).unwrap_or_else(|e| panic!("{what}: accepted, but an edit fails: {e}"));
        let out = h.to_bytes();
        vmie_hive::verify_with_nt_hive(&out, &edits)
            .unwrap_or_else(|e| panic!("{what}: accepted, edited, self-check fails: {e}"));
        let after = dir.path().join(format!("{i}-out"));
        std::fs::write(&after, &out).unwrap();
        files.push((after, format!("{what}: our edit of it")));
    }
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let verdicts = hivex_walk_batch(&paths);
    let bad: Vec<String> = files
        .iter()
        .zip(&verdicts)
        .filter_map(|((_, what), v)| v.as_ref().err().map(|e| format!("{what}: hivex: {e}")))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} hives we accepted or wrote, hivex cannot walk:\n{}",
        bad.len(),
        files.len(),
        bad.join("\n")
    );
    eprintln!("{n} corruptions: {refused} refused, {accepted} accepted and walked by hivex before and after our edits");
    assert!(
        refused > n / 10 && accepted > n / 10,
        "both outcomes exercised"
    );
}
