//! Unit tests of internals against real hives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::edit::{lf_hint, lh_hash};
use crate::hive::{rd_u32, Hive, HiveOptions, NONE};

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/realdata/");

fn open(rel: &str) -> Hive {
    let b = std::fs::read(format!("{REAL}{rel}")).unwrap();
    Hive::from_bytes(
        b,
        &HiveOptions {
            name: rel.into(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Every lh hash and lf hint stored by Windows equals ours: checks the hash
/// functions and the upcase approximation on real names (incl. non-ASCII).
#[test]
fn stored_list_hashes_match_ours() {
    let mut checked = 0usize;
    let mut mismatches = Vec::new();
    for rel in [
        "regipy/SYSTEM",
        "regipy/NTUSER.DAT",
        "regipy/SAM",
        "yarp/hives_for_tests/UnicodeHive",
        "yarp/hives_for_tests/ExtendedASCIIHive",
        "yarp/hives_for_tests/UpcaseHive",
        "yarp/hives_for_tests/ManySubkeysHive",
        "python-registry/tests/reg_samples/UNICODE_TESTS",
        "aiowinreg/nt/software.reg",
        "hivex/images/special",
    ] {
        let h = open(rel);
        let mut stack = vec![h.root];
        while let Some(off) = stack.pop() {
            let nk = h.nk(off).unwrap();
            if nk.subkey_count == 0 || nk.subkey_list == NONE {
                continue;
            }
            for leaf in h.leaves(nk.subkey_list).unwrap() {
                let d = h.cell(leaf).unwrap();
                let sig = d.get(0..2).unwrap().to_vec();
                for (i, child) in h.leaf_entries(leaf).unwrap().into_iter().enumerate() {
                    stack.push(child);
                    let name = h.nk(child).unwrap().name;
                    let stored = rd_u32(d, 8 + 8 * i);
                    let ours = match sig.as_slice() {
                        b"lh" => lh_hash(&name),
                        b"lf" => lf_hint(&name),
                        _ => continue,
                    };
                    checked += 1;
                    if stored != Some(ours) {
                        mismatches.push(format!("{rel}: {name:?} {stored:?} != {ours:#x}"));
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
    assert!(
        mismatches.is_empty(),
        "{} of {checked}: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

#[test]
fn marvin32_matches_stored_log_hashes() {
    // The first entry of a real new-format log: both hashes verify.
    let log = std::fs::read(format!(
        "{REAL}yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive.LOG1"
    ))
    .unwrap();
    let size = rd_u32(&log, 512 + 4).unwrap() as usize;
    let e = &log[512..512 + size];
    let h1 = crate::hive::rd_u64(e, 24).unwrap();
    let h2 = crate::hive::rd_u64(e, 32).unwrap();
    assert_eq!(crate::log::marvin32(&e[40..], 0x82EF_4D88_7A4E_55C5), h1);
    assert_eq!(crate::log::marvin32(&e[..32], 0x82EF_4D88_7A4E_55C5), h2);
}

#[test]
fn cyclic_subkey_lists_are_refused_naming_the_place() {
    let mut h = open("hivex/images/minimal");
    h.create_key("\\", "A").unwrap();
    h.create_key("\\A", "B").unwrap();
    let root = h.nk(h.root).unwrap();
    let b = h.nk_path("\\A\\B").unwrap();
    // B's subkey list := the root's list (which holds A): A -> B -> A -> ...
    h.wr_cell(b.off, 0x14, &1u32.to_le_bytes()).unwrap();
    h.wr_cell(b.off, 0x1C, &root.subkey_list.to_le_bytes())
        .unwrap();
    let e = h.walk(h.root()).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
    let e = crate::export::try_export(&h, None).unwrap_err().to_string();
    assert!(
        e.contains("cycle")
            && e.contains("\\A\\B\\A")
            && e.contains("cell offset")
            && e.contains("minimal"),
        "{e}"
    );
    assert!(h.delete_key("\\A").is_err());
    // A list that contains its own key.
    let mut h = open("hivex/images/minimal");
    h.create_key("\\", "A").unwrap();
    let root = h.nk(h.root).unwrap();
    let a = h.nk_path("\\A").unwrap();
    h.wr_cell(a.off, 0x14, &1u32.to_le_bytes()).unwrap();
    h.wr_cell(a.off, 0x1C, &root.subkey_list.to_le_bytes())
        .unwrap();
    let e = h.subkeys(crate::KeyId(a.off)).unwrap_err().to_string();
    assert!(e.contains("cyclic"), "{e}");
}

#[test]
fn out_of_range_cells_and_lengths_are_refused() {
    let mut h = open("hivex/images/minimal");
    h.set_value("\\", "v", 3, &[1u8; 100]).unwrap();
    let root = h.nk(h.root).unwrap();
    let vk = rd_u32(h.cell(root.value_list).unwrap(), 0).unwrap();
    // Data length beyond its cell.
    let mut h2 = h.clone();
    h2.wr_cell(vk, 4, &5000u32.to_le_bytes()).unwrap();
    let e = crate::export::try_export(&h2, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("beyond its") && e.contains("key \\"), "{e}");
    // Data offset outside the hive.
    let mut h3 = h.clone();
    h3.wr_cell(vk, 8, &0x7FFF_0000u32.to_le_bytes()).unwrap();
    let e = crate::export::try_export(&h3, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
    // Huge value count: limit, no allocation by the field.
    let mut h4 = h.clone();
    h4.wr_cell(root.off, 0x24, &u32::MAX.to_le_bytes()).unwrap();
    let e = crate::export::try_export(&h4, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("limit"), "{e}");
}

#[test]
fn edits_update_base_block_and_timestamps() {
    let mut h = open("hivex/images/minimal");
    let seq0 = rd_u32(h.bytes(), 4).unwrap();
    let ts0 = h.key_timestamp(h.root()).unwrap();
    h.set_value("\\", "x", 4, &[1, 0, 0, 0]).unwrap();
    h.set_value("\\", "y", 4, &[1, 0, 0, 0]).unwrap();
    let b = h.bytes();
    assert_eq!(rd_u32(b, 4), Some(seq0 + 1), "bumped once per session");
    assert_eq!(rd_u32(b, 8), Some(seq0 + 1));
    assert_eq!(rd_u32(b, 0x1FC), Some(crate::hive::checksum(&b[..0x200])));
    assert_eq!(
        rd_u32(b, 0x28),
        Some(u32::try_from(b.len() - 0x1000).unwrap())
    );
    assert!(h.key_timestamp(h.root()).unwrap() > ts0);
    // Growing appends an hbin, multiple of 4096, and the size field follows.
    let before = h.bytes().len();
    h.set_value("\\", "big", 3, &vec![9u8; 100_000]).unwrap();
    let b = h.bytes();
    assert!(b.len() > before && (b.len() - 0x1000) % 4096 == 0);
    assert_eq!(
        rd_u32(b, 0x28),
        Some(u32::try_from(b.len() - 0x1000).unwrap())
    );
    // New key shares the parent's sk and bumps its refcount; delete restores it.
    let root = h.nk(h.root).unwrap();
    let rc = |h: &Hive| rd_u32(h.cell(root.sk).unwrap(), 0xC).unwrap();
    let rc0 = rc(&h);
    h.create_key("\\", "K").unwrap();
    assert_eq!(h.nk_path("\\K").unwrap().sk, root.sk);
    assert_eq!(rc(&h), rc0 + 1);
    h.delete_key("\\K").unwrap();
    assert_eq!(rc(&h), rc0);
}

/// Deleting the last key that uses a security cell frees it and unlinks it
/// from the doubly linked sk list.
#[test]
fn last_sk_reference_frees_and_unlinks() {
    let mut h = open("regipy/SYSTEM");
    let mut stack = vec![h.root];
    let mut victim = None;
    while let Some(off) = stack.pop() {
        let nk = h.nk(off).unwrap();
        let rc = rd_u32(h.cell(nk.sk).unwrap(), 0xC).unwrap();
        if rc == 1 && nk.subkey_count == 0 && off != h.root {
            victim = Some(nk);
            break;
        }
        stack.extend(h.subkey_offsets(&nk).unwrap());
    }
    let victim = victim.expect("a key with its own security descriptor");
    let path = h.key_path(crate::KeyId(victim.off)).unwrap();
    let sk = victim.sk;
    let d = h.cell(sk).unwrap();
    let (flink, blink) = (rd_u32(d, 4).unwrap(), rd_u32(d, 8).unwrap());
    h.delete_key(&path).unwrap();
    assert!(h.cell(sk).is_err(), "sk freed");
    assert_eq!(rd_u32(h.cell(blink).unwrap(), 4), Some(flink));
    assert_eq!(rd_u32(h.cell(flink).unwrap(), 8), Some(blink));
    // The whole list is a consistent ring without the freed cell.
    let start = h.nk(h.root).unwrap().sk;
    let mut cur = start;
    for i in 0..1_000_000 {
        let d = h.cell(cur).unwrap();
        assert_eq!(d.get(0..2), Some(&b"sk"[..]));
        let next = rd_u32(d, 4).unwrap();
        assert_eq!(rd_u32(h.cell(next).unwrap(), 8), Some(cur));
        assert_ne!(next, sk);
        cur = next;
        if cur == start {
            assert!(i > 0);
            break;
        }
    }
    assert_eq!(cur, start);
    crate::verify_with_nt_hive(h.bytes(), &[crate::Edit::DeleteKey { path }]).unwrap();
}
