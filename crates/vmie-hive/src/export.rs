//! `.reg` export in the exact format of `hivexregedit --export`.

use std::collections::HashSet;

use crate::error::Result;
use crate::hive::{Hive, KeyId};

/// Output encoding of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// Valid UTF-8 everywhere.
    Utf8,
    /// What Perl (hivexregedit) prints: each printed item whose characters are
    /// all <= U+00FF is written as Latin-1 bytes, any other item as UTF-8.
    PerlItems,
}

struct Out {
    enc: Enc,
    bytes: Vec<u8>,
}

impl Out {
    fn item(&mut self, s: &str) {
        if self.enc == Enc::PerlItems && s.chars().all(|c| (c as u32) <= 0xFF) {
            self.bytes.extend(s.chars().map(|c| c as u32 as u8));
        } else {
            self.bytes.extend_from_slice(s.as_bytes());
        }
    }
}

fn escape_quotes(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn export_inner(hive: &Hive, key: Option<&str>, prefix: Option<&str>, enc: Enc) -> Result<Vec<u8>> {
    let start = hive.nk_path(key.unwrap_or("\\"))?;
    let mut out = Out {
        enc,
        bytes: Vec::new(),
    };
    out.item("Windows Registry Editor Version 5.00\n\n");
    let base_path = hive.key_path(KeyId(start.off))?;
    let prefix = prefix.map(|p| p.strip_suffix('\\').unwrap_or(p).to_string());
    let mut seen = HashSet::new();
    let mut visited = 0usize;
    // Explicit stack: (nk offset, path, depth).
    let mut stack = vec![(start.off, base_path, 0usize)];
    while let Some((off, path, depth)) = stack.pop() {
        if depth > hive.opts.max_depth {
            return Err(hive.limit(&path, "key nesting deeper than max_depth"));
        }
        if !seen.insert(off) {
            return Err(hive
                .corrupt(off, "key reached twice (cycle in the key tree)")
                .at_path(&path));
        }
        visited += 1;
        if visited > hive.opts.max_subkeys_visited {
            return Err(hive.limit(&path, "more keys than max_subkeys_visited"));
        }
        let nk = hive.nk(off).map_err(|e| e.at_path(&path))?;
        out.item("[");
        if let Some(p) = &prefix {
            out.item(p);
        }
        out.item(&path);
        out.item("]\n");
        let mut values = Vec::new();
        for v in hive.value_offsets(&nk).map_err(|e| e.at_path(&path))? {
            let vk = hive.vk(v).map_err(|e| e.at_path(&path))?;
            let data = hive.vk_data(&vk).map_err(|e| e.at_path(&path))?;
            values.push((vk.name, vk.vtype, data));
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, vtype, data) in values {
            if name.is_empty() {
                out.item("@=");
            } else {
                out.item("\"");
                out.item(&escape_quotes(&name));
                out.item("\"=");
            }
            out.item(&format_data(vtype, &data));
            out.item("\n");
        }
        out.item("\n");
        let mut kids = Vec::new();
        for c in hive.subkey_offsets(&nk).map_err(|e| e.at_path(&path))? {
            let cn = hive.nk(c).map_err(|e| e.at_path(&path))?;
            kids.push((cn.name, c));
        }
        kids.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, c) in kids.into_iter().rev() {
            let p = if path == "\\" {
                format!("\\{name}")
            } else {
                format!("{path}\\{name}")
            };
            stack.push((c, p, depth + 1));
        }
    }
    Ok(out.bytes)
}

/// The data part of a value line, as hivexregedit writes it: `dword:` for a
/// 4-byte REG_DWORD, else `hex(T):` and comma-separated bytes (all strings too).
pub fn format_data(vtype: u32, data: &[u8]) -> String {
    if vtype == 4 && data.len() == 4 {
        let d = u32::from_le_bytes([
            data.first().copied().unwrap_or(0),
            data.get(1).copied().unwrap_or(0),
            data.get(2).copied().unwrap_or(0),
            data.get(3).copied().unwrap_or(0),
        ]);
        return format!("dword:{d:08x}");
    }
    let mut s = format!("hex({vtype:x}):");
    for (i, b) in data.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Export `key` (default: the root) recursively as `.reg` text, UTF-8.
/// Identical to `hivexregedit --export HIVE KEY` whenever every key and value
/// name is ASCII (see [`export_hivex_bytes`] for the byte-exact form).
pub fn try_export(hive: &Hive, key: Option<&str>) -> Result<String> {
    let b = export_inner(hive, key, None, Enc::Utf8)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Export, or on error a `.reg` comment line naming the error (for the CLI).
pub fn export(hive: &Hive, key: Option<&str>) -> String {
    match try_export(hive, key) {
        Ok(s) => s,
        Err(e) => format!("; export failed: {e}\n"),
    }
}

/// Byte-exact `hivexregedit --export [--prefix PREFIX] HIVE KEY` output,
/// including Perl's habit of printing names made only of characters
/// <= U+00FF as Latin-1 bytes.
pub fn export_hivex_bytes(hive: &Hive, key: Option<&str>, prefix: Option<&str>) -> Result<Vec<u8>> {
    export_inner(hive, key, prefix, Enc::PerlItems)
}
