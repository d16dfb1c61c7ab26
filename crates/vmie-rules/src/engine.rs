//! Running rules on a guest: each action reads the files it edits through
//! the guest file API, writes the new contents back (to the overlay, in
//! production), keeps the original of every changed or removed file beside
//! it, and reports a diff per file.
//!
//! **Backups.** The original of `DIR/NAME` is kept as `DIR/NAME.vmie.bak`
//! (same owner, mode and xattrs). The `.bak` ending is one that initscripts,
//! NetworkManager's ifcfg and keyfile plugins, netplan (`*.yaml` only) and
//! networkd (`*.network` only) all skip, so a kept static configuration is
//! never brought up again. Files in directories read wholesale by a glob
//! (`/etc/network/interfaces.d`, `source …/*`) keep their originals in a
//! sibling directory, `DIR.vmie.bak/NAME`. An existing backup is never
//! overwritten: it holds the original from before the first run, and a
//! second run, which changes nothing, writes nothing.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;
use thiserror::Error;
use vmie_guestfs::{resolve, FileType, FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

use crate::boot::{self, CmdlineEdit};
use crate::fstab::{self, Volume};
use crate::rules::{Action, Facts, FileOp, Rule};
use crate::{diff, network, shellvars, Change, Outcome};

/// The backup suffix.
pub const BACKUP_SUFFIX: &str = ".vmie.bak";

/// Directories whose every file is read by a glob: backups go elsewhere.
const GLOBBED_DIRS: &[&str] = &["/etc/network/interfaces.d"];

/// Engine errors.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The guest filesystem refused.
    #[error("rule {rule}: {source}")]
    Fs {
        /// The rule running.
        rule: String,
        /// The error.
        #[source]
        source: FsError,
    },
    /// A rule's parameters are unusable (e.g. a bad regular expression).
    #[error("rule {rule}: {why}")]
    Rule {
        /// The rule.
        rule: String,
        /// Why.
        why: String,
    },
}

/// A kernel, as the initramfs check needs it.
#[derive(Debug, Clone, Default)]
pub struct Kernel {
    /// Version, e.g. `6.1.0-13-amd64`.
    pub version: String,
    /// Whether its initramfs could be read whole.
    pub initramfs_readable: bool,
    /// Why not, when it could not (for the report).
    pub initramfs_problem: Option<String>,
    /// Drivers in its initramfs or built in (module names).
    pub drivers: Vec<String>,
    /// Its modules directory on the root (`/lib/modules/V`), if found.
    pub modules_dir: Option<String>,
    /// Its initramfs as inspection read it (for `initramfs_drivers`).
    pub initramfs: Option<vmie_os::InitramfsInfo>,
}

/// What the engine knows about the guest.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Facts for `when`.
    pub facts: Facts,
    /// The VM's volumes (fstab, root=).
    pub volumes: Vec<Volume>,
    /// Installed kernels.
    pub kernels: Vec<Kernel>,
}

/// How a file changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum FileOpDone {
    /// Contents replaced.
    Modified,
    /// Created.
    Created,
    /// Removed (its original is the backup).
    Removed,
    /// Renamed, with new contents, to `to`.
    Renamed {
        /// The new path.
        to: String,
    },
}

/// One file the run changed, with every rule that changed it. A file that
/// several rules edit (`/etc/default/grub`: the network rule's kernel
/// arguments, then the GRUB rule's timeout) is one entry: its `diff` goes
/// from the original to the final text, and `steps` says what each rule did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The first rule that changed the file (all of them are in `rules`).
    pub rule: String,
    /// Every rule that changed the file, in the order they ran.
    pub rules: Vec<String>,
    /// The first rule's action type.
    pub action: String,
    /// The file (symlinks resolved); for a rename, its old name.
    pub path: String,
    /// What happened to it, all steps together.
    #[serde(flatten)]
    pub op: FileOpDone,
    /// Where its original is kept.
    pub backup: Option<String>,
    /// Unified diff from the original to the final text.
    pub diff: String,
    /// The changed lines with reasons, every step's.
    pub lines: Vec<Change>,
    /// Each rule's own change, in order.
    pub steps: Vec<Step>,
    /// Registry values a hive or BCD change set, in order (empty for text files).
    pub registry: Vec<crate::windows::RegChange>,
    /// Text before the first step (empty for a created file).
    #[serde(skip)]
    pub(crate) before: String,
    /// Text after the last step (empty for a removed file).
    #[serde(skip)]
    pub(crate) after: String,
}

/// One rule's change to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Rule id.
    pub rule: String,
    /// Action type.
    pub action: String,
    /// The diff of this step alone.
    pub diff: String,
}

impl FileChange {
    /// The path the file has after this change, if it still exists.
    fn current_path(&self) -> Option<&str> {
        match &self.op {
            FileOpDone::Removed => None,
            FileOpDone::Renamed { to } => Some(to),
            FileOpDone::Modified | FileOpDone::Created => Some(&self.path),
        }
    }

    /// The name the diff shows.
    fn diff_name(&self) -> &str {
        match &self.op {
            FileOpDone::Renamed { to } => to,
            _ => &self.path,
        }
    }
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Worth a look; the import may still work.
    Warning,
    /// The guest will not work as is.
    Error,
}

/// Something a rule found and reported without changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Rule id.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// What.
    pub message: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Changed files, in order.
    pub changes: Vec<FileChange>,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Rules whose `when` did not hold.
    pub skipped: Vec<String>,
}

/// Where the original of `path` is kept.
pub fn backup_path(path: &GuestPath) -> GuestPath {
    let parent = path.parent();
    let name = path.file_name().unwrap_or_default();
    let mut bak_name = name.to_vec();
    bak_name.extend_from_slice(BACKUP_SUFFIX.as_bytes());
    if GLOBBED_DIRS.iter().any(|d| GuestPath::from(*d) == parent) {
        let mut dir_name = parent.file_name().unwrap_or_default().to_vec();
        dir_name.extend_from_slice(BACKUP_SUFFIX.as_bytes());
        return parent.parent().join(&dir_name).join(name);
    }
    parent.join(&bak_name)
}

pub(crate) struct Run<'a> {
    pub(crate) fs: &'a mut dyn GuestFs,
    ctx: &'a Context,
    pub(crate) report: Report,
    pub(crate) rule: String,
    pub(crate) action: &'static str,
    /// Drivers `initramfs_drivers` added, by kernel version.
    added_drivers: BTreeMap<String, Vec<String>>,
    /// Kernels whose unreadable initramfs a rule has reported already.
    unreadable_reported: Vec<String>,
    /// The Windows guest's system root, for `registry` and `bcd`.
    pub(crate) win: Option<&'a WindowsTarget>,
    /// Hives read and edited in memory, written once at the end of the run.
    pub(crate) hives: Vec<crate::winrun::HiveEdit>,
    /// The running rule's pack file (for `reg_file`).
    pub(crate) source: std::path::PathBuf,
}

/// What the engine needs to know of a Windows guest.
#[derive(Debug, Clone, Default)]
pub struct WindowsTarget {
    /// The system root as a guest path, e.g. `/Windows`.
    pub systemroot: String,
    /// Where the system partitions (a BIOS install's "System Reserved"
    /// NTFS volume, a UEFI install's FAT EFI system partition) are mounted
    /// in the run's filesystem, e.g. `/@system`: the `bcd` action edits the
    /// stores there as well as those on the Windows volume itself.
    pub system_partitions: Vec<String>,
    /// Driver package files to stage (`--drivers`), with their guest paths.
    pub drivers: Vec<StagedFile>,
    /// Folders to add to SOFTWARE's `DevicePath` (Windows-style, e.g.
    /// `%SystemRoot%\vmie-drivers\ena`), where Plug and Play looks for a
    /// new device's driver.
    pub device_path: Vec<String>,
    /// Boot-start storage drivers of the `--drivers` packages, to register
    /// so that the first boot on the target finds its disk.
    pub boot_drivers: Vec<BootDriver>,
}

/// A boot-start driver of a `--drivers` package (from its INF).
#[derive(Debug, Clone, Default)]
pub struct BootDriver {
    /// The INF file name it comes from (`viostor.inf`).
    pub inf: String,
    /// The INF arch decoration it was read for (`amd64`, `x86`, `arm64`),
    /// which also names its driver package.
    pub arch: String,
    /// Service name (`viostor`).
    pub service: String,
    /// The driver file name (`viostor.sys`).
    pub binary: String,
    /// The driver file's bytes (copied to `System32\drivers`).
    pub data: Vec<u8>,
    /// `ErrorControl`.
    pub error_control: u32,
    /// `Group` (the INF's `LoadOrderGroup`).
    pub group: Option<String>,
    /// The device setup class GUID, braced (`{4D36E97B-...}`).
    pub class_guid: String,
    /// Hardware ids (`PCI\VEN_1AF4&DEV_1001`), upper case.
    pub hardware_ids: Vec<String>,
}

/// A file `--drivers` stages in a Windows guest.
#[derive(Debug, Clone, Default)]
pub struct StagedFile {
    /// Guest path, e.g. `/Windows/vmie-drivers/ena/ena.sys`.
    pub path: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl Run<'_> {
    /// Record one step: a new entry, or merged into the entry of the file it
    /// changes again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        path: String,
        op: FileOpDone,
        backup: Option<String>,
        before: &str,
        after: &str,
        lines: Vec<Change>,
    ) {
        let name = match &op {
            FileOpDone::Renamed { to } => to.clone(),
            _ => path.clone(),
        };
        let step = Step {
            rule: self.rule.clone(),
            action: self.action.to_string(),
            diff: diff::unified(&name, before, after),
        };
        let existing = self
            .report
            .changes
            .iter()
            .position(|c| c.current_path() == Some(path.as_str()));
        let Some(i) = existing else {
            self.report.changes.push(FileChange {
                rule: self.rule.clone(),
                rules: vec![self.rule.clone()],
                action: self.action.to_string(),
                path,
                op,
                backup,
                diff: step.diff.clone(),
                lines,
                steps: vec![step],
                registry: Vec::new(),
                before: before.to_string(),
                after: after.to_string(),
            });
            return;
        };
        let c = &mut self.report.changes[i];
        if !c.rules.contains(&self.rule) {
            c.rules.push(self.rule.clone());
        }
        c.op = match (&c.op, op) {
            // A created file stays created; a renamed one stays renamed.
            (FileOpDone::Created, FileOpDone::Modified) => FileOpDone::Created,
            (FileOpDone::Renamed { to }, FileOpDone::Modified) => {
                FileOpDone::Renamed { to: to.clone() }
            }
            (FileOpDone::Renamed { .. }, FileOpDone::Removed) => FileOpDone::Removed,
            (_, FileOpDone::Renamed { to }) if c.path != path => FileOpDone::Renamed { to },
            (_, new) => new,
        };
        if c.backup.is_none() {
            c.backup = backup;
        }
        c.after = after.to_string();
        c.lines.extend(lines);
        c.steps.push(step);
        c.diff = diff::unified(c.diff_name(), &c.before, &c.after);
    }

    pub(crate) fn fs_err(&self, e: FsError) -> EngineError {
        EngineError::Fs {
            rule: self.rule.clone(),
            source: e,
        }
    }

    pub(crate) fn finding(&mut self, severity: Severity, message: String) {
        self.report.findings.push(Finding {
            rule: self.rule.clone(),
            severity,
            message,
        });
    }

    /// Resolve `path` and read it if it is a regular file.
    fn read_text(&self, path: &str) -> Result<Option<(GuestPath, String)>, EngineError> {
        let p = match resolve(self.fs.as_dyn_ref(), path.as_bytes(), true) {
            Ok(p) => p,
            Err(FsError::NotFound { .. } | FsError::NotADirectory { .. }) => return Ok(None),
            Err(e) => return Err(self.fs_err(e)),
        };
        match self.fs.symlink_metadata(&p) {
            Ok(m) if m.file_type == FileType::Regular => {}
            Ok(_) | Err(FsError::NotFound { .. }) | Err(FsError::NotADirectory { .. }) => {
                return Ok(None)
            }
            Err(e) => return Err(self.fs_err(e)),
        }
        let data = self
            .fs
            .read_file(&p, self.fs.limits().max_read)
            .map_err(|e| self.fs_err(e))?;
        Ok(Some((p, String::from_utf8_lossy(&data).into_owned())))
    }

    /// Files in `dir` (resolved), sorted, matching `pred`; skips our backups.
    fn list(&self, dir: &str, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
        let Ok((p, entries)) = self.fs.as_dyn_ref().list(dir) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| {
                matches!(
                    e.file_type,
                    FileType::Regular | FileType::Symlink | FileType::Unknown
                )
            })
            .filter_map(|e| String::from_utf8(e.name).ok())
            .filter(|n| !n.ends_with(BACKUP_SUFFIX) && pred(n))
            .map(|n| p.join(n.as_bytes()).to_string())
            .collect()
    }

    /// Keep the original of `p` beside it unless a backup exists already.
    pub(crate) fn backup(&mut self, p: &GuestPath) -> Result<GuestPath, EngineError> {
        let b = backup_path(p);
        match self.fs.symlink_metadata(&b) {
            Ok(_) => return Ok(b),
            Err(FsError::NotFound { .. }) => {}
            Err(e) => return Err(self.fs_err(e)),
        }
        let m = self.fs.symlink_metadata(p).map_err(|e| self.fs_err(e))?;
        let data = self
            .fs
            .read_file(p, self.fs.limits().max_read)
            .map_err(|e| self.fs_err(e))?;
        let dir = b.parent();
        if dir != p.parent()
            && matches!(
                self.fs.symlink_metadata(&dir),
                Err(FsError::NotFound { .. })
            )
        {
            let pm = self
                .fs
                .symlink_metadata(&p.parent())
                .map_err(|e| self.fs_err(e))?;
            let attrs = NewAttrs::like(&pm);
            self.fs.mkdir(&dir, &attrs).map_err(|e| self.fs_err(e))?;
        }
        let attrs = NewAttrs::like(&m);
        self.fs
            .create_file(&b, &data, &attrs)
            .map_err(|e| self.fs_err(e))?;
        Ok(b)
    }

    /// Write an action's outcome for the file at `p` (original `old`).
    fn commit(&mut self, p: &GuestPath, old: &str, out: Outcome) -> Result<(), EngineError> {
        for n in &out.notes {
            let msg = format!("{p}: {n}");
            self.finding(Severity::Info, msg);
        }
        if out.text == old {
            return Ok(());
        }
        let b = self.backup(p)?;
        self.fs
            .replace_file(p, out.text.as_bytes())
            .map_err(|e| self.fs_err(e))?;
        self.record(
            p.to_string(),
            FileOpDone::Modified,
            Some(b.to_string()),
            old,
            &out.text,
            out.changes,
        );
        Ok(())
    }

    fn edit(&mut self, path: &str, f: &dyn Fn(&str) -> Outcome) -> Result<bool, EngineError> {
        let Some((p, old)) = self.read_text(path)? else {
            return Ok(false);
        };
        let out = f(&old);
        self.commit(&p, &old, out)?;
        Ok(true)
    }

    /// Remove `path`, keeping it as its backup.
    fn remove(&mut self, path: &str) -> Result<(), EngineError> {
        let Some((p, old)) = self.read_text(path)? else {
            return Ok(());
        };
        let b = backup_path(&p);
        match self.fs.symlink_metadata(&b) {
            Ok(_) => self.fs.remove(&p).map_err(|e| self.fs_err(e))?,
            Err(FsError::NotFound { .. }) => {
                let _ = self.backup(&p)?;
                self.fs.remove(&p).map_err(|e| self.fs_err(e))?;
            }
            Err(e) => return Err(self.fs_err(e)),
        }
        self.record(
            p.to_string(),
            FileOpDone::Removed,
            Some(b.to_string()),
            &old,
            "",
            Vec::new(),
        );
        Ok(())
    }

    /// Replace `from` by `to` holding `new` (the original stays as `from`'s backup).
    fn rename_with(
        &mut self,
        from: &GuestPath,
        to: &GuestPath,
        old: &str,
        out: Outcome,
    ) -> Result<(), EngineError> {
        let m = self.fs.symlink_metadata(from).map_err(|e| self.fs_err(e))?;
        let b = self.backup(from)?;
        let attrs = NewAttrs::like(&m);
        self.fs
            .create_file(to, out.text.as_bytes(), &attrs)
            .map_err(|e| self.fs_err(e))?;
        self.fs.remove(from).map_err(|e| self.fs_err(e))?;
        self.record(
            from.to_string(),
            FileOpDone::Renamed { to: to.to_string() },
            Some(b.to_string()),
            old,
            &out.text,
            out.changes,
        );
        Ok(())
    }
}

/// Helper so `&mut dyn GuestFs` can use the `&dyn` functions.
pub(crate) trait AsDynRef {
    fn as_dyn_ref(&self) -> &dyn GuestFs;
}

impl AsDynRef for &mut dyn GuestFs {
    fn as_dyn_ref(&self) -> &dyn GuestFs {
        &**self
    }
}

const GRUB_CFGS: &[&str] = &["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"];
const MENU_LSTS: &[&str] = &["/boot/grub/menu.lst", "/boot/grub/grub.conf"];
const GRUBENVS: &[&str] = &["/boot/grub/grubenv", "/boot/grub2/grubenv"];

impl Run<'_> {
    fn grub_cfgs(&self) -> Vec<String> {
        let mut v: Vec<String> = GRUB_CFGS.iter().map(|s| s.to_string()).collect();
        for vendor in self.list_dirs("/boot/efi/EFI") {
            v.push(format!("{vendor}/grub.cfg"));
        }
        v
    }

    fn list_dirs(&self, dir: &str) -> Vec<String> {
        let Ok((p, entries)) = self.fs.as_dyn_ref().list(dir) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| e.file_type == FileType::Directory)
            .filter_map(|e| String::from_utf8(e.name).ok())
            .map(|n| p.join(n.as_bytes()).to_string())
            .collect()
    }

    /// Resolved, de-duplicated paths that exist.
    fn existing(&self, paths: Vec<String>) -> Vec<String> {
        let mut seen: Vec<GuestPath> = Vec::new();
        let mut out = Vec::new();
        for p in paths {
            if let Ok(r) = resolve(self.fs.as_dyn_ref(), p.as_bytes(), true) {
                if self
                    .fs
                    .symlink_metadata(&r)
                    .is_ok_and(|m| m.file_type == FileType::Regular)
                    && !seen.contains(&r)
                {
                    seen.push(r.clone());
                    out.push(r.to_string());
                }
            }
        }
        out
    }

    /// `root_by_uuid`: also name `root=`/`resume=` devices by UUID. Without
    /// it the command lines change only by `add` and `remove`.
    fn kernel_args(
        &mut self,
        add: &[String],
        remove: &[String],
        root_by_uuid: bool,
    ) -> Result<(), EngineError> {
        let volumes = if root_by_uuid {
            self.ctx.volumes.clone()
        } else {
            Vec::new()
        };
        let e = CmdlineEdit {
            add,
            remove,
            volumes: &volumes,
        };
        self.edit("/etc/default/grub", &|t| {
            boot::kernel_args_default_grub(t, &e)
        })?;
        for p in self.existing(self.grub_cfgs()) {
            self.edit(&p, &|t| boot::kernel_args_grub_cfg(t, &e))?;
        }
        let legacy = self.existing(MENU_LSTS.iter().map(|s| s.to_string()).collect());
        for p in legacy {
            self.edit(&p, &|t| boot::kernel_args_menu_lst(t, &e))?;
        }
        // BLS entries that take their options from grubenv's kernelopts get
        // the additions there, not twice.
        let bls_e = CmdlineEdit {
            add: &[],
            ..e.clone()
        };
        for p in self.list("/boot/loader/entries", &|n| n.ends_with(".conf")) {
            self.edit(&p, &|t| {
                let via_env = t
                    .lines()
                    .any(|l| l.trim_start().starts_with("options") && l.contains("$kernelopts"));
                boot::kernel_args_bls(t, if via_env { &bls_e } else { &e })
            })?;
        }
        for p in self.existing(GRUBENVS.iter().map(|s| s.to_string()).collect()) {
            let Some((gp, old)) = self.read_text(&p)? else {
                continue;
            };
            if let Some(opts) = boot::grubenv_get(old.as_bytes(), "kernelopts") {
                let (new_opts, reasons) = boot::edit_cmdline(&opts, &e);
                if !reasons.is_empty() {
                    match boot::grubenv_set(old.as_bytes(), "kernelopts", new_opts.trim()) {
                        Ok(Some(block)) => {
                            let text = String::from_utf8_lossy(&block).into_owned();
                            let out = Outcome {
                                text,
                                changes: vec![Change {
                                    line: 0,
                                    before: format!("kernelopts={opts}"),
                                    after: format!("kernelopts={}", new_opts.trim()),
                                    reason: reasons.join("; "),
                                }],
                                notes: Vec::new(),
                            };
                            self.commit(&gp, &old, out)?;
                        }
                        Ok(None) => {}
                        Err(why) => self.finding(Severity::Warning, format!("{gp}: {why}")),
                    }
                }
            }
        }
        Ok(())
    }

    fn grub(&mut self, timeout: u32) -> Result<(), EngineError> {
        self.edit("/etc/default/grub", &|t| boot::default_grub_set(t, timeout))?;
        let mut saved_default: Option<String> = None;
        for p in self.existing(self.grub_cfgs()) {
            let Some((gp, old)) = self.read_text(&p)? else {
                continue;
            };
            if old.contains("${saved_entry}") {
                if let Some(n) = boot::newest_entry(&boot::grub_cfg_entries(&old)) {
                    saved_default = Some(n.title.clone());
                }
            }
            let mut out = boot::grub_cfg_set(&old, timeout);
            if old.contains("blscfg") {
                // Entries come from BLS files; the default is grubenv's.
                out.notes.clear();
            }
            self.commit(&gp, &old, out)?;
        }
        for p in self.existing(MENU_LSTS.iter().map(|s| s.to_string()).collect()) {
            self.edit(&p, &|t| boot::menu_lst_set(t, timeout))?;
        }
        // BLS: the default is grubenv's saved_entry, an entry file's id.
        let bls = self.list("/boot/loader/entries", &|n| n.ends_with(".conf"));
        let mut newest_bls: Option<(String, String)> = None;
        for p in &bls {
            if let Some((gp, text)) = self.read_text(p)? {
                let version = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("linux").map(|r| r.trim().to_string()))
                    .and_then(|k| boot::kernel_version(&k).map(str::to_string));
                let id = gp.file_name().map(|n| {
                    String::from_utf8_lossy(n)
                        .trim_end_matches(".conf")
                        .to_string()
                });
                if let (Some(v), Some(id)) = (version, id) {
                    if !id.contains("rescue")
                        && newest_bls
                            .as_ref()
                            .is_none_or(|(bv, _)| boot::compare_versions(&v, bv).is_gt())
                    {
                        newest_bls = Some((v, id));
                    }
                }
            }
        }
        if let Some((_, id)) = newest_bls {
            saved_default = Some(id);
        }
        if let Some(entry) = saved_default {
            for p in self.existing(GRUBENVS.iter().map(|s| s.to_string()).collect()) {
                let Some((gp, old)) = self.read_text(&p)? else {
                    continue;
                };
                if boot::grubenv_get(old.as_bytes(), "saved_entry").is_none()
                    && !old.contains("saved_entry")
                {
                    // No saved default in use: grub.cfg's own default applies.
                    continue;
                }
                match boot::grubenv_set(old.as_bytes(), "saved_entry", &entry) {
                    Ok(Some(block)) => {
                        let before =
                            boot::grubenv_get(old.as_bytes(), "saved_entry").unwrap_or_default();
                        let out = Outcome {
                            text: String::from_utf8_lossy(&block).into_owned(),
                            changes: vec![Change {
                                line: 0,
                                before: format!("saved_entry={before}"),
                                after: format!("saved_entry={entry}"),
                                reason: "boot the newest kernel by default".into(),
                            }],
                            notes: Vec::new(),
                        };
                        self.commit(&gp, &old, out)?;
                    }
                    Ok(None) => {}
                    Err(why) => self.finding(Severity::Warning, format!("{gp}: {why}")),
                }
            }
        }
        Ok(())
    }

    fn network(&mut self) -> Result<(), EngineError> {
        let suse = self
            .ctx
            .facts
            .distro
            .as_deref()
            .is_some_and(|d| d.starts_with("sles") || d.starts_with("opensuse") || d == "suse");
        for (dir, is_suse) in [
            ("/etc/sysconfig/network-scripts", false),
            ("/etc/sysconfig/network", true),
        ] {
            let files = self.list(dir, &|n| {
                n.starts_with("ifcfg-")
                    && n != "ifcfg-lo"
                    && !n.ends_with('~')
                    && !n.contains(".bak")
                    && !n.contains(".orig")
                    && !n.contains(".rpm")
            });
            let mut done = false;
            for f in files {
                let Some((p, old)) = self.read_text(&f)? else {
                    continue;
                };
                let name = p
                    .file_name()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                let Some(edit) = network::ifcfg(&old, &name, is_suse || suse) else {
                    continue;
                };
                if done {
                    self.finding(Severity::Info, format!("{p}: a second Ethernet configuration; the cloud VM has one NIC, left alone"));
                    continue;
                }
                done = true;
                match edit.rename_to {
                    Some(new_name) => {
                        let to = p.parent().join(new_name.as_bytes());
                        if self.fs.symlink_metadata(&to).is_ok() {
                            self.finding(
                                Severity::Warning,
                                format!("{to} exists already; {p} edited in place"),
                            );
                            self.commit(&p, &old, edit.outcome)?;
                        } else {
                            self.rename_with(&p, &to, &old, edit.outcome)?;
                        }
                    }
                    None => self.commit(&p, &old, edit.outcome)?,
                }
            }
        }
        // Debian: the main file, else the first file in interfaces.d that has the NIC.
        let mut candidates = vec!["/etc/network/interfaces".to_string()];
        candidates.extend(self.list("/etc/network/interfaces.d", &|_| true));
        for f in candidates {
            let Some((p, old)) = self.read_text(&f)? else {
                continue;
            };
            let out = network::interfaces(&old);
            if out.notes.iter().any(|n| n.contains("no Ethernet")) {
                continue;
            }
            self.commit(&p, &old, out)?;
            break;
        }
        for f in self.list("/etc/netplan", &|n| {
            n.ends_with(".yaml") || n.ends_with(".yml")
        }) {
            let Some((p, old)) = self.read_text(&f)? else {
                continue;
            };
            if !old.contains("ethernets:") {
                continue;
            }
            let out = network::netplan(&old);
            self.commit(&p, &old, out)?;
            break;
        }
        let mut nm_done = false;
        for f in self.list("/etc/NetworkManager/system-connections", &|_| true) {
            let Some((p, old)) = self.read_text(&f)? else {
                continue;
            };
            if let Some(out) = network::nm_keyfile(&old) {
                if nm_done {
                    self.finding(
                        Severity::Info,
                        format!("{p}: a second Ethernet connection; left alone"),
                    );
                    continue;
                }
                nm_done = true;
                self.commit(&p, &old, out)?;
            }
        }
        for f in self.list("/etc/systemd/network", &|n| n.ends_with(".network")) {
            let Some((p, old)) = self.read_text(&f)? else {
                continue;
            };
            if let Some(out) = network::networkd(&old) {
                self.commit(&p, &old, out)?;
                break;
            }
        }
        Ok(())
    }

    /// Which of `drivers` kernel `k` lacks: neither built in nor in its
    /// initramfs, nor added by an earlier `initramfs_drivers` of this run
    /// (`-` and `_` alike; the names as the rule wrote them).
    fn lacking<'d>(&self, k: &Kernel, drivers: &'d [String]) -> Vec<&'d str> {
        let norm = |s: &str| s.replace('-', "_");
        let added = self.added_drivers.get(&k.version);
        drivers
            .iter()
            .filter(|d| !k.drivers.iter().any(|x| norm(x) == norm(d)))
            .filter(|d| !added.is_some_and(|a| a.contains(&norm(d))))
            .map(String::as_str)
            .collect()
    }

    fn initramfs_check(&mut self, drivers: &[String]) {
        if self.ctx.kernels.is_empty() {
            self.finding(
                Severity::Warning,
                "no installed kernel found to check".into(),
            );
        }
        let ctx = self.ctx;
        for k in &ctx.kernels {
            if !k.initramfs_readable {
                if self.unreadable_reported.contains(&k.version) {
                    continue;
                }
                self.unreadable_reported.push(k.version.clone());
                self.finding(
                    Severity::Warning,
                    format!(
                        "kernel {}: drivers not checked: {}",
                        k.version,
                        k.initramfs_problem
                            .as_deref()
                            .unwrap_or("initramfs missing or unreadable")
                    ),
                );
                continue;
            }
            let missing = self.lacking(k, drivers);
            if !missing.is_empty() {
                self.finding(
                    Severity::Warning,
                    format!(
                        "kernel {}: initramfs lacks {}",
                        k.version,
                        missing.join(", ")
                    ),
                );
            }
        }
    }

    /// Add `drivers` to every kernel's initramfs that lacks them (see
    /// `vmie_os::drivers`): the archive is appended to the image, the
    /// original kept as the backup; the generator's own configuration gets
    /// them too, so a rebuild on the cloud keeps them.
    fn initramfs_drivers(&mut self, drivers: &[String]) -> Result<(), EngineError> {
        let ctx = self.ctx;
        for k in &ctx.kernels {
            let missing: Vec<String> = self
                .lacking(k, drivers)
                .iter()
                .map(|d| d.replace('-', "_"))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let cannot = |why: &str| {
                format!(
                    "kernel {}: cannot add {} to its initramfs: {why}",
                    k.version,
                    missing.join(", ")
                )
            };
            let (Some(ir), Some(mdir)) = (&k.initramfs, &k.modules_dir) else {
                let why = if k.initramfs.is_none() {
                    "no initramfs found"
                } else {
                    "no modules directory for it on the root filesystem"
                };
                self.finding(Severity::Warning, cannot(why));
                continue;
            };
            let config = self
                .read_text(&format!("/boot/config-{}", k.version))?
                .map(|(_, t)| t);
            let plan = {
                let fs = self.fs.as_dyn_ref();
                let mut read = |p: &str, cap: u64| -> Result<Vec<u8>, String> {
                    let gp = resolve(fs, p.as_bytes(), true).map_err(|e| e.to_string())?;
                    fs.read_file(&gp, cap.min(fs.limits().max_read))
                        .map_err(|e| e.to_string())
                };
                vmie_os::drivers::plan(
                    &vmie_os::drivers::InjectRequest {
                        version: &k.version,
                        modules_dir: mdir,
                        initramfs: ir,
                        drivers: &missing,
                        config: config.as_deref(),
                    },
                    &mut read,
                )
            };
            let inj = match plan {
                Ok(i) => i,
                Err(why) => {
                    if ir.error.is_some() {
                        self.unreadable_reported.push(k.version.clone());
                    }
                    self.finding(Severity::Warning, cannot(&why));
                    continue;
                }
            };
            if !inj.unavailable.is_empty() {
                self.finding(
                    Severity::Warning,
                    format!(
                        "kernel {}: the guest has no module for {}; not added",
                        k.version,
                        inj.unavailable.join(", ")
                    ),
                );
            }
            let p = resolve(self.fs.as_dyn_ref(), ir.path.as_bytes(), true)
                .map_err(|e| self.fs_err(e))?;
            let original = self
                .fs
                .read_file(&p, self.fs.limits().max_read)
                .map_err(|e| self.fs_err(e))?;
            let new = vmie_os::drivers::appended(&original, &inj.archive);
            let b = self.backup(&p)?;
            self.fs.replace_file(&p, &new).map_err(|e| self.fs_err(e))?;
            let before = format!(
                "{p}: {} bytes ({})\n",
                original.len(),
                ir.segments.join(" ")
            );
            let mut after = format!(
                "{p}: {} bytes ({} cpio; the cpio after byte {} added by vmie-fixup)\n",
                new.len(),
                ir.segments.join(" "),
                new.len() - inj.archive.len()
            );
            for f in &inj.files {
                after.push_str(&format!("+ {f}\n"));
            }
            let reason = format!(
                "{}: load {} at boot (kernel {})",
                self.rule,
                inj.drivers.join(", "),
                k.version
            );
            self.record(
                p.to_string(),
                FileOpDone::Modified,
                Some(b.to_string()),
                &before,
                &after,
                vec![Change {
                    line: 0,
                    before: String::new(),
                    after: String::new(),
                    reason,
                }],
            );
            self.added_drivers
                .entry(k.version.clone())
                .or_default()
                .extend(inj.drivers.iter().cloned());
            self.persist_drivers(ir.generator.as_deref(), &inj.drivers)?;
        }
        Ok(())
    }

    /// Tell the guest's initramfs generator about `drivers`, so the image
    /// it builds on the cloud (a kernel update) has them too.
    fn persist_drivers(
        &mut self,
        generator: Option<&str>,
        drivers: &[String],
    ) -> Result<(), EngineError> {
        match generator {
            Some("initramfs-tools") => {
                let path = "/etc/initramfs-tools/modules";
                let list = drivers.to_vec();
                let id = self.rule.clone();
                let edit = move |t: &str| {
                    let have: Vec<String> = t
                        .lines()
                        .filter_map(|l| l.split_whitespace().next())
                        .filter(|w| !w.starts_with('#'))
                        .map(|w| w.replace('-', "_"))
                        .collect();
                    let mut text = t.to_string();
                    let mut changes = Vec::new();
                    for d in &list {
                        if have.contains(d) {
                            continue;
                        }
                        if !text.is_empty() && !text.ends_with('\n') {
                            text.push('\n');
                        }
                        text.push_str(d);
                        text.push('\n');
                        changes.push(Change {
                            line: text.lines().count(),
                            before: String::new(),
                            after: d.clone(),
                            reason: format!("{id}: keep {d} in rebuilt initramfs images"),
                        });
                    }
                    Outcome {
                        text,
                        changes,
                        notes: Vec::new(),
                    }
                };
                if !self.edit(path, &edit)? {
                    let out = edit("");
                    self.create_text(path, &out.text)?;
                }
            }
            Some("dracut") => {
                let path = "/etc/dracut.conf.d/90-vmie-fixup-drivers.conf";
                let text = format!(
                    "# added by vmie-fixup: the cloud's disk drivers\nadd_drivers+=\" {} \"\n",
                    drivers.join(" ")
                );
                if !self.edit(path, &|_| Outcome {
                    text: text.clone(),
                    ..Outcome::default()
                })? {
                    self.create_text(path, &text)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Create the text file `path` (its directory must exist).
    fn create_text(&mut self, path: &str, text: &str) -> Result<(), EngineError> {
        let p = resolve(self.fs.as_dyn_ref(), path.as_bytes(), true).map_err(|e| self.fs_err(e))?;
        match self.fs.symlink_metadata(&p.parent()) {
            Ok(m) if m.file_type == FileType::Directory => {}
            _ => {
                self.finding(
                    Severity::Info,
                    format!("{}: not created (no such directory)", p),
                );
                return Ok(());
            }
        }
        self.fs
            .create_file(&p, text.as_bytes(), &NewAttrs::default())
            .map_err(|e| self.fs_err(e))?;
        self.record(
            p.to_string(),
            FileOpDone::Created,
            None,
            "",
            text,
            Vec::new(),
        );
        Ok(())
    }

    fn file(
        &mut self,
        op: FileOp,
        path: &str,
        to: Option<&str>,
        contents: Option<&str>,
    ) -> Result<(), EngineError> {
        match op {
            FileOp::Remove => self.remove(path),
            FileOp::Rename => {
                let to = to.ok_or_else(|| EngineError::Rule {
                    rule: self.rule.clone(),
                    why: "file rename needs `to`".into(),
                })?;
                let Some((p, old)) = self.read_text(path)? else {
                    return Ok(());
                };
                let dest = resolve(self.fs.as_dyn_ref(), to.as_bytes(), false)
                    .map_err(|e| self.fs_err(e))?;
                let out = Outcome {
                    text: old.clone(),
                    ..Outcome::default()
                };
                self.rename_with(&p, &dest, &old, out)
            }
            FileOp::Write => {
                let contents = contents.ok_or_else(|| EngineError::Rule {
                    rule: self.rule.clone(),
                    why: "file write needs `contents`".into(),
                })?;
                if self.read_text(path)?.is_some() {
                    let c = contents.to_string();
                    self.edit(path, &|_| Outcome {
                        text: c.clone(),
                        ..Outcome::default()
                    })?;
                    return Ok(());
                }
                let p = resolve(self.fs.as_dyn_ref(), path.as_bytes(), true)
                    .map_err(|e| self.fs_err(e))?;
                self.fs
                    .create_file(&p, contents.as_bytes(), &NewAttrs::default())
                    .map_err(|e| self.fs_err(e))?;
                self.record(
                    p.to_string(),
                    FileOpDone::Created,
                    None,
                    "",
                    contents,
                    Vec::new(),
                );
                Ok(())
            }
        }
    }
}

/// Run `rules` on the guest `fs`, in order. Nothing is written outside `fs`.
pub fn run(fs: &mut dyn GuestFs, rules: &[Rule], ctx: &Context) -> Result<Report, EngineError> {
    run_inner(fs, rules, ctx, None)
}

/// Run `rules` on a Windows guest's system volume `fs`: as [`run`], and the
/// `registry` and `bcd` actions edit hives in memory; every changed hive is
/// written once, after the last rule, with its original kept as
/// `NAME.vmie.bak`.
pub fn run_windows(
    fs: &mut dyn GuestFs,
    rules: &[Rule],
    ctx: &Context,
    win: &WindowsTarget,
) -> Result<Report, EngineError> {
    run_inner(fs, rules, ctx, Some(win))
}

fn run_inner(
    fs: &mut dyn GuestFs,
    rules: &[Rule],
    ctx: &Context,
    win: Option<&WindowsTarget>,
) -> Result<Report, EngineError> {
    let mut run = Run {
        fs,
        ctx,
        report: Report::default(),
        rule: String::new(),
        action: "",
        added_drivers: BTreeMap::new(),
        unreadable_reported: Vec::new(),
        win,
        hives: Vec::new(),
        source: std::path::PathBuf::new(),
    };
    for rule in rules {
        run.rule = rule.id.clone();
        run.source = rule.source.clone();
        let holds = {
            let fsr = run.fs.as_dyn_ref();
            rule.when
                .holds(&ctx.facts, &|p| fsr.exists(p).unwrap_or(false))
        };
        if !holds {
            run.report.skipped.push(rule.id.clone());
            continue;
        }
        for action in &rule.actions {
            run.action = action.name();
            match action {
                Action::Fstab { path } => {
                    let vols = ctx.volumes.clone();
                    let path = path.clone();
                    let Some((p, old)) = run.read_text(&path)? else {
                        run.finding(
                            Severity::Error,
                            format!("Invalid configuration - Could not read fstab ({path})"),
                        );
                        continue;
                    };
                    let out = fstab::fix(&old, &vols);
                    for n in &out.notes {
                        run.finding(Severity::Warning, format!("{p}: {n}"));
                    }
                    let out = Outcome {
                        notes: Vec::new(),
                        ..out
                    };
                    run.commit(&p, &old, out)?;
                }
                Action::Shellvars { path, set, unset } => {
                    let set: Vec<(&str, &str)> =
                        set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let unset: Vec<&str> = unset.iter().map(String::as_str).collect();
                    let id = rule.id.clone();
                    run.edit(path, &|t| shellvars::edit(t, &set, &unset, &id))?;
                }
                Action::KernelArgs {
                    add,
                    remove,
                    root_by_uuid,
                } => run.kernel_args(add, remove, *root_by_uuid)?,
                Action::Grub { timeout } => run.grub(*timeout)?,
                Action::Network {} => run.network()?,
                Action::InitramfsCheck { drivers } => run.initramfs_check(drivers),
                Action::InitramfsDrivers { drivers } => run.initramfs_drivers(drivers)?,
                Action::File {
                    op,
                    path,
                    to,
                    contents,
                } => run.file(*op, path, to.as_deref(), contents.as_deref())?,
                Action::Registry {
                    hive,
                    key,
                    value,
                    set,
                    delete,
                    replace,
                    remove_items,
                    only_if,
                    reg_file,
                } => run.registry(&crate::winrun::RegistryArgs {
                    hive,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    set: set.as_ref(),
                    delete: *delete,
                    replace: replace.as_ref(),
                    remove_items: remove_items.as_deref(),
                    only_if: only_if.as_ref(),
                    reg_file: reg_file.as_deref(),
                })?,
                Action::Bcd {
                    objects,
                    element,
                    boolean,
                    integer,
                    delete,
                } => run.bcd(objects, element, *boolean, *integer, *delete)?,
                Action::RegexEdit {
                    path,
                    pattern,
                    replace,
                } => {
                    let re = Regex::new(pattern).map_err(|e| EngineError::Rule {
                        rule: rule.id.clone(),
                        why: format!("bad pattern {pattern:?}: {e}"),
                    })?;
                    let replace = replace.clone();
                    let id = rule.id.clone();
                    run.edit(path, &|t| {
                        let text = re.replace_all(t, replace.as_str()).into_owned();
                        let changes = if text == t {
                            Vec::new()
                        } else {
                            vec![Change {
                                line: 0,
                                before: String::new(),
                                after: String::new(),
                                reason: format!("{id}: s/{}/{replace}/", re.as_str()),
                            }]
                        };
                        Outcome {
                            text,
                            changes,
                            notes: Vec::new(),
                        }
                    })?;
                }
            }
        }
    }
    if win.is_some_and(|w| !w.drivers.is_empty() || !w.device_path.is_empty()) {
        run.stage_drivers()?;
        // Also when DevicePath needed no change (a second run, or its
        // folders listed already): each registration is idempotent.
        run.register_boot_drivers()?;
    }
    run.flush_hives()?;
    Ok(run.report)
}
