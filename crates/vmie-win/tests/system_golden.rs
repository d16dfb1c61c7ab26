#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Real SYSTEM hives (regipy: a Windows 7 32-bit VMware guest, and a
//! Windows 10 1709 VMware guest), every value asserted as
//! `hivexregedit --export` shows it; and the virt-v2v phony SYSTEM.

mod common;
use common::*;

use vmie_win::{
    from_hives, preflight_facts, Agents, DriveMapping, DriveTarget, DriverService, NetInterface,
    PagefileKind, PagingFile, WindowsInfo,
};

fn mbr(letter: &str, disk_signature: u32, offset: u64) -> DriveMapping {
    DriveMapping {
        letter: letter.into(),
        target: DriveTarget::Mbr {
            disk_signature,
            offset,
        },
    }
}

fn dev(letter: &str, path: &str) -> DriveMapping {
    DriveMapping {
        letter: letter.into(),
        target: DriveTarget::Device { path: path.into() },
    }
}

fn drv(name: &str, start: Option<u32>, image_path: Option<&str>) -> DriverService {
    DriverService {
        name: name.into(),
        start,
        start_type: start
            .map(|s| ["boot", "system", "automatic", "manual", "disabled"][s as usize].to_string()),
        image_path: image_path.map(String::from),
    }
}

fn iface(guid: &str, dhcp: Option<bool>) -> NetInterface {
    NetInterface {
        guid: guid.into(),
        dhcp,
        ..NetInterface::default()
    }
}

fn strings(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

fn system_only(rel: &str) -> WindowsInfo {
    let h = real_hive(rel);
    from_hives(None, Some(&h))
}

fn common_checks(info: &WindowsInfo) {
    assert!(info.hives.system && !info.hives.software);
    assert_eq!(info.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(info.install_language.as_deref(), Some("0409"));
    assert_eq!(info.install_language_tag.as_deref(), Some("en-US"));
    assert_eq!(info.default_language.as_deref(), Some("0409"));
    // Both: "Automatically manage paging file size for all drives".
    assert_eq!(info.pagefile.kind, Some(PagefileKind::Automatic));
    assert_eq!(
        info.pagefile.paging_files,
        vec![PagingFile {
            path: "?:\\pagefile.sys".into(),
            initial_mb: None,
            maximum_mb: None
        }]
    );
    assert_eq!(
        info.pagefile.existing_page_files,
        strings(&["\\??\\C:\\pagefile.sys"])
    );
    assert_eq!(info.sysprep.generalization_state, Some(7));
    // No SOFTWARE: nothing from it, and no release.
    assert_eq!(info.product_name, None);
    assert_eq!(info.release, None);
    assert_eq!(info.sysprep.image_state, None);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn windows7_vmware_system_hive() {
    let info = system_only("regipy/SYSTEM");
    common_checks(&info);
    assert_eq!(info.hostname.as_deref(), Some("WKS-WIN732BITA"));
    assert_eq!(info.computer_name.as_deref(), Some("WKS-WIN732BITA"));
    // PROCESSOR_ARCHITECTURE = x86.
    assert_eq!(info.arch.as_deref(), Some("i386"));
    assert_eq!(
        info.drive_mappings,
        vec![
            dev("A", "\\??\\FDC#GENERIC_FLOPPY_DRIVE#6&2bc13940&0&0#{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"),
            mbr("C", 0x5cbe_a03e, 0x10_0000),
            dev("D", "\\??\\IDE#CdRomNECVMWar_VMware_IDE_CDR10_______________1.00____#5&290fd3ab&0&1.0.0#{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"),
            dev("E", "_??_USBSTOR#Disk&Ven_HP&Prod_v100w&Rev_1024#AA951D0000007252&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}"),
        ]
    );
    // Two static interfaces (EnableDHCP=0) and one without values.
    assert_eq!(
        info.network_interfaces,
        vec![
            NetInterface {
                ip_addresses: strings(&["10.3.58.5"]),
                subnet_masks: strings(&["255.255.255.0"]),
                default_gateways: strings(&["10.3.58.1"]),
                name_servers: strings(&["10.3.58.4"]),
                ..iface("{698E50A9-4F58-4D86-B61D-F42E58DCACF6}", Some(false))
            },
            NetInterface {
                ip_addresses: strings(&["192.168.1.123"]),
                subnet_masks: strings(&["255.255.255.0"]),
                default_gateways: strings(&["192.168.1.1"]),
                name_servers: strings(&["192.168.1.112"]),
                ..iface("{6AAFC9A9-0542-4DB2-8760-CCFFA953737C}", Some(false))
            },
            iface("{e29ac6c2-7037-11de-816d-806e6f6e6963}", None),
        ]
    );
    // fDenyTSConnections = 0.
    assert_eq!(info.rdp_enabled, Some(true));
    assert_eq!(info.sysprep.cleanup_state, Some(2));
    assert_eq!(
        info.drivers,
        vec![
            drv(
                "iaStorV",
                Some(3),
                Some("\\SystemRoot\\system32\\drivers\\iaStorV.sys")
            ),
            drv(
                "LSI_SAS",
                Some(0),
                Some("\\SystemRoot\\system32\\drivers\\lsi_sas.sys")
            ),
            drv(
                "msahci",
                Some(3),
                Some("\\SystemRoot\\system32\\drivers\\msahci.sys")
            ),
        ]
    );
    assert_eq!(
        info.agents,
        Agents {
            vmware_tools: true,
            hyperv_integration_services: false,
            virtualbox_guest_additions: false
        }
    );
    let f = preflight_facts(&info);
    assert_eq!(
        f.static_ip_interfaces,
        strings(&[
            "{698E50A9-4F58-4D86-B61D-F42E58DCACF6}",
            "{6AAFC9A9-0542-4DB2-8760-CCFFA953737C}"
        ])
    );
    assert_eq!(f.rdp_enabled, Some(true));
    assert_eq!(f.pagefile_automatic, Some(true));
    assert_eq!(f.install_language_en_us, Some(true));
    assert_eq!(f.vmware_tools_installed, Some(true));
    // No SOFTWARE hive: .NET and sysprep generalisation unknown.
    assert_eq!(f.dotnet_4_5_or_later, None);
    assert_eq!(f.dotnet_3_5_sp1_or_later, None);
    assert_eq!(f.sysprep_generalized, None);
    assert_eq!(f.ems_enabled, None);
}

#[test]
fn windows10_1709_vmware_system_hive() {
    // Real data: this hive is dirty (4317/4316) and its logs are not shipped.
    assert!(is_dirty(&read_real("regipy/SYSTEM_WIN_10_1709")));
    assert!(!is_dirty(&read_real("regipy/SYSTEM")));
    let info = system_only("regipy/SYSTEM_WIN_10_1709");
    common_checks(&info);
    // The value is spelled "HostName" here: names are case-insensitive.
    assert_eq!(info.hostname.as_deref(), Some("DESKTOP-2KGM189"));
    assert_eq!(info.computer_name.as_deref(), Some("DESKTOP-2KGM189"));
    assert_eq!(info.arch.as_deref(), Some("x86_64"));
    assert_eq!(
        info.drive_mappings,
        vec![
            mbr("C", 0xdf45_46ae, 0x1f50_0000),
            dev("D", "\\??\\SCSI#CdRom&Ven_NECVMWar&Prod_VMware_SATA_CD01#5&2edf08dd&0&010000#{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"),
            mbr("E", 0xdf45_46ae, 0x10_0000),
            mbr("F", 0x002b_1be5, 0x10_0000),
        ]
    );
    // All DHCP; one interface holds a lease.
    assert_eq!(
        info.network_interfaces,
        vec![
            iface("{2b8dca5c-672e-11e7-bce1-806e6f6e6963}", None),
            iface("{3f215cb0-2d43-4c99-825f-0142c4fafab5}", Some(true)),
            NetInterface {
                dhcp_ip_address: Some("192.168.146.128".into()),
                ..iface("{5f3f359e-9d52-4566-9bec-37efdfb25abe}", Some(true))
            },
            iface("{ba46ceee-2c68-4162-822d-c9ef268d2390}", Some(true)),
        ]
    );
    // fDenyTSConnections = 1.
    assert_eq!(info.rdp_enabled, Some(false));
    assert_eq!(info.sysprep.cleanup_state, None);
    // pvscsi and vmxnet3ndis6 are only stubs left by the VMware Tools MSI
    // (a "vwdk.installers" value, no Start, no ImagePath).
    assert_eq!(
        info.drivers,
        vec![
            drv("iaStorV", Some(0), Some("System32\\drivers\\iaStorV.sys")),
            drv("LSI_SAS", Some(0), Some("System32\\drivers\\lsi_sas.sys")),
            drv("pvscsi", None, None),
            drv("storahci", Some(0), Some("System32\\drivers\\storahci.sys")),
            drv("stornvme", Some(0), Some("System32\\drivers\\stornvme.sys")),
            drv("vmxnet3ndis6", None, None),
        ]
    );
    // vmicheartbeat is in-box on Windows 10.
    assert_eq!(
        info.agents,
        Agents {
            vmware_tools: true,
            hyperv_integration_services: true,
            virtualbox_guest_additions: false
        }
    );
    let f = preflight_facts(&info);
    assert!(f.static_ip_interfaces.is_empty());
    assert_eq!(f.rdp_enabled, Some(false));
}

#[test]
fn virt_v2v_phony_system() {
    let sys = system_v2v();
    let info = from_hives(None, Some(&sys));
    assert_eq!(info.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(info.hostname.as_deref(), Some("windows.invalid"));
    assert_eq!(info.computer_name, None);
    // 31,32,33,34,00,00,00,10,00,00,00,00
    assert_eq!(
        info.drive_mappings,
        vec![mbr("C", 0x3433_3231, 0x1000_0000)]
    );
    assert_eq!(info.arch, None);
    assert_eq!(info.rdp_enabled, None);
    assert_eq!(info.pagefile.kind, None);
    assert!(info.network_interfaces.is_empty());
    assert!(info.drivers.is_empty());
    assert_eq!(info.agents, Agents::default());
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

/// The same SYSTEM hive built by hivexregedit inspects identically.
#[test]
fn virt_v2v_phony_system_hivex_merge() {
    require_hivex();
    let theirs = hive_from(
        hivex_merge("windows-system.reg", Some(SYSTEM_PREFIX)),
        "windows-system.reg",
    );
    assert_eq!(
        from_hives(None, Some(&theirs)),
        from_hives(None, Some(&system_v2v()))
    );
}

/// The JSON form: snake_case fields, drive mappings flattened with `kind`.
#[test]
fn serializes_to_json() {
    let info = system_only("regipy/SYSTEM_WIN_10_1709");
    let v = serde_json::to_value(&info).unwrap();
    assert_eq!(v["current_control_set"], "ControlSet001");
    assert_eq!(
        v["drive_mappings"][0],
        serde_json::json!({"letter": "C", "kind": "mbr", "disk_signature": 0xdf45_46ae_u32, "offset": 0x1f50_0000_u64})
    );
    assert_eq!(v["drive_mappings"][1]["kind"], "device");
    assert_eq!(v["pagefile"]["kind"], "automatic");
    assert_eq!(v["drivers"][0]["start_type"], "boot");
    assert_eq!(
        v["hives"],
        serde_json::json!({"software": false, "system": true, "bcd": false})
    );
}
