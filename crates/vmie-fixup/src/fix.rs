//! The fixup run: `vmie-fixup [--dry-run] IMAGE...`, a thin shell over the
//! library's [`vmie_fixup::plan`] and [`vmie_fixup::Plan::commit`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use vmie_fixup::{FixError, FixOptions, Report};
use vmie_rules::engine::{FileOpDone, Severity};

pub(crate) use vmie_fixup::{linux_guests as guests, os_json, win_os_json, windows_guests};

use crate::{Failure, Format};

/// Options of the fixup run.
#[derive(Debug, Args)]
pub(crate) struct FixArgs {
    /// Disk images of one VM, boot disk first: raw images (and fixed VHDs)
    /// are fixed in place; qcow2, VMDK, VHDX, dynamic VHD and OVA are read
    /// natively, and fixed into new raw images with --output.
    #[arg(value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Plan and report every change, write nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Output format of the report.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Add the rule packs (*.toml) in DIR; may be given several times.
    #[arg(long = "rules", value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Leave out the rules shipped with vmie-fixup.
    #[arg(long)]
    no_default_rules: bool,
    /// Also run the filesystem's own checker (e2fsck -fn, xfs_repair -n, fsck.fat -n, ntfsfix -n) read-only on every
    /// volume the run changes: before the commit (any finding refuses the
    /// run, nothing written) and after it (any finding rolls the commit back
    /// through its undo journal). Slower: a full check reads all metadata.
    #[arg(long)]
    check_fs: bool,
    /// Write the fixed VM to new raw images instead of changing the input
    /// in place: one FILE per disk, boot disk first (an OVA's disks in its
    /// OVF's order). For images that cannot be written in place
    /// (streamOptimized or sparse VMDK, qcow2, VHDX, dynamic VHD, OVA); the
    /// input is only read, FILE must not exist, and the undo journal is
    /// FILE's. With --dry-run nothing is created.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Vec<PathBuf>,
    /// Windows guests: stage the driver packages in DIR (.inf, .sys, .cat,
    /// in folders of any depth; e.g. the cloud's ENA and NVMe packages or
    /// virtio-win) into %SystemRoot%\vmie-drivers and add each folder
    /// holding an .inf to DevicePath, so that Plug and Play installs them
    /// when it finds the new devices at first boot. A driver whose INF
    /// installs a boot-start kernel service (a storage miniport such as
    /// AWS NVMe or viostor) is also copied to System32\drivers, made a
    /// boot-start service and mapped to its hardware ids (DriverDatabase on
    /// Windows 8 and later, CriticalDeviceDatabase before), so the first
    /// boot on the new controller finds its disk.
    #[arg(long, value_name = "DIR")]
    drivers: Option<PathBuf>,
}

fn failure(e: FixError) -> Failure {
    Failure {
        code: e.exit_code(),
        error: e.into(),
    }
}

pub(crate) fn run(args: &FixArgs) -> Result<(), Failure> {
    if args.images.is_empty() {
        return Err(Failure {
            code: 2,
            error: anyhow!("give the VM's disk images (boot disk first), or a command; see --help"),
        });
    }
    if let Some(missing) = args.images.iter().find(|p| !p.exists()) {
        return Err(Failure {
            code: 2,
            error: anyhow!(
                "{}: no such image file, and not a command (see --help)",
                missing.display()
            ),
        });
    }
    let rules = vmie_fixup::load_rules(args.no_default_rules, &args.rules).map_err(failure)?;
    let opts = FixOptions {
        rules,
        dry_run: args.dry_run,
        check_fs: args.check_fs,
        keys: crate::guesttree::keys(),
        drivers: args.drivers.clone(),
    };
    crate::human::vlog!("loaded {} rules", opts.rules.len());
    let mut images = args.images.clone();
    let mut created: Vec<PathBuf> = Vec::new();
    if !args.output.is_empty() && !args.dry_run {
        // The plan on the input first: a blocked guest gets no copy.
        let dry = FixOptions {
            dry_run: true,
            ..opts.clone()
        };
        let first = vmie_fixup::plan(&args.images, &dry).map_err(failure)?;
        if first.is_blocked() {
            print_report(args, &args.images, &first.into_report())
                .map_err(|e| Failure { code: 3, error: e })?;
            return Err(Failure {
                code: 1,
                error: anyhow!("the guest would not import; nothing was written"),
            });
        }
        drop(first);
        let copies = copy_out(args)?;
        images = copies.iter().map(|c| c.path.clone()).collect();
        created.clone_from(&images);
    }
    let res = fix_images(args, &images, &opts);
    if res.is_err() {
        // An unfixed copy must not pass for a fixed one.
        for p in &created {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

/// `--output`: the raw copies of the input's disks.
fn copy_out(args: &FixArgs) -> Result<Vec<vmie_disk::export::RawCopy>, Failure> {
    let set = vmie_disk::DiskSet::open(&args.images, false).map_err(|e| Failure {
        code: if matches!(e, vmie_disk::DiskError::Io { .. }) {
            3
        } else {
            1
        },
        error: e.into(),
    })?;
    let show = std::io::stderr().is_terminal() && !crate::human::quiet();
    let mut last = 0u64;
    let mut progress = |done: u64, total: u64| {
        let pct = done.saturating_mul(100) / total.max(1);
        if show && pct != last {
            last = pct;
            eprint!(
                "\rwriting the raw copy: {pct:3}% ({:.1} of {:.1} GiB)",
                done as f64 / f64::from(1u32 << 30),
                total as f64 / f64::from(1u32 << 30)
            );
        }
    };
    let t = std::time::Instant::now();
    let copies =
        vmie_disk::export::write_raw_copies(&set, &args.output, &mut progress).map_err(|e| {
            Failure {
                code: if matches!(e, vmie_disk::DiskError::Io { .. }) {
                    3
                } else {
                    2
                },
                error: e.into(),
            }
        })?;
    if show {
        eprintln!();
    }
    for c in &copies {
        crate::human::vlog!(
            "raw copy {}: {} bytes, {} written (the rest holes), in {:?}",
            c.path.display(),
            c.size,
            c.written,
            t.elapsed()
        );
    }
    Ok(copies)
}

/// Plan (and unless a dry run, commit) the fixup of `images`.
fn fix_images(args: &FixArgs, images: &[PathBuf], opts: &FixOptions) -> Result<(), Failure> {
    let plan = vmie_fixup::plan(images, opts).map_err(failure)?;
    crate::human::vlog!(
        "planned: {} guest(s), {} check(s), {} changed file(s){}",
        plan.report().operating_systems.len(),
        plan.report().preflight.len(),
        plan.report().changes.len(),
        if plan.is_blocked() { ", blocked" } else { "" }
    );
    crate::stats(plan.vm());
    let blocked = plan.is_blocked();
    let report = if blocked || args.dry_run || plan.is_empty() {
        plan.into_report()
    } else {
        let r = plan.commit().map_err(failure)?;
        crate::human::vlog!("committed; undo journal {}", r.undo_journal.join(", "));
        r
    };
    print_report(args, images, &report).map_err(|e| Failure { code: 3, error: e })?;
    if blocked {
        return Err(Failure {
            code: 1,
            error: anyhow!("the guest would not import; nothing was written"),
        });
    }
    Ok(())
}

fn print_report(args: &FixArgs, images: &[PathBuf], report: &Report) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
        return Ok(());
    }
    if crate::human::quiet() {
        // Errors only (the exit code says the rest).
        for p in report
            .preflight
            .iter()
            .filter(|p| p.severity == Severity::Error)
        {
            writeln!(out, "error: {}", p.message)?;
        }
        return Ok(());
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    for os in &report.operating_systems {
        writeln!(
            out,
            "guest: {} {}.{} ({}) on {}",
            os["product_name"]
                .as_str()
                .filter(|p| !p.starts_with(|c: char| c.is_ascii_digit()))
                .or(os["distro"].as_str())
                .unwrap_or("Linux"),
            os["major_version"],
            os["minor_version"],
            os["arch"].as_str().unwrap_or("?"),
            os["root"].as_str().unwrap_or("?")
        )?;
    }
    for p in &report.preflight {
        if p.from_rule {
            writeln!(
                out,
                "{}: [{}] {}",
                severity_word(p.severity, &paint),
                p.id,
                p.message
            )?;
        } else {
            writeln!(out, "{}: {}", severity_word(p.severity, &paint), p.message)?;
        }
    }
    for c in &report.changes {
        let what = match &c.op {
            FileOpDone::Modified => "modified".to_string(),
            FileOpDone::Created => "created".to_string(),
            FileOpDone::Removed => "removed".to_string(),
            FileOpDone::Renamed { to } => format!("renamed to {to}"),
        };
        writeln!(
            out,
            "\n{} {} ({what}; {} {})",
            paint("1", "==>"),
            c.path,
            if c.rules.len() == 1 { "rule" } else { "rules" },
            c.rules.join(", ")
        )?;
        if let Some(b) = &c.backup {
            writeln!(out, "    original kept as {b}")?;
        }
        for line in c.diff.lines() {
            let l = match line.as_bytes().first() {
                Some(b'+') if !line.starts_with("+++") => paint("32", line),
                Some(b'-') if !line.starts_with("---") => paint("31", line),
                Some(b'@') => paint("36", line),
                _ => line.to_string(),
            };
            writeln!(out, "    {l}")?;
        }
    }
    let n = report.changes.len();
    let verdict = if n == 0 {
        "nothing to change".to_string()
    } else if args.dry_run {
        format!("{n} file(s) would change (dry run: nothing written)")
    } else if report.applied {
        format!(
            "{n} file(s) changed; undo with: vmie-fixup undo {}",
            images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        format!("{n} file(s) would change, but nothing was written")
    };
    writeln!(out, "\n{verdict}")?;
    if !args.output.is_empty() {
        if args.dry_run {
            writeln!(out, "--output: nothing created (dry run)")?;
        } else {
            let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
            writeln!(
                out,
                "raw copy: {} (the input was only read)",
                names.join(", ")
            )?;
        }
    }
    if !report.undo_journal.is_empty() {
        writeln!(out, "undo journal: {}", report.undo_journal.join(", "))?;
    }
    Ok(())
}

fn severity_word(s: Severity, paint: &dyn Fn(&str, &str) -> String) -> String {
    let code = match s {
        Severity::Error => "1;31",
        Severity::Warning => "33",
        Severity::Info => "2",
    };
    paint(code, crate::human::severity_word(s))
}
