#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The realdata samples as parser inputs: every file parses (the parsers
//! never fail, so "parses" means no panic and a sane result), and a few with
//! known answers are checked.

mod common;

use std::path::{Path, PathBuf};

use common::{memfs_from, realdata, require};
use vmie_os::*;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn text(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

#[test]
fn util_linux_fstab_samples() {
    let dir = realdata("util-linux/tests/ts/libmount/files");
    require(&dir);
    let fstab = parse_fstab(&text(&dir.join("fstab")));
    // 11 entries; "bug" is not one.
    assert_eq!(fstab.len(), 11, "{fstab:#?}");
    assert_eq!(fstab[0].spec_kind, SpecKind::Uuid);
    assert_eq!(fstab[0].spec_value, "d3a8f783-df75-4dc8-9163-975a891052c0");
    assert_eq!(
        (fstab[0].mountpoint.as_str(), fstab[0].fstype.as_str()),
        ("/", "ext3")
    );
    assert_eq!((fstab[0].freq, fstab[0].passno, fstab[0].line), (1, 1, 1));
    assert_eq!(fstab[3].spec_kind, SpecKind::Pseudo);
    let mapper = fstab.iter().find(|e| e.mountpoint == "/home/foo").unwrap();
    assert_eq!(mapper.spec_kind, SpecKind::Mapper);
    let nfs = fstab.iter().find(|e| e.fstype == "nfs").unwrap();
    assert_eq!(nfs.spec_kind, SpecKind::Network);
    assert_eq!(nfs.options, "noauto");
    let cifs = fstab.iter().find(|e| e.fstype == "cifs").unwrap();
    assert_eq!(cifs.spec_kind, SpecKind::Network);
    let foo = fstab.iter().find(|e| e.spec == "/dev/foo").unwrap();
    assert_eq!(foo.spec_kind, SpecKind::Device);
    // The broken file: the 9-field line is refused as libmount does.
    let broken = parse_fstab(&text(&dir.join("fstab.broken")));
    assert!(broken.iter().all(|e| e.spec != "this"));
    assert!(broken.iter().any(|e| e.spec == "sysfs"));
    for f in ["fstab.comment", "fstab_btrfs", "mtab", "swaps", "mountinfo"] {
        let _ = parse_fstab(&text(&dir.join(f)));
    }
    let btrfs = parse_fstab(&text(&dir.join("fstab_btrfs")));
    assert!(!btrfs.is_empty());
}

#[test]
fn grubby_legacy_default_titles() {
    let dir = realdata("grubby/test");
    require(&dir);
    // results/defaulttitle/g.N is grubby's answer for grub.N.
    let mut checked = 0;
    for n in 1..=11 {
        let want = dir.join(format!("results/defaulttitle/g.{n}"));
        let conf = dir.join(format!("grub.{n}"));
        if !want.exists() || !conf.exists() {
            continue;
        }
        let menu = parse_grub_legacy(&text(&conf));
        let i = default_entry(&menu, None).unwrap_or_else(|| panic!("grub.{n}: no default"));
        assert_eq!(menu.entries[i].title, text(&want).trim(), "grub.{n}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} checked");
    // results/defaultkernel/g.1 (kernel path relative to /boot).
    let menu = parse_grub_legacy(&text(&dir.join("grub.1")));
    let i = default_entry(&menu, None).unwrap();
    assert_eq!(menu.entries[i].kernel.as_deref(), Some("/vmlinuz-2.4.7-2"));
    assert_eq!(menu.entries[i].args.as_deref(), Some("ro root=/dev/sda1"));
}

#[test]
fn grubby_grub2_samples() {
    let dir = realdata("grubby/test");
    require(&dir);
    let mut parsed = 0;
    for p in files_under(&dir) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("grub2.") {
            let menu = parse_grub2_cfg(&text(&p));
            assert!(!menu.entries.is_empty(), "{name}: no entries");
            parsed += 1;
        } else if name.starts_with("grub.") && !p.to_string_lossy().contains("results") {
            let _ = parse_grub_legacy(&text(&p));
        } else if name.starts_with("extlinux.") && !p.to_string_lossy().contains("results") {
            let m = parse_extlinux(&text(&p));
            assert!(!m.entries.is_empty(), "{name}: no entries");
        } else if name.starts_with("grubenv.") {
            let _ = parse_grubenv(&text(&p));
        }
    }
    assert!(parsed >= 20, "{parsed}");
    let menu = parse_grub2_cfg(&text(&dir.join("grub2.1")));
    let i = default_entry(&menu, None).unwrap();
    assert_eq!(
        menu.entries[i].title,
        text(&dir.join("results/defaulttitle/g2.1")).trim()
    );
    assert_eq!(
        menu.entries[i].kernel.as_deref(),
        Some("/vmlinuz-2.6.38.8-32.fc15.x86_64")
    );
    assert_eq!(
        menu.entries[i].initrd.as_deref(),
        Some("/initramfs-2.6.38.8-32.fc15.x86_64.img")
    );
    let menu2 = parse_grub2_cfg(&text(&dir.join("grub2.2")));
    let i2 = default_entry(&menu2, None).unwrap();
    assert_eq!(
        menu2.entries[i2].title,
        text(&dir.join("results/defaulttitle/g2.2")).trim()
    );
    let env = parse_grubenv(&text(&dir.join("grub2-support_files/grubenv.1")));
    assert_eq!(
        env.get("saved_entry").map(String::as_str),
        Some("Linux, with Fedora 2.6.38.8-32.fc15.x86_64")
    );
}

#[test]
fn grub_defaults_samples() {
    let g = parse_shell_vars(&text(&realdata(
        "grub-defaults/GrapheneOS-infrastructure/etc/default/grub",
    )));
    let get = |k: &str| {
        g.iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("GRUB_DEFAULT"), Some("0"));
    assert_eq!(get("GRUB_DISTRIBUTOR"), Some("Arch"));
    assert_eq!(get("GRUB_CMDLINE_LINUX_DEFAULT"), Some("loglevel=3 quiet"));
    assert_eq!(get("GRUB_ENABLE_CRYPTODISK"), None);
    let d = parse_shell_vars(&text(&realdata(
        "grub-defaults/pexip-os-grub2/debian/default/grub",
    )));
    assert!(d
        .iter()
        .any(|(k, v)| k == "GRUB_CMDLINE_LINUX" && v.is_empty()));
}

#[test]
fn augeas_root_fedora_tree() {
    let root = realdata("augeas-root/tests/root");
    require(&root);
    let fs = memfs_from(&root).with_dir("/bin");
    assert!(is_linux_root(&fs));
    let info = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(info.hostname.as_deref(), Some("galia.watzmann.net"));
    assert_eq!(info.fstab.len(), 10);
    assert_eq!(info.fstab[0].spec_kind, SpecKind::LvmPath);
    assert_eq!(info.fstab[1].spec_kind, SpecKind::Label);
    assert_eq!(info.fstab[1].spec_value, "/boot");
    assert_eq!(info.bootloader.kind.as_deref(), Some("grub"));
    let def = info.bootloader.default_entry.unwrap();
    assert_eq!(
        info.bootloader.menu.entries[def].kernel.as_deref(),
        Some("/vmlinuz-2.6.24.4-64.fc8")
    );
    // The Xen entry's kernel is its first vmlinuz module.
    assert!(info
        .bootloader
        .menu
        .entries
        .iter()
        .any(|e| e.kernel.as_deref() == Some("/vmlinuz-2.6.21.7-3.fc8xen")));
    assert_eq!(info.firmware, Firmware::Bios);
    let n = &info.network;
    assert!(n.stacks.contains(&"ifcfg-rh".to_string()), "{n:?}");
    assert!(n.stacks.contains(&"ifupdown".to_string()), "{n:?}");
    let eth0 = n
        .interfaces
        .iter()
        .find(|i| i.name == "eth0" && i.stack == "ifcfg-rh")
        .unwrap();
    assert_eq!(eth0.method, NetMethod::Manual);
    assert_eq!(eth0.mac.as_deref(), Some("xx:yy:zz:81:5b:0e"));
    let br0 = n.interfaces.iter().find(|i| i.name == "br0").unwrap();
    assert_eq!(br0.method, NetMethod::Dhcp);
    assert!(!n.interfaces.iter().any(|i| i.source.ends_with(".rpmsave")));
    let e00 = n.interfaces.iter().find(|i| i.name == "eth0-0").unwrap();
    assert_eq!(e00.method, NetMethod::Static);
    assert_eq!(e00.addresses, vec!["134.158.129.99/23".to_string()]);
    assert_eq!(e00.gateway.as_deref(), Some("134.158.128.1"));
    let deb_eth0 = n
        .interfaces
        .iter()
        .find(|i| i.name == "eth0" && i.stack == "ifupdown")
        .unwrap();
    assert_eq!(deb_eth0.method, NetMethod::Dhcp);
}

#[test]
fn networkmanager_samples() {
    let base = realdata("networkmanager/src/core/settings/plugins");
    require(&base);
    let mut ifcfg = 0;
    for p in files_under(&base.join("ifcfg-rh/tests/network-scripts")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ifcfg-") {
            let i = parse_ifcfg(&name, &text(&p), "ifcfg-rh", &p.to_string_lossy());
            assert!(!i.name.is_empty(), "{name}");
            ifcfg += 1;
        }
    }
    assert!(ifcfg > 50, "{ifcfg}");
    let mut keyfiles = 0;
    for p in files_under(&base.join("keyfile/tests/keyfiles")) {
        if parse_nmconnection(&text(&p), &p.to_string_lossy()).is_some() {
            keyfiles += 1;
        }
    }
    assert!(keyfiles > 20, "{keyfiles}");
    let p = base.join("keyfile/tests/keyfiles/Test_Wired_Connection");
    let i = parse_nmconnection(&text(&p), "x").unwrap();
    assert_eq!(i.name, "Test Wired Connection");
    assert_eq!(i.method, NetMethod::Static);
    assert_eq!(i.addresses[0], "192.168.0.5/24");
    assert!(i.addresses.contains(&"2.3.4.5/24".to_string()));
    assert_eq!(i.mac.as_deref(), Some("00:11:22:33:44:55"));
}

#[test]
fn networkmanager_ifcfg_known_answers() {
    let dir = realdata("networkmanager/src/core/settings/plugins/ifcfg-rh/tests/network-scripts");
    require(&dir);
    let find = |n: &str| parse_ifcfg(n, &text(&dir.join(n)), "ifcfg-rh", n);
    let s = find("ifcfg-test-wired-static");
    assert_eq!(s.method, NetMethod::Static);
    assert!(!s.addresses.is_empty());
    let d = find("ifcfg-test-wired-dhcp");
    assert_eq!(d.method, NetMethod::Dhcp);
}

#[test]
fn wicked_samples() {
    let dir = realdata("wicked");
    require(&dir);
    let mut n = 0;
    for p in files_under(&dir) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ifcfg-") {
            let _ = parse_ifcfg(&name, &text(&p), "ifcfg-suse", "x");
            n += 1;
        }
    }
    assert!(n >= 5, "{n}");
    let lo = parse_ifcfg(
        "ifcfg-lo",
        &text(&dir.join("client/suse/config/ifcfg-lo")),
        "ifcfg-suse",
        "x",
    );
    assert_eq!(lo.method, NetMethod::Loopback);
}

#[test]
fn ifupdown_family_samples() {
    let mut n = 0;
    for d in ["debian-ifupdown", "ifupdown2", "ifupdown-ng"] {
        let dir = realdata(d);
        require(&dir);
        for p in files_under(&dir) {
            if p.file_name().unwrap() == "SOURCES.md" {
                continue;
            }
            let _ = parse_interfaces(&text(&p), "x");
            n += 1;
        }
    }
    assert!(n > 50, "{n}");
    let ng = parse_interfaces(
        &text(&realdata(
            "ifupdown-ng/tests/fixtures/static-eth0-v4.interfaces",
        )),
        "x",
    );
    assert_eq!(ng.auto, vec!["eth0".to_string()]);
    assert_eq!(ng.interfaces.len(), 1);
    assert_eq!(ng.interfaces[0].method, NetMethod::Static);
    assert_eq!(
        ng.interfaces[0].addresses,
        vec!["203.0.113.2/24".to_string()]
    );
    assert_eq!(ng.interfaces[0].gateway.as_deref(), Some("203.0.113.1"));
    let deb = parse_interfaces(
        &text(&realdata("debian-ifupdown/examples/network-interfaces")),
        "x",
    );
    // Everything in the Debian example is commented out.
    assert!(deb.interfaces.is_empty());
}

#[test]
fn netplan_samples() {
    let dir = realdata("netplan");
    require(&dir);
    let mut n = 0;
    for p in files_under(&dir) {
        let s = p.to_string_lossy();
        if s.ends_with(".yaml") || s.ends_with(".yml") {
            let _ = parse_netplan(&text(&p), &s);
            n += 1;
        }
    }
    assert!(n > 20, "{n}");
    let d = parse_netplan(&text(&dir.join("examples/dhcp.yaml")), "x");
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].name.as_str(), d[0].method),
        ("enp3s0", NetMethod::Dhcp)
    );
    let s = parse_netplan(
        &text(&dir.join("examples/static_singlenic_multiip_multigateway.yaml")),
        "x",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "eno1");
    assert_eq!(s[0].method, NetMethod::Static);
    // nameservers.addresses are not interface addresses.
    assert_eq!(
        s[0].addresses,
        vec!["10.0.0.10/24".to_string(), "11.0.0.11/24".to_string()]
    );
}

#[test]
fn cloud_init_samples() {
    let dir = realdata("cloud-init");
    require(&dir);
    let mut n = 0;
    for p in files_under(&dir) {
        let s = p.to_string_lossy().into_owned();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".network") {
            let _ = parse_networkd(&name, &text(&p), &s);
            n += 1;
        } else if s.contains("/interfaces") {
            let _ = parse_interfaces(&text(&p), &s);
            n += 1;
        }
    }
    assert!(n > 5, "{n}");
    let p = dir.join(
        "tests/unittests/net/artifacts/openstack_net_config_v1/etc/systemd/network/10-cloud-init-bond0.network",
    );
    let b = parse_networkd("10-cloud-init-bond0.network", &text(&p), "x");
    assert_eq!(b.name, "bond0");
    assert_eq!(b.method, NetMethod::Static);
    assert_eq!(b.addresses, vec!["10.11.12.13/24".to_string()]);
    let lo = parse_interfaces(
        &text(&dir.join("tests/data/roots/simple_ubuntu/etc/networks/interfaces")),
        "x",
    );
    assert_eq!(lo.interfaces[0].method, NetMethod::Loopback);
}

mod prop {
    use proptest::prelude::*;
    use vmie_os::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn text_parsers_never_panic(s in "(?s).{0,400}") {
            let _ = parse_fstab(&s);
            let _ = parse_os_release(&s);
            let _ = parse_grub2_cfg(&s);
            let _ = parse_grub_legacy(&s);
            let _ = parse_extlinux(&s);
            let _ = parse_bls_entry("x", &s);
            let _ = parse_grubenv(&s);
            let _ = parse_netplan(&s, "x");
            let _ = parse_interfaces(&s, "x");
            let _ = parse_ifcfg("ifcfg-x", &s, "ifcfg-rh", "x");
            let _ = parse_nmconnection(&s, "x");
            let _ = parse_networkd("x.network", &s, "x");
            let _ = device_position(&s);
            let m = parse_grub2_cfg(&s);
            let _ = default_entry(&m, Some(&s));
        }

        #[test]
        fn netplan_like_never_panics(lines in proptest::collection::vec("( {0,8})(- )?[a-z0-9:\"\\[\\], /.-]{0,20}", 0..30)) {
            let s = lines.join("\n");
            let _ = parse_netplan(&format!("network:\n  ethernets:\n{s}"), "x");
        }
    }
}
