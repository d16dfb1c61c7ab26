#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hostile input: random byte flips and truncations of real hives must give
//! Ok or Err — never a panic or a hang — through open, walk, export, edits.

mod common;
use common::*;
use proptest::prelude::*;
use vmie_hive::{export_hivex_bytes, Hive, HiveOptions};

const SEEDS: &[&str] = &[
    "hivex/images/minimal",
    "hivex/images/special",
    "regipy/BCD",
    "windeploy-linux/BCD-efi",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "nt-hive/testdata/testhive",
    "yarp/hives_for_tests/BigDataHive",
];

fn fix_checksum(b: &mut [u8]) {
    if b.len() >= 0x200 {
        let mut x = 0u32;
        for i in 0..127 {
            x ^= u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        }
        let x = match x {
            0 => 1,
            0xFFFF_FFFF => 0xFFFF_FFFE,
            v => v,
        };
        b[0x1FC..0x200].copy_from_slice(&x.to_le_bytes());
    }
}

/// Everything a caller might do; only panics fail the test.
fn exercise(bytes: Vec<u8>) {
    let opts = HiveOptions {
        name: "fuzzed".into(),
        max_subkeys_visited: 100_000,
        ..Default::default()
    };
    let Ok(mut hive) = Hive::from_bytes(bytes, &opts) else {
        return;
    };
    let _ = hive.walk(hive.root());
    let _ = export_hivex_bytes(&hive, None, None);
    if let Ok(kids) = hive.subkeys(hive.root()) {
        for k in kids.into_iter().take(3) {
            if let Ok(p) = hive.key_path(k) {
                let _ = hive.set_value(&p, "fuzz", 3, &[7u8; 40]);
                let _ = hive.create_key(&p, "FuzzKey");
                let _ = hive.delete_key(&p);
            }
        }
    }
    let _ = hive.set_value("\\", "big", 3, &vec![1u8; 20000]);
    let _ = vmie_hive::merge(&mut hive, "[\\New]\n\"a\"=dword:00000001\n");
    let _ = vmie_hive::bcd::show(&hive);
    let _ = vmie_hive::system::current_control_set(&hive);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200),
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    })]
    #[test]
    fn flipped_and_truncated_hives_never_panic(
        seed in 0..SEEDS.len(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..24),
        trunc in proptest::option::of(any::<usize>()),
        fix in any::<bool>(),
        in_cells in any::<bool>(),
    ) {
        let mut b = read_real(SEEDS[seed]);
        for (pos, val) in flips {
            let len = b.len();
            // Bias half the cases to the first hbin cells where the structure lives.
            let p = if in_cells { 0x1000 + pos % (len.min(0x3000) - 0x1000) } else { pos % len };
            b[p] = val;
        }
        if let Some(t) = trunc {
            let l = t % b.len();
            b.truncate(l);
        }
        if fix {
            fix_checksum(&mut b);
        }
        exercise(b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(100),
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    })]
    /// Damaged transaction logs: replay gives Ok (a hive that walks) or Err.
    #[test]
    fn damaged_logs_never_panic(
        which in 0..2usize,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
        trunc in proptest::option::of(any::<usize>()),
    ) {
        let dir = if which == 0 { "NewDirtyHive1/NewDirtyHive" } else { "OldDirtyHive/OldDirtyHive" };
        let p = read_real(&format!("yarp/hives_for_tests/{dir}"));
        let mut l1 = read_real(&format!("yarp/hives_for_tests/{dir}.LOG1"));
        let l2 = read_real(&format!("yarp/hives_for_tests/{dir}.LOG2"));
        for (pos, val) in flips {
            let len = l1.len();
            l1[pos % len] = val;
        }
        if let Some(t) = trunc {
            let l = t % l1.len();
            l1.truncate(l);
        }
        if let Ok((h, _)) = Hive::from_bytes_with_logs(p, &[&l1, &l2], &opts("dirty")) {
            let _ = h.walk(h.root());
            exercise(h.to_bytes());
        }
    }
}

#[test]
fn yarp_garbage_and_truncated_hives() {
    for rel in [
        "yarp/hives_for_tests/GarbageHive",
        "yarp/hives_for_tests/TruncatedHive",
        "yarp/hives_for_tests/TruncatedHiveBin",
        "yarp/hives_for_tests/BadBaseBlockHive/BadBaseBlockHive",
        "regipy/corrupted_system_hive",
    ] {
        exercise(read_real(rel));
    }
    // Not a hive at all.
    exercise(Vec::new());
    exercise(vec![0u8; 8192]);
    let mut b = b"regf".to_vec();
    b.resize(4096, 0xFF);
    exercise(b);
}
