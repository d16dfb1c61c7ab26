//! Distro, product name and version, as virt-inspector decides them.
//!
//! Order: `/etc/os-release`, else `/usr/lib/os-release`. When os-release is
//! missing, names a distro we do not know, or gives no version (or only a
//! major version) the legacy files are consulted as libguestfs does:
//! `lsb-release` (Ubuntu, Mint, Mandriva), the distro-specific
//! `*-release` files (Oracle, Rocky, Alma, CentOS, Scientific, Fedora,
//! Red Hat), `system-release` (Amazon Linux), `SuSE-release`,
//! `debian_version`, `alpine-release`, `arch-release`, `gentoo-release`,
//! `slackware-version`, `mageia-release`, `mandriva-release`,
//! `altlinux-release`. A legacy result only refines the minor version when
//! it agrees on the distro and major version (e.g. CentOS 7's os-release
//! says `7`, centos-release says `7.9.2009`; Debian's says `10`,
//! debian_version says `10.13`).

use serde::Serialize;

use crate::util::{shell_vars, unquote, var, Ctx};

/// The distro part of an inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct DistroInfo {
    /// virt-inspector distro name, or `unknown`.
    pub distro: String,
    /// Product name (`PRETTY_NAME` or release-file line).
    pub product_name: Option<String>,
    /// Major version (0 = unknown).
    pub major_version: u32,
    /// Minor version (0 = unknown / none).
    pub minor_version: u32,
    /// os-release `ID`.
    pub os_release_id: Option<String>,
    /// os-release `ID_LIKE`.
    pub id_like: Vec<String>,
    /// Files used.
    pub release_files: Vec<String>,
}

/// Parse an os-release file into `(KEY, value)` pairs (quotes removed,
/// backslash escapes in double quotes resolved).
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let v = v.trim();
        let value = if let Some(inner) = v.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            s.push(n);
                        }
                    }
                    '"' => break,
                    c => s.push(c),
                }
            }
            s
        } else if let Some(inner) = v.strip_prefix('\'') {
            inner.split('\'').next().unwrap_or("").to_string()
        } else {
            v.to_string()
        };
        out.push((k.to_string(), value));
    }
    out
}

/// Map an os-release `ID` to the virt-inspector distro name.
fn distro_from_id(id: &str) -> Option<&'static str> {
    Some(match id {
        "debian" | "raspbian" => "debian",
        "ubuntu" => "ubuntu",
        "rhel" | "redhat" => "rhel",
        "centos" => "centos",
        "fedora" => "fedora",
        "ol" | "oracle" => "oraclelinux",
        "amzn" => "amazonlinux",
        "sles" | "sled" | "sles_sap" => "sles",
        "opensuse"
        | "opensuse-leap"
        | "opensuse-tumbleweed"
        | "opensuse-microos"
        | "suse-microos" => "opensuse",
        "rocky" => "rocky",
        "almalinux" => "almalinux",
        "alpine" => "alpinelinux",
        "arch" | "archarm" => "archlinux",
        "gentoo" => "gentoo",
        "linuxmint" => "linuxmint",
        "kali" => "kalilinux",
        "scientific" => "scientificlinux",
        "mageia" => "mageia",
        "mandriva" => "mandriva",
        "photon" => "photon",
        "coreos" => "coreos",
        "flatcar" => "flatcar",
        "nixos" => "nixos",
        "clear-linux-os" => "clearlinux",
        "virtuozzo" => "virtuozzo",
        "xenenterprise" => "xenserver",
        "xcp-ng" => "xcp-ng",
        "openeuler" => "openeuler",
        "altlinux" => "altlinux",
        "buildroot" => "buildroot",
        "slackware" => "slackware",
        "void" => "voidlinux",
        "cloudlinux" => "cloudlinux",
        "mariner" | "azurelinux" => "azurelinux",
        "frugalware" => "frugalware",
        "pld" => "pldlinux",
        "circle" => "circle",
        "kylin" => "kylin",
        "neokylin" => "neokylin",
        "pardus" => "pardus",
        _ => return None,
    })
}

/// Families that share release files and version rules.
fn family(distro: &str) -> &str {
    match distro {
        "rhel" | "centos" | "oraclelinux" | "rocky" | "almalinux" | "scientificlinux"
        | "cloudlinux" | "redhat-based" | "virtuozzo" => "rhel",
        d => d,
    }
}

/// `(major, minor, has_minor)` from the leading `N[.M]` of `s`.
pub(crate) fn parse_version(s: &str) -> Option<(u32, u32, bool)> {
    let s = s.trim();
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let rest = &s[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let major: u32 = rest[..end].parse().ok()?;
    let after = &rest[end..];
    if let Some(m) = after.strip_prefix('.') {
        let e = m.find(|c: char| !c.is_ascii_digit()).unwrap_or(m.len());
        if e > 0 {
            let minor: u32 = m[..e].parse().ok()?;
            return Some((major, minor, true));
        }
    }
    Some((major, 0, false))
}

/// Debian code names → major version (for `bookworm/sid`-style files).
fn debian_codename(s: &str) -> Option<u32> {
    let name = s.split(['/', ' ']).next().unwrap_or("").trim();
    Some(match name {
        "buzz" => 1,
        "hamm" => 2,
        "woody" => 3,
        "sarge" => 3,
        "etch" => 4,
        "lenny" => 5,
        "squeeze" => 6,
        "wheezy" => 7,
        "jessie" => 8,
        "stretch" => 9,
        "buster" => 10,
        "bullseye" => 11,
        "bookworm" => 12,
        "trixie" => 13,
        "forky" => 14,
        "duke" => 15,
        _ => return None,
    })
}

#[derive(Debug, Clone)]
struct Found {
    distro: String,
    product: Option<String>,
    version: Option<(u32, u32, bool)>,
    file: String,
}

/// Distro of a Red Hat-style release line ("CentOS Linux release 7.9 (Core)").
fn redhat_line_distro(line: &str) -> &'static str {
    let l = line.to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        ("fedora", "fedora"),
        ("red hat enterprise linux", "rhel"),
        ("centos", "centos"),
        ("scientific linux", "scientificlinux"),
        ("oracle linux", "oraclelinux"),
        ("enterprise linux enterprise linux", "oraclelinux"),
        ("rocky linux", "rocky"),
        ("almalinux", "almalinux"),
        ("amazon linux", "amazonlinux"),
        ("cloudlinux", "cloudlinux"),
        ("mageia", "mageia"),
        ("mandriva", "mandriva"),
        ("virtuozzo", "virtuozzo"),
        ("xenserver", "xenserver"),
        ("alt ", "altlinux"),
    ];
    for (needle, d) in table {
        if l.starts_with(needle) || (needle.len() > 4 && l.contains(needle)) {
            return d;
        }
    }
    "redhat-based"
}

/// Version after " release " (or the first number of the line).
fn release_line_version(line: &str) -> Option<(u32, u32, bool)> {
    let l = line.to_ascii_lowercase();
    if let Some(i) = l.find(" release ") {
        if let Some(v) = parse_version(&line[i + 9..]) {
            return Some(v);
        }
    }
    parse_version(line)
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The legacy (pre-os-release) detection, in libguestfs's order.
fn legacy(ctx: &Ctx<'_>) -> Option<Found> {
    // lsb-release: Ubuntu, Linux Mint, Mandriva and friends.
    if let Some(t) = ctx.read_text("/etc/lsb-release") {
        let vars = shell_vars(&t);
        let id = var(&vars, "DISTRIB_ID").unwrap_or("").to_ascii_lowercase();
        let distro = match id.as_str() {
            "ubuntu" => Some("ubuntu"),
            "linuxmint" => Some("linuxmint"),
            "mandrivalinux" | "mandriva" => Some("mandriva"),
            "mageia" => Some("mageia"),
            _ => None,
        };
        if let Some(d) = distro {
            return Some(Found {
                distro: d.into(),
                product: var(&vars, "DISTRIB_DESCRIPTION").map(str::to_string),
                version: var(&vars, "DISTRIB_RELEASE").and_then(parse_version),
                file: "/etc/lsb-release".into(),
            });
        }
    }
    // Red Hat family, most specific file first.
    for f in [
        "/etc/altlinux-release",
        "/etc/oracle-release",
        "/etc/rocky-release",
        "/etc/almalinux-release",
        "/etc/centos-release",
        "/etc/sl-release",
        "/etc/cloudlinux-release",
        "/etc/virtuozzo-release",
        "/etc/fedora-release",
        "/etc/mageia-release",
        "/etc/mandriva-release",
        "/etc/redhat-release",
        "/etc/system-release",
    ] {
        if let Some(line) = ctx.read_text(f).as_deref().and_then(first_line) {
            let mut d = redhat_line_distro(&line);
            if f == "/etc/altlinux-release" {
                d = "altlinux";
            }
            return Some(Found {
                distro: d.into(),
                version: release_line_version(&line),
                product: Some(line),
                file: f.into(),
            });
        }
    }
    if let Some(t) = ctx.read_text("/etc/SuSE-release") {
        let line = first_line(&t).unwrap_or_default();
        let l = line.to_ascii_lowercase();
        let distro = if l.contains("opensuse") {
            "opensuse"
        } else if l.contains("enterprise") {
            "sles"
        } else {
            "suse-based"
        };
        let vars: Vec<(String, String)> = t
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let version = match var(&vars, "VERSION").and_then(parse_version) {
            Some((maj, min, has)) => match var(&vars, "PATCHLEVEL").and_then(|p| p.parse().ok()) {
                Some(p) => Some((maj, p, true)),
                None => Some((maj, min, has)),
            },
            None => parse_version(&line),
        };
        return Some(Found {
            distro: distro.into(),
            product: Some(line),
            version,
            file: "/etc/SuSE-release".into(),
        });
    }
    if let Some(t) = ctx.read_text("/etc/debian_version") {
        let line = first_line(&t).unwrap_or_default();
        let version = if line.starts_with(|c: char| c.is_ascii_digit()) {
            parse_version(&line)
        } else {
            debian_codename(&line).map(|m| (m, 0, false))
        };
        return Some(Found {
            distro: "debian".into(),
            product: Some(format!("Debian {line}")),
            version,
            file: "/etc/debian_version".into(),
        });
    }
    let simple: &[(&str, &str)] = &[
        ("/etc/alpine-release", "alpinelinux"),
        ("/etc/arch-release", "archlinux"),
        ("/etc/gentoo-release", "gentoo"),
        ("/etc/slackware-version", "slackware"),
        ("/etc/pardus-release", "pardus"),
        ("/etc/frugalware-release", "frugalware"),
        ("/etc/pld-release", "pldlinux"),
        ("/etc/br-version", "buildroot"),
    ];
    for (f, d) in simple {
        if ctx.is_file(f) {
            let line = ctx.read_text(f).as_deref().and_then(first_line);
            let mut version = line.as_deref().and_then(parse_version);
            if *d == "gentoo" {
                version = line.as_deref().and_then(release_line_version);
            }
            if *d == "archlinux" {
                version = None;
            }
            return Some(Found {
                distro: (*d).into(),
                product: line,
                version,
                file: (*f).into(),
            });
        }
    }
    None
}

/// Detect distro and version.
pub(crate) fn detect_distro(ctx: &Ctx<'_>) -> DistroInfo {
    let mut info = DistroInfo {
        distro: "unknown".into(),
        ..DistroInfo::default()
    };
    let mut have_version = false;
    let mut has_minor = false;
    for f in ["/etc/os-release", "/usr/lib/os-release"] {
        let Some(t) = ctx.read_text(f) else { continue };
        let vars = parse_os_release(&t);
        let id = var(&vars, "ID").map(|s| s.trim().to_ascii_lowercase());
        if id.is_none() && var(&vars, "NAME").is_none() {
            continue;
        }
        info.release_files.push(f.into());
        info.id_like = var(&vars, "ID_LIKE")
            .map(|s| s.split_whitespace().map(str::to_ascii_lowercase).collect())
            .unwrap_or_default();
        info.product_name = var(&vars, "PRETTY_NAME")
            .or_else(|| var(&vars, "NAME"))
            .map(|s| unquote(s).to_string())
            .filter(|s| !s.is_empty());
        let name = var(&vars, "NAME").unwrap_or("").to_ascii_lowercase();
        if let Some(d) = id.as_deref().and_then(distro_from_id) {
            info.distro = d.into();
        }
        // Scientific Linux 7 says ID=rhel; derivatives abuse ID=raspbian.
        if info.distro == "rhel" && name.starts_with("scientific") {
            info.distro = "scientificlinux".into();
        }
        if id.as_deref() == Some("raspbian")
            && !name.contains("raspbian")
            && !name.contains("debian")
        {
            info.distro = "unknown".into();
        }
        info.os_release_id = id;
        if let Some((maj, min, has)) = var(&vars, "VERSION_ID").and_then(parse_version) {
            info.major_version = maj;
            info.minor_version = min;
            have_version = true;
            has_minor = has;
        } else if let Some((maj, min, has)) = var(&vars, "VERSION")
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .and_then(parse_version)
        {
            // No VERSION_ID (XenServer 7.6): VERSION when it is numeric.
            info.major_version = maj;
            info.minor_version = min;
            have_version = true;
            has_minor = has;
        }
        break;
    }
    // Legacy files: the whole answer when os-release gave nothing usable,
    // the minor version when it agrees.
    if info.distro == "unknown" || !have_version || !has_minor {
        if let Some(l) = legacy(ctx) {
            if info.distro == "unknown" && info.os_release_id.is_none() {
                info.distro = l.distro.clone();
                if info.product_name.is_none() {
                    info.product_name = l.product.clone();
                }
                if let Some((maj, min, _)) = l.version {
                    info.major_version = maj;
                    info.minor_version = min;
                }
                info.release_files.push(l.file);
            } else if info.distro == "unknown" {
                // os-release names a distro we do not know: keep "unknown"
                // (virt-inspector does), but take a version if it had none.
                if !have_version {
                    if let Some((maj, min, _)) = l.version {
                        info.major_version = maj;
                        info.minor_version = min;
                        info.release_files.push(l.file);
                    }
                }
            } else if family(&l.distro) == family(&info.distro) || l.distro == "redhat-based" {
                if let Some((maj, min, lhas)) = l.version {
                    if !have_version {
                        info.major_version = maj;
                        info.minor_version = min;
                        info.release_files.push(l.file);
                    } else if maj == info.major_version && lhas {
                        info.minor_version = min;
                        // virt-inspector takes Debian's whole answer from
                        // debian_version when os-release lacks the minor
                        // version: its product name is "12.2".
                        if l.file == "/etc/debian_version" {
                            info.product_name = l
                                .product
                                .as_deref()
                                .and_then(|p| p.strip_prefix("Debian "))
                                .map(str::to_string);
                        }
                        info.release_files.push(l.file);
                    }
                }
            }
        }
    }
    info
}

/// `(package_format, package_management)` by distro, as virt-inspector.
pub(crate) fn package_info(ctx: &Ctx<'_>, d: &DistroInfo) -> (Option<String>, Option<String>) {
    let s = |x: &str| Some(x.to_string());
    let dnf_or_yum = || {
        if ctx.exists("/usr/bin/dnf") || ctx.exists("/usr/bin/dnf-3") || ctx.exists("/usr/bin/dnf5")
        {
            s("dnf")
        } else {
            s("yum")
        }
    };
    let (fmt, mgmt) = match d.distro.as_str() {
        "debian" | "ubuntu" | "linuxmint" | "kalilinux" => (s("deb"), s("apt")),
        "fedora" => (
            s("rpm"),
            if d.major_version >= 22 || d.major_version == 0 {
                s("dnf")
            } else {
                s("yum")
            },
        ),
        "rhel" | "centos" | "oraclelinux" | "rocky" | "almalinux" | "scientificlinux"
        | "cloudlinux" | "virtuozzo" | "circle" => (
            s("rpm"),
            if d.major_version >= 8 {
                s("dnf")
            } else if d.major_version >= 5 {
                s("yum")
            } else if d.major_version == 0 {
                dnf_or_yum()
            } else {
                s("up2date")
            },
        ),
        "amazonlinux" => (
            s("rpm"),
            if d.major_version >= 2022 {
                s("dnf")
            } else {
                s("yum")
            },
        ),
        "redhat-based" | "xenserver" | "xcp-ng" | "openeuler" | "azurelinux" => {
            (s("rpm"), dnf_or_yum())
        }
        "sles" | "opensuse" | "suse-based" => (s("rpm"), s("zypper")),
        "mageia" | "mandriva" => (s("rpm"), s("urpmi")),
        "altlinux" => (s("rpm"), s("apt")),
        "alpinelinux" => (s("apk"), s("apk")),
        "archlinux" | "frugalware" => (s("pacman"), s("pacman")),
        "gentoo" => (s("ebuild"), s("portage")),
        "photon" => (s("rpm"), s("tdnf")),
        "clearlinux" => (None, s("swupd")),
        "pldlinux" => (s("rpm"), s("poldek")),
        "voidlinux" => (s("xbps"), s("xbps")),
        _ => {
            // Unknown distro: guess from what is installed.
            if ctx.is_dir("/var/lib/dpkg") {
                (s("deb"), s("apt"))
            } else if ctx.is_dir("/var/lib/rpm") || ctx.is_dir("/usr/lib/sysimage/rpm") {
                (s("rpm"), dnf_or_yum())
            } else if ctx.is_dir("/lib/apk/db") {
                (s("apk"), s("apk"))
            } else if ctx.is_dir("/var/lib/pacman") {
                (s("pacman"), s("pacman"))
            } else {
                (None, None)
            }
        }
    };
    (fmt, mgmt)
}
