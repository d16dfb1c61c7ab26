//! The library API (`vmie_fixup::plan`, `Plan::commit`, `undo`) as a
//! pipeline author uses it, on fixture images built by the real tools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn fixture(name: &str) -> std::path::PathBuf {
    xtask::fixtures::image(name).unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

/// Issue 18: the example pipeline plans on the library, and the library
/// refuses to commit what the preflight gate blocked.
#[test]
fn library_pipeline_cannot_skip_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.raw");
    std::fs::copy(fixture("demo"), &img).unwrap();
    let opts = vmie_fixup::FixOptions::new(vmie_fixup::load_rules(false, &[]).unwrap());
    let plan = vmie_fixup::plan(std::slice::from_ref(&img), &opts).unwrap();
    assert!(!plan.is_blocked());
    let paths: Vec<&str> = plan
        .report()
        .changes
        .iter()
        .map(|c| c.path.as_str())
        .collect();
    assert!(paths.contains(&"/etc/fstab"), "{paths:?}");
    let report = plan.commit().unwrap();
    assert!(report.applied && report.undo_journal.len() == 1);
    vmie_fixup::undo(&img).unwrap();

    // A blank boot disk is not a disk image: refused before any plan.
    let blank = dir.path().join("blank.raw");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert!(matches!(
        vmie_fixup::plan(std::slice::from_ref(&blank), &opts),
        Err(vmie_fixup::FixError::NotADisk(_))
    ));

    // A disk with partitions but no Linux root: the gate blocks the plan,
    // and commit refuses with nothing written.
    let mixed = dir.path().join("mixed.raw");
    std::fs::copy(fixture("gpt-mixed"), &mixed).unwrap();
    let plan = vmie_fixup::plan(std::slice::from_ref(&mixed), &opts).unwrap();
    assert!(plan.is_blocked());
    let before = std::fs::read(&mixed).unwrap();
    assert!(matches!(
        plan.commit(),
        Err(vmie_fixup::FixError::Blocked(_))
    ));
    assert_eq!(std::fs::read(&mixed).unwrap(), before);

    // A dry-run plan is never written.
    let dry = vmie_fixup::FixOptions {
        dry_run: true,
        ..opts
    };
    let plan = vmie_fixup::plan(std::slice::from_ref(&img), &dry).unwrap();
    assert!(!plan.is_empty());
    assert!(matches!(plan.commit(), Err(vmie_fixup::FixError::DryRun)));
}
