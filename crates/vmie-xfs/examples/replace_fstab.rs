//! Benchmark: replace /etc/fstab on 1 GiB, 10 GiB and 100 GiB sparse XFS
//! images (mkfs.xfs defaults, populated by a protofile) through a fresh
//! Overlay, timing each step and counting the bytes read from the base
//! device: open (superblock, root inode), replace_file (the write
//! transaction, including the clean-log check) and the commit-time
//! self-check (verify_paths, a fresh reader over the staged overlay).
//!
//! Each size is measured twice: warm (the image in the page cache, 200
//! runs) and cold (the page cache dropped before each of 20 runs, when
//! `/proc/sys/vm/drop_caches` is writable, i.e. as root; skipped
//! otherwise), since a pipeline meets an image it has not read yet.
//!
//! `cargo run --release -p vmie-xfs --example replace_fstab` (also run by
//! `cargo xtask bench`). Needs mkfs.xfs (xfsprogs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmie_disk::{Device, FileDevice, Overlay};
use vmie_guestfs::{GuestFs, GuestPath};
use vmie_xfs::XfsFs;

fn median(t: &[Duration]) -> Duration {
    let mut v = t.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("fstab");
    std::fs::write(
        &old,
        b"/dev/sda1 / xfs defaults 0 0\n/dev/sda2 swap swap defaults 0 0\n",
    )
    .unwrap();
    let proto = tmp.path().join("proto");
    std::fs::write(
        &proto,
        format!(
            "boot\n0 0\nd--755 0 0\netc d--755 0 0\nfstab ---644 0 0 {}\n$\n$\n",
            old.display()
        ),
    )
    .unwrap();
    let new = b"UUID=abcd / xfs defaults 0 0\n/dev/vdb1 /data xfs defaults,nofail 0 2\n";
    let fstab = GuestPath::lexical(b"/etc/fstab");
    let cold_ok = drop_caches();
    let mut rows: Vec<(u64, bool, f64, u64)> = Vec::new();
    for (gib, cold) in [1u64, 10, 100]
        .into_iter()
        .flat_map(|g| [(g, false), (g, true)])
    {
        if cold && !cold_ok {
            continue;
        }
        let iters = if cold { 20u32 } else { 200 };
        let img = tmp.path().join(format!("{gib}g.img"));
        if !cold {
            std::fs::File::create(&img)
                .unwrap()
                .set_len(gib << 30)
                .unwrap();
            let out = Command::new("mkfs.xfs")
                .args(["-q", "-f", "-p"])
                .arg(&proto)
                .arg(&img)
                .output()
                .expect("mkfs.xfs (xfsprogs)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let base = Arc::new(FileDevice::open(&img).unwrap());
        let read = || base.read_stats().0;
        let (mut t_open, mut t_rep, mut t_ver) = (Vec::new(), Vec::new(), Vec::new());
        let (mut r_open, mut r_rep, mut r_ver) = (0, 0, 0);
        for _ in 0..iters {
            if cold {
                drop_caches();
            }
            let ov = Arc::new(Overlay::new(base.clone() as Arc<dyn Device>));
            let r0 = read();
            let t0 = Instant::now();
            let mut fs = XfsFs::open(ov.clone() as Arc<dyn Device>, "bench").unwrap();
            let t1 = Instant::now();
            let r1 = read();
            fs.replace_file(&fstab, new).unwrap();
            let t2 = Instant::now();
            let r2 = read();
            fs.verify_paths(&[(fstab.clone(), Some(new.to_vec()))])
                .unwrap();
            let t3 = Instant::now();
            let r3 = read();
            t_open.push(t1 - t0);
            t_rep.push(t2 - t1);
            t_ver.push(t3 - t2);
            r_open += r1 - r0;
            r_rep += r2 - r1;
            r_ver += r3 - r2;
            assert_eq!(fs.read_file(&fstab, 1 << 20).unwrap(), new);
        }
        let n = u64::from(iters);
        let ms = |t: &[Duration]| median(t).as_secs_f64() * 1e3;
        let all: Vec<Duration> = (0..t_open.len())
            .map(|i| t_open[i] + t_rep[i] + t_ver[i])
            .collect();
        let total = ms(&all);
        let read = (r_open + r_rep + r_ver) / n;
        println!(
            "{gib:>3} GiB {}: open {:.3} ms {} KiB; replace_file {:.3} ms {} KiB; self-check {:.3} ms {} KiB; total {total:.3} ms {:.1} KiB read (median of {iters})",
            if cold { "cold" } else { "warm" },
            ms(&t_open),
            r_open / n / 1024,
            ms(&t_rep),
            r_rep / n / 1024,
            ms(&t_ver),
            r_ver / n / 1024,
            read as f64 / 1024.0,
        );
        rows.push((gib, cold, total, read));
        if cold || !cold_ok {
            std::fs::remove_file(&img).unwrap();
        }
    }
    for cold in [false, true] {
        let row = |g: u64| rows.iter().find(|r| r.0 == g && r.1 == cold).copied();
        for (a, b) in [(1, 10), (1, 100)] {
            let (Some(a), Some(b)) = (row(a), row(b)) else {
                continue;
            };
            println!(
                "{} GiB vs {} GiB ({}): {:+.0}% time, {:+.0}% bytes",
                b.0,
                a.0,
                if cold { "cold" } else { "warm" },
                (b.2 / a.2 - 1.0) * 100.0,
                (b.3 as f64 / a.3 as f64 - 1.0) * 100.0,
            );
        }
    }
}

/// Drop the page cache (root only); whether it worked.
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}
