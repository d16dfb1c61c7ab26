//! The rule engine end to end on in-memory guests: the shipped rules on a
//! Debian guest as VMware leaves it (the demo fixture's tree) and on a
//! RHEL-like guest with ifcfg, BLS and grubenv.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath, MemFs, NewAttrs, Xattr};
use vmie_rules::engine::{run, Context, FileOpDone, Kernel, Severity};
use vmie_rules::fstab::Volume;
use vmie_rules::rules::{load_dirs, Facts, OsType};
use vmie_rules::shellvars;

fn shipped() -> Vec<vmie_rules::rules::Rule> {
    load_dirs(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules")]).unwrap()
}

fn demo_volumes() -> Vec<Volume> {
    [
        (1, "de0a0001-0000-4000-8000-000000000001"),
        (5, "de0a0005-0000-4000-8000-000000000005"),
        (6, "de0a0006-0000-4000-8000-000000000006"),
    ]
    .iter()
    .map(|(n, u)| Volume {
        disk: 0,
        partition: Some(*n),
        uuid: Some(u.to_string()),
        partuuid: Some(format!("5eed0001-{n:02x}")),
        ..Volume::default()
    })
    .collect()
}

fn debian_ctx() -> Context {
    Context {
        facts: Facts {
            os: Some(OsType::Linux),
            distro: Some("debian".into()),
            version: Some((12, 0)),
            bootloader: Some("grub2".into()),
            network_stacks: vec!["ifupdown".into()],
            ..Facts::default()
        },
        volumes: demo_volumes(),
        kernels: vec![Kernel {
            version: "6.1.0-13-amd64".into(),
            initramfs_readable: true,
            initramfs_problem: None,
            drivers: vec!["virtio_blk".into(), "nvme".into()],
            ..Kernel::default()
        }],
    }
}

fn text(fs: &dyn GuestFs, p: &str) -> String {
    String::from_utf8(fs.read(p).unwrap()).unwrap()
}

#[test]
fn debian_guest_from_vmware() {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let mut fs = MemFs::from_host_dir("demo", &tree).unwrap();
    let orig_fstab = text(&fs, "/etc/fstab");
    let orig_ifaces = text(&fs, "/etc/network/interfaces");
    let rules = shipped();
    let report = run(&mut fs, &rules, &debian_ctx()).unwrap();
    let paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/etc/fstab"), "{paths:?}");
    assert!(paths.contains(&"/etc/network/interfaces"), "{paths:?}");
    assert!(paths.contains(&"/etc/default/grub"), "{paths:?}");
    assert!(paths.contains(&"/boot/grub/grub.cfg"), "{paths:?}");

    let fstab = text(&fs, "/etc/fstab");
    assert!(
        fstab.contains("UUID=de0a0001-0000-4000-8000-000000000001       /               ext4"),
        "{fstab}"
    );
    assert!(fstab.contains("UUID=de0a0006-0000-4000-8000-000000000006"));
    assert!(fstab.contains("UUID=de0a0005-0000-4000-8000-000000000005       none            swap"));
    assert!(fstab.contains("#vmie-fixup: nfs.example.com:/export/share"));
    assert_eq!(
        text(&fs, "/etc/fstab.vmie.bak"),
        orig_fstab,
        "backup holds the original"
    );

    let ifaces = text(&fs, "/etc/network/interfaces");
    assert!(
        ifaces.contains("allow-hotplug eth0\niface eth0 inet dhcp\n#\taddress 192.0.2.10/24\n"),
        "{ifaces}"
    );
    assert_eq!(text(&fs, "/etc/network/interfaces.vmie.bak"), orig_ifaces);

    let grub = text(&fs, "/etc/default/grub");
    assert_eq!(shellvars::get(&grub, "GRUB_TIMEOUT").as_deref(), Some("1"));
    let cmdline = shellvars::get(&grub, "GRUB_CMDLINE_LINUX").unwrap();
    assert!(
        cmdline.contains("net.ifnames=0") && cmdline.contains("biosdevname=0"),
        "{cmdline}"
    );

    let cfg = text(&fs, "/boot/grub/grub.cfg");
    assert!(cfg.contains("set timeout=1\n"));
    assert!(
        cfg.contains("linux /boot/vmlinuz-6.1.0-13-amd64 root=UUID=de0a0001-0000-4000-8000-000000000001 ro net.ifnames=0 biosdevname=0\n"),
        "{cfg}"
    );
    // Every change has a diff, a backup and reasons.
    for c in &report.changes {
        assert!(c.diff.starts_with("--- a/"), "{c:?}");
        assert!(c.backup.is_some());
    }
    // The initramfs check reports what is missing.
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning
                && f.message.contains("lacks ena, xen-blkfront, xen-netfront")),
        "{:?}",
        report.findings
    );

    // A second run changes nothing and does not touch the backups.
    let again = run(&mut fs, &rules, &debian_ctx()).unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(text(&fs, "/etc/fstab.vmie.bak"), orig_fstab);
}

fn rhel_guest() -> MemFs {
    let selinux = vec![Xattr {
        name: b"security.selinux".to_vec(),
        value: b"system_u:object_r:net_conf_t:s0\0".to_vec(),
    }];
    let mut fs = MemFs::new("rhel")
        .with_file("/etc/os-release", b"NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.6\"\n")
        .with_file("/etc/fstab", b"/dev/mapper/rhel-root /  xfs defaults 0 0\nUUID=b007 /boot xfs defaults 0 0\n/dev/sdb1 /data xfs defaults 0 0\n")
        .with_file("/etc/default/grub", b"GRUB_TIMEOUT=5\nGRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX=\"crashkernel=auto resume=/dev/sda2 rd.lvm.lv=rhel/root rhgb quiet\"\nGRUB_ENABLE_BLSCFG=true\n")
        .with_file("/boot/grub2/grub.cfg", b"set default=\"${saved_entry}\"\nset timeout=5\nblscfg\n")
        .with_file(
            "/boot/loader/entries/abc-4.18.0-372.el8.x86_64.conf",
            b"title Red Hat Enterprise Linux (4.18.0-372.el8.x86_64) 8.6\nversion 4.18.0-372.el8.x86_64\nlinux /vmlinuz-4.18.0-372.el8.x86_64\ninitrd /initramfs-4.18.0-372.el8.x86_64.img\noptions $kernelopts\n",
        )
        .with_file(
            "/boot/loader/entries/abc-4.18.0-80.el8.x86_64.conf",
            b"title Red Hat Enterprise Linux (4.18.0-80.el8.x86_64) 8.0\nversion 4.18.0-80.el8.x86_64\nlinux /vmlinuz-4.18.0-80.el8.x86_64\noptions $kernelopts\n",
        )
        .with_file("/etc/udev/rules.d/70-persistent-net.rules", b"SUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"ens192\"\n")
        .with_dir("/etc/sysconfig/network-scripts");
    let mut env = b"# GRUB Environment Block\nsaved_entry=abc-4.18.0-80.el8.x86_64\nkernelopts=root=/dev/mapper/rhel-root ro resume=/dev/sda2 rhgb quiet\n".to_vec();
    env.resize(1024, b'#');
    fs.create_file(
        &GuestPath::from("/boot/grub2/grubenv"),
        &env,
        &NewAttrs::default(),
    )
    .unwrap();
    fs.create_file(
        &GuestPath::from("/etc/sysconfig/network-scripts/ifcfg-ens192"),
        b"TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\nONBOOT=yes\nIPADDR=10.0.0.5\nPREFIX=24\nGATEWAY=10.0.0.1\nDNS1=10.0.0.2\nHWADDR=00:50:56:aa:bb:cc\n",
        &NewAttrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: selinux,
        },
    )
    .unwrap();
    fs.create_file(
        &GuestPath::from("/etc/sysconfig/network-scripts/ifcfg-lo"),
        b"DEVICE=lo\nIPADDR=127.0.0.1\n",
        &NewAttrs::default(),
    )
    .unwrap();
    fs
}

#[test]
fn rhel_guest_with_ifcfg_bls_and_grubenv() {
    let mut fs = rhel_guest();
    let ctx = Context {
        facts: Facts {
            os: Some(OsType::Linux),
            distro: Some("rhel".into()),
            version: Some((8, 6)),
            bootloader: Some("bls".into()),
            network_stacks: vec!["ifcfg".into()],
            ..Facts::default()
        },
        volumes: vec![
            Volume {
                disk: 0,
                partition: Some(1),
                uuid: Some("b007".into()),
                ..Volume::default()
            },
            Volume {
                disk: 0,
                partition: Some(2),
                uuid: Some("5wap".into()),
                ..Volume::default()
            },
        ],
        kernels: vec![],
    };
    let rules = shipped();
    let report = run(&mut fs, &rules, &ctx).unwrap();

    // ifcfg-ens192 → ifcfg-eth0 with DHCP; the original kept, SELinux label kept.
    let dir = "/etc/sysconfig/network-scripts";
    assert!(!fs.exists(&format!("{dir}/ifcfg-ens192")).unwrap());
    let eth0 = text(&fs, &format!("{dir}/ifcfg-eth0"));
    assert_eq!(shellvars::get(&eth0, "BOOTPROTO").as_deref(), Some("dhcp"));
    assert_eq!(shellvars::get(&eth0, "DEVICE").as_deref(), Some("eth0"));
    assert_eq!(shellvars::get(&eth0, "IPADDR"), None);
    assert_eq!(shellvars::get(&eth0, "HWADDR"), None);
    let (_, m) = fs.metadata(&format!("{dir}/ifcfg-eth0")).unwrap();
    assert_eq!(
        m.selinux_label(),
        Some(&b"system_u:object_r:net_conf_t:s0\0"[..])
    );
    let bak = text(&fs, &format!("{dir}/ifcfg-ens192.vmie.bak"));
    assert!(bak.contains("IPADDR=10.0.0.5"));
    assert!(report
        .changes
        .iter()
        .any(|c| matches!(&c.op, FileOpDone::Renamed { to } if to.ends_with("ifcfg-eth0"))));
    assert_eq!(
        text(&fs, &format!("{dir}/ifcfg-lo")),
        "DEVICE=lo\nIPADDR=127.0.0.1\n",
        "loopback untouched"
    );

    // fstab: LVM root and UUID /boot stay; the missing data disk gets nofail.
    let fstab = text(&fs, "/etc/fstab");
    assert!(fstab.starts_with(
        "/dev/mapper/rhel-root /  xfs defaults 0 0\nUUID=b007 /boot xfs defaults 0 0\n"
    ));
    assert!(fstab.contains("/dev/sdb1 /data xfs defaults,nofail 0 0"));

    // grubenv: the newest BLS entry is the saved default; kernelopts resume= by UUID.
    let env = fs.read("/boot/grub2/grubenv").unwrap();
    assert_eq!(env.len(), 1024);
    let env = String::from_utf8_lossy(&env);
    assert!(
        env.contains("saved_entry=abc-4.18.0-372.el8.x86_64\n"),
        "{env}"
    );
    assert!(env.contains("resume=UUID=5wap"), "{env}");
    assert!(env.contains("net.ifnames=0 biosdevname=0"), "{env}");
    let grub = text(&fs, "/etc/default/grub");
    assert_eq!(shellvars::get(&grub, "GRUB_TIMEOUT").as_deref(), Some("1"));
    assert_eq!(
        shellvars::get(&grub, "GRUB_DEFAULT").as_deref(),
        Some("saved")
    );
    assert!(text(&fs, "/boot/grub2/grub.cfg").contains("set timeout=1\n"));

    // Persistent net rules removed, kept as backup.
    assert!(!fs
        .exists("/etc/udev/rules.d/70-persistent-net.rules")
        .unwrap());
    assert!(fs
        .exists("/etc/udev/rules.d/70-persistent-net.rules.vmie.bak")
        .unwrap());

    // Idempotent.
    let again = run(&mut fs, &rules, &ctx).unwrap();
    assert!(again.changes.is_empty(), "{:#?}", again.changes);
}

#[test]
fn missing_fstab_is_the_import_services_error() {
    let mut fs = MemFs::new("x").with_file("/etc/hosts", b"");
    let rules = vmie_rules::rules::parse_pack(
        Path::new("t.toml"),
        "[[rule]]\nid = \"f\"\ndescription = \"d\"\nactions = [{ type = \"fstab\" }]\n",
    )
    .unwrap();
    let report = run(&mut fs, &rules, &Context::default()).unwrap();
    assert!(report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && f.message.contains("Could not read fstab")));
}

#[test]
fn interfaces_d_backups_go_outside_the_globbed_directory() {
    use vmie_rules::engine::backup_path;
    assert_eq!(
        backup_path(&GuestPath::from("/etc/network/interfaces.d/ens192")),
        GuestPath::from("/etc/network/interfaces.d.vmie.bak/ens192")
    );
    assert_eq!(
        backup_path(&GuestPath::from("/etc/fstab")),
        GuestPath::from("/etc/fstab.vmie.bak")
    );
    let mut fs = MemFs::new("d")
        .with_file(
            "/etc/network/interfaces",
            b"source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
        )
        .with_file(
            "/etc/network/interfaces.d/ens192",
            b"auto ens192\niface ens192 inet static\n  address 10.1.1.1/24\n",
        );
    let rules = vmie_rules::rules::parse_pack(
        Path::new("t.toml"),
        "[[rule]]\nid = \"n\"\ndescription = \"d\"\nactions = [{ type = \"network\" }]\n",
    )
    .unwrap();
    let report = run(&mut fs, &rules, &Context::default()).unwrap();
    assert_eq!(report.changes.len(), 1, "{:?}", report.changes);
    assert!(text(&fs, "/etc/network/interfaces.d/ens192").contains("iface eth0 inet dhcp"));
    assert!(text(&fs, "/etc/network/interfaces.d.vmie.bak/ens192").contains("address 10.1.1.1/24"));
    let (_, listing) = fs.list("/etc/network/interfaces.d").unwrap();
    assert_eq!(listing.len(), 1, "nothing else in the sourced directory");
}

/// Issue 18: each file is reported once, with every rule that changed it, and
/// each change is attributed to the rule that made it.
#[test]
fn one_entry_per_file_with_each_rule_attributed() {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let mut fs = MemFs::from_host_dir("demo", &tree).unwrap();
    let orig_cfg = text(&fs, "/boot/grub/grub.cfg");
    let report = run(&mut fs, &shipped(), &debian_ctx()).unwrap();
    let mut paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
    let n = paths.len();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), n, "a file reported twice: {paths:?}");

    let cfg = report
        .changes
        .iter()
        .find(|c| c.path == "/boot/grub/grub.cfg")
        .unwrap();
    assert_eq!(
        cfg.rules,
        [
            "linux-network-dhcp",
            "linux-grub-default-timeout",
            "linux-kernel-root-uuid"
        ],
        "{cfg:?}"
    );
    assert_eq!(cfg.steps.len(), 3);
    // root= is the root-uuid rule's doing, and only its.
    let by = |rule: &str| cfg.steps.iter().find(|s| s.rule == rule).unwrap();
    assert!(by("linux-kernel-root-uuid")
        .diff
        .contains("+\tlinux /boot/vmlinuz-6.1.0-13-amd64 root=UUID="));
    assert!(!by("linux-network-dhcp").diff.contains("root=UUID"));
    assert!(by("linux-network-dhcp").diff.contains("net.ifnames=0"));
    assert!(by("linux-grub-default-timeout")
        .diff
        .contains("+set timeout=1"));
    // The whole diff goes from the original to the final text.
    let final_cfg = text(&fs, "/boot/grub/grub.cfg");
    assert_eq!(
        cfg.diff,
        vmie_rules::diff::unified("/boot/grub/grub.cfg", &orig_cfg, &final_cfg)
    );
    assert_eq!(text(&fs, "/boot/grub/grub.cfg.vmie.bak"), orig_cfg);
}

/// Issue 18: a user rule whose kernel_args only adds console= changes only
/// that; root= is rewritten only by a rule that asks (root_by_uuid).
#[test]
fn kernel_args_does_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("console.toml"),
        "[[rule]]\nid = \"serial-console\"\ndescription = \"console on ttyS0\"\nwhen = { os = \"linux\" }\nactions = [{ type = \"kernel_args\", add = [\"console=ttyS0\"] }]\n",
    )
    .unwrap();
    let rules = load_dirs(&[dir.path().to_path_buf()]).unwrap();
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let mut fs = MemFs::from_host_dir("demo", &tree).unwrap();
    let report = run(&mut fs, &rules, &debian_ctx()).unwrap();
    let cfg = text(&fs, "/boot/grub/grub.cfg");
    assert!(cfg.contains("root=/dev/sda1 ro console=ttyS0\n"), "{cfg}");
    assert!(!cfg.contains("root=UUID"), "{cfg}");
    for c in &report.changes {
        assert_eq!(c.rules, ["serial-console"]);
        for l in &c.lines {
            assert!(!l.reason.contains("renamed in the cloud"), "{l:?}");
        }
    }
}

/// Issue 18: an initramfs that could not be read is reported as such, with
/// the reader's reason, not as lacking every driver.
#[test]
fn an_unreadable_initramfs_is_not_reported_as_lacking_drivers() {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    let mut fs = MemFs::from_host_dir("demo", &tree).unwrap();
    let mut ctx = debian_ctx();
    ctx.kernels[0].initramfs_readable = false;
    ctx.kernels[0].initramfs_problem = Some(
        "/boot/initrd.img-6.1.0-13-amd64: neither a cpio archive nor a known compression".into(),
    );
    let report = run(&mut fs, &shipped(), &ctx).unwrap();
    let msgs: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.rule == "linux-initramfs-drivers")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        msgs,
        ["kernel 6.1.0-13-amd64: drivers not checked: /boot/initrd.img-6.1.0-13-amd64: neither a cpio archive nor a known compression"]
    );
}
