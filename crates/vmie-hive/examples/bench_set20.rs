//! Benchmark: set 20 values in a >= 16 MiB SYSTEM hive.
//! `cargo run --release -p vmie-hive --example bench_set20` (prints timings).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Instant;
use vmie_hive::{Hive, HiveOptions};

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/realdata/regipy/SYSTEM"
    );
    let bytes = std::fs::read(path).unwrap();
    let opts = HiveOptions {
        name: "SYSTEM".into(),
        ..Default::default()
    };
    // Grow the real 11 MiB SYSTEM hive past 16 MiB (many keys and values).
    let mut h = Hive::from_bytes(bytes, &opts).unwrap();
    h.create_key("\\", "Grow").unwrap();
    for i in 0..400 {
        let k = format!("\\Grow\\K{i:04}");
        h.ensure_key(&k).unwrap();
        for j in 0..4 {
            h.set_value(&k, &format!("V{j}"), 3, &vec![(i + j) as u8; 3300])
                .unwrap();
        }
    }
    let big = h.to_bytes();
    println!("hive size: {:.1} MiB", big.len() as f64 / 1048576.0);
    assert!(big.len() >= 16 << 20);
    // The whole-hive validation every edit session pays once, before its first edit.
    let h = Hive::from_bytes(big.clone(), &opts).unwrap();
    for _ in 0..3 {
        let t0 = Instant::now();
        let v = h.validate().unwrap();
        println!(
            "validate: {:.1} ms ({} keys, {} values, {} cells)",
            t0.elapsed().as_secs_f64() * 1e3,
            v.keys,
            v.values,
            v.cells
        );
    }
    for round in 0..3 {
        let t0 = Instant::now();
        let mut h = Hive::from_bytes(big.clone(), &opts).unwrap();
        let t1 = Instant::now();
        let ccs = vmie_hive::system::current_control_set(&h).unwrap();
        let key = format!("\\{ccs}\\Services\\Tcpip\\Parameters");
        for i in 0..20 {
            let data: Vec<u8> = format!("value {i}\0")
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect();
            h.set_value(&key, &format!("VmieBench{i}"), 1, &data)
                .unwrap();
        }
        let t2 = Instant::now();
        let out = h.to_bytes();
        let t3 = Instant::now();
        let re = Hive::from_bytes(out, &opts).unwrap();
        let t4 = Instant::now();
        println!(
            "round {round}: open {:.1} ms, 20 x set_value {:.2} ms, to_bytes {:.2} ms, re-open {:.1} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            (t4 - t3).as_secs_f64() * 1e3
        );
        let _ = re;
    }
}
