//! `.reg` merge with the semantics of `hivexregedit --merge`.

use crate::error::{HiveError, Result};
use crate::hive::{reg_type, split_path, Hive};
use crate::verify::Edit;

/// What a merge changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    pub keys_created: usize,
    pub keys_deleted: usize,
    pub values_set: usize,
    pub values_deleted: usize,
    /// Every change made, in order: hand to [`crate::verify_with_nt_hive`].
    pub edits: Vec<Edit>,
}

/// How key paths of the `.reg` text map onto the hive.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Stripped (case-insensitively) from the start of every key path, like
    /// `hivexregedit --prefix`. `None`: strip a leading `HKEY_LOCAL_MACHINE\NAME`
    /// / `HKLM\NAME` (the hive's mount point) or `HKEY_CURRENT_USER` / `HKCU`
    /// / `HKEY_USERS\NAME` if present.
    pub prefix: Option<String>,
}

/// One parsed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOp {
    DeleteKey(String),
    /// Key path, values to delete, values to set (name, type, data).
    Key {
        path: String,
        delete: Vec<String>,
        set: Vec<(String, u32, Vec<u8>)>,
    },
}

fn perr(line: usize, reason: impl Into<String>) -> HiveError {
    HiveError::RegParse {
        line,
        reason: reason.into(),
    }
}

/// Parse a quoted string at the start of `s`: returns (string, rest after the closing quote).
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, s.get(i + 1..).unwrap_or(""))),
            '\\' => {
                let (_, n) = chars.next()?;
                out.push(n);
            }
            _ => out.push(c),
        }
    }
    None
}

fn hex_data(s: &str, line: usize) -> Result<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b',' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(digits.len() / 2 + 1);
    for pair in digits.chunks(2) {
        let hi = pair.first().and_then(|d| (*d as char).to_digit(16));
        let lo = match pair.get(1) {
            Some(d) => (*d as char).to_digit(16),
            None => Some(0),
        };
        match (hi, lo) {
            (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            _ => return Err(perr(line, format!("invalid hex digits in {s:?}"))),
        }
    }
    Ok(out)
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

fn parse_value(v: &str, line: usize) -> Result<(u32, Vec<u8>)> {
    let bad = || perr(line, format!("cannot parse value data {v:?}"));
    if let Some(d) = v.strip_prefix("dword:") {
        if d.len() == 8 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
            let n = u32::from_str_radix(d, 16).map_err(|_| bad())?;
            return Ok((reg_type::DWORD, n.to_le_bytes().to_vec()));
        }
        return Err(bad());
    }
    if let Some(d) = v.strip_prefix("hex:") {
        return Ok((reg_type::BINARY, hex_data(d, line)?));
    }
    if let Some(r) = v.strip_prefix("hex(") {
        let (t, d) = r.split_once("):").ok_or_else(bad)?;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let t = u32::from_str_radix(t, 16).map_err(|_| bad())?;
        return Ok((t, hex_data(d, line)?));
    }
    let (t, q) = if let Some(q) = v.strip_prefix("str:") {
        (reg_type::SZ, q)
    } else if let Some(r) = v.strip_prefix("str(") {
        let (t, q) = r.split_once("):").ok_or_else(bad)?;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        (u32::from_str_radix(t, 16).map_err(|_| bad())?, q)
    } else {
        (reg_type::SZ, v)
    };
    if !(q.starts_with('"') && q.ends_with('"') && q.len() >= 2) {
        return Err(bad());
    }
    let (s, _) = parse_quoted(q).ok_or_else(bad)?;
    Ok((t, utf16z(&s)))
}

/// Parse `.reg` text (regedit 5.00 / REGEDIT4 headers, `;` comments, `\`
/// line continuations, `[KEY]`, `[-KEY]`, `"name"=...`, `@=...`, `"name"=-`).
pub fn parse_reg(text: &str) -> Result<Vec<RegOp>> {
    let raw: Vec<&str> = text.lines().collect();
    let mut ops = Vec::new();
    let mut cur: Option<RegOp> = None;
    let mut i = 0;
    while i < raw.len() {
        let lineno = i + 1;
        let mut line = raw
            .get(i)
            .copied()
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string();
        i += 1;
        // Continuations: a trailing backslash (and spaces) joins the next line.
        loop {
            let t = line.trim_end();
            if let Some(stripped) = t.strip_suffix('\\') {
                if i >= raw.len() {
                    line = stripped.to_string();
                    break;
                }
                let next = raw.get(i).copied().unwrap_or("").trim_end_matches('\r');
                i += 1;
                line = format!("{stripped}{next}");
            } else {
                break;
            }
        }
        let trimmed = line.trim_start();
        let blank_or_comment = trimmed.is_empty() || trimmed.starts_with(';');
        if let Some(RegOp::Key { delete, set, .. }) = cur.as_mut() {
            if blank_or_comment {
                if let Some(op) = cur.take() {
                    ops.push(op);
                }
                continue;
            }
            if line.starts_with('[') {
                // Lenient (hivex requires a blank line first): close the key.
                if let Some(op) = cur.take() {
                    ops.push(op);
                }
            } else if let Some(v) = line.strip_prefix("@=") {
                if v.trim_end() == "-" {
                    delete.push(String::new());
                } else {
                    let (t, d) = parse_value(v, lineno)?;
                    set.push((String::new(), t, d));
                }
                continue;
            } else if line.starts_with('"') {
                let (name, rest) =
                    parse_quoted(&line).ok_or_else(|| perr(lineno, "unterminated value name"))?;
                let v = rest
                    .strip_prefix('=')
                    .ok_or_else(|| perr(lineno, "expected = after the value name"))?;
                if v.trim_end() == "-" {
                    delete.push(name);
                } else {
                    let (t, d) = parse_value(v, lineno)?;
                    set.push((name, t, d));
                }
                continue;
            } else {
                return Err(perr(lineno, format!("unexpected text {line:?}")));
            }
        }
        if blank_or_comment
            || line.contains("Windows Registry Editor Version")
            || line.starts_with("REGEDIT")
        {
            continue;
        }
        let t = line.trim_end();
        if let Some(p) = t.strip_prefix("[-").and_then(|r| r.strip_suffix(']')) {
            ops.push(RegOp::DeleteKey(p.to_string()));
        } else if let Some(p) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            cur = Some(RegOp::Key {
                path: p.to_string(),
                delete: Vec::new(),
                set: Vec::new(),
            });
        } else {
            return Err(perr(lineno, format!("unexpected text {line:?}")));
        }
    }
    if let Some(op) = cur {
        ops.push(op);
    }
    Ok(ops)
}

fn map_path(path: &str, opts: &MergeOptions) -> String {
    match &opts.prefix {
        Some(p) => {
            if path.len() >= p.len()
                && path
                    .get(..p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p))
            {
                path.get(p.len()..).unwrap_or("").to_string()
            } else {
                path.to_string()
            }
        }
        None => {
            let comps = split_path(path);
            let first = comps
                .first()
                .map(|c| c.to_ascii_uppercase())
                .unwrap_or_default();
            let skip = match first.as_str() {
                "HKEY_LOCAL_MACHINE" | "HKLM" | "HKEY_USERS" | "HKU" => 2,
                "HKEY_CURRENT_USER" | "HKCU" => 1,
                _ => 0,
            };
            comps.get(skip.min(comps.len())..).unwrap_or(&[]).join("\\")
        }
    }
}

/// Merge `.reg` text into the hive with the default path mapping (see [`MergeOptions`]).
pub fn merge(hive: &mut Hive, reg_text: &str) -> Result<MergeReport> {
    merge_with(hive, reg_text, &MergeOptions::default())
}

/// Merge `.reg` text. All or nothing: on error the hive is left unchanged.
///
/// Semantics of `hivexregedit --merge`: a missing key is created only if its
/// parent exists; `[-KEY]` of a missing key is ignored; `"v"=-` of a missing
/// value is ignored; value names match case-insensitively.
pub fn merge_with(hive: &mut Hive, reg_text: &str, opts: &MergeOptions) -> Result<MergeReport> {
    let ops = parse_reg(reg_text)?;
    hive.writable("\\")?;
    let mut work = hive.clone();
    let mut rep = MergeReport::default();
    for op in ops {
        match op {
            RegOp::DeleteKey(p) => {
                let path = map_path(&p, opts);
                match work.nk_path(&path) {
                    Ok(_) => {
                        work.delete_key(&path)?;
                        rep.keys_deleted += 1;
                        rep.edits.push(Edit::DeleteKey { path: path.clone() });
                    }
                    Err(HiveError::KeyNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            RegOp::Key { path, delete, set } => {
                let path = map_path(&path, opts);
                let nk = match work.nk_path(&path) {
                    Ok(nk) => nk,
                    Err(HiveError::KeyNotFound { .. }) => {
                        let comps = split_path(&path);
                        let (name, parent) = match comps.split_last() {
                            Some((n, p)) => (*n, p.join("\\")),
                            None => {
                                return Err(work.nk_path("\\").err().unwrap_or(
                                    HiveError::KeyNotFound {
                                        hive: work.name().to_string(),
                                        path,
                                    },
                                ))
                            }
                        };
                        let pnk = work.nk_path(&parent).map_err(|e| match e {
                            HiveError::KeyNotFound { hive, .. } => HiveError::Invalid {
                                hive,
                                path: path.clone(),
                                reason: format!(
                                    "cannot create it since its parent \\{parent} does not exist"
                                ),
                            },
                            e => e,
                        })?;
                        let k = work.create_key_nk(&pnk, &parent, name)?;
                        rep.keys_created += 1;
                        rep.edits.push(Edit::CreateKey { path: path.clone() });
                        work.nk(k.0)?
                    }
                    Err(e) => return Err(e),
                };
                for name in delete {
                    let nk = work.nk(nk.off)?;
                    if work.delete_value_nk(&nk, &path, &name)? {
                        rep.values_deleted += 1;
                        rep.edits.push(Edit::DeleteValue {
                            key: path.clone(),
                            name,
                        });
                    }
                }
                for (name, t, data) in set {
                    let nk = work.nk(nk.off)?;
                    work.set_value_nk(&nk, &path, &name, t, &data)?;
                    rep.values_set += 1;
                    rep.edits.push(Edit::SetValue {
                        key: path.clone(),
                        name,
                        vtype: t,
                        data,
                    });
                }
            }
        }
    }
    if work.modified {
        work.touch()?;
    }
    *hive = work;
    Ok(rep)
}
