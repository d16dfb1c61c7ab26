//! Static addressing to DHCP, for whatever NIC the cloud gives.
//!
//! The cloud VM has one NIC, and its name differs from the source's
//! (`ens192`, `eth1`, …). Our choice: the guest's primary Ethernet interface
//! is reconfigured as **`eth0` with DHCP**, and the kernel command line gets
//! `net.ifnames=0 biosdevname=0` (the `network` rule adds them through the
//! `kernel_args` action) so the cloud's NIC is named `eth0` whatever its bus.
//! MAC pinning (`HWADDR`, `MACADDR`, `hwaddress`, `mac-address`,
//! `MACAddress=`, netplan `match: macaddress`) is dropped, and
//! `/etc/udev/rules.d/70-persistent-net.rules` removed, so nothing ties the
//! configuration to the old hardware.
//!
//! Each function here edits one file's text; the caller renames files
//! (`ifcfg-ens192` → `ifcfg-eth0`) when [`Edit::rename_to`] says so.
//! Interfaces other than the primary one (loopback, bonds, bridges, VLANs,
//! Wi-Fi, secondary NICs) are left alone.

use crate::{lines_with_eol, shellvars, Change, Outcome};

/// The interface name the cloud NIC gets (with `net.ifnames=0`).
pub const CLOUD_NIC: &str = "eth0";

/// Kernel arguments that make the first NIC `eth0`.
pub const KERNEL_ARGS: &[&str] = &["net.ifnames=0", "biosdevname=0"];

/// The persistent-net udev rules to remove.
pub const PERSISTENT_NET_RULES: &str = "/etc/udev/rules.d/70-persistent-net.rules";

/// One file's edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// New text and changed lines.
    pub outcome: Outcome,
    /// The file's new name in its directory, if it must be renamed.
    pub rename_to: Option<String>,
}

fn change(line: usize, before: &str, after: &str, reason: &str) -> Change {
    Change {
        line,
        before: before.to_string(),
        after: after.to_string(),
        reason: reason.to_string(),
    }
}

/// Whether an interface name is a plain Ethernet NIC (not lo, bond, bridge,
/// VLAN, alias, Wi-Fi, virtual).
pub fn is_ethernet_name(name: &str) -> bool {
    let n = name.trim();
    !(n.is_empty()
        || n == "lo"
        || n.contains(['.', ':', '*', '@'])
        || [
            "bond", "br", "virbr", "docker", "wl", "vlan", "team", "tun", "tap", "veth", "ib",
            "ppp", "wg",
        ]
        .iter()
        .any(|p| n.starts_with(p)))
}

// ------------------------------------------------------------ ifcfg (RHEL, SUSE)

/// Keys of static addressing in ifcfg files (RHEL and SUSE), with numbered
/// and labelled variants (`IPADDR1`, `IPADDR_1`, SUSE's `IPADDR_eth0` and
/// its `LABEL_eth0`).
fn is_static_key(k: &str) -> bool {
    let head = k
        .split('_')
        .next()
        .unwrap_or(k)
        .trim_end_matches(|c: char| c.is_ascii_digit());
    matches!(
        head,
        "IPADDR" | "NETMASK" | "PREFIX" | "PREFIXLEN" | "GATEWAY" | "BROADCAST" | "NETWORK" | "DNS"
    ) || (head == "LABEL" && k.len() > "LABEL".len())
        || k.starts_with("REMOTE_IPADDR")
}

/// Convert an ifcfg file (`ifcfg-NAME`; RHEL `network-scripts` or SUSE
/// `sysconfig/network`) of the primary Ethernet interface to DHCP on eth0.
/// Returns `None` for files that are not a static or DHCP Ethernet NIC.
pub fn ifcfg(text: &str, file_name: &str, suse: bool) -> Option<Edit> {
    let name = file_name.strip_prefix("ifcfg-")?;
    let vars = shellvars::all(text);
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let device = get("DEVICE").unwrap_or(name);
    let kind = get("TYPE").unwrap_or("Ethernet");
    if !is_ethernet_name(device)
        || !kind.eq_ignore_ascii_case("ethernet")
        || get("MASTER").is_some()
        || get("BONDING_MASTER").is_some()
        || get("BRIDGE").is_some()
    {
        return None;
    }
    let mut set: Vec<(&str, &str)> = vec![("BOOTPROTO", "dhcp")];
    if suse {
        set.push(("STARTMODE", "auto"));
    } else {
        set.push(("ONBOOT", "yes"));
        if get("DEVICE").is_some() {
            set.push(("DEVICE", CLOUD_NIC));
        }
        if get("NAME").is_some_and(|n| n == device) {
            set.push(("NAME", CLOUD_NIC));
        }
    }
    let mut unset: Vec<&str> = vars
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| is_static_key(k))
        .collect();
    unset.extend(
        ["HWADDR", "MACADDR", "LLADDR"]
            .iter()
            .filter(|k| get(k).is_some()),
    );
    unset.sort_unstable();
    unset.dedup();
    let outcome = shellvars::edit(text, &set, &unset, "DHCP on the cloud NIC");
    let rename_to = (name != CLOUD_NIC).then(|| format!("ifcfg-{CLOUD_NIC}"));
    Some(Edit { outcome, rename_to })
}

// ------------------------------------------------------------ /etc/network/interfaces

/// Options of an `iface … inet static` stanza that DHCP replaces.
const IFUPDOWN_STATIC: &[&str] = &[
    "address",
    "netmask",
    "gateway",
    "broadcast",
    "network",
    "pointopoint",
    "metric",
    "hwaddress",
    "dns-nameservers",
    "dns-search",
    "dns-domain",
    "scope",
];

/// Debian's `/etc/network/interfaces` (and files in `interfaces.d`): the
/// first Ethernet `iface NAME inet static|dhcp` becomes `iface eth0 inet
/// dhcp`, its static options are commented out, and `auto` /
/// `allow-hotplug` lines follow the rename.
pub fn interfaces(text: &str) -> Outcome {
    // The primary interface: the first Ethernet `iface NAME inet …` whose
    // NAME is brought up by an `auto`/`allow-*` line; else the first one.
    // (Names only used as templates for `inherits` are not interfaces.)
    let started: Vec<String> = lines_with_eol(text)
        .filter_map(|(l, _)| {
            let mut w = l.split_whitespace();
            let first = w.next()?;
            (first == "auto" || first.starts_with("allow-"))
                .then(|| w.map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    let candidates: Vec<String> = lines_with_eol(text)
        .filter_map(|(l, _)| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&"iface")
                && w.get(2) == Some(&"inet")
                && w.get(1).is_some_and(|n| is_ethernet_name(n))
                && matches!(w.get(3).copied(), Some("static" | "dhcp" | "manual")))
            .then(|| w[1].to_string())
        })
        .collect();
    let primary = candidates
        .iter()
        .find(|c| started.contains(c))
        .or_else(|| candidates.first())
        .cloned();
    let Some(primary) = primary else {
        return Outcome {
            text: text.to_string(),
            notes: vec!["no Ethernet interface configured".into()],
            ..Outcome::default()
        };
    };
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut in_primary = false;
    for (i, (line, eol)) in lines_with_eol(text).enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let first = words.first().copied().unwrap_or("");
        let stanza_start = matches!(
            first,
            "iface" | "auto" | "allow-hotplug" | "mapping" | "source" | "source-directory"
        ) || first.starts_with("allow-");
        if stanza_start {
            in_primary = first == "iface" && words.get(1) == Some(&primary.as_str());
        }
        let mut after: Option<(String, String)> = None;
        if first == "iface"
            && words.get(1) == Some(&primary.as_str())
            && words.get(2) == Some(&"inet")
        {
            let want = format!("{indent}iface {CLOUD_NIC} inet dhcp");
            if trimmed != want.trim_start() {
                after = Some((
                    want,
                    format!("{primary}: DHCP on the cloud NIC {CLOUD_NIC}"),
                ));
            }
        } else if first == "iface"
            && words.get(1) == Some(&primary.as_str())
            && primary != CLOUD_NIC
        {
            // inet6 and other families follow the rename.
            let renamed = line.replacen(primary.as_str(), CLOUD_NIC, 1);
            after = Some((renamed, format!("{primary} is {CLOUD_NIC} in the cloud")));
        } else if (first == "auto" || first.starts_with("allow-"))
            && words.iter().skip(1).any(|w| *w == primary)
            && primary != CLOUD_NIC
        {
            let mut parts = vec![first.to_string()];
            parts.extend(words.iter().skip(1).map(|w| {
                if *w == primary {
                    CLOUD_NIC.to_string()
                } else {
                    w.to_string()
                }
            }));
            after = Some((
                format!("{indent}{}", parts.join(" ")),
                format!("{primary} is {CLOUD_NIC} in the cloud"),
            ));
        } else if in_primary && !stanza_start && IFUPDOWN_STATIC.contains(&first) {
            after = Some((format!("#{line}"), "static setting replaced by DHCP".into()));
        }
        match after {
            Some((a, reason)) => {
                changes.push(change(i + 1, line, &a, &reason));
                out.push_str(&a);
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    Outcome {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

// ------------------------------------------------------------ INI-style (NM keyfile, networkd)

/// Rewrite an INI-style file: `f(section, key, value)` returns `Keep`,
/// `Drop` (commented out) or `Set(new value)`; `add` lists keys to add at the
/// end of a section when missing.
enum KeyEdit {
    Keep,
    Drop(&'static str),
    Set(String, &'static str),
}

fn ini_edit(
    text: &str,
    f: &dyn Fn(&str, &str, &str) -> KeyEdit,
    add: &[(&str, &str, &str)],
) -> Outcome {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut section = String::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    let lines: Vec<(&str, &str)> = lines_with_eol(text).collect();
    let flush_adds = |section: &str,
                      seen: &[(String, String)],
                      out: &mut String,
                      changes: &mut Vec<Change>,
                      line: usize| {
        for (s, k, v) in add {
            if *s == section && !seen.iter().any(|(ss, kk)| ss == s && kk == k) {
                let l = format!("{k}={v}");
                changes.push(change(line, "", &l, "DHCP on the cloud NIC"));
                out.push_str(&l);
                out.push('\n');
            }
        }
    };
    for (i, (line, eol)) in lines.iter().enumerate() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            flush_adds(&section, &seen, &mut out, &mut changes, i + 1);
            section = t[1..t.len() - 1].to_string();
        } else if let Some((k, v)) = t.split_once('=').filter(|_| !t.starts_with(['#', ';'])) {
            let (k, v) = (k.trim(), v.trim());
            seen.push((section.clone(), k.to_string()));
            match f(&section, k, v) {
                KeyEdit::Keep => {}
                KeyEdit::Drop(reason) => {
                    let a = format!("#{line}");
                    changes.push(change(i + 1, line, &a, reason));
                    out.push_str(&a);
                    out.push_str(eol);
                    continue;
                }
                KeyEdit::Set(nv, reason) => {
                    if nv != v {
                        let a = format!("{k}={nv}");
                        changes.push(change(i + 1, line, &a, reason));
                        out.push_str(&a);
                        out.push_str(eol);
                        continue;
                    }
                }
            }
        }
        out.push_str(line);
        out.push_str(eol);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    flush_adds(&section, &seen, &mut out, &mut changes, lines.len() + 1);
    // Sections that did not exist at all.
    let present = |s: &str| lines.iter().any(|(l, _)| l.trim() == format!("[{s}]"));
    let mut added_sections: Vec<&str> = Vec::new();
    for (s, k, v) in add {
        if present(s) {
            continue;
        }
        if !added_sections.contains(s) {
            out.push_str(&format!("\n[{s}]\n"));
            changes.push(change(
                lines.len() + 1,
                "",
                &format!("[{s}]"),
                "DHCP on the cloud NIC",
            ));
            added_sections.push(s);
        }
        let l = format!("{k}={v}");
        changes.push(change(lines.len() + 1, "", &l, "DHCP on the cloud NIC"));
        out.push_str(&l);
        out.push('\n');
    }
    Outcome {
        text: out,
        changes,
        notes: Vec::new(),
    }
}

fn ini_get<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut cur = "";
    for (line, _) in lines_with_eol(text) {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            cur = &t[1..t.len() - 1];
        } else if cur == section {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim());
                }
            }
        }
    }
    None
}

/// A NetworkManager keyfile (`*.nmconnection`) of an Ethernet connection:
/// IPv4 to `auto`, static addresses, gateway and DNS dropped, bound to no
/// interface name or MAC. `None` for other connection types.
pub fn nm_keyfile(text: &str) -> Option<Outcome> {
    let ty = ini_get(text, "connection", "type")?;
    if ty != "ethernet" && ty != "802-3-ethernet" {
        return None;
    }
    if ini_get(text, "connection", "master").is_some()
        || ini_get(text, "connection", "controller").is_some()
    {
        return None;
    }
    Some(ini_edit(
        text,
        &|s, k, _v| match (s, k) {
            ("connection", "interface-name") => {
                KeyEdit::Drop("apply to whatever NIC the cloud gives")
            }
            (
                "ethernet" | "802-3-ethernet",
                "mac-address" | "cloned-mac-address" | "mac-address-blacklist",
            ) => KeyEdit::Drop("no MAC pinning"),
            ("ipv4", "method") => KeyEdit::Set("auto".into(), "DHCP on the cloud NIC"),
            ("ipv4", k)
                if k.starts_with("address")
                    || k.starts_with("route")
                    || k == "gateway"
                    || k == "dns"
                    || k == "dns-search" =>
            {
                KeyEdit::Drop("static setting replaced by DHCP")
            }
            _ => KeyEdit::Keep,
        },
        &[("ipv4", "method", "auto")],
    ))
}

/// A systemd-networkd `.network` file matching an Ethernet NIC: match
/// `eth0` (not a MAC), `DHCP=yes`, static addresses, gateway and DNS dropped.
/// `None` for files that match no Ethernet name.
pub fn networkd(text: &str) -> Option<Outcome> {
    let name = ini_get(text, "Match", "Name");
    let mac = ini_get(text, "Match", "MACAddress");
    if name.is_none() && mac.is_none() {
        return None;
    }
    // Members of bonds and bridges take their addresses from the master.
    if ["Bond", "Bridge", "VRF"]
        .iter()
        .any(|k| ini_get(text, "Network", k).is_some())
    {
        return None;
    }
    if let Some(n) = name {
        if !n
            .split_whitespace()
            .all(|n| is_ethernet_name(n) || n.starts_with("en") || n.starts_with("eth"))
        {
            return None;
        }
    }
    Some(ini_edit(
        text,
        &|s, k, _v| match (s, k) {
            ("Match", "Name") => KeyEdit::Set(CLOUD_NIC.into(), "the cloud NIC is eth0"),
            ("Match", "MACAddress" | "PermanentMACAddress" | "Path" | "Driver") => {
                KeyEdit::Drop("no hardware pinning")
            }
            ("Network", "DHCP") => KeyEdit::Set("yes".into(), "DHCP on the cloud NIC"),
            ("Network", "Address" | "Gateway" | "DNS") => {
                KeyEdit::Drop("static setting replaced by DHCP")
            }
            ("Address" | "Route", _) => KeyEdit::Drop("static setting replaced by DHCP"),
            _ => KeyEdit::Keep,
        },
        &[("Match", "Name", CLOUD_NIC), ("Network", "DHCP", "yes")],
    ))
}

// ------------------------------------------------------------ netplan

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// A netplan YAML file: the first interface under `ethernets:` becomes
/// `eth0` with `dhcp4: true`; its `addresses`, `gateway4/6`, `routes`,
/// `nameservers`, `match` and `set-name` are commented out. A small
/// indentation-based editor: it handles block-style YAML as netplan's own
/// examples write it; flow-style maps (`{…}`) on the interface are left
/// alone with a note.
pub fn netplan(text: &str) -> Outcome {
    let lines: Vec<(&str, &str)> = lines_with_eol(text).collect();
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let eth = lines
        .iter()
        .position(|(l, _)| l.trim_start().starts_with("ethernets:"));
    let Some(eth) = eth else {
        return Outcome {
            text: text.to_string(),
            changes,
            notes: vec!["no ethernets in this netplan file".into()],
        };
    };
    let eth_indent = indent_of(lines[eth].0);
    // The first interface key under ethernets.
    let iface = lines.iter().enumerate().skip(eth + 1).find(|(_, (l, _))| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    });
    let Some((iface_at, (iface_line, _))) = iface else {
        return Outcome {
            text: text.to_string(),
            changes,
            notes: vec!["empty ethernets".into()],
        };
    };
    let if_indent = indent_of(iface_line);
    if if_indent <= eth_indent || iface_line.contains('{') {
        return Outcome {
            text: text.to_string(),
            changes,
            notes: vec![
                "netplan interface in a form this editor does not handle; left alone".into(),
            ],
        };
    }
    let old_name = iface_line
        .trim()
        .trim_end_matches(':')
        .trim_matches(['"', '\''])
        .to_string();
    // Extent of the interface block.
    let end = lines
        .iter()
        .enumerate()
        .skip(iface_at + 1)
        .find(|(_, (l, _))| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && indent_of(l) <= if_indent
        })
        .map_or(lines.len(), |(i, _)| i);
    let key_indent = lines[iface_at + 1..end]
        .iter()
        .map(|(l, _)| l)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| indent_of(l))
        .min()
        .unwrap_or(if_indent + 2);
    let mut dropping = false;
    let mut had_dhcp4 = false;
    for (i, (line, eol)) in lines.iter().enumerate() {
        let mut after: Option<(String, &str)> = None;
        if i == iface_at && old_name != CLOUD_NIC {
            after = Some((
                format!("{}{CLOUD_NIC}:", " ".repeat(if_indent)),
                "the cloud NIC is eth0",
            ));
        } else if i > iface_at && i < end {
            let t = line.trim_start();
            let ind = indent_of(line);
            if ind == key_indent && !t.is_empty() && !t.starts_with('#') {
                let key = t.split(':').next().unwrap_or("");
                dropping = matches!(
                    key,
                    "addresses"
                        | "gateway4"
                        | "gateway6"
                        | "routes"
                        | "nameservers"
                        | "match"
                        | "set-name"
                );
                if key == "dhcp4" {
                    had_dhcp4 = true;
                    if !matches!(t.split(':').nth(1).map(str::trim), Some("true" | "yes")) {
                        after = Some((
                            format!("{}dhcp4: true", " ".repeat(key_indent)),
                            "DHCP on the cloud NIC",
                        ));
                    }
                }
            }
            if dropping && !t.is_empty() && !t.starts_with('#') {
                after = Some((
                    format!("#{line}"),
                    "static or hardware-bound setting replaced by DHCP",
                ));
            }
        }
        if i == end && !had_dhcp4 {
            let add = format!("{}dhcp4: true", " ".repeat(key_indent));
            changes.push(change(i + 1, "", &add, "DHCP on the cloud NIC"));
            out.push_str(&add);
            out.push('\n');
            had_dhcp4 = true;
        }
        match after {
            Some((a, reason)) => {
                changes.push(change(i + 1, line, &a, reason));
                out.push_str(&a);
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    if !had_dhcp4 {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        let add = format!("{}dhcp4: true", " ".repeat(key_indent));
        changes.push(change(lines.len() + 1, "", &add, "DHCP on the cloud NIC"));
        out.push_str(&add);
        out.push('\n');
    }
    if old_name == CLOUD_NIC && changes.is_empty() {
        notes.push("already DHCP on eth0".into());
    }
    Outcome {
        text: out,
        changes,
        notes,
    }
}
