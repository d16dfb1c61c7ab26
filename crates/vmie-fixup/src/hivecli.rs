//! `vmie-fixup hive …` and `vmie-fixup bcd …`: offline registry hive files,
//! in the manner of hivexregedit and bcdedit.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Subcommand;
use vmie_hive::bcd::BcdValue;
use vmie_hive::{Decoded, GetResult, Hive, HiveOptions};

use crate::{refused, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum HiveCommand {
    /// Print a hive (or one key of it) as a regedit .reg file, like
    /// `hivexregedit --export`.
    Export {
        /// The hive file (SYSTEM, SOFTWARE, NTUSER.DAT, BCD, …).
        file: PathBuf,
        /// The key to export, e.g. `ControlSet001\Services\Tcpip`; default the root.
        key: Option<String>,
    },
    /// Apply a .reg file to a hive (keys, values, `-` deletions), like
    /// `hivexregedit --merge`. The original is kept as FILE.vmie.bak.
    #[command(
        after_help = "EXAMPLES:\n    vmie-fixup hive merge --dry-run SYSTEM changes.reg\n    vmie-fixup hive merge SYSTEM changes.reg"
    )]
    Merge {
        /// The hive file to change in place.
        file: PathBuf,
        /// The .reg file.
        regfile: PathBuf,
        /// Say what would change, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Print a key (its subkeys and values) or one value.
    Get {
        /// The hive file.
        file: PathBuf,
        /// The key, e.g. `Select`.
        key: String,
        /// A value name (`@` for the default value).
        value: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BcdCommand {
    /// List the objects of a BCD store (GUID, type, description) with their
    /// elements, like `bcdedit /enum all /v`.
    Show {
        /// The BCD store file (Boot\BCD or EFI\Microsoft\Boot\BCD).
        file: PathBuf,
    },
}

fn load(file: &Path) -> Result<Hive, Failure> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("reading {}", file.display()))
        .map_err(|e| Failure { code: 3, error: e })?;
    let opts = HiveOptions {
        name: file.display().to_string(),
        ..HiveOptions::default()
    };
    Hive::from_bytes(bytes, &opts).map_err(|e| refused(e.into()))
}

fn show_value(name: &str, v: &vmie_hive::Value) -> String {
    let data = match v.decoded() {
        Decoded::String(s) => format!("{s:?}"),
        Decoded::MultiString(l) => format!("{l:?}"),
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

pub(crate) fn hive(cmd: &HiveCommand) -> Result<(), Failure> {
    match cmd {
        HiveCommand::Export { file, key } => {
            let h = load(file)?;
            let text = vmie_hive::try_export(&h, key.as_deref()).map_err(|e| refused(e.into()))?;
            out!("{text}");
            Ok(())
        }
        HiveCommand::Get { file, key, value } => {
            let h = load(file)?;
            let name = value.as_deref().map(|v| if v == "@" { "" } else { v });
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
            file,
            regfile,
            dry_run,
        } => {
            let mut h = load(file)?;
            let text = std::fs::read(regfile)
                .with_context(|| format!("reading {}", regfile.display()))
                .map_err(|e| Failure { code: 3, error: e })?;
            let text = decode_reg(&text);
            let report = vmie_hive::merge(&mut h, &text).map_err(|e| refused(e.into()))?;
            let bytes = h.to_bytes();
            vmie_hive::verify_with_nt_hive(&bytes, &report.edits).map_err(|e| {
                refused(anyhow!(
                    "self-check with nt-hive failed, nothing written: {e}"
                ))
            })?;
            outln!(
                "{}: {} key(s) created, {} deleted; {} value(s) set, {} deleted",
                file.display(),
                report.keys_created,
                report.keys_deleted,
                report.values_set,
                report.values_deleted
            );
            if *dry_run {
                outln!("dry run: nothing written");
                return Ok(());
            }
            let mut backup = file.as_os_str().to_os_string();
            backup.push(".vmie.bak");
            let backup = PathBuf::from(backup);
            if !backup.exists() {
                std::fs::copy(file, &backup)
                    .with_context(|| format!("keeping the original as {}", backup.display()))
                    .map_err(|e| Failure { code: 3, error: e })?;
            }
            let tmp = file.with_extension("vmie-tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, file))
                .with_context(|| format!("writing {}", file.display()))
                .map_err(|e| Failure { code: 3, error: e })?;
            outln!("written; the original is {}", backup.display());
            Ok(())
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

pub(crate) fn bcd(cmd: &BcdCommand) -> Result<(), Failure> {
    match cmd {
        BcdCommand::Show { file } => {
            let h = load(file)?;
            for o in vmie_hive::bcd::show(&h) {
                outln!(
                    "{}  type {}  {}",
                    o.guid,
                    o.object_type
                        .map(|t| format!("0x{t:08x}"))
                        .unwrap_or_else(|| "?".into()),
                    o.description.as_deref().unwrap_or("")
                );
                for e in &o.elements {
                    let v = match &e.value {
                        BcdValue::Device(b) => format!("device ({} bytes)", b.len()),
                        BcdValue::String(s) => format!("{s:?}"),
                        BcdValue::Object(g) => g.clone(),
                        BcdValue::ObjectList(l) => l.join(" "),
                        BcdValue::Integer(i) => i.to_string(),
                        BcdValue::Boolean(b) => {
                            if *b {
                                "Yes".into()
                            } else {
                                "No".into()
                            }
                        }
                        BcdValue::IntegerList(l) => {
                            l.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
                        }
                        BcdValue::Raw(t, b) => format!("raw type {t} ({} bytes)", b.len()),
                    };
                    outln!("    {:08x}  {v}", e.code);
                }
            }
            Ok(())
        }
    }
}
