//! LVM2's metadata text: a bounded parser of its config-tree grammar.
//!
//! ```text
//! file    := item*
//! item    := key '=' value | key '{' item* '}'
//! value   := string | integer | '[' (value (',' value)*)? ']'
//! ```
//!
//! Comments run from `#` to the end of the line. Keys are LVM names
//! (letters, digits, `_ . + -`). Strings are double-quoted with `\"` and
//! `\\` escapes. Depth, item count and string length are bounded by
//! [`TextLimits`]; the parser is iterative over tokens and never recurses
//! deeper than `max_depth`.

use std::fmt;

/// Bounds on the text parser; hostile metadata is refused past them.
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    /// Sections nested deeper than this are refused (LVM uses 5).
    pub max_depth: usize,
    /// Items (values and sections) in the whole text.
    pub max_items: usize,
    /// Length of one string or key.
    pub max_string: usize,
    /// Values in one list.
    pub max_list: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_items: 200_000,
            max_string: 64 * 1024,
            max_list: 100_000,
        }
    }
}

/// A value of the config tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A `[ … ]` list.
    List(Vec<Value>),
}

/// One `key = value` or `key { … }` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `key = value`.
    Value(Value),
    /// `key { … }`.
    Section(Section),
}

/// A section: its items in text order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// (key, node) pairs in text order.
    pub items: Vec<(String, Node)>,
}

impl Section {
    /// The value named `key`, if any.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.items.iter().find_map(|(k, n)| match n {
            Node::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    /// The section named `key`, if any.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.items.iter().find_map(|(k, n)| match n {
            Node::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// Every sub-section, in text order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, n)| match n {
            Node::Section(s) => Some((k.as_str(), s)),
            Node::Value(_) => None,
        })
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer value.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.value(key) {
            Some(Value::Int(i)) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// A list of strings (`status = ["READ", "WRITE"]`).
    pub fn str_list(&self, key: &str) -> Option<Vec<&str>> {
        match self.value(key) {
            Some(Value::List(l)) => l
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// Where and why the text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Eq,
    Open,
    Close,
    LOpen,
    LClose,
    Comma,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    limits: TextLimits,
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

impl Lexer<'_> {
    fn err(&self, why: impl Into<String>) -> TextError {
        TextError {
            line: self.line,
            why: why.into(),
        }
    }

    fn next(&mut self) -> Result<Option<Tok>, TextError> {
        loop {
            let Some(&b) = self.s.get(self.pos) else {
                return Ok(None);
            };
            match b {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | 0 => self.pos += 1,
                b'#' => {
                    while self.s.get(self.pos).is_some_and(|&c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        let Some(&b) = self.s.get(self.pos) else {
            return Ok(None);
        };
        let single = match b {
            b'=' => Some(Tok::Eq),
            b'{' => Some(Tok::Open),
            b'}' => Some(Tok::Close),
            b'[' => Some(Tok::LOpen),
            b']' => Some(Tok::LClose),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            self.pos += 1;
            return Ok(Some(t));
        }
        if b == b'"' {
            self.pos += 1;
            let mut out = Vec::new();
            loop {
                let Some(&c) = self.s.get(self.pos) else {
                    return Err(self.err("a string is not closed before the end of the text"));
                };
                self.pos += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = self.s.get(self.pos) else {
                            return Err(self.err("a string ends in a backslash"));
                        };
                        self.pos += 1;
                        out.push(e);
                    }
                    b'\n' => {
                        self.line += 1;
                        out.push(c);
                    }
                    _ => out.push(c),
                }
                if out.len() > self.limits.max_string {
                    return Err(self.err(format!(
                        "a string longer than {} bytes",
                        self.limits.max_string
                    )));
                }
            }
            return String::from_utf8(out)
                .map(|s| Some(Tok::Str(s)))
                .map_err(|_| self.err("a string is not UTF-8"));
        }
        if b == b'-' || b.is_ascii_digit() {
            // An integer, unless more name bytes follow (a name may start
            // with a digit: LV `1st`).
            let start = self.pos;
            let mut end = start + 1;
            while self.s.get(end).is_some_and(|&c| name_byte(c)) {
                end += 1;
            }
            let word = &self.s[start..end];
            self.pos = end;
            let text = std::str::from_utf8(word).map_err(|_| self.err("bad bytes"))?;
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Some(Tok::Int(i)));
            }
            if word.iter().all(|c| c.is_ascii_digit() || *c == b'-') {
                return Err(self.err(format!("the number {text} is out of range")));
            }
            return Ok(Some(Tok::Name(text.to_string())));
        }
        if name_byte(b) {
            let start = self.pos;
            while self.s.get(self.pos).is_some_and(|&c| name_byte(c)) {
                self.pos += 1;
                if self.pos - start > self.limits.max_string {
                    return Err(self.err("a name is too long"));
                }
            }
            let text =
                std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.err("bad bytes"))?;
            return Ok(Some(Tok::Name(text.to_string())));
        }
        Err(self.err(format!("unexpected byte 0x{b:02x}")))
    }
}

/// Parse metadata text into its top-level section.
pub fn parse(text: &[u8], limits: TextLimits) -> Result<Section, TextError> {
    let mut lx = Lexer {
        s: text,
        pos: 0,
        line: 1,
        limits,
    };
    // A stack of open sections: (key it will be stored under, section).
    let mut stack: Vec<(String, Section)> = vec![(String::new(), Section::default())];
    let mut items = 0usize;
    loop {
        let tok = lx.next()?;
        let key = match tok {
            None => break,
            Some(Tok::Close) => {
                if stack.len() < 2 {
                    return Err(lx.err("'}' without a section to close"));
                }
                let (k, s) = stack.pop().ok_or_else(|| lx.err("internal"))?;
                let parent = stack.last_mut().ok_or_else(|| lx.err("internal"))?;
                parent.1.items.push((k, Node::Section(s)));
                continue;
            }
            Some(Tok::Name(n)) => n,
            Some(Tok::Str(s)) => s, // lvm2 accepts quoted section names
            Some(t) => return Err(lx.err(format!("expected a name, found {t:?}"))),
        };
        items += 1;
        if items > limits.max_items {
            return Err(lx.err(format!("more than {} items", limits.max_items)));
        }
        match lx.next()? {
            Some(Tok::Open) => {
                if stack.len() > limits.max_depth {
                    return Err(lx.err(format!("sections nested deeper than {}", limits.max_depth)));
                }
                stack.push((key, Section::default()));
            }
            Some(Tok::Eq) => {
                let v = match lx.next()? {
                    Some(Tok::Str(s)) => Value::Str(s),
                    Some(Tok::Int(i)) => Value::Int(i),
                    Some(Tok::LOpen) => {
                        let mut list = Vec::new();
                        loop {
                            match lx.next()? {
                                Some(Tok::LClose) => break,
                                Some(Tok::Str(s)) => list.push(Value::Str(s)),
                                Some(Tok::Int(i)) => list.push(Value::Int(i)),
                                Some(t) => {
                                    return Err(lx.err(format!("unexpected {t:?} in a list")))
                                }
                                None => return Err(lx.err("a list is not closed")),
                            }
                            items += 1;
                            if list.len() > limits.max_list || items > limits.max_items {
                                return Err(lx.err(format!(
                                    "a list longer than {} values",
                                    limits.max_list
                                )));
                            }
                            match lx.next()? {
                                Some(Tok::Comma) => {}
                                Some(Tok::LClose) => break,
                                Some(t) => {
                                    return Err(lx.err(format!("expected ',' or ']', found {t:?}")))
                                }
                                None => return Err(lx.err("a list is not closed")),
                            }
                        }
                        Value::List(list)
                    }
                    Some(t) => return Err(lx.err(format!("expected a value, found {t:?}"))),
                    None => return Err(lx.err(format!("{key} = has no value"))),
                };
                let top = stack.last_mut().ok_or_else(|| lx.err("internal"))?;
                top.1.items.push((key, Node::Value(v)));
            }
            Some(t) => return Err(lx.err(format!("expected '=' or '{{' after {key}, found {t:?}"))),
            None => return Err(lx.err(format!("the text ends after {key}"))),
        }
    }
    if stack.len() != 1 {
        return Err(lx.err(format!("{} section(s) not closed", stack.len() - 1)));
    }
    Ok(stack.pop().map(|(_, s)| s).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"vgtest {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192	# 4 Megabytes
physical_volumes {
pv0 { id = "x" device = "/dev/loop0" pe_start = 2048 pe_count = 15 }
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
description = "a \"quoted\" word"
"#;

    #[test]
    fn parses_lvm_text() {
        let top = parse(SAMPLE.as_bytes(), TextLimits::default()).unwrap();
        let vg = top.section("vgtest").unwrap();
        assert_eq!(vg.uint("seqno"), Some(3));
        assert_eq!(vg.str_list("status").unwrap()[0], "RESIZEABLE");
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.uint("pe_start"), Some(2048));
        assert_eq!(top.str("description"), Some("a \"quoted\" word"));
        assert_eq!(top.uint("version"), Some(1));
    }

    #[test]
    fn limits_and_errors_are_refusals() {
        let deep = "a {".repeat(100) + &"}".repeat(100);
        let e = parse(deep.as_bytes(), TextLimits::default()).unwrap_err();
        assert!(e.why.contains("deeper"), "{e}");
        for bad in [
            "a = ",
            "a {",
            "}",
            "a = [1, 2",
            "a = \"x",
            "a b",
            "a = 99999999999999999999",
            "a = \u{1}",
        ] {
            assert!(
                parse(bad.as_bytes(), TextLimits::default()).is_err(),
                "{bad}"
            );
        }
        let many = "x = 1\n".repeat(50);
        let lim = TextLimits {
            max_items: 10,
            ..TextLimits::default()
        };
        assert!(parse(many.as_bytes(), lim)
            .unwrap_err()
            .why
            .contains("items"));
    }
}
