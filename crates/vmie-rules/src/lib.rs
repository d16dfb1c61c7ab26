//! Fixup actions: small, pure editors of guest configuration files. Each takes
//! the file's text and the facts it needs, and returns the new text with a
//! list of what changed and why. They keep comments, order and spacing of
//! every line they do not change, and are idempotent: a second pass over
//! their own output changes nothing.
#![forbid(unsafe_code)]

pub mod fstab;
pub mod rules;
