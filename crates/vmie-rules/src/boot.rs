//! Bootloader configuration: kernel command lines (`kernel_args`) and the
//! default entry and timeout (`grub`), across GRUB 2 `grub.cfg`,
//! `/etc/default/grub`, legacy `menu.lst`/`grub.conf`, BLS entries and
//! `grubenv`. Files are edited, never regenerated: only the lines that carry
//! a command line, a timeout or a default change.

use std::cmp::Ordering;

use crate::fstab::{classify, Spec, Volume};
use crate::{lines_with_eol, shellvars, Change, Outcome};

/// Compare kernel versions the way package managers do: runs of digits
/// numerically, other runs as text, `~` before anything.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn segments(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            let boundary =
                i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit();
            if boundary {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    let (sa, sb) = (segments(a), segments(b));
    for (x, y) in sa.iter().zip(sb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xa, ya) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xa.len().cmp(&ya.len()).then_with(|| xa.cmp(ya))
            }
            (false, false) => {
                let tilde = |s: &str| s.starts_with('~');
                match (tilde(x.1), tilde(y.1)) {
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => x.1.cmp(y.1),
                }
            }
            // A number beats text at the same place (2.6.32 > 2.6.x).
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    // A longer version is newer, unless what it adds is a `~` pre-release.
    let tail_is_pre = |s: &[(bool, &str)], n: usize| s.get(n).is_some_and(|x| x.1.starts_with('~'));
    match sa.len().cmp(&sb.len()) {
        Ordering::Greater if tail_is_pre(&sa, sb.len()) => Ordering::Less,
        Ordering::Less if tail_is_pre(&sb, sa.len()) => Ordering::Greater,
        o => o,
    }
}

/// What to do to every kernel command line.
#[derive(Debug, Clone, Default)]
pub struct CmdlineEdit<'a> {
    /// Tokens to add when absent (`console=ttyS0`).
    pub add: &'a [String],
    /// Tokens to remove by name (`rhgb`, `console` removes every `console=`).
    pub remove: &'a [String],
    /// The VM's volumes: `root=` and `resume=` naming a device the cloud
    /// renames become `UUID=`.
    pub volumes: &'a [Volume],
}

fn token_name(t: &str) -> &str {
    t.split_once('=').map_or(t, |(n, _)| n)
}

/// Edit one command line (the arguments after the kernel path). Returns the
/// new text and why each change was made; spacing between untouched tokens
/// is kept.
pub fn edit_cmdline(args: &str, e: &CmdlineEdit<'_>) -> (String, Vec<String>) {
    let mut reasons = Vec::new();
    let mut out = String::with_capacity(args.len() + 32);
    let mut present: Vec<String> = Vec::new();
    let mut rest = args;
    let mut pending_ws = "";
    while !rest.is_empty() {
        let ws_end = rest
            .find(|c: char| c != ' ' && c != '\t')
            .unwrap_or(rest.len());
        let (ws, r) = rest.split_at(ws_end);
        if r.is_empty() {
            pending_ws = ws;
            break;
        }
        // Tokens may hold quoted spaces: param="a b".
        let mut end = 0;
        let mut quoted = false;
        for (i, c) in r.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ' ' | '\t' if !quoted => break,
                _ => {}
            }
            end = i + c.len_utf8();
        }
        let (tok, r2) = r.split_at(end);
        rest = r2;
        let name = token_name(tok);
        if e.remove.iter().any(|x| x == name || x == tok) {
            reasons.push(format!("remove {tok}"));
            continue;
        }
        let mut new_tok = tok.to_string();
        if name == "root" || name == "resume" {
            let value = tok.split_once('=').map_or("", |(_, v)| v);
            if let Spec::Position { disk, partition } = classify(value) {
                if let Some(u) = e
                    .volumes
                    .iter()
                    .find(|v| v.lvm.is_none() && v.disk == disk && v.partition == partition)
                    .and_then(|v| v.uuid.as_ref())
                {
                    new_tok = format!("{name}=UUID={u}");
                    reasons.push(format!("{tok} is renamed in the cloud: {new_tok}"));
                }
            }
        }
        if !out.is_empty() || !ws.is_empty() {
            out.push_str(ws);
        }
        present.push(new_tok.clone());
        out.push_str(&new_tok);
    }
    for a in e.add {
        if !present.iter().any(|p| p == a) {
            if !out.is_empty() && !out.ends_with([' ', '\t']) {
                out.push(' ');
            }
            out.push_str(a);
            reasons.push(format!("add {a}"));
        }
    }
    out.push_str(pending_ws);
    (out, reasons)
}

/// Apply `f` to the arguments of every line whose first word is one of
/// `keywords` followed by a kernel path (`linux /vmlinuz-… ARGS`).
fn edit_kernel_lines(
    text: &str,
    keywords: &[&str],
    has_path: bool,
    e: &CmdlineEdit<'_>,
) -> Outcome {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    for (i, (line, eol)) in lines_with_eol(text).enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let kw_end = body.find([' ', '\t']).unwrap_or(body.len());
        let kw = &body[..kw_end];
        if !keywords.contains(&kw) || body.starts_with('#') {
            out.push_str(line);
            out.push_str(eol);
            continue;
        }
        let after_kw = &body[kw_end..];
        // Keep the separator and (for linux/kernel lines) the path as is.
        let sep_len = after_kw.len() - after_kw.trim_start().len();
        let mut head_len = indent.len() + kw_end + sep_len;
        if has_path {
            let p = &after_kw[sep_len..];
            head_len += p.find([' ', '\t']).unwrap_or(p.len());
        }
        let (head, args) = line.split_at(head_len.min(line.len()));
        let (new_args, reasons) = edit_cmdline(args, e);
        if reasons.is_empty() {
            out.push_str(line);
        } else {
            let after = format!("{head}{new_args}");
            changes.push(Change {
                line: i + 1,
                before: line.to_string(),
                after: after.clone(),
                reason: reasons.join("; "),
            });
            out.push_str(&after);
        }
        out.push_str(eol);
    }
    Outcome {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

/// `linux`, `linux16` and `linuxefi` lines of a GRUB 2 `grub.cfg`.
pub fn kernel_args_grub_cfg(text: &str, e: &CmdlineEdit<'_>) -> Outcome {
    edit_kernel_lines(text, &["linux", "linux16", "linuxefi"], true, e)
}

/// `kernel` lines of a legacy GRUB `menu.lst` / `grub.conf`.
pub fn kernel_args_menu_lst(text: &str, e: &CmdlineEdit<'_>) -> Outcome {
    edit_kernel_lines(text, &["kernel"], true, e)
}

/// The `options` line of a BLS entry (`/boot/loader/entries/*.conf`).
pub fn kernel_args_bls(text: &str, e: &CmdlineEdit<'_>) -> Outcome {
    edit_kernel_lines(text, &["options"], false, e)
}

/// `GRUB_CMDLINE_LINUX` and `GRUB_CMDLINE_LINUX_DEFAULT` of `/etc/default/grub`.
pub fn kernel_args_default_grub(text: &str, e: &CmdlineEdit<'_>) -> Outcome {
    let mut set: Vec<(&str, String)> = Vec::new();
    let mut reasons = Vec::new();
    for key in ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"] {
        if let Some(v) = shellvars::get(text, key) {
            // Additions go to GRUB_CMDLINE_LINUX only (it applies to every entry).
            let edit = CmdlineEdit {
                add: if key == "GRUB_CMDLINE_LINUX" {
                    e.add
                } else {
                    &[]
                },
                ..e.clone()
            };
            let (nv, r) = edit_cmdline(&v, &edit);
            if !r.is_empty() {
                set.push((key, nv.trim().to_string()));
                reasons.extend(r);
            }
        } else if key == "GRUB_CMDLINE_LINUX" && !e.add.is_empty() {
            set.push((key, e.add.join(" ")));
            reasons.push(format!("add {}", e.add.join(" ")));
        }
    }
    let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    shellvars::edit(text, &pairs, &[], &reasons.join("; "))
}

/// A GRUB environment block (`grubenv`): exactly 1024 bytes of `KEY=VALUE`
/// lines padded with `#`. Returns the new block, or why it was left alone.
pub fn grubenv_set(block: &[u8], key: &str, value: &str) -> Result<Option<Vec<u8>>, String> {
    const HEADER: &str = "# GRUB Environment Block\n";
    let text = std::str::from_utf8(block).map_err(|_| "grubenv is not text".to_string())?;
    if !text.starts_with(HEADER) {
        return Err("grubenv does not start with \"# GRUB Environment Block\"".into());
    }
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in text[HEADER.len()..].split('\n') {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    if vars.iter().any(|(k, v)| k == key && v == value) {
        return Ok(None);
    }
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value.to_string(),
        None => vars.push((key.to_string(), value.to_string())),
    }
    let mut body = String::from(HEADER);
    for (k, v) in &vars {
        body.push_str(k);
        body.push('=');
        body.push_str(v);
        body.push('\n');
    }
    let size = block.len().max(1024);
    if body.len() > size {
        return Err(format!(
            "grubenv would need {} bytes; the block has {size}",
            body.len()
        ));
    }
    let mut out = body.into_bytes();
    out.resize(size, b'#');
    Ok(Some(out))
}

/// The value of `key` in a grubenv block.
pub fn grubenv_get(block: &[u8], key: &str) -> Option<String> {
    std::str::from_utf8(block).ok()?.split('\n').find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(str::to_string)
    })
}

/// A boot entry of a `grub.cfg`: its id as `set default` takes it (`2`,
/// `1>0` inside a submenu), its title, and its kernel path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEntry {
    /// `N` or `S>N`.
    pub id: String,
    /// The menuentry title.
    pub title: String,
    /// The `linux` line's kernel path.
    pub kernel: Option<String>,
}

fn quoted_title(s: &str) -> String {
    let s = s.trim_start();
    match s.chars().next() {
        Some(q @ ('\'' | '"')) => s[1..].split(q).next().unwrap_or_default().to_string(),
        _ => s.split_whitespace().next().unwrap_or_default().to_string(),
    }
}

/// The boot entries of a `grub.cfg`, in menu order.
pub fn grub_cfg_entries(text: &str) -> Vec<GrubEntry> {
    let mut entries = Vec::new();
    // Stack of open blocks: Some(index of submenu) for submenus, None for other braces.
    let mut top = 0usize;
    let mut sub: Option<(usize, usize)> = None; // (submenu index, next entry index in it)
    let mut depth_in_sub = 0i32;
    let mut current: Option<usize> = None;
    for (line, _) in lines_with_eol(text) {
        let t = line.trim_start();
        if t.starts_with("submenu ") {
            sub = Some((top, 0));
            top += 1;
            depth_in_sub = 1;
            continue;
        }
        if let Some(rest) = t.strip_prefix("menuentry ") {
            let id = match &mut sub {
                Some((s, n)) => {
                    let id = format!("{s}>{n}");
                    *n += 1;
                    depth_in_sub += 1;
                    id
                }
                None => {
                    let id = top.to_string();
                    top += 1;
                    id
                }
            };
            entries.push(GrubEntry {
                id,
                title: quoted_title(rest),
                kernel: None,
            });
            current = Some(entries.len() - 1);
            continue;
        }
        let kw = t.split_whitespace().next().unwrap_or("");
        if matches!(kw, "linux" | "linux16" | "linuxefi") {
            if let (Some(c), Some(path)) = (current, t.split_whitespace().nth(1)) {
                if let Some(e) = entries.get_mut(c) {
                    e.kernel = Some(path.to_string());
                }
            }
        }
        if t.starts_with('}') {
            current = None;
            if sub.is_some() {
                depth_in_sub -= 1;
                if depth_in_sub <= 0 {
                    sub = None;
                }
            }
        }
    }
    entries
}

/// Version part of a kernel path: `/vmlinuz-6.1.0-13-amd64` → `6.1.0-13-amd64`.
pub fn kernel_version(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))
        .or_else(|| name.strip_prefix("kernel-"))
}

/// The entry booting the newest kernel.
pub fn newest_entry(entries: &[GrubEntry]) -> Option<&GrubEntry> {
    entries
        .iter()
        .filter(|e| e.kernel.as_deref().and_then(kernel_version).is_some())
        .filter(|e| {
            !e.title.to_lowercase().contains("rescue")
                && !e.title.to_lowercase().contains("recovery mode")
        })
        .reduce(|best, e| {
            let v = |x: &GrubEntry| {
                x.kernel
                    .as_deref()
                    .and_then(kernel_version)
                    .unwrap_or("")
                    .to_string()
            };
            if compare_versions(&v(e), &v(best)) == Ordering::Greater {
                e
            } else {
                best
            }
        })
}

fn set_line(line: &str, var: &str, value: &str) -> Option<String> {
    let t = line.trim_start();
    let rest = t.strip_prefix("set ")?.trim_start();
    let v = rest.strip_prefix(var)?.strip_prefix('=')?;
    let indent = &line[..line.len() - t.len()];
    let current = v.trim().trim_matches(|c| c == '"' || c == '\'');
    if current == value || current.starts_with("${") {
        return None;
    }
    let quote = if v.trim_start().starts_with('"') {
        "\""
    } else {
        ""
    };
    Some(format!("{indent}set {var}={quote}{value}{quote}"))
}

/// In a `grub.cfg`: every literal `set timeout=` becomes `timeout`, and every
/// literal `set default=` becomes the entry booting the newest kernel.
/// `set default="${saved_entry}"` is left alone (the default lives in grubenv).
pub fn grub_cfg_set(text: &str, timeout: u32) -> Outcome {
    let newest = newest_entry(&grub_cfg_entries(text)).cloned();
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let t = timeout.to_string();
    for (i, (line, eol)) in lines_with_eol(text).enumerate() {
        let mut new = set_line(line, "timeout", &t).map(|l| (l, format!("menu timeout {t} s")));
        if new.is_none() {
            if let Some(n) = &newest {
                new = set_line(line, "default", &n.id)
                    .map(|l| (l, format!("boot the newest kernel by default: {}", n.title)));
            }
        }
        match new {
            Some((after, reason)) => {
                changes.push(Change {
                    line: i + 1,
                    before: line.to_string(),
                    after: after.clone(),
                    reason,
                });
                out.push_str(&after);
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    if newest.is_none() {
        notes
            .push("no menu entry boots a /vmlinuz-VERSION kernel; default entry left alone".into());
    }
    Outcome {
        text: out,
        changes,
        notes,
    }
}

/// In a legacy `menu.lst` / `grub.conf`: `timeout N` and `default N` (the
/// index of the title booting the newest kernel).
pub fn menu_lst_set(text: &str, timeout: u32) -> Outcome {
    // Titles and their kernels.
    let mut kernels: Vec<Option<String>> = Vec::new();
    for (line, _) in lines_with_eol(text) {
        let t = line.trim_start();
        if t.starts_with("title") {
            kernels.push(None);
        } else if let Some(rest) = t.strip_prefix("kernel") {
            if let (Some(last), Some(p)) = (kernels.last_mut(), rest.split_whitespace().next()) {
                *last = Some(p.to_string());
            }
        }
    }
    let newest = kernels
        .iter()
        .enumerate()
        .filter_map(|(i, k)| Some((i, kernel_version(k.as_deref()?)?.to_string())))
        .reduce(|a, b| {
            if compare_versions(&b.1, &a.1) == Ordering::Greater {
                b
            } else {
                a
            }
        })
        .map(|(i, _)| i);
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for (i, (line, eol)) in lines_with_eol(text).enumerate() {
        let t = line.trim_start();
        let kw_end = t.find([' ', '\t', '=']).unwrap_or(t.len());
        let (kw, rest) = t.split_at(kw_end);
        let want = match kw {
            "timeout" => Some((timeout.to_string(), format!("menu timeout {timeout} s"))),
            "default" => newest.map(|n| {
                (
                    n.to_string(),
                    "boot the newest kernel by default".to_string(),
                )
            }),
            _ => None,
        };
        if let Some((value, reason)) = want {
            let sep_len = rest.len() - rest.trim_start_matches([' ', '\t', '=']).len();
            let current = rest[sep_len..].trim();
            if current != value && current != "saved" {
                let indent = &line[..line.len() - t.len()];
                let after = format!("{indent}{kw}{}{value}", &rest[..sep_len]);
                changes.push(Change {
                    line: i + 1,
                    before: line.to_string(),
                    after: after.clone(),
                    reason,
                });
                out.push_str(&after);
                out.push_str(eol);
                continue;
            }
        }
        out.push_str(line);
        out.push_str(eol);
    }
    Outcome {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

/// In `/etc/default/grub`: `GRUB_TIMEOUT`, and a numeric `GRUB_DEFAULT`
/// becomes 0 (grub-mkconfig lists the newest kernel first). `saved` and
/// titles are left to grubenv.
pub fn default_grub_set(text: &str, timeout: u32) -> Outcome {
    let t = timeout.to_string();
    let mut set = vec![("GRUB_TIMEOUT", t.as_str())];
    if shellvars::get(text, "GRUB_DEFAULT").is_some_and(|d| d.parse::<u32>().is_ok_and(|n| n != 0))
    {
        set.push(("GRUB_DEFAULT", "0"));
    }
    let only_existing: Vec<(&str, &str)> = set
        .into_iter()
        .filter(|(k, _)| *k == "GRUB_TIMEOUT" || shellvars::get(text, k).is_some())
        .collect();
    shellvars::edit(text, &only_existing, &[], "boot menu for the cloud")
}
