//! The panic boundary around third-party parsers.
//!
//! Every call into a crate we do not own that parses guest bytes (ext4-view,
//! ntfs, mbrman, gpt, nt-hive, the decompressors) is made through
//! [`catch`]. Those crates are only handed structures we validated first;
//! this is defence in depth: a panic we did not foresee becomes an ordinary
//! refusal ([`Panicked`]) that names what was being parsed, instead of
//! ending the process.
//!
//! The process keeps `panic = "unwind"` for this to work. A panic inside a
//! boundary is not printed by the CLI's panic hook when the hook asks
//! [`inside`] first; the message travels in the error instead.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// A third-party parser panicked on guest data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: the parser failed on corrupt data ({message})")]
pub struct Panicked {
    /// What was being parsed: volume, path, structure.
    pub what: String,
    /// The panic's message (the parser's own words).
    pub message: String,
}

/// True while the current thread runs inside [`catch`]: a panic hook uses it
/// to stay quiet about panics that are about to become refusals.
pub fn inside() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

struct Depth;

impl Depth {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f`, turning a panic into [`Panicked`] naming `what`.
///
/// State that `f` mutated may be half-updated after a panic; callers drop
/// whatever `f` borrowed mutably (a parser's cache, an in-memory hive) rather
/// than use it again.
pub fn catch<T>(what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> Result<T, Panicked> {
    let _depth = Depth::enter();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            Err(Panicked {
                what: what(),
                message,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_what() {
        let r: Result<(), _> = catch(
            || "partition 1: /etc".into(),
            || panic!("index 9 out of range"),
        );
        let e = r.unwrap_err();
        assert_eq!(e.what, "partition 1: /etc");
        assert!(e.message.contains("index 9"));
        assert!(!inside());
        assert_eq!(catch(String::new, || 7), Ok(7));
    }

    #[test]
    fn nesting_is_counted() {
        let r = catch(String::new, || {
            assert!(inside());
            let inner: Result<(), _> = catch(String::new, || panic!("x"));
            assert!(inner.is_err());
            inside()
        });
        assert_eq!(r, Ok(true));
        assert!(!inside());
    }
}
