//! The result types of Windows inspection.

use serde::Serialize;

/// What [`crate::inspect_windows`] / [`crate::from_hives`] found. Field names
/// follow virt-inspector where it has one (`product_name`,
/// `product_variant`, `major_version`, `minor_version`, `build_id`, `arch`,
/// `hostname`, `drive_mappings`, and `systemroot` / `current_control_set`
/// for its `windows_systemroot` / `windows_current_control_set`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WindowsInfo {
    /// Always `windows`.
    pub os_type: String,
    /// Always `windows` (virt-inspector's distro for Windows).
    pub distro: String,
    /// The system root directory as found on the filesystem (`/Windows`,
    /// `/WINNT`, in the case stored); `None` from [`crate::from_hives`].
    pub systemroot: Option<String>,
    /// Which hives could be read.
    pub hives: HivesRead,
    /// `ProductName` of `SOFTWARE\Microsoft\Windows NT\CurrentVersion`.
    /// Note that Windows 11 keeps `Windows 10 ...` here: see [`Self::release`].
    pub product_name: Option<String>,
    /// `InstallationType` (`Client`, `Server`, `Server Core`, `Nano Server`,
    /// `Embedded`); without it `Server` when `EditionID` or `ProductName`
    /// contains "Server", else `Client` when a product name is known.
    pub product_variant: Option<String>,
    /// `InstallationType` verbatim.
    pub installation_type: Option<String>,
    /// `EditionID` (`Professional`, `Core`, `ServerStandard`, `EnterpriseEval`, ...).
    pub edition_id: Option<String>,
    /// `CurrentMajorVersionNumber` (Windows 10 and later), else from
    /// `CurrentVersion`; 0 when unknown (as virt-inspector).
    pub major_version: u32,
    /// `CurrentMinorVersionNumber`, else from `CurrentVersion`; 0 when unknown.
    pub minor_version: u32,
    /// `CurrentVersion` verbatim (stays `6.3` on Windows 10 and later).
    pub current_version: Option<String>,
    /// `CurrentBuildNumber`, else `CurrentBuild` (virt-inspector's `build_id`).
    pub build_id: Option<String>,
    /// `UBR` (update build revision).
    pub ubr: Option<u32>,
    /// `DisplayVersion` (`23H2`).
    pub display_version: Option<String>,
    /// `ReleaseId` (`1809`, frozen at `2009` since 20H2).
    pub release_id: Option<String>,
    /// `CSDVersion` (`Service Pack 1`).
    pub service_pack: Option<String>,
    /// The release derived from version, build and variant: `Windows 7`,
    /// `Windows 11`, `Windows Server 2008 R2`, `Windows Server 2019`, ...
    /// (see [`crate::windows_release`]).
    pub release: Option<String>,
    /// `i386`, `x86_64`, `aarch64`, ...: the COFF Machine of
    /// `System32\cmd.exe`, else of `System32\kernel32.dll`, else
    /// `PROCESSOR_ARCHITECTURE` of the system environment.
    pub arch: Option<String>,
    /// `Services\Tcpip\Parameters\Hostname` (what virt-inspector reports),
    /// else the computer name.
    pub hostname: Option<String>,
    /// `Control\ComputerName\ComputerName\ComputerName` (the NetBIOS name).
    pub computer_name: Option<String>,
    /// `ControlSet00N` from `SYSTEM\Select\Current`.
    pub current_control_set: Option<String>,
    /// `SYSTEM\MountedDevices` `\DosDevices\X:` values, by letter.
    pub drive_mappings: Vec<DriveMapping>,
    /// `Release` of `NET Framework Setup\NDP\v4\Full`.
    pub dotnet4_release: Option<u32>,
    /// The .NET Framework 4.5+ version of [`Self::dotnet4_release`]
    /// ([`crate::dotnet4_version`]); `4.0` when v4\Full is installed without a Release.
    pub dotnet4_version: Option<String>,
    /// Installed (`Install`=1) pre-4 .NET Framework versions (`v2.0.50727`, `v3.0`, `v3.5`).
    pub dotnet_versions: Vec<DotNetVersion>,
    /// `Control\Nls\Language\InstallLanguage` (hex LCID, `0409`).
    pub install_language: Option<String>,
    /// The tag of [`Self::install_language`] (`en-US`), from a small table.
    pub install_language_tag: Option<String>,
    /// `Control\Nls\Language\Default` (hex LCID).
    pub default_language: Option<String>,
    /// Sysprep state.
    pub sysprep: SysprepState,
    /// Remote Desktop allowed: `fDenyTSConnections` == 0 (the
    /// `SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services` policy
    /// wins over `Control\Terminal Server`).
    pub rdp_enabled: Option<bool>,
    /// `Services\Tcpip\Parameters\Interfaces\{GUID}`.
    pub network_interfaces: Vec<NetInterface>,
    /// `Control\Session Manager\Memory Management`.
    pub pagefile: Pagefile,
    /// Services of [`crate::DRIVERS_OF_INTEREST`] present in the control set.
    pub drivers: Vec<DriverService>,
    /// The names of every service key in the control set (for rules'
    /// `service_exists`; not in the JSON).
    #[serde(skip)]
    pub services: Vec<String>,
    /// Hypervisor guest tools.
    pub agents: Agents,
    /// The BCD store, when one was found and read.
    pub boot: Option<BootConfig>,
    /// Things that could not be read or parsed (inspection went on).
    pub warnings: Vec<String>,
}

impl WindowsInfo {
    /// Whether this is a server release (`product_variant` contains "Server").
    pub fn is_server(&self) -> Option<bool> {
        self.product_variant
            .as_deref()
            .map(|v| v.to_ascii_lowercase().contains("server"))
    }
}

/// Which hives were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HivesRead {
    /// `System32\config\SOFTWARE`.
    pub software: bool,
    /// `System32\config\SYSTEM`.
    pub system: bool,
    /// A BCD store.
    pub bcd: bool,
}

/// One drive letter of `SYSTEM\MountedDevices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveMapping {
    /// `C`, `D`, ...
    pub letter: String,
    /// What the letter is mapped to.
    #[serde(flatten)]
    pub target: DriveTarget,
}

/// What a drive letter points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriveTarget {
    /// A 12-byte value: MBR disk signature and partition byte offset.
    Mbr {
        /// Disk signature (MBR offset 0x1b8).
        disk_signature: u32,
        /// Byte offset of the partition on the disk.
        offset: u64,
    },
    /// `DMIO:ID:` + 16 bytes: a GPT partition's unique GUID (lowercase).
    Gpt {
        /// Partition GUID.
        guid: String,
    },
    /// A device path stored as UTF-16 (`\??\IDE#CdRom...`, `_??_USBSTOR#...`).
    Device {
        /// The path.
        path: String,
    },
    /// Anything else.
    Unknown {
        /// Length of the value data.
        len: usize,
    },
}

/// A pre-4 .NET Framework under `NET Framework Setup\NDP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DotNetVersion {
    /// The key name (`v2.0.50727`, `v3.0`, `v3.5`).
    pub version: String,
    /// `SP` (service pack level).
    pub sp: Option<u32>,
    /// `Version` (`3.5.30729.4926`).
    pub full_version: Option<String>,
}

/// Sysprep state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SysprepState {
    /// `SYSTEM\Setup\Status\SysprepStatus\GeneralizationState`.
    pub generalization_state: Option<u32>,
    /// `SYSTEM\Setup\Status\SysprepStatus\CleanupState`.
    pub cleanup_state: Option<u32>,
    /// `SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State\ImageState`
    /// (`IMAGE_STATE_COMPLETE`, `IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE`, ...).
    pub image_state: Option<String>,
    /// From `ImageState`: `true` for `IMAGE_STATE_GENERALIZE_RESEAL_*`,
    /// `false` for `IMAGE_STATE_COMPLETE`, else unknown.
    pub generalized: Option<bool>,
}

/// One TCP/IP interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetInterface {
    /// The `{GUID}` key name.
    pub guid: String,
    /// `EnableDHCP` != 0.
    pub dhcp: Option<bool>,
    /// Static `IPAddress` entries (without `0.0.0.0` and empty ones).
    pub ip_addresses: Vec<String>,
    /// Static `SubnetMask` entries (same filter).
    pub subnet_masks: Vec<String>,
    /// `DefaultGateway` entries (same filter).
    pub default_gateways: Vec<String>,
    /// `NameServer` (comma/space separated) entries.
    pub name_servers: Vec<String>,
    /// `DhcpIPAddress` (the last lease; filtered the same way).
    pub dhcp_ip_address: Option<String>,
}

impl NetInterface {
    /// DHCP off and static addresses configured.
    pub fn is_static(&self) -> bool {
        self.dhcp == Some(false) && !self.ip_addresses.is_empty()
    }
}

/// Page file configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pagefile {
    /// Classification of `PagingFiles`; `None` when it is missing.
    pub kind: Option<PagefileKind>,
    /// `PagingFiles` entries.
    pub paging_files: Vec<PagingFile>,
    /// `ExistingPageFiles` (`\??\C:\pagefile.sys`).
    pub existing_page_files: Vec<String>,
}

/// How the page file is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PagefileKind {
    /// `?:\pagefile.sys`: "Automatically manage paging file size for all drives".
    Automatic,
    /// `C:\pagefile.sys 0 0` (or no sizes): system managed size.
    SystemManaged,
    /// `C:\pagefile.sys 1024 2048`: custom size.
    Custom,
    /// Empty: no paging file.
    #[serde(rename = "none")]
    NoPagefile,
}

/// One `PagingFiles` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PagingFile {
    /// `C:\pagefile.sys`, `?:\pagefile.sys`.
    pub path: String,
    /// Initial size (MiB).
    pub initial_mb: Option<u64>,
    /// Maximum size (MiB).
    pub maximum_mb: Option<u64>,
}

/// A service key of interest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverService {
    /// The key name as stored (`LSI_SAS`, `pvscsi`).
    pub name: String,
    /// `Start` (0 boot, 1 system, 2 automatic, 3 manual, 4 disabled).
    pub start: Option<u32>,
    /// `Start` as a word (`boot`, `system`, `automatic`, `manual`, `disabled`).
    pub start_type: Option<String>,
    /// `ImagePath`.
    pub image_path: Option<String>,
}

/// Hypervisor guest tools (their service keys exist).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Agents {
    /// `Services\VMTools`.
    pub vmware_tools: bool,
    /// `Services\vmicheartbeat` (in-box since Windows 8 / Server 2012).
    pub hyperv_integration_services: bool,
    /// `Services\VBoxService`.
    pub virtualbox_guest_additions: bool,
}

/// What the BCD store says about booting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootConfig {
    /// Guest path of the store (`/Boot/BCD`, `/EFI/Microsoft/Boot/BCD`).
    pub path: Option<String>,
    /// `{bootmgr}` default (element 23000003): the entry's GUID.
    pub default_entry: Option<String>,
    /// Its description (12000004).
    pub default_description: Option<String>,
    /// Its loader path (12000002, `\Windows\system32\winload.efi`).
    pub default_path: Option<String>,
    /// `{bootmgr}` timeout (25000004, seconds).
    pub timeout: Option<u64>,
    /// `bootems` (16000020) of `{bootmgr}`, inherited through `{globalsettings}`/`{emssettings}`.
    pub bootems: Option<bool>,
    /// `ems` (260000b0) of the default entry (inherited values included).
    pub ems: Option<bool>,
    /// OS loader entries with `ems` set to yes.
    pub ems_entries: Vec<String>,
    /// `bootstatuspolicy` (250000e0) of the default entry: 0 DisplayAllFailures,
    /// 1 IgnoreAllFailures, 2 IgnoreShutdownFailures, 3 IgnoreBootFailures, ...
    pub bootstatuspolicy: Option<u64>,
    /// `recoveryenabled` (16000009) of the default entry.
    pub recovery_enabled: Option<bool>,
}

impl BootConfig {
    /// EMS on for boot manager or any OS loader entry.
    pub fn ems_enabled(&self) -> bool {
        self.bootems == Some(true) || self.ems == Some(true) || !self.ems_entries.is_empty()
    }
}
