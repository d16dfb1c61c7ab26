//! Rule packs: TOML files declaring which fixups apply to which guests.
//!
//! ```toml
//! [[rule]]
//! id = "linux-fstab"
//! description = "Name filesystems by UUID, skip missing disks, disable network mounts"
//! when = { os = "linux", distro = ["debian", "ubuntu"], version = ">=9, <13", file_exists = "/etc/fstab" }
//! actions = [{ type = "fstab" }]
//! ```
//!
//! Unknown keys, wrong types and unknown action types are load errors that
//! name the file, line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Rule-pack errors.
#[derive(Debug, Error)]
pub enum RuleError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid rule pack.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Two rules share an id.
    #[error("{path}: rule id {id:?} is already defined in {first}")]
    Duplicate {
        /// The file with the second definition.
        path: String,
        /// The id.
        id: String,
        /// The file with the first.
        first: String,
    },
}

/// A rule pack file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Pack {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique id, e.g. `linux-fstab`.
    pub id: String,
    /// What it does and why, for `rules list` and the report.
    pub description: String,
    /// When it applies; empty means always.
    #[serde(default)]
    pub when: When,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// The file it came from (set by the loader).
    #[serde(skip)]
    pub source: PathBuf,
}

/// Predicates over inspection facts; every one given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// `linux` or `windows`.
    pub os: Option<OsType>,
    /// Distro ids (virt-inspector names: debian, ubuntu, rhel, centos, ...).
    pub distro: Option<Vec<String>>,
    /// Version range, e.g. `">=7, <9"`; compared as major.minor.
    pub version: Option<VersionReq>,
    /// Bootloaders (grub2, grub, bls, ...).
    pub bootloader: Option<Vec<String>>,
    /// Network stacks in use (ifcfg, suse-ifcfg, ifupdown, netplan, networkmanager, networkd).
    pub network_stack: Option<Vec<String>>,
    /// A path that must exist in the guest.
    pub file_exists: Option<String>,
    /// Windows product variants (`client`, `server`; virt-inspector's
    /// `product_variant`, matched case-insensitively by its first word).
    pub variant: Option<Vec<String>>,
    /// Windows build number range, e.g. `">=9600"` (8.1 / 2012 R2 and
    /// later), `"<22000"`.
    pub build: Option<VersionReq>,
    /// Architectures (`x86_64`, `i386`, `aarch64`).
    pub arch: Option<Vec<String>>,
    /// Firmware the guest boots with (`bios`, `uefi`).
    pub firmware: Option<Vec<String>>,
    /// Windows service (or driver) keys that must exist in SYSTEM's
    /// current control set (`stornvme`, `xenvbd`); every one listed.
    pub service_exists: Option<Vec<String>>,
}

/// Operating system type.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

/// A version requirement: comma-separated comparisons (`>=7, <9.2`, `=8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct VersionReq {
    text: String,
    /// (comparison, major, minor if given)
    terms: Vec<(Cmp, u32, Option<u32>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl From<VersionReq> for String {
    fn from(v: VersionReq) -> Self {
        v.text
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_version(s: &str) -> Option<(u32, Option<u32>)> {
    let mut it = s.trim().splitn(2, '.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    Some((major, minor))
}

impl VersionReq {
    /// Parse `>=7, <9.2`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',') {
            let p = part.trim();
            let (cmp, rest) = if let Some(r) = p.strip_prefix(">=") {
                (Cmp::Ge, r)
            } else if let Some(r) = p.strip_prefix("<=") {
                (Cmp::Le, r)
            } else if let Some(r) = p.strip_prefix('>') {
                (Cmp::Gt, r)
            } else if let Some(r) = p.strip_prefix('<') {
                (Cmp::Lt, r)
            } else if let Some(r) = p.strip_prefix('=') {
                (Cmp::Eq, r)
            } else {
                (Cmp::Eq, p)
            };
            let v = parse_version(rest).ok_or_else(|| {
                format!("bad version {rest:?} in {text:?} (want e.g. \">=7, <9.2\")")
            })?;
            terms.push((cmp, v.0, v.1));
        }
        Ok(Self {
            text: text.to_string(),
            terms,
        })
    }

    /// Whether `(major, minor)` satisfies every comparison.
    pub fn matches(&self, v: (u32, u32)) -> bool {
        self.terms.iter().all(|&(c, major, minor)| {
            // `8` means any 8.x: compare majors only when no minor is given.
            let ord = match minor {
                Some(m) => v.cmp(&(major, m)),
                None => v.0.cmp(&major),
            };
            match c {
                Cmp::Lt => ord.is_lt(),
                Cmp::Le => ord.is_le(),
                Cmp::Eq => ord.is_eq(),
                Cmp::Ge => ord.is_ge(),
                Cmp::Gt => ord.is_gt(),
            }
        })
    }
}

impl<'de> Deserialize<'de> for VersionReq {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One action of a rule. Each names a module in this crate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Rewrite /etc/fstab for the cloud (see [`crate::fstab`]).
    Fstab {
        /// The file (default /etc/fstab).
        #[serde(default = "default_fstab")]
        path: String,
    },
    /// Set or unset shell variables in a shell-style file.
    Shellvars {
        /// The file.
        path: String,
        /// Variables to set.
        #[serde(default)]
        set: BTreeMap<String, String>,
        /// Variables to remove.
        #[serde(default)]
        unset: Vec<String>,
    },
    /// Edit every kernel command line.
    KernelArgs {
        /// Tokens to add (`console=ttyS0`).
        #[serde(default)]
        add: Vec<String>,
        /// Tokens to remove, by name (`rhgb`, `console`).
        #[serde(default)]
        remove: Vec<String>,
        /// Also name the `root=` and `resume=` devices by UUID when they
        /// name a device the cloud renames (`/dev/sda1`).
        #[serde(default)]
        root_by_uuid: bool,
    },
    /// Boot the newest installed kernel by default, with this timeout.
    Grub {
        /// Menu timeout in seconds.
        #[serde(default = "default_timeout")]
        timeout: u32,
    },
    /// Static addressing to DHCP on every network stack.
    Network {},
    /// Report kernels whose initramfs lacks these drivers.
    InitramfsCheck {
        /// Module names, e.g. `nvme`, `ena`, `xen-blkfront`.
        drivers: Vec<String>,
    },
    /// Add these drivers, from the guest's own modules, to every kernel's
    /// initramfs that lacks them (an archive appended to the image; the
    /// original is kept as the backup), and to the initramfs generator's
    /// configuration so that a rebuild keeps them.
    InitramfsDrivers {
        /// Module names, e.g. `nvme`, `xen-blkfront`, `virtio_blk`.
        drivers: Vec<String>,
    },
    /// Rename, remove or write a file.
    File {
        /// What to do.
        op: FileOp,
        /// The file.
        path: String,
        /// New name (rename).
        to: Option<String>,
        /// Contents (write).
        contents: Option<String>,
    },
    /// Windows: set, delete or guard registry values, or create keys, in a
    /// hive under `<systemroot>/System32/config` (see [`crate::windows`]).
    Registry {
        /// The hive file's name: `SYSTEM`, `SOFTWARE`, ...
        hive: String,
        /// Key path from the hive root; `CurrentControlSet` allowed in SYSTEM.
        #[serde(default)]
        key: Option<String>,
        /// Value name (`@` for the default value).
        #[serde(default)]
        value: Option<String>,
        /// New type and data, e.g. `{ dword = 1 }`.
        #[serde(default)]
        set: Option<crate::windows::RegData>,
        /// Delete the value, or without `value` the key (with its subkeys).
        #[serde(default)]
        delete: bool,
        /// Replace text in a string value: `{ from = "Active=FALSE", to =
        /// "Active=TRUE" }` (values of other types are left alone).
        #[serde(default)]
        replace: Option<crate::windows::RegReplace>,
        /// Take these items (matched without regard to case) out of a
        /// REG_MULTI_SZ value, e.g. a filter driver out of a device class's
        /// `LowerFilters`; a list left empty is deleted.
        #[serde(default)]
        remove_items: Option<Vec<String>>,
        /// Condition: `"present"` (the key exists), `"absent"` (the value is
        /// not set), `{ equals = { dword = 3 } }`.
        #[serde(default)]
        only_if: Option<crate::windows::OnlyIf>,
        /// A `.reg` file to merge (relative to the rule pack's directory).
        #[serde(default)]
        reg_file: Option<String>,
    },
    /// Windows: set a boolean or integer element on BCD objects chosen by
    /// role, in every BCD store the Windows volume holds.
    Bcd {
        /// `bootmgr`, `default`, `loaders`, `emssettings`, `resume`.
        objects: Vec<crate::windows::BcdRole>,
        /// Element name (`bootems`, `ems`, `bootstatuspolicy`) or 8 hex digits.
        element: String,
        /// A boolean element's value.
        #[serde(default)]
        boolean: Option<bool>,
        /// An integer element's value.
        #[serde(default)]
        integer: Option<u64>,
        /// Delete the element (where an object has it).
        #[serde(default)]
        delete: bool,
    },
    /// Regular-expression replacement in a file: the escape hatch.
    RegexEdit {
        /// The file.
        path: String,
        /// Pattern.
        pattern: String,
        /// Replacement (`$1` for groups).
        replace: String,
    },
}

fn default_fstab() -> String {
    "/etc/fstab".into()
}

fn default_timeout() -> u32 {
    1
}

/// File operations.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// Rename `path` to `to`.
    Rename,
    /// Remove `path`.
    Remove,
    /// Write `contents` to `path`.
    Write,
}

impl Action {
    /// The action's type name as written in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fstab { .. } => "fstab",
            Self::Shellvars { .. } => "shellvars",
            Self::KernelArgs { .. } => "kernel_args",
            Self::Grub { .. } => "grub",
            Self::Network {} => "network",
            Self::InitramfsCheck { .. } => "initramfs_check",
            Self::InitramfsDrivers { .. } => "initramfs_drivers",
            Self::File { .. } => "file",
            Self::RegexEdit { .. } => "regex_edit",
            Self::Registry { .. } => "registry",
            Self::Bcd { .. } => "bcd",
        }
    }

    /// Parameter combinations serde cannot check: `Err` says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Registry {
                hive,
                key,
                value,
                set,
                delete,
                replace,
                remove_items,
                only_if,
                reg_file,
            } => {
                if !crate::windows::valid_hive_name(hive) {
                    return Err(format!(
                        "registry: bad hive name {hive:?} (want e.g. SYSTEM)"
                    ));
                }
                if reg_file.is_some() {
                    if key.is_some()
                        || value.is_some()
                        || set.is_some()
                        || *delete
                        || replace.is_some()
                        || remove_items.is_some()
                        || only_if.is_some()
                    {
                        return Err(
                            "registry: reg_file takes no key, value, set, delete or only_if".into(),
                        );
                    }
                    return Ok(());
                }
                if key.is_none() {
                    return Err("registry: needs `key` (or `reg_file`)".into());
                }
                let wild = key
                    .as_deref()
                    .is_some_and(|k| k.split('\\').any(|c| c == "*"));
                if let Some(r) = replace {
                    if r.from.is_empty() {
                        return Err("registry: replace.from is empty".into());
                    }
                }
                if let Some(items) = remove_items {
                    if items.is_empty() || items.iter().any(String::is_empty) {
                        return Err("registry: remove_items needs non-empty items".into());
                    }
                    return if value.is_some() && set.is_none() && !*delete && replace.is_none() {
                        Ok(())
                    } else {
                        Err("registry: remove_items needs `value` and no `set`, `replace` or `delete`".into())
                    };
                }
                match (value, set, delete, replace) {
                    (Some(_), Some(_), false, None)
                    | (Some(_), None, true, None)
                    | (Some(_), None, false, Some(_)) => Ok(()),
                    (None, None, true, None) => match only_if {
                        None => Ok(()),
                        Some(_) => Err("registry: only_if needs a value".into()),
                    },
                    (None, None, false, None) if !wild => match only_if {
                        None => Ok(()),
                        Some(_) => Err("registry: only_if needs a value".into()),
                    },
                    _ => Err("registry: give `value` with exactly one of `set`, `replace` or `delete = true`; without `value`, `delete = true` deletes the key and nothing creates it (a key with `*` is never created)".into()),
                }
            }
            Self::Bcd {
                objects,
                element,
                boolean,
                integer,
                delete,
            } => {
                let Some(code) = crate::windows::element_code(element) else {
                    return Err(format!(
                        "bcd: unknown element {element:?} (a name like bootems, or 8 hex digits)"
                    ));
                };
                if objects.is_empty() {
                    return Err("bcd: `objects` is empty".into());
                }
                if *delete {
                    return if boolean.is_none() && integer.is_none() {
                        Ok(())
                    } else {
                        Err("bcd: `delete = true` takes no `boolean` or `integer`".into())
                    };
                }
                match (boolean, integer, vmie_hive::bcd::element_format(code)) {
                    (Some(_), None, 6) | (None, Some(_), 5) => Ok(()),
                    _ => Err(format!("bcd: element {code:08x} needs `boolean` (format 6) or `integer` (format 5), matching its format")),
                }
            }
            // Inspection reports (and a fix run reads an initramfs until it
            // has seen) exactly these drivers, so a rule can ask only
            // about them.
            Self::InitramfsCheck { drivers } | Self::InitramfsDrivers { drivers } => {
                let known = vmie_os::initramfs::DRIVERS;
                if drivers.is_empty() {
                    return Err(format!("{}: `drivers` is empty", self.name()));
                }
                match drivers
                    .iter()
                    .find(|d| !known.contains(&d.replace('-', "_").as_str()))
                {
                    Some(d) => Err(format!(
                        "{}: {d:?} is not a driver vmie-fixup checks for (known: {})",
                        self.name(),
                        known.join(", ")
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// What a guest is, for `when` predicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// OS type.
    pub os: Option<OsType>,
    /// Distro id.
    pub distro: Option<String>,
    /// Major and minor version.
    pub version: Option<(u32, u32)>,
    /// Bootloader.
    pub bootloader: Option<String>,
    /// Network stacks in use.
    pub network_stacks: Vec<String>,
    /// Windows product variant (`Client`, `Server`, `Server Core`, ...).
    pub variant: Option<String>,
    /// Windows build number.
    pub build: Option<u32>,
    /// Architecture.
    pub arch: Option<String>,
    /// `bios` or `uefi`.
    pub firmware: Option<String>,
    /// Windows service keys in the current control set.
    pub services: Vec<String>,
}

impl When {
    /// Whether the predicates hold for `facts`; `exists` answers `file_exists`.
    pub fn holds(&self, facts: &Facts, exists: &dyn Fn(&str) -> bool) -> bool {
        let one_of = |list: &Option<Vec<String>>, v: Option<&String>| match list {
            None => true,
            Some(l) => v.is_some_and(|v| l.iter().any(|x| x.eq_ignore_ascii_case(v))),
        };
        self.os.is_none_or(|o| facts.os == Some(o))
            && one_of(&self.distro, facts.distro.as_ref())
            && self
                .version
                .as_ref()
                .is_none_or(|r| facts.version.is_some_and(|v| r.matches(v)))
            && one_of(&self.bootloader, facts.bootloader.as_ref())
            && self.network_stack.as_ref().is_none_or(|l| {
                facts
                    .network_stacks
                    .iter()
                    .any(|s| l.iter().any(|x| x.eq_ignore_ascii_case(s)))
            })
            && self.file_exists.as_ref().is_none_or(|p| exists(p))
            && self.variant.as_ref().is_none_or(|l| {
                facts.variant.as_ref().is_some_and(|v| {
                    let first = v.split_whitespace().next().unwrap_or_default();
                    l.iter().any(|x| x.eq_ignore_ascii_case(first))
                })
            })
            && self
                .build
                .as_ref()
                .is_none_or(|r| facts.build.is_some_and(|b| r.matches((b, 0))))
            && one_of(&self.arch, facts.arch.as_ref())
            && one_of(&self.firmware, facts.firmware.as_ref())
            && self.service_exists.as_ref().is_none_or(|l| {
                l.iter()
                    .all(|x| facts.services.iter().any(|s| s.eq_ignore_ascii_case(x)))
            })
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parse one rule pack from `text` (named `path` in errors).
pub fn parse_pack(path: &Path, text: &str) -> Result<Vec<Rule>, RuleError> {
    let pack: Pack = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        RuleError::Invalid {
            path: path.display().to_string(),
            line,
            column,
            message: e.message().to_string(),
        }
    })?;
    let mut rules = pack.rule;
    for r in &mut rules {
        r.source = path.to_path_buf();
        if let Some(why) = r.actions.iter().find_map(|a| a.check().err()) {
            let (line, column) = text
                .find(&format!("id = \"{}\"", r.id))
                .map_or((1, 1), |o| line_col(text, o));
            return Err(RuleError::Invalid {
                path: path.display().to_string(),
                line,
                column,
                message: format!("rule {}: {why}", r.id),
            });
        }
        if r.id.trim().is_empty() || r.id.contains(char::is_whitespace) {
            let (line, column) = text
                .find(&format!("id = \"{}\"", r.id))
                .map_or((1, 1), |o| line_col(text, o));
            return Err(RuleError::Invalid {
                path: path.display().to_string(),
                line,
                column,
                message: format!("rule id {:?} must be non-empty and without spaces", r.id),
            });
        }
    }
    Ok(rules)
}

/// Load every `*.toml` in `dirs` (in name order within a directory, the
/// directories in the order given). Rule ids are unique across all of them.
pub fn load_dirs(dirs: &[PathBuf]) -> Result<Vec<Rule>, RuleError> {
    let mut all: Vec<Rule> = Vec::new();
    for dir in dirs {
        let rd = std::fs::read_dir(dir).map_err(|e| RuleError::Read {
            path: dir.display().to_string(),
            source: e,
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| RuleError::Read {
                path: f.display().to_string(),
                source: e,
            })?;
            for r in parse_pack(&f, &text)? {
                if let Some(first) = all.iter().find(|x| x.id == r.id) {
                    return Err(RuleError::Duplicate {
                        path: f.display().to_string(),
                        id: r.id.clone(),
                        first: first.source.display().to_string(),
                    });
                }
                all.push(r);
            }
        }
    }
    Ok(all)
}

/// The rule packs shipped in the repository's `rules/`, built into the
/// binary so it works from anywhere.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "rules/linux.toml",
        include_str!("../../../rules/linux.toml"),
    ),
    (
        "rules/windows.toml",
        include_str!("../../../rules/windows.toml"),
    ),
];

/// Parse the shipped packs.
pub fn shipped() -> Result<Vec<Rule>, RuleError> {
    let mut all = Vec::new();
    for (name, text) in SHIPPED {
        all.extend(parse_pack(Path::new(name), text)?);
    }
    Ok(all)
}

/// The shipped packs (unless `no_default`), then every pack in `dirs`; ids
/// must be unique across all of them.
pub fn load(no_default: bool, dirs: &[PathBuf]) -> Result<Vec<Rule>, RuleError> {
    let mut all = if no_default { Vec::new() } else { shipped()? };
    for r in load_dirs(dirs)? {
        if let Some(first) = all.iter().find(|x| x.id == r.id) {
            return Err(RuleError::Duplicate {
                path: r.source.display().to_string(),
                id: r.id.clone(),
                first: first.source.display().to_string(),
            });
        }
        all.push(r);
    }
    Ok(all)
}
