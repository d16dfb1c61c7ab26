#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End to end through a `MemFs` guest: system root lookup (any case),
//! hives, kernel32.dll's PE header, the BCD; and hostile guests: broken PE
//! headers, garbage and dirty hives, wrong value types, limits.

mod common;
use common::*;

use vmie_guestfs::{GuestFs, MemFs};
use vmie_hive::{merge_with, MergeOptions};
use vmie_win::{
    from_hives, inspect_windows, is_windows_root, preflight_facts, supported_status, DriveMapping,
    DriveTarget, HivesRead, Support, WinError, WinInspectOptions, WindowsInfo,
};

fn inspect(fs: &dyn GuestFs) -> WindowsInfo {
    inspect_windows(fs, &WinInspectOptions::default()).unwrap()
}

fn has_warning(info: &WindowsInfo, needle: &str) -> bool {
    info.warnings.iter().any(|w| w.contains(needle))
}

fn win10_bytes() -> Vec<u8> {
    software("win10").bytes().to_vec()
}

fn v2v_system_bytes() -> Vec<u8> {
    system_v2v().bytes().to_vec()
}

#[test]
fn win10_guest_end_to_end() {
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&pe(0x8664)))
        .with_file("/Boot/BCD", bcd_v2v().bytes());
    assert!(is_windows_root(&fs));
    let info = inspect(&fs);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.systemroot.as_deref(), Some("/Windows"));
    assert_eq!(
        info.hives,
        HivesRead {
            software: true,
            system: true,
            bcd: true
        }
    );
    assert_eq!(
        info.product_name.as_deref(),
        Some("Windows 10 Enterprise Evaluation")
    );
    assert_eq!((info.major_version, info.minor_version), (10, 0));
    assert_eq!(info.build_id.as_deref(), Some("17763"));
    assert_eq!(info.product_variant.as_deref(), Some("Client"));
    assert_eq!(info.edition_id.as_deref(), Some("EnterpriseEval"));
    assert_eq!(info.release.as_deref(), Some("Windows 10"));
    assert_eq!(info.arch.as_deref(), Some("x86_64"));
    assert_eq!(info.hostname.as_deref(), Some("windows.invalid"));
    assert_eq!(info.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(
        info.drive_mappings,
        vec![DriveMapping {
            letter: "C".into(),
            target: DriveTarget::Mbr {
                disk_signature: 0x3433_3231,
                offset: 0x1000_0000
            }
        }]
    );
    let boot = info.boot.as_ref().unwrap();
    assert_eq!(boot.path.as_deref(), Some("/Boot/BCD"));
    assert_eq!(boot.default_description.as_deref(), Some("Windows 11"));
    assert_eq!(boot.bootems, Some(false));

    assert!(matches!(supported_status(&info), Support::Supported { .. }));
    let f = preflight_facts(&info);
    assert_eq!(f.ems_enabled, Some(false));
    // SOFTWARE read and no .NET in it.
    assert_eq!(f.dotnet_4_5_or_later, Some(false));
    assert_eq!(f.dotnet_3_5_sp1_or_later, Some(false));
    assert_eq!(f.vmware_tools_installed, Some(false));
    assert_eq!(f.rdp_enabled, None);
    // And the inspection equals from_hives plus the file-level parts.
    let mut expect = from_hives(Some(&software("win10")), Some(&system_v2v()));
    expect.systemroot = Some("/Windows".into());
    expect.arch = Some("x86_64".into());
    expect.hives.bcd = true;
    expect.boot = info.boot.clone();
    assert_eq!(info, expect);
}

/// NTFS is case-insensitive, MemFs is not: names are matched by listing.
#[test]
fn paths_in_any_case() {
    let fs = MemFs::new("upper")
        .with_file("/WINDOWS/system32/CONFIG/software", &win10_bytes())
        .with_file("/WINDOWS/system32/CONFIG/System", &v2v_system_bytes())
        .with_file("/WINDOWS/system32/KERNEL32.DLL", &pe(0xaa64))
        .with_file("/efi/microsoft/boot/bcd", bcd_v2v().bytes());
    assert!(is_windows_root(&fs));
    let info = inspect(&fs);
    assert_eq!(info.systemroot.as_deref(), Some("/WINDOWS"));
    assert_eq!(
        info.product_name.as_deref(),
        Some("Windows 10 Enterprise Evaluation")
    );
    assert_eq!(info.hostname.as_deref(), Some("windows.invalid"));
    assert_eq!(info.arch.as_deref(), Some("aarch64"));
    assert_eq!(
        info.boot.as_ref().unwrap().path.as_deref(),
        Some("/efi/microsoft/boot/bcd")
    );
    // ARM64 is not on the import service's list.
    match supported_status(&info) {
        Support::NotListed { reason } => {
            assert!(reason.starts_with("aarch64 Windows 10"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A /WINNT system root; Windows 7 32-bit with the real Windows 7 SYSTEM.
#[test]
fn winnt_root_windows7_32bit() {
    let fs = MemFs::new("winnt")
        .with_file(
            "/WINNT/System32/config/SOFTWARE",
            software("win7-32").bytes(),
        )
        .with_file("/WINNT/System32/config/SYSTEM", &read_real("regipy/SYSTEM"))
        .with_file("/WINNT/System32/kernel32.dll", &pe(0x14c));
    let info = inspect(&fs);
    assert_eq!(info.systemroot.as_deref(), Some("/WINNT"));
    assert_eq!(info.arch.as_deref(), Some("i386"));
    assert_eq!(info.hostname.as_deref(), Some("WKS-WIN732BITA"));
    assert_eq!(info.release.as_deref(), Some("Windows 7"));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    match supported_status(&info) {
        Support::Supported { listed_as, notes } => {
            assert!(listed_as.contains("(32- and 64-bit)"));
            // Only the edition is unknown ("Phony Edition"); arch and language are known.
            assert_eq!(notes.len(), 1, "{notes:?}");
        }
        other => panic!("{other:?}"),
    }
    let f = preflight_facts(&info);
    assert_eq!(f.install_language_en_us, Some(true));
    assert_eq!(f.static_ip_interfaces.len(), 2);
}

/// The PE header wins over PROCESSOR_ARCHITECTURE, with a warning when they differ.
#[test]
fn pe_and_environment_disagree() {
    let fs = windows_fs(
        &win10_bytes(),
        &read_real("regipy/SYSTEM"),
        Some(&pe(0x8664)),
    );
    let info = inspect(&fs);
    assert_eq!(info.arch.as_deref(), Some("x86_64"));
    assert!(
        has_warning(&info, "PROCESSOR_ARCHITECTURE says i386"),
        "{:?}",
        info.warnings
    );
}

#[test]
fn not_windows() {
    for fs in [
        MemFs::new("empty"),
        MemFs::new("no-config").with_dir("/Windows/System32"),
        MemFs::new("no-system").with_file("/Windows/System32/config/SOFTWARE", b"x"),
        MemFs::new("dir")
            .with_dir("/Windows/System32/config/SOFTWARE")
            .with_file("/Windows/System32/config/SYSTEM", b"x"),
        MemFs::new("other-root")
            .with_file("/Win/System32/config/SOFTWARE", b"x")
            .with_file("/Win/System32/config/SYSTEM", b"x"),
    ] {
        assert!(!is_windows_root(&fs), "{fs:?}");
        let e = inspect_windows(&fs, &WinInspectOptions::default()).unwrap_err();
        assert!(matches!(e, WinError::NotWindows { .. }), "{e}");
        assert!(e.is_refusal());
    }
}

/// A symlinked system root is followed inside the guest.
#[test]
fn symlinked_config() {
    let fs = MemFs::new("link")
        .with_file("/real/SOFTWARE", &win10_bytes())
        .with_file("/real/SYSTEM", &v2v_system_bytes())
        .with_dir("/Windows/System32")
        .with_symlink("/Windows/System32/config", "/real");
    let info = inspect(&fs);
    assert_eq!(info.release.as_deref(), Some("Windows 10"));
    assert!(
        has_warning(&info, "no System32/kernel32.dll"),
        "{:?}",
        info.warnings
    );
}

// --- hostile guests ----------------------------------------------------

#[test]
fn broken_pe_headers() {
    let mut lfanew_oob = pe(0x8664);
    lfanew_oob[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut no_sig = pe(0x8664);
    no_sig[0x80] = b'N';
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"MZ\x90\x00".to_vec(), "too short"),
        (pe(0x8664)[..0x84].to_vec(), "out of bounds"),
        (lfanew_oob, "e_lfanew 0xfffffff0 is out of bounds"),
        (no_sig, "no PE signature at 0x80"),
        (vec![0u8; 4096], "no MZ signature"),
        (pe(0x0166), "unknown COFF machine 0x0166"),
        (Vec::new(), "too short"),
    ];
    for (bytes, want) in cases {
        let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&bytes));
        let info = inspect(&fs);
        assert_eq!(info.arch, None);
        assert!(has_warning(&info, want), "{want}: {:?}", info.warnings);
        assert_eq!(
            info.product_name.as_deref(),
            Some("Windows 10 Enterprise Evaluation")
        );
    }
}

#[test]
fn kernel32_not_a_file_or_too_large() {
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), None)
        .with_symlink("/Windows/System32/kernel32.dll", "kernel32.dll");
    let info = inspect(&fs);
    assert_eq!(info.arch, None);
    assert!(has_warning(&info, "kernel32"), "{:?}", info.warnings);

    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&pe(0x8664)));
    let opts = WinInspectOptions {
        max_pe_size: 100,
        ..WinInspectOptions::default()
    };
    let info = inspect_windows(&fs, &opts).unwrap();
    assert_eq!(info.arch, None);
    assert!(
        has_warning(&info, "over the read limit of 100 bytes"),
        "{:?}",
        info.warnings
    );
}

/// xorshift bytes: deterministic garbage.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn garbage_hives() {
    let mut regf = b"regf".to_vec();
    regf.resize(8192, 0);
    let truncated = win10_bytes()[..4096 + 100].to_vec();
    for (sw, sys) in [
        (garbage(65536, 1), Vec::new()),
        (regf.clone(), garbage(10, 2)),
        (truncated.clone(), regf),
        (Vec::new(), truncated),
    ] {
        let fs = windows_fs(&sw, &sys, Some(&pe(0x8664)));
        let info = inspect(&fs);
        assert!(!info.hives.software && !info.hives.system);
        assert!(
            has_warning(&info, "/Windows/System32/config/SOFTWARE"),
            "{:?}",
            info.warnings
        );
        assert!(
            has_warning(&info, "/Windows/System32/config/SYSTEM"),
            "{:?}",
            info.warnings
        );
        assert_eq!(info.product_name, None);
        assert_eq!(info.arch.as_deref(), Some("x86_64"));
        assert_eq!(
            supported_status(&info),
            Support::Unknown {
                reason: "the SOFTWARE hive could not be read".into()
            }
        );
        let f = preflight_facts(&info);
        assert_eq!(f.dotnet_4_5_or_later, None);
        assert_eq!(f.vmware_tools_installed, None);
    }
    // A garbage BCD is a warning too.
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&pe(0x8664)))
        .with_file("/Boot/BCD", &garbage(5000, 3));
    let info = inspect(&fs);
    assert!(info.boot.is_none() && !info.hives.bcd);
    assert!(has_warning(&info, "/Boot/BCD"), "{:?}", info.warnings);
}

/// Damaged copies of real hives (bytes flipped inside the hbins, hbin
/// headers kept): what still opens is inspected, what does not is a
/// warning; nothing panics.
#[test]
fn corrupted_real_hives_never_panic() {
    let sw = win10_bytes();
    let sys = read_real("regipy/SYSTEM");
    let bcd = read_real("regipy/BCD");
    let corrupt = |base: &[u8], first: usize, step: usize| {
        let mut b = base.to_vec();
        let mut at = first;
        while at < b.len() {
            if at % 4096 >= 32 {
                b[at] ^= 0xa5;
            }
            at += step;
        }
        b
    };
    let mut opened = 0;
    for (i, step) in [97usize, 1021, 4093, 65521, 1_000_003].iter().enumerate() {
        let first = 4096 + 32 + i * 13;
        let fs = windows_fs(
            &corrupt(&sw, first, *step),
            &corrupt(&sys, first, *step),
            Some(&pe(0x14c)),
        )
        .with_file("/Boot/BCD", &corrupt(&bcd, first, *step));
        let info = inspect(&fs);
        opened += usize::from(info.hives.software)
            + usize::from(info.hives.system)
            + usize::from(info.hives.bcd);
        if !(info.hives.software && info.hives.system && info.hives.bcd) {
            assert!(!info.warnings.is_empty());
        }
        assert_eq!(info.arch.as_deref(), Some("i386"));
    }
    // The sparse damage leaves hives that open and are read.
    assert!(opened >= 3, "{opened}");
}

/// Values of the wrong type leave their field unknown, with a warning.
#[test]
fn wrong_value_types() {
    let mut sw = hive_from(read_real(&format!("{V2V}/minimal-hive")), "sw");
    merge_with(
        &mut sw,
        r#"Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion]
"ProductName"=dword:00000001
"CurrentMajorVersionNumber"="10"
"CurrentVersion"="6.3"
"CurrentBuildNumber"="9600"
"InstallationType"="Server"
"EditionID"="ServerDatacenter"
"UBR"=hex(b):01,00,00,00,00,00,00,00

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\NET Framework Setup]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\NET Framework Setup\NDP]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4]

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full]
"Release"="528040"
"Install"=dword:00000001
"#,
        &MergeOptions {
            prefix: Some(SOFTWARE_PREFIX.into()),
        },
    )
    .unwrap();
    let mut sys = hive_from(read_real(&format!("{V2V}/minimal-hive")), "sys");
    merge_with(
        &mut sys,
        r#"Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\Select]
"Current"="1"

[HKEY_LOCAL_MACHINE\SYSTEM\MountedDevices]
"\\DosDevices\\C:"=hex(3):01,02,03,04,05
"\\DosDevices\\CC:"=hex(3):31,32,33,34,00,00,00,10,00,00,00,00
"\\DosDevices\\1:"=hex(3):31,32,33,34,00,00,00,10,00,00,00,00
"\\DosDevices\\d:"=hex(3):44,4d,49,4f,3a,49,44,3a,a0,ce,81,15,ee,12,7d,4f,89,67,a2,b7,30,24,aa,e2

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Terminal Server]
"fDenyTSConnections"="0"

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Session Manager]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Session Manager\Memory Management]
"PagingFiles"=dword:00000000

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Nls]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Nls\Language]
"InstallLanguage"="zzzz"

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\viostor]
"Start"=hex(3):00

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\Tcpip]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\Tcpip\Parameters]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\Tcpip\Parameters\Interfaces]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\Tcpip\Parameters\Interfaces\{X}]
"EnableDHCP"="0"
"IPAddress"="192.0.2.7"
"SubnetMask"=hex(7):30,00,2e,00,30,00,2e,00,30,00,2e,00,30,00,00,00,00,00
"#,
        &MergeOptions {
            prefix: Some(SYSTEM_PREFIX.into()),
        },
    )
    .unwrap();
    let info = from_hives(Some(&sw), Some(&sys));
    let w = &info.warnings;
    assert_eq!(info.product_name, None);
    assert!(
        has_warning(
            &info,
            "ProductName: expected a string, found REG_DWORD of 4 bytes"
        ),
        "{w:?}"
    );
    assert!(
        has_warning(
            &info,
            "CurrentMajorVersionNumber: expected a REG_DWORD, found REG_SZ"
        ),
        "{w:?}"
    );
    // Falls back to CurrentVersion.
    assert_eq!((info.major_version, info.minor_version), (6, 3));
    assert_eq!(info.release.as_deref(), Some("Windows Server 2012 R2"));
    assert_eq!(info.ubr, None);
    assert!(
        has_warning(&info, "UBR: expected a REG_DWORD, found REG_QWORD"),
        "{w:?}"
    );
    assert_eq!(info.dotnet4_release, None);
    // v4\Full is installed without a usable Release: 4.0.
    assert_eq!(info.dotnet4_version.as_deref(), Some("4.0"));
    // Select\Current is a string: ControlSet001 with a warning.
    assert_eq!(info.current_control_set.as_deref(), Some("ControlSet001"));
    assert!(has_warning(&info, "using ControlSet001"), "{w:?}");
    assert_eq!(
        info.drive_mappings,
        vec![
            DriveMapping {
                letter: "C".into(),
                target: DriveTarget::Unknown { len: 5 }
            },
            DriveMapping {
                letter: "D".into(),
                target: DriveTarget::Gpt {
                    guid: "1581cea0-12ee-4f7d-8967-a2b73024aae2".into()
                }
            },
        ]
    );
    assert_eq!(info.rdp_enabled, None);
    assert!(
        has_warning(
            &info,
            "fDenyTSConnections: expected a REG_DWORD, found REG_SZ"
        ),
        "{w:?}"
    );
    assert_eq!(info.pagefile.kind, None);
    assert!(
        has_warning(
            &info,
            "PagingFiles: expected a REG_MULTI_SZ, found REG_DWORD"
        ),
        "{w:?}"
    );
    assert_eq!(info.install_language.as_deref(), Some("zzzz"));
    assert_eq!(info.install_language_tag, None);
    assert_eq!(info.drivers.len(), 1);
    assert_eq!(
        (info.drivers[0].start, info.drivers[0].start_type.as_deref()),
        (None, None)
    );
    let nic = &info.network_interfaces[0];
    // EnableDHCP unreadable; a REG_SZ IPAddress is a list of one; 0.0.0.0 dropped.
    assert_eq!(nic.dhcp, None);
    assert_eq!(nic.ip_addresses, vec!["192.0.2.7".to_string()]);
    assert!(nic.subnet_masks.is_empty());
    assert!(
        has_warning(&info, "EnableDHCP: expected a REG_DWORD, found REG_SZ"),
        "{w:?}"
    );
    // Every warning names its hive.
    assert!(
        w.iter()
            .all(|w| w.starts_with("SOFTWARE: ") || w.starts_with("SYSTEM: ")),
        "{w:?}"
    );
}

#[test]
fn limits() {
    let fs = windows_fs(
        &win10_bytes(),
        &read_real("regipy/SYSTEM"),
        Some(&pe(0x14c)),
    );
    let opts = WinInspectOptions {
        max_hive_size: 1 << 20,
        ..WinInspectOptions::default()
    };
    let info = inspect_windows(&fs, &opts).unwrap();
    // SOFTWARE (small) is read; the 11 MiB SYSTEM is refused before reading.
    assert!(info.hives.software && !info.hives.system);
    assert!(
        has_warning(&info, "over the read limit of 1048576 bytes"),
        "{:?}",
        info.warnings
    );

    let opts = WinInspectOptions {
        max_entries: 1,
        ..WinInspectOptions::default()
    };
    let info = inspect_windows(&fs, &opts).unwrap();
    assert_eq!(info.network_interfaces.len(), 1);
    assert!(info.drive_mappings.len() <= 1);
    assert!(
        has_warning(&info, "only the first 1 considered"),
        "{:?}",
        info.warnings
    );
}

/// Dirty hives: replayed from their logs when they are beside them, else
/// read as they are with a warning.
#[test]
fn dirty_hives() {
    const Y: &str = "yarp/hives_for_tests/NewDirtyHive1";
    let dirty = read_real(&format!("{Y}/NewDirtyHive"));
    assert!(is_dirty(&dirty));
    let base = || windows_fs(&win10_bytes(), &dirty, Some(&pe(0x8664)));
    let info = inspect(&base());
    assert!(info.hives.system);
    assert!(
        has_warning(&info, "hive is dirty and has no transaction logs"),
        "{:?}",
        info.warnings
    );

    let fs = base()
        .with_file(
            "/Windows/System32/config/system.LOG1",
            &read_real(&format!("{Y}/NewDirtyHive.LOG1")),
        )
        .with_file(
            "/Windows/System32/config/SYSTEM.log2",
            &read_real(&format!("{Y}/NewDirtyHive.LOG2")),
        );
    let info = inspect(&fs);
    assert!(info.hives.system);
    assert!(!has_warning(&info, "dirty"), "{:?}", info.warnings);

    // The real Windows 10 1709 SYSTEM is dirty and has no logs.
    let fs = windows_fs(
        &win10_bytes(),
        &read_real("regipy/SYSTEM_WIN_10_1709"),
        Some(&pe(0x8664)),
    );
    let info = inspect(&fs);
    assert_eq!(info.hostname.as_deref(), Some("DESKTOP-2KGM189"));
    assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
    assert!(has_warning(
        &info,
        "/Windows/System32/config/SYSTEM: hive is dirty"
    ));
}

/// virt-inspector reads the architecture from `System32\cmd.exe`; we do
/// too, and fall back on `kernel32.dll` when cmd.exe is missing or broken.
#[test]
fn arch_from_cmd_exe_then_kernel32() {
    // cmd.exe alone answers, with no warning about the missing kernel32.dll.
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), None)
        .with_file("/Windows/System32/CMD.EXE", &pe(0xaa64));
    let info = inspect(&fs);
    assert_eq!(info.arch.as_deref(), Some("aarch64"));
    assert!(!has_warning(&info, "kernel32"), "{:?}", info.warnings);

    // Both present: cmd.exe wins, as in virt-inspector.
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&pe(0x14c)))
        .with_file("/Windows/System32/cmd.exe", &pe(0x8664));
    assert_eq!(inspect(&fs).arch.as_deref(), Some("x86_64"));

    // A broken cmd.exe: kernel32.dll answers, and the broken file is named.
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), Some(&pe(0x14c)))
        .with_file("/Windows/System32/cmd.exe", b"MZ\x90\x00");
    let info = inspect(&fs);
    assert_eq!(info.arch.as_deref(), Some("i386"));
    assert!(has_warning(&info, "cmd.exe: "), "{:?}", info.warnings);

    // Neither: unknown, both named.
    let fs = windows_fs(&win10_bytes(), &v2v_system_bytes(), None);
    let info = inspect(&fs);
    assert!(
        has_warning(&info, "no System32/cmd.exe"),
        "{:?}",
        info.warnings
    );
    assert!(
        has_warning(&info, "no System32/kernel32.dll"),
        "{:?}",
        info.warnings
    );
}
