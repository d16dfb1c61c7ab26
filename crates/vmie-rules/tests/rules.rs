//! Rule packs: loading, errors with file and line, predicates; and the shipped
//! packs in rules/ all load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vmie_rules::rules::{load_dirs, parse_pack, Action, Facts, OsType, RuleError, VersionReq};

fn parse(text: &str) -> Result<Vec<vmie_rules::rules::Rule>, RuleError> {
    parse_pack(Path::new("test.toml"), text)
}

#[test]
fn a_rule_with_every_predicate() {
    let rules = parse(
        r#"
[[rule]]
id = "rhel-grub"
description = "GRUB for RHEL 7 and 8"
when = { os = "linux", distro = ["rhel", "centos"], version = ">=7, <9", bootloader = ["grub2"], file_exists = "/etc/default/grub" }
actions = [
  { type = "grub", timeout = 1 },
  { type = "kernel_args", add = ["console=ttyS0"], remove = ["rhgb", "quiet"] },
  { type = "shellvars", path = "/etc/default/grub", set = { GRUB_TIMEOUT = "1" } },
]
"#,
    )
    .unwrap();
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.actions.len(), 3);
    assert_eq!(r.actions[0], Action::Grub { timeout: 1 });
    let facts = Facts {
        os: Some(OsType::Linux),
        distro: Some("centos".into()),
        version: Some((7, 9)),
        bootloader: Some("grub2".into()),
        network_stacks: vec!["ifcfg".into()],
        ..Facts::default()
    };
    assert!(r.when.holds(&facts, &|p| p == "/etc/default/grub"));
    assert!(!r.when.holds(&facts, &|_| false));
    assert!(!r.when.holds(
        &Facts {
            version: Some((9, 0)),
            ..facts.clone()
        },
        &|_| true
    ));
    assert!(!r.when.holds(
        &Facts {
            distro: Some("debian".into()),
            ..facts.clone()
        },
        &|_| true
    ));
    assert!(!r.when.holds(
        &Facts {
            os: Some(OsType::Windows),
            ..facts
        },
        &|_| true
    ));
}

#[test]
fn windows_predicates() {
    let rules = parse(
        r#"
[[rule]]
id = "nitro-2012r2-plus"
description = "servers from 8.1 / 2012 R2 on, 64-bit UEFI, with stornvme"
when = { os = "windows", variant = ["server"], build = ">=9600", arch = ["x86_64"], firmware = ["uefi"], service_exists = ["stornvme", "partmgr"] }
actions = [{ type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Services\stornvme', value = "Start", set = { dword = 0 } }]
"#,
    )
    .unwrap();
    let w = &rules[0].when;
    let facts = Facts {
        os: Some(OsType::Windows),
        variant: Some("Server Core".into()),
        build: Some(20348),
        arch: Some("x86_64".into()),
        firmware: Some("uefi".into()),
        services: vec!["PartMgr".into(), "stornvme".into(), "Tcpip".into()],
        ..Facts::default()
    };
    assert!(w.holds(&facts, &|_| false));
    for other in [
        Facts {
            variant: Some("Client".into()),
            ..facts.clone()
        },
        Facts {
            variant: None,
            ..facts.clone()
        },
        Facts {
            build: Some(9200),
            ..facts.clone()
        },
        Facts {
            build: None,
            ..facts.clone()
        },
        Facts {
            arch: Some("i386".into()),
            ..facts.clone()
        },
        Facts {
            firmware: Some("bios".into()),
            ..facts.clone()
        },
        Facts {
            services: vec!["stornvme".into()],
            ..facts.clone()
        },
    ] {
        assert!(!w.holds(&other, &|_| false), "{other:?}");
    }
}

#[test]
fn version_requirements() {
    let r = VersionReq::parse(">=7, <9").unwrap();
    assert!(r.matches((7, 0)) && r.matches((8, 10)) && !r.matches((9, 0)) && !r.matches((6, 10)));
    let r = VersionReq::parse("8").unwrap();
    assert!(r.matches((8, 0)) && r.matches((8, 9)) && !r.matches((9, 0)));
    let r = VersionReq::parse("=8.2").unwrap();
    assert!(r.matches((8, 2)) && !r.matches((8, 3)));
    let r = VersionReq::parse("<=12.4").unwrap();
    assert!(r.matches((12, 4)) && !r.matches((12, 5)));
    assert!(VersionReq::parse(">=seven").is_err());
}

#[test]
fn errors_name_file_line_and_column() {
    let cases = [
        // unknown key in a rule
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nactions = []\nbogus = 1\n", 5, "bogus"),
        // wrong type
        ("[[rule]]\nid = \"a\"\ndescription = 7\nactions = []\n", 3, "string"),
        // unknown action
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nactions = [{ type = \"reboot\" }]\n", 4, "reboot"),
        // unknown field of an action
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nactions = [{ type = \"grub\", timeut = 3 }]\n", 4, "timeut"),
        // bad version
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nwhen = { version = \"new\" }\nactions = []\n", 4, "bad version"),
        // unknown predicate
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nwhen = { kernel = \"6\" }\nactions = []\n", 4, "kernel"),
        // a driver inspection does not report on (a fix run reads an
        // initramfs only until it has seen the ones it reports on)
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nactions = [{ type = \"initramfs_drivers\", drivers = [\"nvme\", \"e1000e\"] }]\n", 2, "\"e1000e\" is not a driver"),
        ("[[rule]]\nid = \"a\"\ndescription = \"d\"\nactions = [{ type = \"initramfs_check\", drivers = [] }]\n", 2, "`drivers` is empty"),
    ];
    for (text, line, word) in cases {
        match parse(text) {
            Err(RuleError::Invalid {
                path,
                line: l,
                message,
                ..
            }) => {
                assert_eq!(path, "test.toml");
                assert_eq!(l, line, "{message}");
                assert!(message.contains(word), "{message} should mention {word}");
                let shown = parse(text).unwrap_err().to_string();
                assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
            }
            other => panic!("{text}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn duplicate_ids_across_packs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(
        dir.join("a.toml"),
        "[[rule]]\nid = \"x\"\ndescription = \"d\"\nactions = []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.toml"),
        "[[rule]]\nid = \"x\"\ndescription = \"e\"\nactions = []\n",
    )
    .unwrap();
    let err = load_dirs(&[dir]).unwrap_err().to_string();
    assert!(
        err.contains("b.toml") && err.contains("a.toml") && err.contains("\"x\""),
        "{err}"
    );
}

#[test]
fn shipped_rule_packs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let rules = load_dirs(&[dir]).unwrap();
    assert!(!rules.is_empty());
    assert!(rules.iter().all(|r| !r.description.is_empty()));
}
