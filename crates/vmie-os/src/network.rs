//! Network configuration: which stacks are configured, and each configured
//! interface with its method and addresses.
//!
//! Stacks: `ifcfg-rh` (`/etc/sysconfig/network-scripts/ifcfg-*`),
//! `ifcfg-suse` (`/etc/sysconfig/network/ifcfg-*`, wicked), `ifupdown`
//! (`/etc/network/interfaces`, `source`/`source-directory`, interfaces.d;
//! the ifupdown2 and ifupdown-ng dialects too), `netplan`
//! (`/etc/netplan/*.yaml`), `networkmanager` (keyfiles in
//! `/etc/NetworkManager/system-connections/`), `systemd-networkd`
//! (`/etc/systemd/network/*.network`).
//!
//! Netplan is read by a small indentation-aware reader, not a YAML parser:
//! block mappings, block lists (`- item`), flow lists (`[a, b]`), quotes
//! and comments. Anchors, aliases, multi-line scalars and flow mappings are
//! not understood (their keys are ignored).

use serde::Serialize;
use vmie_guestfs::FileType;

use crate::util::{join, shell_vars, unquote, var, Ctx};

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMethod {
    /// Static addresses.
    Static,
    /// DHCP (v4 and/or v6, or SLAAC/auto).
    Dhcp,
    /// Configured without an address (manual, none, disabled, ignore).
    Manual,
    /// The loopback interface.
    Loopback,
}

/// One configured interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Interface name (or, for a NetworkManager profile without
    /// `interface-name`, the profile id).
    pub name: String,
    /// Address method.
    pub method: NetMethod,
    /// Static addresses (`ADDR/PREFIX` when the prefix is known).
    pub addresses: Vec<String>,
    /// Default gateway, when given.
    pub gateway: Option<String>,
    /// MAC address the configuration is bound to, when given.
    pub mac: Option<String>,
    /// The stack (`ifcfg-rh`, `ifcfg-suse`, `ifupdown`, `netplan`,
    /// `networkmanager`, `systemd-networkd`).
    pub stack: String,
    /// File it came from.
    pub source: String,
}

/// Network configuration found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct NetworkInfo {
    /// Stacks with at least one configuration file.
    pub stacks: Vec<String>,
    /// Configured interfaces.
    pub interfaces: Vec<Interface>,
}

fn iface(name: &str, method: NetMethod, stack: &str, source: &str) -> Interface {
    Interface {
        name: name.to_string(),
        method,
        addresses: Vec::new(),
        gateway: None,
        mac: None,
        stack: stack.to_string(),
        source: source.to_string(),
    }
}

fn netmask_prefix(mask: &str) -> Option<u32> {
    let octets: Vec<u8> = mask
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    let v = u32::from_be_bytes([octets[0], octets[1], octets[2], octets[3]]);
    let p = v.leading_ones();
    (v.checked_shl(p).unwrap_or(0) == 0).then_some(p)
}

/// Parse a Red Hat or SUSE `ifcfg-NAME` file. `file_name` gives the name
/// when `DEVICE=` is absent.
pub fn parse_ifcfg(file_name: &str, text: &str, stack: &str, source: &str) -> Interface {
    let vars = shell_vars(text);
    let fallback = file_name.strip_prefix("ifcfg-").unwrap_or(file_name);
    let name = var(&vars, "DEVICE")
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback);
    let proto = var(&vars, "BOOTPROTO").unwrap_or("").to_ascii_lowercase();
    let mut addrs = Vec::new();
    for (k, v) in &vars {
        let ku = k.to_ascii_uppercase();
        let Some(suffix) = ku.strip_prefix("IPADDR") else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        let prefix = var(&vars, &format!("PREFIX{suffix}"))
            .map(str::to_string)
            .or_else(|| {
                var(&vars, &format!("NETMASK{suffix}"))
                    .and_then(netmask_prefix)
                    .map(|p| p.to_string())
            })
            .or_else(|| var(&vars, &format!("PREFIXLEN{suffix}")).map(str::to_string));
        let a = match prefix {
            Some(p) if !v.contains('/') => format!("{v}/{p}"),
            _ => v.clone(),
        };
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    let method = if name == "lo" {
        NetMethod::Loopback
    } else if proto.starts_with("dhcp") || proto == "bootp" || proto.contains("auto") {
        NetMethod::Dhcp
    } else if proto == "static" || !addrs.is_empty() {
        NetMethod::Static
    } else {
        NetMethod::Manual
    };
    let mut i = iface(name, method, stack, source);
    i.addresses = addrs;
    i.gateway = var(&vars, "GATEWAY")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    i.mac = var(&vars, "HWADDR")
        .or_else(|| var(&vars, "MACADDR"))
        .or_else(|| var(&vars, "LLADDR"))
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase());
    i
}

/// Result of parsing one `interfaces(5)` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfacesFile {
    /// `iface` stanzas.
    pub interfaces: Vec<Interface>,
    /// `source` / `source-directory` / `source-directories` arguments.
    pub sources: Vec<String>,
    /// Names marked `auto` / `allow-*`.
    pub auto: Vec<String>,
}

/// Parse Debian `interfaces(5)` (ifupdown, ifupdown2, ifupdown-ng).
pub fn parse_interfaces(text: &str, source: &str) -> InterfacesFile {
    let mut out = InterfacesFile::default();
    let mut cur: Option<usize> = None;
    // Join backslash continuations.
    let joined = text.replace("\\\n", " ");
    for raw in joined.lines().take(100_000) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let key = w.first().copied().unwrap_or("");
        match key {
            "iface" => {
                let name = w.get(1).copied().unwrap_or("");
                let family = w.get(2).copied().unwrap_or("");
                let m = w
                    .get(3)
                    .copied()
                    .unwrap_or(if family.is_empty() { "" } else { "manual" });
                let method = match m {
                    "loopback" => NetMethod::Loopback,
                    "dhcp" | "auto" | "bootp" | "ipv4ll" => NetMethod::Dhcp,
                    "static" => NetMethod::Static,
                    _ if name == "lo" => NetMethod::Loopback,
                    _ => NetMethod::Manual,
                };
                out.interfaces.push(iface(name, method, "ifupdown", source));
                cur = Some(out.interfaces.len() - 1);
            }
            "mapping" => cur = None,
            "auto" | "allow-hotplug" | "allow-auto" => {
                out.auto.extend(w.iter().skip(1).map(|s| s.to_string()));
                cur = None;
            }
            k if k.starts_with("allow-") => {
                out.auto.extend(w.iter().skip(1).map(|s| s.to_string()));
                cur = None;
            }
            "source" | "source-directory" | "source-directories" => {
                out.sources
                    .extend(w.iter().skip(1).map(|s| format!("{key} {s}")));
                cur = None;
            }
            _ => {
                let Some(i) = cur.and_then(|c| out.interfaces.get_mut(c)) else {
                    continue;
                };
                let val = w.get(1).copied().unwrap_or("");
                match key {
                    "address" | "addresses" => {
                        for a in w.iter().skip(1) {
                            i.addresses.push(a.to_string());
                        }
                        if i.method == NetMethod::Manual {
                            i.method = NetMethod::Static;
                        }
                    }
                    "netmask" => {
                        if let (Some(last), Some(p)) = (
                            i.addresses.last_mut(),
                            netmask_prefix(val)
                                .map(|p| p.to_string())
                                .or_else(|| val.parse::<u32>().ok().map(|p| p.to_string())),
                        ) {
                            if !last.contains('/') {
                                *last = format!("{last}/{p}");
                            }
                        }
                    }
                    "gateway" => i.gateway = Some(val.to_string()),
                    "hwaddress" => {
                        i.mac = w.last().map(|s| s.to_ascii_lowercase());
                    }
                    "use" if val == "dhcp" => i.method = NetMethod::Dhcp,
                    "use" if val == "loopback" => i.method = NetMethod::Loopback,
                    _ => {}
                }
            }
        }
    }
    out
}

/// A flattened netplan document: `(key path, scalar)` pairs; list items
/// get their list's path.
fn yaml_flatten(text: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    // Stack of (indent, key).
    let mut stack: Vec<(usize, String)> = Vec::new();
    for raw in text.lines().take(100_000) {
        let no_comment = strip_comment(raw);
        let trimmed = no_comment.trim_end();
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with("---") {
            continue;
        }
        let mut indent = trimmed.len() - trimmed.trim_start().len();
        let mut body = trimmed.trim_start();
        let mut list_item = false;
        if let Some(rest) = body
            .strip_prefix("- ")
            .or_else(|| (body == "-").then_some(""))
        {
            list_item = true;
            // The owner of a list is the last key with indent <= the dash's.
            while stack.last().is_some_and(|(i, _)| *i > indent) {
                stack.pop();
            }
            indent += 2;
            body = rest.trim_start();
            if body.is_empty() {
                continue;
            }
        } else {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
        }
        let path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
        match split_key(body) {
            Some((k, v)) if !(list_item && is_scalar_item(body)) => {
                let v = v.trim();
                if v.is_empty() {
                    stack.push((indent, k));
                } else {
                    let mut p = path.clone();
                    p.push(k);
                    for item in flow_items(v) {
                        out.push((p.clone(), item));
                    }
                }
            }
            _ => {
                // A scalar list item, possibly `- "addr":` (a mapping key).
                let s = body.trim_end_matches(':');
                for item in flow_items(s) {
                    out.push((path.clone(), item));
                }
                if body.ends_with(':') {
                    stack.push((indent, unquote(s).to_string()));
                }
            }
        }
    }
    out
}

fn is_scalar_item(body: &str) -> bool {
    // `- 10.0.0.1/24` or `- "fe80::1/64"`; an IPv6 address has colons but no ": ".
    !body.contains(": ") && !body.ends_with(':')
}

fn strip_comment(line: &str) -> &str {
    let mut q: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match q {
            Some(x) if c == x => q = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => q = Some(c),
            None if c == '#' && (prev == ' ' || prev == '\t' || i == 0) => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

fn split_key(body: &str) -> Option<(String, String)> {
    if let Some(inner) = body.strip_prefix('"') {
        let end = inner.find('"')?;
        let rest = inner[end + 1..].strip_prefix(':')?;
        return Some((inner[..end].to_string(), rest.to_string()));
    }
    let i = body
        .find(": ")
        .or_else(|| body.ends_with(':').then(|| body.len() - 1))?;
    Some((body[..i].trim().to_string(), body[i + 1..].to_string()))
}

fn flow_items(v: &str) -> Vec<String> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        inner
            .split(',')
            .map(|s| unquote(s.trim()).to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        vec![unquote(v).to_string()]
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "y")
}

/// Parse one netplan file (see the module docs for its limits).
pub fn parse_netplan(text: &str, source: &str) -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    for (path, value) in yaml_flatten(text) {
        if path.len() < 4 || path[0] != "network" {
            continue;
        }
        if !matches!(
            path[1].as_str(),
            "ethernets" | "bonds" | "bridges" | "vlans" | "wifis" | "vrfs"
        ) {
            continue;
        }
        let name = &path[2];
        let pos = match out.iter().position(|i| &i.name == name) {
            Some(p) => p,
            None => {
                out.push(iface(name, NetMethod::Manual, "netplan", source));
                out.len() - 1
            }
        };
        let Some(i) = out.get_mut(pos) else { continue };
        match (path[3].as_str(), path.get(4).map(String::as_str)) {
            ("dhcp4" | "dhcp6", None) if truthy(&value) => i.method = NetMethod::Dhcp,
            ("addresses", None) => {
                i.addresses.push(value);
                if i.method == NetMethod::Manual {
                    i.method = NetMethod::Static;
                }
            }
            ("addresses", Some(a)) if path.len() == 5 => {
                // `- "10.0.0.1/24": {lifetime: 0}` style.
                if !i.addresses.iter().any(|x| x == a) {
                    i.addresses.push(a.to_string());
                }
                if i.method == NetMethod::Manual {
                    i.method = NetMethod::Static;
                }
            }
            ("gateway4", None) => i.gateway = Some(value),
            ("match", Some("macaddress")) => i.mac = Some(value.to_ascii_lowercase()),
            ("macaddress", None) if i.mac.is_none() => i.mac = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    // Interfaces named only in a `match`, or with nothing set, stay Manual.
    out
}

/// Sections of an INI-style file (`[section]`, `key=value`).
fn ini(text: &str) -> Vec<(String, String, String)> {
    let mut sec = String::new();
    let mut out = Vec::new();
    for line in text.lines().take(100_000) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            sec = s.trim().to_string();
        } else if let Some((k, v)) = l.split_once('=') {
            out.push((sec.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Parse a NetworkManager keyfile (`.nmconnection`). `None` for profiles
/// that are not wired/bond/bridge/vlan (wifi, vpn, ...) — those are
/// reported too, with their type as the stack detail being irrelevant
/// here, so only non-loopback profiles with an `[ipv4]`/`[ipv6]` section
/// or an interface name are returned.
pub fn parse_nmconnection(text: &str, source: &str) -> Option<Interface> {
    let kv = ini(text);
    let get = |s: &str, k: &str| {
        kv.iter()
            .rev()
            .find(|(a, b, _)| a == s && b == k)
            .map(|(_, _, v)| v.as_str())
    };
    let id = get("connection", "id");
    let name = get("connection", "interface-name").or(id)?;
    let m4 = get("ipv4", "method").unwrap_or("auto");
    let m6 = get("ipv6", "method").unwrap_or("auto");
    let mut addrs = Vec::new();
    for (s, k, v) in &kv {
        if (s == "ipv4" || s == "ipv6") && (k.starts_with("address") && k != "address-data") {
            let toks: Vec<&str> = v
                .split(';')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .collect();
            if toks.len() >= 2 && !toks[0].contains('/') && toks[1].parse::<u8>().is_ok() {
                // Old format: `addr;prefix;gateway;`.
                addrs.push(format!("{}/{}", toks[0], toks[1]));
            } else {
                for a in toks {
                    // `addr/prefix,gateway`
                    addrs.push(a.split(',').next().unwrap_or(a).trim().to_string());
                }
            }
        }
    }
    let method = if get("connection", "type") == Some("loopback") {
        NetMethod::Loopback
    } else if m4 == "auto" || m6 == "auto" || m6 == "dhcp" {
        if m4 == "manual" && !addrs.is_empty() {
            NetMethod::Static
        } else if m4 == "auto" {
            NetMethod::Dhcp
        } else if !addrs.is_empty() {
            NetMethod::Static
        } else {
            NetMethod::Dhcp
        }
    } else if m4 == "manual" || m6 == "manual" || !addrs.is_empty() {
        NetMethod::Static
    } else {
        NetMethod::Manual
    };
    let mut i = iface(name, method, "networkmanager", source);
    i.addresses = addrs;
    i.gateway = get("ipv4", "gateway").map(str::to_string).or_else(|| {
        kv.iter()
            .find(|(s, k, _)| s == "ipv4" && k.starts_with("address"))
            .and_then(|(_, _, v)| v.split(';').next())
            .and_then(|a| a.split(',').nth(1))
            .map(|g| g.trim().to_string())
    });
    i.mac = get("ethernet", "mac-address")
        .or_else(|| get("802-3-ethernet", "mac-address"))
        .map(|s| s.to_ascii_lowercase());
    Some(i)
}

/// Parse a systemd-networkd `.network` file.
pub fn parse_networkd(file_name: &str, text: &str, source: &str) -> Interface {
    let kv = ini(text);
    let get = |s: &str, k: &str| {
        kv.iter()
            .rev()
            .find(|(a, b, _)| a == s && b == k)
            .map(|(_, _, v)| v.as_str())
    };
    let name = get("Match", "Name")
        .map(|n| n.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| file_name.trim_end_matches(".network").to_string());
    let dhcp = get("Network", "DHCP").unwrap_or("no").to_ascii_lowercase();
    let addrs: Vec<String> = kv
        .iter()
        .filter(|(s, k, _)| (s == "Network" || s == "Address") && k == "Address")
        .map(|(_, _, v)| v.clone())
        .collect();
    let method = if matches!(
        dhcp.as_str(),
        "yes" | "true" | "ipv4" | "ipv6" | "both" | "1"
    ) {
        NetMethod::Dhcp
    } else if !addrs.is_empty() {
        NetMethod::Static
    } else {
        NetMethod::Manual
    };
    let mut i = iface(&name, method, "systemd-networkd", source);
    i.addresses = addrs;
    i.gateway = get("Network", "Gateway")
        .or_else(|| get("Route", "Gateway"))
        .map(str::to_string);
    i.mac = get("Match", "MACAddress").map(|s| s.to_ascii_lowercase());
    i
}

fn add_stack(info: &mut NetworkInfo, s: &str) {
    if !info.stacks.iter().any(|x| x == s) {
        info.stacks.push(s.to_string());
    }
}

/// Read every stack's configuration from the guest.
pub(crate) fn detect_network(ctx: &Ctx<'_>, _warnings: &mut Vec<String>) -> NetworkInfo {
    let mut info = NetworkInfo::default();
    for (dir, stack) in [
        ("/etc/sysconfig/network-scripts", "ifcfg-rh"),
        ("/etc/sysconfig/network", "ifcfg-suse"),
    ] {
        for (name, t) in ctx.list(dir) {
            if t == FileType::Directory || !name.starts_with("ifcfg-") {
                continue;
            }
            if name.ends_with(".bak")
                || name.ends_with(".rpmsave")
                || name.ends_with(".rpmnew")
                || name.ends_with('~')
                || name.ends_with(".orig")
            {
                continue;
            }
            let p = join(dir, &name);
            if let Some(text) = ctx.read_text(&p) {
                add_stack(&mut info, stack);
                info.interfaces.push(parse_ifcfg(&name, &text, stack, &p));
            }
        }
    }
    // ifupdown, following source directives (bounded).
    let mut queue: Vec<String> = vec!["/etc/network/interfaces".into()];
    let mut seen: Vec<String> = Vec::new();
    while let Some(p) = queue.pop() {
        if seen.contains(&p) || seen.len() >= 256 || queue.len() > 4096 {
            continue;
        }
        seen.push(p.clone());
        let Some(text) = ctx.read_text(&p) else {
            continue;
        };
        let f = parse_interfaces(&text, &p);
        let real: Vec<&Interface> = f
            .interfaces
            .iter()
            .filter(|i| i.method != NetMethod::Loopback)
            .collect();
        if !real.is_empty() {
            add_stack(&mut info, "ifupdown");
        }
        info.interfaces.extend(f.interfaces.iter().cloned());
        for s in f.sources.iter().rev() {
            let (kind, arg) = s.split_once(' ').unwrap_or(("source", s));
            let arg = if arg.starts_with('/') {
                arg.to_string()
            } else {
                join("/etc/network", arg)
            };
            if kind == "source" {
                if let Some(dir_glob) = arg.strip_suffix("/*") {
                    for (n, t) in ctx.list(dir_glob).into_iter().rev() {
                        if t != FileType::Directory {
                            queue.push(join(dir_glob, &n));
                        }
                    }
                } else if let Some((dir, pat)) =
                    arg.rsplit_once('/').filter(|(_, p)| p.contains('*'))
                {
                    let (pre, suf) = pat.split_once('*').unwrap_or((pat, ""));
                    for (n, t) in ctx.list(dir).into_iter().rev() {
                        if t != FileType::Directory && n.starts_with(pre) && n.ends_with(suf) {
                            queue.push(join(dir, &n));
                        }
                    }
                } else {
                    queue.push(arg);
                }
            } else {
                // source-directory: files whose names are [A-Za-z0-9_-]+.
                for (n, t) in ctx.list(&arg).into_iter().rev() {
                    if t != FileType::Directory
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        queue.push(join(&arg, &n));
                    }
                }
            }
        }
    }
    for dir in ["/etc/netplan", "/lib/netplan", "/run/netplan"] {
        for (name, t) in ctx.list(dir) {
            if t == FileType::Directory || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let p = join(dir, &name);
            if let Some(text) = ctx.read_text(&p) {
                add_stack(&mut info, "netplan");
                info.interfaces.extend(parse_netplan(&text, &p));
            }
        }
    }
    for dir in [
        "/etc/NetworkManager/system-connections",
        "/usr/lib/NetworkManager/system-connections",
    ] {
        for (name, t) in ctx.list(dir) {
            if t == FileType::Directory {
                continue;
            }
            let p = join(dir, &name);
            if let Some(i) = ctx.read_text(&p).and_then(|t| parse_nmconnection(&t, &p)) {
                add_stack(&mut info, "networkmanager");
                info.interfaces.push(i);
            }
        }
    }
    for dir in [
        "/etc/systemd/network",
        "/usr/lib/systemd/network",
        "/run/systemd/network",
    ] {
        if dir != "/etc/systemd/network" && !info.stacks.iter().any(|s| s == "systemd-networkd") {
            // Vendor defaults only matter once the admin configured networkd.
            continue;
        }
        for (name, t) in ctx.list(dir) {
            if t == FileType::Directory || !name.ends_with(".network") {
                continue;
            }
            let p = join(dir, &name);
            if let Some(text) = ctx.read_text(&p) {
                add_stack(&mut info, "systemd-networkd");
                info.interfaces.push(parse_networkd(&name, &text, &p));
            }
        }
    }
    info
}
