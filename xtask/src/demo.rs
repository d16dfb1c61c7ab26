//! `cargo xtask demo`: build the `demo` fixture and walk through the CLI on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::fixtures;

pub const USAGE: &str = "\
cargo xtask demo [--out DIR] [-v]

Builds the `demo` fixture (if it is not current) and runs the vmie-fixup CLI
on it, printing each command first: inspect, ls, cat, a dry run, then the real
fixup on a copy (target/demo/vm.raw), the fixed files read back, a second run
that changes nothing, and undo.";

pub fn run(args: &[String]) -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a directory")?)),
            "-v" | "--verbose" => fixtures::tools::set_verbose(true),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    let root = fixtures::workspace_root();
    let out = out.unwrap_or_else(fixtures::default_out_dir);

    println!("==> building the demo fixture (cargo xtask fixtures demo)");
    let outputs = fixtures::ensure_built(&["demo"], &out)?;
    let raw = &outputs
        .first()
        .context("internal error: demo fixture not built")?
        .raw;
    // Show paths relative to the workspace when we can: shorter to read and
    // to copy.
    let img = raw
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| raw.clone());
    let img = img.to_string_lossy().into_owned();

    ensure!(
        root.join("crates/vmie-fixup/Cargo.toml").is_file(),
        "the CLI crate crates/vmie-fixup does not exist yet; the image is ready at {img}"
    );

    // The real run writes: work on a copy, sparse like the fixture.
    let demo_dir = root.join("target/demo");
    std::fs::create_dir_all(&demo_dir)?;
    for entry in std::fs::read_dir(&demo_dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    let copy_abs = demo_dir.join("vm.raw");
    fixtures::image::create_sparse(&copy_abs, std::fs::metadata(raw)?.len())?;
    fixtures::image::copy_sparse(raw, &copy_abs, 0, u64::MAX)?;
    let copy = "target/demo/vm.raw".to_string();
    let copy1 = format!("{copy}:1");

    let part1 = format!("{img}:1");
    let steps: Vec<(&str, Vec<&str>)> = vec![
        (
            "what is on the disk, and the guest on it",
            vec!["inspect", &img],
        ),
        ("list /etc on partition 1", vec!["ls", &part1, "/etc"]),
        (
            "read /etc/os-release (a symlink to ../usr/lib/os-release)",
            vec!["cat", &part1, "/etc/os-release"],
        ),
        (
            "plan the fixup: a dry run writes nothing",
            vec!["--dry-run", &img],
        ),
        ("fix a copy of the image in place", vec![&copy]),
        (
            "the fixed /etc/fstab, read back from the image",
            vec!["cat", &copy1, "/etc/fstab"],
        ),
        (
            "the original, kept beside it",
            vec!["cat", &copy1, "/etc/fstab.vmie.bak"],
        ),
        ("a second run changes nothing", vec![&copy]),
        (
            "undo: the copy is byte for byte the original again",
            vec!["undo", &copy],
        ),
    ];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for (n, (title, args)) in steps.iter().enumerate() {
        println!();
        println!("==> step {}: {title}", n + 1);
        println!("$ cargo run --quiet -p vmie-fixup -- {}", args.join(" "));
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["run", "--quiet", "-p", "vmie-fixup", "--"])
            .args(args)
            .status()
            .context("running cargo")?;
        ensure!(status.success(), "step {} failed ({status})", n + 1);
    }
    ensure!(
        fixtures::image::digest(&copy_abs, &[])? == fixtures::image::digest(raw, &[])?,
        "after undo the copy differs from the original"
    );
    println!();
    println!("==> after undo, {copy} is byte for byte the original image");
    println!();
    println!("==> demo done; the image is {img} (described by {})", {
        let j = &outputs[0].json;
        j.strip_prefix(&root).unwrap_or(j).display().to_string()
    });
    Ok(())
}
