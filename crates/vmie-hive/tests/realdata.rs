#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every real hive opens (or is refused clearly) and exports exactly as
//! `hivexregedit --export` does.

mod common;
use common::*;
use vmie_hive::{export_hivex_bytes, Hive, HiveError, HiveOptions};

/// Clean hives: must open, walk, and export byte-identically to hivexregedit.
const CLEAN: &[&str] = &[
    "regipy/SYSTEM",
    "regipy/SAM",
    "regipy/NTUSER.DAT",
    "regipy/BCD",
    "yarp/hives_for_tests/EmptyHive",
    "yarp/hives_for_tests/BigDataHive",
    "yarp/hives_for_tests/UnicodeHive",
    "yarp/hives_for_tests/SlackHive",
    "yarp/hives_for_tests/StringValuesHive",
    "yarp/hives_for_tests/OffHive",
    "yarp/hives_for_tests/NewDirtyHive1/RecoveredHive_Windows10",
    "yarp/hives_for_tests/OldDirtyHive/RecoveredHive_Windows7",
    "yarp/hives_for_tests/ManySubkeysHive",
    "yarp/hives_for_tests/DuplicateSubkeysHive",
    "yarp/hives_for_tests/NewFlagsHive",
    "yarp/hives_for_tests/WrongOrderHive",
    "yarp/hives_for_tests/ExtendedASCIIHive",
    "yarp/hives_for_tests/CompHive",
    "yarp/hives_for_tests/BogusKeyNamesHive",
    "yarp/hives_for_tests/HealedHive",
    "yarp/hives_for_tests/DeletedTreeHive",
    "yarp/hives_for_tests/UpcaseHive",
    "yarp/hives_for_tests/MultiSzHive",
    "hivex/images/minimal",
    "hivex/images/special",
    "hivex/images/rlenvalue_test_hive",
    "nt-hive/testdata/testhive",
    "python-registry/tests/reg_samples/REORGANIZED_VALUES_TESTS",
    "python-registry/tests/reg_samples/issue22.hive",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "EricZimmerman-Registry/NTUSER1.DAT",
    "EricZimmerman-Registry/SAM",
    "EricZimmerman-Registry/BCD",
    "windeploy-linux/BCD",
    "windeploy-linux/BCD-efi",
    "virt-v2v/test-data/phony-guests/minimal-hive",
    "aiowinreg/nt/system.reg",
    "aiowinreg/nt/software.reg",
];

/// Dirty hives shipped without logs: refused by default; with `ignore_dirty`
/// (read-only, as hivex reads them) they export like hivexregedit.
const DIRTY_NO_LOGS: &[&str] = &[
    "regipy/SYSTEM_WIN_10_1709",
    "regipy/SYSTEM_2.xz",
    "regipy/SECURITY",
    "EricZimmerman-Registry/SECURITY",
];

fn export_matches_hivex(rel: &str, hive: &Hive, bytes: &[u8]) {
    let ours = export_hivex_bytes(hive, None, None).unwrap_or_else(|e| panic!("{rel}: {e}"));
    if !have_hivex() {
        return;
    }
    let theirs =
        hivex_export_bytes(bytes, "\\").unwrap_or_else(|| panic!("{rel}: hivexregedit failed"));
    assert!(
        ours == theirs,
        "{rel}: export differs from hivexregedit: {}",
        show_diff(&ours, &theirs)
    );
}

#[test]
fn clean_real_hives_export_like_hivex() {
    for rel in CLEAN {
        let bytes = read_real(rel);
        let hive =
            Hive::from_bytes(bytes.clone(), &opts(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (k, _) = hive
            .walk(hive.root())
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(k >= 1);
        // The whole-hive validation that gates every edit accepts every clean real hive.
        let v = hive
            .validate()
            .unwrap_or_else(|e| panic!("{rel}: validation refuses a clean hive: {e}"));
        assert_eq!(v.keys, k, "{rel}: validation and walk see the same keys");
        export_matches_hivex(rel, &hive, &bytes);
    }
}

#[test]
fn dirty_hives_without_logs_are_refused_or_read_only() {
    for rel in DIRTY_NO_LOGS {
        let bytes = read_real(rel);
        let err = Hive::from_bytes(bytes.clone(), &opts(rel)).unwrap_err();
        assert!(matches!(err, HiveError::Dirty { .. }), "{rel}: {err}");
        assert!(err.to_string().contains(rel), "error names the hive: {err}");
        let o = HiveOptions {
            ignore_dirty: true,
            ..opts(rel)
        };
        let mut hive = Hive::from_bytes(bytes.clone(), &o).unwrap();
        export_matches_hivex(rel, &hive, &bytes);
        let e = hive.set_value("\\", "x", 4, &[1, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
    }
}

#[test]
fn broken_hives_are_refused_with_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        ("yarp/hives_for_tests/TruncatedHive", "truncated"),
        (
            "yarp/hives_for_tests/TruncatedHiveBin",
            "shorter than a base block",
        ),
        ("yarp/hives_for_tests/GarbageHive", "checksum"),
        (
            "yarp/hives_for_tests/BadBaseBlockHive/BadBaseBlockHive",
            "version",
        ),
        ("regipy/corrupted_system_hive", "hbin"),
        (
            "virt-v2v/test-data/phony-guests/windows-system.reg",
            "shorter than a base block",
        ),
    ];
    for (rel, what) in cases {
        let err = Hive::from_bytes(read_real(rel), &opts(rel)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(rel) && msg.contains(what), "{rel}: {msg}");
    }
}

#[test]
fn reads_typed_values() {
    let h = open("regipy/SYSTEM");
    let sel = h.open_key("\\select").unwrap();
    let cur = h.get_value(sel, "CURRENT").unwrap().unwrap();
    assert_eq!(cur.decoded(), vmie_hive::Decoded::Dword(1));
    // Key paths are case-insensitive and tolerate leading/duplicate backslashes.
    assert_eq!(
        h.open_key("ControlSet001\\\\services").unwrap(),
        h.open_key("\\CONTROLSET001\\Services").unwrap()
    );
    assert!(matches!(
        h.open_key("\\NoSuchKey"),
        Err(HiveError::KeyNotFound { .. })
    ));
    // Big data (db) values.
    let big = open("yarp/hives_for_tests/BigDataHive");
    let mut max = 0;
    for k in big.subkeys(big.root()).unwrap() {
        for v in big.values(k).unwrap() {
            max = max.max(big.value(v).unwrap().data.len());
        }
    }
    assert!(max > 16344, "BigDataHive has a big value ({max})");
}

#[test]
fn subtree_export_with_prefix_like_hivex() {
    let rel = "regipy/SYSTEM";
    let hive = open(rel);
    let key = "\\ControlSet001\\Control\\Session Manager";
    let ours = export_hivex_bytes(&hive, Some(key), Some("HKEY_LOCAL_MACHINE\\SYSTEM\\")).unwrap();
    assert!(ours.starts_with(b"Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Session Manager]\n"));
    if have_hivex() {
        let o = std::process::Command::new("hivexregedit")
            .args(["--export", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM\\"])
            .arg(real(rel))
            .arg(key)
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(ours == o.stdout, "{}", show_diff(&ours, &o.stdout));
    }
}
