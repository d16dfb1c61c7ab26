#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Merging .reg files gives what `hivexregedit --merge` gives.

mod common;
use common::*;
use std::process::Command;
use vmie_hive::{export_hivex_bytes, merge, merge_with, Hive, HiveError, MergeOptions};

const V2V: &str = "virt-v2v/test-data/phony-guests/";

fn prefix_for(name: &str) -> Option<&'static str> {
    if name.contains("software") {
        Some("HKEY_LOCAL_MACHINE\\SOFTWARE")
    } else if name.contains("system") {
        Some("HKEY_LOCAL_MACHINE\\SYSTEM")
    } else {
        None
    }
}

#[test]
fn virt_v2v_reg_files_merge_like_hivex() {
    let oracle = have_hivex();
    let minimal = read_real("hivex/images/minimal");
    let mut checked = 0;
    for f in std::fs::read_dir(real(V2V)).unwrap() {
        let path = f.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".reg") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut hive = Hive::from_bytes(minimal.clone(), &opts("minimal")).unwrap();
        // Default mapping strips HKEY_LOCAL_MACHINE\NAME; explicit prefix too.
        let ours = merge(&mut hive, &text);
        let mut hive2 = Hive::from_bytes(minimal.clone(), &opts("minimal")).unwrap();
        let ours2 = merge_with(
            &mut hive2,
            &text,
            &MergeOptions {
                prefix: prefix_for(&name).map(String::from),
            },
        );
        assert_eq!(ours.is_ok(), ours2.is_ok(), "{name}");
        let hx = if oracle {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("hive");
            std::fs::write(&f, &minimal).unwrap();
            let mut c = Command::new("hivexregedit");
            c.arg("--merge");
            if let Some(p) = prefix_for(&name) {
                c.arg("--prefix").arg(p);
            }
            let ok = c.arg(&f).arg(&path).output().unwrap().status.success();
            ok.then(|| hivex_export(&f, "\\").unwrap())
        } else {
            None
        };
        match ours {
            Ok(rep) => {
                assert!(rep.values_set > 0, "{name}: {rep:?}");
                vmie_hive::verify_with_nt_hive(hive.bytes(), &rep.edits).unwrap();
                let exp = export_hivex_bytes(&hive, None, None).unwrap();
                assert_eq!(exp, export_hivex_bytes(&hive2, None, None).unwrap());
                if oracle {
                    let hx = hx.unwrap_or_else(|| panic!("{name}: hivex refused what we merged"));
                    assert!(exp == hx, "{name}: {}", show_diff(&exp, &hx));
                    // hivex reads our result identically.
                    let again = hivex_export_bytes(hive.bytes(), "\\").unwrap();
                    assert!(
                        again == exp,
                        "{name}: hivex reads ours differently: {}",
                        show_diff(&again, &exp)
                    );
                    hivexsh_ok(hive.bytes()).unwrap();
                }
                checked += 1;
            }
            Err(e) => {
                // windows-software-all.reg creates a key whose parent is missing: hivex refuses too.
                assert!(matches!(e, HiveError::Invalid { .. }), "{name}: {e}");
                assert!(hx.is_none(), "{name}: hivex accepted what we refused: {e}");
                // And our hive is untouched (all or nothing).
                assert_eq!(hive.bytes(), &minimal[..]);
            }
        }
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn merge_syntax_forms() {
    let mut hive = open("hivex/images/minimal");
    let text = r#"Windows Registry Editor Version 5.00

; a comment
[\A]
"sz"="a \"quoted\" \\ string"
@="default"
"dw"=dword:0000002a
"bin"=hex:01,02,\
  03,04
"qw"=hex(b):01,00,00,00,00,00,00,00
"multi"=hex(7):61,00,00,00,62,00,00,00,00,00
"exp"=str(2):"%SystemRoot%"
"none"=hex(0):

[\A\B]
"x"=dword:00000001

[\A]
"dw"=-
@=-

[-\A\B]
[-\Missing]
"#;
    let rep = merge(&mut hive, text).unwrap();
    assert_eq!(rep.keys_created, 2);
    assert_eq!(rep.keys_deleted, 1);
    assert_eq!(rep.values_deleted, 2);
    vmie_hive::verify_with_nt_hive(hive.bytes(), &rep.edits).unwrap();
    let k = hive.open_key("\\a").unwrap();
    assert!(hive.open_key("\\A\\B").is_err());
    let v = |n: &str| hive.get_value(k, n).unwrap();
    assert!(v("dw").is_none());
    assert!(v("").is_none());
    assert_eq!(v("bin").unwrap().data, vec![1, 2, 3, 4]);
    assert_eq!(
        v("sz").unwrap().decoded(),
        vmie_hive::Decoded::String("a \"quoted\" \\ string".into())
    );
    assert_eq!(v("qw").unwrap().decoded(), vmie_hive::Decoded::Qword(1));
    assert_eq!(
        v("multi").unwrap().decoded(),
        vmie_hive::Decoded::MultiString(vec!["a".into(), "b".into()])
    );
    assert_eq!(v("exp").unwrap().vtype, 2);
    assert_eq!(v("none").unwrap().data, Vec::<u8>::new());
    // Parse errors name the line and leave the hive untouched.
    let before = hive.bytes().to_vec();
    let e = merge(&mut hive, "[\\A]\n\"v\"=dword:12\n").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert_eq!(hive.bytes(), &before[..]);
}

/// Merging onto real hives (values replaced in place, keys added to real
/// lists) gives the same export as hivexregedit --merge on the same file.
#[test]
fn merge_onto_real_hives_like_hivex() {
    for (hive_rel, reg, prefix) in [
        (
            "regipy/SYSTEM",
            "windows-system.reg",
            Some("HKEY_LOCAL_MACHINE\\SYSTEM"),
        ),
        ("windeploy-linux/BCD", "windows-bcd.reg", None),
        ("regipy/BCD", "windows-bcd.reg", None),
    ] {
        let start = read_real(hive_rel);
        let path = real(&format!("{V2V}{reg}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut hive = Hive::from_bytes(start.clone(), &opts(hive_rel)).unwrap();
        let rep = merge_with(
            &mut hive,
            &text,
            &MergeOptions {
                prefix: prefix.map(String::from),
            },
        )
        .unwrap();
        vmie_hive::verify_with_nt_hive(hive.bytes(), &rep.edits).unwrap();
        if !have_hivex() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive");
        std::fs::write(&f, &start).unwrap();
        let mut c = Command::new("hivexregedit");
        c.arg("--merge");
        if let Some(p) = prefix {
            c.arg("--prefix").arg(p);
        }
        let o = c.arg(&f).arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "{hive_rel}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let theirs = hivex_export(&f, "\\").unwrap();
        let ours = export_hivex_bytes(&hive, None, None).unwrap();
        assert!(
            ours == theirs,
            "{hive_rel} + {reg}: {}",
            show_diff(&ours, &theirs)
        );
        assert_eq!(
            hivex_export_bytes(hive.bytes(), "\\").unwrap(),
            ours,
            "{hive_rel}: hivex reads ours"
        );
    }
}
