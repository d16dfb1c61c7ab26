//! `vmie-fixup hive …` and `vmie-fixup bcd …`: offline registry hive files,
//! in the manner of hivexregedit and bcdedit.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Subcommand;
use vmie_hive::bcd::BcdValue;
use vmie_hive::{Decoded, GetResult, Hive, HiveOptions};

use crate::{refused, Failure};

const HIVE_SOURCE_HELP: &str = "\
A hive is a file here (SYSTEM, SOFTWARE, BCD, ...) or a file inside a disk
image: give IMAGE[:VOL] GUESTPATH instead of FILE, e.g.
    vm.raw /Windows/System32/config/SYSTEM
Without VOL the guest's tree is used (its Windows system volume, or its Linux
root and mounts); with VOL, that one volume. A file is taken as a hive when it
starts with the regf signature, else as a disk image.";

#[derive(Debug, Subcommand)]
pub(crate) enum HiveCommand {
    /// Print a hive (or one key of it) as a regedit .reg file, like
    /// `hivexregedit --export`.
    #[command(
        after_help = format!("{HIVE_SOURCE_HELP}\n\nEXAMPLES:\n    vmie-fixup hive export SYSTEM 'ControlSet001\\Services\\Tcpip'\n    vmie-fixup hive export vm.raw /Windows/System32/config/SOFTWARE 'Microsoft\\Windows NT\\CurrentVersion'")
    )]
    Export {
        /// FILE, or IMAGE[:VOL] GUESTPATH.
        #[arg(value_name = "FILE | IMAGE[:VOL] GUESTPATH")]
        source: String,
        /// [GUESTPATH] [KEY]: the key to export, e.g.
        /// `ControlSet001\Services\Tcpip`; default the root.
        #[arg(value_name = "KEY")]
        rest: Vec<String>,
    },
    /// Apply a .reg file to a hive (keys, values, `-` deletions), like
    /// `hivexregedit --merge`. The original is kept as FILE.vmie.bak (in the
    /// guest: GUESTPATH.vmie.bak, and the write goes through the self-check
    /// and the undo journal).
    #[command(
        after_help = format!("{HIVE_SOURCE_HELP}\n\nEXAMPLES:\n    vmie-fixup hive merge --dry-run SYSTEM changes.reg\n    vmie-fixup hive merge SYSTEM changes.reg\n    vmie-fixup hive merge vm.raw:1 /hives/SYSTEM changes.reg")
    )]
    Merge {
        /// FILE, or IMAGE[:VOL] GUESTPATH.
        #[arg(value_name = "FILE | IMAGE[:VOL] GUESTPATH")]
        source: String,
        /// [GUESTPATH] REGFILE: the .reg file (on this machine).
        #[arg(value_name = "REGFILE", required = true)]
        rest: Vec<String>,
        /// Say what would change, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Print a key (its subkeys and values) or one value.
    #[command(
        after_help = format!("{HIVE_SOURCE_HELP}\n\nEXAMPLES:\n    vmie-fixup hive get SYSTEM Select Current\n    vmie-fixup hive get vm.raw /Windows/System32/config/SYSTEM Select")
    )]
    Get {
        /// FILE, or IMAGE[:VOL] GUESTPATH.
        #[arg(value_name = "FILE | IMAGE[:VOL] GUESTPATH")]
        source: String,
        /// [GUESTPATH] KEY [VALUE]: the key, e.g. `Select`, and a value name
        /// (`@` for the default value).
        #[arg(value_name = "KEY [VALUE]", required = true)]
        rest: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BcdCommand {
    /// List the objects of a BCD store with their elements by bcdedit's
    /// names, like `bcdedit /store FILE /enum all /v`.
    #[command(
        after_help = format!("{HIVE_SOURCE_HELP}\n\nEXAMPLES:\n    vmie-fixup bcd show BCD\n    vmie-fixup bcd show vm.raw /Boot/BCD")
    )]
    Show {
        /// The BCD store (Boot\BCD or EFI\Microsoft\Boot\BCD), or
        /// IMAGE[:VOL] GUESTPATH.
        #[arg(value_name = "FILE | IMAGE[:VOL] GUESTPATH")]
        source: String,
        /// GUESTPATH when the source is a disk image.
        #[arg(value_name = "GUESTPATH")]
        rest: Vec<String>,
    },
}

/// Where a hive is.
enum Source {
    File(PathBuf),
    Guest(crate::guesttree::Target, String),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Guest(t, g) => format!("{}:{g}", t.image.display()),
        }
    }
}

/// Whether `p` starts with the regf signature.
fn is_hive_file(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"regf"
}

fn usage(msg: String) -> Failure {
    Failure {
        code: 2,
        error: anyhow!(msg),
    }
}

/// `FILE rest...` or `IMAGE[:VOL] GUESTPATH rest...`: the source and the rest.
fn source(first: &str, rest: &[String]) -> Result<(Source, Vec<String>), Failure> {
    let p = Path::new(first);
    if p.is_file() && is_hive_file(p) {
        return Ok((Source::File(p.to_path_buf()), rest.to_vec()));
    }
    if !p.exists() && !first.contains(':') {
        return Err(usage(format!("{first}: no such file")));
    }
    let target = crate::guesttree::parse_target(first, &[])?;
    match rest.split_first() {
        Some((g, more)) if g.starts_with('/') || g.contains('/') || g.contains('\\') => {
            Ok((Source::Guest(target, g.replace('\\', "/")), more.to_vec()))
        }
        _ => Err(refused(anyhow!(
            "{first}: not a registry hive (it does not start with the regf signature); \
             to read a hive inside a disk image give IMAGE[:VOL] GUESTPATH, e.g. {first} /Windows/System32/config/SYSTEM"
        ))),
    }
}

fn parse_hive(name: String, bytes: Vec<u8>) -> Result<Hive, Failure> {
    let opts = HiveOptions {
        name,
        ..HiveOptions::default()
    };
    Hive::from_bytes(bytes, &opts).map_err(|e| refused(e.into()))
}

/// Read the hive; for a guest source, also the opened tree (for a write back).
fn load(src: &Source, writable: bool) -> Result<(Hive, Option<crate::guesttree::Tree>), Failure> {
    use vmie_guestfs::GuestFsExt;
    match src {
        Source::File(file) => {
            let bytes = std::fs::read(file)
                .with_context(|| format!("reading {}", file.display()))
                .map_err(|e| Failure { code: 3, error: e })?;
            Ok((parse_hive(src.name(), bytes)?, None))
        }
        Source::Guest(t, g) => {
            let tree = crate::guesttree::open_tree(t, writable)?;
            let bytes = tree.fs().read(g).map_err(|e| crate::classify(e.into()))?;
            crate::human::vlog!("{}: read {} bytes", src.name(), bytes.len());
            Ok((parse_hive(src.name(), bytes)?, Some(tree)))
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn show_value(name: &str, v: &vmie_hive::Value) -> String {
    let data = match v.decoded() {
        Decoded::String(s) => quote(&s),
        Decoded::MultiString(l) => l.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "),
        Decoded::Dword(d) => format!("{d} (0x{d:08x})"),
        Decoded::Qword(q) => format!("{q} (0x{q:016x})"),
        Decoded::Raw(b) => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let shown = if name.is_empty() { "@" } else { name };
    format!("{shown} [{}] = {data}", type_name(v.vtype))
}

fn type_name(t: u32) -> String {
    use vmie_hive::reg_type as r;
    match t {
        r::NONE => "REG_NONE".into(),
        r::SZ => "REG_SZ".into(),
        r::EXPAND_SZ => "REG_EXPAND_SZ".into(),
        r::BINARY => "REG_BINARY".into(),
        r::DWORD => "REG_DWORD".into(),
        r::DWORD_BIG_ENDIAN => "REG_DWORD_BIG_ENDIAN".into(),
        r::LINK => "REG_LINK".into(),
        r::MULTI_SZ => "REG_MULTI_SZ".into(),
        r::RESOURCE_LIST => "REG_RESOURCE_LIST".into(),
        r::FULL_RESOURCE_DESCRIPTOR => "REG_FULL_RESOURCE_DESCRIPTOR".into(),
        r::RESOURCE_REQUIREMENTS_LIST => "REG_RESOURCE_REQUIREMENTS_LIST".into(),
        r::QWORD => "REG_QWORD".into(),
        other => format!("type {other}"),
    }
}

fn too_many(what: &str, extra: &[String]) -> Result<(), Failure> {
    if extra.is_empty() {
        Ok(())
    } else {
        Err(usage(format!(
            "{what}: unexpected argument(s) {}; see --help",
            extra.join(" ")
        )))
    }
}

pub(crate) fn hive(cmd: &HiveCommand) -> Result<(), Failure> {
    match cmd {
        HiveCommand::Export {
            source: first,
            rest,
        } => {
            let (src, rest) = source(first, rest)?;
            let key = rest.first();
            too_many("hive export", rest.get(1..).unwrap_or_default())?;
            let (h, _tree) = load(&src, false)?;
            let text = vmie_hive::try_export(&h, key.map(String::as_str))
                .map_err(|e| refused(e.into()))?;
            out!("{text}");
            Ok(())
        }
        HiveCommand::Get {
            source: first,
            rest,
        } => {
            let (src, rest) = source(first, rest)?;
            let Some(key) = rest.first() else {
                return Err(usage("hive get: give the KEY; see --help".into()));
            };
            too_many("hive get", rest.get(2..).unwrap_or_default())?;
            let (h, _tree) = load(&src, false)?;
            let name = rest.get(1).map(|v| if v == "@" { "" } else { v.as_str() });
            match vmie_hive::get(&h, key, name).map_err(|e| refused(e.into()))? {
                GetResult::Key {
                    path,
                    subkeys,
                    values,
                } => {
                    outln!("[{path}]");
                    for s in subkeys {
                        outln!("  {s}\\");
                    }
                    for v in &values {
                        outln!("  {}", show_value(&v.name, v));
                    }
                }
                GetResult::Value(v) => outln!("{}", show_value(&v.name, &v)),
            }
            Ok(())
        }
        HiveCommand::Merge {
            source: first,
            rest,
            dry_run,
        } => {
            let (src, rest) = source(first, rest)?;
            let Some(regfile) = rest.first().map(PathBuf::from) else {
                return Err(usage("hive merge: give the .reg file; see --help".into()));
            };
            too_many("hive merge", rest.get(1..).unwrap_or_default())?;
            if !regfile.exists() {
                return Err(usage(format!("{}: no such .reg file", regfile.display())));
            }
            let (mut h, tree) = load(&src, !dry_run)?;
            let text = std::fs::read(&regfile)
                .with_context(|| format!("reading {}", regfile.display()))
                .map_err(|e| Failure { code: 3, error: e })?;
            let text = decode_reg(&text);
            let report = vmie_hive::merge(&mut h, &text)
                .map_err(|e| refused(anyhow!("{}: {e}", regfile.display())))?;
            let bytes = h.to_bytes();
            vmie_hive::verify_with_nt_hive(&bytes, &report.edits).map_err(|e| {
                refused(anyhow!(
                    "self-check with nt-hive failed, nothing written: {e}"
                ))
            })?;
            let quiet = crate::human::quiet();
            if !quiet {
                outln!(
                    "{}: {} key(s) created, {} deleted; {} value(s) set, {} deleted",
                    src.name(),
                    report.keys_created,
                    report.keys_deleted,
                    report.values_set,
                    report.values_deleted
                );
            }
            match (&src, tree) {
                (Source::Guest(_, g), Some(mut tree)) => {
                    let puts = [crate::guesttree::Put {
                        path: g.clone(),
                        data: bytes,
                        backup: true,
                    }];
                    let (lines, journals) =
                        crate::guesttree::put_files(&mut tree, &puts, *dry_run)?;
                    if !quiet {
                        for l in lines {
                            outln!("{l}");
                        }
                        if !journals.is_empty() {
                            outln!("undo journal: {}", journals.join(", "));
                        }
                    }
                    Ok(())
                }
                (Source::File(file), _) => {
                    if *dry_run {
                        if !quiet {
                            outln!("dry run: nothing written");
                        }
                        return Ok(());
                    }
                    let mut backup = file.as_os_str().to_os_string();
                    backup.push(".vmie.bak");
                    let backup = PathBuf::from(backup);
                    if !backup.exists() {
                        std::fs::copy(file, &backup)
                            .with_context(|| {
                                format!("keeping the original as {}", backup.display())
                            })
                            .map_err(|e| Failure { code: 3, error: e })?;
                    }
                    let tmp = file.with_extension("vmie-tmp");
                    std::fs::write(&tmp, &bytes)
                        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                        .and_then(|_| std::fs::rename(&tmp, file))
                        .with_context(|| format!("writing {}", file.display()))
                        .map_err(|e| Failure { code: 3, error: e })?;
                    if !quiet {
                        outln!("written; the original is {}", backup.display());
                    }
                    Ok(())
                }
                (Source::Guest(..), None) => Err(Failure {
                    code: 3,
                    error: anyhow!("internal: the guest tree was not kept"),
                }),
            }
        }
    }
}

/// .reg files are UTF-16LE with a BOM (regedit) or UTF-8/ASCII (hivex).
fn decode_reg(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    let b = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    String::from_utf8_lossy(b).into_owned()
}

/// `{bootmgr}`.
const BOOTMGR_GUID: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
/// The boot manager's `default` element.
const ELEM_DEFAULT_OBJECT: u32 = 0x2300_0003;

/// Well-known BCD object GUIDs and the names bcdedit shows for them.
const WELL_KNOWN: &[(&str, &str)] = &[
    ("{9dea862c-5cdd-4e70-acc1-f32b344d4795}", "{bootmgr}"),
    ("{a5a30fa2-3d06-4e9f-b5f4-a01df9d1fcba}", "{fwbootmgr}"),
    ("{b2721d73-1db4-4c62-bf78-c548a880142d}", "{memdiag}"),
    ("{466f5a88-0af2-4f76-9038-095b170dc21c}", "{ntldr}"),
    ("{fa926493-6f1c-4193-a414-58f0b2456d1e}", "{current}"),
    ("{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}", "{emssettings}"),
    ("{4636856e-540f-4170-a130-a84776f4c654}", "{dbgsettings}"),
    ("{5189b25c-5558-4bf2-bca4-289b11bd29e2}", "{badmemory}"),
    ("{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}", "{globalsettings}"),
    (
        "{1afa9c49-16ab-4a5c-901b-212802da9460}",
        "{resumeloadersettings}",
    ),
    (
        "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}",
        "{bootloadersettings}",
    ),
    (
        "{7ff607e0-4395-11db-b0de-0800200c9a66}",
        "{hypervisorsettings}",
    ),
    ("{ae5534e0-a924-466c-b836-758539a3ee3a}", "{ramdiskoptions}"),
];

/// bcdedit's heading for an object type (`Description\Type`).
fn object_kind(t: u32) -> Option<&'static str> {
    Some(match t {
        0x1010_0001 => "Firmware Boot Manager",
        0x1010_0002 => "Windows Boot Manager",
        0x1020_0003 => "Windows Boot Loader",
        0x1020_0004 => "Resume from Hibernate",
        0x1020_0005 => "Windows Memory Tester",
        0x1030_0006 => "Windows Legacy OS Loader",
        0x1040_0008 => "Real-mode Boot Sector",
        0x1010_0009 | 0x1020_0009 => "Startup Application",
        0x1020_000a => "Boot Application",
        0x2010_0000 => "Inheritable Settings",
        0x2020_0003 => "Windows Boot Loader Settings",
        0x2020_0004 => "Resume Loader Settings",
        0x2030_0000 | 0x2040_0000 => "Inheritable Settings",
        0x3000_0000 => "Device options",
        _ => return None,
    })
}

/// bcdedit's name of an element, which depends on the object it is in for
/// application elements (0x2…): the same code means `default` in the boot
/// manager and `resumeobject` in an OS loader.
fn element_name(object_type: Option<u32>, code: u32) -> Option<&'static str> {
    let library = match code {
        0x1100_0001 => "device",
        0x1200_0002 => "path",
        0x1200_0004 => "description",
        0x1200_0005 => "locale",
        0x1400_0006 => "inherit",
        0x1500_0007 => "truncatememory",
        0x1400_0008 => "recoverysequence",
        0x1600_0009 => "recoveryenabled",
        0x1700_000a => "badmemorylist",
        0x1600_000b => "badmemoryaccess",
        0x1500_000c => "firstmegabytepolicy",
        0x1500_000d => "relocatephysical",
        0x1500_000e => "avoidlowmemory",
        0x1600_000f => "traditionalkseg",
        0x1600_0010 => "bootdebug",
        0x1500_0011 => "debugtype",
        0x1500_0012 => "debugaddress",
        0x1500_0013 => "debugport",
        0x1500_0014 => "baudrate",
        0x1500_0015 => "channel",
        0x1200_0016 => "targetname",
        0x1600_0017 => "noumex",
        0x1500_0018 => "debugstart",
        0x1200_0019 => "busparams",
        0x1500_001a => "hostip",
        0x1500_001b => "port",
        0x1600_001c => "dhcp",
        0x1200_001d => "key",
        0x1600_001e => "vm",
        0x1600_0020 => "bootems",
        0x1500_0022 => "emsport",
        0x1500_0023 => "emsbaudrate",
        0x1200_0030 => "loadoptions",
        0x1600_0040 => "advancedoptions",
        0x1600_0041 => "optionsedit",
        0x1500_0042 => "keyringaddress",
        0x1100_0043 => "bootstatdevice",
        0x1200_0044 => "bootstatfilepath",
        0x1600_0045 => "preservebootstat",
        0x1600_0046 => "graphicsmodedisabled",
        0x1500_0047 => "configaccesspolicy",
        0x1600_0048 => "nointegritychecks",
        0x1600_0049 => "testsigning",
        0x1200_004a => "fontpath",
        0x1500_004b => "integrityservices",
        0x1500_004c => "volumebandid",
        0x1600_0050 => "extendedinput",
        0x1500_0051 => "initialconsoleinput",
        0x1500_0052 => "graphicsresolution",
        0x1600_0053 => "restartonfailure",
        0x1600_0054 => "highestmode",
        0x1600_0060 => "isolatedcontext",
        0x1500_0065 => "displaymessage",
        0x1500_0066 => "displaymessageoverride",
        0x1600_0068 => "nobootuxtext",
        0x1600_0069 => "nobootuxprogress",
        0x1600_006a => "nobootuxfade",
        0x1600_006b => "bootuxreservepooldebug",
        0x1600_006c => "bootuxdisabled",
        0x1500_006d => "bootuxfadeframes",
        0x1600_006e => "bootuxdumpstats",
        0x1600_006f => "bootuxshowstats",
        0x1600_0071 => "multibootsystem",
        0x1600_0072 => "nokeyboard",
        0x1500_0073 => "aliaswindowskey",
        0x1600_0074 => "bootshutdowndisabled",
        0x1500_0075 => "performancefrequency",
        0x1500_0076 => "securebootrawpolicy",
        0x1700_0077 => "allowedinmemorysettings",
        0x1600_007b => "forcefipscrypto",
        0x1500_007d => "booterrorux",
        0x1600_007e => "flightsigning",
        0x1500_007f => "measuredbootlogformat",
        0x1500_0080 => "displayrotation",
        0x1500_0081 => "logcontrol",
        0x1600_0082 => "nofirmwaresync",
        0x1600_0087 => "numlock",
        _ => "",
    };
    if !library.is_empty() {
        return Some(library);
    }
    let app = object_type.map(|t| t & 0x000f_ffff);
    let name = match (app, code) {
        // Boot managers (Windows and firmware).
        (Some(1 | 2), 0x2400_0001) => "displayorder",
        (Some(1 | 2), 0x2400_0002) => "bootsequence",
        (Some(1 | 2), 0x2300_0003) => "default",
        (Some(1 | 2), 0x2500_0004) => "timeout",
        (Some(1 | 2), 0x2600_0005) => "resume",
        (Some(1 | 2), 0x2300_0006) => "resumeobject",
        (Some(1 | 2), 0x2400_0010) => "toolsdisplayorder",
        (Some(1 | 2), 0x2600_0020) => "displaybootmenu",
        (Some(1 | 2), 0x2600_0021) => "noerrordisplay",
        (Some(1 | 2), 0x2100_0022) => "bcddevice",
        (Some(1 | 2), 0x2200_0023) => "bcdfilepath",
        (Some(1 | 2), 0x2600_0028) => "processcustomactionsfirst",
        (Some(1 | 2), 0x2700_0030) => "customactions",
        (Some(1 | 2), 0x2600_0031) => "persistbootsequence",
        (Some(1 | 2), 0x2600_0032) => "skipstartupsequence",
        (Some(1 | 2), 0x2200_0040) => "fverecoveryurl",
        (Some(1 | 2), 0x2200_0041) => "fverecoverymessage",
        // Resume from hibernate.
        (Some(4), 0x2100_0001) => "filedevice",
        (Some(4), 0x2200_0002) => "filepath",
        (Some(4), 0x2600_0003) => "customsettings",
        (Some(4), 0x2600_0004) => "pae",
        (Some(4), 0x2100_0005) => "associatedosdevice",
        (Some(4), 0x2600_0006) => "debugoptionenabled",
        (Some(4), 0x2500_0007) => "bootux",
        (Some(4), 0x2500_0008) => "bootmenupolicy",
        (Some(4), 0x2600_0024) => "hormenabled",
        // Memory tester.
        (Some(5), 0x2500_0001) => "passcount",
        (Some(5), 0x2500_0002) => "testmix",
        (Some(5), 0x2500_0003) => "failurecount",
        (Some(5), 0x2500_0004) => "testtofail",
        (Some(5), 0x2600_0005) => "cacheenable",
        // Windows OS loader (and its inheritable settings).
        (_, 0x2100_0001) => "osdevice",
        (_, 0x2200_0002) => "systemroot",
        (_, 0x2300_0003) => "resumeobject",
        (_, 0x2600_0004) => "stampdisks",
        (_, 0x2600_0010) => "detecthal",
        (_, 0x2200_0011) => "kernel",
        (_, 0x2200_0012) => "hal",
        (_, 0x2200_0013) => "dbgtransport",
        (_, 0x2500_0020) => "nx",
        (_, 0x2500_0021) => "pae",
        (_, 0x2600_0022) => "winpe",
        (_, 0x2600_0024) => "nocrashautoreboot",
        (_, 0x2600_0025) => "lastknowngood",
        (_, 0x2600_0026) => "oslnointegritychecks",
        (_, 0x2600_0027) => "osltestsigning",
        (_, 0x2600_0030) => "nolowmem",
        (_, 0x2500_0031) => "removememory",
        (_, 0x2500_0032) => "increaseuserva",
        (_, 0x2500_0033) => "perfmem",
        (_, 0x2600_0040) => "vga",
        (_, 0x2600_0041) => "quietboot",
        (_, 0x2600_0042) => "novesa",
        (_, 0x2600_0043) => "novga",
        (_, 0x2500_0050) => "clustermodeaddressing",
        (_, 0x2600_0051) => "usephysicaldestination",
        (_, 0x2500_0052) => "restrictapiccluster",
        (_, 0x2200_0053) => "evstore",
        (_, 0x2600_0054) => "uselegacyapicmode",
        (_, 0x2600_0060) => "onecpu",
        (_, 0x2500_0061) => "numproc",
        (_, 0x2600_0062) => "maxproc",
        (_, 0x2500_0063) => "configflags",
        (_, 0x2600_0064) => "maxgroup",
        (_, 0x2600_0065) => "groupaware",
        (_, 0x2500_0066) => "groupsize",
        (_, 0x2600_0070) => "usefirmwarepcisettings",
        (_, 0x2500_0071) => "msi",
        (_, 0x2500_0072) => "pciexpress",
        (_, 0x2500_0080) => "safeboot",
        (_, 0x2600_0081) => "safebootalternateshell",
        (_, 0x2600_0090) => "bootlog",
        (_, 0x2600_0091) => "sos",
        (_, 0x2600_00a0) => "debug",
        (_, 0x2600_00a1) => "halbreakpoint",
        (_, 0x2600_00a2) => "useplatformclock",
        (_, 0x2600_00a3) => "forcelegacyplatform",
        (_, 0x2600_00a4) => "useplatformtick",
        (_, 0x2600_00a5) => "disabledynamictick",
        (_, 0x2500_00a6) => "tscsyncpolicy",
        (_, 0x2600_00b0) => "ems",
        (_, 0x2500_00c0) => "forcefailure",
        (_, 0x2500_00c1) => "driverloadfailurepolicy",
        (_, 0x2500_00c2) => "bootmenupolicy",
        (_, 0x2600_00c3) => "onetimeadvancedoptions",
        (_, 0x2600_00c4) => "onetimeoptionsedit",
        (_, 0x2500_00e0) => "bootstatuspolicy",
        (_, 0x2600_00e1) => "disableelamdrivers",
        (_, 0x2500_00f0) => "hypervisorlaunchtype",
        (_, 0x2200_00f1) => "hypervisorpath",
        (_, 0x2600_00f2) => "hypervisordebug",
        (_, 0x2500_00f3) => "hypervisordebugtype",
        (_, 0x2500_00f4) => "hypervisordebugport",
        (_, 0x2500_00f5) => "hypervisorbaudrate",
        (_, 0x2500_00f6) => "hypervisorchannel",
        (_, 0x2500_00f7) => "bootux",
        (_, 0x2600_00f8) => "hypervisordisableslat",
        (_, 0x2200_00f9) => "hypervisorbusparams",
        (_, 0x2500_00fa) => "hypervisornumproc",
        (_, 0x2500_00fb) => "hypervisorrootprocpernode",
        (_, 0x2600_00fc) => "hypervisoruselargevtlb",
        (_, 0x2500_00fd) => "hypervisorhostip",
        (_, 0x2500_00fe) => "hypervisorhostport",
        (_, 0x2500_00ff) => "hypervisordebugpages",
        (_, 0x2500_0100) => "tpmbootentropy",
        (_, 0x2200_0110) => "hypervisorusekey",
        (_, 0x2200_0112) => "hypervisorproductskutype",
        (_, 0x2500_0113) => "hypervisorrootproc",
        (_, 0x2600_0114) => "hypervisordhcp",
        (_, 0x2500_0115) => "hypervisoriommupolicy",
        (_, 0x2600_0116) => "hypervisorusevapic",
        (_, 0x2200_0117) => "hypervisorloadoptions",
        (_, 0x2500_0118) => "hypervisormsrfilterpolicy",
        (_, 0x2500_0119) => "hypervisormmionxpolicy",
        (_, 0x2500_011a) => "hypervisorschedulertype",
        (_, 0x2500_0120) => "xsavepolicy",
        // Device options (RAM disks).
        (_, 0x3500_0001) => "ramdiskimageoffset",
        (_, 0x3500_0002) => "ramdisktftpclientport",
        (_, 0x3100_0003) => "ramdisksdidevice",
        (_, 0x3200_0004) => "ramdisksdipath",
        (_, 0x3500_0005) => "ramdiskimagelength",
        (_, 0x3600_0006) => "exportascd",
        (_, 0x3500_0007) => "ramdisktftpblocksize",
        (_, 0x3500_0008) => "ramdisktftpwindowsize",
        (_, 0x3600_0009) => "ramdiskmcenabled",
        (_, 0x3600_000a) => "ramdiskmctftpfallback",
        (_, 0x3600_000b) => "ramdisktftpvarwindow",
        _ => return None,
    };
    Some(name)
}

/// bcdedit's word for an enumerated integer element's value.
fn integer_word(object_type: Option<u32>, code: u32, v: u64) -> Option<&'static str> {
    let name = element_name(object_type, code)?;
    Some(match (name, v) {
        ("nx", 0) => "OptIn",
        ("nx", 1) => "OptOut",
        ("nx", 2) => "AlwaysOff",
        ("nx", 3) => "AlwaysOn",
        ("pae", 0) => "Default",
        ("pae", 1) => "ForceEnable",
        ("pae", 2) => "ForceDisable",
        ("bootmenupolicy", 0) => "Legacy",
        ("bootmenupolicy", 1) => "Standard",
        ("bootstatuspolicy", 0) => "DisplayAllFailures",
        ("bootstatuspolicy", 1) => "IgnoreAllFailures",
        ("bootstatuspolicy", 2) => "IgnoreShutdownFailures",
        ("bootstatuspolicy", 3) => "IgnoreBootFailures",
        ("hypervisorlaunchtype", 0) => "Off",
        ("hypervisorlaunchtype", 1) => "Auto",
        ("debugtype", 0) => "Serial",
        ("debugtype", 1) => "1394",
        ("debugtype", 2) => "USB",
        ("debugtype", 3) => "NET",
        ("debugtype", 4) => "Local",
        _ => return None,
    })
}

/// An object reference as bcdedit shows it: its well-known name, or
/// `{default}` for the boot manager's default loader, else the GUID.
fn object_ref(guid: &str, default: Option<&str>) -> String {
    if let Some((_, n)) = WELL_KNOWN
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid))
    {
        return (*n).to_string();
    }
    if default.is_some_and(|d| d.eq_ignore_ascii_case(guid)) {
        return "{default}".into();
    }
    guid.to_string()
}

pub(crate) fn bcd(cmd: &BcdCommand) -> Result<(), Failure> {
    match cmd {
        BcdCommand::Show {
            source: first,
            rest,
        } => {
            let (src, rest) = source(first, rest)?;
            too_many("bcd show", &rest)?;
            let (h, _tree) = load(&src, false)?;
            let objects = vmie_hive::bcd::objects(&h).map_err(|e| {
                let name = src.name();
                let e = e.to_string();
                let why = e.strip_prefix(&format!("{name}: ")).unwrap_or(&e);
                refused(anyhow!(
                    "{name}: not a BCD store (a boot configuration store has an \\Objects key of {{GUID}} objects): {why}"
                ))
            })?;
            if objects.is_empty() {
                return Err(refused(anyhow!(
                    "{}: not a BCD store, or an empty one: its \\Objects key holds no objects",
                    src.name()
                )));
            }
            // The boot manager's default loader, shown as {default}.
            let default = objects
                .iter()
                .find(|o| o.guid.eq_ignore_ascii_case(BOOTMGR_GUID))
                .and_then(|o| {
                    o.elements.iter().find_map(|e| match (&e.value, e.code) {
                        (BcdValue::Object(g), ELEM_DEFAULT_OBJECT) => Some(g.clone()),
                        _ => None,
                    })
                });
            let d = default.as_deref();
            let mut first_obj = true;
            for o in &objects {
                let heading = match o.object_type.and_then(object_kind) {
                    Some(k) => k.to_string(),
                    None => format!(
                        "Object of type {}",
                        o.object_type
                            .map(|t| format!("0x{t:08x}"))
                            .unwrap_or_else(|| "unknown".into())
                    ),
                };
                if !first_obj {
                    outln!();
                }
                first_obj = false;
                outln!("{heading}");
                outln!("{}", "-".repeat(heading.chars().count()));
                let id = object_ref(&o.guid, d);
                if id == o.guid {
                    outln!("{:<24}{}", "identifier", o.guid);
                } else {
                    outln!("{:<24}{id} ({})", "identifier", o.guid);
                }
                for e in &o.elements {
                    let v = match &e.value {
                        BcdValue::Device(b) => format!("(device, {} bytes)", b.len()),
                        BcdValue::String(s) => s.clone(),
                        BcdValue::Object(g) => object_ref(g, d),
                        BcdValue::ObjectList(l) => l
                            .iter()
                            .map(|g| object_ref(g, d))
                            .collect::<Vec<_>>()
                            .join("\n                        "),
                        BcdValue::Integer(i) => integer_word(o.object_type, e.code, *i)
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string()),
                        BcdValue::Boolean(b) => {
                            if *b {
                                "Yes".into()
                            } else {
                                "No".into()
                            }
                        }
                        BcdValue::IntegerList(l) => l
                            .iter()
                            .map(|x| format!("0x{x:x}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        BcdValue::Raw(t, b) => {
                            format!("({}, {} bytes)", type_name(*t), b.len())
                        }
                    };
                    let name = match element_name(o.object_type, e.code) {
                        Some(n) => n.to_string(),
                        None => format!("custom:{:08x}", e.code),
                    };
                    outln!("{name:<24}{v}");
                }
            }
            Ok(())
        }
    }
}
