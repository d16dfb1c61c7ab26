//! Preflight: will the import service take this VM?
//!
//! Every requirement and limitation of the import service's user guide that
//! can be seen offline becomes a check with an id, a severity and, where the
//! guide has one, the service's own wording. `error` means the import would
//! fail, so a fixup run writes nothing and exits 1.

use serde::Serialize;
use vmie_part::TableKind;
use vmie_probe::FsKind;
use vmie_rules::boot::compare_versions;
use vmie_rules::engine::Severity;

use vmie_guestfs::GuestPath;

use crate::{LinuxGuest, Vm, WindowsGuest};

/// Why the boot disk (the first image) is not a disk image at all: no
/// partition table and no filesystem recognised on it. Data disks may be
/// blank; a boot disk cannot be.
pub fn not_a_disk_image(vm: &Vm) -> Option<String> {
    let d = vm.layouts().first()?;
    if d.table != TableKind::None {
        return None;
    }
    if d.volumes
        .iter()
        .any(|v| v.probe.is_some() || v.probe_error.is_some())
    {
        return None;
    }
    Some(format!(
        "{}: not a disk image: no partition table and no filesystem recognised",
        d.path.display()
    ))
}

/// One check that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id, e.g. `gpt-root`.
    pub id: &'static str,
    /// error, warning or info.
    pub severity: Severity,
    /// What and why, in the service's words where it has them.
    pub message: String,
}

fn check(out: &mut Vec<Check>, id: &'static str, severity: Severity, message: impl Into<String>) {
    out.push(Check {
        id,
        severity,
        message: message.into(),
    });
}

const TIB: u64 = 1 << 40;

/// A version as (major, minor).
type Version = (u32, u32);

/// The documented Linux versions: (distro, from, to), inclusive.
const SUPPORTED: &[(&str, Version, Version)] = &[
    ("amazonlinux", (2, 0), (2, 99)),
    ("centos", (5, 1), (5, 11)),
    ("centos", (6, 1), (6, 8)),
    ("centos", (7, 0), (7, 9)),
    ("centos", (8, 0), (8, 2)),
    ("debian", (6, 0), (6, 0)),
    ("debian", (7, 0), (7, 8)),
    ("debian", (8, 0), (8, 0)),
    ("fedora", (19, 0), (21, 0)),
    ("oraclelinux", (5, 10), (5, 11)),
    ("oraclelinux", (6, 1), (6, 10)),
    ("oraclelinux", (7, 0), (7, 6)),
    ("rhel", (5, 1), (5, 11)),
    ("rhel", (6, 1), (6, 9)),
    ("rhel", (7, 0), (7, 9)),
    ("rhel", (8, 0), (8, 2)),
    ("sles", (11, 1), (11, 4)),
    ("sles", (12, 0), (12, 3)),
    ("ubuntu", (12, 4), (12, 4)),
    ("ubuntu", (12, 10), (12, 10)),
    ("ubuntu", (13, 4), (13, 4)),
    ("ubuntu", (13, 10), (13, 10)),
    ("ubuntu", (14, 4), (14, 4)),
    ("ubuntu", (14, 10), (14, 10)),
    ("ubuntu", (15, 4), (15, 4)),
    ("ubuntu", (16, 4), (16, 4)),
    ("ubuntu", (16, 10), (16, 10)),
    ("ubuntu", (17, 4), (17, 4)),
    ("ubuntu", (18, 4), (18, 4)),
    ("ubuntu", (20, 4), (20, 4)),
];

/// Whether a kernel version looks like the distribution's own build.
fn distribution_kernel(distro: &str, version: &str) -> bool {
    match distro {
        "rhel" | "centos" | "oraclelinux" | "rocky" | "almalinux" | "scientificlinux" => {
            version.contains(".el") || version.contains("uek")
        }
        "fedora" => version.contains(".fc"),
        "amazonlinux" => version.contains(".amzn"),
        "debian" => ["-amd64", "-686", "-cloud-amd64", "-rt-amd64", "-arm64"]
            .iter()
            .any(|s| version.ends_with(s)),
        "ubuntu" => [
            "-generic",
            "-aws",
            "-virtual",
            "-server",
            "-lowlatency",
            "-kvm",
            "-azure",
            "-gcp",
        ]
        .iter()
        .any(|s| version.ends_with(s)),
        "sles" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => {
            version.ends_with("-default") || version.ends_with("-xen")
        }
        _ => true,
    }
}

/// Free bytes of an ext2/3/4 filesystem from its superblock.
fn ext_free_bytes(vm: &Vm, root: &str) -> Option<u64> {
    let vol = vm.volumes().find(|v| v.name == root)?;
    let mut sb = [0u8; 1024];
    vol.device.read_at(1024, &mut sb).ok()?;
    let le32 = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    let log = le32(0x18);
    if log > 6 {
        return None;
    }
    let mut free = le32(0x0C);
    if le32(0x60) & 0x80 != 0 {
        free |= le32(0x158) << 32;
    }
    free.checked_mul(1024 << log)
}

/// Run every check on a VM and the guests found on it.
pub fn preflight(
    vm: &Vm,
    guests: &[Result<LinuxGuest, String>],
    windows_guests: &[Result<WindowsGuest, String>],
) -> Vec<Check> {
    use Severity::{Error, Info, Warning};
    let mut out = Vec::new();
    let no_guest = guests.is_empty() && windows_guests.is_empty();
    // Volumes recognised but not read, when no guest was found: the likely
    // reason none was.
    let mut causes: Vec<String> = Vec::new();

    // Disks and volumes.
    let disks = vm.layouts();
    if disks.len() > 21 {
        check(
            &mut out,
            "too-many-volumes",
            Error,
            format!(
                "A VM import task fails for VMs with more than 21 volumes attached ({} given)",
                disks.len()
            ),
        );
    }
    for (i, d) in disks.iter().enumerate() {
        if i == 0 && d.size > 2 * TIB {
            check(
                &mut out,
                "boot-volume-over-2tib",
                Error,
                format!(
                    "{}: boot volume cannot exceed 2 TiB (uncompressed) due to MBR limitations",
                    d.path.display()
                ),
            );
        }
        if i > 0 && d.table == TableKind::Gpt && d.size > 16 * TIB {
            check(
                &mut out,
                "gpt-data-volume-over-16tib",
                Error,
                format!(
                    "{}: non-bootable GPT volumes cannot be bigger than 16 TiB",
                    d.path.display()
                ),
            );
        }
        if d.size > 4 * TIB {
            check(&mut out, "disk-over-4tib", Info, format!("{}: disks larger than 4 TiB need a manifest file when imported through the API", d.path.display()));
        }
    }
    for v in vm.volumes() {
        if let Some(p) = &v.probe {
            match p.kind {
                FsKind::Luks | FsKind::Bitlocker => check(
                    &mut out,
                    "encrypted-volume",
                    Warning,
                    format!(
                        "{}: encrypted ({}); its contents cannot be inspected or fixed",
                        v.name,
                        p.kind.as_str()
                    ),
                ),
                _ => {}
            }
            if crate::readable(p.kind) {
                // Opening reads little (the superblock); when no guest was
                // found, read the root directory too, so a volume that opens
                // but cannot be read (a bad checksum) is named as the cause.
                let unreadable = match vm.open_fs(v) {
                    Err(e) => Some(e.to_string()),
                    Ok(fs) if no_guest => {
                        fs.read_dir(&GuestPath::root()).err().map(|e| e.to_string())
                    }
                    Ok(_) => None,
                };
                if let Some(e) = unreadable {
                    // The error usually names the volume already.
                    let why = e
                        .strip_prefix(&format!("{}: ", v.name))
                        .unwrap_or(&e)
                        .to_string();
                    check(&mut out, "volume-unreadable", Warning, format!("{}: {} could not be read, so it was neither inspected nor fixed: {why}", v.name, p.kind.as_str()));
                    causes.push(format!(
                        "{} ({}) could not be read: {why}",
                        v.name,
                        p.kind.as_str()
                    ));
                }
            }
            if no_guest {
                match p.kind {
                    FsKind::Btrfs => causes.push(format!(
                        "{} holds {}, which vmie-fixup cannot read yet",
                        v.name,
                        crate::other_name(p.kind)
                    )),
                    FsKind::Luks | FsKind::Bitlocker => {
                        causes.push(format!("{} is encrypted ({})", v.name, p.kind.as_str()))
                    }
                    _ => {}
                }
            }
            if p.state.needs_recovery || p.state.dirty || p.state.errors || p.state.hibernated {
                check(&mut out, "volume-not-clean", Warning, format!("{}: {} needs recovery, is dirty, has errors or is hibernated; vmie-fixup will not write to it", v.name, p.kind.as_str()));
            }
        }
    }

    lvm_checks(&mut out, vm, no_guest, &mut causes);

    if !causes.is_empty() {
        // First, so it is what a user reads before "No bootable partition found".
        check(
            &mut out,
            "root-unreadable",
            Error,
            format!(
                "no guest operating system found, and the root filesystem may be on a volume vmie-fixup could not read: {}",
                causes.join("; ")
            ),
        );
        out.rotate_right(1);
    }

    // The guests.
    let linux: Vec<&LinuxGuest> = guests.iter().flatten().collect();
    for e in guests.iter().filter_map(|g| g.as_ref().err()) {
        check(
            &mut out,
            "inspection-failed",
            Error,
            format!("a Linux root could not be inspected: {e}"),
        );
    }
    for e in windows_guests.iter().filter_map(|g| g.as_ref().err()) {
        check(
            &mut out,
            "inspection-failed",
            Error,
            format!("a Windows system volume could not be inspected: {e}"),
        );
    }
    let windows: Vec<&WindowsGuest> = windows_guests.iter().flatten().collect();
    let unread: Vec<String> = vm
        .volumes()
        .filter_map(|v| {
            let p = v.probe.as_ref()?;
            matches!(p.kind, FsKind::Btrfs).then(|| format!("{} ({})", v.name, p.kind.as_str()))
        })
        .collect();
    if !unread.is_empty() {
        check(
            &mut out,
            "volume-not-read",
            Info,
            format!(
                "not inspected (reading this filesystem is not implemented yet): {}",
                unread.join(", ")
            ),
        );
    }
    match (linux.len(), windows.len()) {
        (0, 0) if guests.is_empty() && windows_guests.is_empty() => check(
            &mut out,
            "no-bootable-partition",
            Error,
            "No bootable partition found: no Linux root filesystem (one with /etc, /bin and /etc/fstab or /etc/hosts) and no Windows system volume (\\Windows\\System32\\config with SYSTEM and SOFTWARE) on a volume vmie-fixup can read",
        ),
        (n, _) if n > 1 => check(
            &mut out,
            "multiple-directories",
            Error,
            format!("Unsupported configuration - Multiple directories found: {n} Linux root filesystems (multi-boot or several /etc)"),
        ),
        (0, n) if n > 1 => check(
            &mut out,
            "multiple-windows",
            Error,
            format!("{n} Windows system volumes: importing VMs with multi-boot configurations is not supported"),
        ),
        (l, w) if l > 0 && w > 0 => check(&mut out, "dual-boot", Error, format!("Importing VMs with dual-boot configurations is not supported: Linux on {} and Windows on {}", linux[0].root, windows[0].root)),
        _ => {}
    }
    for w in &windows {
        windows_checks(&mut out, vm, w);
    }
    for g in linux {
        let i = &g.info;
        lvm_config_checks(&mut out, g);
        let root = vm.volumes().find(|v| v.name == g.root);
        if let Some(r) = root {
            if let Some(l) = r.lv.as_ref().filter(|l| l.pv_disks.len() > 1) {
                check(&mut out, "lvm-root-spans-disks", Warning, format!("the root logical volume {}/{} spans {} disks (disks {}): import them together, boot disk first, or the volume group cannot be activated", l.vg, l.lv, l.pv_disks.len(), l.pv_disks.iter().map(|d| (d + 1).to_string()).collect::<Vec<_>>().join(", ")));
            }
            if r.disk != 0 {
                check(&mut out, "root-not-on-boot-disk", Warning, format!("An imported VM may fail to boot if the root partition is not on the same virtual hard drive as the MBR ({} is on disk {})", g.root, r.disk + 1));
            }
            if vm
                .layouts()
                .get(r.disk)
                .is_some_and(|d| d.table == TableKind::Gpt)
            {
                check(&mut out, "gpt-root", Error, format!("No bootable partition found: the root volume ({}) is GUID Partition Table (GPT) partitioned. GPT partitioned volumes are not supported. Convert the root volume to an MBR partition", g.root));
            }
        }
        if i.fstab.is_empty() {
            check(
                &mut out,
                "fstab-unreadable",
                Error,
                "Invalid configuration - Could not read fstab",
            );
        }
        if let Some(root_entry) = i.fstab.iter().find(|e| e.mountpoint == "/") {
            if !["ext2", "ext3", "ext4", "xfs", "btrfs", "jfs", "auto"]
                .contains(&root_entry.fstype.as_str())
            {
                check(&mut out, "root-filesystem", Error, format!("the root filesystem is {}; Linux volumes must be ext2, ext3, ext4, Btrfs, JFS or XFS", root_entry.fstype));
            }
        }
        if i.fstab
            .iter()
            .any(|e| e.fstype == "btrfs" && e.options.split(',').any(|o| o.starts_with("subvol")))
        {
            check(
                &mut out,
                "btrfs-subvolumes",
                Error,
                "Btrfs subvolumes are not supported",
            );
        }
        match i.arch.as_deref() {
            Some("i386" | "i486" | "i586" | "i686" | "armv7l" | "arm") => check(&mut out, "linux-32bit", Error, format!("Imported Linux VMs must use 64-bit images. Migrating 32-bit Linux images is not supported ({})", i.arch.as_deref().unwrap_or(""))),
            None => check(&mut out, "arch-unknown", Info, "the architecture could not be read from /bin/sh; 32-bit images are not supported"),
            _ => {}
        }
        let v = (i.major_version, i.minor_version);
        let listed = SUPPORTED
            .iter()
            .any(|(d, lo, hi)| *d == i.distro && v >= *lo && v <= *hi);
        if !listed {
            check(&mut out, "os-not-listed", Warning, format!("{} {}.{} is not in the import service's list of supported Linux versions; newer releases often work", i.distro, i.major_version, i.minor_version));
        }
        for k in &i.kernels {
            if !distribution_kernel(&i.distro, &k.version) {
                check(&mut out, "custom-kernel", Warning, format!("kernel {} does not look like a {} kernel: Imported Linux VMs should use default kernels for best results. VMs that use custom Linux kernels might not migrate successfully", k.version, i.distro));
            }
        }
        if i.kernels.len() > 1 {
            if let Some(newest) = i.kernels.iter().map(|k| k.version.as_str()).reduce(|a, b| {
                if compare_versions(b, a).is_gt() {
                    b
                } else {
                    a
                }
            }) {
                if i.default_kernel.as_deref().is_some_and(|d| d != newest) {
                    check(&mut out, "default-not-newest", Info, format!("the boot loader boots {} by default, not the newest installed kernel {newest}; the grub rule changes that", i.default_kernel.as_deref().unwrap_or("")));
                }
            }
        }
        if matches!(i.firmware, vmie_os::Firmware::Uefi) {
            check(&mut out, "uefi-linux", Error, "UEFI/EFI boot partitions are supported only for Windows boot volumes; a Linux VM's boot volume must use MBR partitions and BIOS boot");
        }
        match i.bootloader.kind.as_deref() {
            Some("grub2" | "grub" | "bls") => {}
            other => check(&mut out, "bootloader-not-grub", Warning, format!("boot loader {} is not GRUB or GRUB 2; the import service edits GRUB settings only", other.unwrap_or("not found"))),
        }
        if i.agents.dhcp_clients.is_empty() {
            check(&mut out, "no-dhcp-client", Warning, "no DHCP client found: After import, your VM has a single virtual network interface that uses DHCP to assign addresses");
        }
        if !i.agents.ssh.installed {
            check(
                &mut out,
                "no-sshd",
                Warning,
                "no SSH server installed: you may not be able to log in to the instance",
            );
        } else if !i.agents.ssh.enabled {
            check(
                &mut out,
                "sshd-disabled",
                Warning,
                "the SSH server is installed but not enabled at boot",
            );
        }
        if i.agents.vmware_tools {
            check(&mut out, "vmware-tools", Warning, "VMware Tools are installed; uninstall them before import, they do not work in the cloud");
        }
        let nics = i
            .network
            .interfaces
            .iter()
            .filter(|n| !matches!(n.method, vmie_os::NetMethod::Loopback))
            .count();
        if nics > 1 {
            check(&mut out, "multiple-nics", Info, format!("{nics} network interfaces configured: Multiple network interfaces are not currently supported. After import, your VM has a single virtual network interface that uses DHCP"));
        }
        if let Some(free) = ext_free_bytes(vm, &g.root) {
            if free < 256 << 20 {
                check(&mut out, "low-free-space", Warning, format!("{} MiB free on the root volume; make sure that there is sufficient disk space available on the root volume for installing drivers and other software", free >> 20));
            }
        }
        check(&mut out, "license", Info, "license type: Linux supports only BYOL; Auto picks BYOL, and AWS is not valid for Linux");
    }
    out
}

/// 6 GiB: "ensure that there is at least 6 GiB of free space available on
/// the root volume".
const WINDOWS_MIN_FREE: u64 = 6 << 30;

/// The checks of one Windows guest.
fn windows_checks(out: &mut Vec<Check>, vm: &Vm, w: &WindowsGuest) {
    use Severity::{Error, Info, Warning};
    let i = &w.info;
    let facts = vmie_win::preflight_facts(i);
    let name = i
        .release
        .clone()
        .or_else(|| i.product_name.clone())
        .unwrap_or_else(|| "Windows".into());
    match &facts.support {
        vmie_win::Support::Supported { .. } => {}
        vmie_win::Support::NotListed { reason } => check(
            out,
            "windows-not-listed",
            Warning,
            format!("{name} is not in the import service's list of supported Windows versions: {reason}"),
        ),
        vmie_win::Support::Unknown { reason } => check(
            out,
            "windows-version-unknown",
            Warning,
            format!("the Windows version could not be determined: {reason}"),
        ),
    }
    if w.volume.free_bytes < WINDOWS_MIN_FREE {
        check(out, "windows-low-free-space", Error, format!("{}: {} MiB free; ensure that there is at least 6 GiB of free space available on the root volume", w.root, w.volume.free_bytes >> 20));
    }
    let root = vm.volumes().find(|v| v.name == w.root);
    let state = root
        .and_then(|v| v.probe.as_ref())
        .map(|p| p.state.clone())
        .unwrap_or_default();
    if state.hibernated {
        check(out, "windows-hibernated", Error, format!("{}: Windows is hibernated (or shut down with Fast Startup); shut down your VM before exporting it (shutdown /s /f, with Fast Startup off)", w.root));
    } else if state.dirty || w.volume.dirty {
        check(out, "windows-dirty", Error, format!("{}: the NTFS volume is marked dirty (not shut down cleanly); shut down your VM before exporting it", w.root));
    }
    if facts.pagefile_automatic == Some(true) {
        check(out, "windows-pagefile-automatic", Warning, "For Microsoft Windows VMs, configure a fixed pagefile size: Windows is configured to \"Automatically manage paging file size for all drives\", and it might create 16 GB pagefile.sys files on the C drive of the instance");
    }
    if facts.install_language_en_us == Some(false) {
        check(out, "windows-language", Warning, format!("install language {}: Windows language packs that use UTF-16 (or non-ASCII) characters are not supported for import. We recommend using the English language pack when importing Windows VMs", i.install_language_tag.clone().or_else(|| i.install_language.clone()).unwrap_or_default()));
    }
    if facts.dotnet_3_5_sp1_or_later == Some(false) {
        check(out, "windows-dotnet-35sp1", Error, "ClientError: Booter Networking failure/instance not reachable. Please retry after installation of .Net framework 3.5 SP1 or greater");
    } else if facts.dotnet_4_5_or_later == Some(false) {
        check(out, "windows-dotnet-45", Warning, "Install .NET Framework 4.5 or later on the VM (none found); the import service installs the .NET framework as needed");
    }
    if facts.rdp_enabled == Some(false) {
        check(out, "windows-rdp-disabled", Warning, "Remote Desktop is disabled (fDenyTSConnections); enable Remote Desktop (RDP) for remote access");
    }
    if i.hives.system && !i.drivers.iter().any(|d| d.name.eq_ignore_ascii_case("ena")) {
        check(out, "windows-ena-missing", Warning, "no Elastic Network Adapter driver (no Services\\ena in SYSTEM): Windows does not ship it, and on Nitro instances the guest has no network without it; install AWS's ENA driver in the VM before export, or let the import service install it");
    }
    if !facts.static_ip_interfaces.is_empty() {
        check(out, "windows-static-ip", Info, format!("{} interface(s) with static addresses: your source VM must have a functional DHCP client service; all static IP addresses currently assigned to the source VM are removed during import", facts.static_ip_interfaces.len()));
    }
    if facts.vmware_tools_installed == Some(true) {
        check(
            out,
            "windows-vmware-tools",
            Warning,
            "VMware Tools are installed; uninstall the VMware Tools from your VMware VM",
        );
    }
    if facts.ems_enabled == Some(true) {
        check(out, "windows-ems", Info, "Emergency Management Services (EMS) are enabled in the BCD store: VM Import/Export does not support EMS, and disables it in the imported image");
    }
    if !i.hives.system {
        check(out, "windows-system-unreadable", Warning, format!("{}: the SYSTEM hive could not be read, so RDP, pagefile, language, drivers, VMware Tools and static addresses were not checked", w.root));
    }
    if i.boot.is_none() {
        check(out, "windows-bcd-not-found", Info, "no readable BCD store (\\Boot\\BCD or \\EFI\\Microsoft\\Boot\\BCD on the Windows volume, a System Reserved volume or an EFI system partition): Emergency Management Services (EMS) were not checked");
    }
    if let Some(v) = root {
        if v.disk != 0 {
            check(out, "windows-not-on-boot-disk", Warning, format!("the Windows system volume ({}) is on disk {}, not on the boot disk given first", w.root, v.disk + 1));
        }
    }
    check(out, "license", Info, match i.is_server() {
        Some(true) => "license type: Windows server operating systems support either BYOL or AWS licenses; Auto picks AWS for this server OS",
        Some(false) => "license type: Windows client operating systems (such as Windows 10) support only BYOL licenses; Auto picks BYOL, and AWS is not valid",
        None => "license type: server or client could not be told: Windows server operating systems support either BYOL or AWS licenses (Auto picks AWS); client operating systems support only BYOL",
    });
}

/// LVM: groups with missing PVs, LVs that are not opened, damaged metadata.
/// The import service's own wording where it has one ("Logical volume
/// group activation failed").
fn lvm_checks(out: &mut Vec<Check>, vm: &Vm, no_guest: bool, causes: &mut Vec<String>) {
    use Severity::{Error, Warning};
    let lvm = vm.lvm();
    let sev = if no_guest { Error } else { Warning };
    for vg in &lvm.scan.vgs {
        if vg.missing.is_empty() {
            continue;
        }
        let names = vmie_lvm::describe_missing(&vg.missing);
        let msg = format!(
            "Unsupported configuration - Logical volume group activation failed: volume group {} ({}) is missing physical volume(s) {}; give every disk of the VM, boot disk first",
            vg.meta.name,
            vg.meta.uuid,
            names
        );
        if no_guest {
            causes.push(format!(
                "volume group {} is missing physical volume(s) {}",
                vg.meta.name, names
            ));
        }
        check(out, "lvm-missing-pv", sev, msg);
    }
    for (vg, lv, why) in &lvm.refused {
        if lvm
            .scan
            .vgs
            .iter()
            .any(|g| &g.meta.name == vg && !g.missing.is_empty())
        {
            continue; // named above
        }
        check(
            out,
            "lvm-unsupported",
            sev,
            format!("logical volume {vg}/{lv} is neither inspected nor fixed: {why}"),
        );
        if no_guest {
            causes.push(format!("logical volume {vg}/{lv} is not opened: {why}"));
        }
    }
    for p in &lvm.scan.problems {
        check(
            out,
            "lvm-metadata-damaged",
            sev,
            format!("Unsupported configuration - Logical volume group activation failed: {p}"),
        );
        if no_guest {
            causes.push(p.clone());
        }
    }
}

/// The guest's LVM configuration: a devices file (RHEL 9) and a filter that
/// name the source VM's disks hide the PVs after the move.
fn lvm_config_checks(out: &mut Vec<Check>, g: &LinuxGuest) {
    use vmie_guestfs::GuestFsExt;
    use Severity::{Info, Warning};
    if g.mounts
        .exists("/etc/lvm/devices/system.devices")
        .unwrap_or(false)
    {
        check(out, "lvm-devices-file", Info, "/etc/lvm/devices/system.devices names the source VM's disks by device id, so LVM would ignore the physical volumes after the move; the rule linux-lvm-devices-file sets it aside (as virt-v2v does), so LVM scans every disk. An initramfs built with the file keeps its own copy: if the root volume group does not activate, rebuild the initramfs (dracut -f) once booted");
    }
    let Ok(conf) = g.mounts.read("/etc/lvm/lvm.conf") else {
        return;
    };
    let conf = String::from_utf8_lossy(&conf);
    for line in conf.lines() {
        let l = line.trim_start();
        if l.starts_with('#') {
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key != "filter" && key != "global_filter" {
            continue;
        }
        let names_devices = ["/dev/sd", "/dev/vd", "/dev/xvd", "/dev/hd", "/dev/nvme"]
            .iter()
            .any(|d| value.contains(d));
        if names_devices {
            check(out, "lvm-filter-names-devices", Warning, format!("/etc/lvm/lvm.conf: `{}` names device nodes; in the cloud the disks get other names (/dev/nvme0n1, /dev/xvda), and LVM ignores physical volumes its filter rejects, so the root volume group may not activate: accept by a pattern that matches every disk, or remove the filter", l.trim()));
            return;
        }
    }
}
