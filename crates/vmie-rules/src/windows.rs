//! Windows rule actions: registry values in a hive under
//! `<systemroot>/System32/config`, and BCD elements on objects chosen by
//! role. Pure parts (value encoding, `.reg` text, key-path and element-name
//! resolution); the engine reads and writes the files.
//!
//! ```toml
//! # Set a value (the key is created when missing):
//! { type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Control\TimeZoneInformation',
//!   value = "RealTimeIsUniversal", set = { dword = 1 } }
//! # Only where the key exists already (else reported and skipped):
//! { type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Services\stornvme',
//!   value = "Start", set = { dword = 0 }, only_if = "present" }
//! # Delete a value; only if it holds 3; only if it is not set yet:
//! { type = "registry", ..., value = "X", delete = true }
//! { type = "registry", ..., value = "X", set = { dword = 1 }, only_if = { equals = { dword = 3 } } }
//! { type = "registry", ..., value = "X", set = { sz = "a" }, only_if = "absent" }
//! # Create a key (no value):
//! { type = "registry", hive = "SOFTWARE", key = 'Vendor\Product' }
//! # A .reg file (path relative to the rule pack), hivexregedit --merge semantics:
//! { type = "registry", hive = "SYSTEM", reg_file = "extra.reg" }
//! # BCD: objects by role (bootmgr, default, loaders, emssettings, resume), element by
//! # name (bootems, ems, bootstatuspolicy) or 8-digit hex code:
//! { type = "bcd", objects = ["loaders"], element = "ems", boolean = false }
//! { type = "bcd", objects = ["default"], element = "bootstatuspolicy", integer = 1 }
//! # Delete an element; the resume-from-hibernation loaders (type 0x10200004):
//! { type = "bcd", objects = ["loaders"], element = "ems", delete = true }
//! { type = "bcd", objects = ["resume"], element = "bootstatuspolicy", integer = 1 }
//! ```
//!
//! Value types: `dword`, `qword`, `sz`, `expand_sz`, `multi_sz` (a list of
//! strings), `binary` (a list of bytes). Key paths are relative to the hive
//! root; in SYSTEM a leading `CurrentControlSet` means the control set
//! `Select\Current` names, and a leading `EveryControlSet` applies the
//! action under every `ControlSetNNN` (the current one and the last known
//! good ones, so a fallback boot has the same fix). A value name `""` or `"@"` is the default value.

use serde::{Deserialize, Serialize};
use vmie_hive::{reg_type, Hive};

/// A value's type and data as a rule writes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RegData {
    /// REG_DWORD.
    Dword(u32),
    /// REG_QWORD.
    Qword(u64),
    /// REG_SZ.
    Sz(String),
    /// REG_EXPAND_SZ.
    ExpandSz(String),
    /// REG_MULTI_SZ.
    MultiSz(Vec<String>),
    /// REG_BINARY.
    Binary(Vec<u8>),
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut out: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    out
}

impl RegData {
    /// Registry type and raw data.
    pub fn encode(&self) -> (u32, Vec<u8>) {
        match self {
            Self::Dword(d) => (reg_type::DWORD, d.to_le_bytes().to_vec()),
            Self::Qword(q) => (reg_type::QWORD, q.to_le_bytes().to_vec()),
            Self::Sz(s) => (reg_type::SZ, utf16z(s)),
            Self::ExpandSz(s) => (reg_type::EXPAND_SZ, utf16z(s)),
            Self::MultiSz(l) => {
                let mut out = Vec::new();
                for s in l {
                    out.extend(utf16z(s));
                }
                out.extend_from_slice(&[0, 0]);
                (reg_type::MULTI_SZ, out)
            }
            Self::Binary(b) => (reg_type::BINARY, b.clone()),
        }
    }
}

/// `only_if` of a registry action.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OnlyIf {
    /// `"present"`: the key exists (it is not created); `"absent"`: the
    /// value is not set yet (an existing value is left alone).
    Word(OnlyIfWord),
    /// `{ equals = { dword = 3 } }`: the value holds exactly this.
    Equals {
        /// The expected current value.
        equals: RegData,
    },
}

/// The word forms of [`OnlyIf`].
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnlyIfWord {
    /// The key exists.
    Present,
    /// The value does not exist.
    Absent,
}

/// Which BCD objects an action changes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BcdRole {
    /// `{bootmgr}` ({9dea862c-5cdd-4e70-acc1-f32b344d4795}).
    Bootmgr,
    /// The OS loader `{bootmgr}`'s element 23000003 (default object) names.
    Default,
    /// Every OS loader (objects of type 0x10200003).
    Loaders,
    /// `{emssettings}` ({0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}).
    Emssettings,
    /// Every resume-from-hibernation loader (objects of type 0x10200004,
    /// what an OS loader's element 23000006 names).
    Resume,
}

/// `{bootmgr}`.
pub const BOOTMGR: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
/// `{emssettings}`.
pub const EMSSETTINGS: &str = "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}";
/// Object type of a Windows OS loader (application, boot, OS loader).
pub const OS_LOADER_TYPE: u32 = 0x1020_0003;
/// Object type of a resume-from-hibernation loader.
pub const RESUME_LOADER_TYPE: u32 = 0x1020_0004;
/// BcdBootMgrObject_DefaultObject.
pub const DEFAULT_OBJECT: u32 = 0x2300_0003;

/// Element names a rule may use, with their codes (bcdedit's names).
pub const ELEMENT_NAMES: &[(&str, u32)] = &[
    // BcdLibraryBoolean_EmsEnabled ({bootmgr} bootems; also in {emssettings}).
    ("bootems", 0x1600_0020),
    // BcdOSLoaderBoolean_EmsEnabled (bcdedit /ems {id}).
    ("ems", 0x2600_00b0),
    // BcdOSLoaderInteger_BootStatusPolicy.
    ("bootstatuspolicy", 0x2500_00e0),
];

/// An element code from its name or 8 hex digits.
pub fn element_code(name: &str) -> Option<u32> {
    ELEMENT_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
        .or_else(|| {
            (name.len() == 8)
                .then(|| u32::from_str_radix(name, 16).ok())
                .flatten()
        })
}

/// A hive file name a rule may name: letters, digits and `_` (SYSTEM,
/// SOFTWARE, DEFAULT, ...), nothing that walks out of the config directory.
pub fn valid_hive_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.contains("..")
}

/// The hive key path for a rule's `key`: backslashes, no leading one, and in
/// SYSTEM `CurrentControlSet` replaced by `ccs` (from `Select\Current`).
pub fn resolve_key(key: &str, ccs: Option<&str>) -> String {
    let k = key.replace('/', "\\");
    let k = k.trim_matches('\\');
    let mut parts: Vec<&str> = k.split('\\').filter(|p| !p.is_empty()).collect();
    if let (Some(first), Some(c)) = (parts.first_mut(), ccs) {
        if first.eq_ignore_ascii_case("CurrentControlSet") {
            *first = c;
        }
    }
    parts.join("\\")
}

/// A value name as the hive API takes it (`@` is the default value).
pub fn value_name(v: &str) -> &str {
    if v == "@" {
        ""
    } else {
        v
    }
}

/// `.reg` text for one value's data, as hivexregedit writes it.
pub fn reg_text(vtype: u32, data: &[u8]) -> String {
    vmie_hive::export::format_data(vtype, data)
}

/// The current value `name` of the key at `path`: `Ok(None)` when the key
/// or the value does not exist.
pub fn current(hive: &Hive, path: &str, name: &str) -> vmie_hive::Result<Option<(u32, Vec<u8>)>> {
    let k = match hive.open_key(path) {
        Ok(k) => k,
        Err(vmie_hive::HiveError::KeyNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(hive.get_value(k, name)?.map(|v| (v.vtype, v.data)))
}

/// A key path that starts with `EveryControlSet`: the rest of it (which
/// the action applies under each `ControlSetNNN` of SYSTEM).
pub fn every_control_set(path: &str) -> Option<&str> {
    let (first, rest) = path.split_once('\\').unwrap_or((path, ""));
    first
        .eq_ignore_ascii_case("EveryControlSet")
        .then_some(rest)
}

/// The control sets of a SYSTEM hive: its root keys `ControlSetNNN`.
pub fn control_sets(hive: &Hive) -> vmie_hive::Result<Vec<String>> {
    let root = hive.open_key("")?;
    let mut out = Vec::new();
    for sub in hive.subkeys(root)? {
        let name = hive.key_name(sub)?;
        let is_cs = name.len() == 13
            && name
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("ControlSet"))
            && name.bytes().skip(10).all(|b| b.is_ascii_digit());
        if is_cs {
            out.push(name);
        }
    }
    Ok(out)
}

/// The existing keys a key path with `*` components names (each `*`
/// matches every subkey, in the hive's order), at most `cap`; a path
/// without `*` is returned as it is.
pub fn expand_key(hive: &Hive, path: &str, cap: usize) -> vmie_hive::Result<Vec<String>> {
    if !path.split('\\').any(|c| c == "*") {
        return Ok(vec![path.to_string()]);
    }
    let mut found: Vec<String> = vec![String::new()];
    for comp in path.split('\\').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &found {
            if comp == "*" {
                let k = match hive.open_key(base) {
                    Ok(k) => k,
                    Err(vmie_hive::HiveError::KeyNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                };
                for sub in hive.subkeys(k)? {
                    let name = hive.key_name(sub)?;
                    next.push(if base.is_empty() {
                        name
                    } else {
                        format!("{base}\\{name}")
                    });
                    if next.len() > cap {
                        return Ok(next.into_iter().take(cap).collect());
                    }
                }
            } else {
                next.push(if base.is_empty() {
                    comp.to_string()
                } else {
                    format!("{base}\\{comp}")
                });
            }
        }
        found = next;
    }
    let mut out = Vec::new();
    for k in found {
        if key_exists(hive, &k)? {
            out.push(k);
        }
    }
    Ok(out)
}

/// `replace` of a registry action: every `from` in a string value becomes
/// `to`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegReplace {
    /// The text to find (non-empty).
    pub from: String,
    /// What replaces it.
    pub to: String,
}

/// The text of a REG_SZ / REG_EXPAND_SZ value's data (UTF-16LE, up to the
/// first NUL); `None` for another type or data that is not UTF-16.
pub fn sz_text(vtype: u32, data: &[u8]) -> Option<String> {
    if vtype != reg_type::SZ && vtype != reg_type::EXPAND_SZ {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// Whether the key at `path` exists.
pub fn key_exists(hive: &Hive, path: &str) -> vmie_hive::Result<bool> {
    match hive.open_key(path) {
        Ok(_) => Ok(true),
        Err(vmie_hive::HiveError::KeyNotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One registry value (or key) a run changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegChange {
    /// The hive (`SYSTEM`, `SOFTWARE`, `BCD`).
    pub hive: String,
    /// Key path from the hive root (control set resolved).
    pub key: String,
    /// Value name (`@` is the default value); `null` for a key alone: a
    /// created key (`old` and `new` null) or a deleted one (`old` is
    /// `"(key)"`, `new` null).
    pub value: Option<String>,
    /// Data before, as `.reg` text (`dword:00000001`, `hex(1):…`); `null`: absent.
    pub old: Option<String>,
    /// Data after, as `.reg` text; `null`: deleted.
    pub new: Option<String>,
    /// The rule that made it.
    pub rule: String,
}

impl RegChange {
    /// `.reg`-style lines: `[key]` and the value line (`-` for a deletion).
    pub fn reg_lines(&self, data: Option<&str>) -> String {
        // Where regedit mounts the hive: HKLM\SYSTEM, HKLM\BCD00000000.
        let mount = if self.hive == "BCD" {
            "BCD00000000"
        } else {
            &self.hive
        };
        let mut s = format!("[HKEY_LOCAL_MACHINE\\{mount}\\{}]\n", self.key);
        if let Some(v) = &self.value {
            let name = if v.is_empty() || v == "@" {
                "@".to_string()
            } else {
                format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
            };
            match data {
                Some(d) => s.push_str(&format!("{name}={d}\n")),
                None => s.push_str(&format!("{name}=-\n")),
            }
        }
        s
    }
}

/// The before and after `.reg` texts of a list of changes (each key/value
/// once: its first old and its last new data).
pub fn reg_texts(changes: &[RegChange]) -> (String, String) {
    // (key, value, first old, last new)
    type Seen<'c> = (&'c str, Option<&'c str>, Option<&'c str>, Option<&'c str>);
    let mut seen: Vec<Seen<'_>> = Vec::new();
    for c in changes {
        match seen
            .iter_mut()
            .find(|s| s.0 == c.key && s.1 == c.value.as_deref())
        {
            Some(s) => s.3 = c.new.as_deref(),
            None => seen.push((
                &c.key,
                c.value.as_deref(),
                c.old.as_deref(),
                c.new.as_deref(),
            )),
        }
    }
    let (mut before, mut after) = (String::new(), String::new());
    for (key, value, old, new) in seen {
        let c = RegChange {
            hive: changes.first().map(|c| c.hive.clone()).unwrap_or_default(),
            key: key.to_string(),
            value: value.map(str::to_string),
            old: None,
            new: None,
            rule: String::new(),
        };
        if value.is_none() {
            if old.is_some() && new.is_none() {
                // A deleted key: .reg writes `[-KEY]`.
                before.push_str(&c.reg_lines(None));
                before.push('\n');
                after.push_str(&c.reg_lines(None).replacen('[', "[-", 1));
            } else {
                // A created key: absent before.
                after.push_str(&c.reg_lines(None));
            }
            after.push('\n');
            continue;
        }
        if old.is_some() {
            before.push_str(&c.reg_lines(old));
            before.push('\n');
        }
        after.push_str(&c.reg_lines(new));
        after.push('\n');
    }
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_types_like_regedit() {
        assert_eq!(RegData::Dword(1).encode(), (4, vec![1, 0, 0, 0]));
        assert_eq!(RegData::Sz("a".into()).encode(), (1, vec![b'a', 0, 0, 0]));
        assert_eq!(
            RegData::MultiSz(vec!["a".into(), "b".into()]).encode(),
            (7, vec![b'a', 0, 0, 0, b'b', 0, 0, 0, 0, 0])
        );
        assert_eq!(reg_text(4, &[1, 0, 0, 0]), "dword:00000001");
    }

    #[test]
    fn resolves_current_control_set_and_element_names() {
        assert_eq!(
            resolve_key("\\CurrentControlSet\\Services\\x", Some("ControlSet002")),
            "ControlSet002\\Services\\x"
        );
        assert_eq!(resolve_key("Select", Some("ControlSet001")), "Select");
        assert_eq!(element_code("EMS"), Some(0x2600_00b0));
        assert_eq!(element_code("250000e0"), Some(0x2500_00e0));
        assert_eq!(element_code("nonsense"), None);
        assert!(valid_hive_name("SYSTEM"));
        assert!(!valid_hive_name("../SAM"));
    }
}
