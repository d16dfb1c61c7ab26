//! The network action on the real configuration files of NetworkManager's,
//! wicked's, ifupdown's, netplan's and cloud-init's test suites.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use vmie_rules::network::*;
use vmie_rules::shellvars;

fn realdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel)
}

fn files(dir: &str, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let d = realdata(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && pred(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn rhel_ifcfg_samples_become_dhcp_on_eth0() {
    let all = files(
        "networkmanager/src/core/settings/plugins/ifcfg-rh/tests/network-scripts",
        &|n| n.starts_with("ifcfg-") && !n.ends_with(".cexpected"),
    );
    assert!(all.len() > 100, "{}", all.len());
    let mut converted = 0;
    for p in &all {
        let name = p.file_name().unwrap().to_str().unwrap();
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        let Some(edit) = ifcfg(&text, name, false) else {
            continue;
        };
        converted += 1;
        let out = &edit.outcome.text;
        assert_eq!(
            shellvars::get(out, "BOOTPROTO").as_deref(),
            Some("dhcp"),
            "{name}"
        );
        assert_eq!(
            shellvars::get(out, "ONBOOT").as_deref(),
            Some("yes"),
            "{name}"
        );
        for k in [
            "IPADDR", "NETMASK", "PREFIX", "GATEWAY", "HWADDR", "MACADDR", "IPADDR0", "GATEWAY0",
            "DNS1",
        ] {
            assert_eq!(shellvars::get(out, k), None, "{name}: {k} left");
        }
        if shellvars::get(&text, "DEVICE").is_some() {
            assert_eq!(
                shellvars::get(out, "DEVICE").as_deref(),
                Some("eth0"),
                "{name}"
            );
        }
        assert_eq!(edit.rename_to.as_deref(), Some("ifcfg-eth0"));
        // Idempotent under the new name.
        let again = ifcfg(out, "ifcfg-eth0", false).unwrap();
        assert!(
            again.outcome.changes.is_empty(),
            "{name}: {:?}",
            again.outcome.changes
        );
        assert!(again.rename_to.is_none());
    }
    assert!(converted > 20, "only {converted} Ethernet samples");
    // Bonds, bridges, VLANs, Wi-Fi and InfiniBand are left alone.
    for n in [
        "ifcfg-test-bridge-main",
        "ifcfg-test-vlan-interface",
        "ifcfg-test-wifi-wep",
        "ifcfg-test-infiniband2",
    ] {
        let text = std::fs::read_to_string(
            realdata("networkmanager/src/core/settings/plugins/ifcfg-rh/tests/network-scripts")
                .join(n),
        )
        .unwrap();
        assert!(ifcfg(&text, n, false).is_none(), "{n}");
    }
}

#[test]
fn suse_ifcfg_samples() {
    let mut converted = 0;
    for host in 1..=6 {
        for p in files(&format!("wicked/samples/suse/host{host}"), &|n| {
            n.starts_with("ifcfg-")
        }) {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let Some(edit) = ifcfg(&text, &name, true) else {
                continue;
            };
            converted += 1;
            let out = &edit.outcome.text;
            assert_eq!(
                shellvars::get(out, "BOOTPROTO").as_deref(),
                Some("dhcp"),
                "{name}"
            );
            assert_eq!(shellvars::get(out, "STARTMODE").as_deref(), Some("auto"));
            assert!(
                shellvars::all(out)
                    .iter()
                    .all(|(k, _)| !k.starts_with("IPADDR")),
                "{name}: {out}"
            );
            // SUSE style quoting is kept.
            if text.contains("BOOTPROTO='") {
                assert!(out.contains("BOOTPROTO='dhcp'"), "{out}");
            }
        }
    }
    assert!(converted >= 6, "{converted}");
    let text = std::fs::read_to_string(realdata("wicked/samples/suse/host1/ifcfg-lo")).unwrap();
    assert!(ifcfg(&text, "ifcfg-lo", true).is_none());
}

#[test]
fn ifupdown_interfaces_samples() {
    let mut sources: Vec<PathBuf> = files("debian-ifupdown/tests/linux", &|n| {
        n.starts_with("testcase.")
    });
    sources.extend(files("ifupdown2/tests/eni", &|n| n.ends_with(".eni")));
    sources.extend(files("ifupdown-ng/tests/fixtures", &|n| {
        n.ends_with(".interfaces")
    }));
    assert!(sources.len() > 20, "{}", sources.len());
    for p in &sources {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        let out = interfaces(&text);
        assert_eq!(
            out.text.lines().count(),
            text.lines().count(),
            "{}",
            p.display()
        );
        let again = interfaces(&out.text);
        assert!(
            again.changes.is_empty(),
            "{}: {:?}",
            p.display(),
            again.changes
        );
        if !out.changes.is_empty() {
            assert!(out.text.contains("iface eth0 inet dhcp"), "{}", p.display());
            // No active static address line is left in the eth0 stanza.
            let mut in_eth0 = false;
            for l in out.text.lines() {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.first() == Some(&"iface") {
                    in_eth0 = w.get(1) == Some(&"eth0") && w.get(2) == Some(&"inet");
                } else if in_eth0 {
                    assert_ne!(w.first(), Some(&"address"), "{}", p.display());
                }
            }
        }
    }
    // testcase.1: eth0 static → dhcp, options commented, `auto` line untouched.
    let text = std::fs::read_to_string(realdata("debian-ifupdown/tests/linux/testcase.1")).unwrap();
    let out = interfaces(&text);
    assert!(out.text.contains("iface eth0 inet dhcp\n#  address 1.2.3.4\n#  netmask 255.255.255.0\n#  broadcast 1.2.3.255\n  up echo hi\n"), "{}", out.text);
}

#[test]
fn vmware_style_interfaces_is_renamed() {
    let text = "auto lo\niface lo inet loopback\n\nallow-hotplug ens192\niface ens192 inet static\n\taddress 192.168.10.5/24\n\tgateway 192.168.10.1\n\tdns-nameservers 192.168.10.1\n\thwaddress ether 00:50:56:aa:bb:cc\n";
    let out = interfaces(text);
    assert_eq!(
        out.text,
        "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n#\taddress 192.168.10.5/24\n#\tgateway 192.168.10.1\n#\tdns-nameservers 192.168.10.1\n#\thwaddress ether 00:50:56:aa:bb:cc\n"
    );
}

#[test]
fn netplan_examples() {
    let all = files("netplan/examples", &|n| n.ends_with(".yaml"));
    assert!(all.len() > 20);
    for p in &all {
        let text = std::fs::read_to_string(p).unwrap();
        let out = netplan(&text);
        let again = netplan(&out.text);
        assert!(
            again.changes.is_empty(),
            "{}: {:?}\n{}",
            p.display(),
            again.changes,
            out.text
        );
    }
    let text = std::fs::read_to_string(realdata("netplan/examples/static.yaml")).unwrap();
    let out = netplan(&text);
    assert_eq!(
        out.text,
        "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eth0:\n#      addresses:\n#        - 10.10.10.2/24\n#      nameservers:\n#        search: [mydomain, otherdomain]\n#        addresses: [10.10.10.1, 1.1.1.1]\n#      routes: \n#          - to: default\n#            via: 10.10.10.1\n      dhcp4: true\n"
            .replace("#          - to", "#        - to")
            .replace("#            via", "#          via")
    );
}

#[test]
fn nm_keyfiles_and_networkd() {
    let mut converted = 0;
    for p in files(
        "networkmanager/src/core/settings/plugins/keyfile/tests/keyfiles",
        &|_| true,
    ) {
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
        if let Some(out) = nm_keyfile(&text) {
            converted += 1;
            assert!(out.text.contains("method=auto"), "{}", p.display());
            assert!(!out
                .text
                .lines()
                .any(|l| l.starts_with("interface-name=") || l.starts_with("mac-address=")));
            assert!(
                nm_keyfile(&out.text).unwrap().changes.is_empty(),
                "{}",
                p.display()
            );
        }
    }
    assert!(converted >= 5, "{converted}");
    let text = "[Match]\nName=ens192\nMACAddress=00:50:56:aa:bb:cc\n\n[Network]\nAddress=192.168.1.5/24\nGateway=192.168.1.1\nDNS=192.168.1.1\n";
    let out = networkd(text).unwrap();
    assert_eq!(
        out.text,
        "[Match]\nName=eth0\n#MACAddress=00:50:56:aa:bb:cc\n\n[Network]\n#Address=192.168.1.5/24\n#Gateway=192.168.1.1\n#DNS=192.168.1.1\nDHCP=yes\n"
    );
    assert!(networkd(&out.text).unwrap().changes.is_empty());
    // A bond member from cloud-init's renderings is left alone.
    let bond = std::fs::read_to_string(realdata(
        "cloud-init/tests/unittests/net/artifacts/openstack_net_config_v1/etc/systemd/network/10-cloud-init-slot3port2.network",
    ))
    .unwrap();
    assert!(networkd(&bond).is_none());
}
