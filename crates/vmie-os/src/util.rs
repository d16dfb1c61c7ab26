//! Bounded, tolerant access to the guest.

use std::cell::RefCell;

use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt};

use crate::InspectOptions;

pub(crate) struct Ctx<'a> {
    pub fs: &'a dyn GuestFs,
    pub opts: &'a InspectOptions,
    warnings: RefCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(fs: &'a dyn GuestFs, opts: &'a InspectOptions) -> Self {
        Self {
            fs,
            opts,
            warnings: RefCell::new(Vec::new()),
        }
    }

    pub fn warn(&self, w: String) {
        let mut ws = self.warnings.borrow_mut();
        if ws.len() < 1000 {
            ws.push(w);
        }
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }

    fn note(&self, e: &FsError) {
        if !matches!(e, FsError::NotFound { .. } | FsError::NotADirectory { .. }) {
            self.warn(e.to_string());
        }
    }

    /// File type of what `path` points at (symlinks followed), if it exists.
    pub fn file_type(&self, path: &str) -> Option<FileType> {
        match self.fs.metadata(path) {
            Ok((_, m)) => Some(m.file_type),
            Err(e) => {
                self.note(&e);
                None
            }
        }
    }

    pub fn exists(&self, path: &str) -> bool {
        self.file_type(path).is_some()
    }

    pub fn is_file(&self, path: &str) -> bool {
        self.file_type(path) == Some(FileType::Regular)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.file_type(path) == Some(FileType::Directory)
    }

    /// Whether `path` itself (not followed) exists.
    pub fn lexists(&self, path: &str) -> bool {
        self.fs.lstat(path).is_ok()
    }

    /// Contents of the regular file at `path`, at most `max` bytes (larger
    /// files are refused with a warning).
    pub fn read_bytes(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let (p, m) = match self.fs.metadata(path) {
            Ok(x) => x,
            Err(e) => {
                self.note(&e);
                return None;
            }
        };
        if m.file_type != FileType::Regular {
            return None;
        }
        if m.size > max {
            self.warn(format!(
                "{path}: {} bytes, over the limit of {max}; not read",
                m.size
            ));
            return None;
        }
        match self.fs.read_file(&p, max) {
            Ok(d) => Some(d),
            Err(e) => {
                self.note(&e);
                None
            }
        }
    }

    /// A configuration file as text (lossy UTF-8), capped by `max_config_size`.
    pub fn read_text(&self, path: &str) -> Option<String> {
        self.read_bytes(path, self.opts.max_config_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Names and types (not followed) of the entries of directory `path`,
    /// sorted, at most `max_dir_entries`.
    pub fn list(&self, path: &str) -> Vec<(String, FileType)> {
        match self.fs.list(path) {
            Ok((_, entries)) => {
                if entries.len() > self.opts.max_dir_entries {
                    self.warn(format!(
                        "{path}: {} entries, only the first {} considered",
                        entries.len(),
                        self.opts.max_dir_entries
                    ));
                }
                entries
                    .into_iter()
                    .take(self.opts.max_dir_entries)
                    .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.file_type))
                    .collect()
            }
            Err(e) => {
                self.note(&e);
                Vec::new()
            }
        }
    }

    /// Target of the symlink at `path`.
    pub fn readlink(&self, path: &str) -> Option<String> {
        self.fs
            .readlink(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// Join a directory and a name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Remove one level of matching single or double quotes.
pub(crate) fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// Parse shell-style `KEY=value` lines (sysconfig files, lsb-release).
pub(crate) fn shell_vars(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            // Strip a trailing comment on unquoted values.
            let v = v.trim();
            let v = if v.starts_with('"') || v.starts_with('\'') {
                v
            } else {
                v.split(" #").next().unwrap_or(v).trim()
            };
            out.push((k.to_string(), unquote(v).to_string()));
        }
    }
    out
}

pub(crate) fn var<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Compare two version strings numerically component by component
/// (`5.14.0-362.el9` vs `5.4.0`), falling back to string comparison.
pub(crate) fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<Result<u64, String>> {
        s.split(['.', '-', '_', '+', '~'])
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect()
    };
    let (x, y) = (split(a), split(b));
    for (p, q) in x.iter().zip(y.iter()) {
        let o = match (p, q) {
            (Ok(p), Ok(q)) => p.cmp(q),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Err(p), Err(q)) => p.cmp(q),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}
