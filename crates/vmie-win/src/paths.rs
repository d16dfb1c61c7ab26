//! Case-insensitive guest paths.
//!
//! NTFS looks names up case-insensitively, but other `GuestFs`
//! implementations (`MemFs`, a Windows tree copied onto ext4) do not, so
//! Windows paths are found by listing each directory and comparing names
//! the way the registry does ([`vmie_hive::hive::names_equal`]), preferring
//! an exact match.

use vmie_guestfs::{FileType, FsError, GuestFs, GuestFsExt};

/// Join a guest directory path and a name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether the error is the device's (an I/O error to pass on) rather than
/// a missing or malformed path.
pub(crate) fn is_io(e: &FsError) -> bool {
    matches!(e, FsError::Disk(_))
}

/// The entry of directory `dir` whose name equals `name` case-insensitively
/// (an exact match wins). Considers at most `max_entries` entries.
/// `Ok(None)` when `dir` is not a readable directory or has no such entry;
/// `Err` only for I/O errors.
pub(crate) fn find_entry_ci(
    fs: &dyn GuestFs,
    dir: &str,
    name: &str,
    max_entries: usize,
) -> Result<Option<String>, FsError> {
    let entries = match fs.list(dir) {
        Ok((_, e)) => e,
        Err(e) if is_io(&e) => return Err(e),
        Err(_) => return Ok(None),
    };
    let mut found = None;
    for e in entries.iter().take(max_entries) {
        let Ok(n) = std::str::from_utf8(&e.name) else {
            continue;
        };
        if n == name {
            return Ok(Some(join(dir, n)));
        }
        if found.is_none() && vmie_hive::hive::names_equal(n, name) {
            found = Some(join(dir, n));
        }
    }
    Ok(found)
}

/// Resolve `rel` (`/`-separated) below `base` case-insensitively, component
/// by component. Returns the path with the names as stored.
pub(crate) fn find_ci(
    fs: &dyn GuestFs,
    base: &str,
    rel: &str,
    max_entries: usize,
) -> Result<Option<String>, FsError> {
    let mut cur = base.to_string();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        match find_entry_ci(fs, &cur, comp, max_entries)? {
            Some(p) => cur = p,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// The type of what `path` points at (symlinks followed inside the guest),
/// `None` when it cannot be reached.
pub(crate) fn file_type(fs: &dyn GuestFs, path: &str) -> Result<Option<FileType>, FsError> {
    match fs.metadata(path) {
        Ok((_, m)) => Ok(Some(m.file_type)),
        Err(e) if is_io(&e) => Err(e),
        Err(_) => Ok(None),
    }
}

/// A regular file below `base`, found case-insensitively.
pub(crate) fn find_file_ci(
    fs: &dyn GuestFs,
    base: &str,
    rel: &str,
    max_entries: usize,
) -> Result<Option<String>, FsError> {
    match find_ci(fs, base, rel, max_entries)? {
        Some(p) if file_type(fs, &p)? == Some(FileType::Regular) => Ok(Some(p)),
        _ => Ok(None),
    }
}

/// Contents of the regular file `path`, refusing (before reading) files
/// larger than `limit` bytes.
pub(crate) fn read_capped(fs: &dyn GuestFs, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
    let (p, m) = fs.metadata(path)?;
    if m.file_type != FileType::Regular {
        return Err(FsError::NotAFile {
            fs: fs.location(),
            path: p.to_string(),
        });
    }
    fs.read_file(&p, limit)
}
