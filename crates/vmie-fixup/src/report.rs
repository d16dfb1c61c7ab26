//! The run report: what `--format json` prints (schema in
//! `schemas/report.schema.json`, versioned by `schema_version`).

use serde::Serialize;
use serde_json::{json, Value};
use vmie_inspect::{LinuxGuest, WindowsGuest};
use vmie_rules::engine::{FileChange, FileOpDone, Severity};

/// JSON schema version of the run report. Fields are only ever added within
/// a version.
pub const SCHEMA_VERSION: u32 = 1;

/// The run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the changes were written.
    pub applied: bool,
    /// The guests found, with virt-inspector's field names.
    pub operating_systems: Vec<Value>,
    /// Preflight checks, then the rules' findings.
    pub preflight: Vec<Check>,
    /// One entry per changed file.
    pub changes: Vec<ChangeEntry>,
    /// The undo journals written by the commit.
    pub undo_journal: Vec<String>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            dry_run: false,
            applied: false,
            operating_systems: Vec::new(),
            preflight: Vec::new(),
            changes: Vec::new(),
            undo_journal: Vec::new(),
        }
    }
}

/// A preflight check's result, or a rule's finding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Check id or rule id.
    pub id: String,
    /// How bad.
    pub severity: Severity,
    /// What, in the import service's words where it has them.
    pub message: String,
    /// A rule's finding rather than a preflight check (`id` is the rule's).
    #[serde(skip)]
    pub from_rule: bool,
}

/// One changed file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChangeEntry {
    /// The first rule that changed it.
    pub rule: String,
    /// Every rule that changed it, in order.
    pub rules: Vec<String>,
    /// The file (for a rename, its old name).
    pub path: String,
    /// The first rule's action type.
    pub action: String,
    /// What happened (`op`: modified, created, removed, renamed with `to`).
    #[serde(flatten)]
    pub op: FileOpDone,
    /// Where the original is kept.
    pub backup: Option<String>,
    /// Unified diff from the original to the final text.
    pub diff: String,
    /// Each rule's own change.
    pub steps: Vec<Step>,
    /// For a hive or BCD store: every value set or deleted (not in the JSON
    /// of a text file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<vmie_rules::windows::RegChange>,
}

/// One rule's change to a file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    /// Rule id.
    pub rule: String,
    /// Action type.
    pub action: String,
    /// This step's diff.
    pub diff: String,
}

impl From<&FileChange> for ChangeEntry {
    fn from(c: &FileChange) -> Self {
        Self {
            rule: c.rule.clone(),
            rules: c.rules.clone(),
            path: c.path.clone(),
            action: c.action.clone(),
            op: c.op.clone(),
            backup: c.backup.clone(),
            diff: c.diff.clone(),
            steps: c
                .steps
                .iter()
                .map(|s| Step {
                    rule: s.rule.clone(),
                    action: s.action.clone(),
                    diff: s.diff.clone(),
                })
                .collect(),
            registry: c.registry.clone(),
        }
    }
}

/// `operating_systems` entry of a Linux guest (virt-inspector names).
pub fn os_json(guest: &LinuxGuest) -> Value {
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

/// libosinfo short id of a Windows guest (`win10`, `win2k19`, ...).
pub fn win_osinfo(info: &vmie_win::WindowsInfo) -> Option<String> {
    vmie_os::windows_osinfo(
        info.product_name.as_deref(),
        info.product_variant.as_deref(),
        info.major_version,
        info.minor_version,
        info.build_id.as_deref(),
    )
}

/// `operating_systems` entry of a Windows guest (virt-inspector names:
/// `type`, `root`, `distro`, `product_name`, `product_variant`,
/// `major_version`, `minor_version`, `arch`, `hostname`, `osinfo`,
/// `windows_systemroot`, `windows_current_control_set`, `drive_mappings`).
pub fn win_os_json(guest: &WindowsGuest) -> Value {
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
        m.insert("osinfo".into(), json!(win_osinfo(&guest.info)));
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
