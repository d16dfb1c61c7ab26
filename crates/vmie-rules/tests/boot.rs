//! Boot configuration edits on real grub.conf / menu.lst / grub.cfg / grubenv
//! files from grubby's test suite, and on a Debian-style grub.cfg.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Ordering;

use vmie_rules::boot::*;
use vmie_rules::fstab::Volume;

fn grubby(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/grubby/test")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn vols() -> Vec<Volume> {
    vec![
        Volume {
            disk: 0,
            partition: Some(1),
            uuid: Some("1111-aaaa".into()),
            ..Volume::default()
        },
        Volume {
            disk: 0,
            partition: Some(2),
            uuid: Some("2222-bbbb".into()),
            ..Volume::default()
        },
    ]
}

#[test]
fn versions_compare_like_package_managers() {
    assert_eq!(
        compare_versions("6.1.0-13-amd64", "6.1.0-9-amd64"),
        Ordering::Greater
    );
    assert_eq!(
        compare_versions("4.18.0-513.el8", "4.18.0-80.el8"),
        Ordering::Greater
    );
    assert_eq!(compare_versions("5.10.0", "5.9.16"), Ordering::Greater);
    assert_eq!(
        compare_versions("2.6.32-754.el6", "2.6.32-754.el6"),
        Ordering::Equal
    );
    assert_eq!(compare_versions("5.4~rc1", "5.4"), Ordering::Less);
}

#[test]
fn cmdline_root_becomes_uuid_and_tokens_are_added_and_removed() {
    let v = vols();
    let add = vec!["console=ttyS0".to_string()];
    let remove = vec!["rhgb".to_string(), "quiet".to_string()];
    let e = CmdlineEdit {
        add: &add,
        remove: &remove,
        volumes: &v,
    };
    let (out, reasons) = edit_cmdline(
        " ro root=/dev/sda1 rhgb  quiet resume=/dev/sda2 foo=\"a b\"",
        &e,
    );
    assert_eq!(
        out,
        " ro root=UUID=1111-aaaa resume=UUID=2222-bbbb foo=\"a b\" console=ttyS0"
    );
    assert_eq!(reasons.len(), 5);
    let (again, r2) = edit_cmdline(&out, &e);
    assert_eq!(again, out);
    assert!(r2.is_empty());
    // Devices that match no volume, LVM and UUID roots stay.
    let (same, r) = edit_cmdline(
        " root=/dev/mapper/vg-root ro",
        &CmdlineEdit {
            volumes: &v,
            ..Default::default()
        },
    );
    assert_eq!(same, " root=/dev/mapper/vg-root ro");
    assert!(r.is_empty());
}

#[test]
fn legacy_grub_conf_samples() {
    let v = vols();
    for n in 1..=15 {
        let text = String::from_utf8_lossy(&grubby(&format!("grub.{n}"))).into_owned();
        let e = CmdlineEdit {
            volumes: &v,
            ..Default::default()
        };
        let out = kernel_args_menu_lst(&text, &e);
        assert_eq!(out.text.lines().count(), text.lines().count(), "grub.{n}");
        for c in &out.changes {
            assert!(
                c.before.trim_start().starts_with("kernel"),
                "grub.{n}: {c:?}"
            );
            assert!(
                !c.after.contains("root=/dev/sda1 ") && !c.after.ends_with("root=/dev/sda1"),
                "{c:?}"
            );
        }
        assert!(
            kernel_args_menu_lst(&out.text, &e).changes.is_empty(),
            "grub.{n} not idempotent"
        );
        let set = menu_lst_set(&text, 1);
        assert!(menu_lst_set(&set.text, 1).changes.is_empty(), "grub.{n}");
        if text.lines().any(|l| l.trim_start().starts_with("timeout")) {
            assert!(
                set.text
                    .lines()
                    .any(|l| l.trim() == "timeout=1" || l.trim() == "timeout 1"),
                "grub.{n}:\n{}",
                set.text
            );
        }
    }
    // grub.1: one title, root=/dev/sda1 → UUID, timeout 10 → 1.
    let text = String::from_utf8_lossy(&grubby("grub.1")).into_owned();
    let out = kernel_args_menu_lst(
        &text,
        &CmdlineEdit {
            volumes: &v,
            ..Default::default()
        },
    );
    assert!(
        out.text
            .contains("\tkernel /vmlinuz-2.4.7-2 ro root=UUID=1111-aaaa\n"),
        "{}",
        out.text
    );
    let set = menu_lst_set(&text, 1);
    assert!(set.text.contains("\ntimeout=1\n") && set.text.contains("\ndefault=0\n"));
}

#[test]
fn grub2_cfg_samples() {
    let v = vols();
    for n in [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 24, 25,
    ] {
        let text = String::from_utf8_lossy(&grubby(&format!("grub2.{n}"))).into_owned();
        let add = vec!["console=ttyS0".to_string()];
        let e = CmdlineEdit {
            add: &add,
            volumes: &v,
            ..Default::default()
        };
        let out = kernel_args_grub_cfg(&text, &e);
        assert_eq!(out.text.lines().count(), text.lines().count(), "grub2.{n}");
        for c in &out.changes {
            let kw = c.before.split_whitespace().next().unwrap();
            assert!(
                ["linux", "linux16", "linuxefi"].contains(&kw),
                "grub2.{n}: {c:?}"
            );
            assert!(c.after.contains("console=ttyS0"));
        }
        assert!(
            kernel_args_grub_cfg(&out.text, &e).changes.is_empty(),
            "grub2.{n}"
        );
        let set = grub_cfg_set(&text, 1);
        assert!(
            grub_cfg_set(&set.text, 1).changes.is_empty(),
            "grub2.{n} not idempotent"
        );
        for c in &set.changes {
            assert!(
                c.after.trim_start().starts_with("set timeout=")
                    || c.after.trim_start().starts_with("set default=")
            );
        }
    }
    // grub2.1 (Fedora 15): two entries, the newest first; timeout 5 → 1; default stays 0.
    let text = String::from_utf8_lossy(&grubby("grub2.1")).into_owned();
    let entries = grub_cfg_entries(&text);
    assert_eq!(entries.len(), 2);
    assert_eq!(newest_entry(&entries).unwrap().id, "0");
    let set = grub_cfg_set(&text, 1);
    assert_eq!(set.changes.len(), 1);
    assert!(set.text.contains("set timeout=1\n"));
}

const DEBIAN_CFG: &str = r#"if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="2"
fi
if [ x"${feature_timeout_style}" = xy ] ; then
  set timeout_style=menu
  set timeout=30
else
  set timeout=30
fi
menuentry 'Debian GNU/Linux' --class debian {
	linux	/boot/vmlinuz-6.1.0-9-amd64 root=/dev/sda1 ro  quiet
}
submenu 'Advanced options for Debian GNU/Linux' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-13-amd64' {
		linux	/boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro  quiet
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-13-amd64 (recovery mode)' {
		linux	/boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-9-amd64' {
		linux	/boot/vmlinuz-6.1.0-9-amd64 root=/dev/sda1 ro  quiet
	}
}
"#;

#[test]
fn debian_grub_cfg_default_points_into_the_submenu_at_the_newest_kernel() {
    let entries = grub_cfg_entries(DEBIAN_CFG);
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0", "1>0", "1>1", "1>2"]);
    let out = grub_cfg_set(DEBIAN_CFG, 1);
    assert!(
        out.text.contains("   set default=\"1>0\"\n"),
        "{}",
        out.text
    );
    assert!(out.text.contains("set default=\"${next_entry}\""));
    assert_eq!(out.text.matches("set timeout=1\n").count(), 2);
    assert!(out.text.contains("set timeout_style=menu"));
    let v = vols();
    let k = kernel_args_grub_cfg(
        &out.text,
        &CmdlineEdit {
            volumes: &v,
            ..Default::default()
        },
    );
    assert_eq!(k.changes.len(), 4);
    assert!(
        k.text
            .contains("\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=1111-aaaa ro  quiet\n"),
        "{}",
        k.text
    );
}

#[test]
fn grubenv_keeps_its_size() {
    for n in 0..=3 {
        let block = grubby(&format!("grub2-support_files/grubenv.{n}"));
        let new = grubenv_set(&block, "saved_entry", "1>0").unwrap().unwrap();
        assert_eq!(new.len(), block.len());
        assert_eq!(grubenv_get(&new, "saved_entry").as_deref(), Some("1>0"));
        assert!(grubenv_set(&new, "saved_entry", "1>0").unwrap().is_none());
    }
    assert!(grubenv_set(b"not a grubenv", "a", "b").is_err());
}

#[test]
fn default_grub_timeout_and_cmdline() {
    let text =
        "GRUB_DEFAULT=2\nGRUB_TIMEOUT=30\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 rhgb quiet\"\n";
    let out = default_grub_set(text, 1);
    assert_eq!(
        out.text,
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"root=/dev/sda1 rhgb quiet\"\n"
    );
    let v = vols();
    let remove = vec!["rhgb".to_string()];
    let k = kernel_args_default_grub(
        &out.text,
        &CmdlineEdit {
            remove: &remove,
            volumes: &v,
            ..Default::default()
        },
    );
    assert_eq!(
        k.text,
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"root=UUID=1111-aaaa quiet\"\n"
    );
    let saved = default_grub_set("GRUB_DEFAULT=saved\nGRUB_TIMEOUT=5\n", 1);
    assert_eq!(saved.text, "GRUB_DEFAULT=saved\nGRUB_TIMEOUT=1\n");
}
