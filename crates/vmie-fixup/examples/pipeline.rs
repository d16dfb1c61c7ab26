//! A pipeline step built on the library: plan the fixup of a VM's images,
//! show what would change, and commit only when the plan is clean.
//!
//!     cargo run -p vmie-fixup --example pipeline -- [--commit] IMAGE...
//!
//! There is no way here to skip the preflight gate or the self-check:
//! `plan` does both before a `Plan` exists, and `Plan::commit` refuses a
//! blocked plan.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut commit = false;
    let mut images = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--commit" {
            commit = true;
        } else {
            images.push(PathBuf::from(a));
        }
    }
    let rules = match vmie_fixup::load_rules(false, &[]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let opts = vmie_fixup::FixOptions {
        dry_run: !commit,
        ..vmie_fixup::FixOptions::new(rules)
    };
    let plan = match vmie_fixup::plan(&images, &opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    for c in &plan.report().changes {
        println!("{} ({})", c.path, c.rules.join(", "));
    }
    if !commit || plan.is_empty() {
        return ExitCode::SUCCESS;
    }
    match plan.commit() {
        Ok(report) => {
            println!(
                "committed; undo journal: {}",
                report.undo_journal.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipeline: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
