//! `cargo xtask guest NAME` and `cargo xtask boot-test NAME`: real Debian
//! guests, broken the way migrations break them, fixed by vmie-fixup, and
//! booted under qemu.
//!
//! A guest is debootstrapped once (bookworm with a kernel, GRUB's BIOS
//! modules, systemd, ifupdown and a DHCP client, sshd; cached in
//! `target/guest-cache/`), then laid out the way a VMware source leaves it:
//! fstab by `/dev/sdX`, `root=/dev/sdXN` (GRUB_DISABLE_LINUX_UUID), a 30 s
//! menu and a default entry that does not exist, a static address on
//! `ens192`, an fstab entry for a data disk that will not come along and one
//! for an NFS share. GRUB is installed without mounting: `grub-mkimage`
//! builds `core.img` (its blocklist already points at sector 2 onward), and
//! `boot.img` and `core.img` are written into the MBR and the gap before the
//! first partition, as `grub-bios-setup` would.
//!
//! A boot probe baked into the guest (a systemd unit after
//! network-online.target and multi-user.target) prints the reached target,
//! the root and swap devices and each NIC's IPv4 address to the serial port,
//! then powers off. `boot-test` boots the unfixed image (it must fail), fixes
//! a copy, and boots it on a virtio disk and on an NVMe disk (both must pass).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::fixtures::{self, image};
use crate::lvm;

/// The volume group of the `lvm-root` guest.
const LVM_VG: &str = "vmievg";

/// Layouts whose /boot is partition 1 (GRUB's prefix is `(hd0,msdos1)/grub`).
fn has_boot_partition(layout: &str) -> bool {
    matches!(layout, "separate-boot" | "lvm-root")
}

/// `LAYOUT.lvm.json` beside `LAYOUT.raw`: the VGs of an LVM guest
/// (`xtask::lvm::Vg`, from pvs/lvs).
pub fn lvm_json_path(img: &Path) -> PathBuf {
    img.with_extension("lvm.json")
}

/// The guest layouts.
pub const LAYOUTS: &[(&str, &str)] = &[
    (
        "mbr-ext4",
        "one MBR ext4 partition holding everything; no swap",
    ),
    (
        "mbr-logical-swap",
        "MBR: ext4 root, extended partition, swap in logical partition 5",
    ),
    (
        "separate-boot",
        "MBR: ext4 /boot (partition 1), ext4 root (partition 2), swap (partition 3)",
    ),
    (
        "netplan",
        "MBR: ext4 root, logical swap; network by netplan (renderer networkd), not ifupdown",
    ),
    (
        "lvm-root",
        "MBR: ext4 /boot (partition 1), LVM PV (partition 2, type 8e): VG vmievg, LVs root (ext4) and swap",
    ),
    (
        "xfs-root",
        "MBR: XFS root (partition 1, RHEL 8's mkfs profile), logical swap; GRUB reads /boot on XFS",
    ),
    (
        "hostonly",
        "as mbr-logical-swap, with a host-only initramfs (MODULES=list: the VMware guest's disk drivers only, no NVMe, Xen or virtio)",
    ),
    (
        "dracut-hostonly",
        "as hostonly, but dracut (not initramfs-tools) builds the initramfs, as a host-only dracut build on VMware: its disk drivers only",
    ),
];

/// What a VMware guest's host-only initramfs holds: its own disk
/// controllers (PVSCSI, LSI, AHCI, PIIX), SCSI disks and the root's
/// filesystem. `MODULES=dep` in a chroot would pick the build machine's
/// disk driver instead, so the list is explicit.
const HOSTONLY_MODULES: &[&str] = &["vmw_pvscsi", "mptspi", "ahci", "ata_piix", "sd_mod", "ext4"];

/// Cloud disk drivers a host-only initramfs built on VMware lacks (as
/// paths inside the image end).
const CLOUD_DISK_MODULES: &[&str] = &[
    "/nvme.ko",
    "/nvme-core.ko",
    "/virtio_blk.ko",
    "/virtio_scsi.ko",
    "/virtio_pci.ko",
    "/xen-blkfront.ko",
];

/// The dracut modules of a host-only dracut build on a VMware guest with
/// an ext4 root on a plain partition (what `lsinitrd -m` lists for one).
/// Without `--hostonly` (which in a chroot would look at the build
/// machine) dracut adds every module that applies to some machine: qemu's
/// (which installs virtio_blk, virtio_scsi, virtio_pci), nvdimm, dm, crypt,
/// mdraid, virtiofs. Naming them exactly leaves those out.
const DRACUT_MODULES: &str = "base systemd systemd-initrd dracut-systemd kernel-modules rootfs-block udev-rules fs-lib usrmount shutdown";

/// `zstd` is a Recommends of initramfs-tools-core, which an installed
/// Debian 12 has and debootstrap leaves out: without it mkinitramfs falls
/// back from its default `COMPRESS=zstd` to gzip, and the guest's
/// initramfs would not be what a real one is.
const PACKAGES: &str = "linux-image-amd64,grub-pc-bin,systemd-sysv,ifupdown,isc-dhcp-client,openssh-server,iproute2,udev,initramfs-tools,zstd,netplan.io,lvm2";

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    ensure!(st.success(), "{shown} failed: {st}");
    Ok(())
}

/// The Debian mirror apt on this machine is configured with (so nothing is
/// hard-coded here).
fn mirror() -> Result<String> {
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let l = line.trim();
            if let Some(u) = l.strip_prefix("URIs:") {
                if let Some(first) = u.split_whitespace().next() {
                    return Ok(first.to_string());
                }
            }
            if let Some(rest) = l.strip_prefix("deb ") {
                if let Some(u) = rest.split_whitespace().find(|w| w.starts_with("http")) {
                    return Ok(u.to_string());
                }
            }
        }
    }
    bail!("no Debian mirror found in /etc/apt/sources.list(.d); debootstrap needs one")
}

/// debootstrap, GRUB's BIOS modules and qemu come from the one package list.
fn ensure_tools() -> Result<()> {
    crate::deps::deps()
}

/// The debootstrapped bookworm tree, built once.
fn base_tree(root: &Path) -> Result<PathBuf> {
    let cache = root.join("target/guest-cache");
    let tree = cache.join("bookworm");
    // The marker names the package list, so a changed list rebuilds the tree.
    let done = cache.join(format!("bookworm.{:016x}.complete", fnv(PACKAGES)));
    if done.is_file() {
        return Ok(tree);
    }
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(&cache)?;
    eprintln!(
        "guest: debootstrap bookworm (a few minutes; cached in {})",
        cache.display()
    );
    let t0 = Instant::now();
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&tree)
        .arg(mirror()?))?;
    std::fs::write(&done, format!("{:.0}s\n", t0.elapsed().as_secs_f64()))?;
    Ok(tree)
}

/// FNV-1a: a stable name for the package list (no dependency needed).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

const PROBE: &str = r#"#!/bin/sh
{
echo "VMIE-PROBE-BEGIN"
echo "VMIE-PROBE target: $(systemctl is-active multi-user.target)"
echo "VMIE-PROBE root: $(findmnt -n -o SOURCE /)"
echo "VMIE-PROBE swap: $(tail -n +2 /proc/swaps | awk '{print $1}' | tr '\n' ' ')"
for i in /sys/class/net/*; do n=${i##*/}; [ "$n" = lo ] && continue; echo "VMIE-PROBE nic: $n $(ip -4 -o addr show dev $n | awk '{print $4}')"; done
echo "VMIE-PROBE-END"
} > /dev/ttyS1 2>&1
systemctl poweroff
"#;

const PROBE_UNIT: &str = "[Unit]
Description=vmie-fixup boot probe
Wants=network-online.target
After=network-online.target multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmie-probe

[Install]
WantedBy=multi-user.target
";

/// Lay out the guest's configuration as a VMware source leaves it.
fn configure(tree: &Path, layout: &str, kernel: &str) -> Result<()> {
    let (root_dev, boot_prefix, swap) = match layout {
        "mbr-ext4" => ("/dev/sda1", "/boot", None),
        "mbr-logical-swap" | "netplan" | "hostonly" | "dracut-hostonly" | "xfs-root" => {
            ("/dev/sda1", "/boot", Some("/dev/sda5"))
        }
        "separate-boot" => ("/dev/sda2", "", Some("/dev/sda3")),
        "lvm-root" => (
            "/dev/mapper/vmievg-root",
            "",
            Some("/dev/mapper/vmievg-swap"),
        ),
        other => bail!("unknown layout {other}"),
    };
    let root_fs = if layout == "xfs-root" || layout == "lvm-root" {
        "xfs  defaults  0 0"
    } else {
        "ext4  errors=remount-ro  0 1"
    };
    let mut fstab = format!("# /etc/fstab as the VMware guest had it\n{root_dev}  /  {root_fs}\n");
    if has_boot_partition(layout) {
        fstab.push_str("/dev/sda1  /boot  ext4  defaults  0 2\n");
    }
    if let Some(s) = swap {
        fstab.push_str(&format!("{s}  none  swap  sw  0 0\n"));
    }
    fstab.push_str("/dev/sdb1  /data  ext4  defaults  0 2\nfileserver:/export  /mnt/share  nfs  defaults  0 0\n");
    write(&tree.join("etc/fstab"), &fstab)?;
    write(&tree.join("etc/hostname"), "vmie-guest\n")?;
    if layout == "netplan" {
        // ifupdown keeps only lo; netplan renders ens192 for systemd-networkd.
        write(
            &tree.join("etc/network/interfaces"),
            "auto lo\niface lo inet loopback\n",
        )?;
        write(
            &tree.join("etc/netplan/01-netcfg.yaml"),
            "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    ens192:\n      addresses:\n        - 192.0.2.10/24\n      routes:\n        - to: default\n          via: 192.0.2.1\n      nameservers:\n        addresses: [192.0.2.53]\n",
        )?;
        std::fs::set_permissions(
            tree.join("etc/netplan/01-netcfg.yaml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        for (unit, target) in [
            ("systemd-networkd.service", "multi-user.target.wants"),
            (
                "systemd-networkd-wait-online.service",
                "network-online.target.wants",
            ),
        ] {
            let link = tree.join("etc/systemd/system").join(target).join(unit);
            std::fs::create_dir_all(link.parent().context("wants dir")?)?;
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), &link)?;
        }
    } else {
        write(
            &tree.join("etc/network/interfaces"),
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nallow-hotplug ens192\niface ens192 inet static\n\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n",
        )?;
    }
    write(
        &tree.join("etc/default/grub"),
        "GRUB_DEFAULT=5\nGRUB_TIMEOUT=30\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200\"\nGRUB_DISABLE_LINUX_UUID=true\n",
    )?;
    // /boot (or / with /boot in it) is partition 1 in every layout.
    let part = "msdos1";
    write(
        &tree.join("boot/grub/grub.cfg"),
        &format!(
            "set default=\"5\"\nset timeout=30\nserial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
menuentry 'Debian GNU/Linux' {{\n\tinsmod part_msdos\n\tinsmod ext2\n\tset root='hd0,{part}'\n\
\tlinux {boot_prefix}/vmlinuz-{kernel} root={root_dev} ro console=ttyS0,115200\n\tinitrd {boot_prefix}/initrd.img-{kernel}\n}}\n"
        ),
    )?;
    let probe = tree.join("usr/local/sbin/vmie-probe");
    write(&probe, PROBE)?;
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    write(
        &tree.join("etc/systemd/system/vmie-probe.service"),
        PROBE_UNIT,
    )?;
    // The serial console belongs to the probe: a getty there would vhangup()
    // the line (cutting the probe's output short) or interleave its prompt.
    let getty = tree.join("etc/systemd/system/serial-getty@ttyS0.service");
    let _ = std::fs::remove_file(&getty);
    std::os::unix::fs::symlink("/dev/null", &getty)?;
    let wants = tree.join("etc/systemd/system/multi-user.target.wants/vmie-probe.service");
    std::fs::create_dir_all(wants.parent().context("wants dir")?)?;
    let _ = std::fs::remove_file(&wants);
    std::os::unix::fs::symlink("/etc/systemd/system/vmie-probe.service", &wants)?;
    Ok(())
}

/// XFS holding `dir`, as RHEL 8's installer formats it (CRC, finobt,
/// sparse inodes, reflink; no bigtime, no inobtcount), populated without
/// mounting through a protofile (mkfs.xfs -p). Everything is owned by root
/// (a protofile entry carries one uid/gid; the probe does not care);
/// device nodes, sockets and FIFOs are left out (devtmpfs provides /dev),
/// and so are the few names a protofile cannot carry (with white space).
pub(crate) fn mkfs_xfs(
    dir: &Path,
    work: &Path,
    out: &Path,
    size: u64,
    label: &str,
    uuid: &str,
) -> Result<()> {
    use crate::fixtures::mkfs::proto_mode as mode;
    use std::fmt::Write as _;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    fn walk(dir: &Path, depth: usize, s: &mut String, skipped: &mut usize) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
        names.sort_by_key(|e| e.file_name());
        let indent = "  ".repeat(depth);
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let perm = meta.permissions().mode() & 0o7777;
            let plain = |p: &Path| {
                let t = p.to_string_lossy();
                !t.chars().any(char::is_whitespace)
            };
            if !plain(&path) {
                *skipped += 1;
                continue;
            }
            if ft.is_dir() {
                writeln!(s, "{indent}{name} {} 0 0", mode('d', perm))?;
                walk(&path, depth + 1, s, skipped)?;
                writeln!(s, "{indent}$")?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                if !plain(&target) || target.as_os_str().is_empty() {
                    *skipped += 1;
                    continue;
                }
                writeln!(
                    s,
                    "{indent}{name} {} 0 0 {}",
                    mode('l', 0o777),
                    target.display()
                )?;
            } else if ft.is_file() {
                writeln!(
                    s,
                    "{indent}{name} {} 0 0 {}",
                    mode('-', perm),
                    path.display()
                )?;
            } else if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket()
            {
                *skipped += 1;
            }
        }
        Ok(())
    }
    let mut s = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut skipped = 0usize;
    walk(dir, 1, &mut s, &mut skipped)?;
    s.push_str("$\n");
    let proto = work.join("xfs.proto");
    std::fs::write(&proto, s)?;
    image::create_sparse(out, size)?;
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-L", label, "-m"])
        .arg(format!(
            "uuid={uuid},crc=1,finobt=1,reflink=1,bigtime=0,inobtcount=0"
        ))
        .args(["-i", "sparse=1", "-p"])
        .arg(&proto)
        .arg(out))?;
    if skipped > 0 {
        eprintln!(
            "guest: {skipped} device nodes or names with white space left out of the XFS root"
        );
    }
    Ok(())
}

fn mke2fs(dir: &Path, out: &Path, size: u64, label: &str, uuid: &str) -> Result<()> {
    image::create_sparse(out, size)?;
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(dir)
        .args(["-L", label, "-U", uuid])
        .arg(out))
}

/// Build guest `layout` into `target/guests/LAYOUT.raw` (unfixed).
pub fn build(layout: &str) -> Result<PathBuf> {
    ensure!(
        LAYOUTS.iter().any(|(n, _)| *n == layout),
        "unknown guest {layout}; one of: {}",
        names()
    );
    ensure_tools()?;
    let root = fixtures::workspace_root();
    let base = if layout == "dracut-hostonly" {
        dracut_tree(&root)?
    } else {
        base_tree(&root)?
    };
    let work = root.join("target/guests").join(format!("{layout}.work"));
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let tree = work.join("tree");
    run(Command::new("cp").args(["-a"]).arg(&base).arg(&tree))?;
    let kernel = std::fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .context("no kernel in the debootstrapped tree")?;
    configure(&tree, layout, &kernel)?;
    if layout == "hostonly" {
        hostonly_initramfs(&tree, &kernel)?;
    } else if layout == "dracut-hostonly" {
        dracut_hostonly_initramfs(&tree, &kernel)?;
    }

    let img = root.join("target/guests").join(format!("{layout}.raw"));
    const MIB: u64 = 1 << 20;
    let disk_size = 3 * 1024 * MIB;
    image::create_sparse(&img, disk_size)?;
    let table = match layout {
        "mbr-ext4" => "label: dos\nlabel-id: 0x5eed0701\nstart=2048, type=83, bootable\n",
        "mbr-logical-swap" | "netplan" | "hostonly" | "dracut-hostonly" | "xfs-root" => "label: dos\nlabel-id: 0x5eed0702\nstart=2048, size=2560M, type=83, bootable\ntype=5\ntype=82\n",
        "lvm-root" => "label: dos\nlabel-id: 0x5eed0704\nstart=2048, size=256M, type=83, bootable\ntype=8e\n",
        _ => "label: dos\nlabel-id: 0x5eed0703\nstart=2048, size=256M, type=83, bootable\nsize=2304M, type=83\ntype=82\n",
    };
    let mut sf = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .context("sfdisk")?;
    std::io::Write::write_all(sf.stdin.as_mut().context("sfdisk stdin")?, table.as_bytes())?;
    ensure!(sf.wait()?.success(), "sfdisk failed");
    let parts = partitions(&img)?;

    let uuid = |n: u32| format!("{:08x}-0000-4000-8000-{n:012x}", 0x7e570000u32 + n);
    let mut lvm_vgs = None;
    if layout == "lvm-root" {
        // Without these the initramfs cannot find root=/dev/mapper/….
        initrd_has(
            &tree.join(format!("boot/initrd.img-{kernel}")),
            &["usr/sbin/lvm", "/dm-mod.ko", "/xfs.ko"],
        )?;
        // /boot's contents on partition 1; partition 2 is the PV of vmievg,
        // whose LVs root (XFS, as RHEL lays it out: the rest, with an empty
        // /boot) and swap are made
        // like the LVM fixtures' (metadata by LVM on a loop device, the
        // filesystems copied to the extents lvs reports).
        let boot_dir = work.join("boot");
        std::fs::rename(tree.join("boot"), &boot_dir)?;
        std::fs::create_dir_all(tree.join("boot"))?;
        let (s1, l1) = parts[0];
        let (s2, l2) = parts[1];
        mke2fs(&boot_dir, &work.join("p1.img"), l1, "boot", &uuid(1))?;
        image::copy_sparse(&work.join("p1.img"), &img, s1, l1)?;
        let env = lvm::LvmEnv::new(
            &work.join("lvm"),
            &[lvm::PvPlace {
                disk: 0,
                file: img.clone(),
                offset: s2,
                size: l2,
            }],
        )?;
        let dev = env.dev(0).to_string();
        env.run(&["pvcreate", "-q", "-y", &dev])?;
        env.run(&["vgcreate", "-q", "-s", "4m", LVM_VG, &dev])?;
        lvm::lvcreate(&env, LVM_VG, "root", &["-L", "2304m"], &[])?;
        lvm::lvcreate(&env, LVM_VG, "swap", &["-l", "100%FREE"], &[])?;
        let vgs = env.describe()?;
        drop(env);
        let lv = |n: &str| {
            vgs[0]
                .lvs
                .iter()
                .find(|l| l.name == n)
                .with_context(|| format!("no LV {n}"))
        };
        let disks = [img.clone()];
        let root_lv = lv("root")?;
        mkfs_xfs(
            &tree,
            &work,
            &work.join("root.img"),
            root_lv.size,
            "root",
            &uuid(2),
        )?;
        lvm::scatter(&work.join("root.img"), &root_lv.mapping, &disks)?;
        let swap_lv = lv("swap")?;
        let swap = work.join("swap.img");
        image::create_sparse(&swap, swap_lv.size)?;
        run(Command::new("mkswap")
            .args(["-q", "-U", &uuid(5)])
            .arg(&swap))?;
        lvm::scatter(&swap, &swap_lv.mapping, &disks)?;
        lvm_vgs = Some(vgs);
    } else if layout == "separate-boot" {
        // /boot's contents on partition 1, the rest (with an empty /boot) on 2.
        let boot_dir = work.join("boot");
        std::fs::rename(tree.join("boot"), &boot_dir)?;
        std::fs::create_dir_all(tree.join("boot"))?;
        let (s1, l1) = parts[0];
        let (s2, l2) = parts[1];
        mke2fs(&boot_dir, &work.join("p1.img"), l1, "boot", &uuid(1))?;
        mke2fs(&tree, &work.join("p2.img"), l2, "root", &uuid(2))?;
        image::copy_sparse(&work.join("p1.img"), &img, s1, l1)?;
        image::copy_sparse(&work.join("p2.img"), &img, s2, l2)?;
    } else if layout == "xfs-root" {
        let (s1, l1) = parts[0];
        initrd_has(
            &tree.join(format!("boot/initrd.img-{kernel}")),
            &["/xfs.ko"],
        )?;
        mkfs_xfs(&tree, &work, &work.join("p1.img"), l1, "root", &uuid(1))?;
        image::copy_sparse(&work.join("p1.img"), &img, s1, l1)?;
    } else {
        let (s1, l1) = parts[0];
        mke2fs(&tree, &work.join("p1.img"), l1, "root", &uuid(1))?;
        image::copy_sparse(&work.join("p1.img"), &img, s1, l1)?;
    }
    if layout != "mbr-ext4" && layout != "lvm-root" {
        let &(s, l) = parts.last().context("no swap partition")?;
        let swap = work.join("swap.img");
        image::create_sparse(&swap, l)?;
        run(Command::new("mkswap")
            .args(["-q", "-U", &uuid(5)])
            .arg(&swap))?;
        image::copy_sparse(&swap, &img, s, l)?;
    }
    install_grub(
        &img,
        &work,
        if has_boot_partition(layout) {
            "(hd0,msdos1)/grub"
        } else {
            "(hd0,msdos1)/boot/grub"
        },
    )?;
    // Where the LVs are (lvs/pvs, as in the LVM fixtures' manifests).
    let lvm_json = lvm_json_path(&img);
    match lvm_vgs {
        Some(vgs) => std::fs::write(&lvm_json, serde_json::to_string_pretty(&vgs)? + "\n")?,
        None => {
            let _ = std::fs::remove_file(&lvm_json);
        }
    }
    std::fs::remove_dir_all(&work)?;
    eprintln!(
        "guest: {} ready (unfixed, as the source hypervisor left it)",
        img.display()
    );
    Ok(img)
}

/// Rebuild the guest's initramfs as a VMware guest's host-only one
/// (initramfs-tools `MODULES=list`, [`HOSTONLY_MODULES`]), in a chroot of
/// the tree, and check that no cloud disk driver is in it.
fn hostonly_initramfs(tree: &Path, kernel: &str) -> Result<()> {
    let conf = tree.join("etc/initramfs-tools/initramfs.conf");
    let text = std::fs::read_to_string(&conf)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("MODULES=") {
                "MODULES=list".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write(&conf, &(text + "\n"))?;
    write(
        &tree.join("etc/initramfs-tools/modules"),
        &format!(
            "# the VMware guest's own disk drivers\n{}\n",
            HOSTONLY_MODULES.join("\n")
        ),
    )?;
    write(
        &tree.join("etc/initramfs-tools/conf.d/resume"),
        "RESUME=none\n",
    )?;
    run(Command::new("chroot")
        .arg(tree)
        .args(["mkinitramfs", "-o"])
        .arg(format!("/boot/initrd.img-{kernel}"))
        .arg(kernel)
        .stdout(Stdio::null()))?;
    let initrd = tree.join(format!("boot/initrd.img-{kernel}"));
    initrd_has(&initrd, &["/vmw_pvscsi.ko", "/sd_mod.ko"])?;
    lacks_cloud_drivers(&initrd)
}

/// Fails if a cloud disk driver ([`CLOUD_DISK_MODULES`]) is in `initrd`.
fn lacks_cloud_drivers(initrd: &Path) -> Result<()> {
    for absent in CLOUD_DISK_MODULES {
        ensure!(
            initrd_has(initrd, &[absent]).is_err(),
            "{}: {absent} is in the host-only initramfs",
            initrd.display()
        );
    }
    Ok(())
}

/// Run `sh -c script` (`$1` is `tree`) in a mount namespace of its own with
/// `/proc` and `/dev` mounted in `tree`: dracut and its package's scripts
/// need both (process substitution uses /dev/fd), and the mounts vanish
/// with the namespace however the script ends, so nothing is left mounted.
fn in_chroot_ns(tree: &Path, script: &str) -> Result<()> {
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "set -e; mount -t proc proc \"$1/proc\"; mount --rbind /dev \"$1/dev\"; {script}"
        ))
        .arg("sh")
        .arg(tree)
        .stdout(Stdio::null()))
}

/// The debootstrapped trees every boot layout starts from (the base one
/// and the dracut one), built now if not cached: `cargo xtask test` does
/// this in the background while the tests run (debootstrap mostly waits on
/// the network and the disk).
pub fn prepare_trees() -> Result<()> {
    let root = fixtures::workspace_root();
    base_tree(&root)?;
    dracut_tree(&root)?;
    Ok(())
}

/// The base tree with Debian's dracut in place of initramfs-tools (which
/// it conflicts with), built once from [`base_tree`] by `apt-get install
/// dracut` in a chroot (about a minute: the package's trigger builds a
/// generic initramfs, which [`dracut_hostonly_initramfs`] replaces).
fn dracut_tree(root: &Path) -> Result<PathBuf> {
    let base = base_tree(root)?;
    let cache = root.join("target/guest-cache");
    let tree = cache.join("bookworm-dracut");
    let done = cache.join(format!(
        "bookworm-dracut.{:016x}.complete",
        fnv(&format!("{PACKAGES}+dracut"))
    ));
    if done.is_file() {
        return Ok(tree);
    }
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    eprintln!("guest: installing dracut into a copy of the base tree (about a minute)");
    let t0 = Instant::now();
    run(Command::new("cp").args(["-a"]).arg(&base).arg(&tree))?;
    write(
        &tree.join("etc/apt/sources.list"),
        &format!("deb {} bookworm main\n", mirror()?),
    )?;
    std::fs::copy("/etc/resolv.conf", tree.join("etc/resolv.conf"))
        .context("/etc/resolv.conf (apt in the chroot resolves the mirror)")?;
    in_chroot_ns(
        &tree,
        "export DEBIAN_FRONTEND=noninteractive; \
         chroot \"$1\" apt-get update -q; \
         chroot \"$1\" apt-get install -y -q --no-install-recommends dracut; \
         chroot \"$1\" apt-get clean; \
         test -x \"$1/usr/bin/dracut\"; \
         ! chroot \"$1\" dpkg-query -W -f '${Status}' initramfs-tools | grep -q ' installed'",
    )?;
    std::fs::write(&done, format!("{:.0}s\n", t0.elapsed().as_secs_f64()))?;
    Ok(tree)
}

/// Rebuild the guest's initramfs with dracut as a host-only build on a
/// VMware guest looks: the dracut modules of [`DRACUT_MODULES`], the
/// kernel modules of [`HOSTONLY_MODULES`] (and what they need), no cloud
/// disk driver (`--omit-drivers` as well, so none comes in as a
/// dependency). Checked by listing the image.
fn dracut_hostonly_initramfs(tree: &Path, kernel: &str) -> Result<()> {
    let omit: Vec<&str> = CLOUD_DISK_MODULES
        .iter()
        .map(|m| m.trim_start_matches('/').trim_end_matches(".ko"))
        .collect();
    in_chroot_ns(
        tree,
        &format!(
            "rm -f \"$1/boot/initrd.img-{kernel}\"; \
             chroot \"$1\" dracut --quiet --force --no-hostonly --modules '{DRACUT_MODULES}' \
             --drivers '{}' --omit-drivers '{}' /boot/initrd.img-{kernel} {kernel}",
            HOSTONLY_MODULES.join(" "),
            omit.join(" "),
        ),
    )?;
    let initrd = tree.join(format!("boot/initrd.img-{kernel}"));
    initrd_has(
        &initrd,
        &[
            "usr/lib/dracut/build-parameter.txt",
            "/vmw_pvscsi.ko",
            "/mptspi.ko",
            "/sd_mod.ko",
            "/ext4.ko",
        ],
    )?;
    lacks_cloud_drivers(&initrd)
}

/// A copy of `unfixed` fixed by every shipped rule except
/// `linux-initramfs-add-drivers` (`--rules` with that rule taken out).
fn fixed_without_drivers(
    bin: &Path,
    name: &str,
    unfixed: &Path,
    dir: &Path,
    root: &Path,
) -> Result<PathBuf> {
    let rules = dir.join("rules-without-drivers");
    if rules.exists() {
        std::fs::remove_dir_all(&rules)?;
    }
    std::fs::create_dir_all(&rules)?;
    let mut dropped = false;
    for e in std::fs::read_dir(root.join("rules"))? {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&p)?;
        let kept: Vec<&str> = text
            .split("[[rule]]")
            .filter(|block| {
                let drop = block.contains("id = \"linux-initramfs-add-drivers\"");
                dropped |= drop;
                !drop
            })
            .collect();
        std::fs::write(
            rules.join(p.file_name().context("name")?),
            kept.join("[[rule]]"),
        )?;
    }
    ensure!(
        dropped,
        "rules/: no rule linux-initramfs-add-drivers to leave out"
    );
    let out = dir.join(format!("{name}.nodrivers.raw"));
    fresh_copy(unfixed, &out)?;
    run(Command::new(bin)
        .arg("--rules")
        .arg(&rules)
        .arg("--no-default-rules")
        .arg(&out)
        .stdout(Stdio::null()))?;
    std::fs::remove_dir_all(&rules)?;
    Ok(out)
}

/// Remove `img` and the undo journals a fixup left beside it
/// (`IMG.vmie-undo.N`).
fn remove_with_journals(img: &Path) -> Result<()> {
    let _ = std::fs::remove_file(img);
    let dir = img.parent().context("image without a directory")?;
    let journal = format!(
        "{}.vmie-undo",
        img.file_name()
            .context("image without a name")?
            .to_string_lossy()
    );
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&journal))
        {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

/// A sparse copy of `src` at `dst`, with no journal of an earlier run
/// beside it (a fixup refuses an image whose journal is pending).
fn fresh_copy(src: &Path, dst: &Path) -> Result<()> {
    remove_with_journals(dst)?;
    image::create_sparse(dst, std::fs::metadata(src)?.len())?;
    image::copy_sparse(src, dst, 0, u64::MAX)?;
    Ok(())
}

/// The fixed `hostonly` (or `dracut-hostonly`) guest's initramfs, read
/// with the Linux tools: the original is kept as `…vmie.bak` and is the
/// first bytes of the new image; unpacking the original (gzip or zstd, then cpio) and
/// then the appended archive (cpio) over it gives a tree in which the
/// host's kmod resolves `nvme` and `virtio_blk` with their dependencies
/// (`modprobe --show-depends -d`), and which loads them before it looks for
/// the root: initramfs-tools' `conf/modules` lists them; for dracut,
/// `etc/cmdline.d/90-vmie-fixup-drivers.conf` says `rd.driver.pre=` with
/// them, and `lib` is still the image's symlink to `usr/lib` (the modules
/// went where the image keeps them).
fn check_injected(fixed: &Path, work: &Path, dracut: bool) -> Result<String> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work)?;
    let &(s, l) = partitions(fixed)?.first().context("no partition")?;
    let p1 = work.join("p1.img");
    run(Command::new("dd")
        .arg(format!("if={}", fixed.display()))
        .arg(format!("of={}", p1.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={s}"))
        .arg(format!("count={l}")))?;
    let listing = output(Command::new("debugfs").args(["-R", "ls -p /boot"]).arg(&p1))?;
    let initrd = listing
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .find(|n| n.starts_with("initrd.img-") && !n.ends_with(".vmie.bak"))
        .context("no initrd.img-* in /boot")?
        .to_string();
    let kernel = initrd.trim_start_matches("initrd.img-").to_string();
    let dump = |name: &str| -> Result<Vec<u8>> {
        let out = work.join(name);
        run(Command::new("debugfs")
            .args(["-R", &format!("dump /boot/{name} {}", out.display())])
            .arg(&p1)
            .stderr(Stdio::null()))?;
        Ok(std::fs::read(&out)?)
    };
    let new = dump(&initrd)?;
    let old = dump(&format!("{initrd}.vmie.bak"))?;
    ensure!(!old.is_empty(), "no backup {initrd}.vmie.bak");
    ensure!(
        new.len() > old.len() && new.starts_with(&old),
        "the new image does not start with the original ({} and {} bytes)",
        new.len(),
        old.len()
    );
    let tail = &new[old.len().div_ceil(4) * 4..];
    ensure!(
        tail.starts_with(b"070701"),
        "no cpio archive after the original"
    );
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree)?;
    let bak = work.join(format!("{initrd}.vmie.bak"));
    run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -dc \"$1\" | cpio -idm --quiet",
            decompressor(&bak)?
        ))
        .arg("sh")
        .arg(&bak)
        .current_dir(&tree))?;
    std::fs::write(work.join("tail.cpio"), tail)?;
    run(Command::new("sh")
        .arg("-c")
        .arg("cpio -idmu --quiet < \"$1\"")
        .arg("sh")
        .arg(work.join("tail.cpio"))
        .current_dir(&tree))?;
    let mut shown = Vec::new();
    for m in ["nvme", "virtio_blk"] {
        let deps = output(
            Command::new("modprobe")
                .args(["--show-depends", "-d"])
                .arg(&tree)
                .args(["-S", &kernel, m]),
        )?;
        let loads: Vec<&str> = deps
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .filter_map(|p| p.split_whitespace().next())
            .collect();
        ensure!(
            loads.iter().any(|p| p.contains(&format!("/{m}.ko"))),
            "modprobe does not resolve {m}: {deps}"
        );
        // modprobe -d prints the paths under the tree it was given.
        for p in &loads {
            ensure!(
                Path::new(p).starts_with(&tree) && Path::new(p).is_file(),
                "{p} is not in the initramfs"
            );
        }
        shown.push(format!("{m} ({} modules)", loads.len()));
    }
    if dracut {
        let f = "etc/cmdline.d/90-vmie-fixup-drivers.conf";
        let conf = std::fs::read_to_string(tree.join(f)).with_context(|| format!("no {f}"))?;
        let pre: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rd.driver.pre="))
            .flat_map(|v| v.split(','))
            .collect();
        ensure!(
            pre.contains(&"nvme") && pre.contains(&"virtio_blk"),
            "{f} does not preload nvme and virtio_blk: {conf}"
        );
        ensure!(
            std::fs::symlink_metadata(tree.join("lib"))?.is_symlink(),
            "lib is no longer the image's symlink after the appended archive"
        );
        shown.push(format!("{f}: {}", conf.trim()));
    } else {
        let conf = std::fs::read_to_string(tree.join("conf/modules"))?;
        ensure!(
            conf.lines().any(|l| l.trim() == "nvme")
                && conf.lines().any(|l| l.trim() == "vmw_pvscsi"),
            "conf/modules does not load nvme besides the guest's own list: {conf}"
        );
    }
    std::fs::remove_dir_all(work)?;
    Ok(format!(
        "initramfs: original kept ({} bytes), {} bytes appended; modprobe -d resolves {}",
        old.len(),
        new.len() - old.len(),
        shown.join(", ")
    ))
}

/// The tool that decompresses an initramfs of one compressed cpio archive
/// (gzip or zstd, what Debian's initramfs-tools and dracut write here).
fn decompressor(initrd: &Path) -> Result<&'static str> {
    let head = image::read_at(initrd, 0, 4)?;
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
        other => bail!("{}: unknown compression {other:02x?}", initrd.display()),
    })
}

/// Fails unless the initramfs (one gzip or zstd cpio archive, as Debian's
/// initramfs-tools writes it) holds a path ending in each of `wanted`.
fn initrd_has(initrd: &Path, wanted: &[&str]) -> Result<()> {
    let unpack = decompressor(initrd)?;
    let list = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{unpack} -dc \"$1\" | cpio -it --quiet"))
            .arg("sh")
            .arg(initrd),
    )?;
    for w in wanted {
        ensure!(
            list.lines().any(|l| l.ends_with(w)),
            "{}: no {w} in the initramfs",
            initrd.display()
        );
    }
    Ok(())
}

/// (start, size) in bytes of every non-extended partition, in table order.
fn partitions(img: &Path) -> Result<Vec<(u64, u64)>> {
    let out = Command::new("sfdisk")
        .arg("-J")
        .arg(img)
        .output()
        .context("sfdisk -J")?;
    ensure!(out.status.success(), "sfdisk -J failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut parts = Vec::new();
    for p in v["partitiontable"]["partitions"]
        .as_array()
        .context("no partitions")?
    {
        if p["type"].as_str() == Some("5") {
            continue;
        }
        let s = p["start"].as_u64().context("start")? * 512;
        let l = p["size"].as_u64().context("size")? * 512;
        parts.push((s, l));
    }
    Ok(parts)
}

/// What grub-bios-setup does for an MBR disk, without a device: boot.img's
/// code in the MBR (partition table kept; the floppy drive check skipped as
/// for hard disks), core.img from sector 1 in the gap before partition 1.
fn install_grub(img: &Path, work: &Path, prefix: &str) -> Result<()> {
    let core = work.join("core.img");
    run(Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-o"])
        .arg(&core)
        .args(["-p", prefix])
        .args([
            "biosdisk",
            "part_msdos",
            "ext2",
            "xfs",
            "normal",
            "linux",
            "configfile",
            "search",
            "serial",
            "terminal",
            "echo",
            "test",
        ]))?;
    let core = std::fs::read(&core)?;
    ensure!(
        core.len() <= 2047 * 512,
        "core.img ({} bytes) does not fit before sector 2048",
        core.len()
    );
    // diskboot's blocklist (end of core.img's first sector) must say: from sector 2.
    ensure!(
        core.get(0x1f4..0x1fc) == Some(&2u64.to_le_bytes()[..]),
        "unexpected core.img blocklist"
    );
    let mut boot =
        std::fs::read("/usr/lib/grub/i386-pc/boot.img").context("boot.img (grub-pc-bin)")?;
    ensure!(boot.len() == 512, "boot.img is not one sector");
    boot[0x66] = 0x90;
    boot[0x67] = 0x90;
    ensure!(
        boot[0x5c..0x64] == 1u64.to_le_bytes(),
        "unexpected boot.img kernel sector"
    );
    image::patch(img, 0, &boot[..440])?;
    image::patch(img, 512, &core)?;
    Ok(())
}

fn names() -> String {
    LAYOUTS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which disk bus a boot uses.
#[derive(Debug, Clone, Copy)]
enum Bus {
    Virtio,
    Nvme,
}

/// What the probe printed.
#[derive(Debug, Default)]
struct Probe {
    target: String,
    root: String,
    swap: String,
    nics: Vec<(String, String)>,
}

/// Boot `img` under qemu. `snapshot=on`: the guest's writes go to a
/// temporary overlay, so a boot never changes the image (an unfixed LVM
/// guest mounts its root and would leave its journal needing recovery, and
/// the fixup refuses such a volume).
///
/// The console (kernel, systemd) goes to `log`; the probe writes to the
/// guest's second serial port, a file of its own (`log` with `.probe`
/// appended), so a kernel message printed in the middle of a probe line
/// cannot break the markers the verdict depends on.
///
/// `must_fail`: a boot that must fail counts as hung once any device job
/// has run [`MUST_FAIL_HANG`]; one that must pass once a job without time
/// limit has run [`MUST_PASS_HANG`] (see [`waits_for_a_device`]).
fn boot(
    img: &Path,
    bus: Bus,
    log: &Path,
    limit: Duration,
    must_fail: bool,
) -> Result<Option<Probe>> {
    let hang = if must_fail {
        MUST_FAIL_HANG
    } else {
        MUST_PASS_HANG
    };
    let drive = match bus {
        Bus::Virtio => vec![format!(
            "file={},format=raw,if=virtio,snapshot=on",
            img.display()
        )],
        Bus::Nvme => vec![
            format!(
                "file={},format=raw,if=none,id=d0,snapshot=on",
                img.display()
            ),
            "-device".into(),
            "nvme,drive=d0,serial=vmie0".into(),
        ],
    };
    let out = std::fs::File::create(log)?;
    let probe_log = probe_path(log);
    let _ = std::fs::remove_file(&probe_log);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-drive",
        ])
        .args(&drive)
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-serial",
            "mon:stdio",
            "-serial",
        ])
        .arg(format!("file:{}", probe_log.display()))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let t0 = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let probe = std::fs::read_to_string(&probe_log).unwrap_or_default();
        // The unfixed guest ends in the initramfs shell: no need to wait it
        // out. Once the probe has said everything, the guest's power-off is
        // not waited for either (an emulated NVMe disk under TCG once timed
        // out I/O during shutdown and held the boot to the time limit).
        if t0.elapsed() > limit
            || probe.contains("VMIE-PROBE-END")
            || text.contains("Dropping to a shell")
            || text.contains("Kernel panic")
            || text.contains("You are in emergency mode")
            || text.contains("Entering emergency mode")
            || waits_for_a_device(&text, hang, must_fail)
        {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = String::from_utf8_lossy(&std::fs::read(&probe_log).unwrap_or_default()).into_owned();
    Ok(parse_probe(&text))
}

/// Whether systemd shows a device job that has run for `hang` or longer
/// and has no time limit (or, with `limited_too`, any device job):
/// dracut's initramfs waits for the root device that way (`Job
/// dev-sda1.device/start running (1min 2s / no limit)`, a long unit name
/// cut short with `…`) and never gives up, where initramfs-tools drops to
/// a shell. A disk the kernel can drive shows up about 5 s after the job
/// starts, even under TCG, so a boot that must fail need not wait out
/// systemd's 90 s limit for an fstab device that is not there (`(31s /
/// 1min 30s)`: the job ends in emergency mode).
fn waits_for_a_device(console: &str, hang: Duration, limited_too: bool) -> bool {
    console.match_indices("start running (").any(|(at, m)| {
        let before = &console[..at];
        let job = before.rfind("Job ").map(|j| &before[j..]);
        let rest = console.get(at + m.len()..).unwrap_or("");
        let Some(ran) = rest.split(')').next().and_then(|s| {
            if limited_too {
                s.split(" / ").next()
            } else {
                s.strip_suffix(" / no limit")
            }
        }) else {
            return false;
        };
        // "1min 2s", "45s", "2min"
        let secs: u64 = ran
            .split_whitespace()
            .map(|t| {
                if let Some(n) = t.strip_suffix("min") {
                    n.parse::<u64>().unwrap_or(0) * 60
                } else if t.ends_with("ms") {
                    0
                } else {
                    t.strip_suffix('s')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                }
            })
            .sum();
        job.is_some_and(|j| j.starts_with("Job dev-") && j.len() < 80 && !j.contains('\n'))
            && secs >= hang.as_secs()
    })
}

/// A boot that must fail (no driver for its root disk) counts as hung once
/// a device job without time limit has run this long: six times what the
/// root disk takes to show up when its driver is there.
const MUST_FAIL_HANG: Duration = Duration::from_secs(30);
/// The same for a boot that must pass: more patience, as a false hang
/// fails the test (a real one would run into the time limit anyway).
const MUST_PASS_HANG: Duration = Duration::from_secs(90);

/// Where [`boot`] has the probe's serial port written.
fn probe_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".probe");
    PathBuf::from(p)
}

/// The last `n` lines of a serial log, for a failure message.
fn log_tail(log: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the probe printed on the serial console, if it got to the end.
fn parse_probe(text: &str) -> Option<Probe> {
    if !text.contains("VMIE-PROBE-END") {
        return None;
    }
    let mut p = Probe::default();
    for l in text.lines() {
        // The serial console is shared with getty, whose "login:" prompt can
        // land in front of a probe line: look for the marker anywhere.
        let Some(rest) = l
            .find("VMIE-PROBE ")
            .and_then(|at| l.get(at + "VMIE-PROBE ".len()..))
        else {
            continue;
        };
        if let Some(v) = rest.strip_prefix("target: ") {
            p.target = v.trim().to_string();
        } else if let Some(v) = rest.strip_prefix("root: ") {
            p.root = v.trim().to_string();
        } else if let Some(v) = rest.strip_prefix("swap: ") {
            p.swap = v.trim().to_string();
        } else if let Some(v) = rest.strip_prefix("nic: ") {
            let mut w = v.split_whitespace();
            p.nics.push((
                w.next().unwrap_or("").to_string(),
                w.next().unwrap_or("").to_string(),
            ));
        }
    }
    Some(p)
}

fn passes(p: &Option<Probe>, want_swap: bool) -> Result<(), String> {
    let Some(p) = p else {
        return Err("the guest never reached the probe (no multi-user boot)".into());
    };
    if p.target != "active" {
        return Err(format!("multi-user.target is {}", p.target));
    }
    if p.root.is_empty() {
        return Err("root not mounted".into());
    }
    if want_swap && p.swap.is_empty() {
        return Err("swap not active".into());
    }
    if !p.nics.iter().any(|(_, a)| a.starts_with("10.0.2.")) {
        return Err(format!("no NIC got a DHCP address: {:?}", p.nics));
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    ensure!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `cargo xtask guest NAME...`
pub fn guest(args: &[String]) -> Result<()> {
    ensure!(
        !args.is_empty(),
        "usage: cargo xtask guest NAME...  (NAME: {})",
        names()
    );
    for a in args {
        build(a)?;
    }
    Ok(())
}

/// What a queued boot must show.
enum Expect {
    /// It must not boot: `label` names the case in the output, `booted_means`
    /// is the failure when it boots after all.
    Fail {
        label: &'static str,
        booted_means: &'static str,
    },
    /// It must boot (a second try is given when the first fails).
    Pass,
}

/// One qemu boot of the boot test.
struct BootJob {
    name: String,
    img: PathBuf,
    bus: Bus,
    /// The serial log, `LOG` (`LOG.N.log` per try for a boot that must pass).
    log: PathBuf,
    expect: Expect,
    want_swap: bool,
    /// An image only this boot uses, removed (with its journals) after it.
    remove_after: bool,
}

/// Run `job`; the outcome is printed as `boot-test NAME: ...`, and what
/// went wrong is returned.
fn run_boot_job(job: &BootJob, limit: Duration) -> Vec<String> {
    let name = &job.name;
    let mut failures = Vec::new();
    match &job.expect {
        Expect::Fail {
            label,
            booted_means,
        } => {
            let t = Instant::now();
            match boot(&job.img, job.bus, &job.log, limit, true) {
                Ok(p) => {
                    let booted = passes(&p, job.want_swap).is_ok();
                    println!(
                        "boot-test {name}: {label}: {} ({:.0}s)",
                        if booted {
                            "BOOTED (unexpected)"
                        } else {
                            "fails, as it must"
                        },
                        t.elapsed().as_secs_f64()
                    );
                    if booted {
                        failures.push(format!("{name}: {booted_means}"));
                    }
                }
                Err(e) => failures.push(format!("{name}: {label}: {e:#}")),
            }
        }
        Expect::Pass => {
            let bus = job.bus;
            // A boot under TCG is not deterministic (timers, interrupt
            // order): a fixed guest gets a second boot when the first one
            // fails, with the first one's console tail printed, so a broken
            // fix still fails (twice) and a one-off stall is visible.
            for attempt in 1..=2 {
                let t = Instant::now();
                let mut log = job.log.as_os_str().to_owned();
                log.push(format!(".{attempt}.log"));
                let log = PathBuf::from(log);
                let p = match boot(&job.img, bus, &log, limit, false) {
                    Ok(p) => p,
                    Err(e) => {
                        failures.push(format!("{name} on {bus:?}: {e:#}"));
                        break;
                    }
                };
                let secs = t.elapsed().as_secs_f64();
                match passes(&p, job.want_swap) {
                    Ok(()) => {
                        println!(
                            "boot-test {name}: fixed on {bus:?}: boots ({secs:.0}s{}) {:?}",
                            if attempt > 1 {
                                ", on the second boot"
                            } else {
                                ""
                            },
                            p.as_ref().map(|p| (&p.root, &p.swap, &p.nics))
                        );
                        break;
                    }
                    Err(why) => {
                        println!(
                            "boot-test {name}: fixed on {bus:?}: FAILED on boot {attempt} of 2 after {secs:.0}s: {why}\n  last console lines ({}):\n{}",
                            log.display(),
                            log_tail(&log, 40)
                        );
                        if attempt == 2 {
                            failures.push(format!("{name} on {bus:?}: {why}"));
                        }
                    }
                }
            }
        }
    }
    if job.remove_after {
        if let Err(e) = remove_with_journals(&job.img) {
            failures.push(format!("{name}: removing {}: {e:#}", job.img.display()));
        }
    }
    failures
}

/// qemu boots run at the same time: one per core (each TCG guest is one
/// busy thread), at most two, or `VMIE_BOOT_JOBS`.
fn boot_jobs() -> usize {
    if let Some(n) = std::env::var("VMIE_BOOT_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.max(1);
    }
    std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1)
}

/// `cargo xtask boot-test NAME...`: the unfixed guest must fail to boot on
/// virtio; fixed, it must boot on virtio and on NVMe.
///
/// The layouts are built and fixed one after another on this thread; each
/// boot is queued as soon as its image is ready and run by one of
/// `boot_jobs()` workers, so the boots of one layout overlap the build of
/// the next and each other.
pub fn boot_test(args: &[String]) -> Result<()> {
    let args = args.to_vec();
    let names: Vec<String> = if args.is_empty() {
        LAYOUTS.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        args
    };
    let root = fixtures::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "vmie-fixup",
    ]))?;
    // Where cargo put it (CARGO_TARGET_DIR when set).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/vmie-fixup");
    let limit = Duration::from_secs(300);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let fail = |f: String| {
        if let Ok(mut v) = failures.lock() {
            v.push(f);
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<BootJob>();
    let rx = std::sync::Mutex::new(rx);
    let t0 = Instant::now();
    let built = std::thread::scope(|scope| -> Result<()> {
        for _ in 0..boot_jobs() {
            scope.spawn(|| loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                for f in run_boot_job(&job, limit) {
                    fail(f);
                }
            });
        }
        // The workers end when the queue is closed and empty: on every way
        // out of this closure, `tx` is dropped with it.
        let tx = tx;
        for name in &names {
            let unfixed = build(name)?;
            let dir = root.join("target/guests");
            let want_swap = name != "mbr-ext4";
            let job =
                |img: &Path, bus: Bus, log: String, expect: Expect, remove_after: bool| BootJob {
                    name: name.clone(),
                    img: img.to_path_buf(),
                    bus,
                    log: dir.join(log),
                    expect,
                    want_swap,
                    remove_after,
                };
            let queue = |j: BootJob| tx.send(j).context("the boot workers are gone");
            queue(job(
                &unfixed,
                Bus::Virtio,
                format!("{name}.unfixed-virtio.log"),
                Expect::Fail {
                    label: "unfixed on virtio",
                    booted_means: "the unfixed guest booted, so the test proves nothing",
                },
                false,
            ))?;
            let host_only = matches!(name.as_str(), "hostonly" | "dracut-hostonly");
            if name == "dracut-hostonly" {
                // dracut's image has no NVMe driver either.
                queue(job(
                    &unfixed,
                    Bus::Nvme,
                    format!("{name}.unfixed-nvme.log"),
                    Expect::Fail {
                        label: "unfixed on NVMe",
                        booted_means:
                            "the unfixed guest booted on NVMe, so the test proves nothing",
                    },
                    false,
                ))?;
            }
            let fixed = dir.join(format!("{name}.fixed.raw"));
            fresh_copy(&unfixed, &fixed)?;
            let t1 = Instant::now();
            run(Command::new(&bin).arg(&fixed).stdout(Stdio::null()))?;
            println!(
                "boot-test {name}: vmie-fixup took {:.0} ms",
                t1.elapsed().as_secs_f64() * 1e3
            );
            if host_only {
                let check = dir.join(format!("{name}.check"));
                match check_injected(&fixed, &check, name == "dracut-hostonly") {
                    Ok(msg) => println!("boot-test {name}: {msg}"),
                    Err(e) => fail(format!("{name}: the fixed initramfs: {e:#}")),
                }
                // Every other fix, but not the drivers: it must still fail on
                // NVMe, so the injected drivers are what makes it boot there.
                let partial = fixed_without_drivers(&bin, name, &unfixed, &dir, &root)?;
                queue(job(
                    &partial,
                    Bus::Nvme,
                    format!("{name}.nodrivers-nvme.log"),
                    Expect::Fail {
                        label: "fixed without the driver rule on NVMe",
                        booted_means:
                            "it boots on NVMe without the injected drivers, so the test proves nothing",
                    },
                    true,
                ))?;
            }
            for bus in [Bus::Virtio, Bus::Nvme] {
                queue(job(
                    &fixed,
                    bus,
                    format!("{name}.fixed-{bus:?}").to_lowercase(),
                    Expect::Pass,
                    false,
                ))?;
            }
        }
        Ok(())
    });
    let failures = failures.into_inner().unwrap_or_default();
    built?;
    if !failures.is_empty() {
        bail!(
            "boot test failed (serial logs in target/guests/):\n  {}",
            failures.join("\n  ")
        );
    }
    println!(
        "boot-test: {} passed, 0 failed ({:.0}s, {} boots at a time)",
        names.len(),
        t0.elapsed().as_secs_f64(),
        boot_jobs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_survive_a_getty_prompt_in_front() {
        let log = "VMIE-PROBE-BEGIN\nVMIE-PROBE target: active\nVMIE-PROBE root: /dev/vda1\nVMIE-PROBE swap: /dev/vda5 \nvmie-guest login: VMIE-PROBE nic: eth0 10.0.2.15/24\nVMIE-PROBE-END\n";
        let p = parse_probe(log);
        assert!(passes(&p, true).is_ok(), "{p:?}");
        assert!(
            parse_probe("VMIE-PROBE target: active\n").is_none(),
            "no END, no probe"
        );
        let p = parse_probe("VMIE-PROBE target: active\nVMIE-PROBE root: /dev/vda1\nVMIE-PROBE swap: \nVMIE-PROBE-END\n");
        assert!(passes(&p, false).is_err(), "no NIC address");
    }

    #[test]
    fn a_device_job_without_limit_after_a_minute_is_a_hang() {
        let line = |t: &str| {
            format!("\x1b[K[\x1b[0;31m*  \x1b[0m] Job dev-sda1.device/start running ({t} / no limit)\r\n")
        };
        let min = Duration::from_secs(60);
        assert!(!waits_for_a_device(&line("59s"), min, false));
        assert!(waits_for_a_device(&line("59s"), MUST_FAIL_HANG, false));
        assert!(!waits_for_a_device(&line("29s"), MUST_FAIL_HANG, false));
        assert!(waits_for_a_device(&line("1min 2s"), min, false));
        assert!(waits_for_a_device(&line("2min"), min, false));
        assert!(waits_for_a_device(
            "Job dev-disk-by\\x2duuid-7e570001\\x2…start running (3min 9s / no limit)",
            min,
            false
        ));
        assert!(!waits_for_a_device(
            "A start job is running for /dev/sdb1 (1min 2s / 1min 30s)",
            min,
            false
        ));
        assert!(!waits_for_a_device(
            "Job dev-sdb1.device/start running (1min 2s / 1min 30s)",
            min,
            false
        ));
        // A boot that must fail also counts a device job with a time limit
        // (systemd's 90 s for an fstab device) once it has run `hang`.
        let limited = "(2 of 2) Job dev-sda1.device/start running (31s / 1min 30s)\r\n";
        assert!(waits_for_a_device(limited, MUST_FAIL_HANG, true));
        assert!(!waits_for_a_device(limited, MUST_FAIL_HANG, false));
        assert!(!waits_for_a_device(
            "Job dev-sda1.device/start running (29s / 1min 30s)",
            MUST_FAIL_HANG,
            true
        ));
    }
}
