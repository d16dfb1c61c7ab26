#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SYSTEM and BCD helpers and the CLI API on real hives.

mod common;
use common::*;
use vmie_hive::bcd::{self, BcdValue};
use vmie_hive::{get, verify_with_nt_hive, Edit, GetResult, Hive};

const BOOTMGR: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";

#[test]
fn current_control_set_of_real_system_hives() {
    assert_eq!(
        vmie_hive::system::current_control_set(&open("regipy/SYSTEM")).unwrap(),
        "ControlSet001"
    );
    let e = vmie_hive::system::current_control_set(&open("regipy/SAM")).unwrap_err();
    assert!(e.to_string().contains("Select"), "{e}");
}

#[test]
fn bcd_objects_of_real_stores() {
    for rel in [
        "regipy/BCD",
        "windeploy-linux/BCD",
        "windeploy-linux/BCD-efi",
        "EricZimmerman-Registry/BCD",
    ] {
        let h = open(rel);
        let objs = bcd::show(&h);
        assert!(!objs.is_empty(), "{rel}");
        let bm = objs
            .iter()
            .find(|o| o.guid.eq_ignore_ascii_case(BOOTMGR))
            .unwrap_or_else(|| panic!("{rel}: no bootmgr"));
        assert_eq!(bm.object_type, Some(0x1010_0002), "{rel}");
        assert_eq!(
            bm.description.as_deref(),
            Some("Windows Boot Manager"),
            "{rel}"
        );
        // Every element decodes to its format.
        for o in &objs {
            for e in &o.elements {
                assert!(
                    !matches!(e.value, BcdValue::Raw(..)),
                    "{rel} {} {:08x}: {:?}",
                    o.guid,
                    e.code,
                    e.value
                );
            }
        }
    }
    assert!(bcd::show(&open("hivex/images/minimal")).is_empty());
}

#[test]
fn bcd_set_boolean_and_integer() {
    let mut h = open("windeploy-linux/BCD");
    // displaybootmenu (26000020) and timeout (25000004) on bootmgr.
    bcd::set_boolean(&mut h, BOOTMGR, 0x2600_0020, true).unwrap();
    bcd::set_integer(&mut h, BOOTMGR, 0x2500_0004, 7).unwrap();
    assert!(
        bcd::set_integer(&mut h, BOOTMGR, 0x2600_0020, 1).is_err(),
        "format checked"
    );
    assert!(bcd::set_boolean(
        &mut h,
        "{00000000-0000-0000-0000-000000000000}",
        0x2600_0020,
        true
    )
    .is_err());
    let els = bcd::elements(&h, BOOTMGR).unwrap();
    assert!(els
        .iter()
        .any(|e| e.code == 0x2600_0020 && e.value == BcdValue::Boolean(true)));
    assert!(els
        .iter()
        .any(|e| e.code == 0x2500_0004 && e.value == BcdValue::Integer(7)));
    let k = format!("\\Objects\\{BOOTMGR}\\Elements");
    verify_with_nt_hive(
        h.bytes(),
        &[
            Edit::SetValue {
                key: format!("{k}\\26000020"),
                name: "Element".into(),
                vtype: 3,
                data: vec![1],
            },
            Edit::SetValue {
                key: format!("{k}\\25000004"),
                name: "Element".into(),
                vtype: 3,
                data: 7u64.to_le_bytes().to_vec(),
            },
        ],
    )
    .unwrap();
    if have_hivex() {
        let ours = vmie_hive::export_hivex_bytes(&h, None, None).unwrap();
        assert!(hivex_export_bytes(h.bytes(), "\\").unwrap() == ours);
    }
}

#[test]
fn get_api() {
    let h = open("regipy/SYSTEM");
    match get(&h, "\\Select", None).unwrap() {
        GetResult::Key {
            path,
            subkeys,
            values,
        } => {
            assert_eq!(path, "\\Select");
            assert!(subkeys.is_empty());
            assert!(values.iter().any(|v| v.name == "Current"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        get(&h, "\\Select", Some("current")).unwrap(),
        GetResult::Value(_)
    ));
    assert!(get(&h, "\\Select", Some("nope")).is_err());
    let s = vmie_hive::export(&h, Some("\\Select"));
    assert!(
        s.starts_with(
            "Windows Registry Editor Version 5.00\n\n[\\Select]\n\"Current\"=dword:00000001\n"
        ),
        "{s}"
    );
    assert!(vmie_hive::export(&h, Some("\\Nope")).starts_with("; export failed"));
    let _ = Hive::from_bytes(vec![], &opts("empty")).unwrap_err();
}
