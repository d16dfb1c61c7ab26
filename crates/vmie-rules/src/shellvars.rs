//! Shell-style variable files: `/etc/default/grub`, `ifcfg-*`,
//! `/etc/sysconfig/*`.
//!
//! [`get`] reads a variable as the shell would (quotes and backslashes
//! removed). [`edit`] sets or unsets variables, changing only the lines that
//! assign them and keeping the quoting style where the new value allows it;
//! a variable that is set but not yet assigned is appended at the end.

use crate::{lines_with_eol, Change, Outcome};

/// One `KEY=VALUE` line, split.
struct Assign<'a> {
    /// Whatever precedes the key (`export `, indentation).
    prefix: &'a str,
    key: &'a str,
    /// The raw value text up to a trailing comment.
    raw: &'a str,
    /// ` # comment` after the value, with its spacing.
    tail: &'a str,
}

fn is_key(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Length of the shell word at the start of `s` (up to unquoted whitespace).
fn word_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => break,
            b'\\' => i += 2,
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    i.min(b.len())
}

fn parse_line(line: &str) -> Option<Assign<'_>> {
    let body = line.trim_start();
    let rest = body.strip_prefix("export ").map_or(body, str::trim_start);
    let eq = rest.find('=')?;
    let key = &rest[..eq];
    if !is_key(key) {
        return None;
    }
    let prefix_len = line.len() - rest.len();
    let value_and_tail = &rest[eq + 1..];
    let n = word_len(value_and_tail);
    Some(Assign {
        prefix: &line[..prefix_len],
        key,
        raw: &value_and_tail[..n],
        tail: &value_and_tail[n..],
    })
}

/// The shell's reading of a raw value.
pub fn unquote(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '\'' => {
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    out.push(n);
                }
            }
            '"' => {
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&e @ ('"' | '\\' | '$' | '`')) => {
                                out.push(e);
                                chars.next();
                            }
                            _ => out.push('\\'),
                        },
                        _ => out.push(n),
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Quote `value` for a shell file, in the style of `old` where possible.
pub fn quote(value: &str, old: Option<&str>) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:,+=@%-".contains(&b));
    match old.and_then(|o| o.chars().next()) {
        Some('\'') if !value.contains('\'') => return format!("'{value}'"),
        Some('"') => {}
        _ if plain => return value.to_string(),
        _ => {}
    }
    let mut s = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// The value of the last assignment of `key`, as the shell reads it.
pub fn get(text: &str, key: &str) -> Option<String> {
    lines_with_eol(text)
        .filter_map(|(l, _)| parse_line(l))
        .filter(|a| a.key == key)
        .last()
        .map(|a| unquote(a.raw))
}

/// Every assignment in the file, in order (later ones win in the shell).
pub fn all(text: &str) -> Vec<(String, String)> {
    lines_with_eol(text)
        .filter_map(|(l, _)| parse_line(l))
        .map(|a| (a.key.to_string(), unquote(a.raw)))
        .collect()
}

/// Set each `(key, value)` of `set` and remove every assignment of `unset`.
pub fn edit(text: &str, set: &[(&str, &str)], unset: &[&str], reason: &str) -> Outcome {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut last_eol = "\n";
    let mut lines = 0;
    for (i, (line, eol)) in lines_with_eol(text).enumerate() {
        lines = i + 1;
        if !eol.is_empty() {
            last_eol = eol;
        }
        let Some(a) = parse_line(line) else {
            out.push_str(line);
            out.push_str(eol);
            continue;
        };
        if unset.contains(&a.key) {
            changes.push(Change {
                line: i + 1,
                before: line.to_string(),
                after: String::new(),
                reason: format!("{reason}: remove {}", a.key),
            });
            continue;
        }
        if let Some((_, v)) = set.iter().find(|(k, _)| *k == a.key) {
            seen.push(a.key);
            if unquote(a.raw) != *v {
                let after = format!("{}{}={}{}", a.prefix, a.key, quote(v, Some(a.raw)), a.tail);
                changes.push(Change {
                    line: i + 1,
                    before: line.to_string(),
                    after: after.clone(),
                    reason: format!("{reason}: {}={v}", a.key),
                });
                out.push_str(&after);
                out.push_str(eol);
                continue;
            }
        }
        out.push_str(line);
        out.push_str(eol);
    }
    for (k, v) in set {
        if seen.contains(k) {
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(last_eol);
        }
        let after = format!("{k}={}", quote(v, None));
        lines += 1;
        changes.push(Change {
            line: lines,
            before: String::new(),
            after: after.clone(),
            reason: format!("{reason}: {k}={v}"),
        });
        out.push_str(&after);
        out.push_str(last_eol);
    }
    Outcome {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRUB: &str = "\
# If you change this file, run 'update-grub' afterwards.
GRUB_DEFAULT=0
GRUB_TIMEOUT=30
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"\"
#GRUB_DISABLE_LINUX_UUID=true
export GRUB_COLOR='white/blue' # colours
";

    #[test]
    fn reads_like_the_shell() {
        assert_eq!(get(GRUB, "GRUB_TIMEOUT").as_deref(), Some("30"));
        assert_eq!(
            get(GRUB, "GRUB_CMDLINE_LINUX_DEFAULT").as_deref(),
            Some("quiet")
        );
        assert_eq!(get(GRUB, "GRUB_CMDLINE_LINUX").as_deref(), Some(""));
        assert_eq!(get(GRUB, "GRUB_COLOR").as_deref(), Some("white/blue"));
        assert_eq!(get(GRUB, "GRUB_DISABLE_LINUX_UUID"), None, "commented out");
        assert_eq!(unquote(r#""a \"b\" \$c \x""#), r#"a "b" $c \x"#);
        assert_eq!(unquote(r"a\ b'c d'"), "a bc d");
    }

    #[test]
    fn edits_only_the_assignments() {
        let out = edit(
            GRUB,
            &[
                ("GRUB_TIMEOUT", "1"),
                ("GRUB_COLOR", "black/white"),
                ("GRUB_TERMINAL", "console serial"),
            ],
            &["GRUB_DEFAULT"],
            "test",
        );
        let want = "\
# If you change this file, run 'update-grub' afterwards.
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"\"
#GRUB_DISABLE_LINUX_UUID=true
export GRUB_COLOR='black/white' # colours
GRUB_TERMINAL=\"console serial\"
";
        assert_eq!(out.text, want);
        assert_eq!(out.changes.len(), 4);
        assert_eq!(
            get(&out.text, "GRUB_TERMINAL").as_deref(),
            Some("console serial")
        );
        let again = edit(
            &out.text,
            &[("GRUB_TIMEOUT", "1"), ("GRUB_TERMINAL", "console serial")],
            &["GRUB_DEFAULT"],
            "t",
        );
        assert!(again.changes.is_empty());
        assert_eq!(again.text, out.text);
    }

    #[test]
    fn quoting_round_trips() {
        for v in [
            "",
            "plain",
            "two words",
            "a\"b",
            "$HOME",
            "back`tick`",
            "it's",
            "tab\there",
            "x\\y",
        ] {
            let line = format!("K={}\n", quote(v, None));
            assert_eq!(get(&line, "K").as_deref(), Some(v), "{line}");
            let line = format!("K={}\n", quote(v, Some("'old'")));
            assert_eq!(get(&line, "K").as_deref(), Some(v), "{line}");
        }
    }
}
