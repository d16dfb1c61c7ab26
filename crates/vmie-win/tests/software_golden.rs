#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SOFTWARE hives built from the virt-v2v phony guests' `.reg` files merged
//! onto `minimal-hive`: product, version, build, variant and edition as the
//! `.reg` files say, the derived release, and the support verdict.

mod common;
use common::*;

use vmie_win::{from_hives, supported_status, Support, WindowsInfo};

struct Want {
    guest: &'static str,
    product_name: &'static str,
    current_version: &'static str,
    major: u32,
    minor: u32,
    build: Option<&'static str>,
    variant: &'static str,
    edition: Option<&'static str>,
    ubr: Option<u32>,
    display_version: Option<&'static str>,
    release_id: Option<&'static str>,
    release: &'static str,
}

const WANT: &[Want] = &[
    Want {
        guest: "win7-32",
        product_name: "Microsoft Windows 7 Phony Edition",
        current_version: "6.1",
        major: 6,
        minor: 1,
        build: None,
        variant: "Client",
        edition: None,
        ubr: None,
        display_version: None,
        release_id: None,
        release: "Windows 7",
    },
    Want {
        guest: "winxp-32",
        product_name: "Microsoft Windows XP Phony Edition",
        current_version: "5.2",
        major: 5,
        minor: 2,
        build: None,
        variant: "Client",
        edition: None,
        ubr: None,
        display_version: None,
        release_id: None,
        release: "Windows XP",
    },
    Want {
        guest: "win10",
        product_name: "Windows 10 Enterprise Evaluation",
        current_version: "6.3",
        major: 10,
        minor: 0,
        build: Some("17763"),
        variant: "Client",
        edition: Some("EnterpriseEval"),
        ubr: Some(0xf28),
        display_version: Some("23H2"),
        release_id: Some("1809"),
        release: "Windows 10",
    },
    Want {
        guest: "win11",
        // Windows 11 keeps "Windows 10" in ProductName: only the build tells.
        product_name: "Windows 10 Home",
        current_version: "6.3",
        major: 10,
        minor: 0,
        build: Some("22631"),
        variant: "Client",
        edition: Some("Core"),
        ubr: Some(0xf28),
        display_version: Some("23H2"),
        release_id: Some("2009"),
        release: "Windows 11",
    },
    Want {
        guest: "win2k22",
        product_name: "Windows Server 2022 Phony Edition",
        current_version: "6.3",
        major: 10,
        minor: 0,
        build: Some("20348"),
        variant: "Server",
        edition: Some("ServerStandard"),
        ubr: Some(0x647),
        display_version: Some("21H2"),
        release_id: Some("2009"),
        release: "Windows Server 2022",
    },
    Want {
        guest: "win2k25",
        product_name: "Windows Server 2025 Phony Edition",
        current_version: "6.3",
        major: 10,
        minor: 0,
        build: Some("26100"),
        variant: "Server",
        edition: Some("ServerStandard"),
        ubr: Some(0xb4e),
        display_version: Some("24H2"),
        release_id: Some("2009"),
        release: "Windows Server 2025",
    },
];

fn check(w: &Want, info: &WindowsInfo) {
    let g = w.guest;
    assert_eq!(info.os_type, "windows");
    assert_eq!(info.distro, "windows");
    assert_eq!(info.product_name.as_deref(), Some(w.product_name), "{g}");
    assert_eq!(
        info.current_version.as_deref(),
        Some(w.current_version),
        "{g}"
    );
    assert_eq!(
        (info.major_version, info.minor_version),
        (w.major, w.minor),
        "{g}"
    );
    assert_eq!(info.build_id.as_deref(), w.build, "{g}");
    assert_eq!(info.product_variant.as_deref(), Some(w.variant), "{g}");
    assert_eq!(info.installation_type.as_deref(), Some(w.variant), "{g}");
    assert_eq!(info.edition_id.as_deref(), w.edition, "{g}");
    assert_eq!(info.ubr, w.ubr, "{g}");
    assert_eq!(info.display_version.as_deref(), w.display_version, "{g}");
    assert_eq!(info.release_id.as_deref(), w.release_id, "{g}");
    assert_eq!(info.release.as_deref(), Some(w.release), "{g}");
    assert_eq!(info.is_server(), Some(w.variant == "Server"), "{g}");
    assert!(
        info.hives.software && !info.hives.system && !info.hives.bcd,
        "{g}"
    );
    // Nothing from SYSTEM, no .NET, no RDP policy in these fragments.
    assert_eq!(info.current_control_set, None, "{g}");
    assert_eq!(info.rdp_enabled, None, "{g}");
    assert_eq!(info.dotnet4_release, None, "{g}");
    assert!(info.dotnet_versions.is_empty(), "{g}");
    assert!(info.warnings.is_empty(), "{g}: {:?}", info.warnings);
}

#[test]
fn phony_guests_product_and_version() {
    for w in WANT {
        let sw = software(w.guest);
        check(w, &from_hives(Some(&sw), None));
    }
}

/// The same hives built by `hivexregedit --merge --prefix
/// 'HKEY_LOCAL_MACHINE\SOFTWARE'` inspect identically.
#[test]
fn hivexregedit_merge_gives_the_same_inspection() {
    require_hivex();
    for w in WANT {
        let file = format!("{}-software.reg", w.guest);
        let theirs = hive_from(hivex_merge(&file, Some(SOFTWARE_PREFIX)), &file);
        let ours = software(w.guest);
        let a = from_hives(Some(&theirs), None);
        check(w, &a);
        assert_eq!(a, from_hives(Some(&ours), None), "{}", w.guest);
    }
}

#[test]
fn phony_guests_support() {
    let status = |g: &str| supported_status(&from_hives(Some(&software(g)), None));
    // Windows 7: listed; arch, edition ("Phony Edition") and language unknown.
    match status("win7-32") {
        Support::Supported { listed_as, notes } => {
            assert_eq!(
                listed_as,
                "Microsoft Windows 7 (Home, Professional, Enterprise, Ultimate) (US English) (32- and 64-bit)"
            );
            assert_eq!(notes.len(), 3, "{notes:?}");
            assert!(notes[0].starts_with("architecture unknown"), "{notes:?}");
            assert!(
                notes[1].starts_with("edition unknown not recognised"),
                "{notes:?}"
            );
            assert!(
                notes[2].starts_with("install language unknown"),
                "{notes:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Windows 10 Enterprise Evaluation: listed (Enterprise), with the
    // evaluation caution.
    match status("win10") {
        Support::Supported { listed_as, notes } => {
            assert!(listed_as
                .starts_with("Microsoft Windows 10 (Home, Professional, Enterprise, Education)"));
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with("EditionID EnterpriseEval is an evaluation edition")),
                "{notes:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    for (g, release) in [
        ("winxp-32", "Windows XP"),
        ("win11", "Windows 11"),
        ("win2k22", "Windows Server 2022"),
        ("win2k25", "Windows Server 2025"),
    ] {
        match status(g) {
            Support::NotListed { reason } => assert_eq!(
                reason,
                format!("{release} is not in the import service's list of Windows operating systems (its newest entries: \"Microsoft Windows Server 2019\", \"Microsoft Windows 10\")")
            ),
            other => panic!("{g}: {other:?}"),
        }
    }
}

/// `windows-software-all.reg` creates keys under a parent that the minimal
/// hive lacks (hivex refuses it too): it is not a usable SOFTWARE on its own,
/// but merged after a version fragment its Uninstall keys do not disturb us.
#[test]
fn software_all_on_top_of_win10() {
    let mut sw = software("win10");
    let text =
        std::fs::read_to_string(realdata(&format!("{V2V}/windows-software-all.reg"))).unwrap();
    vmie_hive::merge_with(
        &mut sw,
        &text,
        &vmie_hive::MergeOptions {
            prefix: Some(SOFTWARE_PREFIX.into()),
        },
    )
    .unwrap();
    check(&WANT[2], &from_hives(Some(&sw), None));
}
