//! Typed registry reads that never fail: a missing key or value is `None`,
//! anything unreadable or of the wrong type is `None` plus a warning.

use vmie_hive::{reg_type, Decoded, Hive, HiveError, KeyId, Value};

/// A hive being read, collecting warnings.
pub(crate) struct Reg<'h> {
    pub(crate) hive: &'h Hive,
    /// Short name for messages (`SOFTWARE`, `SYSTEM`, `BCD`).
    pub(crate) label: &'static str,
    /// Most subkeys / values considered in one key.
    pub(crate) max_entries: usize,
    pub(crate) warnings: Vec<String>,
}

fn type_name(t: u32) -> String {
    match t {
        reg_type::NONE => "REG_NONE".into(),
        reg_type::SZ => "REG_SZ".into(),
        reg_type::EXPAND_SZ => "REG_EXPAND_SZ".into(),
        reg_type::BINARY => "REG_BINARY".into(),
        reg_type::DWORD => "REG_DWORD".into(),
        reg_type::DWORD_BIG_ENDIAN => "REG_DWORD_BIG_ENDIAN".into(),
        reg_type::LINK => "REG_LINK".into(),
        reg_type::MULTI_SZ => "REG_MULTI_SZ".into(),
        reg_type::QWORD => "REG_QWORD".into(),
        other => format!("type {other}"),
    }
}

impl<'h> Reg<'h> {
    pub(crate) fn new(hive: &'h Hive, label: &'static str, max_entries: usize) -> Self {
        Reg {
            hive,
            label,
            max_entries,
            warnings: Vec::new(),
        }
    }

    pub(crate) fn warn(&mut self, msg: impl Into<String>) {
        self.warnings
            .push(format!("{}: {}", self.label, msg.into()));
    }

    fn hive_err(&mut self, e: &HiveError) {
        self.warn(e.to_string());
    }

    /// Open a key; `None` (silently) when it does not exist.
    pub(crate) fn key(&mut self, path: &str) -> Option<KeyId> {
        match self.hive.open_key(path) {
            Ok(k) => Some(k),
            Err(HiveError::KeyNotFound { .. }) => None,
            Err(e) => {
                self.hive_err(&e);
                None
            }
        }
    }

    /// A value of an open key; `None` (silently) when it does not exist.
    pub(crate) fn value_of(&mut self, key: KeyId, name: &str) -> Option<Value> {
        match self.hive.get_value(key, name) {
            Ok(v) => v,
            Err(e) => {
                self.hive_err(&e);
                None
            }
        }
    }

    fn wrong_type(&mut self, path: &str, v: &Value, want: &str) {
        self.warn(format!(
            "{path}\\{}: expected {want}, found {} of {} bytes",
            v.name,
            type_name(v.vtype),
            v.data.len()
        ));
    }

    /// A string value (REG_SZ / REG_EXPAND_SZ) of an open key.
    pub(crate) fn string_of(&mut self, key: KeyId, path: &str, name: &str) -> Option<String> {
        let v = self.value_of(key, name)?;
        match v.decoded() {
            Decoded::String(s) => Some(s),
            _ => {
                self.wrong_type(path, &v, "a string");
                None
            }
        }
    }

    /// A string value by key path.
    pub(crate) fn string(&mut self, path: &str, name: &str) -> Option<String> {
        let k = self.key(path)?;
        self.string_of(k, path, name)
    }

    /// A REG_DWORD value of an open key.
    pub(crate) fn dword_of(&mut self, key: KeyId, path: &str, name: &str) -> Option<u32> {
        let v = self.value_of(key, name)?;
        match (v.vtype, v.decoded()) {
            (reg_type::DWORD | reg_type::DWORD_BIG_ENDIAN, Decoded::Dword(n)) => Some(n),
            _ => {
                self.wrong_type(path, &v, "a REG_DWORD");
                None
            }
        }
    }

    /// A REG_DWORD value by key path.
    pub(crate) fn dword(&mut self, path: &str, name: &str) -> Option<u32> {
        let k = self.key(path)?;
        self.dword_of(k, path, name)
    }

    /// A REG_MULTI_SZ value of an open key (a REG_SZ is taken as a list of one).
    pub(crate) fn multi_of(&mut self, key: KeyId, path: &str, name: &str) -> Option<Vec<String>> {
        let v = self.value_of(key, name)?;
        match v.decoded() {
            Decoded::MultiString(l) => Some(l),
            Decoded::String(s) => Some(vec![s]),
            _ => {
                self.wrong_type(path, &v, "a REG_MULTI_SZ");
                None
            }
        }
    }

    /// Subkeys of `path` with their names, at most `max_entries` (a warning
    /// when more were left out). Empty when the key is missing.
    pub(crate) fn subkeys(&mut self, path: &str) -> Vec<(String, KeyId)> {
        let Some(k) = self.key(path) else {
            return Vec::new();
        };
        let kids = match self.hive.subkeys(k) {
            Ok(k) => k,
            Err(e) => {
                self.hive_err(&e);
                return Vec::new();
            }
        };
        if kids.len() > self.max_entries {
            self.warn(format!(
                "{path}: {} subkeys, only the first {} considered",
                kids.len(),
                self.max_entries
            ));
        }
        let mut out = Vec::new();
        for c in kids.into_iter().take(self.max_entries) {
            match self.hive.key_name(c) {
                Ok(n) => out.push((n, c)),
                Err(e) => self.hive_err(&e),
            }
        }
        out
    }

    /// Values of `path`, at most `max_entries`. Empty when the key is missing.
    pub(crate) fn values(&mut self, path: &str) -> Vec<Value> {
        let Some(k) = self.key(path) else {
            return Vec::new();
        };
        let vals = match self.hive.values(k) {
            Ok(v) => v,
            Err(e) => {
                self.hive_err(&e);
                return Vec::new();
            }
        };
        if vals.len() > self.max_entries {
            self.warn(format!(
                "{path}: {} values, only the first {} considered",
                vals.len(),
                self.max_entries
            ));
        }
        let mut out = Vec::new();
        for v in vals.into_iter().take(self.max_entries) {
            match self.hive.value(v) {
                Ok(v) => out.push(v),
                Err(e) => self.hive_err(&e),
            }
        }
        out
    }
}
