//! Host name, init system, SELinux, guest agents, DHCP clients, sshd.

use serde::Serialize;

use crate::util::{shell_vars, var, Ctx};

/// sshd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SshInfo {
    /// An sshd binary exists.
    pub installed: bool,
    /// It is enabled at boot (systemd wants link, SysV `S*` link, OpenRC
    /// runlevel, upstart job).
    pub enabled: bool,
    /// The unit/script that enables it.
    pub enabled_by: Option<String>,
}

/// Guest agents and services that matter for a cloud import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Agents {
    /// cloud-init installed.
    pub cloud_init: bool,
    /// `/etc/cloud/cloud-init.disabled` exists.
    pub cloud_init_disabled: bool,
    /// open-vm-tools or VMware Tools.
    pub vmware_tools: bool,
    /// Hyper-V daemons (hv_kvp_daemon, hypervkvpd).
    pub hyperv_daemons: bool,
    /// VirtualBox guest additions.
    pub virtualbox_additions: bool,
    /// QEMU guest agent.
    pub qemu_guest_agent: bool,
    /// Citrix/XenServer guest tools.
    pub xen_tools: bool,
    /// Amazon SSM agent.
    pub amazon_ssm_agent: bool,
    /// DHCP clients installed: `dhclient`, `dhcpcd`, `NetworkManager`,
    /// `systemd-networkd`, `udhcpc`, `wicked`.
    pub dhcp_clients: Vec<String>,
    /// sshd.
    pub ssh: SshInfo,
}

fn any(ctx: &Ctx<'_>, paths: &[&str]) -> bool {
    paths.iter().any(|p| ctx.exists(p))
}

/// Host name from the usual files.
pub(crate) fn hostname(ctx: &Ctx<'_>) -> Option<String> {
    let clean = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 255 && !s.contains(char::is_whitespace)).then(|| s.to_string())
    };
    for p in ["/etc/hostname", "/etc/HOSTNAME"] {
        if let Some(t) = ctx.read_text(p) {
            if let Some(h) = t
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .and_then(clean)
            {
                return Some(h);
            }
        }
    }
    for (p, key) in [
        ("/etc/sysconfig/network", "HOSTNAME"),
        ("/etc/conf.d/hostname", "hostname"),
        ("/etc/conf.d/hostname", "HOSTNAME"),
    ] {
        if let Some(t) = ctx.read_text(p) {
            if let Some(h) = var(&shell_vars(&t), key).and_then(clean) {
                return Some(h);
            }
        }
    }
    None
}

/// `systemd`, `upstart`, `openrc`, `sysvinit`, `busybox`.
pub(crate) fn init_system(ctx: &Ctx<'_>) -> Option<String> {
    let s = |x: &str| Some(x.to_string());
    // Follow /sbin/init's symlink chain by name (bounded).
    let mut p = "/sbin/init".to_string();
    for _ in 0..8 {
        match ctx.readlink(&p) {
            Some(t) => {
                if t.contains("systemd") {
                    return s("systemd");
                }
                if t.contains("busybox") {
                    return if ctx.exists("/sbin/openrc") || ctx.exists("/usr/sbin/openrc") {
                        s("openrc")
                    } else {
                        s("busybox")
                    };
                }
                if t.contains("openrc") {
                    return s("openrc");
                }
                if t.contains("upstart") {
                    return s("upstart");
                }
                p = if t.starts_with('/') {
                    t
                } else {
                    format!("/sbin/{t}")
                };
            }
            None => break,
        }
    }
    if !ctx.exists("/sbin/init") && any(ctx, &["/lib/systemd/systemd", "/usr/lib/systemd/systemd"])
    {
        return s("systemd");
    }
    if ctx.exists("/sbin/initctl") && ctx.is_dir("/etc/init") && !ctx.is_dir("/etc/systemd/system")
        || ctx.exists("/sbin/upstart")
    {
        return s("upstart");
    }
    if any(
        ctx,
        &[
            "/sbin/openrc",
            "/sbin/openrc-run",
            "/usr/sbin/openrc",
            "/sbin/openrc-init",
        ],
    ) {
        return s("openrc");
    }
    if ctx.is_file("/etc/inittab") && ctx.exists("/sbin/init") {
        return s("sysvinit");
    }
    if any(ctx, &["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]) {
        return s("systemd");
    }
    if ctx.exists("/sbin/init") {
        return s("sysvinit");
    }
    None
}

/// `SELINUX=` of /etc/selinux/config.
pub(crate) fn selinux(ctx: &Ctx<'_>) -> Option<String> {
    let t = ctx.read_text("/etc/selinux/config")?;
    var(&shell_vars(&t), "SELINUX").map(str::to_ascii_lowercase)
}

fn ssh_enabled(ctx: &Ctx<'_>) -> Option<String> {
    // systemd: any *.wants directory in /etc/systemd/system.
    for (d, t) in ctx.list("/etc/systemd/system") {
        if t != vmie_guestfs::FileType::Directory || !d.ends_with(".wants") {
            continue;
        }
        for unit in [
            "ssh.service",
            "sshd.service",
            "ssh.socket",
            "sshd.socket",
            "openssh.service",
            "openssh-server.service",
        ] {
            let p = format!("/etc/systemd/system/{d}/{unit}");
            if ctx.lexists(&p) {
                return Some(p);
            }
        }
    }
    // SysV rc links.
    for base in ["/etc", "/etc/rc.d"] {
        for lvl in ["2", "3", "5"] {
            let dir = format!("{base}/rc{lvl}.d");
            for (n, _) in ctx.list(&dir) {
                if n.starts_with('S') && n.contains("ssh") {
                    return Some(format!("{dir}/{n}"));
                }
            }
        }
    }
    // OpenRC.
    for lvl in ["default", "boot"] {
        let p = format!("/etc/runlevels/{lvl}/sshd");
        if ctx.lexists(&p) {
            return Some(p);
        }
    }
    // Upstart job without a manual override.
    if ctx.is_file("/etc/init/ssh.conf") && !ctx.exists("/etc/init/ssh.override") {
        return Some("/etc/init/ssh.conf".into());
    }
    None
}

/// Agents, DHCP clients, cloud-init and sshd.
pub(crate) fn agents(ctx: &Ctx<'_>) -> Agents {
    let mut dhcp = Vec::new();
    for (name, paths) in [
        (
            "dhclient",
            &["/sbin/dhclient", "/usr/sbin/dhclient", "/usr/bin/dhclient"][..],
        ),
        (
            "dhcpcd",
            &["/sbin/dhcpcd", "/usr/sbin/dhcpcd", "/usr/bin/dhcpcd"][..],
        ),
        (
            "NetworkManager",
            &["/usr/sbin/NetworkManager", "/usr/bin/NetworkManager"][..],
        ),
        (
            "systemd-networkd",
            &[
                "/lib/systemd/systemd-networkd",
                "/usr/lib/systemd/systemd-networkd",
            ][..],
        ),
        (
            "udhcpc",
            &[
                "/sbin/udhcpc",
                "/usr/sbin/udhcpc",
                "/bin/udhcpc",
                "/usr/bin/udhcpc",
            ][..],
        ),
        ("wicked", &["/usr/sbin/wicked", "/sbin/wicked"][..]),
    ] {
        if any(ctx, paths) {
            dhcp.push(name.to_string());
        }
    }
    let enabled_by = ssh_enabled(ctx);
    Agents {
        cloud_init: any(
            ctx,
            &[
                "/usr/bin/cloud-init",
                "/usr/local/bin/cloud-init",
                "/etc/cloud/cloud.cfg",
            ],
        ),
        cloud_init_disabled: ctx.exists("/etc/cloud/cloud-init.disabled"),
        vmware_tools: any(
            ctx,
            &[
                "/etc/vmware-tools",
                "/usr/bin/vmtoolsd",
                "/usr/sbin/vmtoolsd",
                "/usr/lib/vmware-tools",
                "/usr/lib/open-vm-tools",
            ],
        ),
        hyperv_daemons: any(
            ctx,
            &[
                "/usr/sbin/hv_kvp_daemon",
                "/usr/sbin/hypervkvpd",
                "/usr/libexec/hypervkvpd",
                "/usr/lib/systemd/system/hypervkvpd.service",
                "/lib/systemd/system/hv-kvp-daemon.service",
                "/usr/lib/linux-tools/hv_kvp_daemon",
            ],
        ),
        virtualbox_additions: any(
            ctx,
            &[
                "/usr/sbin/VBoxService",
                "/usr/bin/VBoxService",
                "/usr/bin/VBoxClient",
                "/etc/init.d/vboxadd",
                "/opt/VBoxGuestAdditions",
            ],
        ) || ctx
            .list("/opt")
            .iter()
            .any(|(n, _)| n.starts_with("VBoxGuestAdditions")),
        qemu_guest_agent: any(ctx, &["/usr/bin/qemu-ga", "/usr/sbin/qemu-ga"]),
        xen_tools: any(
            ctx,
            &["/usr/sbin/xe-daemon", "/usr/sbin/xe-linux-distribution"],
        ),
        amazon_ssm_agent: any(
            ctx,
            &["/usr/bin/amazon-ssm-agent", "/snap/bin/amazon-ssm-agent"],
        ),
        dhcp_clients: dhcp,
        ssh: SshInfo {
            installed: any(ctx, &["/usr/sbin/sshd", "/sbin/sshd", "/usr/bin/sshd"]),
            enabled: enabled_by.is_some(),
            enabled_by,
        },
    }
}
