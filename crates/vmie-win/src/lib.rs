//! virt-inspector-style inspection of a Windows guest, offline and in
//! userspace.
//!
//! Everything works on a `&dyn GuestFs` (see `vmie-guestfs`). Windows paths
//! are found case-insensitively by listing directories, so the same code
//! works on NTFS and on case-sensitive trees ([`vmie_guestfs::MemFs`]).
//! The guest is hostile: files are read with size caps from
//! [`WinInspectOptions`], hives are parsed by `vmie-hive` (bounded, no
//! panics), registry values of the wrong type leave their field unknown
//! with a warning, and nothing here panics.
//!
//! What is read, and from where:
//!
//! - **product, version, build, edition, variant**:
//!   `SOFTWARE\Microsoft\Windows NT\CurrentVersion` (`ProductName`,
//!   `CurrentMajorVersionNumber`/`CurrentMinorVersionNumber` on Windows 10
//!   and later, else `CurrentVersion`; `CurrentBuildNumber`, `EditionID`,
//!   `InstallationType`); the release name from them ([`windows_release`]:
//!   Windows 11 still calls itself "Windows 10" in `ProductName`).
//! - **arch**: the COFF Machine of `System32\cmd.exe` (what virt-inspector
//!   reads), else of `System32\kernel32.dll` ([`pe_arch`]), else
//!   `PROCESSOR_ARCHITECTURE` of the system environment.
//! - **SYSTEM**: control set, host name, `MountedDevices` drive letters,
//!   install language, sysprep status, RDP, TCP/IP interfaces, page file,
//!   storage/network driver services and guest tools.
//! - **.NET Framework**: `SOFTWARE\Microsoft\NET Framework Setup\NDP`.
//! - **boot**: a BCD store at `/Boot/BCD` or `/EFI/Microsoft/Boot/BCD` on
//!   the same filesystem (default entry, timeout, EMS, boot status policy).
//! - **support**: [`supported_status`] and [`preflight_facts`] hold the
//!   result against the import service's list of Windows releases.
//!
//! A dirty hive is replayed in memory from its `.LOG1`/`.LOG2` beside it;
//! without usable logs it is read as it is, with a warning.

#![forbid(unsafe_code)]

mod bcd;
mod error;
pub mod inf;
mod info;
mod paths;
mod pe;
mod reg;
mod software;
mod support;
mod system;
mod tables;

pub use bcd::{
    boot_config, BOOTMGR_GUID, ELEM_APP_PATH, ELEM_BOOTEMS, ELEM_BOOTSTATUSPOLICY,
    ELEM_DEFAULT_OBJECT, ELEM_INHERIT, ELEM_OSLOADER_EMS, ELEM_RECOVERY_ENABLED, ELEM_TIMEOUT,
    OBJECT_TYPE_OSLOADER,
};
pub use error::WinError;
pub use info::{
    Agents, BootConfig, DotNetVersion, DriveMapping, DriveTarget, DriverService, HivesRead,
    NetInterface, Pagefile, PagefileKind, PagingFile, SysprepState, WindowsInfo,
};
pub use pe::{machine_arch, pe_arch, pe_machine, processor_architecture_arch, PeError};
pub use software::windows_release;
pub use support::{
    edition_family, preflight_facts, supported_status, ListedWindows, PreflightFacts, Support,
    LISTED_WINDOWS,
};
pub use system::{
    classify_paging_files, decode_mounted_device, parse_paging_file, DRIVERS_OF_INTEREST,
};
pub use tables::{dotnet4_version, lcid_tag, DOTNET4_RELEASES};

use vmie_guestfs::GuestFs;
use vmie_hive::{Hive, HiveOptions};

use paths::{find_entry_ci, find_file_ci, is_io, join, read_capped};
use reg::Reg;

/// Bounds for inspecting a hostile Windows guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinInspectOptions {
    /// Largest hive file (SOFTWARE, SYSTEM, their logs) read, in bytes.
    pub max_hive_size: u64,
    /// Largest BCD store read, in bytes.
    pub max_bcd_size: u64,
    /// Largest `kernel32.dll` read for its PE header, in bytes.
    pub max_pe_size: u64,
    /// Most subkeys or values considered in one registry key (interfaces,
    /// services, mounted devices, .NET versions).
    pub max_entries: usize,
    /// Most entries considered in one directory while finding a path.
    pub max_dir_entries: usize,
    /// Whether to look for and read a BCD store.
    pub read_bcd: bool,
}

impl Default for WinInspectOptions {
    fn default() -> Self {
        Self {
            max_hive_size: 512 << 20,
            max_bcd_size: 64 << 20,
            max_pe_size: 64 << 20,
            max_entries: 100_000,
            max_dir_entries: 1 << 20,
            read_bcd: true,
        }
    }
}

/// Names of a system root, in order of preference.
const SYSTEMROOTS: &[&str] = &["Windows", "WINNT"];
/// Where BCD stores live on the filesystem, relative to its root.
const BCD_PATHS: &[&str] = &["Boot/BCD", "EFI/Microsoft/Boot/BCD"];

/// The system root of `fs` (`/Windows`, `/WINNT`, as stored) and its
/// `System32/config` hive paths (SOFTWARE, SYSTEM).
fn find_systemroot(
    fs: &dyn GuestFs,
    opts: &WinInspectOptions,
) -> Result<Option<(String, String, String)>, vmie_guestfs::FsError> {
    for name in SYSTEMROOTS {
        let Some(root) = find_entry_ci(fs, "/", name, opts.max_dir_entries)? else {
            continue;
        };
        let sw = find_file_ci(fs, &root, "System32/config/SOFTWARE", opts.max_dir_entries)?;
        let sys = find_file_ci(fs, &root, "System32/config/SYSTEM", opts.max_dir_entries)?;
        if let (Some(sw), Some(sys)) = (sw, sys) {
            return Ok(Some((root, sw, sys)));
        }
    }
    Ok(None)
}

/// Whether `fs` holds a Windows system root: `/Windows` (or `/WINNT`), in
/// any case, with `System32/config/SOFTWARE` and `System32/config/SYSTEM`
/// files (what virt-inspector checks).
pub fn is_windows_root(fs: &dyn GuestFs) -> bool {
    matches!(
        find_systemroot(fs, &WinInspectOptions::default()),
        Ok(Some(_))
    )
}

fn split_dir(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", path.get(1..).unwrap_or("")),
        Some(i) => (
            path.get(..i).unwrap_or("/"),
            path.get(i + 1..).unwrap_or(""),
        ),
        None => ("/", path),
    }
}

/// The path of the first BCD store on `fs` (`/Boot/BCD`, then
/// `/EFI/Microsoft/Boot/BCD`, matched case-insensitively), unparsed.
pub fn bcd_store_path(
    fs: &dyn GuestFs,
    opts: &WinInspectOptions,
) -> Result<Option<String>, WinError> {
    for rel in BCD_PATHS {
        if let Some(p) = find_file_ci(fs, "/", rel, opts.max_dir_entries)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The BCD store of `fs` (`/Boot/BCD`, BIOS; `/EFI/Microsoft/Boot/BCD`,
/// UEFI), read (logs replayed when dirty) and decoded, with `path` set to
/// where it was found. `Ok(None)` when there is none or it is unusable (then
/// with a warning); `Err` only for I/O errors. A BIOS install keeps it on the
/// small "System Reserved" volume rather than beside `\Windows`, so callers
/// that see the whole VM look there too.
pub fn find_boot_config(
    fs: &dyn GuestFs,
    opts: &WinInspectOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<BootConfig>, WinError> {
    for rel in BCD_PATHS {
        let Some(p) = find_file_ci(fs, "/", rel, opts.max_dir_entries)? else {
            continue;
        };
        if let Some(h) = load_hive(fs, &p, opts.max_bcd_size, opts, warnings)? {
            match boot_config(&h) {
                Ok(mut b) => {
                    b.path = Some(p);
                    return Ok(Some(b));
                }
                Err(e) => warnings.push(format!("BCD: {e}")),
            }
        }
    }
    Ok(None)
}

/// Read and parse a hive file; replay its logs if it is dirty. `Ok(None)`
/// (and a warning) when it cannot be used; `Err` only for I/O errors.
fn load_hive(
    fs: &dyn GuestFs,
    path: &str,
    limit: u64,
    opts: &WinInspectOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<Hive>, WinError> {
    let bytes = match read_capped(fs, path, limit) {
        Ok(b) => b,
        Err(e) if is_io(&e) => return Err(e.into()),
        Err(e) => {
            warnings.push(format!("{path}: {e}"));
            return Ok(None);
        }
    };
    let mut hopts = HiveOptions {
        name: path.to_string(),
        max_hive_size: usize::try_from(limit).unwrap_or(usize::MAX),
        ..HiveOptions::default()
    };
    let dirty = match (bytes.get(4..8), bytes.get(8..12)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    if !dirty {
        return match Hive::from_bytes(bytes, &hopts) {
            Ok(h) => Ok(Some(h)),
            Err(e) => {
                warnings.push(e.to_string());
                Ok(None)
            }
        };
    }
    let (dir, name) = split_dir(path);
    let mut logs = Vec::new();
    for ext in [".LOG1", ".LOG2", ".LOG"] {
        let Some(p) = find_file_ci(fs, dir, &format!("{name}{ext}"), opts.max_dir_entries)? else {
            continue;
        };
        match read_capped(fs, &p, limit) {
            Ok(b) => logs.push(b),
            Err(e) if is_io(&e) => return Err(e.into()),
            Err(e) => warnings.push(format!("{p}: {e}")),
        }
    }
    if !logs.is_empty() {
        let refs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
        match Hive::from_bytes_with_logs(bytes.clone(), &refs, &hopts) {
            Ok((h, _)) => return Ok(Some(h)),
            Err(e) => warnings.push(format!("{e}; reading it without its logs")),
        }
    } else {
        warnings.push(format!(
            "{path}: hive is dirty and has no transaction logs; reading it as it is"
        ));
    }
    hopts.ignore_dirty = true;
    match Hive::from_bytes(bytes, &hopts) {
        Ok(h) => Ok(Some(h)),
        Err(e) => {
            warnings.push(e.to_string());
            Ok(None)
        }
    }
}

/// Inspect hives already opened: the SOFTWARE and SYSTEM parts of
/// [`WindowsInfo`] (everything but `systemroot`, the PE arch and `boot`).
/// Either may be missing. Never fails: what cannot be read is a warning.
pub fn from_hives(software: Option<&Hive>, system: Option<&Hive>) -> WindowsInfo {
    from_hives_with(software, system, &WinInspectOptions::default())
}

/// [`from_hives`] with explicit limits.
pub fn from_hives_with(
    software: Option<&Hive>,
    system: Option<&Hive>,
    opts: &WinInspectOptions,
) -> WindowsInfo {
    let mut info = WindowsInfo {
        os_type: "windows".into(),
        distro: "windows".into(),
        ..WindowsInfo::default()
    };
    let mut policy_deny = None;
    let mut deny = None;
    if let Some(h) = software {
        info.hives.software = true;
        let mut r = Reg::new(h, "SOFTWARE", opts.max_entries);
        policy_deny = software::read_software(&mut r, &mut info);
        info.warnings.append(&mut r.warnings);
    }
    if let Some(h) = system {
        info.hives.system = true;
        let mut r = Reg::new(h, "SYSTEM", opts.max_entries);
        deny = system::read_system(&mut r, &mut info);
        info.warnings.append(&mut r.warnings);
    }
    info.rdp_enabled = policy_deny.or(deny).map(|d| d == 0);
    if info.major_version != 0 {
        let build = info
            .build_id
            .as_deref()
            .and_then(|b| b.trim().parse::<u32>().ok());
        info.release = windows_release(
            info.major_version,
            info.minor_version,
            build,
            info.is_server().unwrap_or(false),
            info.product_name.as_deref(),
        );
    }
    info
}

/// The system binaries whose PE header gives the architecture, in the order
/// tried: virt-inspector's `cmd.exe`, then `kernel32.dll`.
const ARCH_BINARIES: [&str; 2] = ["System32/cmd.exe", "System32/kernel32.dll"];

/// Inspect the Windows system on `fs`.
///
/// Refuses ([`WinError::NotWindows`]) a filesystem without a system root
/// (see [`is_windows_root`]); returns [`WinError::Fs`] only for I/O errors
/// of the device. Unreadable hives, missing or malformed `cmd.exe` and `kernel32.dll`
/// or BCD leave their fields unknown and add warnings.
pub fn inspect_windows(
    fs: &dyn GuestFs,
    opts: &WinInspectOptions,
) -> Result<WindowsInfo, WinError> {
    let Some((root, sw_path, sys_path)) = find_systemroot(fs, opts)? else {
        return Err(WinError::NotWindows { fs: fs.location() });
    };
    let mut warnings = Vec::new();
    let software = load_hive(fs, &sw_path, opts.max_hive_size, opts, &mut warnings)?;
    let system = load_hive(fs, &sys_path, opts.max_hive_size, opts, &mut warnings)?;
    let mut info = from_hives_with(software.as_ref(), system.as_ref(), opts);
    info.systemroot = Some(root.clone());

    // virt-inspector takes the architecture from `System32\cmd.exe` (the
    // binary its systemroot test requires); `kernel32.dll` answers when
    // cmd.exe is missing or unreadable. A missing binary is worth a warning
    // only when neither gives the answer; an unreadable one always is.
    let mut arch_warnings = Vec::new();
    let mut arch_found = false;
    for bin in ARCH_BINARIES {
        match find_file_ci(fs, &root, bin, opts.max_dir_entries)? {
            Some(p) => match read_capped(fs, &p, opts.max_pe_size) {
                Ok(bytes) => match pe_arch(&bytes) {
                    Ok(a) => {
                        if let Some(reg) = info.arch.as_deref().filter(|r| *r != a) {
                            warnings.push(format!(
                                "{p}: PE machine says {a}, PROCESSOR_ARCHITECTURE says {reg}; using {a}"
                            ));
                        }
                        info.arch = Some(a.to_string());
                        arch_found = true;
                        break;
                    }
                    Err(e) => warnings.push(format!("{p}: {e}")),
                },
                Err(e) if is_io(&e) => return Err(e.into()),
                Err(e) => warnings.push(format!("{p}: {e}")),
            },
            None => arch_warnings.push(format!("{}: no {bin}", join(&root, ""))),
        }
    }
    if !arch_found {
        warnings.append(&mut arch_warnings);
    }

    if opts.read_bcd {
        if let Some(b) = find_boot_config(fs, opts, &mut warnings)? {
            info.boot = Some(b);
            info.hives.bcd = true;
        }
    }
    warnings.append(&mut info.warnings);
    info.warnings = warnings;
    Ok(info)
}
