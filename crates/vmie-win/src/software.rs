//! The SOFTWARE hive: product, version, .NET, image state, RDP policy.

use crate::info::{DotNetVersion, WindowsInfo};
use crate::reg::Reg;
use crate::tables::dotnet4_version;

const CURRENT_VERSION: &str = "\\Microsoft\\Windows NT\\CurrentVersion";
const NDP: &str = "\\Microsoft\\NET Framework Setup\\NDP";
const SETUP_STATE: &str = "\\Microsoft\\Windows\\CurrentVersion\\Setup\\State";
/// The Remote Desktop group policy key.
pub(crate) const TS_POLICY: &str = "\\Policies\\Microsoft\\Windows NT\\Terminal Services";

/// Parse `"6.1"` into (6, 1). `None` when it is not `N.N`.
pub(crate) fn parse_current_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split('.');
    let major = it.next()?.trim().parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.trim().parse().ok()?,
        None => 0,
    };
    if it.next().is_some() {
        return None;
    }
    Some((major, minor))
}

/// Fill the SOFTWARE part of `info`. Returns the policy's `fDenyTSConnections`.
pub(crate) fn read_software(r: &mut Reg, info: &mut WindowsInfo) -> Option<u32> {
    if let Some(k) = r.key(CURRENT_VERSION) {
        let cv = CURRENT_VERSION;
        info.product_name = r.string_of(k, cv, "ProductName");
        info.edition_id = r.string_of(k, cv, "EditionID");
        info.installation_type = r.string_of(k, cv, "InstallationType");
        info.current_version = r.string_of(k, cv, "CurrentVersion");
        info.build_id = r
            .string_of(k, cv, "CurrentBuildNumber")
            .or_else(|| r.string_of(k, cv, "CurrentBuild"))
            .filter(|s| !s.trim().is_empty());
        info.ubr = r.dword_of(k, cv, "UBR");
        info.display_version = r.string_of(k, cv, "DisplayVersion");
        info.release_id = r.string_of(k, cv, "ReleaseId");
        info.service_pack = r
            .string_of(k, cv, "CSDVersion")
            .filter(|s| !s.trim().is_empty());
        let major = r.dword_of(k, cv, "CurrentMajorVersionNumber");
        match major {
            Some(m) => {
                info.major_version = m;
                info.minor_version = r.dword_of(k, cv, "CurrentMinorVersionNumber").unwrap_or(0);
            }
            None => {
                if let Some(s) = info.current_version.clone() {
                    match parse_current_version(&s) {
                        Some((a, b)) => {
                            info.major_version = a;
                            info.minor_version = b;
                        }
                        None => r.warn(format!("{cv}\\CurrentVersion: not a version: {s:?}")),
                    }
                }
            }
        }
    } else {
        r.warn(format!("{CURRENT_VERSION}: key not found"));
    }
    info.product_variant = product_variant(info);

    // .NET Framework.
    let v4 = format!("{NDP}\\v4\\Full");
    if let Some(k) = r.key(&v4) {
        info.dotnet4_release = r.dword_of(k, &v4, "Release");
        let installed = r.dword_of(k, &v4, "Install") == Some(1);
        info.dotnet4_version = match info.dotnet4_release {
            Some(rel) => Some(dotnet4_version(rel).unwrap_or("4.0").to_string()),
            None if installed => Some("4.0".into()),
            None => None,
        };
    }
    for (name, k) in r.subkeys(NDP) {
        let lower = name.to_ascii_lowercase();
        if !lower.starts_with('v') || lower.starts_with("v4") {
            continue;
        }
        let path = format!("{NDP}\\{name}");
        if r.dword_of(k, &path, "Install") != Some(1) {
            continue;
        }
        let sp = r.dword_of(k, &path, "SP");
        let full_version = r.string_of(k, &path, "Version");
        info.dotnet_versions.push(DotNetVersion {
            version: name,
            sp,
            full_version,
        });
    }

    // Image state (sysprep).
    if let Some(s) = r.string(SETUP_STATE, "ImageState") {
        let up = s.to_ascii_uppercase();
        info.sysprep.generalized = if up.starts_with("IMAGE_STATE_GENERALIZE_RESEAL") {
            Some(true)
        } else if up == "IMAGE_STATE_COMPLETE" {
            Some(false)
        } else {
            None
        };
        info.sysprep.image_state = Some(s);
    }

    r.dword(TS_POLICY, "fDenyTSConnections")
}

/// `InstallationType`, else a guess from `EditionID` / `ProductName`.
fn product_variant(info: &WindowsInfo) -> Option<String> {
    if let Some(t) = info.installation_type.as_deref().filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    let has_server = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| s.to_ascii_lowercase().contains("server"))
    };
    if has_server(&info.edition_id) || has_server(&info.product_name) {
        Some("Server".into())
    } else if info.product_name.is_some() || info.edition_id.is_some() {
        Some("Client".into())
    } else {
        None
    }
}

/// The Windows release of a version, build and variant, named as Microsoft
/// markets it: `Windows XP`, `Windows Server 2003 [R2]`, `Windows Vista`,
/// `Windows Server 2008`, `Windows 7`, `Windows Server 2008 R2`, `Windows 8`,
/// `Windows Server 2012`, `Windows 8.1`, `Windows Server 2012 R2`,
/// `Windows 10`, `Windows 11` (client builds ≥ 22000, whose `ProductName`
/// still says Windows 10), `Windows Server 2016` (14393), `Windows Server
/// 1709` (16299), `1803` (17134), `2019` (17763), `1903`, `1909`, `2004`,
/// `20H2`, `2022` (20348), `23H2` (25398), `2025` (26100).
/// `None` when the combination is not known.
pub fn windows_release(
    major: u32,
    minor: u32,
    build: Option<u32>,
    server: bool,
    product_name: Option<&str>,
) -> Option<String> {
    let r2 = product_name.is_some_and(|p| p.contains("R2"));
    let s = match (major, minor, server) {
        (5, 0, false) => "Windows 2000 Professional",
        (5, 0, true) => "Windows 2000 Server",
        (5, 1, _) => "Windows XP",
        (5, 2, true) if r2 => "Windows Server 2003 R2",
        (5, 2, true) => "Windows Server 2003",
        (5, 2, false) => "Windows XP",
        (6, 0, false) => "Windows Vista",
        (6, 0, true) => "Windows Server 2008",
        (6, 1, false) => "Windows 7",
        (6, 1, true) => "Windows Server 2008 R2",
        (6, 2, false) => "Windows 8",
        (6, 2, true) => "Windows Server 2012",
        (6, 3, false) => "Windows 8.1",
        (6, 3, true) => "Windows Server 2012 R2",
        (10, 0, false) => match build? {
            b if b >= 22000 => "Windows 11",
            _ => "Windows 10",
        },
        (10, 0, true) => match build? {
            14393 => "Windows Server 2016",
            16299 => "Windows Server 1709",
            17134 => "Windows Server 1803",
            17763 => "Windows Server 2019",
            18362 => "Windows Server 1903",
            18363 => "Windows Server 1909",
            19041 => "Windows Server 2004",
            19042 => "Windows Server 20H2",
            20348 => "Windows Server 2022",
            25398 => "Windows Server 23H2",
            26100 => "Windows Server 2025",
            _ => return None,
        },
        _ => return None,
    };
    Some(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_version() {
        assert_eq!(parse_current_version("6.1"), Some((6, 1)));
        assert_eq!(parse_current_version(" 5.2 "), Some((5, 2)));
        assert_eq!(parse_current_version("10"), Some((10, 0)));
        assert_eq!(parse_current_version("6.1.7601"), None);
        assert_eq!(parse_current_version("x.y"), None);
        assert_eq!(parse_current_version(""), None);
        assert_eq!(parse_current_version("99999999999.1"), None);
    }

    #[test]
    fn releases() {
        let r = |a, b, build, s, p| windows_release(a, b, build, s, p);
        assert_eq!(r(6, 1, None, false, None).as_deref(), Some("Windows 7"));
        assert_eq!(
            r(6, 1, Some(7601), true, None).as_deref(),
            Some("Windows Server 2008 R2")
        );
        assert_eq!(
            r(5, 2, None, true, Some("Microsoft Windows Server 2003 R2")).as_deref(),
            Some("Windows Server 2003 R2")
        );
        assert_eq!(
            r(10, 0, Some(19045), false, None).as_deref(),
            Some("Windows 10")
        );
        assert_eq!(
            r(10, 0, Some(22000), false, None).as_deref(),
            Some("Windows 11")
        );
        assert_eq!(r(10, 0, None, false, None), None);
        assert_eq!(
            r(10, 0, Some(17763), true, None).as_deref(),
            Some("Windows Server 2019")
        );
        assert_eq!(r(10, 0, Some(12345), true, None), None);
        assert_eq!(r(4, 0, None, true, None), None);
    }
}
