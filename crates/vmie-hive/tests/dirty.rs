#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Dirty hives: log replay matches the hives Windows recovered.

mod common;
use common::*;
use vmie_hive::{export_hivex_bytes, verify_with_nt_hive, Hive, HiveError};

const Y: &str = "yarp/hives_for_tests/";

fn recover(dir: &str, name: &str) -> vmie_hive::Result<(Hive, vmie_hive::RecoveryReport)> {
    let p = read_real(&format!("{Y}{dir}/{name}"));
    let l1 = read_real(&format!("{Y}{dir}/{name}.LOG1"));
    let l2 = read_real(&format!("{Y}{dir}/{name}.LOG2"));
    Hive::from_bytes_with_logs(p, &[&l1, &l2], &opts(name))
}

fn same_export(a: &Hive, b: &Hive) {
    let x = export_hivex_bytes(a, None, None).unwrap();
    let y = export_hivex_bytes(b, None, None).unwrap();
    assert!(x == y, "{}", show_diff(&x, &y));
}

#[test]
fn new_format_logs_give_what_windows_10_recovered() {
    let (h, rep) = recover("NewDirtyHive1", "NewDirtyHive").unwrap();
    assert!(rep.was_dirty && !rep.entries_applied.is_empty(), "{rep:?}");
    same_export(
        &h,
        &open(&format!("{Y}NewDirtyHive1/RecoveredHive_Windows10")),
    );
    // The result is a clean hive that nt-hive and hivex read.
    verify_with_nt_hive(h.bytes(), &[]).unwrap();
    if have_hivex() {
        assert!(
            hivex_export_bytes(h.bytes(), "\\").unwrap()
                == export_hivex_bytes(&h, None, None).unwrap()
        );
    }
    // Without logs: refused.
    let e = Hive::from_bytes(
        read_real(&format!("{Y}NewDirtyHive1/NewDirtyHive")),
        &opts("x"),
    )
    .unwrap_err();
    assert!(matches!(e, HiveError::Dirty { .. }));
    // Same logs on the second dirty hive.
    let (h2, rep2) = recover("NewDirtyHive2", "NewDirtyHive").unwrap();
    assert!(!rep2.entries_applied.is_empty());
    h2.walk(h2.root()).unwrap();
}

#[test]
fn old_format_log_gives_what_windows_7_recovered() {
    let (h, rep) = recover("OldDirtyHive", "OldDirtyHive").unwrap();
    assert_eq!(rep.old_logs_applied, vec![0], "{rep:?}");
    same_export(
        &h,
        &open(&format!("{Y}OldDirtyHive/RecoveredHive_Windows7")),
    );
    verify_with_nt_hive(h.bytes(), &[]).unwrap();
}

#[test]
fn bad_base_block_is_taken_from_the_log() {
    let (h, rep) = recover("BadBaseBlockHive", "BadBaseBlockHive").unwrap();
    assert!(rep.base_block_from_log, "{rep:?}");
    same_export(
        &h,
        &open(&format!("{Y}OldDirtyHive/RecoveredHive_Windows7")),
    );
}

#[test]
fn bad_logs_are_refused_or_partially_applied_never_panic() {
    let e = recover("BadLogHive1", "BadLogHive").unwrap_err();
    assert!(e.to_string().contains("BadLogHive"), "{e}");
    match recover("BadLogHive3", "BadLogHive") {
        Ok((h, _)) => {
            h.walk(h.root()).unwrap();
        }
        Err(e) => assert!(matches!(e, HiveError::Dirty { .. }), "{e}"),
    }
}

#[test]
fn regipy_dirty_system_logs_do_not_continue_it_and_are_refused() {
    // SYSTEM_B is at sequence 1622/1621 but its logs hold entries 2107..2130:
    // they do not continue this hive, so replaying them would mix states.
    let p = read_real("regipy/SYSTEM_B.xz");
    let l1 = read_real("regipy/SYSTEM_B.LOG1.xz");
    let l2 = read_real("regipy/SYSTEM_B.LOG2.xz");
    assert!(matches!(
        Hive::from_bytes(p.clone(), &opts("SYSTEM_B")),
        Err(HiveError::Dirty { .. })
    ));
    let e = Hive::from_bytes_with_logs(p.clone(), &[&l1, &l2], &opts("SYSTEM_B")).unwrap_err();
    assert!(
        matches!(
            e,
            HiveError::Dirty {
                primary: 1622,
                secondary: 1621,
                ..
            }
        ),
        "{e}"
    );
    // Read-only view of the primary as hivex would show it.
    let o = vmie_hive::HiveOptions {
        ignore_dirty: true,
        ..opts("SYSTEM_B")
    };
    let h = Hive::from_bytes(p, &o).unwrap();
    h.walk(h.root()).unwrap();
    assert!(vmie_hive::system::current_control_set(&h)
        .unwrap()
        .starts_with("ControlSet00"));
}

#[test]
fn clean_hive_ignores_logs() {
    let p = read_real("hivex/images/minimal");
    let (h, rep) =
        Hive::from_bytes_with_logs(p.clone(), &[&[], &[1, 2, 3]], &opts("minimal")).unwrap();
    assert!(!rep.was_dirty);
    assert_eq!(h.bytes(), &p[..]);
}

/// BadLogHive3 = NewDirtyHive1's primary with a damaged LOG1 and another
/// LOG2: whatever we replay must be a valid prefix of the sequence.
#[test]
fn bad_log_hive3_replays_a_consistent_sequence() {
    let (h, rep) = recover("BadLogHive3", "BadLogHive").unwrap();
    assert_eq!(rep.entries_applied.first(), Some(&2), "{rep:?}");
    assert!(
        rep.entries_applied.windows(2).all(|w| w[1] == w[0] + 1),
        "{rep:?}"
    );
    h.walk(h.root()).unwrap();
    verify_with_nt_hive(h.bytes(), &[]).unwrap();
    let win = open(&format!("{Y}NewDirtyHive1/RecoveredHive_Windows10"));
    let same = export_hivex_bytes(&h, None, None).unwrap()
        == export_hivex_bytes(&win, None, None).unwrap();
    assert!(
        same,
        "BadLogHive3 recovers to what Windows 10 recovered from the same primary"
    );
}
