//! `cargo xtask fuzz [--seconds N] [--jobs J] [--sanitizer S] [TARGET...]`: the
//! cargo-fuzz targets in `fuzz/`, on the stable toolchain.
//!
//! cargo-fuzz needs `-Z` flags (sanitizer, coverage passes); stable rustc
//! takes them with `RUSTC_BOOTSTRAP=1`, so no nightly toolchain is needed.
//! AddressSanitizer's runtime ships with the stable toolchain for
//! x86_64-unknown-linux-gnu; `--sanitizer none` runs without it.
//!
//! Before running, this builds the base images of `inspect_image` (small real
//! guests: see [`build_bases`]) into `fuzz/bases/`, and seeds each target's
//! corpus (`fuzz/corpus/TARGET/seed-*`) from them and from the real hives in
//! `../shared/realdata`. Saved crash inputs in `fuzz/regressions/TARGET/` are
//! run first, every time. Each target runs for N seconds in one process (one
//! libFuzzer job), J targets at a time; crash inputs go to
//! `fuzz/artifacts/TARGET/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// cargo-fuzz installed from crates.io when missing or of another version.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "part_read",
    "probe",
    "ext4_read",
    "ntfs_read",
    "hive",
    "hive_edit",
    "inspect_image",
];

const USAGE: &str = "\
cargo xtask fuzz [--seconds N] [--jobs J] [--sanitizer address|none] [TARGET...]

Runs each fuzz target (all without TARGET) for N seconds (default 60), one
process each, J of them at a time (default 2, one per core), and prints its executions, coverage and crashes; fails if any
target crashed (inputs in fuzz/artifacts/TARGET/). Targets: ";

/// Options of one fuzz run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: u64,
    /// Targets fuzzed at the same time.
    pub jobs: usize,
    pub sanitizer: String,
    pub targets: Vec<String>,
}

pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 60,
        jobs: 2,
        sanitizer: "address".into(),
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                o.seconds = it
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds")?
            }
            "--jobs" => {
                o.jobs = it
                    .next()
                    .context("--jobs needs a number")?
                    .parse()
                    .context("--jobs")?
            }
            "--sanitizer" => o.sanitizer = it.next().context("--sanitizer needs a name")?.clone(),
            "-h" | "--help" => {
                println!("{USAGE}{}", TARGETS.join(", "));
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n\n{USAGE}{}", TARGETS.join(", ")),
            s => {
                ensure!(
                    TARGETS.contains(&s),
                    "unknown fuzz target {s}: one of {TARGETS:?}"
                );
                o.targets.push(s.to_string());
            }
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|s| s.to_string()).collect();
    }
    Ok(o)
}

/// What libFuzzer said at the end of one target's run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub execs: u64,
    pub execs_per_sec: u64,
    /// Edges covered (`cov:`) and features (`ft:`) in the last status line.
    pub cov: u64,
    pub ft: u64,
    pub corpus: u64,
    pub peak_rss_mb: u64,
    /// Files libFuzzer wrote for a crash, timeout or out-of-memory.
    pub crashes: Vec<String>,
}

/// Parse libFuzzer's output (`-print_final_stats=1`).
pub fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    let num = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
    for line in log.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            s.execs = num(v);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.execs_per_sec = num(v);
        } else if let Some(v) = line.strip_prefix("stat::peak_rss_mb:") {
            s.peak_rss_mb = num(v);
        } else if let Some(i) = line.find("Test unit written to ") {
            s.crashes
                .push(line[i + "Test unit written to ".len()..].trim().to_string());
        } else if line.starts_with('#') && line.contains(" cov: ") {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                match w[0] {
                    "cov:" => s.cov = num(w[1]),
                    "ft:" => s.ft = num(w[1]),
                    "corp:" => s.corpus = num(w[1].split('/').next().unwrap_or("0")),
                    _ => {}
                }
            }
        }
    }
    s
}

fn fuzz_dir() -> PathBuf {
    crate::fixtures::workspace_root().join("fuzz")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::fixtures::workspace_root().join("target"))
        .join("fuzz")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", format!("{cmd:?}").replace('"', ""));
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

/// `cargo install --locked cargo-fuzz@VERSION` unless that version is there.
fn ensure_cargo_fuzz(nice: bool) -> Result<()> {
    let out = Command::new(cargo()).args(["fuzz", "--version"]).output();
    if let Ok(o) = out {
        if String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION) {
            return Ok(());
        }
    }
    run(cargo_cmd(nice).args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// One base image of `inspect_image`: a disk with ext2/3/4 guests made by
/// sfdisk and `mke2fs -d` from the fixture trees.
struct BaseDisk {
    name: &'static str,
    size_mib: u64,
    /// `gpt` or `dos`.
    label: &'static str,
    /// (sfdisk line, mke2fs type, uuid, fs label, tree) per partition.
    parts: &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    )],
}

const BASES: &[BaseDisk] = &[
    // Debian 12 as VMware leaves it: /dev/sdX fstab, ifupdown on ens192.
    BaseDisk {
        name: "a-debian-mbr",
        size_mib: 8,
        label: "dos",
        parts: &[(
            "start=2048, type=83, bootable",
            "ext4",
            "de0a0001-0000-4000-8000-000000000001",
            "rootfs",
            "demo",
        )],
    },
    // RHEL 8: separate /boot by UUID (mounted as one tree), BLS and grubenv,
    // ifcfg with HWADDR, persistent-net rules.
    BaseDisk {
        name: "b-rhel8-mbr",
        size_mib: 12,
        label: "dos",
        parts: &[
            (
                "start=2048, size=6144, type=83, bootable",
                "ext4",
                "4ae80001-0000-4000-8000-000000000001",
                "boot",
                "rhel8-boot",
            ),
            (
                "start=8192, type=83",
                "ext4",
                "4ae80002-0000-4000-8000-000000000002",
                "root",
                "rhel8-root",
            ),
        ],
    },
    // RHEL 5 on ext3 (indirect block maps) on a GPT disk, legacy GRUB.
    BaseDisk {
        name: "c-legacy-gpt",
        size_mib: 6,
        label: "gpt",
        parts: &[(
            "start=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "ext3",
            "1e9a0001-0000-4000-8000-000000000001",
            "legacy",
            "legacy",
        )],
    },
    // RHEL 8 as its installer lays it out on XFS (the RHEL 8 mkfs profile),
    // 16 MiB volumes of one AG each: the XFS reader, the clean-log check
    // and the XFS writer under the rules.
    BaseDisk {
        name: "e-rhel8-xfs",
        size_mib: 34,
        label: "dos",
        parts: &[
            (
                "start=2048, size=32768, type=83, bootable",
                "xfs",
                "4ae80011-0000-4000-8000-000000000001",
                "boot",
                "rhel8-boot",
            ),
            (
                "start=34816, type=83",
                "xfs",
                "4ae80012-0000-4000-8000-000000000002",
                "root",
                "rhel8-root",
            ),
        ],
    },
];

/// A small XFS volume from a staged tree, with the RHEL 8 profile. mkfs.xfs
/// refuses volumes under 300 MiB and logs under 64 MiB except under
/// fstests (its `TEST_DIR`/`TEST_DEV`/`QA_CHECK_FS` variables), which is
/// how a 16 MiB volume with the minimum log is made here. Inode times are
/// mkfs's clock (only their bytes differ between machines, not the
/// layout, so the sector indices of saved crash inputs stay valid).
fn mkfs_xfs(tree: &Path, file: &Path, uuid: &str, label: &str, work: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(file.with_extension("xfs-stage"));
    let st = crate::fixtures::tree::stage(
        tree,
        &file.with_extension("xfs-stage"),
        crate::fixtures::recipe::FsKind::Xfs,
        &std::collections::BTreeMap::new(),
        1_700_000_000,
    )?;
    let proto = file.with_extension("xfs-proto");
    fs::write(&proto, crate::fixtures::mkfs::xfs_proto(&st)?)?;
    crate::fixtures::tools::run(
        Command::new("mkfs.xfs")
            .env("TEST_DIR", work)
            .env("TEST_DEV", "/dev/null")
            .env("QA_CHECK_FS", "xfs")
            .args(["-q", "-f", "-K", "-L", label, "-m"])
            .arg(format!(
                "uuid={uuid},crc=1,finobt=1,reflink=1,bigtime=0,inobtcount=0"
            ))
            .args(["-i", "sparse=1", "-p"])
            .arg(&proto)
            .arg(file),
        None,
    )?;
    fs::remove_dir_all(&st.dir)?;
    fs::remove_file(&proto)?;
    crate::fixtures::tools::run(
        Command::new("xfs_repair")
            // One AG: repair cannot cross-check the geometry, and says so.
            .args(["-n", "-f", "-o", "force_geometry"])
            .arg(file),
        None,
    )
    .context("xfs_repair -n on the XFS base")?;
    Ok(())
}

/// The Windows base: the real NTFS system volume of dfvfs's test data
/// (Windows/System32/config), converted to raw; skipped without it.
const WINDOWS_QCOW2: &str = "dfvfs/test_data/windows_volume.qcow2";

fn realdata() -> PathBuf {
    crate::fixtures::workspace_root()
        .join("..")
        .join("shared")
        .join("realdata")
}

/// Build the base images into `dir` (each kept once built).
pub fn build_bases(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let trees = crate::fixtures::fixtures_dir().join("trees");
    for b in BASES {
        let img = dir.join(format!("{}.img", b.name));
        out.push(img.clone());
        if img.exists() {
            continue;
        }
        let tmp = dir.join(format!("{}.tmp", b.name));
        let _ = fs::remove_file(&tmp);
        fs::File::create(&tmp)?.set_len(b.size_mib << 20)?;
        let script = format!(
            "label: {}\n{}\n",
            b.label,
            b.parts.iter().map(|p| p.0).collect::<Vec<_>>().join("\n")
        );
        crate::fixtures::tools::run(
            Command::new("sfdisk")
                .arg("--no-reread")
                .arg("-q")
                .arg(&tmp),
            Some(script.as_bytes()),
        )?;
        let table = crate::fixtures::tools::run(Command::new("sfdisk").arg("-J").arg(&tmp), None)?;
        let v: serde_json::Value = serde_json::from_slice(&table.stdout)?;
        let parts = v["partitiontable"]["partitions"]
            .as_array()
            .context("sfdisk -J: no partitions")?;
        for (p, spec) in parts.iter().zip(b.parts) {
            let start = p["start"].as_u64().context("start")? * 512;
            let size = p["size"].as_u64().context("size")? * 512;
            let fsimg = dir.join(format!("{}.fs", b.name));
            let _ = fs::remove_file(&fsimg);
            fs::File::create(&fsimg)?.set_len(size)?;
            // A copy of the tree with fixed times, so the image is the same
            // on every machine (offsets in saved crash inputs stay valid).
            let stage = dir.join(format!("{}.tree", b.name));
            let _ = fs::remove_dir_all(&stage);
            crate::fixtures::tools::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(trees.join(spec.4))
                    .arg(&stage),
                None,
            )?;
            crate::fixtures::tools::run(
                Command::new("find").arg(&stage).args([
                    "-exec",
                    "touch",
                    "-h",
                    "-d",
                    "@1700000000",
                    "{}",
                    "+",
                ]),
                None,
            )?;
            if spec.1 == "xfs" {
                mkfs_xfs(&stage, &fsimg, spec.2, spec.3, dir)?;
            } else {
                crate::fixtures::tools::run(
                    Command::new("mke2fs")
                        .env("E2FSPROGS_FAKE_TIME", "1700000000")
                        .args(["-q", "-F", "-t", spec.1, "-b", "1024", "-N", "128"])
                        .args(["-U", spec.2, "-L", spec.3, "-E"])
                        .arg(format!("hash_seed={},root_owner=0:0", spec.2))
                        .args(if spec.1 == "ext2" {
                            &[][..]
                        } else {
                            &["-J", "size=1"][..]
                        })
                        .arg("-d")
                        .arg(&stage)
                        .arg(&fsimg),
                    None,
                )?;
            }
            let fsbytes = fs::read(&fsimg)?;
            let f = fs::OpenOptions::new().write(true).open(&tmp)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &fsbytes, start)?;
            fs::remove_file(&fsimg)?;
            fs::remove_dir_all(&stage)?;
        }
        fs::rename(&tmp, &img)?;
    }
    let win = dir.join("d-windows-ntfs.img");
    let qcow = realdata().join(WINDOWS_QCOW2);
    if !win.exists() && qcow.exists() {
        let tmp = dir.join("d-windows-ntfs.tmp");
        crate::fixtures::tools::run(
            Command::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(&qcow)
                .arg(&tmp),
            None,
        )?;
        fs::rename(&tmp, &win)?;
    }
    if win.exists() {
        out.push(win);
    }
    // The order inspect_image indexes them in (it sorts the names), so
    // seed `[i]` is the base it is named after.
    out.sort();
    Ok(out)
}

/// Hive files (regf magic, at most 600 KiB) from the real data.
fn real_hives() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![realdata()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if m.len() <= 600 << 10 {
                let mut magic = [0u8; 4];
                if fs::File::open(&p)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                    .is_ok()
                    && &magic == b"regf"
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Partitions (start, size) of a base image, as sfdisk reads them.
fn partitions(img: &Path) -> Result<Vec<(u64, u64)>> {
    let out = crate::fixtures::tools::run(Command::new("sfdisk").arg("-J").arg(img), None)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["partitiontable"]["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p["start"].as_u64()? * 512, p["size"].as_u64()? * 512)))
                .collect()
        })
        .unwrap_or_default())
}

/// Write the seed inputs of every target into `fuzz/corpus/TARGET/seed-*`.
fn seed(bases: &[PathBuf]) -> Result<()> {
    let corpus = fuzz_dir().join("corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let d = corpus.join(target);
        fs::create_dir_all(&d)?;
        fs::write(d.join(format!("seed-{name}")), bytes)?;
        Ok(())
    };
    let with = |b: u8, rest: &[u8]| -> Vec<u8> {
        let mut v = vec![b];
        v.extend_from_slice(rest);
        v
    };
    for (i, img) in bases.iter().enumerate() {
        let name = img.file_stem().and_then(|s| s.to_str()).unwrap_or("base");
        put("inspect_image", name, &[i as u8])?;
        let bytes = fs::read(img)?;
        let head = &bytes[..bytes.len().min(64 << 10)];
        put("part_read", name, &with(1, head))?;
        let parts = partitions(img)?;
        let vols: Vec<&[u8]> = if parts.is_empty() {
            vec![&bytes[..]]
        } else {
            parts
                .iter()
                .filter_map(|&(s, n)| bytes.get(s as usize..(s + n) as usize))
                .collect()
        };
        for (n, v) in vols.iter().enumerate() {
            let vname = format!("{name}-{n}");
            put("probe", &vname, &with(0, &v[..v.len().min(64 << 10)]))?;
            if v.get(3..7) == Some(b"NTFS") {
                continue; // 34 MiB: ntfs_read is seeded with a small volume below
            }
            put("ext4_read", &vname, v)?;
        }
    }
    let ntfs = realdata().join("ntfs-rs/testdata/testfs1");
    if let Ok(b) = fs::read(&ntfs) {
        put("ntfs_read", "ntfs-rs-testfs1", &b)?;
        put(
            "probe",
            "ntfs-rs-testfs1",
            &with(0, &b[..b.len().min(64 << 10)]),
        )?;
    }
    for (n, h) in real_hives().iter().enumerate() {
        let b = fs::read(h)?;
        let name = format!(
            "{n:02}-{}",
            h.file_name().and_then(|s| s.to_str()).unwrap_or("hive")
        );
        put("hive", &name, &b)?;
        put("hive_edit", &name, &with(0, &b))?;
        // A script: set a DWORD on the root, create a key, set a string in it.
        let script: &[u8] = &[
            0, 0, 0x81, b'v', 3, 4, 0, 1, 2, 3, 4, 2, 0, 0x82, b'F', b'z',
        ];
        let mut s = vec![script.len() as u8];
        s.extend_from_slice(script);
        s.extend_from_slice(&b);
        put("hive_edit", &format!("{name}-edit"), &s)?;
    }
    Ok(())
}

/// Build every target and run each for `opts.seconds`; print a table and
/// fail if any crashed.
pub fn fuzz(opts: &Options) -> Result<()> {
    build(opts, false)?;
    run_targets(opts)
}

/// cargo (through `nice -n 19` when `nice`, so a build in the background
/// takes only what the foreground leaves).
fn cargo_cmd(nice: bool) -> Command {
    if nice {
        let mut c = Command::new("nice");
        c.args(["-n", "19"]).arg(cargo());
        c
    } else {
        Command::new(cargo())
    }
}

/// `cargo fuzz SUB` with this run's sanitizer and target directory.
fn fuzz_command(opts: &Options, sub: &str, nice: bool) -> Command {
    let mut c = cargo_cmd(nice);
    c.current_dir(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", sub, "-s", &opts.sanitizer, "--target-dir"])
        .arg(target_dir());
    c
}

/// Everything before the runs: cargo-fuzz installed, the bases built, the
/// corpora seeded, every target built. `cargo xtask test` does this in the
/// background (`nice`) while the tests run, where a core is often idle.
pub fn build(opts: &Options, nice: bool) -> Result<()> {
    ensure_cargo_fuzz(nice)?;
    let dir = fuzz_dir();
    let bases = build_bases(&dir.join("bases"))?;
    seed(&bases)?;
    run(&mut fuzz_command(opts, "build", nice))
}

/// Run every target of `opts` (built by [`build`]) and report.
pub fn run_targets(opts: &Options) -> Result<()> {
    let dir = fuzz_dir();
    let tdir = target_dir();
    // inspect_image's working copies of the bases; removed after the run.
    let work = std::env::temp_dir().join(format!("vmie-fuzz-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let logs = tdir.join("logs");
    fs::create_dir_all(&logs)?;
    // `jobs` targets at a time (two: one per core): each is one libFuzzer process
    // and they all run for the same time, so a pair ends together.
    let mut results = Vec::new();
    for pair in opts.targets.chunks(opts.jobs.max(1)) {
        let mut running = Vec::new();
        for t in pair {
            let corpus = dir.join("corpus").join(t);
            fs::create_dir_all(&corpus)?;
            let mut c = fuzz_command(opts, "run", false);
            c.env("VMIE_FUZZ_TMP", work.join(t)).arg(t).arg(&corpus);
            fs::create_dir_all(work.join(t))?;
            let reg = dir.join("regressions").join(t);
            if reg.is_dir() {
                c.arg(&reg);
            }
            c.args([
                "--",
                "-print_final_stats=1",
                "-timeout=30",
                "-rss_limit_mb=4096",
            ])
            .arg(format!("-max_total_time={}", opts.seconds));
            match t.as_str() {
                // Its seeds are one byte (a base, no patch): let inputs grow to
                // many patches at once instead of a few bytes at a time.
                "inspect_image" => {
                    c.args(["-len_control=0", "-max_len=2048"]);
                }
                // Whole volumes of 2-7 MiB: libFuzzer would cut them at 1 MiB,
                // below what their superblocks claim.
                "ext4_read" | "ntfs_read" => {
                    c.arg("-max_len=8388608");
                }
                _ => {}
            }
            let log = logs.join(format!("{t}.log"));
            eprintln!(
                "xtask: fuzzing {t} for {} s (log {})",
                opts.seconds,
                log.display()
            );
            let f = fs::File::create(&log)?;
            let child = c
                .stdout(f.try_clone()?)
                .stderr(f)
                .spawn()
                .with_context(|| format!("starting cargo fuzz run {t}"))?;
            running.push((t.clone(), child, log));
        }
        for (t, mut child, log) in running {
            let st = child
                .wait()
                .with_context(|| format!("waiting for cargo fuzz run {t}"))?;
            let text = fs::read_to_string(&log).unwrap_or_default();
            let s = parse_stats(&text);
            let failed = !st.success() || !s.crashes.is_empty();
            results.push((t, s, failed, log));
        }
    }
    let _ = fs::remove_dir_all(&work);
    println!(
        "{:<14} {:>10} {:>8} {:>7} {:>7} {:>6}  crashes",
        "target", "execs", "exec/s", "cov", "ft", "corpus"
    );
    let mut bad = Vec::new();
    for (t, s, failed, log) in &results {
        println!(
            "{t:<14} {:>10} {:>8} {:>7} {:>7} {:>6}  {}",
            s.execs,
            s.execs_per_sec,
            s.cov,
            s.ft,
            s.corpus,
            if *failed {
                if s.crashes.is_empty() {
                    format!("run failed, see {}", log.display())
                } else {
                    s.crashes.join(" ")
                }
            } else {
                "none".to_string()
            }
        );
        if *failed {
            bad.push(t.as_str());
        }
    }
    // A closing line that CI reads as a test count.
    println!(
        "fuzz: {} passed, {} failed",
        results.len() - bad.len(),
        bad.len()
    );
    ensure!(
        bad.is_empty(),
        "fuzzing found crashes in {} (inputs under fuzz/artifacts/; reproduce with \
         `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s {} TARGET INPUT`)",
        bad.join(", "),
        opts.sanitizer
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_final_stats() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 43 exec/s: 2048 rss: 40Mb\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='fuzz/artifacts/hive/'; Test unit written to fuzz/artifacts/hive/crash-ab\n\
                   stat::number_of_executed_units: 4100\n\
                   stat::average_exec_per_sec:     2050\n\
                   stat::new_units_added:          39\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              41\n";
        let s = parse_stats(log);
        assert_eq!(
            s,
            Stats {
                execs: 4100,
                execs_per_sec: 2050,
                cov: 120,
                ft: 300,
                corpus: 40,
                peak_rss_mb: 41,
                crashes: vec!["fuzz/artifacts/hive/crash-ab".into()],
            }
        );
    }
}
