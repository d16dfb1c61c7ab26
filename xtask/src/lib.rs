//! Developer tasks for the vmie-fixup workspace, run as `cargo xtask TASK`.
//!
//! Also a library, so the end-to-end tests can build the fixture images they
//! need ([`fixtures::image()`]) without running cargo inside cargo.

pub mod bench;
pub mod ci;
pub mod demo;
pub mod deps;
pub mod fixtures;
pub mod fuzz;
pub mod guest;
pub mod lvm;
