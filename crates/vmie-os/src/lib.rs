//! virt-inspector-style inspection of one mounted Linux root filesystem.
//!
//! Everything here works on a `&dyn GuestFs` (see `vmie-guestfs`) and knows
//! nothing about disks. The guest is hostile: every file is read with a size
//! cap from [`InspectOptions`], every loop over guest data is bounded, and a
//! file that is missing, too large or malformed makes the corresponding field
//! unknown (and, where useful, adds a warning) rather than failing the whole
//! inspection. Symlinks are only ever followed through `vmie_guestfs`'s
//! guest-confined resolution.
//!
//! What is detected, and how:
//!
//! - **distro / version / product name**: `/etc/os-release`, else
//!   `/usr/lib/os-release`; legacy release files when it is missing or lacks
//!   a (minor) version (see the `release` module docs). Names follow
//!   virt-inspector (`rhel`, `oraclelinux`, `alpinelinux`, `archlinux`,
//!   `kalilinux`, `scientificlinux`, ...). libguestfs has no name for Amazon
//!   Linux (it reports it as `unknown`/`redhat-based`); we use
//!   `amazonlinux`, and likewise `almalinux`, `photon`, `flatcar`,
//!   `clearlinux`, `nixos`, `virtuozzo`, `xenserver`, `xcp-ng`,
//!   `azurelinux`, `cloudlinux`. Versions are integers, 0 when unknown, as
//!   virt-inspector: Ubuntu `22.04` is 22/4.
//! - **osinfo**: libosinfo's short id from distro and version, by
//!   libguestfs's rules (see [`linux_osinfo`]; [`windows_osinfo`] for Windows).
//! - **arch**: `e_machine` of the ELF header of `/bin/sh`, `/usr/bin/bash`, ...
//! - **kernels**: `/boot/vmlinuz-*` (and usr-merged
//!   `/usr/lib/modules/V/vmlinuz`), their modules directory, initramfs
//!   (`initramfs-V.img`, `initrd.img-V`, `initrd-V`, ...), and the state of
//!   each cloud driver ([`initramfs::DRIVERS`]): built in
//!   (`modules.builtin`), in the initramfs, only on the root filesystem
//!   (`modules.dep`), or missing.
//! - **boot loader**: GRUB 2 (`grub.cfg` menu entries, submenus,
//!   `set default`, grubenv `saved_entry`), GRUB 2 + BLS, GRUB legacy
//!   (`menu.lst`/`grub.conf`), extlinux/syslinux, systemd-boot.
//! - **firmware**: see [`Firmware`] (fstab mounts of the ESP, EFI binaries).
//! - **network**: see [`NetworkInfo`] and the `network` module docs.
//! - **fstab**, **SELinux**, **init system**, **agents**, **sshd**.
//!
//! A guest whose `/boot` (or `/usr`, `/boot/efi`) is a separate filesystem
//! is inspected through a `vmie_guestfs::Mounts` tree built from its fstab;
//! on the root filesystem alone its kernels and boot loader are not seen.

#![forbid(unsafe_code)]

mod arch;
mod boot;
pub mod cpio;
pub mod drivers;
mod error;
mod fstab;
pub mod initramfs;
mod network;
mod osinfo;
mod release;
mod services;
mod util;

pub use arch::elf_arch;
pub use boot::{
    default_entry, parse_bls_entry, parse_extlinux, parse_grub2_cfg, parse_grub_legacy,
    parse_grubenv, BootMenu, Bootloader, Firmware, Kernel, MenuEntry,
};
pub use error::OsError;
pub use fstab::{classify_spec, device_position, parse_fstab, FstabEntry, SpecKind};
pub use initramfs::{DriverState, InitramfsInfo};
pub use network::{
    parse_ifcfg, parse_interfaces, parse_netplan, parse_networkd, parse_nmconnection, Interface,
    InterfacesFile, NetMethod, NetworkInfo,
};
pub use osinfo::{linux_osinfo, windows_osinfo};
pub use release::{parse_os_release, DistroInfo};
pub use services::{Agents, SshInfo};

use serde::Serialize;
use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath};

/// Bounds for inspecting a hostile guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectOptions {
    /// Largest configuration/text file parsed (bytes).
    pub max_config_size: u64,
    /// Largest initramfs read (compressed, bytes).
    pub max_initramfs_size: u64,
    /// Most bytes produced by decompressing one initramfs (all segments).
    pub max_decompressed_size: u64,
    /// Most cpio entries read from one initramfs.
    pub max_cpio_entries: usize,
    /// Most directory entries considered in one directory (kernels, BLS
    /// entries, network files, ...).
    pub max_dir_entries: usize,
    /// Whether to open and parse initramfs images at all.
    pub read_initramfs: bool,
    /// Stop reading an initramfs once every driver of
    /// [`initramfs::DRIVERS`] that the kernel does not build in has been
    /// listed: the driver states are exact, the rest of the image is
    /// neither decompressed nor listed (`InitramfsInfo::complete` is then
    /// false). The fix run sets it; `inspect` lists images whole.
    pub initramfs_early_stop: bool,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self {
            max_config_size: 4 << 20,
            max_initramfs_size: 512 << 20,
            max_decompressed_size: 1 << 30,
            max_cpio_entries: 200_000,
            max_dir_entries: 4096,
            read_initramfs: true,
            initramfs_early_stop: false,
        }
    }
}

/// What [`inspect_linux`] found. Field names follow virt-inspector where it
/// has one (`distro`, `product_name`, `major_version`, `minor_version`,
/// `arch`, `hostname`, `package_format`, `package_management`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinuxInfo {
    /// Always `linux`.
    pub os_type: String,
    /// virt-inspector distro name (`debian`, `rhel`, `oraclelinux`, ...; `unknown`).
    pub distro: String,
    /// `PRETTY_NAME` of os-release, or the first line of the release file.
    pub product_name: Option<String>,
    /// Major version (0 when unknown, as virt-inspector).
    pub major_version: u32,
    /// Minor version (0 when unknown or absent, as virt-inspector).
    pub minor_version: u32,
    /// libosinfo short id (`debian12`, `rhel9.4`, ...; see [`linux_osinfo`]),
    /// `None` when there is none.
    pub osinfo: Option<String>,
    /// `ID` of os-release, verbatim (lower-cased), when there is one.
    pub os_release_id: Option<String>,
    /// `ID_LIKE` of os-release, split on spaces.
    pub id_like: Vec<String>,
    /// The files the distro and version came from, in order of use.
    pub release_files: Vec<String>,
    /// CPU architecture from the ELF header of the shell (`x86_64`, `i386`, ...).
    pub arch: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// `deb`, `rpm`, `apk`, `pacman`, `ebuild`, ...
    pub package_format: Option<String>,
    /// `apt`, `yum`, `dnf`, `zypper`, `apk`, `pacman`, `portage`, ...
    pub package_management: Option<String>,
    /// `systemd`, `upstart`, `sysvinit`, `openrc`.
    pub init_system: Option<String>,
    /// Installed kernels, newest version first.
    pub kernels: Vec<Kernel>,
    /// Version of the kernel the boot loader boots by default, when known.
    pub default_kernel: Option<String>,
    /// The boot loader and its configuration files.
    pub bootloader: Bootloader,
    /// `uefi` or `bios` (heuristic, see [`Firmware`]).
    pub firmware: Firmware,
    /// Parsed `/etc/fstab`.
    pub fstab: Vec<FstabEntry>,
    /// Network configuration stacks and interfaces.
    pub network: NetworkInfo,
    /// `SELINUX=` of `/etc/selinux/config` (`enforcing`, `permissive`, `disabled`).
    pub selinux: Option<String>,
    /// Guest agents, DHCP clients, cloud-init and sshd.
    pub agents: Agents,
    /// Things that could not be read or parsed (inspection went on).
    pub warnings: Vec<String>,
}

/// Whether `fs` looks like a Linux root: it has `/etc`, `/bin` (a directory,
/// or the usr-merge symlink to `usr/bin` even when `/usr` is another
/// filesystem, as libguestfs accepts it), and `/etc/fstab` or `/etc/hosts`.
pub fn is_linux_root(fs: &dyn GuestFs) -> bool {
    let usr_merge = || {
        let p = GuestPath::from("/bin");
        fs.symlink_metadata(&p)
            .is_ok_and(|m| m.file_type == vmie_guestfs::FileType::Symlink)
            && fs
                .read_link(&p)
                .is_ok_and(|t| t == b"usr/bin" || t == b"/usr/bin")
    };
    let dir = |p: &str| {
        fs.metadata(p)
            .map(|(_, m)| m.file_type == vmie_guestfs::FileType::Directory)
            .unwrap_or(false)
    };
    let file = |p: &str| {
        fs.metadata(p)
            .map(|(_, m)| m.file_type == vmie_guestfs::FileType::Regular)
            .unwrap_or(false)
    };
    dir("/etc") && (dir("/bin") || usr_merge()) && (file("/etc/fstab") || file("/etc/hosts"))
}

/// An OSTree deployment on a physical root (Fedora/RHEL CoreOS,
/// Silverblue, ...): the directory that is the booted system's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstreeDeployment {
    /// The OS name (`fedora-coreos`, `rhcos`).
    pub os: String,
    /// The deployment, e.g. `/ostree/deploy/fedora-coreos/deploy/CSUM.0`.
    pub path: String,
    /// The OS's shared `/var`: `/ostree/deploy/OS/var`.
    pub var: String,
    /// How it was chosen (the boot link, or the only deployment).
    pub chosen_by: String,
}

fn normalize(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in target.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            parts.pop()?;
        } else {
            parts.push(c);
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The OSTree deployment on the physical root `fs`, when it is one (it has
/// `/ostree/deploy`): the target of the default boot entry's link
/// (`/ostree/boot.N/OS/BOOTCSUM/0`, `boot.1` before `boot.0`), else the only
/// deployment there is; it must look like a Linux root itself
/// ([`is_linux_root`], seen from inside). `None` otherwise, or when several
/// deployments exist and no boot link says which is booted.
pub fn ostree_deployment(fs: &dyn GuestFs) -> Option<OstreeDeployment> {
    let names = |p: &str| -> Vec<String> {
        fs.list(p)
            .map(|(_, es)| {
                let mut v: Vec<String> = es
                    .iter()
                    .filter_map(|e| std::str::from_utf8(&e.name).ok())
                    .filter(|n| *n != "." && *n != "..")
                    .map(str::to_string)
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default()
    };
    if names("/ostree/deploy").is_empty() {
        return None;
    }
    let check = |path: String, chosen_by: String| -> Option<OstreeDeployment> {
        let rest = path.strip_prefix("/ostree/deploy/")?;
        let (os, tail) = rest.split_once('/')?;
        if !tail.starts_with("deploy/") || tail["deploy/".len()..].contains('/') {
            return None;
        }
        let view =
            vmie_guestfs::SubdirFs::new(Box::new(BorrowedFs(fs)), GuestPath::from(path.as_str()));
        is_linux_root(&view).then(|| OstreeDeployment {
            os: os.to_string(),
            var: format!("/ostree/deploy/{os}/var"),
            path: path.clone(),
            chosen_by,
        })
    };
    for bv in ["/ostree/boot.1", "/ostree/boot.0"] {
        for os in names(bv) {
            for csum in names(&format!("{bv}/{os}")) {
                let dir = format!("{bv}/{os}/{csum}");
                let Ok(t) = fs.readlink(&format!("{dir}/0")) else {
                    continue;
                };
                let Some(target) = std::str::from_utf8(&t)
                    .ok()
                    .and_then(|t| normalize(&dir, t))
                else {
                    continue;
                };
                if let Some(d) = check(target, format!("the default boot entry's link {dir}/0")) {
                    return Some(d);
                }
            }
        }
    }
    let mut all = Vec::new();
    for os in names("/ostree/deploy") {
        for d in names(&format!("/ostree/deploy/{os}/deploy")) {
            if !d.ends_with(".origin") {
                all.push(format!("/ostree/deploy/{os}/deploy/{d}"));
            }
        }
    }
    match all.as_slice() {
        [only] => check(only.clone(), "the only deployment".into()),
        _ => None,
    }
}

/// A borrowed filesystem as a boxed one (reads only).
#[derive(Debug)]
struct BorrowedFs<'a>(&'a dyn GuestFs);

impl GuestFs for BorrowedFs<'_> {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn location(&self) -> String {
        self.0.location()
    }
    fn limits(&self) -> vmie_guestfs::Limits {
        self.0.limits()
    }
    fn symlink_metadata(
        &self,
        p: &GuestPath,
    ) -> Result<vmie_guestfs::Metadata, vmie_guestfs::FsError> {
        self.0.symlink_metadata(p)
    }
    fn read_dir(
        &self,
        p: &GuestPath,
    ) -> Result<Vec<vmie_guestfs::DirEntry>, vmie_guestfs::FsError> {
        self.0.read_dir(p)
    }
    fn read_file(&self, p: &GuestPath, limit: u64) -> Result<Vec<u8>, vmie_guestfs::FsError> {
        self.0.read_file(p, limit)
    }
    fn read_link(&self, p: &GuestPath) -> Result<Vec<u8>, vmie_guestfs::FsError> {
        self.0.read_link(p)
    }
}

/// Inspect the Linux root filesystem `fs`.
///
/// Refuses ([`OsError::NotLinux`]) a filesystem that is not a Linux root
/// (see [`is_linux_root`]). Anything else missing or malformed leaves the
/// field unknown and may add a warning.
pub fn inspect_linux(fs: &dyn GuestFs, opts: &InspectOptions) -> Result<LinuxInfo, OsError> {
    if !is_linux_root(fs) {
        return Err(OsError::NotLinux { fs: fs.location() });
    }
    let mut warnings = Vec::new();
    let ctx = util::Ctx::new(fs, opts);
    let d = release::detect_distro(&ctx);
    let arch = arch::detect_arch(&ctx);
    let hostname = services::hostname(&ctx);
    let (package_format, package_management) = release::package_info(&ctx, &d);
    let init_system = services::init_system(&ctx);
    let fstab = match ctx.read_text("/etc/fstab") {
        Some(t) => parse_fstab(&t),
        None => Vec::new(),
    };
    let mut bootloader = boot::detect_bootloader(&ctx);
    let firmware = boot::detect_firmware(&ctx, &fstab, &mut bootloader);
    let (kernels, default_kernel) = boot::detect_kernels(&ctx, &bootloader, &mut warnings);
    let network = network::detect_network(&ctx, &mut warnings);
    let selinux = services::selinux(&ctx);
    let agents = services::agents(&ctx);
    warnings.extend(ctx.take_warnings());
    let osinfo = linux_osinfo(
        &d.distro,
        d.os_release_id.as_deref(),
        d.major_version,
        d.minor_version,
    );
    Ok(LinuxInfo {
        os_type: "linux".into(),
        distro: d.distro,
        product_name: d.product_name,
        major_version: d.major_version,
        minor_version: d.minor_version,
        osinfo,
        os_release_id: d.os_release_id,
        id_like: d.id_like,
        release_files: d.release_files,
        arch,
        hostname,
        package_format,
        package_management,
        init_system,
        kernels,
        default_kernel,
        bootloader,
        firmware,
        fstab,
        network,
        selinux,
        agents,
        warnings,
    })
}

/// Parse shell-style `KEY=value` lines (`/etc/default/grub`, sysconfig
/// files, lsb-release): comments skipped, one level of quotes removed.
pub fn parse_shell_vars(text: &str) -> Vec<(String, String)> {
    util::shell_vars(text)
}

/// Only the distro part of the inspection (no kernels, initramfs, network).
/// Does not require [`is_linux_root`].
pub fn inspect_distro(fs: &dyn GuestFs, opts: &InspectOptions) -> DistroInfo {
    let ctx = util::Ctx::new(fs, opts);
    release::detect_distro(&ctx)
}
