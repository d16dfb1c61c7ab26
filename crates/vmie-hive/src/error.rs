//! The error type of vmie-hive: every refusal names the hive, and where known
//! the cell offset and the key path.

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, HiveError>;

/// Everything that can go wrong reading, editing or checking a hive.
#[derive(Debug, thiserror::Error)]
pub enum HiveError {
    /// The bytes are not a regf hive (bad magic, bad base block, unsupported version).
    #[error("{hive}: not a usable registry hive: {reason}")]
    NotAHive { hive: String, reason: String },

    /// A structure inside the hive is inconsistent (out-of-range cell, bad signature, cycle, ...).
    #[error("{hive}: corrupt hive at cell offset {offset:#x} (key {path}): {reason}")]
    Corrupt {
        hive: String,
        offset: u32,
        path: String,
        reason: String,
    },

    /// The hive was not cleanly written back (sequence numbers differ) and no usable log was given.
    #[error("{hive}: hive is dirty (primary sequence {primary} != secondary sequence {secondary}); {reason}")]
    Dirty {
        hive: String,
        primary: u32,
        secondary: u32,
        reason: String,
    },

    /// A transaction log could not be used.
    #[error("{hive}: log {log}: {reason}")]
    Log {
        hive: String,
        log: String,
        reason: String,
    },

    /// A limit of [`crate::HiveOptions`] was reached.
    #[error("{hive}: limit exceeded at key {path}: {what}")]
    Limit {
        hive: String,
        path: String,
        what: String,
    },

    /// The key does not exist.
    #[error("{hive}: key not found: {path}")]
    KeyNotFound { hive: String, path: String },

    /// The value does not exist.
    #[error("{hive}: value {name:?} not found in key {path}")]
    ValueNotFound {
        hive: String,
        path: String,
        name: String,
    },

    /// The caller asked for something impossible (bad name, key exists, delete the root, ...).
    #[error("{hive}: invalid request at key {path}: {reason}")]
    Invalid {
        hive: String,
        path: String,
        reason: String,
    },

    /// A `.reg` text could not be parsed.
    #[error(".reg text, line {line}: {reason}")]
    RegParse { line: usize, reason: String },

    /// The independent re-read of an edited hive (nt-hive) disagreed with what we wrote.
    #[error("{hive}: self-check with nt-hive failed at key {path}: {reason}")]
    Verify {
        hive: String,
        path: String,
        reason: String,
    },
}

impl HiveError {
    /// True when the input (hive, log, .reg text or request) is refused; false for internal errors.
    /// Every variant of this crate is a refusal of its input: the library does no I/O.
    pub fn is_refusal(&self) -> bool {
        true
    }

    /// Fill in the key path of a `Corrupt`/`Limit` error that was raised below the path-aware layer.
    pub(crate) fn at_path(mut self, key_path: &str) -> Self {
        match &mut self {
            HiveError::Corrupt { path, .. } | HiveError::Limit { path, .. } if path.is_empty() => {
                *path = key_path.to_string();
            }
            _ => {}
        }
        self
    }
}
