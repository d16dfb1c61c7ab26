//! vmie-hive: Windows registry hives (regf 1.3–1.6) read, exported, merged and
//! edited in place, in memory. Hives are hostile input: every read is
//! bounds-checked, every walk bounded ([`HiveOptions`]), every loop over
//! on-disk links has cycle detection, and nothing here panics.
//!
//! The caller reads the hive file from the guest, and writes `bytes()` back
//! through the overlay:
//!
//! ```text
//! let mut hive = Hive::from_bytes(bytes, &HiveOptions { name: guest_path, ..Default::default() })?;
//! // or Hive::from_bytes_with_logs(bytes, &[&log1, &log2], &opts)? for a dirty hive
//! let ccs = system::current_control_set(&hive)?;
//! hive.set_value(&format!("{ccs}\\Services\\viostor"), "Start", reg_type::DWORD, &0u32.to_le_bytes())?;
//! merge(&mut hive, reg_text)?;                       // hivexregedit --merge semantics
//! verify_with_nt_hive(hive.bytes(), &edits)?;        // independent re-read
//! write_back(hive.to_bytes());
//! ```
//!
//! * Reading: [`Hive::open_key`], [`Hive::subkeys`], [`Hive::values`],
//!   [`Hive::get_value`], [`Value::decoded`], [`get`].
//! * Export: [`export()`] / [`try_export`] (UTF-8 text) and
//!   [`export_hivex_bytes`] (byte-identical to `hivexregedit --export`).
//! * Edits: [`Hive::set_value`], [`Hive::delete_value`], [`Hive::create_key`],
//!   [`Hive::ensure_key`], [`Hive::delete_key`]; [`merge()`] / [`merge_with`].
//!   Edits allocate from free cells (first fit, split), coalesce on free,
//!   append hbins when full, keep subkey lists sorted with correct lh/lf
//!   hashes (also inside ri indexes), share and refcount the parent's security
//!   cell, and keep the base block consistent (sequence numbers bumped once
//!   per session and equal, timestamp, hive bins data size, checksum).
//! * Dirty hives: [`Hive::from_bytes_with_logs`] (new "HvLE" and old "DIRT" logs).
//! * Helpers: [`system::current_control_set`], [`bcd`].
//!
//! Key-name comparison upcases with `char::to_uppercase` where that maps to
//! exactly one character (an approximation of the Windows upcase table; it
//! agrees with every lh hash stored in the real test hives).
#![forbid(unsafe_code)]

pub mod error;
pub mod export;
pub mod hive;

pub use error::{HiveError, Result};
pub use export::{export, export_hivex_bytes, try_export};
pub use hive::{reg_type, Decoded, Hive, HiveOptions, KeyId, Value, ValueId};
pub mod edit;
pub mod merge;
pub use merge::{merge, merge_with, parse_reg, MergeOptions, MergeReport, RegOp};
pub mod validate;
pub mod verify;
pub use validate::Validation;
pub use verify::{verify_with_nt_hive, Edit};
pub mod api;
pub mod bcd;
pub mod system;
pub use api::{get, GetResult};
pub mod log;
pub use log::RecoveryReport;
#[cfg(test)]
mod tests;
