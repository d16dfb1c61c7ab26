//! Developer tasks for the vmie-fixup workspace, run as `cargo xtask TASK`.

use xtask::{bench, ci, demo, fixtures, fuzz, guest, lvm};

use std::process::ExitCode;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask TASK [ARGS...]

tasks:
  fixtures   build the test disk images (cargo xtask fixtures --help)
  lvm        build the LVM fixture images with the real LVM tools (as root) [--force] [NAME...]
  demo       build the demo image and walk through the CLI on it
  bench      time whole CLI runs on the fixture images (release build) [RUNS]
  guest      build real Debian guests as a VMware source leaves them: mbr-ext4,
             mbr-logical-swap, separate-boot, netplan, lvm-root (XFS on LVM), hostonly,
             dracut-hostonly, xfs-root (debootstrap; cached)
  boot-test  boot each guest in qemu unfixed (must fail), fixed on virtio and
             on NVMe (must pass) [NAME...]
  fuzz       run the fuzz targets on stable, N seconds each (default 60):
             [--seconds N] [--sanitizer address|none] [TARGET...]
  deps       install the Debian packages the tests need (apt-get; as root)
  test       the whole suite, as CI runs it: deps, rustfmt, clippy -D warnings,
             fixtures, cargo test --workspace (extra args go to cargo test),
             30 s of each fuzz target (VMIE_SKIP_FUZZ=1 leaves it out);
             --full runs every property test at 200 cases (CI runs fewer)";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match task.as_str() {
        "fixtures" => fixtures::run(fixtures::parse_args(rest)?),
        "demo" => {
            ci::deps()?;
            demo::run(rest)
        }
        "deps" => ci::deps(),
        "bench" => bench::run(rest),
        "guest" => guest::guest(rest),
        "lvm" => lvm::run(rest),
        "boot-test" => guest::boot_test(rest),
        "fuzz" => fuzz::fuzz(&fuzz::parse_args(rest)?),
        "test" => ci::test(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}
