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
    let demo_s = demo.display().to_string();
    let gpt_s = gpt.display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "inspect --format json, 4 GiB MBR (ext4, extended, logical swap)",
            vec!["inspect", "--format", "json", &demo_s],
        ),
        (
            "inspect --format json, 4 GiB GPT (vfat, xfs, btrfs, swap, ntfs)",
            vec!["inspect", "--format", "json", &gpt_s],
        ),
    ];
    let cat_target = format!("{demo_s}:1");
    let mut cases = cases;
    cases.push((
        "cat IMAGE:1 /etc/os-release (symlink), 4 GiB MBR",
        vec!["cat", &cat_target, "/etc/os-release"],
    ));
    println!("{runs} runs each, release build, wall clock of the whole process:");
    for (name, argv) in cases {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            let st = Command::new(&bin)
                .args(&argv)
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            times.push(t0.elapsed());
            if !st.success() {
                bail!("{name}: vmie-fixup {argv:?} failed: {st}");
            }
        }
        let min = times.iter().min().copied().unwrap_or_default();
        let med = median(&mut times);
        println!(
            "  {name}: median {:.2} ms, min {:.2} ms",
            med.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
