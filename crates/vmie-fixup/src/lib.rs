//! The fixup run as a library: what `vmie-fixup IMAGE...` does, for a
//! pipeline that wants it without the command line.
//!
//! A run has two steps, and the types keep them in order:
//!
//! 1. [`plan`] opens the VM's images, inspects the guest, runs the import
//!    service's preflight checks, applies the rules to a copy-on-write
//!    overlay (nothing reaches the images), and re-reads every changed file
//!    through freshly opened filesystems (the self-check). With
//!    [`FixOptions::check_fs`], the filesystem's own checker runs on every
//!    volume the plan writes. The result is a [`Plan`]: its [`Report`] is
//!    what a dry run prints.
//! 2. [`Plan::commit`] writes the plan through an undo journal. It is the
//!    only way to write, and it refuses a plan that the preflight gate or a
//!    rule blocked, a dry-run plan, and a plan with nothing to write. A
//!    [`Plan`] cannot be built outside this crate, so there is no way to
//!    commit changes that skipped the gate or the self-check.
//!
//! [`undo`] puts the bytes of the newest run back.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::os::unix::fs::FileExt;
//! # let dir = tempfile::tempdir()?;
//! # let image = dir.path().join("empty.raw");
//! # let f = std::fs::File::create(&image)?;
//! # f.set_len(8 << 20)?;
//! # // An MBR with one empty Linux partition (sectors 2048..16383).
//! # let mut entry = [0u8; 16];
//! # entry[4] = 0x83;
//! # entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
//! # entry[12..16].copy_from_slice(&14336u32.to_le_bytes());
//! # f.write_all_at(&entry, 446)?;
//! # f.write_all_at(&[0x55, 0xAA], 510)?;
//! use vmie_fixup::{plan, FixOptions, FixError};
//!
//! let opts = FixOptions::new(vmie_fixup::load_rules(false, &[])?);
//! let plan = plan(&[image], &opts)?;
//! // A partitioned disk without a guest: the preflight gate blocks the plan...
//! assert!(plan.is_blocked());
//! for check in &plan.report().preflight {
//!     println!("{:?}: {}", check.severity, check.message);
//! }
//! // ...and committing it is refused, with nothing written.
//! assert!(matches!(plan.commit(), Err(FixError::Blocked(_))));
//! # Ok(()) }
//! ```
//!
//! A plan is only made by [`plan`]:
//!
//! ```compile_fail
//! let p = vmie_fixup::Plan { report: Default::default() };
//! ```
#![forbid(unsafe_code)]

mod checkfs;
mod report;
mod selfcheck;

pub use selfcheck::{self_check, self_check_windows};

use std::path::{Path, PathBuf};

use thiserror::Error;
use vmie_inspect::{InspectError, LinuxGuest, OpenOptions, Vm, WindowsGuest};
use vmie_rules::engine::{self, Severity};

pub use report::{
    os_json, win_os_json, win_osinfo, ChangeEntry, Check, Report, Step, SCHEMA_VERSION,
};
pub use vmie_rules::rules::Rule;

/// Why a run could not go on. [`FixError::exit_code`] gives the CLI's code.
#[derive(Debug, Error)]
pub enum FixError {
    /// The request itself is wrong (no image given, an image file or a
    /// rule pack missing).
    #[error("{0}")]
    Usage(String),
    /// The boot disk is not a disk image (no partition table, no
    /// filesystem).
    #[error("{0}")]
    NotADisk(String),
    /// The rule packs could not be loaded.
    #[error(transparent)]
    Rules(#[from] vmie_rules::rules::RuleError),
    /// Opening or reading the VM failed; a refusal or an I/O error.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The rules could not be applied (a refusal of the guest's files).
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The self-check found a changed file that reads back differently.
    #[error("{0}")]
    SelfCheck(String),
    /// `check_fs`: the filesystem's checker found faults (before the
    /// commit: nothing written; after it: rolled back).
    #[error("{0}")]
    CheckFs(String),
    /// The preflight gate or a rule blocked the plan: nothing is written.
    #[error("the guest would not import; nothing was written: {0}")]
    Blocked(String),
    /// The plan was made for a dry run (images opened read-only).
    #[error("this plan was made for a dry run; plan again without dry_run to write")]
    DryRun,
    /// The plan changes nothing.
    #[error("nothing to change")]
    NothingToDo,
    /// Writing the images (commit, journal, undo).
    #[error(transparent)]
    Disk(#[from] vmie_disk::DiskError),
}

impl FixError {
    /// Exit code as the CLI documents them: 1 refused (nothing written),
    /// 2 usage, 3 I/O or internal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Inspect(e) if !e.is_refusal() => 3,
            Self::Disk(e) if !e.is_refusal() => 3,
            Self::Engine(engine::EngineError::Fs {
                source: vmie_guestfs::FsError::Disk(d),
                ..
            }) if !d.is_refusal() => 3,
            _ => 1,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct FixOptions {
    /// The rules, in order ([`load_rules`]).
    pub rules: Vec<Rule>,
    /// Open the images read-only: the plan is reported, never committed.
    pub dry_run: bool,
    /// Run the filesystem's own checker (e2fsck -fn, xfs_repair -n, fsck.fat -n, ntfsfix -n) on every volume the
    /// plan writes, before the commit (a finding refuses) and after it (a
    /// finding rolls the commit back).
    pub check_fs: bool,
    /// Keys for LUKS volumes (`--key`).
    pub keys: Vec<vmie_inspect::stack::KeySpec>,
    /// `--drivers`: a folder of Windows driver packages to stage (see
    /// [`load_drivers`]).
    pub drivers: Option<PathBuf>,
}

impl FixOptions {
    /// A real run with these rules, without `check_fs`.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            dry_run: false,
            check_fs: false,
            keys: Vec::new(),
            drivers: None,
        }
    }
}

/// Most files `--drivers` stages.
pub const MAX_DRIVER_FILES: usize = 10_000;
/// Most bytes `--drivers` stages.
pub const MAX_DRIVER_BYTES: u64 = 1 << 30;
/// Where `--drivers` stages, under the system root.
pub const DRIVER_FOLDER: &str = "vmie-drivers";

/// Read the driver packages in `dir` (`.inf`, `.sys`, `.cat`, ..., in
/// folders of any depth) for a Windows guest whose system root is
/// `systemroot` (`/Windows`): each file's guest path under
/// `<systemroot>/vmie-drivers/`, and every folder holding an `.inf` as a
/// `DevicePath` entry (`%SystemRoot%\vmie-drivers\...`). Refused: no
/// `.inf` at all, a symlink or special file, a name that is not UTF-8 or
/// that Windows cannot hold, more than [`MAX_DRIVER_FILES`] files or
/// [`MAX_DRIVER_BYTES`] bytes.
///
/// Every INF is also read for its boot-start kernel services
/// ([`vmie_win::inf`]) for a guest of `arch` and `version`/`build`: those
/// are returned as [`engine::BootDriver`]s, with the driver file named by
/// `ServiceBinary` taken from the INF's own folder (refused when it is not
/// there).
pub fn load_drivers(
    dir: &Path,
    systemroot: &str,
    guest: &DriverGuest,
) -> Result<LoadedDrivers, FixError> {
    let usage = |why: String| FixError::Usage(format!("--drivers {}: {why}", dir.display()));
    let mut files = Vec::new();
    let mut device_path: Vec<String> = Vec::new();
    let mut boot: Vec<engine::BootDriver> = Vec::new();
    let mut total = 0u64;
    // (host folder, relative components)
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((d, rel)) = stack.pop() {
        if rel.len() > 16 {
            return Err(usage(format!("{}: folders nested too deep", d.display())));
        }
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&d)
            .map_err(|e| usage(format!("{}: {e}", d.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| usage(format!("{}: {e}", d.display())))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        let mut has_inf = false;
        // (inf file name, bytes) and (lower-case name, bytes) of this folder.
        let mut infs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut here: Vec<(String, Vec<u8>)> = Vec::new();
        for e in entries {
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| usage(format!("{n:?}: not a UTF-8 name")))?;
            if name.is_empty()
                || name.ends_with(['.', ' '])
                || name.chars().any(|c| "\\/:*?\"<>|".contains(c) || c < ' ')
            {
                return Err(usage(format!("{name:?}: not a name Windows can hold")));
            }
            let ft = e
                .file_type()
                .map_err(|err| usage(format!("{}: {err}", e.path().display())))?;
            let mut r = rel.clone();
            r.push(name.clone());
            if ft.is_dir() {
                stack.push((e.path(), r));
            } else if ft.is_file() {
                if files.len() >= MAX_DRIVER_FILES {
                    return Err(usage(format!("more than {MAX_DRIVER_FILES} files")));
                }
                let data = std::fs::read(e.path())
                    .map_err(|err| usage(format!("{}: {err}", e.path().display())))?;
                total = total.saturating_add(data.len() as u64);
                if total > MAX_DRIVER_BYTES {
                    return Err(usage(format!("more than {MAX_DRIVER_BYTES} bytes")));
                }
                let lower = name.to_ascii_lowercase();
                if lower.ends_with(".inf") {
                    has_inf = true;
                    infs.push((name.clone(), data.clone()));
                } else if lower.ends_with(".sys") {
                    here.push((lower, data.clone()));
                }
                files.push(engine::StagedFile {
                    path: format!("{systemroot}/{DRIVER_FOLDER}/{}", r.join("/")),
                    data,
                });
            } else {
                return Err(usage(format!(
                    "{}: not a regular file or folder (symlinks are not followed)",
                    e.path().display()
                )));
            }
        }
        for (inf_name, bytes) in &infs {
            let bad =
                |e: vmie_win::inf::InfError| usage(format!("{}: {e}", d.join(inf_name).display()));
            let text = vmie_win::inf::decode(bytes).map_err(bad)?;
            let inf = vmie_win::inf::Inf::parse(&text).map_err(bad)?;
            let services = inf
                .boot_services(guest.arch, guest.version, guest.build)
                .map_err(bad)?;
            for s in services {
                let at = d.join(inf_name);
                let Some((_, data)) = here.iter().find(|(n, _)| n.eq_ignore_ascii_case(&s.binary))
                else {
                    return Err(usage(format!(
                        "{}: the boot-start service {} needs {}, which is not in that folder",
                        at.display(),
                        s.service,
                        s.binary
                    )));
                };
                // The binary matched a file of this folder, whose name was
                // checked above; the service name becomes a registry key.
                if s.service.is_empty()
                    || s.service.len() > 256
                    || s.service.chars().any(|c| "\\/".contains(c) || c < ' ')
                {
                    return Err(usage(format!(
                        "{}: service {:?}: not a name Windows can hold",
                        at.display(),
                        s.service
                    )));
                }
                let Some(class_guid) = s.class_guid.clone() else {
                    return Err(usage(format!(
                        "{}: the boot-start service {} has no [Version] ClassGuid",
                        at.display(),
                        s.service
                    )));
                };
                if boot
                    .iter()
                    .any(|b| b.service.eq_ignore_ascii_case(&s.service))
                {
                    return Err(usage(format!(
                        "{}: a second package installs the boot-start service {}",
                        at.display(),
                        s.service
                    )));
                }
                boot.push(engine::BootDriver {
                    inf: inf_name.to_ascii_lowercase(),
                    arch: guest.arch.to_string(),
                    service: s.service,
                    binary: s.binary,
                    data: data.clone(),
                    error_control: s.error_control,
                    group: s.group,
                    class_guid,
                    hardware_ids: s.hardware_ids,
                });
            }
        }
        if has_inf {
            let mut p = format!("%SystemRoot%\\{DRIVER_FOLDER}");
            for c in &rel {
                p.push('\\');
                p.push_str(c);
            }
            device_path.push(p);
        }
    }
    if device_path.is_empty() {
        return Err(usage("no driver package (.inf file) in it".into()));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    device_path.sort();
    boot.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(LoadedDrivers {
        files,
        device_path,
        boot,
    })
}

/// The guest `--drivers` packages are read for.
#[derive(Debug, Clone, Copy)]
pub struct DriverGuest {
    /// INF arch decoration: `amd64`, `x86`, `arm64`.
    pub arch: &'static str,
    /// (major, minor) Windows version.
    pub version: (u32, u32),
    /// Build number, if known.
    pub build: Option<u32>,
}

/// What [`load_drivers`] read.
#[derive(Debug, Clone, Default)]
pub struct LoadedDrivers {
    /// Files to stage.
    pub files: Vec<engine::StagedFile>,
    /// `DevicePath` entries.
    pub device_path: Vec<String>,
    /// Boot-start drivers to register.
    pub boot: Vec<engine::BootDriver>,
}

/// The shipped rules (unless `no_default`), then the packs in `paths`: each
/// a directory of `*.toml` packs or one `.toml` file. A rule id defined
/// twice is an error.
pub fn load_rules(no_default: bool, paths: &[PathBuf]) -> Result<Vec<Rule>, FixError> {
    let mut all = vmie_rules::rules::load(no_default, &[])?;
    for p in paths {
        let rules = if p.is_dir() {
            vmie_rules::rules::load_dirs(std::slice::from_ref(p))?
        } else if p.is_file() {
            let text = std::fs::read_to_string(p)
                .map_err(|e| FixError::Usage(format!("{}: {e}", p.display())))?;
            vmie_rules::rules::parse_pack(p, &text)?
        } else {
            return Err(FixError::Usage(format!(
                "{}: no such rule pack: give a directory of *.toml packs or one .toml file",
                p.display()
            )));
        };
        for r in rules {
            if let Some(first) = all.iter().find(|x| x.id == r.id) {
                return Err(vmie_rules::rules::RuleError::Duplicate {
                    path: r.source.display().to_string(),
                    id: r.id.clone(),
                    first: first.source.display().to_string(),
                }
                .into());
            }
            all.push(r);
        }
    }
    Ok(all)
}

/// The plan of a run: inspected, gated, applied to the overlay and
/// self-checked. Commit it with [`Plan::commit`], or drop it to write
/// nothing.
#[derive(Debug)]
pub struct Plan {
    vm: Vm,
    report: Report,
    /// Why it may not be committed, if it may not.
    blocked: Option<String>,
    dry_run: bool,
    /// Volumes to check again after the commit (`check_fs`).
    check_targets: Option<Vec<checkfs::Target>>,
}

/// Every Linux guest on the VM, inspected (initramfs images listed whole).
pub fn linux_guests(vm: &Vm) -> Vec<Result<LinuxGuest, String>> {
    linux_guests_with(vm, &vmie_os::InspectOptions::default())
}

fn linux_guests_with(vm: &Vm, opts: &vmie_os::InspectOptions) -> Vec<Result<LinuxGuest, String>> {
    vm.linux_roots()
        .into_iter()
        .map(|root| vm.linux_guest(root, opts).map_err(|e| e.to_string()))
        .collect()
}

/// Every Windows guest on the VM, inspected.
pub fn windows_guests(vm: &Vm) -> Vec<Result<WindowsGuest, String>> {
    vm.windows_roots()
        .into_iter()
        .map(|root| vm.windows_guest(root).map_err(|e| e.to_string()))
        .collect()
}

/// Plans a run on the images of one VM (boot disk first): see the crate
/// documentation. Nothing is written.
pub fn plan(images: &[PathBuf], opts: &FixOptions) -> Result<Plan, FixError> {
    if images.is_empty() {
        return Err(FixError::Usage(
            "give the VM's disk images, boot disk first".into(),
        ));
    }
    if let Some(missing) = images.iter().find(|p| !p.exists()) {
        return Err(FixError::Usage(format!(
            "{}: no such image file",
            missing.display()
        )));
    }
    let open = OpenOptions {
        writable: !opts.dry_run,
        keys: opts.keys.clone(),
        ..OpenOptions::default()
    };
    let vm = Vm::open(images, &open)?;
    if let Some(why) = vmie_inspect::preflight::not_a_disk_image(&vm) {
        return Err(FixError::NotADisk(why));
    }

    // The rules ask only about the drivers inspection reports on, so an
    // initramfs is read only until all of them have been seen; an image
    // that lacks one is read whole, which is what appending to it needs.
    let mut found = linux_guests_with(
        &vm,
        &vmie_os::InspectOptions {
            initramfs_early_stop: true,
            ..vmie_os::InspectOptions::default()
        },
    );
    let windows = windows_guests(&vm);
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    report.operating_systems = found.iter().flatten().map(report::os_json).collect();
    report
        .operating_systems
        .extend(windows.iter().flatten().map(report::win_os_json));
    report.preflight = vmie_inspect::preflight::preflight(&vm, &found, &windows)
        .into_iter()
        .map(|c| Check {
            id: c.id.to_string(),
            severity: c.severity,
            message: c.message,
            from_rule: false,
        })
        .collect();
    let gate: Vec<String> = report
        .preflight
        .iter()
        .filter(|c| c.severity == Severity::Error)
        .map(|c| c.message.clone())
        .collect();
    let mut guest = if gate.is_empty() && found.len() == 1 {
        found.pop().and_then(Result::ok)
    } else {
        None
    };
    let mut blocked = (!gate.is_empty()).then(|| gate.join("; "));
    let mut check_targets = None;
    if let Some(g) = guest.as_mut() {
        for n in &g.not_mounted {
            report.preflight.push(Check {
                id: "fstab-unmounted".into(),
                severity: Severity::Info,
                message: format!("not mounted for fixing: {n}"),
                from_rule: false,
            });
        }
        if let Some(d) = &opts.drivers {
            report.preflight.push(Check {
                id: "drivers-not-used".into(),
                severity: Severity::Warning,
                message: format!(
                    "--drivers {}: driver packages are staged in Windows guests only; this is a Linux guest (its initramfs gets the cloud's drivers by the initramfs rules)",
                    d.display()
                ),
                from_rule: false,
            });
        }
        let ctx = g.context(vm.fstab_volumes());
        let run = engine::run(g.fs(), &opts.rules, &ctx)?;
        let rule_errors: Vec<String> = run
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("[{}] {}", f.rule, f.message))
            .collect();
        report.preflight.extend(run.findings.iter().map(|f| Check {
            id: f.rule.clone(),
            severity: f.severity,
            message: f.message.clone(),
            from_rule: true,
        }));
        report.changes = run.changes.iter().map(ChangeEntry::from).collect();
        if !rule_errors.is_empty() {
            blocked = Some(rule_errors.join("; "));
        } else if !run.changes.is_empty() {
            selfcheck::self_check(&vm, g, &run.changes).map_err(FixError::SelfCheck)?;
            if opts.check_fs {
                let targets = checkfs::written_volumes(&vm).map_err(FixError::CheckFs)?;
                checkfs::before(&targets).map_err(FixError::CheckFs)?;
                check_targets = Some(targets);
            }
        }
    } else if blocked.is_none() && found.len() > 1 {
        blocked = Some(format!("{} Linux roots", found.len()));
    } else if blocked.is_none() && found.is_empty() {
        if let [Ok(w)] = windows.as_slice() {
            let run = windows_run(&vm, w, &opts.rules, opts.drivers.as_deref())?;
            for (at, name) in &run.system_partitions {
                report.preflight.push(Check {
                    id: "windows-system-partition".into(),
                    severity: Severity::Info,
                    message: format!(
                        "system partition {name} (it holds a BCD store) is {at} in this run's paths"
                    ),
                    from_rule: false,
                });
            }
            let rule_errors = rule_errors(&run);
            report
                .preflight
                .extend(run.report.findings.iter().map(|f| Check {
                    id: f.rule.clone(),
                    severity: f.severity,
                    message: f.message.clone(),
                    from_rule: true,
                }));
            report.changes = run.report.changes.iter().map(ChangeEntry::from).collect();
            if !rule_errors.is_empty() {
                blocked = Some(rule_errors.join("; "));
            } else if !run.report.changes.is_empty() {
                selfcheck::self_check_windows(&vm, &w.root, run.fs.as_ref(), &run.report.changes)
                    .map_err(FixError::SelfCheck)?;
                if opts.check_fs {
                    let targets = checkfs::written_volumes(&vm).map_err(FixError::CheckFs)?;
                    checkfs::before(&targets).map_err(FixError::CheckFs)?;
                    check_targets = Some(targets);
                }
            }
        }
    }
    Ok(Plan {
        vm,
        report,
        blocked,
        dry_run: opts.dry_run,
        check_targets,
    })
}

/// A Windows guest's rule run: the engine's report and the system volume's
/// filesystem it wrote (to the overlay).
struct WindowsRun {
    report: engine::Report,
    fs: Box<dyn vmie_guestfs::GuestFs>,
    /// (mountpoint, volume name) of each system partition in `fs`.
    system_partitions: Vec<(String, String)>,
}

/// The rules' error findings, as the gate reports them.
fn rule_errors(run: &WindowsRun) -> Vec<String> {
    run.report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("[{}] {}", f.rule, f.message))
        .collect()
}

/// Run the rules on the Windows guest `w`'s system volume (NTFS, through
/// the overlay): `registry` and `bcd` edit its hives and BCD store.
fn windows_run(
    vm: &Vm,
    w: &WindowsGuest,
    rules: &[Rule],
    drivers: Option<&Path>,
) -> Result<WindowsRun, FixError> {
    let (mut fs, system_partitions) = windows_mounts(vm, &w.root)?;
    let ctx = engine::Context {
        facts: vmie_rules::rules::Facts {
            os: Some(vmie_rules::rules::OsType::Windows),
            distro: Some(w.info.distro.clone()),
            version: Some((w.info.major_version, w.info.minor_version)),
            variant: w.info.product_variant.clone(),
            build: w.info.build_id.as_deref().and_then(|b| b.parse().ok()),
            arch: w.info.arch.clone(),
            firmware: Some(
                if system_partitions.iter().any(|(_, name)| {
                    vm.volumes().any(|v| {
                        v.name == *name
                            && v.probe
                                .as_ref()
                                .is_some_and(|p| p.kind == vmie_probe::FsKind::Vfat)
                    })
                }) {
                    "uefi"
                } else {
                    "bios"
                }
                .to_string(),
            ),
            services: w.info.services.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let target = engine::WindowsTarget {
        systemroot: w
            .info
            .systemroot
            .clone()
            .unwrap_or_else(|| "/Windows".into())
            .replace('\\', "/"),
        system_partitions: system_partitions.iter().map(|(at, _)| at.clone()).collect(),
        drivers: Vec::new(),
        device_path: Vec::new(),
        boot_drivers: Vec::new(),
    };
    let mut target = target;
    if let Some(dir) = drivers {
        let guest = DriverGuest {
            arch: vmie_win::inf::inf_arch(w.info.arch.as_deref().unwrap_or("x86_64")),
            version: (w.info.major_version, w.info.minor_version),
            build: w.info.build_id.as_deref().and_then(|b| b.parse().ok()),
        };
        let loaded = load_drivers(dir, &target.systemroot, &guest)?;
        target.drivers = loaded.files;
        target.device_path = loaded.device_path;
        target.boot_drivers = loaded.boot;
    }
    let report = engine::run_windows(&mut fs, rules, &ctx, &target)?;
    Ok(WindowsRun {
        report,
        fs: Box::new(fs),
        system_partitions,
    })
}

/// Where a Windows guest's system partitions are mounted for a run: the
/// first at `/@system`, the next at `/@system2`, ... (`@` names no folder
/// of a Windows volume's root that Windows itself creates, and a mount
/// hides whatever is there anyway).
pub const SYSTEM_PARTITION_MOUNT: &str = "/@system";

/// The Windows guest whose system volume is `root` (by name) as one tree:
/// the system volume at `/`, each system partition (the "System Reserved"
/// NTFS volume or the EFI system partition holding the BCD store) at
/// [`SYSTEM_PARTITION_MOUNT`]; with (mountpoint, volume name) of each.
pub fn windows_mounts(
    vm: &Vm,
    root: &str,
) -> Result<(vmie_guestfs::Mounts, Vec<(String, String)>), FixError> {
    let vol = vm
        .volumes()
        .find(|v| v.name == root)
        .ok_or_else(|| FixError::Usage(format!("{root}: system volume no longer found")))?;
    let mut mounts = vmie_guestfs::Mounts::new();
    mounts.mount(vmie_guestfs::GuestPath::root(), vm.open_fs(vol)?);
    let mut system = Vec::new();
    for (k, v) in vm.system_partitions(vol).into_iter().enumerate() {
        let at = if k == 0 {
            SYSTEM_PARTITION_MOUNT.to_string()
        } else {
            format!("{SYSTEM_PARTITION_MOUNT}{}", k + 1)
        };
        mounts.mount(vmie_guestfs::GuestPath::from(at.as_str()), vm.open_fs(v)?);
        system.push((at, v.name.clone()));
    }
    Ok((mounts, system))
}

impl Plan {
    /// What the run found and would change (a dry run's report).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Whether the preflight gate or a rule blocked the plan.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Whether the plan writes anything.
    pub fn is_empty(&self) -> bool {
        self.report.changes.is_empty()
    }

    /// The opened VM (read statistics, layouts).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The report, without committing (a dry run's end).
    pub fn into_report(self) -> Report {
        self.report
    }

    /// Writes the plan to the images through an undo journal, and returns
    /// the report with `applied` and `undo_journal` filled in. Refuses a
    /// blocked plan, a dry-run plan and an empty one, writing nothing.
    pub fn commit(self) -> Result<Report, FixError> {
        if let Some(why) = self.blocked {
            return Err(FixError::Blocked(why));
        }
        if self.dry_run {
            return Err(FixError::DryRun);
        }
        if self.report.changes.is_empty() {
            return Err(FixError::NothingToDo);
        }
        let Plan {
            vm,
            mut report,
            check_targets,
            ..
        } = self;
        let c = vm.disks().commit(&Default::default())?;
        report.applied = true;
        report.undo_journal = c
            .images
            .iter()
            .map(|i| i.journal.display().to_string())
            .collect();
        if let Some(targets) = check_targets {
            let images: Vec<PathBuf> = c.images.iter().map(|i| i.image.clone()).collect();
            // The run's lock on the images goes with `vm`; a rollback is an
            // undo, which takes its own.
            drop(vm);
            let paths: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
            checkfs::after(&targets, &paths).map_err(FixError::CheckFs)?;
        }
        Ok(report)
    }
}

/// Undoes the newest run on `image` (see `vmie_disk::journal::undo`).
pub fn undo(image: &Path) -> Result<vmie_disk::journal::UndoReport, FixError> {
    Ok(vmie_disk::journal::undo(image, &Default::default())?)
}
