//! Benchmark: replace /etc/fstab on 1 GiB, 10 GiB and 100 GiB sparse ext4
//! images through a fresh Overlay, timing each step and counting the bytes
//! read from the base device: open (superblock), replace_file (the write
//! transaction) and the commit-time self-check (verify_paths, which loads an
//! independent ext4-view reader; its load reads every group descriptor, so
//! that step alone grows with the volume).
//!
//! `cargo run --release -p vmie-ext4 --example replace_fstab` (also run by
//! `cargo xtask bench`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmie_disk::{Device, FileDevice, Overlay};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::{GuestFs, GuestPath};

fn median(t: &[Duration]) -> Duration {
    let mut v = t.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/fstab"), b"UUID=1234 / ext4 defaults 0 1\n").unwrap();
    let new = b"UUID=abcd / ext4 defaults 0 1\n/dev/vdb1 /data xfs defaults,nofail 0 2\n";
    let iters = 200u32;
    let mut rows: Vec<(u64, f64, u64, f64, u64)> = Vec::new();
    for gib in [1u64, 10, 100] {
        let img = tmp.path().join(format!("{gib}g.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(gib << 30)
            .unwrap();
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tree)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let base = Arc::new(FileDevice::open(&img).unwrap());
        let read = || base.read_stats().0;
        let (mut t_open, mut t_rep, mut t_ver) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r_open, mut r_rep, mut r_ver) = (0, 0, 0);
        for _ in 0..iters {
            let ov = Arc::new(Overlay::new(base.clone() as Arc<dyn Device>));
            let r0 = read();
            let t0 = Instant::now();
            let mut fs = Ext4Fs::open(ov.clone() as Arc<dyn Device>, "bench").unwrap();
            let t1 = Instant::now();
            let r1 = read();
            fs.replace_file(&GuestPath::lexical(b"/etc/fstab"), new)
                .unwrap();
            let t2 = Instant::now();
            let r2 = read();
            fs.verify_paths(&[(GuestPath::lexical(b"/etc/fstab"), Some(new.to_vec()))])
                .unwrap();
            let t3 = Instant::now();
            let r3 = read();
            t_open.push(t1 - t0);
            t_rep.push(t2 - t1);
            t_ver.push(t3 - t2);
            r_open += r1 - r0;
            r_rep += r2 - r1;
            r_ver += r3 - r2;
            assert_eq!(
                fs.read_file(&GuestPath::lexical(b"/etc/fstab"), 1 << 20)
                    .unwrap(),
                new
            );
        }
        let n = u64::from(iters);
        let ms = |t: &[Duration]| median(t).as_secs_f64() * 1e3;
        let all: Vec<Duration> = (0..t_open.len())
            .map(|i| t_open[i] + t_rep[i] + t_ver[i])
            .collect();
        let total = ms(&all);
        let read = (r_open + r_rep + r_ver) / n;
        println!(
            "{gib:>3} GiB: open {:.3} ms {} KiB; replace_file {:.3} ms {} KiB; self-check {:.3} ms {} KiB; total {total:.3} ms {:.1} KiB read (median of {iters})",
            ms(&t_open),
            r_open / n / 1024,
            ms(&t_rep),
            r_rep / n / 1024,
            ms(&t_ver),
            r_ver / n / 1024,
            read as f64 / 1024.0,
        );
        rows.push((gib, total, read, ms(&t_rep), r_rep / n));
    }
    let row = |g: u64| rows.iter().find(|r| r.0 == g).copied().unwrap();
    let (a, b) = (row(1), row(10));
    println!(
        "10 GiB vs 1 GiB: replace_file {:+.0}% time, {:+.0}% bytes; with self-check {:+.0}% time, {:+.0}% bytes",
        (b.3 / a.3 - 1.0) * 100.0,
        (b.4 as f64 / a.4 as f64 - 1.0) * 100.0,
        (b.1 / a.1 - 1.0) * 100.0,
        (b.2 as f64 / a.2 as f64 - 1.0) * 100.0,
    );
}
