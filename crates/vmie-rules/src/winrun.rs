//! The engine's Windows actions: `registry` and `bcd` edit hives in memory
//! (each hive read once per run), and [`Run::flush_hives`] writes every
//! changed hive once, after the last rule, through the same backup and
//! replace path as the text files, after nt-hive (an independent reader)
//! has read every edit back.

use vmie_guestfs::{FileType, FsError, GuestFsExt, GuestPath};
use vmie_hive::{Hive, HiveOptions};

use crate::engine::{AsDynRef, EngineError, FileChange, FileOpDone, Run, Severity, Step};
use crate::windows::{self, BcdRole, OnlyIf, OnlyIfWord, RegChange, RegData};

/// A hive being edited in this run.
pub(crate) struct HiveEdit {
    /// Where it is on the volume.
    path: GuestPath,
    /// The name reports use: `SYSTEM`, `SOFTWARE`, `BCD`.
    label: String,
    hive: Hive,
    /// SYSTEM's current control set.
    ccs: Option<String>,
    /// For the nt-hive read-back.
    edits: Vec<vmie_hive::Edit>,
    changes: Vec<RegChange>,
    /// (rule, action) of each rule that changed it, in order.
    by: Vec<(String, &'static str)>,
}

/// A `registry` action's parameters.
pub(crate) struct RegistryArgs<'x> {
    pub(crate) hive: &'x str,
    pub(crate) key: Option<&'x str>,
    pub(crate) value: Option<&'x str>,
    pub(crate) set: Option<&'x RegData>,
    pub(crate) delete: bool,
    pub(crate) replace: Option<&'x windows::RegReplace>,
    pub(crate) remove_items: Option<&'x [String]>,
    pub(crate) only_if: Option<&'x OnlyIf>,
    pub(crate) reg_file: Option<&'x str>,
}

/// At most this many keys for one `registry` action with `*` in its key.
const MAX_KEYS_PER_ACTION: usize = 4096;

/// Where a BCD store is kept, under the root of the Windows volume or of a
/// system partition: BIOS, then UEFI.
const BCD_STORES: &[&str] = &["Boot/BCD", "EFI/Microsoft/Boot/BCD"];

impl Run<'_> {
    fn rule_err(&self, why: String) -> EngineError {
        EngineError::Rule {
            rule: self.rule.clone(),
            why,
        }
    }

    /// `path` with every component matched case-insensitively (NTFS names
    /// differ in case between Windows versions: `System32`, `system32`).
    fn find_ci(&self, path: &str) -> Result<Option<GuestPath>, EngineError> {
        self.find_ci_under(GuestPath::root(), path)
    }

    /// [`Self::find_ci`] from `base` (a mountpoint need not be listed by its
    /// parent).
    fn find_ci_under(&self, base: GuestPath, path: &str) -> Result<Option<GuestPath>, EngineError> {
        let mut cur = base;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let entries = match self.fs.as_dyn_ref().list(&cur.to_string()) {
                Ok((_, e)) => e,
                Err(FsError::NotFound { .. } | FsError::NotADirectory { .. }) => return Ok(None),
                Err(e) => return Err(self.fs_err(e)),
            };
            let Some(e) = entries
                .iter()
                .find(|e| std::str::from_utf8(&e.name).is_ok_and(|n| n.eq_ignore_ascii_case(comp)))
            else {
                return Ok(None);
            };
            cur = cur.join(&e.name);
        }
        Ok(Some(cur))
    }

    /// The index in `hives` of the hive at `path`, read on first use.
    /// `Ok(None)`: the file is not there. A hive that cannot be parsed is an
    /// error finding (which blocks the plan), and `Ok(None)`.
    fn open_hive(&mut self, path: GuestPath, label: &str) -> Result<Option<usize>, EngineError> {
        if let Some(i) = self.hives.iter().position(|h| h.path == path) {
            return Ok(Some(i));
        }
        match self.fs.symlink_metadata(&path) {
            Ok(m) if m.file_type == FileType::Regular => {}
            Ok(_) | Err(FsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fs_err(e)),
        }
        let bytes = self
            .fs
            .read_file(&path, self.fs.limits().max_read)
            .map_err(|e| self.fs_err(e))?;
        let opts = HiveOptions {
            name: path.to_string(),
            ..HiveOptions::default()
        };
        let hive = match Hive::from_bytes(bytes.clone(), &opts) {
            Ok(h) => Ok(h),
            Err(vmie_hive::HiveError::Dirty { .. }) => self.replay_logs(&path, bytes, &opts)?,
            Err(e) => Err(e),
        };
        let hive = match hive {
            Ok(h) => h,
            Err(e) => {
                // Said once per hive, by the first rule that wanted it.
                let said = format!("{path}: cannot edit this hive");
                if !self
                    .report
                    .findings
                    .iter()
                    .any(|f| f.message.starts_with(&said))
                {
                    self.finding(Severity::Error, format!("{said}: {e}"));
                }
                return Ok(None);
            }
        };
        let ccs = if label.eq_ignore_ascii_case("SYSTEM") {
            vmie_hive::system::current_control_set(&hive).ok()
        } else {
            None
        };
        self.hives.push(HiveEdit {
            path,
            label: label.to_string(),
            hive,
            ccs,
            edits: Vec::new(),
            changes: Vec::new(),
            by: Vec::new(),
        });
        Ok(Some(self.hives.len() - 1))
    }

    /// A dirty hive at `path`: replayed in memory from its `.LOG1`/`.LOG2`
    /// (or `.LOG`) beside it, as Windows would at its next load; the result
    /// is clean, and once an edit writes it back, its logs are stale (their
    /// entries do not continue the written sequence number), so Windows uses
    /// the written hive as it is. Said as an info finding; `Err` (the
    /// parser's refusal) when there are no logs or they cannot make the hive
    /// consistent.
    fn replay_logs(
        &mut self,
        path: &GuestPath,
        bytes: Vec<u8>,
        opts: &HiveOptions,
    ) -> Result<Result<Hive, vmie_hive::HiveError>, EngineError> {
        let name = path
            .components()
            .last()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let dir = path.parent();
        let mut logs = Vec::new();
        let mut found = Vec::new();
        if let Ok(entries) = self.fs.as_dyn_ref().read_dir(&dir) {
            for ext in [".LOG1", ".LOG2", ".LOG"] {
                let want = format!("{name}{ext}");
                let Some(e) = entries.iter().find(|e| {
                    std::str::from_utf8(&e.name).is_ok_and(|n| n.eq_ignore_ascii_case(&want))
                }) else {
                    continue;
                };
                let p = dir.join(&e.name);
                let data = self
                    .fs
                    .read_file(&p, self.fs.limits().max_read)
                    .map_err(|e| self.fs_err(e))?;
                found.push(p.to_string());
                logs.push(data);
            }
        }
        let refs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
        match Hive::from_bytes_with_logs(bytes, &refs, opts) {
            Ok((h, rep)) => {
                self.finding(
                    Severity::Info,
                    format!(
                        "{path} was dirty: replayed from {} in memory ({} log entries{}); if a rule changes it, it is written back clean and the logs are left as they are (stale)",
                        found.join(", "),
                        rep.entries_applied.len(),
                        if rep.old_logs_applied.is_empty() { "" } else { ", an old-format log" }
                    ),
                );
                Ok(Ok(h))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Record one change to hive `i`.
    fn note_change(&mut self, i: usize, change: RegChange, edit: Option<vmie_hive::Edit>) {
        let (rule, action) = (self.rule.clone(), self.action);
        if let Some(h) = self.hives.get_mut(i) {
            if !h.by.iter().any(|(r, _)| *r == rule) {
                h.by.push((rule, action));
            }
            h.changes.push(change);
            h.edits.extend(edit);
        }
    }

    fn hive_err(&self, what: &str, e: vmie_hive::HiveError) -> EngineError {
        self.rule_err(format!("{what}: {e}"))
    }

    pub(crate) fn registry(&mut self, a: &RegistryArgs<'_>) -> Result<(), EngineError> {
        let Some(win) = self.win else {
            self.finding(
                Severity::Warning,
                "registry: not a Windows guest; nothing done".into(),
            );
            return Ok(());
        };
        let config = format!("{}/System32/config/{}", win.systemroot, a.hive);
        let Some(path) = self.find_ci(&config)? else {
            self.finding(
                Severity::Warning,
                format!("{config}: no such hive; nothing done"),
            );
            return Ok(());
        };
        let Some(i) = self.open_hive(path, &a.hive.to_ascii_uppercase())? else {
            return Ok(());
        };
        if let Some(file) = a.reg_file {
            return self.merge_reg_file(i, file);
        }
        let label = self.hives[i].label.clone();
        let pattern = windows::resolve_key(a.key.unwrap_or_default(), self.hives[i].ccs.as_deref());
        let patterns = match windows::every_control_set(&pattern) {
            Some(rest) => windows::control_sets(&self.hives[i].hive)
                .map_err(|e| self.hive_err(&label, e))?
                .into_iter()
                .map(|cs| {
                    if rest.is_empty() {
                        cs
                    } else {
                        format!("{cs}\\{rest}")
                    }
                })
                .collect(),
            None => vec![pattern.clone()],
        };
        let mut keys = Vec::new();
        for p in &patterns {
            keys.extend(
                windows::expand_key(&self.hives[i].hive, p, MAX_KEYS_PER_ACTION)
                    .map_err(|e| self.hive_err(&label, e))?,
            );
        }
        if keys.len() >= MAX_KEYS_PER_ACTION {
            return Err(self.rule_err(format!(
                "{label}\\{pattern} names {MAX_KEYS_PER_ACTION} keys or more; refusing so many"
            )));
        }
        if keys.is_empty() {
            self.finding(
                Severity::Info,
                format!("{label}\\{pattern}: no such key; left alone"),
            );
        }
        for key in keys {
            self.registry_key(i, &label, key, a)?;
        }
        Ok(())
    }

    /// A `registry` action on one key of hive `i`.
    fn registry_key(
        &mut self,
        i: usize,
        label: &str,
        key: String,
        a: &RegistryArgs<'_>,
    ) -> Result<(), EngineError> {
        let label = label.to_string();
        let exists =
            windows::key_exists(&self.hives[i].hive, &key).map_err(|e| self.hive_err(&label, e))?;
        if !exists && (a.delete || matches!(a.only_if, Some(OnlyIf::Word(OnlyIfWord::Present)))) {
            if !a.delete {
                self.finding(
                    Severity::Info,
                    format!("{label}\\{key}: no such key; left alone"),
                );
            }
            return Ok(());
        }
        let Some(vname) = a.value else {
            if a.delete {
                self.hives[i]
                    .hive
                    .delete_key(&key)
                    .map_err(|e| self.hive_err(&label, e))?;
                let c = RegChange {
                    hive: label,
                    key: key.clone(),
                    value: None,
                    old: Some("(key)".into()),
                    new: None,
                    rule: self.rule.clone(),
                };
                self.note_change(i, c, Some(vmie_hive::Edit::DeleteKey { path: key }));
                return Ok(());
            }
            if !exists {
                self.hives[i]
                    .hive
                    .ensure_key(&key)
                    .map_err(|e| self.hive_err(&label, e))?;
                let c = RegChange {
                    hive: label,
                    key: key.clone(),
                    value: None,
                    old: None,
                    new: None,
                    rule: self.rule.clone(),
                };
                self.note_change(i, c, Some(vmie_hive::Edit::CreateKey { path: key }));
            }
            return Ok(());
        };
        let name = windows::value_name(vname);
        let cur = windows::current(&self.hives[i].hive, &key, name)
            .map_err(|e| self.hive_err(&label, e))?;
        match a.only_if {
            Some(OnlyIf::Word(OnlyIfWord::Absent)) if cur.is_some() => return Ok(()),
            Some(OnlyIf::Equals { equals }) if cur.as_ref() != Some(&equals.encode()) => {
                return Ok(())
            }
            _ => {}
        }
        let disabling = matches!(a.set, Some(RegData::Dword(4)))
            && name.eq_ignore_ascii_case("Start")
            && cur.as_ref() != Some(&RegData::Dword(4).encode());
        if let (true, Some(ccs)) = (disabling, self.hives[i].ccs.clone()) {
            // Never disable a driver a device class still lists as a
            // filter: the class's devices would not start (0x7B when it is
            // the disk's).
            if let Some(svc) = service_of(&key, &ccs) {
                let users = self.filter_users(i, &ccs, &svc)?;
                if !users.is_empty() {
                    self.finding(
                        Severity::Warning,
                        format!(
                            "{label}\\{key}: not disabled: {svc} is a filter driver of {}; disabling it would keep those devices (and the boot disk, if it is one of them) from starting",
                            users.join(", ")
                        ),
                    );
                    return Ok(());
                }
            }
        }
        let old = cur.as_ref().map(|(t, d)| windows::reg_text(*t, d));
        let change = |new: Option<String>| RegChange {
            hive: label.clone(),
            key: key.clone(),
            value: Some(vname.to_string()),
            old: old.clone(),
            new,
            rule: self.rule.clone(),
        };
        // remove_items: the list without them; a list left empty goes.
        let kept = match a.remove_items {
            Some(items) => {
                let Some(list) = cur.as_ref().and_then(|(t, d)| multi_sz_items(*t, d)) else {
                    return Ok(());
                };
                let kept: Vec<String> = list
                    .iter()
                    .filter(|x| !items.iter().any(|i| i.eq_ignore_ascii_case(x)))
                    .cloned()
                    .collect();
                if kept.len() == list.len() {
                    return Ok(());
                }
                Some(kept)
            }
            None => None,
        };
        if a.delete || kept.as_ref().is_some_and(Vec::is_empty) {
            if cur.is_none() {
                return Ok(());
            }
            let c = change(None);
            self.hives[i]
                .hive
                .delete_value(&key, name)
                .map_err(|e| self.hive_err(&label, e))?;
            let edit = vmie_hive::Edit::DeleteValue {
                key: key.clone(),
                name: name.to_string(),
            };
            self.note_change(i, c, Some(edit));
            return Ok(());
        }
        let (vtype, data) = match (a.set, a.replace, kept) {
            (Some(set), _, _) => set.encode(),
            (None, None, Some(kept)) => RegData::MultiSz(kept).encode(),
            (None, Some(r), _) => {
                let Some(text) = cur.as_ref().and_then(|(t, d)| windows::sz_text(*t, d)) else {
                    return Ok(());
                };
                if !text.contains(&r.from) {
                    return Ok(());
                }
                let new = text.replace(&r.from, &r.to);
                let vtype = cur.as_ref().map_or(vmie_hive::reg_type::SZ, |(t, _)| *t);
                let mut data: Vec<u8> = new.encode_utf16().flat_map(u16::to_le_bytes).collect();
                data.extend_from_slice(&[0, 0]);
                (vtype, data)
            }
            (None, None, None) => return Ok(()),
        };
        if cur.as_ref() == Some(&(vtype, data.clone())) {
            return Ok(());
        }
        let c = change(Some(windows::reg_text(vtype, &data)));
        let h = &mut self.hives[i].hive;
        let res = h
            .ensure_key(&key)
            .and_then(|_| h.set_value(&key, name, vtype, &data));
        res.map_err(|e| self.hive_err(&label, e))?;
        let edit = vmie_hive::Edit::SetValue {
            key: key.clone(),
            name: name.to_string(),
            vtype,
            data,
        };
        self.note_change(i, c, Some(edit));
        Ok(())
    }

    /// `reg_file`: merge a `.reg` file (relative to the rule pack) into hive `i`.
    fn merge_reg_file(&mut self, i: usize, file: &str) -> Result<(), EngineError> {
        let path = self
            .source
            .parent()
            .map_or_else(|| file.into(), |d| d.join(file));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.rule_err(format!("reg_file {}: {e}", path.display())))?;
        let ops = vmie_hive::parse_reg(&text)
            .map_err(|e| self.rule_err(format!("reg_file {}: {e}", path.display())))?;
        let label = self.hives[i].label.clone();
        // Old values first, for the report; the merge itself is hivexregedit's.
        let mut pending = Vec::new();
        for op in &ops {
            if let vmie_hive::RegOp::Key {
                path: k,
                delete,
                set,
            } = op
            {
                let key = windows::resolve_key(strip_root(k, &label), self.hives[i].ccs.as_deref());
                for (name, vtype, data) in set {
                    let cur = windows::current(&self.hives[i].hive, &key, name)
                        .map_err(|e| self.hive_err(&label, e))?;
                    if cur.as_ref() != Some(&(*vtype, data.clone())) {
                        pending.push((
                            key.clone(),
                            name.clone(),
                            cur,
                            Some((*vtype, data.clone())),
                        ));
                    }
                }
                for name in delete {
                    let cur = windows::current(&self.hives[i].hive, &key, name)
                        .map_err(|e| self.hive_err(&label, e))?;
                    if cur.is_some() {
                        pending.push((key.clone(), name.clone(), cur, None));
                    }
                }
            }
        }
        if pending.is_empty()
            && !ops
                .iter()
                .any(|o| matches!(o, vmie_hive::RegOp::DeleteKey(_)))
        {
            return Ok(());
        }
        let report = vmie_hive::merge(&mut self.hives[i].hive, &text)
            .map_err(|e| self.rule_err(format!("reg_file {}: {e}", path.display())))?;
        for (key, name, old, new) in pending {
            let c = RegChange {
                hive: label.clone(),
                key,
                value: Some(if name.is_empty() { "@".into() } else { name }),
                old: old.map(|(t, d)| windows::reg_text(t, &d)),
                new: new.map(|(t, d)| windows::reg_text(t, &d)),
                rule: self.rule.clone(),
            };
            self.note_change(i, c, None);
        }
        // Every edit of the merge goes to the read-back.
        if let Some(h) = self.hives.get_mut(i) {
            h.edits.extend(report.edits);
            if !h.by.iter().any(|(r, _)| *r == self.rule) {
                h.by.push((self.rule.clone(), self.action));
            }
        }
        Ok(())
    }

    pub(crate) fn bcd(
        &mut self,
        roles: &[BcdRole],
        element: &str,
        boolean: Option<bool>,
        integer: Option<u64>,
        delete: bool,
    ) -> Result<(), EngineError> {
        if self.win.is_none() {
            self.finding(
                Severity::Warning,
                "bcd: not a Windows guest; nothing done".into(),
            );
            return Ok(());
        }
        let code = windows::element_code(element)
            .ok_or_else(|| self.rule_err(format!("unknown BCD element {element:?}")))?;
        let mut found = false;
        let bases: Vec<String> = std::iter::once("/".to_string())
            .chain(
                self.win
                    .iter()
                    .flat_map(|w| w.system_partitions.iter().cloned()),
            )
            .collect();
        let stores: Vec<(String, &str)> = bases
            .iter()
            .flat_map(|b| BCD_STORES.iter().map(move |s| (b.clone(), *s)))
            .collect();
        for (base, store) in stores {
            let Some(path) = self.find_ci_under(GuestPath::from(base.as_str()), store)? else {
                continue;
            };
            let Some(i) = self.open_hive(path, "BCD")? else {
                continue;
            };
            found = true;
            let label = self.hives[i].path.to_string();
            let objects = vmie_hive::bcd::objects(&self.hives[i].hive)
                .map_err(|e| self.hive_err(&label, e))?;
            let mut guids: Vec<String> = Vec::new();
            for role in roles {
                let pick: Vec<String> = match role {
                    BcdRole::Bootmgr => vec![windows::BOOTMGR.to_string()],
                    BcdRole::Emssettings => vec![windows::EMSSETTINGS.to_string()],
                    BcdRole::Loaders => objects
                        .iter()
                        .filter(|o| o.object_type == Some(windows::OS_LOADER_TYPE))
                        .map(|o| o.guid.clone())
                        .collect(),
                    BcdRole::Resume => objects
                        .iter()
                        .filter(|o| o.object_type == Some(windows::RESUME_LOADER_TYPE))
                        .map(|o| o.guid.clone())
                        .collect(),
                    BcdRole::Default => objects
                        .iter()
                        .filter(|o| o.guid.eq_ignore_ascii_case(windows::BOOTMGR))
                        .flat_map(|o| o.elements.iter())
                        .filter(|e| e.code == windows::DEFAULT_OBJECT)
                        .filter_map(|e| match &e.value {
                            vmie_hive::bcd::BcdValue::Object(g) => Some(g.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                for g in pick {
                    // Only objects the store has, by their key's own spelling.
                    if let Some(o) = objects.iter().find(|o| o.guid.eq_ignore_ascii_case(&g)) {
                        if !guids.contains(&o.guid) {
                            guids.push(o.guid.clone());
                        }
                    }
                }
            }
            if guids.is_empty() {
                self.finding(
                    Severity::Info,
                    format!("{label}: no {roles:?} object; left alone"),
                );
            }
            for guid in guids {
                let key = format!("Objects\\{guid}\\Elements\\{code:08x}");
                let cur = windows::current(&self.hives[i].hive, &key, "Element")
                    .map_err(|e| self.hive_err(&label, e))?;
                if delete {
                    let Some((t, d)) = cur else {
                        continue;
                    };
                    self.hives[i]
                        .hive
                        .delete_key(&key)
                        .map_err(|e| self.hive_err(&label, e))?;
                    let c = RegChange {
                        hive: "BCD".into(),
                        key: key.clone(),
                        value: Some("Element".into()),
                        old: Some(windows::reg_text(t, &d)),
                        new: None,
                        rule: self.rule.clone(),
                    };
                    self.note_change(i, c, Some(vmie_hive::Edit::DeleteKey { path: key }));
                    continue;
                }
                let data = match (boolean, integer) {
                    (Some(b), _) => vec![u8::from(b)],
                    (None, Some(n)) => n.to_le_bytes().to_vec(),
                    (None, None) => return Err(self.rule_err("bcd: no value".into())),
                };
                let want = (vmie_hive::reg_type::BINARY, data.clone());
                // An absent boolean is off: nothing to turn off.
                if cur.as_ref() == Some(&want) || (cur.is_none() && boolean == Some(false)) {
                    continue;
                }
                let h = &mut self.hives[i].hive;
                let res = match (boolean, integer) {
                    (Some(b), _) => vmie_hive::bcd::set_boolean(h, &guid, code, b),
                    (None, Some(n)) => vmie_hive::bcd::set_integer(h, &guid, code, n),
                    (None, None) => Ok(()),
                };
                res.map_err(|e| self.hive_err(&label, e))?;
                let c = RegChange {
                    hive: "BCD".into(),
                    key: key.clone(),
                    value: Some("Element".into()),
                    old: cur.map(|(t, d)| windows::reg_text(t, &d)),
                    new: Some(windows::reg_text(want.0, &want.1)),
                    rule: self.rule.clone(),
                };
                let edit = vmie_hive::Edit::SetValue {
                    key,
                    name: "Element".into(),
                    vtype: want.0,
                    data: want.1,
                };
                self.note_change(i, c, Some(edit));
            }
        }
        if !found {
            self.finding(
                Severity::Info,
                format!(
                    "no BCD store ({}) on the Windows volume{}; nothing to change",
                    BCD_STORES.join(", "),
                    if bases.len() > 1 {
                        format!(" or on the system partitions ({})", bases[1..].join(", "))
                    } else {
                        " and no system partition (System Reserved or EFI system partition) holds one".to_string()
                    }
                ),
            );
        }
        Ok(())
    }

    /// Write `data` at `p`: created, or replaced when it differs (the
    /// original kept as `NAME.vmie.bak` when `keep_original`); recorded
    /// either way, nothing done when it is equal.
    fn put_file(
        &mut self,
        p: &GuestPath,
        data: &[u8],
        keep_original: bool,
    ) -> Result<(), EngineError> {
        match self.fs.read_file(p, data.len() as u64 + 1) {
            Ok(cur) if cur == data => Ok(()),
            Ok(_) => {
                let backup = if keep_original {
                    Some(self.backup(p)?.to_string())
                } else {
                    None
                };
                self.fs.replace_file(p, data).map_err(|e| self.fs_err(e))?;
                self.record(
                    p.to_string(),
                    FileOpDone::Modified,
                    backup,
                    "",
                    "",
                    Vec::new(),
                );
                Ok(())
            }
            Err(FsError::NotFound { .. }) => {
                self.fs
                    .create_file(p, data, &vmie_guestfs::NewAttrs::default())
                    .map_err(|e| self.fs_err(e))?;
                self.record(p.to_string(), FileOpDone::Created, None, "", "", Vec::new());
                Ok(())
            }
            Err(e) => Err(self.fs_err(e)),
        }
    }

    /// The hive `<systemroot>/System32/config/<name>`, opened for editing;
    /// when it is missing, an error finding saying that `without` follows.
    fn config_hive(
        &mut self,
        systemroot: &str,
        name: &str,
        without: &str,
    ) -> Result<Option<usize>, EngineError> {
        let config = format!("{systemroot}/System32/config/{name}");
        let Some(path) = self.find_ci(&config)? else {
            self.finding(
                Severity::Error,
                format!("{config}: no {name} hive, so {without}"),
            );
            return Ok(None);
        };
        self.open_hive(path, name)
    }

    /// `--drivers`: stage the driver package files (created, or replaced
    /// when a file of ours there differs; folders made as needed) and add
    /// their folders to SOFTWARE's `DevicePath`, so that Plug and Play
    /// installs a new device's driver from them at first boot. Reported
    /// under the rule id `windows-drivers`.
    pub(crate) fn stage_drivers(&mut self) -> Result<(), EngineError> {
        let Some(win) = self.win else {
            return Ok(());
        };
        self.rule = "windows-drivers".into();
        self.action = "driver_stage";
        for f in &win.drivers {
            let p = GuestPath::from(f.path.as_str());
            let comps = p.components().to_vec();
            let mut cur = GuestPath::root();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                cur = cur.join(c);
                match self.fs.symlink_metadata(&cur) {
                    Ok(m) if m.file_type == FileType::Directory => {}
                    Ok(_) => {
                        return Err(self.fs_err(FsError::NotADirectory {
                            fs: "guest".into(),
                            path: cur.to_string(),
                        }))
                    }
                    Err(FsError::NotFound { .. }) => self
                        .fs
                        .mkdir(&cur, &vmie_guestfs::NewAttrs::default())
                        .map_err(|e| self.fs_err(e))?,
                    Err(e) => return Err(self.fs_err(e)),
                }
            }
            // Our own folder: a differing file there is ours, replaced.
            self.put_file(&p, &f.data, false)?;
        }
        if win.device_path.is_empty() {
            return Ok(());
        }
        self.action = "registry";
        let Some(i) = self.config_hive(
            &win.systemroot,
            "SOFTWARE",
            "the staged drivers cannot be added to DevicePath",
        )?
        else {
            return Ok(());
        };
        let label = self.hives[i].label.clone();
        let key = "Microsoft\\Windows\\CurrentVersion".to_string();
        let cur = windows::current(&self.hives[i].hive, &key, "DevicePath")
            .map_err(|e| self.hive_err(&label, e))?;
        // Windows' own default when the value is absent.
        let text = cur
            .as_ref()
            .and_then(|(t, d)| windows::sz_text(*t, d))
            .unwrap_or_else(|| "%SystemRoot%\\inf".to_string());
        let mut items: Vec<String> = text
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut changed = false;
        for d in &win.device_path {
            if !items.iter().any(|x| x.eq_ignore_ascii_case(d)) {
                items.push(d.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let (vtype, data) = windows::RegData::ExpandSz(items.join(";")).encode();
        let c = RegChange {
            hive: label.clone(),
            key: key.clone(),
            value: Some("DevicePath".into()),
            old: cur.as_ref().map(|(t, d)| windows::reg_text(*t, d)),
            new: Some(windows::reg_text(vtype, &data)),
            rule: self.rule.clone(),
        };
        let h = &mut self.hives[i].hive;
        let res = h
            .ensure_key(&key)
            .and_then(|_| h.set_value(&key, "DevicePath", vtype, &data));
        res.map_err(|e| self.hive_err(&label, e))?;
        let edit = vmie_hive::Edit::SetValue {
            key,
            name: "DevicePath".into(),
            vtype,
            data,
        };
        self.note_change(i, c, Some(edit));
        Ok(())
    }

    /// The device classes (`Control\\Class\\{GUID}` and which list) of
    /// control set `ccs` whose `UpperFilters` or `LowerFilters` name
    /// service `svc`.
    fn filter_users(&mut self, i: usize, ccs: &str, svc: &str) -> Result<Vec<String>, EngineError> {
        let label = self.hives[i].label.clone();
        let pattern = format!("{ccs}\\Control\\Class\\*");
        let keys = windows::expand_key(&self.hives[i].hive, &pattern, MAX_KEYS_PER_ACTION)
            .map_err(|e| self.hive_err(&label, e))?;
        let mut out = Vec::new();
        for k in keys {
            for list in ["UpperFilters", "LowerFilters"] {
                let cur = windows::current(&self.hives[i].hive, &k, list)
                    .map_err(|e| self.hive_err(&label, e))?;
                if cur
                    .as_ref()
                    .and_then(|(t, d)| multi_sz_items(*t, d))
                    .is_some_and(|items| items.iter().any(|x| x.eq_ignore_ascii_case(svc)))
                {
                    let class = k.rsplit('\\').next().unwrap_or_default();
                    out.push(format!("{class} ({list})"));
                }
            }
        }
        Ok(out)
    }

    /// `--drivers`: each boot-start driver of the packages (from its INF)
    /// made loadable by the first boot on the target, the way virt-v2v
    /// installs viostor offline: its file copied to `System32\drivers`, its
    /// service created as a boot-start kernel driver (`StartOverride`
    /// removed), and its hardware ids mapped to the service, in the
    /// `DriverDatabase` (`DeviceIds`, `DriverInfFiles`, `DriverPackages`) when
    /// SYSTEM has one (Windows 8 / Server 2012 and later), else in the
    /// control set's `CriticalDeviceDatabase`. Plug and Play then installs
    /// the package properly from `DevicePath` once Windows runs.
    pub(crate) fn register_boot_drivers(&mut self) -> Result<(), EngineError> {
        let Some(win) = self.win else {
            return Ok(());
        };
        if win.boot_drivers.is_empty() {
            return Ok(());
        }
        self.action = "driver_stage";
        let dir = format!("{}/System32/drivers", win.systemroot);
        let Some(dir) = self.find_ci(&dir)? else {
            self.finding(
                Severity::Error,
                format!("{dir}: no such folder, so the boot-start drivers cannot be installed"),
            );
            return Ok(());
        };
        for d in &win.boot_drivers {
            let p = match self.find_ci_under(dir.clone(), &d.binary)? {
                Some(p) => p,
                None => dir.join(d.binary.as_bytes()),
            };
            // A system driver of that name is the guest's: kept as a backup.
            self.put_file(&p, &d.data, true)?;
        }
        self.action = "registry";
        let Some(i) = self.config_hive(
            &win.systemroot,
            "SYSTEM",
            "the boot-start drivers cannot be registered",
        )?
        else {
            return Ok(());
        };
        let label = self.hives[i].label.clone();
        let ccs = self.hives[i].ccs.clone();
        let Some(ccs) = ccs else {
            self.finding(
                Severity::Error,
                format!("{label}: no current control set (Select\\Current), so the boot-start drivers cannot be registered"),
            );
            return Ok(());
        };
        let ddb = windows::key_exists(&self.hives[i].hive, "DriverDatabase")
            .map_err(|e| self.hive_err(&label, e))?;
        let set = |run: &mut Self, key: String, name: &str, data: RegData| {
            let a = RegistryArgs {
                hive: "SYSTEM",
                key: None,
                value: Some(name),
                set: Some(&data),
                delete: false,
                replace: None,
                remove_items: None,
                only_if: None,
                reg_file: None,
            };
            run.registry_key(i, &label, key, &a)
        };
        for d in &win.boot_drivers {
            let svc = format!("{ccs}\\Services\\{}", d.service);
            set(self, svc.clone(), "Type", RegData::Dword(1))?;
            set(self, svc.clone(), "Start", RegData::Dword(0))?;
            set(
                self,
                svc.clone(),
                "ErrorControl",
                RegData::Dword(d.error_control),
            )?;
            if let Some(g) = &d.group {
                set(self, svc.clone(), "Group", RegData::Sz(g.clone()))?;
            }
            set(
                self,
                svc.clone(),
                "ImagePath",
                RegData::ExpandSz(format!("System32\\drivers\\{}", d.binary)),
            )?;
            let del = RegistryArgs {
                hive: "SYSTEM",
                key: None,
                value: None,
                set: None,
                delete: true,
                replace: None,
                remove_items: None,
                only_if: None,
                reg_file: None,
            };
            self.registry_key(i, &label.clone(), format!("{svc}\\StartOverride"), &del)?;
            let ids: Vec<(&str, &str)> = d
                .hardware_ids
                .iter()
                .filter_map(|id| id.split_once('\\'))
                .filter(|(e, r)| {
                    !(e.is_empty() || r.is_empty() || r.contains(['\\', '*']) || e.contains('*'))
                })
                .collect();
            if ids.is_empty() {
                self.finding(
                    Severity::Warning,
                    format!(
                        "{}: the boot-start driver {} names no hardware id of the form ENUMERATOR\\ID; its service is created, but no device is mapped to it",
                        d.inf, d.service
                    ),
                );
                continue;
            }
            if ddb {
                let guid = guid_bytes(&d.class_guid).ok_or_else(|| {
                    self.rule_err(format!(
                        "{}: ClassGuid {:?} is not a GUID",
                        d.inf, d.class_guid
                    ))
                })?;
                let inf = format!("vmie-{}", d.inf);
                let package = format!("{inf}_{}_0000000000000000", d.arch);
                let conf = format!("vmie_{}", d.service);
                let files = format!("DriverDatabase\\DriverInfFiles\\{inf}");
                set(
                    self,
                    files.clone(),
                    "@",
                    RegData::MultiSz(vec![package.clone()]),
                )?;
                set(self, files.clone(), "Active", RegData::Sz(package.clone()))?;
                set(
                    self,
                    files,
                    "Configurations",
                    RegData::MultiSz(vec![conf.clone()]),
                )?;
                let pkg = format!("DriverDatabase\\DriverPackages\\{package}");
                // The Version layout of real packages (stornvme.inf's in a
                // Windows 10 SYSTEM hive; virt-v2v writes the same): a
                // header, the class GUID, 24 zero bytes.
                let mut version = vec![0x00, 0xff, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
                version.extend_from_slice(&guid);
                version.extend_from_slice(&[0u8; 24]);
                set(self, pkg.clone(), "Version", RegData::Binary(version))?;
                set(self, pkg.clone(), "@", RegData::Sz(inf.clone()))?;
                let c = format!("{pkg}\\Configurations\\{conf}");
                set(self, c.clone(), "ConfigFlags", RegData::Dword(0))?;
                set(self, c, "Service", RegData::Sz(d.service.clone()))?;
                for (e, r) in &ids {
                    set(
                        self,
                        format!("DriverDatabase\\DeviceIds\\{e}\\{r}"),
                        &inf,
                        RegData::Binary(vec![0x01, 0xff, 0x00, 0x00]),
                    )?;
                    set(
                        self,
                        format!("{pkg}\\Descriptors\\{e}\\{r}"),
                        "Configuration",
                        RegData::Sz(conf.clone()),
                    )?;
                }
            } else {
                for (e, r) in &ids {
                    let k = format!("{ccs}\\Control\\CriticalDeviceDatabase\\{e}#{r}");
                    set(self, k.clone(), "Service", RegData::Sz(d.service.clone()))?;
                    set(
                        self,
                        k,
                        "ClassGUID",
                        RegData::Sz(d.class_guid.to_ascii_lowercase()),
                    )?;
                }
            }
            self.finding(
                Severity::Info,
                format!(
                    "boot-start driver {} ({}, {}) installed for {} hardware id(s) in the {}",
                    d.service,
                    d.inf,
                    d.binary,
                    ids.len(),
                    if ddb {
                        "DriverDatabase (Windows 8 / Server 2012 and later)"
                    } else {
                        "CriticalDeviceDatabase (Windows 7 / Server 2008 R2 and earlier)"
                    }
                ),
            );
        }
        Ok(())
    }

    /// Write every changed hive once: read back by nt-hive, original kept as
    /// `NAME.vmie.bak` (never overwritten), one change entry per hive.
    pub(crate) fn flush_hives(&mut self) -> Result<(), EngineError> {
        let hives = std::mem::take(&mut self.hives);
        for h in hives {
            if h.changes.is_empty() && h.edits.is_empty() {
                continue;
            }
            let Some((first, first_action)) = h.by.first().cloned() else {
                continue;
            };
            self.rule = first.clone();
            self.action = first_action;
            let bytes = h.hive.bytes();
            vmie_hive::verify_with_nt_hive(bytes, &h.edits).map_err(|e| {
                self.rule_err(format!(
                    "{}: the edited hive does not read back: {e}",
                    h.path
                ))
            })?;
            let b = self.backup(&h.path)?;
            self.fs
                .replace_file(&h.path, bytes)
                .map_err(|e| self.fs_err(e))?;
            let name = h.path.to_string();
            let (before, after) = windows::reg_texts(&h.changes);
            let steps =
                h.by.iter()
                    .map(|(r, a)| {
                        let mine: Vec<RegChange> =
                            h.changes.iter().filter(|c| &c.rule == r).cloned().collect();
                        let (b, a2) = windows::reg_texts(&mine);
                        Step {
                            rule: r.clone(),
                            action: (*a).to_string(),
                            diff: crate::diff::unified(&name, &b, &a2),
                        }
                    })
                    .collect();
            self.report.changes.push(FileChange {
                rule: first,
                rules: h.by.iter().map(|(r, _)| r.clone()).collect(),
                action: first_action.to_string(),
                path: name.clone(),
                op: FileOpDone::Modified,
                backup: Some(b.to_string()),
                diff: crate::diff::unified(&name, &before, &after),
                lines: Vec::new(),
                steps,
                registry: h.changes,
                before,
                after,
            });
        }
        Ok(())
    }
}

/// A `.reg` key path without its `HKEY_LOCAL_MACHINE\NAME` / `HKLM\NAME` root.
/// A braced GUID's 16 bytes as Windows stores a `GUID` (the first three
/// fields little-endian).
fn guid_bytes(g: &str) -> Option<[u8; 16]> {
    let t = g.trim().strip_prefix('{')?.strip_suffix('}')?;
    let parts: Vec<&str> = t.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if parts.len() != 5
        || parts
            .iter()
            .zip(lens)
            .any(|(p, l)| p.len() != l || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let d1 = u32::from_str_radix(parts[0], 16).ok()?;
    let d2 = u16::from_str_radix(parts[1], 16).ok()?;
    let d3 = u16::from_str_radix(parts[2], 16).ok()?;
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&d1.to_le_bytes());
    out[4..6].copy_from_slice(&d2.to_le_bytes());
    out[6..8].copy_from_slice(&d3.to_le_bytes());
    let tail = format!("{}{}", parts[3], parts[4]);
    for (k, o) in out[8..].iter_mut().enumerate() {
        *o = u8::from_str_radix(tail.get(2 * k..2 * k + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The items of a REG_MULTI_SZ value (up to the empty string that ends
/// the list, as vmie-hive decodes it); `None` for another type.
fn multi_sz_items(vtype: u32, data: &[u8]) -> Option<Vec<String>> {
    let v = vmie_hive::Value {
        name: String::new(),
        vtype,
        data: data.to_vec(),
    };
    match v.decoded() {
        vmie_hive::Decoded::MultiString(items) => Some(items),
        _ => None,
    }
}

/// The service name of a SYSTEM key `<ccs>\\Services\\<name>`.
fn service_of(key: &str, ccs: &str) -> Option<String> {
    let mut parts = key.split('\\');
    let first = parts.next()?;
    let services = parts.next()?;
    let name = parts.next()?;
    (first.eq_ignore_ascii_case(ccs)
        && services.eq_ignore_ascii_case("Services")
        && parts.next().is_none())
    .then(|| name.to_string())
}

fn strip_root<'k>(k: &'k str, hive: &str) -> &'k str {
    let t = k.trim_start_matches('\\');
    for root in ["HKEY_LOCAL_MACHINE\\", "HKLM\\"] {
        let Some(rest) = t
            .get(..root.len())
            .filter(|p| p.eq_ignore_ascii_case(root))
            .and_then(|_| t.get(root.len()..))
        else {
            continue;
        };
        if let Some(after) = rest
            .get(..hive.len())
            .filter(|p| p.eq_ignore_ascii_case(hive))
            .and_then(|_| rest.get(hive.len()..))
        {
            return after.trim_start_matches('\\');
        }
    }
    t
}
