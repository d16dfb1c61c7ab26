//! libosinfo short ids (`debian12`, `ubuntu22.04`, `rhel9.4`, `sle15sp5`,
//! `win2k19`, `win11`, ...), the `<osinfo>` element of virt-inspector.
//!
//! The rules are libguestfs's (`guestfs_impl_inspect_get_osinfo`), applied
//! to the distro and version this crate (or `vmie-win`) detected:
//!
//! - `centos` 8+ → `centosN`, 7 → `centos7.0`, 6 → `centos6.M`;
//!   `rocky`, `circle` 8+ → `rockyN`; `debian` 4+ → `debianN`;
//!   `fedora`, `mageia` → `fedoraN`; `ubuntu` → `ubuntuN.MM` (two-digit
//!   minor); `sles` → `sle` (15+) or `sles` (older) + `N`, and `spM` when the
//!   service pack M is not 0; `archlinux`, `gentoo`, `voidlinux` → the name;
//!   `altlinux` 8+ → `altN.M`, older `altlinuxN.M`; any other named
//!   distro with a version → `distroN.M`.
//! - Windows by major.minor, product variant (`Server` or not) and product
//!   name: 5.1 `winxp`; 5.2 `winxp`/`win2k3r2`/`win2k3`; 6.0
//!   `win2k8`/`winvista`; 6.1 `win2k8r2`/`win7`; 6.2 `win2k12`/`win8`; 6.3
//!   `win2k12r2`/`win8.1`; 10.0 server `win2k25`/`win2k22`/`win2k19`/`win2k16`
//!   by the year in the product name, client `win11` from build 22000 on,
//!   else `win10`.
//!
//! Where libguestfs's generic `distroN.M` would print a name libosinfo does
//! not use, we answer libosinfo's id or nothing (virt-inspector would print
//! the made-up name); every such difference is listed here:
//!
//! - `oraclelinux` → `olN.M` (libosinfo's prefix).
//! - Mandriva 2007 and 2011 → `mandriva2007`, `mandriva2011` (libosinfo's
//!   spelling of those two; the others are `mandrivaN.M`).
//! - openSUSE Tumbleweed (os-release `ID=opensuse-tumbleweed`, whose
//!   version is a date) → `opensusetumbleweed`; SUSE Linux Enterprise
//!   Micro (`ID=suse-microos`, which this crate calls `opensuse`) →
//!   `slemN.M`; openSUSE MicroOS (rolling, `ID=opensuse-microos`) → none.
//! - `almalinux` (a name libguestfs does not have) 8+ → `almalinuxN`, the
//!   scheme libosinfo uses for it, as for Rocky; `clearlinux` →
//!   `clearlinux`.
//! - Unknown versions (major and minor 0) give no id where libguestfs would
//!   print `fedora0` or `ubuntu0.00`.
//! - Distros libosinfo has no entries for (`linuxmint` and `kalilinux`,
//!   whose version numbers are their own, `coreos`, `buildroot`,
//!   `pldlinux`, `frugalware`, `kylin`, `neokylin`, `pardus`,
//!   `redhat-based`, `suse-based`, and this crate's names libguestfs lacks:
//!   `amazonlinux`, `photon`, `flatcar`, `nixos`, `virtuozzo`, `xenserver`,
//!   `xcp-ng`, `azurelinux`, `cloudlinux`, `openeuler`) give no id.
//!
//! `None` is virt-inspector's `unknown` (it then omits the element).

/// The libosinfo short id of a Linux guest: `distro` is this crate's name
/// (see [`crate::LinuxInfo::distro`]), `os_release_id` the os-release `ID`
/// when there was one.
pub fn linux_osinfo(
    distro: &str,
    os_release_id: Option<&str>,
    major: u32,
    minor: u32,
) -> Option<String> {
    let versioned = major > 0 || minor > 0;
    let id = match distro {
        "centos" => match major {
            8.. => format!("centos{major}"),
            7 => "centos7.0".to_string(),
            6 => format!("centos6.{minor}"),
            _ if versioned => format!("centos{major}.{minor}"),
            _ => return None,
        },
        "rocky" | "circle" | "almalinux" if major >= 8 => format!("{distro}{major}"),
        "rocky" | "circle" | "almalinux" => return None,
        "debian" if major >= 4 => format!("debian{major}"),
        "fedora" | "mageia" if major > 0 => format!("{distro}{major}"),
        "sles" if major > 0 => {
            let base = if major >= 15 { "sle" } else { "sles" };
            if minor == 0 {
                format!("{base}{major}")
            } else {
                format!("{base}{major}sp{minor}")
            }
        }
        "ubuntu" if versioned => format!("ubuntu{major}.{minor:02}"),
        "archlinux" | "gentoo" | "voidlinux" | "clearlinux" => distro.to_string(),
        "altlinux" if major >= 8 => format!("alt{major}.{minor}"),
        "opensuse" if os_release_id == Some("opensuse-tumbleweed") => {
            "opensusetumbleweed".to_string()
        }
        "opensuse" if os_release_id == Some("suse-microos") && versioned => {
            format!("slem{major}.{minor}")
        }
        "opensuse" if os_release_id == Some("opensuse-microos") => return None,
        "oraclelinux" if versioned => format!("ol{major}.{minor}"),
        "mandriva" if minor == 0 && (major == 2007 || major == 2011) => format!("mandriva{major}"),
        "debian" | "altlinux" | "rhel" | "opensuse" | "alpinelinux" | "scientificlinux"
        | "mandriva" | "slackware" | "cirros"
            if versioned =>
        {
            format!("{distro}{major}.{minor}")
        }
        _ => return None,
    };
    Some(id)
}

/// The libosinfo short id of a Windows guest, from virt-inspector's
/// `product_name`, `product_variant` (`Client`, `Server`, `Server Core`,
/// ...), `major_version`, `minor_version` and `build_id`.
pub fn windows_osinfo(
    product_name: Option<&str>,
    product_variant: Option<&str>,
    major: u32,
    minor: u32,
    build_id: Option<&str>,
) -> Option<String> {
    let name = product_name.unwrap_or("");
    let server = product_variant.unwrap_or("").contains("Server");
    let id = match (major, minor) {
        (5, 1) => "winxp",
        (5, 2) if name.contains("XP") => "winxp",
        (5, 2) if name.contains("R2") => "win2k3r2",
        (5, 2) => "win2k3",
        (6, 0) if server => "win2k8",
        (6, 0) => "winvista",
        (6, 1) if server => "win2k8r2",
        (6, 1) => "win7",
        (6, 2) if server => "win2k12",
        (6, 2) => "win8",
        (6, 3) if server => "win2k12r2",
        (6, 3) => "win8.1",
        (10, 0) if server => {
            if name.contains("2025") {
                "win2k25"
            } else if name.contains("2022") {
                "win2k22"
            } else if name.contains("2019") {
                "win2k19"
            } else {
                "win2k16"
            }
        }
        (10, 0) => {
            let build: u32 = build_id?.trim().parse().ok()?;
            if build >= 22000 {
                "win11"
            } else {
                "win10"
            }
        }
        _ => return None,
    };
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(d: &str, maj: u32, min: u32) -> Option<String> {
        linux_osinfo(d, None, maj, min)
    }

    #[test]
    fn linux_ids_follow_libguestfs() {
        assert_eq!(l("debian", 12, 4).as_deref(), Some("debian12"));
        assert_eq!(l("debian", 3, 1).as_deref(), Some("debian3.1"));
        assert_eq!(l("ubuntu", 22, 4).as_deref(), Some("ubuntu22.04"));
        assert_eq!(l("ubuntu", 20, 10).as_deref(), Some("ubuntu20.10"));
        assert_eq!(l("rhel", 9, 4).as_deref(), Some("rhel9.4"));
        assert_eq!(l("rhel", 7, 0).as_deref(), Some("rhel7.0"));
        assert_eq!(l("centos", 7, 9).as_deref(), Some("centos7.0"));
        assert_eq!(l("centos", 6, 10).as_deref(), Some("centos6.10"));
        assert_eq!(l("centos", 8, 5).as_deref(), Some("centos8"));
        assert_eq!(l("centos", 5, 11).as_deref(), Some("centos5.11"));
        assert_eq!(l("rocky", 9, 3).as_deref(), Some("rocky9"));
        assert_eq!(l("circle", 8, 4).as_deref(), Some("circle8"));
        assert_eq!(l("fedora", 39, 0).as_deref(), Some("fedora39"));
        assert_eq!(l("mageia", 8, 0).as_deref(), Some("mageia8"));
        assert_eq!(l("opensuse", 15, 5).as_deref(), Some("opensuse15.5"));
        assert_eq!(l("sles", 15, 5).as_deref(), Some("sle15sp5"));
        assert_eq!(l("sles", 15, 0).as_deref(), Some("sle15"));
        assert_eq!(l("sles", 12, 5).as_deref(), Some("sles12sp5"));
        assert_eq!(l("sles", 11, 0).as_deref(), Some("sles11"));
        assert_eq!(l("alpinelinux", 3, 18).as_deref(), Some("alpinelinux3.18"));
        assert_eq!(l("archlinux", 0, 0).as_deref(), Some("archlinux"));
        assert_eq!(l("gentoo", 2, 14).as_deref(), Some("gentoo"));
        assert_eq!(l("voidlinux", 0, 0).as_deref(), Some("voidlinux"));
        assert_eq!(l("altlinux", 10, 0).as_deref(), Some("alt10.0"));
        assert_eq!(l("altlinux", 7, 0).as_deref(), Some("altlinux7.0"));
        assert_eq!(
            l("scientificlinux", 7, 9).as_deref(),
            Some("scientificlinux7.9")
        );
    }

    #[test]
    fn linux_ids_where_we_differ_from_libguestfs() {
        assert_eq!(l("oraclelinux", 8, 5).as_deref(), Some("ol8.5"));
        assert_eq!(
            linux_osinfo("opensuse", Some("opensuse-tumbleweed"), 20240823, 0).as_deref(),
            Some("opensusetumbleweed")
        );
        assert_eq!(
            linux_osinfo("opensuse", Some("suse-microos"), 5, 1).as_deref(),
            Some("slem5.1")
        );
        assert_eq!(
            linux_osinfo("opensuse", Some("opensuse-microos"), 20240823, 0),
            None
        );
        assert_eq!(l("almalinux", 9, 6).as_deref(), Some("almalinux9"));
        assert_eq!(l("mandriva", 2011, 0).as_deref(), Some("mandriva2011"));
        assert_eq!(l("mandriva", 2010, 2).as_deref(), Some("mandriva2010.2"));
        assert_eq!(l("fedora", 0, 0), None);
        assert_eq!(l("ubuntu", 0, 0), None);
        assert_eq!(l("debian", 0, 0), None);
        assert_eq!(l("rhel", 0, 0), None);
        assert_eq!(l("rocky", 0, 0), None);
        for d in [
            "linuxmint",
            "kalilinux",
            "amazonlinux",
            "redhat-based",
            "unknown",
            "photon",
            "coreos",
        ] {
            assert_eq!(l(d, 21, 1), None, "{d}");
        }
    }

    #[test]
    fn windows_ids_follow_libguestfs() {
        let w = |name: &str, variant: &str, maj, min, build: Option<&str>| {
            windows_osinfo(Some(name), Some(variant), maj, min, build)
        };
        assert_eq!(
            w("Microsoft Windows XP", "Client", 5, 1, None).as_deref(),
            Some("winxp")
        );
        assert_eq!(
            w("Windows Server 2003 R2", "Server", 5, 2, None).as_deref(),
            Some("win2k3r2")
        );
        assert_eq!(
            w("Windows Server 2003", "Server", 5, 2, None).as_deref(),
            Some("win2k3")
        );
        assert_eq!(
            w("Windows 7 Professional", "Client", 6, 1, Some("7601")).as_deref(),
            Some("win7")
        );
        assert_eq!(
            w("Windows Server 2008 R2 Standard", "Server", 6, 1, None).as_deref(),
            Some("win2k8r2")
        );
        assert_eq!(
            w("Windows Vista", "Client", 6, 0, None).as_deref(),
            Some("winvista")
        );
        assert_eq!(
            w("Windows 8.1 Pro", "Client", 6, 3, None).as_deref(),
            Some("win8.1")
        );
        assert_eq!(
            w("Windows Server 2012 R2", "Server Core", 6, 3, None).as_deref(),
            Some("win2k12r2")
        );
        assert_eq!(
            w("Windows 10 Pro", "Client", 10, 0, Some("19045")).as_deref(),
            Some("win10")
        );
        // Windows 11 keeps "Windows 10" in ProductName: the build decides.
        assert_eq!(
            w("Windows 10 Pro", "Client", 10, 0, Some("22631")).as_deref(),
            Some("win11")
        );
        assert_eq!(w("Windows 10 Pro", "Client", 10, 0, None), None);
        assert_eq!(w("Windows 10 Pro", "Client", 10, 0, Some("x")), None);
        assert_eq!(
            w(
                "Windows Server 2019 Datacenter",
                "Server",
                10,
                0,
                Some("17763")
            )
            .as_deref(),
            Some("win2k19")
        );
        assert_eq!(
            w(
                "Windows Server 2022 Standard",
                "Server",
                10,
                0,
                Some("20348")
            )
            .as_deref(),
            Some("win2k22")
        );
        assert_eq!(
            w(
                "Windows Server 2025 Standard",
                "Server",
                10,
                0,
                Some("26100")
            )
            .as_deref(),
            Some("win2k25")
        );
        assert_eq!(
            w(
                "Windows Server 2016 Standard",
                "Server",
                10,
                0,
                Some("14393")
            )
            .as_deref(),
            Some("win2k16")
        );
        assert_eq!(w("Windows NT", "Client", 4, 0, None), None);
        assert_eq!(windows_osinfo(None, None, 0, 0, None), None);
    }
}
