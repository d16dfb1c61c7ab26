//! `cargo xtask deps` and `cargo xtask test`: what CI and a new developer run.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Install the missing Debian packages (the one list is in [`crate::deps`]).
pub fn deps() -> Result<()> {
    crate::deps::deps()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", format!("{cmd:?}").replace('"', ""));
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// The whole suite: packages, formatting, lints, fixtures, every test, and a
/// qemu boot of one real Debian guest before and after the fixup
/// (`VMIE_SKIP_BOOT_TEST=1` leaves the boot out, for quick local runs), and
/// a short run of every fuzz target (`VMIE_SKIP_FUZZ=1` leaves it out).
/// Cases per property test under `cargo xtask test --full`.
const FULL_CASES: &str = "200";

pub fn test(extra: &[String]) -> Result<()> {
    // --full: the property tests at their full count (every writer's random
    // operation sequences, 200 or more per filesystem flavour) instead of
    // the reduced count a CI run uses.
    let full = extra.iter().any(|a| a == "--full");
    let extra: Vec<&String> = extra.iter().filter(|a| *a != "--full").collect();
    deps()?;
    // Work that does not need the tests runs beside them, where a core is
    // often idle (many test binaries run one long test at a time): the
    // boot test's debootstraps and the fuzz targets' build (at nice 19).
    // Each is joined before its phase; if it failed, the phase does it
    // again in the foreground and reports its own error.
    let boot = std::env::var_os("VMIE_SKIP_BOOT_TEST").is_none();
    let fuzz = std::env::var_os("VMIE_SKIP_FUZZ").is_none();
    let fuzz_opts = crate::fuzz::parse_args(&["--seconds".into(), "60".into()])?;
    let trees = boot.then(|| std::thread::spawn(crate::guest::prepare_trees));
    let fuzz_build = fuzz.then(|| {
        let o = fuzz_opts.clone();
        std::thread::spawn(move || crate::fuzz::build(&o, true))
    });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = crate::fixtures::workspace_root();
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The library's documentation builds without a warning (its doc-tests
    // run with the tests below).
    run(Command::new(&cargo)
        .current_dir(&root)
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps", "-q"]))?;
    // Build every fixture once up front, so the tests (which run in parallel)
    // find them ready.
    let names = crate::fixtures::recipe_names()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::fixtures::ensure_built(&refs, &crate::fixtures::default_out_dir())?;
    let mut test = Command::new(&cargo);
    test.current_dir(&root)
        .args(["test", "--workspace"])
        .args(extra);
    if full {
        test.env("PROPTEST_CASES", FULL_CASES)
            .env("VMIE_PROPTEST_CASES", FULL_CASES);
    }
    run(&mut test)?;
    // Only a boot proves the guest works: a partition layout, the LVM one,
    // the host-only initramfs ones (drivers injected offline into an
    // initramfs-tools and a dracut image; dracut-hostonly adds about 6
    // minutes, its dracut install included) and the XFS root (written by
    // our XFS writer, read by GRUB and the kernel), each unfixed (must
    // fail) and fixed on virtio and NVMe (must pass). All layouts:
    // cargo xtask boot-test.
    if boot {
        joined("the guest trees", trees);
        crate::guest::boot_test(&[
            "mbr-logical-swap".to_string(),
            "lvm-root".to_string(),
            "hostonly".to_string(),
            "dracut-hostonly".to_string(),
            "xfs-root".to_string(),
        ])?;
    }
    // A minute per target, two targets at a time (about 9 minutes with the
    // build): the saved crash inputs, then new ones. Long runs: cargo xtask fuzz --seconds N.
    if fuzz {
        if joined("the fuzz build", fuzz_build) {
            crate::fuzz::run_targets(&fuzz_opts)?;
        } else {
            crate::fuzz::fuzz(&fuzz_opts)?;
        }
    }
    Ok(())
}

/// Wait for a background step; whether it succeeded (a failure is printed,
/// and the caller does the step again in the foreground).
fn joined(what: &str, h: Option<std::thread::JoinHandle<Result<()>>>) -> bool {
    match h.map(|h| h.join()) {
        Some(Ok(Ok(()))) => true,
        Some(Ok(Err(e))) => {
            eprintln!("xtask: {what} in the background failed, again now: {e:#}");
            false
        }
        Some(Err(_)) => {
            eprintln!("xtask: {what} in the background panicked, again now");
            false
        }
        None => false,
    }
}
