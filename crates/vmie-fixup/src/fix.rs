//! The fixup run: `vmie-fixup [--dry-run] IMAGE...`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use vmie_guestfs::{FsError, GuestFs, GuestPath};
use vmie_inspect::{LinuxGuest, OpenOptions, Vm};
use vmie_rules::engine::{self, FileChange, FileOpDone, Finding, Severity};

use crate::{classify, refused, Failure, Format};

/// Options of the fixup run.
#[derive(Debug, Args)]
pub(crate) struct FixArgs {
    /// Raw disk images of one VM, boot disk first.
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
    /// Also run the filesystem's own checker (e2fsck -fn) read-only on every
    /// volume the run changes: before the commit (any finding refuses the
    /// run, nothing written) and after it (any finding rolls the commit back
    /// through its undo journal). Slower: a full check reads all metadata.
    #[arg(long)]
    check_fs: bool,
}

/// JSON schema version of the run report.
const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Preflight {
    id: String,
    severity: Severity,
    message: String,
}

/// `operating_systems` entry for `inspect` and the run report.
pub(crate) fn os_json(guest: &LinuxGuest) -> Value {
    let mut v = serde_json::to_value(&guest.info).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), json!("linux"));
        m.insert("root".into(), json!(guest.root));
        let mounts: serde_json::Map<String, Value> = guest
            .mounted
            .iter()
            .map(|(mp, vol)| (mp.clone(), json!(vol)))
            .collect();
        m.insert("mountpoints".into(), Value::Object(mounts));
    }
    v
}

/// `operating_systems` entry of a Windows guest (virt-inspector names:
/// `type`, `root`, `distro`, `product_name`, `product_variant`,
/// `major_version`, `minor_version`, `arch`, `hostname`,
/// `windows_systemroot`, `windows_current_control_set`, `drive_mappings`).
pub(crate) fn win_os_json(guest: &vmie_inspect::WindowsGuest) -> Value {
    let mut v = serde_json::to_value(&guest.info).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), json!("windows"));
        m.insert("root".into(), json!(guest.root));
        if let Some(sr) = m.get("systemroot").cloned() {
            m.insert("windows_systemroot".into(), sr);
        }
        if let Some(cs) = m.get("current_control_set").cloned() {
            m.insert("windows_current_control_set".into(), cs);
        }
        m.insert("mountpoints".into(), json!({ "/": guest.root }));
        m.insert(
            "volume".into(),
            json!({
                "total_bytes": guest.volume.total_bytes,
                "free_bytes": guest.volume.free_bytes,
                "dirty": guest.volume.dirty,
                "label": guest.volume.label,
            }),
        );
    }
    v
}

/// Every Windows guest on the VM, inspected.
pub(crate) fn windows_guests(vm: &Vm) -> Vec<Result<vmie_inspect::WindowsGuest, String>> {
    vm.windows_roots()
        .into_iter()
        .map(|root| vm.windows_guest(root).map_err(|e| e.to_string()))
        .collect()
}

/// Every Linux guest on the VM, inspected.
pub(crate) fn guests(vm: &Vm) -> Vec<Result<LinuxGuest, String>> {
    vm.linux_roots()
        .into_iter()
        .map(|root| {
            vm.linux_guest(root, &vmie_os::InspectOptions::default())
                .map_err(|e| e.to_string())
        })
        .collect()
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
    let rules = vmie_rules::rules::load(args.no_default_rules, &args.rules)
        .map_err(|e| refused(e.into()))?;
    let opts = OpenOptions {
        writable: !args.dry_run,
        ..OpenOptions::default()
    };
    let vm = Vm::open(&args.images, &opts).map_err(|e| classify(e.into()))?;

    // Preflight: every check of the import service's requirements.
    let mut found = guests(&vm);
    let windows = windows_guests(&vm);
    let mut oses: Vec<Value> = found.iter().flatten().map(os_json).collect();
    oses.extend(windows.iter().flatten().map(win_os_json));
    let mut preflight: Vec<Preflight> = vmie_inspect::preflight::preflight(&vm, &found, &windows)
        .into_iter()
        .map(|c| Preflight {
            id: c.id.to_string(),
            severity: c.severity,
            message: c.message,
        })
        .collect();
    let blocked = preflight.iter().any(|p| p.severity == Severity::Error);
    let mut guest = if !blocked && found.len() == 1 {
        found.pop().and_then(Result::ok)
    } else {
        None
    };
    let mut report = engine::Report::default();
    let mut check_after = None;
    let mut journals = Vec::new();
    let mut applied = false;
    if let Some(g) = guest.as_mut() {
        for n in &g.not_mounted {
            preflight.push(Preflight {
                id: "fstab-unmounted".into(),
                severity: Severity::Info,
                message: format!("not mounted for fixing: {n}"),
            });
        }
        let ctx = g.context(vm.fstab_volumes());
        report = engine::run(g.fs(), &rules, &ctx).map_err(|e| refused(e.into()))?;
        let blocking = report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error);
        if !blocking && !report.changes.is_empty() {
            self_check(&vm, g, &report.changes).map_err(refused)?;
            let checked = if args.check_fs {
                let targets = crate::checkfs::written_volumes(&vm).map_err(refused)?;
                crate::checkfs::before(&targets).map_err(refused)?;
                targets
            } else {
                Vec::new()
            };
            if !args.dry_run {
                let c = vm
                    .disks()
                    .commit(&Default::default())
                    .map_err(|e| classify(e.into()))?;
                journals = c
                    .images
                    .iter()
                    .map(|i| i.journal.display().to_string())
                    .collect();
                applied = true;
                if args.check_fs {
                    let images: Vec<PathBuf> = c.images.iter().map(|i| i.image.clone()).collect();
                    check_after = Some((checked, images));
                }
            }
        }
    }
    crate::stats(&vm);
    if let Some((targets, images)) = check_after {
        // The run's lock on the images goes with `vm`; the rollback, if any,
        // is an undo, which takes its own.
        drop(guest);
        drop(vm);
        let images: Vec<&std::path::Path> = images.iter().map(PathBuf::as_path).collect();
        crate::checkfs::after(&targets, &images).map_err(refused)?;
    }
    let blocking = preflight.iter().any(|p| p.severity == Severity::Error)
        || report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error);
    print_report(args, &oses, &preflight, &report, applied, &journals)
        .map_err(|e| Failure { code: 3, error: e })?;
    if blocking {
        return Err(Failure {
            code: 1,
            error: anyhow!("the guest would not import; nothing was written"),
        });
    }
    Ok(())
}

/// Read every changed path back through freshly opened filesystems over the
/// same overlays (independent of the writer's in-memory state) and compare.
fn self_check(vm: &Vm, writer: &LinuxGuest, changes: &[FileChange]) -> anyhow::Result<()> {
    // The writer's root volume, by name: no need to reopen and re-test every
    // filesystem as linux_roots() would.
    let root = vm
        .volumes()
        .find(|r| r.name == writer.root)
        .ok_or_else(|| anyhow!("self-check: root {} no longer found", writer.root))?;
    let fresh = vm.mount_guest(root)?.mounts;
    let mut paths: Vec<(String, bool)> = Vec::new();
    for c in changes {
        match &c.op {
            FileOpDone::Removed => paths.push((c.path.clone(), false)),
            FileOpDone::Renamed { to } => {
                paths.push((c.path.clone(), false));
                paths.push((to.clone(), true));
            }
            FileOpDone::Modified | FileOpDone::Created => paths.push((c.path.clone(), true)),
        }
        if let Some(b) = &c.backup {
            paths.push((b.clone(), true));
        }
    }
    for (p, must_exist) in paths {
        let gp = GuestPath::from(p.as_str());
        let theirs = fresh.read_file(&gp, u64::MAX);
        match (must_exist, theirs) {
            (true, Ok(t)) => {
                let ours = writer.mounts.read_file(&gp, u64::MAX)?;
                if ours != t {
                    return Err(anyhow!("self-check failed: {p} reads back differently from what was written; nothing was written to the image"));
                }
            }
            (false, Err(FsError::NotFound { .. })) => {}
            (true, Err(e)) => {
                return Err(anyhow!(
                    "self-check failed: {p}: {e}; nothing was written to the image"
                ))
            }
            (false, Ok(_)) => {
                return Err(anyhow!(
                    "self-check failed: {p} should be gone; nothing was written to the image"
                ))
            }
            (false, Err(e)) => return Err(anyhow!("self-check failed: {p}: {e}")),
        }
    }
    Ok(())
}

fn print_report(
    args: &FixArgs,
    oses: &[Value],
    preflight: &[Preflight],
    report: &engine::Report,
    applied: bool,
    journals: &[String],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        let changes: Vec<Value> = report
            .changes
            .iter()
            .map(|c| {
                let steps: Vec<Value> = c
                    .steps
                    .iter()
                    .map(|st| json!({"rule": st.rule, "action": st.action, "diff": st.diff}))
                    .collect();
                let mut v = json!({"rule": c.rule, "rules": c.rules, "path": c.path, "action": c.action, "backup": c.backup, "diff": c.diff, "steps": steps});
                if let (Value::Object(m), Ok(Value::Object(op))) = (&mut v, serde_json::to_value(&c.op)) {
                    m.extend(op);
                }
                v
            })
            .collect();
        let mut pf: Vec<Value> = preflight
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
            .collect();
        pf.extend(report.findings.iter().map(
            |f: &Finding| json!({"id": f.rule, "severity": f.severity, "message": f.message}),
        ));
        let doc = json!({
            "schema_version": SCHEMA_VERSION,
            "dry_run": args.dry_run,
            "applied": applied,
            "operating_systems": oses,
            "preflight": pf,
            "changes": changes,
            "undo_journal": journals,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    let color = std::io::stdout().is_terminal();
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    for os in oses {
        writeln!(
            out,
            "guest: {} {}.{} ({}) on {}",
            os["product_name"]
                .as_str()
                .or(os["distro"].as_str())
                .unwrap_or("Linux"),
            os["major_version"],
            os["minor_version"],
            os["arch"].as_str().unwrap_or("?"),
            os["root"].as_str().unwrap_or("?")
        )?;
    }
    for p in preflight {
        writeln!(out, "{}: {}", severity_word(p.severity, &paint), p.message)?;
    }
    for f in &report.findings {
        writeln!(
            out,
            "{}: [{}] {}",
            severity_word(f.severity, &paint),
            f.rule,
            f.message
        )?;
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
    } else if applied {
        format!(
            "{n} file(s) changed; undo with: vmie-fixup undo {}",
            args.images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        format!("{n} file(s) would change, but nothing was written")
    };
    writeln!(out, "\n{verdict}")?;
    if !journals.is_empty() {
        writeln!(out, "undo journal: {}", journals.join(", "))?;
    }
    Ok(())
}

fn severity_word(s: Severity, paint: &dyn Fn(&str, &str) -> String) -> String {
    match s {
        Severity::Error => paint("1;31", "error"),
        Severity::Warning => paint("33", "warning"),
        Severity::Info => paint("2", "info"),
    }
}
