#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Whole-guest inspection on MemFs guests.

mod common;

use common::{cpio, filter};
use vmie_guestfs::MemFs;
use vmie_os::*;

/// A minimal ELF header for `machine`.
fn elf(class64: bool, little: bool, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if class64 { 2 } else { 1 };
    h[5] = if little { 1 } else { 2 };
    h[6] = 1;
    let m = if little {
        machine.to_le_bytes()
    } else {
        machine.to_be_bytes()
    };
    h[18..20].copy_from_slice(&m);
    h
}

fn modules_cpio(version: &str, mods: &[&str]) -> Vec<u8> {
    let names: Vec<String> = mods
        .iter()
        .map(|m| format!("usr/lib/modules/{version}/kernel/drivers/{m}"))
        .collect();
    let entries: Vec<(&str, u32, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), 0o100644, &b"m"[..]))
        .collect();
    cpio(&entries, false)
}

const DEBIAN_GRUB_CFG: &str = r#"
set default="0"
if [ -s $prefix/grubenv ]; then
  load_env
fi
function load_video {
  insmod all_video
}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-1234' {
	load_video
	linux	/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1234 ro quiet
	initrd	/boot/initrd.img-6.1.0-13-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-13-amd64' $menuentry_id_option 'gnulinux-6.1.0-13-amd64-advanced-1234' {
		linux	/boot/vmlinuz-6.1.0-13-amd64 root=UUID=1234 ro quiet
		initrd	/boot/initrd.img-6.1.0-13-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-10-amd64' $menuentry_id_option 'gnulinux-6.1.0-10-amd64-advanced-1234' {
		linux	/boot/vmlinuz-6.1.0-10-amd64 root=UUID=1234 ro quiet
		initrd	/boot/initrd.img-6.1.0-10-amd64
	}
}
"#;

fn debian12() -> MemFs {
    debian12_with(DEBIAN_GRUB_CFG)
}

fn debian12_with(grub_cfg: &str) -> MemFs {
    let initrd = {
        let mut img = cpio(
            &[("kernel/x86/microcode/AuthenticAMD.bin", 0o100644, b"ucode")],
            false,
        );
        img.extend(filter(
            "gzip",
            &["-c"],
            "gzip",
            &modules_cpio(
                "6.1.0-13-amd64",
                &[
                    "block/xen-blkfront.ko",
                    "nvme/host/nvme.ko",
                    "virtio/virtio_pci.ko",
                ],
            ),
        ));
        img
    };
    MemFs::new("debian12")
        .with_file(
            "/usr/lib/os-release",
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
        )
        .with_symlink("/etc/os-release", "../usr/lib/os-release")
        .with_file("/etc/debian_version", b"12.4\n")
        .with_symlink("/bin", "usr/bin")
        .with_symlink("/sbin", "usr/sbin")
        .with_symlink("/lib", "usr/lib")
        .with_file("/usr/bin/dash", &elf(true, true, 62))
        .with_file("/usr/bin/bash", &elf(true, true, 62))
        .with_symlink("/usr/bin/sh", "dash")
        .with_file("/usr/lib/systemd/systemd", b"")
        .with_symlink("/usr/sbin/init", "/lib/systemd/systemd")
        .with_file("/etc/hostname", b"deb12\n")
        .with_file("/etc/hosts", b"127.0.0.1 localhost\n")
        .with_file(
            "/etc/fstab",
            b"# /etc/fstab\nUUID=1234 / ext4 errors=remount-ro 0 1\nUUID=ABCD-EF01 /boot/efi vfat umask=0077 0 1\n/dev/xvdb1 /data xfs defaults,nofail 0 2\nPARTUUID=aa-bb none swap sw 0 0\n",
        )
        .with_file("/boot/vmlinuz-6.1.0-13-amd64", b"kernel")
        .with_file("/boot/vmlinuz-6.1.0-10-amd64", b"kernel")
        .with_file("/boot/initrd.img-6.1.0-13-amd64", &initrd)
        .with_file("/boot/grub/grub.cfg", grub_cfg.as_bytes())
        .with_dir("/boot/efi")
        .with_file(
            "/usr/lib/modules/6.1.0-13-amd64/modules.builtin",
            b"kernel/drivers/ata/ahci.ko\nkernel/drivers/virtio/virtio.ko\n",
        )
        .with_file(
            "/usr/lib/modules/6.1.0-13-amd64/modules.dep",
            b"kernel/drivers/net/ethernet/amazon/ena/ena.ko: \nkernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/nvme/host/nvme-core.ko:\n",
        )
        .with_file(
            "/etc/network/interfaces",
            b"source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
        )
        .with_file("/etc/network/interfaces.d/eth0", b"allow-hotplug eth0\niface eth0 inet dhcp\n")
        .with_file("/usr/sbin/sshd", b"")
        .with_symlink(
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        )
        .with_file("/usr/bin/cloud-init", b"")
        .with_file("/usr/sbin/dhclient", b"")
        .with_file("/usr/bin/vmtoolsd", b"")
}

#[test]
fn debian12_full() {
    let fs = debian12();
    assert!(is_linux_root(&fs));
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(i.distro, "debian");
    assert_eq!((i.major_version, i.minor_version), (12, 4));
    // As virt-inspector answers for Debian (its os-release has no minor
    // version, so debian_version is the whole answer): "12.4".
    assert_eq!(i.product_name.as_deref(), Some("12.4"));
    assert_eq!(
        i.release_files,
        vec!["/etc/os-release", "/etc/debian_version"]
    );
    assert_eq!(i.arch.as_deref(), Some("x86_64"));
    assert_eq!(i.hostname.as_deref(), Some("deb12"));
    assert_eq!(i.package_format.as_deref(), Some("deb"));
    assert_eq!(i.package_management.as_deref(), Some("apt"));
    assert_eq!(i.init_system.as_deref(), Some("systemd"));
    assert_eq!(i.bootloader.kind.as_deref(), Some("grub2"));
    assert_eq!(i.bootloader.config_files, vec!["/boot/grub/grub.cfg"]);
    let def = &i.bootloader.menu.entries[i.bootloader.default_entry.unwrap()];
    assert_eq!(def.args.as_deref(), Some("root=UUID=1234 ro quiet"));
    assert_eq!(i.firmware, Firmware::Uefi);
    assert!(i.bootloader.firmware_evidence[0].contains("/boot/efi"));
    // Kernels newest first; the default is entry 0.
    let versions: Vec<&str> = i.kernels.iter().map(|k| k.version.as_str()).collect();
    assert_eq!(versions, vec!["6.1.0-13-amd64", "6.1.0-10-amd64"]);
    assert_eq!(i.default_kernel.as_deref(), Some("6.1.0-13-amd64"));
    let k = &i.kernels[0];
    assert!(k.is_default);
    assert_eq!(
        k.modules_dir.as_deref(),
        Some("/lib/modules/6.1.0-13-amd64")
    );
    assert_eq!(
        k.initramfs_path.as_deref(),
        Some("/boot/initrd.img-6.1.0-13-amd64")
    );
    let ir = k.initramfs.as_ref().unwrap();
    assert_eq!(ir.segments, vec!["cpio", "gzip", "cpio"]);
    assert_eq!(ir.modules, vec!["nvme", "virtio_pci", "xen_blkfront"]);
    assert!(ir.error.is_none());
    assert_eq!(k.drivers["nvme"], DriverState::Initramfs);
    assert_eq!(k.drivers["xen_blkfront"], DriverState::Initramfs);
    assert_eq!(k.drivers["ahci"], DriverState::Builtin);
    assert_eq!(k.drivers["ena"], DriverState::RootOnly);
    assert_eq!(k.drivers["nvme_core"], DriverState::RootOnly);
    assert_eq!(k.drivers["hv_netvsc"], DriverState::Missing);
    let old = &i.kernels[1];
    assert!(!old.is_default && old.modules_dir.is_none() && old.initramfs_path.is_none());
    // fstab.
    assert_eq!(i.fstab.len(), 4);
    assert_eq!(i.fstab[0].line, 2);
    assert_eq!(i.fstab[2].spec_kind, SpecKind::Device);
    assert_eq!(device_position(&i.fstab[2].spec), Some((1, Some(1))));
    assert_eq!(i.fstab[3].spec_kind, SpecKind::Partuuid);
    // Network through `source`.
    assert_eq!(i.network.stacks, vec!["ifupdown"]);
    let eth0 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "eth0")
        .unwrap();
    assert_eq!(eth0.method, NetMethod::Dhcp);
    assert_eq!(eth0.source, "/etc/network/interfaces.d/eth0");
    // Agents.
    assert!(i.agents.cloud_init && !i.agents.cloud_init_disabled);
    assert!(i.agents.vmware_tools && !i.agents.hyperv_daemons);
    assert_eq!(i.agents.dhcp_clients, vec!["dhclient"]);
    assert!(i.agents.ssh.installed && i.agents.ssh.enabled);
    assert_eq!(i.selinux, None);
    assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    // Serialises with virt-inspector's field names.
    let j = serde_json::to_value(&i).unwrap();
    assert_eq!(j["distro"], "debian");
    assert_eq!(j["major_version"], 12);
    assert_eq!(j["firmware"], "uefi");
    assert_eq!(j["kernels"][0]["drivers"]["nvme"], "initramfs");
    assert_eq!(j["fstab"][3]["spec_kind"], "partuuid");
}

#[test]
fn grub2_saved_entry_in_submenu() {
    let fs = debian12_with(
        &DEBIAN_GRUB_CFG.replace("set default=\"0\"", "set default=\"${saved_entry}\""),
    )
    .with_file(
            "/boot/grub/grubenv",
            b"# GRUB Environment Block\nsaved_entry=gnulinux-advanced-1234>gnulinux-6.1.0-10-amd64-advanced-1234\n#####",
        );
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(i.default_kernel.as_deref(), Some("6.1.0-10-amd64"));
    // By index into the submenu.
    let fs = debian12_with(&DEBIAN_GRUB_CFG.replace("set default=\"0\"", "set default=\"1>1\""));
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(i.default_kernel.as_deref(), Some("6.1.0-10-amd64"));
    let menu = parse_grub2_cfg(DEBIAN_GRUB_CFG);
    let idx: Vec<&str> = menu.entries.iter().map(|e| e.index.as_str()).collect();
    assert_eq!(idx, vec!["0", "1>0", "1>1"]);
}

#[test]
fn initramfs_can_be_skipped_or_capped() {
    let fs = debian12();
    let opts = InspectOptions {
        read_initramfs: false,
        ..InspectOptions::default()
    };
    let i = inspect_linux(&fs, &opts).unwrap();
    assert!(i.kernels[0].initramfs.is_none());
    assert_eq!(i.kernels[0].drivers["nvme"], DriverState::RootOnly);
    let opts = InspectOptions {
        max_initramfs_size: 10,
        ..InspectOptions::default()
    };
    let i = inspect_linux(&fs, &opts).unwrap();
    let ir = i.kernels[0].initramfs.as_ref().unwrap();
    assert!(ir.error.as_deref().unwrap().contains("limit"));
    assert!(!i.warnings.is_empty());
}

fn rhel8_bls() -> MemFs {
    let mid = "0123456789abcdef0123456789abcdef";
    let initramfs = filter(
        "xz",
        &["-c", "--check=crc32"],
        "xz-utils",
        &modules_cpio(
            "4.18.0-372.el8.x86_64",
            &["nvme/host/nvme.ko.xz", "net/ethernet/amazon/ena/ena.ko.xz"],
        ),
    );
    MemFs::new("rhel8")
        .with_file(
            "/etc/os-release",
            b"NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"8.6 (Ootpa)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"8.6\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 8.6 (Ootpa)\"\n",
        )
        .with_file("/etc/redhat-release", b"Red Hat Enterprise Linux release 8.6 (Ootpa)\n")
        .with_dir("/usr/bin")
        .with_symlink("/bin", "usr/bin")
        .with_file("/usr/bin/bash", &elf(true, true, 62))
        .with_symlink("/usr/bin/sh", "bash")
        .with_symlink("/sbin", "usr/sbin")
        .with_symlink("/usr/sbin/init", "../lib/systemd/systemd")
        .with_file("/usr/lib/systemd/systemd", b"")
        .with_file("/etc/fstab", b"/dev/mapper/rhel-root / xfs defaults 0 0\nUUID=b1 /boot xfs defaults 0 0\n")
        .with_file("/etc/selinux/config", b"# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
        .with_file("/etc/hostname", b"rhel8.example.com\n")
        .with_file("/boot/grub2/grub.cfg", b"set default=\"${saved_entry}\"\ninsmod blscfg\nblscfg\n")
        .with_file("/boot/grub2/grubenv", format!("saved_entry={mid}-4.18.0-372.el8.x86_64\n").as_bytes())
        .with_file(
            &format!("/boot/loader/entries/{mid}-4.18.0-477.el8.x86_64.conf"),
            b"title Red Hat Enterprise Linux (4.18.0-477.el8.x86_64) 8.8 (Ootpa)\nversion 4.18.0-477.el8.x86_64\nlinux /vmlinuz-4.18.0-477.el8.x86_64\ninitrd /initramfs-4.18.0-477.el8.x86_64.img $tuned_initrd\n",
        )
        .with_file(
            &format!("/boot/loader/entries/{mid}-4.18.0-372.el8.x86_64.conf"),
            b"title Red Hat Enterprise Linux (4.18.0-372.el8.x86_64) 8.6 (Ootpa)\nversion 4.18.0-372.el8.x86_64\nlinux /vmlinuz-4.18.0-372.el8.x86_64\ninitrd /initramfs-4.18.0-372.el8.x86_64.img\n",
        )
        .with_file("/boot/vmlinuz-4.18.0-477.el8.x86_64", b"k")
        .with_file("/boot/vmlinuz-4.18.0-372.el8.x86_64", b"k")
        .with_file("/boot/.vmlinuz-4.18.0-372.el8.x86_64.hmac", b"h")
        .with_file("/boot/initramfs-4.18.0-372.el8.x86_64.img", &initramfs)
        .with_dir("/lib/modules/4.18.0-372.el8.x86_64")
        .with_dir("/lib/modules/4.18.0-477.el8.x86_64")
        .with_file(
            "/etc/NetworkManager/system-connections/eth0.nmconnection",
            b"[connection]\nid=System eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=manual\naddress1=10.1.2.3/24,10.1.2.1\n\n[ipv6]\nmethod=ignore\n",
        )
        .with_file(
            "/etc/sysconfig/network-scripts/ifcfg-eth1",
            b"DEVICE=eth1\nBOOTPROTO=none\nIPADDR=192.168.5.5\nNETMASK=255.255.255.0\nGATEWAY=192.168.5.1\nONBOOT=yes\n",
        )
        .with_file("/usr/sbin/NetworkManager", b"")
        .with_file("/usr/sbin/sshd", b"")
        .with_symlink(
            "/etc/systemd/system/multi-user.target.wants/sshd.service",
            "/usr/lib/systemd/system/sshd.service",
        )
        .with_file("/usr/sbin/hv_kvp_daemon", b"")
}

#[test]
fn rhel8_bls_full() {
    let i = inspect_linux(&rhel8_bls(), &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("rhel", 8, 6)
    );
    assert_eq!(i.package_management.as_deref(), Some("dnf"));
    assert_eq!(i.package_format.as_deref(), Some("rpm"));
    assert_eq!(i.bootloader.kind.as_deref(), Some("bls"));
    assert_eq!(i.firmware, Firmware::Bios);
    assert_eq!(i.selinux.as_deref(), Some("enforcing"));
    assert_eq!(i.init_system.as_deref(), Some("systemd"));
    assert_eq!(i.kernels.len(), 2);
    assert_eq!(i.kernels[0].version, "4.18.0-477.el8.x86_64");
    // grubenv picks the older kernel.
    assert_eq!(i.default_kernel.as_deref(), Some("4.18.0-372.el8.x86_64"));
    let k = i.kernels.iter().find(|k| k.is_default).unwrap();
    assert_eq!(k.initramfs.as_ref().unwrap().segments, vec!["xz", "cpio"]);
    assert_eq!(k.drivers["ena"], DriverState::Initramfs);
    assert_eq!(k.drivers["virtio_blk"], DriverState::Missing);
    assert!(i.kernels[0].initramfs_path.is_none());
    assert_eq!(i.fstab[0].spec_kind, SpecKind::Mapper);
    assert_eq!(i.network.stacks, vec!["ifcfg-rh", "networkmanager"]);
    let eth1 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "eth1")
        .unwrap();
    assert_eq!(eth1.method, NetMethod::Static);
    assert_eq!(eth1.addresses, vec!["192.168.5.5/24"]);
    assert_eq!(eth1.gateway.as_deref(), Some("192.168.5.1"));
    let eth0 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "eth0")
        .unwrap();
    assert_eq!(eth0.method, NetMethod::Static);
    assert_eq!(eth0.addresses, vec!["10.1.2.3/24"]);
    assert_eq!(eth0.gateway.as_deref(), Some("10.1.2.1"));
    assert!(i.agents.hyperv_daemons);
    assert_eq!(i.agents.dhcp_clients, vec!["NetworkManager"]);
    assert_eq!(
        i.agents.ssh.enabled_by.as_deref(),
        Some("/etc/systemd/system/multi-user.target.wants/sshd.service")
    );
}

#[test]
fn rhel7_and_centos7_versions_and_yum() {
    let fs = MemFs::new("c7")
        .with_file("/etc/os-release", b"NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n")
        .with_file("/etc/centos-release", b"CentOS Linux release 7.9.2009 (Core)\n")
        .with_file("/bin/bash", &elf(true, true, 62))
        .with_file("/etc/hosts", b"")
        .with_file("/etc/sysconfig/network", b"NETWORKING=yes\nHOSTNAME=c7.local\n");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("centos", 7, 9)
    );
    assert_eq!(i.package_management.as_deref(), Some("yum"));
    assert_eq!(i.hostname.as_deref(), Some("c7.local"));
    assert_eq!(i.bootloader.kind, None);
    assert!(i.kernels.is_empty());
}

#[test]
fn alpine_extlinux_openrc_aarch64() {
    let initramfs = filter(
        "gzip",
        &["-c"],
        "gzip",
        &modules_cpio("6.1.62-0-lts", &["virtio/virtio_blk.ko.gz"]),
    );
    let fs = MemFs::new("alpine")
        .with_file("/etc/os-release", b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME=\"Alpine Linux v3.18\"\n")
        .with_file("/etc/alpine-release", b"3.18.4\n")
        .with_file("/bin/busybox", &elf(true, true, 183))
        .with_symlink("/bin/sh", "/bin/busybox")
        .with_symlink("/sbin/init", "/bin/busybox")
        .with_file("/sbin/openrc", b"")
        .with_symlink("/sbin/udhcpc", "/bin/busybox")
        .with_file("/etc/fstab", b"UUID=x / ext4 rw,relatime 0 1\n")
        .with_file("/etc/hostname", b"alpine\n")
        .with_file("/boot/vmlinuz-lts", b"k")
        .with_file("/boot/initramfs-lts", &initramfs)
        .with_file("/lib/modules/6.1.62-0-lts/modules.builtin", b"kernel/drivers/ata/ahci.ko\n")
        .with_dir("/lib/modules/6.1.55-0-lts")
        .with_dir("/lib/modules/6.1.70-0-virt")
        .with_file(
            "/boot/extlinux.conf",
            b"DEFAULT menu.c32\nPROMPT 0\nMENU TITLE Alpine\nDEFAULT lts\nLABEL lts\n  MENU LABEL Linux lts\n  LINUX vmlinuz-lts\n  INITRD initramfs-lts\n  APPEND root=UUID=x modules=sd-mod,usb-storage,ext4 quiet\n",
        )
        .with_file("/usr/sbin/sshd", b"")
        .with_symlink("/etc/runlevels/default/sshd", "/etc/init.d/sshd")
        .with_file("/etc/network/interfaces", b"auto eth0\niface eth0 inet dhcp\n");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("alpinelinux", 3, 18)
    );
    assert_eq!(i.arch.as_deref(), Some("aarch64"));
    assert_eq!(i.package_format.as_deref(), Some("apk"));
    assert_eq!(i.init_system.as_deref(), Some("openrc"));
    assert_eq!(i.bootloader.kind.as_deref(), Some("extlinux"));
    assert_eq!(
        i.bootloader.menu.entries[0].args.as_deref(),
        Some("root=UUID=x modules=sd-mod,usb-storage,ext4 quiet")
    );
    assert_eq!(i.default_kernel.as_deref(), Some("lts"));
    assert_eq!(
        i.kernels[0].initramfs_path.as_deref(),
        Some("/boot/initramfs-lts")
    );
    assert_eq!(
        i.kernels[0].initramfs.as_ref().unwrap().modules,
        vec!["virtio_blk"]
    );
    assert_eq!(
        i.kernels[0].modules_dir.as_deref(),
        Some("/lib/modules/6.1.62-0-lts")
    );
    assert_eq!(i.kernels[0].drivers["ahci"], DriverState::Builtin);
    assert_eq!(i.agents.dhcp_clients, vec!["udhcpc"]);
    assert_eq!(
        i.agents.ssh.enabled_by.as_deref(),
        Some("/etc/runlevels/default/sshd")
    );
}

#[test]
fn ubuntu_netplan_networkd_upstart_free() {
    let fs = MemFs::new("ubuntu")
        .with_file("/etc/os-release", b"NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 22.04.3 LTS\"\n")
        .with_file("/etc/lsb-release", b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\n")
        .with_file("/bin/sh", &elf(true, true, 21))
        .with_file("/etc/hosts", b"")
        .with_file(
            "/etc/netplan/50-cloud-init.yaml",
            b"# generated\nnetwork:\n    version: 2\n    ethernets:\n        ens5:\n            dhcp4: true\n            match:\n                macaddress: 02:AA:bb:cc:dd:ee\n            set-name: ens5\n        ens6:\n            addresses: [10.0.0.5/24, \"fd00::5/64\"]\n            routes:\n              - to: default\n                via: 10.0.0.1\n",
        )
        .with_file("/etc/systemd/network/10-eth.network", b"[Match]\nName=eth9\n\n[Network]\nDHCP=ipv4\n")
        .with_file("/lib/systemd/systemd-networkd", b"")
        .with_file("/etc/cloud/cloud.cfg", b"")
        .with_file("/etc/cloud/cloud-init.disabled", b"");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("ubuntu", 22, 4)
    );
    assert_eq!(i.arch.as_deref(), Some("ppc64le"));
    assert_eq!(i.network.stacks, vec!["netplan", "systemd-networkd"]);
    let ens5 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "ens5")
        .unwrap();
    assert_eq!(ens5.method, NetMethod::Dhcp);
    assert_eq!(ens5.mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
    let ens6 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "ens6")
        .unwrap();
    assert_eq!(ens6.method, NetMethod::Static);
    assert_eq!(ens6.addresses, vec!["10.0.0.5/24", "fd00::5/64"]);
    let eth9 = i
        .network
        .interfaces
        .iter()
        .find(|x| x.name == "eth9")
        .unwrap();
    assert_eq!(eth9.method, NetMethod::Dhcp);
    assert!(i.agents.cloud_init && i.agents.cloud_init_disabled);
    assert_eq!(i.agents.dhcp_clients, vec!["systemd-networkd"]);
}

#[test]
fn sles11_legacy_sysv() {
    let fs = MemFs::new("sles11")
        .with_file(
            "/etc/SuSE-release",
            b"SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
        )
        .with_file("/bin/bash", &elf(true, true, 62))
        .with_file("/sbin/init", &elf(true, true, 62))
        .with_file("/etc/inittab", b"id:3:initdefault:\n")
        .with_file("/etc/HOSTNAME", b"sles11.site\n")
        .with_file("/etc/fstab", b"/dev/sda2 / ext3 acl,user_xattr 1 1\n/dev/sda1 swap swap defaults 0 0\n")
        .with_file("/etc/sysconfig/network/ifcfg-eth0", b"BOOTPROTO='dhcp4'\nSTARTMODE='auto'\n")
        .with_file("/etc/sysconfig/network/ifcfg-lo", b"IPADDR=127.0.0.1\nNETMASK=255.0.0.0\n")
        .with_file(
            "/boot/grub/menu.lst",
            b"default 1\ntimeout 8\ntitle Failsafe\n    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/sda2 x11failsafe\ntitle SLES 11 SP4\n    root (hd0,1)\n    kernel /boot/vmlinuz-3.0.101-108.13-default root=/dev/sda2\n    initrd /boot/initrd-3.0.101-108.13-default\n",
        )
        .with_file("/boot/vmlinuz-3.0.101-108.13-default", b"k")
        .with_file("/boot/vmlinuz-3.0.101-63-default", b"k")
        .with_file("/boot/initrd-3.0.101-108.13-default", b"not an initramfs")
        .with_file("/usr/sbin/sshd", b"")
        .with_symlink("/etc/init.d/rc3.d/S12sshd", "../sshd")
        .with_symlink("/etc/rc.d/rc3.d/S12sshd", "../sshd");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("sles", 11, 4)
    );
    assert_eq!(i.package_management.as_deref(), Some("zypper"));
    assert_eq!(i.init_system.as_deref(), Some("sysvinit"));
    assert_eq!(i.hostname.as_deref(), Some("sles11.site"));
    assert_eq!(i.bootloader.kind.as_deref(), Some("grub"));
    assert_eq!(i.default_kernel.as_deref(), Some("3.0.101-108.13-default"));
    let k = i.kernels.iter().find(|k| k.is_default).unwrap();
    assert!(k.initramfs.as_ref().unwrap().error.is_some());
    assert!(i
        .warnings
        .iter()
        .any(|w| w.contains("initrd-3.0.101-108.13-default")));
    assert_eq!(i.network.stacks, vec!["ifcfg-suse"]);
    assert_eq!(i.network.interfaces[0].method, NetMethod::Dhcp);
    assert_eq!(i.network.interfaces[1].method, NetMethod::Loopback);
    assert_eq!(device_position(&i.fstab[0].spec), Some((0, Some(2))));
    assert!(i.agents.ssh.enabled);
}

#[test]
fn ubuntu1404_upstart() {
    let fs = MemFs::new("trusty")
        .with_file("/etc/lsb-release", b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n")
        .with_file("/bin/bash", &elf(false, true, 3))
        .with_file("/sbin/init", b"upstart")
        .with_file("/sbin/initctl", b"")
        .with_file("/etc/init/ssh.conf", b"")
        .with_file("/usr/sbin/sshd", b"")
        .with_file("/etc/hosts", b"");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("ubuntu", 14, 4)
    );
    assert_eq!(i.product_name.as_deref(), Some("Ubuntu 14.04.6 LTS"));
    assert_eq!(i.arch.as_deref(), Some("i386"));
    assert_eq!(i.init_system.as_deref(), Some("upstart"));
    assert!(i.agents.ssh.enabled);
}

#[test]
fn systemd_boot_uefi() {
    let fs = MemFs::new("arch")
        .with_file("/etc/os-release", b"NAME=\"Arch Linux\"\nID=arch\nPRETTY_NAME=\"Arch Linux\"\nBUILD_ID=rolling\n")
        .with_file("/usr/bin/bash", &elf(true, true, 62))
        .with_symlink("/bin", "usr/bin")
        .with_file("/etc/fstab", b"UUID=r / ext4 rw 0 1\nUUID=E /boot vfat rw 0 2\n")
        .with_file("/boot/loader/loader.conf", b"default arch.conf\ntimeout 3\n")
        .with_file("/boot/loader/entries/arch.conf", b"title Arch Linux\nlinux /vmlinuz-linux\ninitrd /initramfs-linux.img\n")
        .with_file("/boot/loader/entries/arch-fallback.conf", b"title Arch Linux (fallback)\nlinux /vmlinuz-linux\ninitrd /initramfs-linux-fallback.img\n")
        .with_file("/boot/vmlinuz-linux", b"k")
        .with_file("/usr/lib/modules/6.6.1-arch1-1/pkgbase", b"linux\n")
        .with_file("/usr/lib/modules/6.6.1-arch1-1/vmlinuz", b"k")
        .with_file("/boot/EFI/systemd/systemd-bootx64.efi", b"")
        .with_dir("/var/lib/pacman");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!((i.distro.as_str(), i.major_version), ("archlinux", 0));
    assert_eq!(i.package_management.as_deref(), Some("pacman"));
    assert_eq!(i.bootloader.kind.as_deref(), Some("systemd-boot"));
    assert_eq!(i.firmware, Firmware::Uefi);
    assert_eq!(i.default_kernel.as_deref(), Some("linux"));
    assert_eq!(i.kernels.len(), 1, "{:?}", i.kernels);
    let k = i.kernels.iter().find(|k| k.version == "linux").unwrap();
    assert_eq!(
        k.modules_dir.as_deref(),
        Some("/usr/lib/modules/6.6.1-arch1-1")
    );
}

/// A usr-merged root whose /usr is another filesystem: on the root alone
/// `/bin` is a dangling symlink to `usr/bin`, and it is still a root (as
/// libguestfs has it); another symlink is not.
#[test]
fn a_usr_merged_root_without_its_usr_is_a_root() {
    let root = |target: &str| {
        MemFs::new("root")
            .with_dir("/etc")
            .with_dir("/usr")
            .with_symlink("/bin", target)
            .with_file(
                "/etc/fstab",
                b"UUID=1 / ext4 defaults 0 1\nUUID=2 /usr ext4 ro 0 2\n",
            )
    };
    assert!(is_linux_root(&root("usr/bin")));
    assert!(is_linux_root(&root("/usr/bin")));
    assert!(!is_linux_root(&root("usr/sbin")));
    assert!(!is_linux_root(&root("/opt/bin")));
}

#[test]
fn not_linux_and_hostile_guests() {
    assert!(!is_linux_root(&MemFs::new("empty")));
    let e = inspect_linux(&MemFs::new("empty"), &InspectOptions::default()).unwrap_err();
    assert!(matches!(e, OsError::NotLinux { .. }) && e.is_refusal());
    // Windows-ish.
    let win = MemFs::new("win").with_dir("/Windows/System32");
    assert!(!is_linux_root(&win));
    // Loops, oversize files, garbage everywhere.
    let fs = MemFs::new("hostile")
        .with_dir("/bin")
        .with_file("/etc/hosts", b"")
        .with_symlink("/bin/sh", "/bin/sh")
        .with_symlink("/usr/bin/bash", "../../usr/bin/bash")
        .with_file("/etc/os-release", &vec![b'A'; 5 << 20])
        .with_file("/etc/fstab", b"\x00\xff garbage\n/dev/sda\n   \n")
        .with_file(
            "/boot/grub/grub.cfg",
            b"menuentry 'x' {\n}\n}\n}\nsubmenu {\n set default=\"1>2>3\"",
        )
        .with_symlink("/etc/network/interfaces", "/etc/network/interfaces")
        .with_file("/etc/network/a", b"source /etc/network/a\n")
        .with_file(
            "/etc/netplan/x.yaml",
            b"network:\n- - - :\n  ethernets: [\n\t\"",
        )
        .with_file("/boot/vmlinuz-", b"")
        .with_file("/boot/vmlinuz-1", b"")
        .with_file("/boot/initrd.img-1", b"\x1f\x8b\x08\x00garbage");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(i.distro, "unknown");
    assert!(i.arch.is_none());
    assert!(i.warnings.iter().any(|w| w.contains("os-release")));
    assert!(i.kernels[0].initramfs.as_ref().unwrap().error.is_some());
    let j = serde_json::to_string(&i).unwrap();
    assert!(j.contains("\"os_type\":\"linux\""));
    // Interfaces that source themselves terminate.
    let fs = MemFs::new("loop")
        .with_dir("/bin")
        .with_file("/etc/hosts", b"")
        .with_file("/etc/network/interfaces", b"source /etc/network/interfaces\nsource-directory /etc/network\niface eth0 inet dhcp\n");
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert!(!i.network.interfaces.is_empty());
}

#[test]
fn elf_arches() {
    assert_eq!(elf_arch(&elf(true, true, 62)), Some("x86_64"));
    assert_eq!(elf_arch(&elf(false, true, 3)), Some("i386"));
    assert_eq!(elf_arch(&elf(true, true, 183)), Some("aarch64"));
    assert_eq!(elf_arch(&elf(false, true, 40)), Some("armv7l"));
    assert_eq!(elf_arch(&elf(true, true, 21)), Some("ppc64le"));
    assert_eq!(elf_arch(&elf(true, false, 21)), Some("ppc64"));
    assert_eq!(elf_arch(&elf(true, false, 22)), Some("s390x"));
    assert_eq!(elf_arch(&elf(true, true, 243)), Some("riscv64"));
    assert_eq!(elf_arch(b"\x7fELF"), None);
    assert_eq!(elf_arch(b"MZ"), None);
}

#[test]
fn device_positions() {
    assert_eq!(device_position("/dev/sda1"), Some((0, Some(1))));
    assert_eq!(device_position("/dev/xvdb2"), Some((1, Some(2))));
    assert_eq!(device_position("/dev/nvme0n1p3"), Some((0, Some(3))));
    assert_eq!(device_position("/dev/nvme2n1"), Some((2, None)));
    assert_eq!(device_position("/dev/hdc"), Some((2, None)));
    assert_eq!(device_position("/dev/vdz"), Some((25, None)));
    assert_eq!(device_position("/dev/sdaa3"), Some((26, Some(3))));
    assert_eq!(device_position("/dev/mmcblk0p1"), Some((0, Some(1))));
    assert_eq!(device_position("/dev/sda0"), None);
    assert_eq!(device_position("/dev/mapper/vg-root"), None);
    assert_eq!(device_position("/dev/md0"), None);
    assert_eq!(device_position("UUID=x"), None);
    assert_eq!(device_position("/dev/nvme0n1x"), None);
}

#[test]
fn spec_classification() {
    let c = |s: &str| classify_spec(s, "ext4").0;
    assert_eq!(c("UUID=abc"), SpecKind::Uuid);
    assert_eq!(c("uuid=\"abc\""), SpecKind::Uuid);
    assert_eq!(classify_spec("LABEL=\"my root\"", "ext4").1, "my root");
    assert_eq!(c("PARTLABEL=root"), SpecKind::Partlabel);
    assert_eq!(
        c("/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part1"),
        SpecKind::ByPath
    );
    assert_eq!(c("/dev/disk/by-id/ata-X-part1"), SpecKind::ById);
    assert_eq!(
        classify_spec("/dev/disk/by-uuid/u", "ext4"),
        (SpecKind::ByUuid, "u".into())
    );
    assert_eq!(c("/dev/disk/by-label/l"), SpecKind::ByLabel);
    assert_eq!(c("/dev/vg0/root"), SpecKind::LvmPath);
    assert_eq!(c("/dev/md/root"), SpecKind::Device);
    assert_eq!(c("/dev/cciss/c0d0p1"), SpecKind::Device);
    assert_eq!(classify_spec("tmpfs", "tmpfs").0, SpecKind::Pseudo);
    // Octal escapes in fstab fields.
    let f = parse_fstab("LABEL=a\\040b /mnt/my\\040disk ext4 defaults\n");
    assert_eq!(f[0].mountpoint, "/mnt/my disk");
    assert_eq!(f[0].spec_value, "a b");
    assert_eq!((f[0].freq, f[0].passno), (0, 0));
}

#[test]
fn separate_boot_through_mounts() {
    let root = MemFs::new("root")
        .with_file("/etc/os-release", b"ID=centos\nVERSION_ID=\"7\"\n")
        .with_file(
            "/etc/centos-release",
            b"CentOS Linux release 7.9.2009 (Core)\n",
        )
        .with_file("/bin/bash", &elf(true, true, 62))
        .with_file(
            "/etc/fstab",
            b"/dev/mapper/centos-root / xfs defaults 0 0\nUUID=b /boot xfs defaults 0 0\n",
        )
        .with_dir("/boot")
        .with_dir("/lib/modules/3.10.0-1160.el7.x86_64");
    let boot = MemFs::new("boot")
        .with_file("/vmlinuz-3.10.0-1160.el7.x86_64", b"k")
        .with_file("/initramfs-3.10.0-1160.el7.x86_64.img", &cpio(&[("usr/lib/modules/3.10.0-1160.el7.x86_64/kernel/drivers/block/virtio_blk.ko.xz", 0o100644, b"m")], false))
        .with_file(
            "/grub2/grub.cfg",
            b"set default=\"0\"\nmenuentry 'CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)' {\n\tlinux16 /vmlinuz-3.10.0-1160.el7.x86_64 root=/dev/mapper/centos-root\n\tinitrd16 /initramfs-3.10.0-1160.el7.x86_64.img\n}\n",
        )
        .with_symlink("/grub2/grubenv", "/boot/grub2/grubenv.real")
        .with_file("/grub2/grubenv.real", b"saved_entry=CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)\n");
    // Without /boot mounted: no kernels.
    let i = inspect_linux(&root, &InspectOptions::default()).unwrap();
    assert!(i.kernels.is_empty() && i.bootloader.kind.is_none());
    let mut fs = vmie_guestfs::Mounts::new();
    fs.mount(vmie_guestfs::GuestPath::root(), Box::new(root.clone()));
    fs.mount(vmie_guestfs::GuestPath::from("/boot"), Box::new(boot));
    assert!(is_linux_root(&fs));
    let i = inspect_linux(&fs, &InspectOptions::default()).unwrap();
    assert_eq!(
        (i.distro.as_str(), i.major_version, i.minor_version),
        ("centos", 7, 9)
    );
    assert_eq!(i.bootloader.kind.as_deref(), Some("grub2"));
    assert_eq!(
        i.bootloader.saved_entry.as_deref(),
        Some("CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)")
    );
    assert_eq!(i.default_kernel.as_deref(), Some("3.10.0-1160.el7.x86_64"));
    let k = &i.kernels[0];
    assert_eq!(
        k.modules_dir.as_deref(),
        Some("/lib/modules/3.10.0-1160.el7.x86_64")
    );
    assert_eq!(k.drivers["virtio_blk"], DriverState::Initramfs);
    assert_eq!(i.package_management.as_deref(), Some("yum"));
}
