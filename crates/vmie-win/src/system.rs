//! The SYSTEM hive: control set, names, drive letters, language, sysprep,
//! RDP, TCP/IP interfaces, page file, services.

use vmie_hive::HiveError;

use crate::info::{
    DriveMapping, DriveTarget, DriverService, NetInterface, Pagefile, PagefileKind, PagingFile,
    WindowsInfo,
};
use crate::pe::processor_architecture_arch;
use crate::reg::Reg;
use crate::tables::lcid_tag;

/// Service keys reported in [`WindowsInfo::drivers`] (case-insensitive;
/// a trailing `*` matches a prefix): the virtio, NVMe, Xen/AWS PV and ENA
/// drivers a cloud boot needs, and the emulated/paravirtual controllers and
/// NICs of the source hypervisor. `vmxnet3ndis6` is the service name
/// VMware Tools uses for vmxnet3 on Windows 7 and later.
pub const DRIVERS_OF_INTEREST: &[&str] = &[
    "viostor",
    "vioscsi",
    "netkvm",
    "AWSNVMe",
    "stornvme",
    "xenvbd",
    "xennet",
    "ena",
    "amazon*",
    "LSI_SAS",
    "pvscsi",
    "vmxnet3",
    "vmxnet3ndis6",
    "storahci",
    "msahci",
    "iaStorV",
];

fn matches_pattern(name: &str, pat: &str) -> bool {
    match pat.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        None => name.eq_ignore_ascii_case(pat),
    }
}

/// The current control set: `Select\Current`, else `ControlSet001` (with a warning).
fn control_set(r: &mut Reg) -> Option<String> {
    match vmie_hive::system::current_control_set(r.hive) {
        Ok(c) => Some(c),
        Err(e) => {
            let why = match &e {
                HiveError::KeyNotFound { .. } | HiveError::ValueNotFound { .. } => {
                    "no usable Select\\Current".to_string()
                }
                other => other.to_string(),
            };
            if r.key("\\ControlSet001").is_some() {
                r.warn(format!("{why}; using ControlSet001"));
                Some("ControlSet001".into())
            } else {
                r.warn(format!("{why}; no control set"));
                None
            }
        }
    }
}

fn le_u32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(<[u8; 4]>::try_from(b).ok()?))
}

fn le_u16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(<[u8; 2]>::try_from(b).ok()?))
}

fn le_u64(d: &[u8], at: usize) -> Option<u64> {
    let b = d.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(b).ok()?))
}

/// A GUID stored in Windows byte order (data1..3 little-endian), lowercase.
pub(crate) fn guid_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let d4 = b.get(8..16)?;
    Some(format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le_u32(b, 0)?,
        le_u16(b, 4)?,
        le_u16(b, 6)?,
        d4.first()?,
        d4.get(1)?,
        d4.get(2)?,
        d4.get(3)?,
        d4.get(4)?,
        d4.get(5)?,
        d4.get(6)?,
        d4.get(7)?,
    ))
}

/// Decode one `MountedDevices` value: 12 bytes = MBR signature + offset,
/// `DMIO:ID:` + GUID = GPT partition, else a UTF-16 device path.
pub fn decode_mounted_device(data: &[u8]) -> DriveTarget {
    if data.len() == 12 {
        if let (Some(sig), Some(off)) = (le_u32(data, 0), le_u64(data, 4)) {
            return DriveTarget::Mbr {
                disk_signature: sig,
                offset: off,
            };
        }
    }
    if let Some(g) = data.strip_prefix(b"DMIO:ID:") {
        if let Some(guid) = guid_string(g) {
            return DriveTarget::Gpt { guid };
        }
        return DriveTarget::Unknown { len: data.len() };
    }
    if data.len() >= 2 && data.len() % 2 == 0 {
        let units: Vec<u16> = data
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        let s = String::from_utf16_lossy(units.get(..end).unwrap_or(&[]));
        if !s.is_empty() && s.chars().all(|c| !c.is_control() && c != '\u{fffd}') {
            return DriveTarget::Device { path: s };
        }
    }
    DriveTarget::Unknown { len: data.len() }
}

fn drive_mappings(r: &mut Reg) -> Vec<DriveMapping> {
    let mut out = Vec::new();
    for v in r.values("\\MountedDevices") {
        let Some(rest) = v
            .name
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("\\DosDevices\\"))
            .and_then(|_| v.name.get(12..))
        else {
            continue;
        };
        let mut cs = rest.chars();
        let (Some(letter), Some(':'), None) = (cs.next(), cs.next(), cs.next()) else {
            continue;
        };
        if !letter.is_ascii_alphabetic() {
            continue;
        }
        out.push(DriveMapping {
            letter: letter.to_ascii_uppercase().to_string(),
            target: decode_mounted_device(&v.data),
        });
    }
    out.sort_by(|a, b| a.letter.cmp(&b.letter));
    out
}

/// Keep real addresses: drop empty entries and `0.0.0.0`.
fn real_addrs(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "0.0.0.0")
        .collect()
}

fn interfaces(r: &mut Reg, ccs: &str) -> Vec<NetInterface> {
    let base = format!("\\{ccs}\\Services\\Tcpip\\Parameters\\Interfaces");
    let mut out = Vec::new();
    for (name, k) in r.subkeys(&base) {
        let p = format!("{base}\\{name}");
        let dhcp = r.dword_of(k, &p, "EnableDHCP").map(|d| d != 0);
        let ip_addresses = real_addrs(r.multi_of(k, &p, "IPAddress").unwrap_or_default());
        let subnet_masks = real_addrs(r.multi_of(k, &p, "SubnetMask").unwrap_or_default());
        let default_gateways = real_addrs(r.multi_of(k, &p, "DefaultGateway").unwrap_or_default());
        let name_servers = real_addrs(
            r.string_of(k, &p, "NameServer")
                .unwrap_or_default()
                .split([',', ' '])
                .map(str::to_string)
                .collect(),
        );
        let dhcp_ip_address = r
            .string_of(k, &p, "DhcpIPAddress")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "0.0.0.0");
        out.push(NetInterface {
            guid: name,
            dhcp,
            ip_addresses,
            subnet_masks,
            default_gateways,
            name_servers,
            dhcp_ip_address,
        });
    }
    out
}

/// Parse one `PagingFiles` entry: `PATH [INITIAL MAX]` (sizes in MiB).
pub fn parse_paging_file(entry: &str) -> Option<PagingFile> {
    let mut it = entry.split_whitespace();
    let path = it.next()?.to_string();
    let initial_mb = it.next().and_then(|s| s.parse().ok());
    let maximum_mb = it.next().and_then(|s| s.parse().ok());
    Some(PagingFile {
        path,
        initial_mb,
        maximum_mb,
    })
}

/// Classify parsed `PagingFiles` entries: any `?:\` path → automatic;
/// none → no page file; all without sizes or `0 0` → system managed; else custom.
pub fn classify_paging_files(files: &[PagingFile]) -> PagefileKind {
    if files.is_empty() {
        return PagefileKind::NoPagefile;
    }
    if files.iter().any(|f| f.path.starts_with("?:")) {
        return PagefileKind::Automatic;
    }
    let system_managed = |f: &PagingFile| {
        matches!(
            (f.initial_mb, f.maximum_mb),
            (None, _) | (Some(0), Some(0)) | (Some(0), None)
        )
    };
    if files.iter().all(system_managed) {
        PagefileKind::SystemManaged
    } else {
        PagefileKind::Custom
    }
}

fn pagefile(r: &mut Reg, ccs: &str) -> Pagefile {
    let p = format!("\\{ccs}\\Control\\Session Manager\\Memory Management");
    let Some(k) = r.key(&p) else {
        return Pagefile::default();
    };
    let paging = r.multi_of(k, &p, "PagingFiles");
    let existing = r.multi_of(k, &p, "ExistingPageFiles").unwrap_or_default();
    let (kind, paging_files) = match paging {
        Some(list) => {
            let files: Vec<PagingFile> = list.iter().filter_map(|e| parse_paging_file(e)).collect();
            (Some(classify_paging_files(&files)), files)
        }
        None => (None, Vec::new()),
    };
    Pagefile {
        kind,
        paging_files,
        existing_page_files: existing.into_iter().filter(|s| !s.is_empty()).collect(),
    }
}

fn start_type(n: u32) -> Option<&'static str> {
    Some(match n {
        0 => "boot",
        1 => "system",
        2 => "automatic",
        3 => "manual",
        4 => "disabled",
        _ => return None,
    })
}

fn services(r: &mut Reg, ccs: &str, info: &mut WindowsInfo) {
    let base = format!("\\{ccs}\\Services");
    for (name, k) in r.subkeys(&base) {
        info.services.push(name.clone());
        let eq = |s: &str| name.eq_ignore_ascii_case(s);
        if eq("VMTools") {
            info.agents.vmware_tools = true;
        }
        if eq("vmicheartbeat") {
            info.agents.hyperv_integration_services = true;
        }
        if eq("VBoxService") {
            info.agents.virtualbox_guest_additions = true;
        }
        if !DRIVERS_OF_INTEREST
            .iter()
            .any(|p| matches_pattern(&name, p))
        {
            continue;
        }
        let p = format!("{base}\\{name}");
        let start = r.dword_of(k, &p, "Start");
        let image_path = r.string_of(k, &p, "ImagePath");
        info.drivers.push(DriverService {
            start_type: start.and_then(start_type).map(str::to_string),
            name,
            start,
            image_path,
        });
    }
    info.drivers.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
    });
}

/// Fill the SYSTEM part of `info`. Returns `fDenyTSConnections` of the control set.
pub(crate) fn read_system(r: &mut Reg, info: &mut WindowsInfo) -> Option<u32> {
    info.current_control_set = control_set(r);
    info.drive_mappings = drive_mappings(r);
    info.sysprep.generalization_state =
        r.dword("\\Setup\\Status\\SysprepStatus", "GeneralizationState");
    info.sysprep.cleanup_state = r.dword("\\Setup\\Status\\SysprepStatus", "CleanupState");
    let ccs = info.current_control_set.clone()?;
    let c = |rel: &str| format!("\\{ccs}\\{rel}");

    let tcpip = r
        .string(&c("Services\\Tcpip\\Parameters"), "Hostname")
        .filter(|s| !s.trim().is_empty());
    info.computer_name = r
        .string(&c("Control\\ComputerName\\ComputerName"), "ComputerName")
        .filter(|s| !s.trim().is_empty());
    info.hostname = tcpip.or_else(|| info.computer_name.clone());

    if let Some(pa) = r.string(
        &c("Control\\Session Manager\\Environment"),
        "PROCESSOR_ARCHITECTURE",
    ) {
        match processor_architecture_arch(&pa) {
            Some(a) => info.arch = Some(a.to_string()),
            None => r.warn(format!("unknown PROCESSOR_ARCHITECTURE {pa:?}")),
        }
    }

    let nls = c("Control\\Nls\\Language");
    info.install_language = r.string(&nls, "InstallLanguage");
    info.default_language = r.string(&nls, "Default");
    info.install_language_tag = info
        .install_language
        .as_deref()
        .and_then(lcid_tag)
        .map(str::to_string);

    let deny = r.dword(&c("Control\\Terminal Server"), "fDenyTSConnections");
    info.network_interfaces = interfaces(r, &ccs);
    info.pagefile = pagefile(r, &ccs);
    services(r, &ccs, info);
    deny
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn mounted_devices() {
        assert_eq!(
            decode_mounted_device(&[0x3e, 0xa0, 0xbe, 0x5c, 0, 0, 0x10, 0, 0, 0, 0, 0]),
            DriveTarget::Mbr {
                disk_signature: 0x5cbe_a03e,
                offset: 0x10_0000
            }
        );
        let mut gpt = b"DMIO:ID:".to_vec();
        gpt.extend_from_slice(&[
            0xa0, 0xce, 0x81, 0x15, 0xee, 0x12, 0x7d, 0x4f, 0x89, 0x67, 0xa2, 0xb7, 0x30, 0x24,
            0xaa, 0xe2,
        ]);
        assert_eq!(
            decode_mounted_device(&gpt),
            DriveTarget::Gpt {
                guid: "1581cea0-12ee-4f7d-8967-a2b73024aae2".into()
            }
        );
        assert_eq!(
            decode_mounted_device(b"DMIO:ID:short"),
            DriveTarget::Unknown { len: 13 }
        );
        assert_eq!(
            decode_mounted_device(&utf16("\\??\\IDE#CdRom")),
            DriveTarget::Device {
                path: "\\??\\IDE#CdRom".into()
            }
        );
        assert_eq!(decode_mounted_device(&[]), DriveTarget::Unknown { len: 0 });
        assert_eq!(
            decode_mounted_device(&[1, 2, 3]),
            DriveTarget::Unknown { len: 3 }
        );
        assert_eq!(
            decode_mounted_device(&[1, 0]),
            DriveTarget::Unknown { len: 2 }
        );
    }

    #[test]
    fn paging_files() {
        let k = |l: &[&str]| {
            classify_paging_files(
                &l.iter()
                    .filter_map(|e| parse_paging_file(e))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(k(&["?:\\pagefile.sys"]), PagefileKind::Automatic);
        assert_eq!(k(&["C:\\pagefile.sys 0 0"]), PagefileKind::SystemManaged);
        assert_eq!(k(&["C:\\pagefile.sys"]), PagefileKind::SystemManaged);
        assert_eq!(k(&["C:\\pagefile.sys 1024 2048"]), PagefileKind::Custom);
        assert_eq!(
            k(&["C:\\pagefile.sys 0 0", "D:\\pagefile.sys 512 512"]),
            PagefileKind::Custom
        );
        assert_eq!(k(&[]), PagefileKind::NoPagefile);
        assert_eq!(k(&["   "]), PagefileKind::NoPagefile);
        let p = parse_paging_file("C:\\pagefile.sys 1024 2048").unwrap();
        assert_eq!((p.initial_mb, p.maximum_mb), (Some(1024), Some(2048)));
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("AmazonEC2", "amazon*"));
        assert!(matches_pattern("lsi_sas", "LSI_SAS"));
        assert!(!matches_pattern("LSI_SAS2", "LSI_SAS"));
        assert!(!matches_pattern("am", "amazon*"));
        assert!(matches_pattern("é", "é"));
    }
}
