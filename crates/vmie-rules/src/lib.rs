//! Fixup actions: small, pure editors of guest configuration files. Each takes
//! the file's text and the facts it needs, and returns the new text with a
//! list of what changed and why. They keep comments, order and spacing of
//! every line they do not change, and are idempotent: a second pass over
//! their own output changes nothing.
#![forbid(unsafe_code)]

pub mod boot;
pub mod diff;
pub mod engine;
pub mod fstab;
pub mod network;
pub mod rules;
pub mod shellvars;
pub mod windows;
mod winrun;

use serde::Serialize;

/// What an action did to one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// 1-based line number (in the old file; for added lines, where they went).
    pub line: usize,
    /// The line before (empty for an added line).
    pub before: String,
    /// The line after (empty for a removed line).
    pub after: String,
    /// Why, for the report.
    pub reason: String,
}

/// The result of an action on one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The new file.
    pub text: String,
    /// Every changed line.
    pub changes: Vec<Change>,
    /// Things worth telling that were left alone.
    pub notes: Vec<String>,
}

/// Split `text` into lines with their line ending (`\n`, `\r\n` or none).
pub(crate) fn lines_with_eol(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n')
        .map(|raw| match raw.strip_suffix('\n') {
            Some(l) => match l.strip_suffix('\r') {
                Some(l2) => (l2, "\r\n"),
                None => (l, "\n"),
            },
            None => (raw, ""),
        })
}
