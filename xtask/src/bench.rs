//! `cargo xtask bench`: wall-clock timings of whole CLI runs on the fixture
//! images, with the release build. Numbers are printed, never asserted: a
//! timing assertion in a test would fail on a loaded machine and prove nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Run the benchmarks; `runs` repetitions each.
pub fn run(args: &[String]) -> Result<()> {
    let runs: usize = match args.first() {
        Some(n) => n.parse().context("usage: cargo xtask bench [RUNS]")?,
        None => 30,
    };
    let root = crate::fixtures::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "vmie-fixup"])
        .status()
        .context("building the release binary")?;
    if !st.success() {
        bail!("cargo build --release failed");
    }
    let bin = root.join("target/release/vmie-fixup");
    let demo = crate::fixtures::image("demo")?;
    let gpt = crate::fixtures::image("gpt-mixed")?;
    let big10 = crate::fixtures::image("demo-10g")?;
    let demo_s = demo.display().to_string();
    let gpt_s = gpt.display().to_string();
    let big10_s = big10.display().to_string();
    let lvm = crate::lvm::fixture("lvm-rhel8")?.disks[0].clone();
    let lvm_s = lvm.display().to_string();
    // Real debootstrapped Debian 12 guests (`cargo xtask guest`): a 33 MB
    // zstd initramfs (138 MB unpacked) holding every driver, and a
    // host-only zstd one that gets the cloud's drivers injected.
    let real = crate::guest::build("mbr-logical-swap")?;
    let hostonly = crate::guest::build("hostonly")?;
    let real_s = real.display().to_string();
    let hostonly_s = hostonly.display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "inspect --format json, 4 GiB MBR (ext4, extended, logical swap)",
            vec!["inspect", "--format", "json", &demo_s],
        ),
        (
            "inspect --format json, 10 GiB MBR (the same guest)",
            vec!["inspect", "--format", "json", &big10_s],
        ),
        (
            "inspect --format json, 4 GiB GPT (vfat, xfs, btrfs, swap, ntfs)",
            vec!["inspect", "--format", "json", &gpt_s],
        ),
    ];
    let cat_target = format!("{demo_s}:1");
    let mut cases = cases;
    cases.push((
        "inspect --format json, 1 GiB MBR, RHEL 8 root on LVM (VG rhel: root, swap)",
        vec!["inspect", "--format", "json", &lvm_s],
    ));
    cases.push((
        "full Linux fixup, dry run, RHEL 8 root on LVM",
        vec!["--dry-run", &lvm_s],
    ));
    cases.push((
        "inspect --format json, real Debian 12 guest (3 GiB, 33 MB zstd initramfs)",
        vec!["inspect", "--format", "json", &real_s],
    ));
    cases.push((
        "full Linux fixup, dry run, real Debian 12 guest",
        vec!["--dry-run", &real_s],
    ));
    cases.push((
        "full Linux fixup, dry run, real Debian 12 guest with a host-only initramfs (drivers injected)",
        vec!["--dry-run", &hostonly_s],
    ));
    cases.push((
        "cat IMAGE:1 /etc/os-release (symlink), 4 GiB MBR",
        vec!["cat", &cat_target, "/etc/os-release"],
    ));
    cases.push((
        "full Linux fixup, dry run (inspect, rules, self-check), 4 GiB MBR",
        vec!["--dry-run", &demo_s],
    ));
    // The 10 GiB guest as VMware exports it (streamOptimized VMDK), made
    // once by qemu-img and kept beside the fixtures.
    let vmdk = big10.with_extension("stream.vmdk");
    if !vmdk.is_file() {
        let tmp = big10.with_extension("stream.vmdk.tmp");
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"])
            .arg(&big10)
            .arg(&tmp)
            .status()
            .context("qemu-img (Debian package qemu-utils)")?;
        if !st.success() {
            bail!("qemu-img convert to streamOptimized failed");
        }
        std::fs::rename(&tmp, &vmdk)?;
    }
    let vmdk_s = vmdk.display().to_string();
    cases.push((
        "inspect --format json, the 10 GiB guest as a streamOptimized VMDK (read in place)",
        vec!["inspect", "--format", "json", &vmdk_s],
    ));
    cases.push((
        "full Linux fixup, dry run, the 10 GiB guest as a streamOptimized VMDK",
        vec!["--dry-run", &vmdk_s],
    ));
    println!("{runs} runs each, release build, wall clock of the whole process:");
    for (name, argv) in cases {
        let mut times = Vec::with_capacity(runs);
        let mut read = String::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let out = Command::new(&bin)
                .args(&argv)
                .env("VMIE_STATS", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .with_context(|| format!("running {}", bin.display()))?;
            times.push(t0.elapsed());
            if !out.status.success() {
                bail!("{name}: vmie-fixup {argv:?} failed: {}", out.status);
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if let Some(l) = err
                .lines()
                .find_map(|l| l.strip_prefix("vmie-fixup: stats: "))
            {
                read = l.to_string();
            }
        }
        let min = times.iter().min().copied().unwrap_or_default();
        let med = median(&mut times);
        println!(
            "  {name}: median {:.2} ms, min {:.2} ms; {read}",
            med.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3
        );
    }
    convert_then_inspect(&root, &bin, &vmdk, runs.min(3))?;
    decoder_floor(&root, runs.min(7))?;
    fixup_with_commit(&root, &bin, &demo, runs.min(10), "4 GiB")?;
    fixup_with_commit(&root, &bin, &big10, runs.min(10), "10 GiB")?;
    fixup_with_commit(
        &root,
        &bin,
        &lvm,
        runs.min(10),
        "1 GiB, RHEL 8 root on LVM,",
    )?;
    fixup_with_commit(
        &root,
        &bin,
        &real,
        runs.min(10),
        "real Debian 12 guest, 3 GiB",
    )?;
    fixup_with_commit(
        &root,
        &bin,
        &hostonly,
        runs.min(10),
        "real Debian 12 guest, host-only initramfs (drivers injected), 3 GiB",
    )?;
    // The ext4 and XFS writers alone, in process: replace /etc/fstab on 1,
    // 10 and 100 GiB images (time and bytes read per step; on XFS the
    // clean-log check is part of replace_file).
    for (krate, fs) in [("vmie-ext4", "ext4"), ("vmie-xfs", "XFS")] {
        println!("{fs} writer, replace /etc/fstab in process:");
        let st = Command::new(&cargo)
            .current_dir(&root)
            .args(["run", "--release", "--quiet", "-p", krate])
            .args(["--example", "replace_fstab"])
            .status()
            .with_context(|| format!("running {krate}'s replace_fstab example"))?;
        if !st.success() {
            bail!("{krate}'s replace_fstab benchmark failed");
        }
    }
    Ok(())
}

/// The floor under the real guest's rows: the zstd tool (libzstd, as we
/// use it) decompressing the guest's whole initramfs to nothing. A fix run
/// decompresses it only up to the last cloud driver (70% of it), so its
/// time is best read against this line on the machine at hand.
fn decoder_floor(root: &std::path::Path, runs: usize) -> Result<()> {
    let boot = root.join("target/guest-cache/bookworm/boot");
    let Some(initrd) = std::fs::read_dir(&boot)
        .with_context(|| format!("{}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("initrd.img-"))
        })
    else {
        bail!("no initrd.img-* in {}", boot.display());
    };
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let st = Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .arg(&initrd)
            .stdout(Stdio::null())
            .status()
            .context("zstd (Debian package zstd)")?;
        times.push(t0.elapsed());
        if !st.success() {
            bail!("zstd -d {} failed", initrd.display());
        }
    }
    let med = median(&mut times);
    println!(
        "  zstd -d of the real guest's whole initramfs ({} bytes), the decoder's floor: median {:.0} ms ({runs} runs)",
        std::fs::metadata(&initrd)?.len(),
        med.as_secs_f64() * 1e3
    );
    Ok(())
}

/// What a pipeline without native reading does: `qemu-img convert -O raw`,
/// then inspect the raw copy.
fn convert_then_inspect(
    root: &std::path::Path,
    bin: &std::path::Path,
    vmdk: &std::path::Path,
    runs: usize,
) -> Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let raw = dir.join("converted.raw");
    let mut times = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&raw);
        let t0 = Instant::now();
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(vmdk)
            .arg(&raw)
            .status()
            .context("qemu-img")?;
        if !st.success() {
            bail!("qemu-img convert failed");
        }
        let out = Command::new(bin)
            .args(["inspect", "--format", "json"])
            .arg(&raw)
            .stdout(Stdio::null())
            .output()?;
        times.push(t0.elapsed());
        if !out.status.success() {
            bail!("inspect of the converted image failed");
        }
    }
    let _ = std::fs::remove_file(&raw);
    let med = median(&mut times);
    println!(
        "  qemu-img convert -O raw + inspect, the 10 GiB streamOptimized VMDK: median {:.0} ms ({runs} runs)",
        med.as_secs_f64() * 1e3
    );
    Ok(())
}

/// The real run writes, so each repetition works on a fresh copy.
fn fixup_with_commit(
    root: &std::path::Path,
    bin: &std::path::Path,
    demo: &std::path::Path,
    runs: usize,
    size: &str,
) -> Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("demo-fix.raw");
    let mut times = Vec::new();
    let mut peak_kib = 0u64;
    for _ in 0..runs {
        for entry in std::fs::read_dir(&dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        crate::fixtures::image::create_sparse(&copy, std::fs::metadata(demo)?.len())?;
        crate::fixtures::image::copy_sparse(demo, &copy, 0, u64::MAX)?;
        // The run fsyncs the image: flush the fresh copy first, or its
        // dirty pages would be timed as the run's.
        let _ = Command::new("sync").status();
        let t0 = Instant::now();
        // GNU time prints the peak resident set size (KiB) last.
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(bin)
            .arg(&copy)
            .stdout(Stdio::null())
            .output()
            .context("running /usr/bin/time (Debian package time)")?;
        times.push(t0.elapsed());
        if !out.status.success() {
            bail!("fixup run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let kib: u64 = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        peak_kib = peak_kib.max(kib);
    }
    let med = median(&mut times);
    println!(
        "  full Linux fixup with commit and undo journal, {size} MBR: median {:.2} ms, peak RSS {:.1} MiB ({runs} runs)",
        med.as_secs_f64() * 1e3,
        peak_kib as f64 / 1024.0
    );
    Ok(())
}
