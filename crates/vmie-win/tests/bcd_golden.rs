#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! BCD stores: the virt-v2v phony guests' (`windows-bcd.reg`) and regipy's
//! real one; values as `hivexregedit --export` shows them.

mod common;
use common::*;

use vmie_win::{boot_config, BootConfig, BOOTMGR_GUID, ELEM_BOOTEMS, ELEM_OSLOADER_EMS};

#[test]
fn virt_v2v_phony_bcd() {
    let b = boot_config(&bcd_v2v()).unwrap();
    assert_eq!(
        b,
        BootConfig {
            path: None,
            default_entry: Some("{9dd54393-76ea-11ed-8c7c-de4e190a0ee1}".into()),
            default_description: Some("Windows 11".into()),
            default_path: Some("\\Windows\\system32\\winload.efi".into()),
            // 25000004 = 0x1e.
            timeout: Some(30),
            // {bootmgr} → {globalsettings} → {emssettings}: 16000020 = 00.
            bootems: Some(false),
            // No 260000b0 on the default loader; its 16000020 is inherited
            // from {emssettings} (00).
            ems: Some(false),
            ems_entries: vec![],
            bootstatuspolicy: None,
            // 16000009 = 01 on the default entry.
            recovery_enabled: Some(true),
        }
    );
    assert!(!b.ems_enabled());
}

#[test]
fn regipy_bcd() {
    let b = boot_config(&real_hive("regipy/BCD")).unwrap();
    assert_eq!(
        b,
        BootConfig {
            path: None,
            default_entry: Some("{733b62e5-f608-11eb-825c-c112f60133ab}".into()),
            default_description: Some("Windows 10".into()),
            default_path: Some("\\Windows\\system32\\winload.efi".into()),
            timeout: Some(30),
            bootems: Some(false),
            ems: Some(false),
            ems_entries: vec![],
            bootstatuspolicy: None,
            recovery_enabled: Some(true),
        }
    );
}

/// `bcdedit /ems {default} on` and `/bootems {bootmgr} on`, done with
/// vmie-hive's BCD editor, are seen.
#[test]
fn ems_switched_on() {
    let mut h = bcd_v2v();
    let def = "{9dd54393-76ea-11ed-8c7c-de4e190a0ee1}";
    vmie_hive::bcd::set_boolean(&mut h, def, ELEM_OSLOADER_EMS, true).unwrap();
    let b = boot_config(&h).unwrap();
    assert_eq!(b.ems, Some(true));
    assert_eq!(b.ems_entries, vec![def.to_string()]);
    assert_eq!(b.bootems, Some(false));
    assert!(b.ems_enabled());

    let mut h = bcd_v2v();
    vmie_hive::bcd::set_boolean(&mut h, BOOTMGR_GUID, ELEM_BOOTEMS, true).unwrap();
    let b = boot_config(&h).unwrap();
    assert_eq!((b.bootems, b.ems), (Some(true), Some(false)));
    assert!(b.ems_enabled());

    // `bcdedit /bootems {default} on` puts 16000020 on the loader itself.
    let mut h = bcd_v2v();
    vmie_hive::bcd::set_boolean(&mut h, def, ELEM_BOOTEMS, true).unwrap();
    let b = boot_config(&h).unwrap();
    assert_eq!((b.bootems, b.ems), (Some(false), Some(true)));
    assert_eq!(b.ems_entries, vec![def.to_string()]);
    assert!(b.ems_enabled());
}

/// Inherit cycles (an object inheriting itself through another) end.
#[test]
fn inherit_cycle_terminates() {
    let mut h = bcd_v2v();
    let text = r#"Windows Registry Editor Version 5.00

[\Objects\{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}\Elements\14000006]
"Element"=hex(7):7b,00,39,00,64,00,65,00,61,00,38,00,36,00,32,00,63,00,2d,00,35,00,63,00,64,00,64,00,2d,00,34,00,65,00,37,00,30,00,2d,00,61,00,63,00,63,00,31,00,2d,00,66,00,33,00,32,00,62,00,33,00,34,00,34,00,64,00,34,00,37,00,39,00,35,00,7d,00,00,00,00,00
"#;
    // {globalsettings} now inherits {bootmgr}, which inherits {globalsettings}.
    vmie_hive::merge(&mut h, text).unwrap();
    let b = boot_config(&h).unwrap();
    assert_eq!(b.bootems, None);
    assert_eq!(b.timeout, Some(30));
}

/// A hive that is not a BCD is an error, not a panic.
#[test]
fn not_a_bcd() {
    assert!(boot_config(&software("win10")).is_err());
}
