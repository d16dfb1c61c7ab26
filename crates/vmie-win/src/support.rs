//! Whether the import service supports a Windows guest, and the facts its
//! preflight checks, in the service's own words (the VM Import/Export user
//! guide, "Operating systems" and "Windows" preparation).

use serde::Serialize;

use crate::info::{PagefileKind, WindowsInfo};

/// One line of the guide's list of Windows operating systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedWindows {
    /// The release as [`crate::windows_release`] names it.
    pub release: &'static str,
    /// The guide's line, verbatim.
    pub entry: &'static str,
    /// The editions the line names.
    pub editions: &'static [&'static str],
    /// "32- and 64-bit" (else "64-bit only").
    pub x86: bool,
    /// "(US English)".
    pub us_english_only: bool,
}

const STD_DC: &[&str] = &["Standard", "Datacenter"];
const STD_DC_ENT: &[&str] = &["Standard", "Datacenter", "Enterprise"];

/// The guide's "Windows (Regions enabled by default)" list:
///
/// > - Microsoft Windows Server 2003 (Standard, Datacenter, Enterprise) with Service Pack 1 (SP1) or later (32- and 64-bit)
/// > - Microsoft Windows Server 2003 R2 (Standard, Datacenter, Enterprise) (32- and 64-bit)
/// > - Microsoft Windows Server 2008 (Standard, Datacenter, Enterprise) (32- and 64-bit)
/// > - Microsoft Windows Server 2008 R2 (Standard, Web Server, Datacenter, Enterprise) (64-bit only)
/// > - Microsoft Windows Server 2012 (Standard, Datacenter) (64-bit only)
/// > - Microsoft Windows Server 2012 R2 (Standard, Datacenter) (64-bit only) (Nano Server installation not supported)
/// > - Microsoft Windows Server 2016 (Standard, Datacenter) (64-bit only)
/// > - Microsoft Windows Server 1709 (Standard, Datacenter) (64-bit only)
/// > - Microsoft Windows Server 1803 (Standard, Datacenter) (64-bit only)
/// > - Microsoft Windows Server 2019 (Standard, Datacenter) (64-bit only)
/// > - Microsoft Windows 7 (Home, Professional, Enterprise, Ultimate) (US English) (32- and 64-bit)
/// > - Microsoft Windows 8 (Home, Professional, Enterprise) (US English) (32- and 64-bit)
/// > - Microsoft Windows 8.1 (Professional, Enterprise) (US English) (64-bit only)
/// > - Microsoft Windows 10 (Home, Professional, Enterprise, Education) (US English) (64-bit only)
///
/// (Regions not enabled by default take the same list, 64-bit only.)
pub const LISTED_WINDOWS: &[ListedWindows] = &[
    ListedWindows {
        release: "Windows Server 2003",
        entry: "Microsoft Windows Server 2003 (Standard, Datacenter, Enterprise) with Service Pack 1 (SP1) or later (32- and 64-bit)",
        editions: STD_DC_ENT,
        x86: true,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2003 R2",
        entry: "Microsoft Windows Server 2003 R2 (Standard, Datacenter, Enterprise) (32- and 64-bit)",
        editions: STD_DC_ENT,
        x86: true,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2008",
        entry: "Microsoft Windows Server 2008 (Standard, Datacenter, Enterprise) (32- and 64-bit)",
        editions: STD_DC_ENT,
        x86: true,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2008 R2",
        entry: "Microsoft Windows Server 2008 R2 (Standard, Web Server, Datacenter, Enterprise) (64-bit only)",
        editions: &["Standard", "Web Server", "Datacenter", "Enterprise"],
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2012",
        entry: "Microsoft Windows Server 2012 (Standard, Datacenter) (64-bit only)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2012 R2",
        entry: "Microsoft Windows Server 2012 R2 (Standard, Datacenter) (64-bit only) (Nano Server installation not supported)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2016",
        entry: "Microsoft Windows Server 2016 (Standard, Datacenter) (64-bit only)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 1709",
        entry: "Microsoft Windows Server 1709 (Standard, Datacenter) (64-bit only)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 1803",
        entry: "Microsoft Windows Server 1803 (Standard, Datacenter) (64-bit only)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows Server 2019",
        entry: "Microsoft Windows Server 2019 (Standard, Datacenter) (64-bit only)",
        editions: STD_DC,
        x86: false,
        us_english_only: false,
    },
    ListedWindows {
        release: "Windows 7",
        entry: "Microsoft Windows 7 (Home, Professional, Enterprise, Ultimate) (US English) (32- and 64-bit)",
        editions: &["Home", "Professional", "Enterprise", "Ultimate"],
        x86: true,
        us_english_only: true,
    },
    ListedWindows {
        release: "Windows 8",
        entry: "Microsoft Windows 8 (Home, Professional, Enterprise) (US English) (32- and 64-bit)",
        editions: &["Home", "Professional", "Enterprise"],
        x86: true,
        us_english_only: true,
    },
    ListedWindows {
        release: "Windows 8.1",
        entry: "Microsoft Windows 8.1 (Professional, Enterprise) (US English) (64-bit only)",
        editions: &["Professional", "Enterprise"],
        x86: false,
        us_english_only: true,
    },
    ListedWindows {
        release: "Windows 10",
        entry: "Microsoft Windows 10 (Home, Professional, Enterprise, Education) (US English) (64-bit only)",
        editions: &["Home", "Professional", "Enterprise", "Education"],
        x86: false,
        us_english_only: true,
    },
];

/// The guide's verdict on a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Support {
    /// On the list.
    Supported {
        /// The guide's line it matches.
        listed_as: String,
        /// What could not be checked, and cautions.
        notes: Vec<String>,
    },
    /// Not on the list (release, edition, architecture, service pack or language).
    NotListed {
        /// Why, quoting the guide.
        reason: String,
    },
    /// The release could not be determined.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// The edition family of an `EditionID` as the guide names them (`Home`,
/// `Professional`, `Enterprise`, `Education`, `Ultimate`, `Starter`,
/// `Standard`, `Datacenter`, `Web Server`). `Core*` is Home (Windows 8 and
/// later), `HomeBasic`/`HomePremium` are Windows 7 Home.
pub fn edition_family(edition_id: &str) -> Option<&'static str> {
    let e = edition_id.trim().to_ascii_lowercase();
    if let Some(s) = e.strip_prefix("server") {
        return if s.contains("datacenter") {
            Some("Datacenter")
        } else if s.contains("standard") {
            Some("Standard")
        } else if s.contains("enterprise") {
            Some("Enterprise")
        } else if s.contains("web") {
            Some("Web Server")
        } else {
            None
        };
    }
    let fams: &[(&str, &'static str)] = &[
        ("core", "Home"),
        ("home", "Home"),
        ("professional", "Professional"),
        ("enterprise", "Enterprise"),
        ("education", "Education"),
        ("ultimate", "Ultimate"),
        ("starter", "Starter"),
    ];
    fams.iter().find(|(p, _)| e.starts_with(p)).map(|(_, f)| *f)
}

/// The edition family named in a product name (`Windows 7 Professional`).
fn family_from_product_name(name: &str) -> Option<&'static str> {
    let words: &[(&str, &'static str)] = &[
        ("datacenter", "Datacenter"),
        ("standard", "Standard"),
        ("web server", "Web Server"),
        ("enterprise", "Enterprise"),
        ("professional", "Professional"),
        (" pro", "Professional"),
        ("education", "Education"),
        ("ultimate", "Ultimate"),
        ("home", "Home"),
        ("starter", "Starter"),
    ];
    let n = name.to_ascii_lowercase();
    words.iter().find(|(w, _)| n.contains(w)).map(|(_, f)| *f)
}

fn service_pack_level(sp: &str) -> Option<u32> {
    let n = sp.trim().strip_prefix("Service Pack")?.trim_start();
    let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn is_en_us(lcid: &str) -> Option<bool> {
    let n = u32::from_str_radix(lcid.trim(), 16).ok()?;
    Some(n == 0x0409)
}

const LANGUAGE_PACKS: &str = "\"Windows language packs that use UTF-16 (or non-ASCII) characters are not supported for import. We recommend using the English language pack when importing Windows VMs.\"";

/// Whether the guide lists `info`'s Windows: release, edition, architecture,
/// service pack (Server 2003) and, for client releases, "(US English)".
/// What cannot be checked (unknown arch, edition or language) is a note of
/// `Supported`, not a refusal.
pub fn supported_status(info: &WindowsInfo) -> Support {
    let Some(release) = info.release.as_deref() else {
        return Support::Unknown {
            reason: match (info.hives.software, info.major_version) {
                (false, _) => "the SOFTWARE hive could not be read".into(),
                (true, 0) => "no Windows version in the SOFTWARE hive".into(),
                (true, _) => format!(
                    "unknown Windows release: version {}.{} build {} ({})",
                    info.major_version,
                    info.minor_version,
                    info.build_id.as_deref().unwrap_or("?"),
                    info.product_variant.as_deref().unwrap_or("?")
                ),
            },
        };
    };
    if info
        .installation_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("Nano Server"))
    {
        return Support::NotListed {
            reason: format!("{release} is a Nano Server installation: \"Nano Server installation not supported\""),
        };
    }
    let Some(l) = LISTED_WINDOWS.iter().find(|l| l.release == release) else {
        return Support::NotListed {
            reason: format!(
                "{release} is not in the import service's list of Windows operating systems (its newest entries: \"Microsoft Windows Server 2019\", \"Microsoft Windows 10\")"
            ),
        };
    };
    let mut notes = Vec::new();
    if l.release == "Windows Server 2003"
        && info
            .service_pack
            .as_deref()
            .and_then(service_pack_level)
            .unwrap_or(0)
            < 1
    {
        return Support::NotListed {
            reason: format!(
                "{release} without a service pack ({}): the guide lists \"{}\"",
                info.service_pack.as_deref().unwrap_or("no CSDVersion"),
                l.entry
            ),
        };
    }
    match info.arch.as_deref() {
        Some("x86_64") => {}
        Some("i386") if l.x86 => {}
        Some("i386") => {
            return Support::NotListed {
                reason: format!("32-bit {release}: the guide lists \"{}\"", l.entry),
            }
        }
        Some(a) => {
            return Support::NotListed {
                reason: format!(
                    "{a} {release}: the guide lists only 32- and 64-bit x86 Windows (\"{}\")",
                    l.entry
                ),
            }
        }
        None => {
            notes.push("architecture unknown: the guide requires 64-bit for most releases".into())
        }
    }
    let family = info
        .edition_id
        .as_deref()
        .and_then(edition_family)
        .or_else(|| {
            info.product_name
                .as_deref()
                .and_then(family_from_product_name)
        });
    match family {
        Some(f) if l.editions.contains(&f) => {}
        Some(f) => {
            return Support::NotListed {
                reason: format!(
                    "{release} {f} edition (EditionID {}): the guide lists \"{}\"",
                    info.edition_id.as_deref().unwrap_or("unknown"),
                    l.entry
                ),
            }
        }
        None => notes.push(format!(
            "edition {} not recognised; the guide lists \"{}\"",
            info.edition_id.as_deref().unwrap_or("unknown"),
            l.entry
        )),
    }
    if info
        .edition_id
        .as_deref()
        .is_some_and(|e| e.to_ascii_lowercase().ends_with("eval"))
    {
        notes.push(format!(
            "EditionID {} is an evaluation edition; the guide: \"Ensure that the version of Windows that you are importing supports volume licensing. Beta or preview versions of Windows might not.\"",
            info.edition_id.as_deref().unwrap_or("")
        ));
    }
    let en_us = info.install_language.as_deref().and_then(is_en_us);
    if l.us_english_only {
        match en_us {
            Some(true) => {}
            Some(false) => {
                return Support::NotListed {
                    reason: format!(
                        "{release} with install language {} ({}): the guide lists \"{}\"",
                        info.install_language.as_deref().unwrap_or(""),
                        info.install_language_tag
                            .as_deref()
                            .unwrap_or("unknown tag"),
                        l.entry
                    ),
                }
            }
            None => notes.push(format!(
                "install language unknown; the guide lists \"{}\"",
                l.entry
            )),
        }
    } else if en_us == Some(false) {
        notes.push(format!(
            "install language {} ({}): {LANGUAGE_PACKS}",
            info.install_language.as_deref().unwrap_or(""),
            info.install_language_tag
                .as_deref()
                .unwrap_or("unknown tag")
        ));
    }
    Support::Supported {
        listed_as: l.entry.to_string(),
        notes,
    }
}

/// The facts the import preflight checks on a Windows guest. `None` where
/// the hive holding the fact could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightFacts {
    /// [`supported_status`].
    pub support: Support,
    /// Sysprep ran with `/generalize` (from `ImageState`). The guide: "You
    /// can run System Preparation (Sysprep) on your Windows Server VM images
    /// before or after they are imported. If you run Sysprep before
    /// importing your VM, the importation process adds an answer file
    /// (unattend.xml) to the VM that automatically accepts the End User
    /// License Agreement (EULA) and sets the locale to EN-US."
    pub sysprep_generalized: Option<bool>,
    /// Install language is en-US (0409). The guide lists client releases
    /// "(US English)" and: "Windows language packs that use UTF-16 (or
    /// non-ASCII) characters are not supported for import. We recommend
    /// using the English language pack when importing Windows VMs."
    pub install_language_en_us: Option<bool>,
    /// .NET Framework 4.5 or later (v4 `Release` ≥ 378389). The guide:
    /// "Install .NET Framework 4.5 or later on the VM. We install the .NET
    /// framework on your VM as needed."
    pub dotnet_4_5_or_later: Option<bool>,
    /// .NET Framework 3.5 SP1 or later (v3.5 with SP ≥ 1, or any 4.x). The
    /// guide's error: "ClientError: Booter Networking failure/instance not
    /// reachable. Please retry after installation of .Net framework 3.5 SP1
    /// or greater."
    pub dotnet_3_5_sp1_or_later: Option<bool>,
    /// Remote Desktop allowed. The guide: "Enable Remote Desktop (RDP) for
    /// remote access."
    pub rdp_enabled: Option<bool>,
    /// Interfaces (GUIDs) with DHCP off and static addresses. The guide:
    /// "Your source VM must have a functional DHCP client service. [...] All
    /// static IP addresses currently assigned to the source VM are removed
    /// during import."
    pub static_ip_interfaces: Vec<String>,
    /// "Automatically manage paging file size for all drives" is on. The
    /// guide: "For Microsoft Windows VMs, configure a fixed pagefile size
    /// and ensure that there is at least 6 GiB of free space available on
    /// the root volume. If Windows is configured to use the "Automatically
    /// manage paging file size for all drives", it might create 16 GB
    /// `pagefile.sys` files on the C drive of the instance."
    pub pagefile_automatic: Option<bool>,
    /// EMS is on in the BCD. The guide: "VM Import/Export does not support
    /// Emergency Management Services (EMS). If EMS is enabled for a source
    /// Windows VM, we disable it in the imported image."
    pub ems_enabled: Option<bool>,
    /// VMware Tools are installed. The guide: "Uninstall the VMware Tools
    /// from your VMware VM."
    pub vmware_tools_installed: Option<bool>,
}

/// Collect [`PreflightFacts`] from an inspection.
pub fn preflight_facts(info: &WindowsInfo) -> PreflightFacts {
    let sw = info.hives.software;
    let sys = info.hives.system;
    let dotnet45 = sw.then(|| info.dotnet4_release.is_some_and(|r| r >= 378_389));
    let dotnet35 = sw.then(|| {
        info.dotnet4_version.is_some()
            || info
                .dotnet_versions
                .iter()
                .any(|v| v.version.eq_ignore_ascii_case("v3.5") && v.sp.unwrap_or(0) >= 1)
    });
    PreflightFacts {
        support: supported_status(info),
        sysprep_generalized: info.sysprep.generalized,
        install_language_en_us: info.install_language.as_deref().and_then(is_en_us),
        dotnet_4_5_or_later: dotnet45,
        dotnet_3_5_sp1_or_later: dotnet35,
        rdp_enabled: info.rdp_enabled,
        static_ip_interfaces: info
            .network_interfaces
            .iter()
            .filter(|i| i.is_static())
            .map(|i| i.guid.clone())
            .collect(),
        pagefile_automatic: info.pagefile.kind.map(|k| k == PagefileKind::Automatic),
        ems_enabled: info.boot.as_ref().map(crate::info::BootConfig::ems_enabled),
        // Services are read under the current control set: without one,
        // "not installed" would be a guess.
        vmware_tools_installed: (sys && info.current_control_set.is_some())
            .then_some(info.agents.vmware_tools),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(edition_family("ServerStandard"), Some("Standard"));
        assert_eq!(edition_family("ServerDatacenterEval"), Some("Datacenter"));
        assert_eq!(edition_family("ServerStandardACor"), Some("Standard"));
        assert_eq!(edition_family("ServerWeb"), Some("Web Server"));
        assert_eq!(edition_family("ServerSolution"), None);
        assert_eq!(edition_family("Core"), Some("Home"));
        assert_eq!(edition_family("CoreSingleLanguage"), Some("Home"));
        assert_eq!(edition_family("HomePremium"), Some("Home"));
        assert_eq!(edition_family("ProfessionalN"), Some("Professional"));
        assert_eq!(edition_family("EnterpriseEval"), Some("Enterprise"));
        assert_eq!(edition_family("Education"), Some("Education"));
        assert_eq!(edition_family("Ultimate"), Some("Ultimate"));
        assert_eq!(edition_family("IoTUAP"), None);
    }

    #[test]
    fn service_packs() {
        assert_eq!(service_pack_level("Service Pack 1"), Some(1));
        assert_eq!(service_pack_level("Service Pack 2, v.3959"), Some(2));
        assert_eq!(service_pack_level("Service Pack"), None);
        assert_eq!(service_pack_level("Service Pack 99999999999"), None);
        assert_eq!(service_pack_level(""), None);
    }

    #[test]
    fn the_list_matches_release_names() {
        for l in LISTED_WINDOWS {
            assert!(l.entry.contains(l.release.trim_start_matches("Windows ")));
        }
    }
}
