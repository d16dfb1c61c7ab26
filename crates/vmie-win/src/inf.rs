//! Just enough of the Windows INF format to find a driver package's
//! boot-start services: the ones an offline import must register so that
//! the first boot on the new hardware finds its disk.
//!
//! What is read (the INF reference on learn.microsoft.com: "INF Manufacturer
//! Section", "INF Models Section", "INF DDInstall.Services Section", "INF
//! AddService Directive", "Strings"):
//!
//! - `[Version]` `Class` and `ClassGuid`;
//! - `[Manufacturer]`: each `%Mfg% = Models[, TargetOSVersion...]`; the
//!   models section used is `Models.<decoration>` for the decoration that
//!   fits the guest best (`NT<arch>[.major[.minor[.product[.suite[.build]]]]]`,
//!   the highest version not above the guest's; `NT` alone fits any arch),
//!   else the undecorated `Models` section;
//! - each model line `desc = DDInstall, hw-id[, compatible-id...]`;
//! - `DDInstall.NT<arch>.Services`, `DDInstall.NT.Services` or
//!   `DDInstall.Services` (the same order Windows tries its install
//!   sections in), its `AddService = name, flags, service-install-section`
//!   lines with the `SPSVCINST_ASSOCSERVICE` flag (0x2: the device's
//!   function driver), and the service install section's `ServiceType`,
//!   `StartType`, `ErrorControl`, `ServiceBinary` and `LoadOrderGroup`;
//! - `%token%` replaced from `[Strings]` (any `Strings.*` section as well).
//!
//! The text is UTF-16LE with a byte order mark, or 8-bit/UTF-8. Input comes
//! from the user's `--drivers` folder, not from the guest, but it is parsed
//! as carefully: sizes and counts are capped, nothing panics.

use std::collections::BTreeMap;

/// Largest INF read (real ones are under 100 KiB).
pub const MAX_INF_BYTES: usize = 4 << 20;
/// Most lines in one section, and most sections.
const MAX_LINES: usize = 100_000;
/// Most hardware ids registered for one service.
pub const MAX_HARDWARE_IDS: usize = 1024;

/// `SERVICE_BOOT_START`.
pub const SERVICE_BOOT_START: u32 = 0;
/// `SERVICE_KERNEL_DRIVER`.
pub const SERVICE_KERNEL_DRIVER: u32 = 1;
/// `SPSVCINST_ASSOCSERVICE`: the service is the device's function driver.
const SPSVCINST_ASSOCSERVICE: u32 = 0x2;

/// One `key = values` line (or a bare value list) of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    key: Option<String>,
    values: Vec<String>,
}

/// A parsed INF: sections by lower-case name, in file order within each.
#[derive(Debug, Clone, Default)]
pub struct Inf {
    sections: BTreeMap<String, Vec<Line>>,
    strings: BTreeMap<String, String>,
}

/// A boot-start kernel driver service a package installs for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootService {
    /// Service name (`viostor`, `AWSNVMe`).
    pub service: String,
    /// The file name of its `ServiceBinary` (`viostor.sys`).
    pub binary: String,
    /// `ErrorControl` (1 when absent).
    pub error_control: u32,
    /// `LoadOrderGroup`, if any.
    pub group: Option<String>,
    /// `[Version]` `ClassGuid` (braced, upper case), if any.
    pub class_guid: Option<String>,
    /// `[Version]` `Class`, if any.
    pub class: Option<String>,
    /// The hardware and compatible ids of every device it drives, upper
    /// case, in file order, without repeats.
    pub hardware_ids: Vec<String>,
}

/// Why an INF cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfError {
    /// Larger than [`MAX_INF_BYTES`].
    #[error("{size} bytes, more than the {MAX_INF_BYTES} an INF may have")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// More lines or sections than the parser keeps.
    #[error("more than {MAX_LINES} lines or sections")]
    TooManyLines,
    /// A number that does not parse.
    #[error("[{section}] {key} = {value:?}: not a number")]
    BadNumber {
        /// Section name.
        section: String,
        /// Key.
        key: String,
        /// The text.
        value: String,
    },
    /// A boot-start service without a `ServiceBinary`.
    #[error("[{section}]: a boot-start service with no ServiceBinary")]
    NoBinary {
        /// Section name.
        section: String,
    },
}

/// The text of an INF file: UTF-16LE after a `FF FE` mark, else UTF-8
/// (invalid bytes replaced), a UTF-8 mark dropped.
pub fn decode(bytes: &[u8]) -> Result<String, InfError> {
    if bytes.len() > MAX_INF_BYTES {
        return Err(InfError::TooLarge { size: bytes.len() });
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return Ok(String::from_utf16_lossy(&units));
    }
    let rest = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    Ok(String::from_utf8_lossy(rest).into_owned())
}

/// Split one logical line into its fields: commas separate, `"..."` quotes
/// (`""` inside is one quote), `;` outside quotes starts a comment.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ';' if !quoted => break,
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// The position of the first `=` outside quotes and before any comment.
fn equals_at(line: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return None,
            '=' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

impl Inf {
    /// Parse INF text. Lines ending in `\` continue on the next one.
    pub fn parse(text: &str) -> Result<Inf, InfError> {
        let mut inf = Inf::default();
        let mut current: Option<String> = None;
        let mut count = 0usize;
        let mut pending = String::new();
        for raw in text.lines() {
            count += 1;
            if count > MAX_LINES {
                return Err(InfError::TooManyLines);
            }
            let t = raw.trim();
            if let Some(head) = t.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            let full = std::mem::take(&mut pending) + t;
            let line = full.trim();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                if let Some(end) = rest.find(']') {
                    let name = rest[..end].trim().to_ascii_lowercase();
                    inf.sections.entry(name.clone()).or_default();
                    current = Some(name);
                    continue;
                }
            }
            let Some(sec) = current.clone() else {
                continue;
            };
            let parsed = match equals_at(line) {
                Some(eq) => Line {
                    key: Some(fields(&line[..eq]).join(",").trim().to_string()),
                    values: fields(&line[eq + 1..]),
                },
                None => Line {
                    key: None,
                    values: fields(line),
                },
            };
            if parsed.key.is_none() && parsed.values.iter().all(String::is_empty) {
                continue;
            }
            inf.sections.entry(sec).or_default().push(parsed);
        }
        // [Strings] and [Strings.LLLL]: the neutral section wins.
        let mut names: Vec<&String> = inf
            .sections
            .keys()
            .filter(|k| *k == "strings" || k.starts_with("strings."))
            .collect();
        names.sort_by_key(|k| *k != "strings");
        let mut strings = BTreeMap::new();
        for n in names {
            for l in &inf.sections[n] {
                if let (Some(k), Some(v)) = (&l.key, l.values.first()) {
                    strings
                        .entry(k.to_ascii_lowercase())
                        .or_insert_with(|| v.clone());
                }
            }
        }
        inf.strings = strings;
        Ok(inf)
    }

    /// `%token%` replaced from `[Strings]` (`%%` is one `%`; an unknown
    /// token is kept as it is).
    fn expand(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(a) = rest.find('%') {
            out.push_str(&rest[..a]);
            let after = &rest[a + 1..];
            match after.find('%') {
                Some(0) => {
                    out.push('%');
                    rest = &after[1..];
                }
                Some(b) => {
                    let token = &after[..b];
                    match self.strings.get(&token.to_ascii_lowercase()) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push('%');
                            out.push_str(token);
                            out.push('%');
                        }
                    }
                    rest = &after[b + 1..];
                }
                None => {
                    out.push_str(&rest[a..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn section(&self, name: &str) -> Option<&[Line]> {
        self.sections
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The first value of `key` in `section`, expanded.
    fn value(&self, section: &str, key: &str) -> Option<String> {
        self.section(section)?
            .iter()
            .find(|l| {
                l.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case(key))
            })
            .and_then(|l| l.values.first())
            .map(|v| self.expand(v))
    }

    fn number(&self, section: &str, key: &str) -> Result<Option<u32>, InfError> {
        let Some(v) = self.value(section, key) else {
            return Ok(None);
        };
        parse_number(&v)
            .map(Some)
            .ok_or_else(|| InfError::BadNumber {
                section: section.to_string(),
                key: key.to_string(),
                value: v.clone(),
            })
    }

    /// `[Version]` `Class`.
    pub fn class(&self) -> Option<String> {
        self.value("Version", "Class")
    }

    /// The models sections for a guest of `arch` (`amd64`, `x86`, `arm64`)
    /// and version (`major`, `minor`, `build`).
    fn models_sections(&self, arch: &str, version: (u32, u32), build: Option<u32>) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.section("Manufacturer").unwrap_or_default() {
            let Some(base) = l.values.first().filter(|b| !b.is_empty()) else {
                continue;
            };
            // (specificity: arch-specific, version) of the best decoration.
            let mut best: Option<((bool, u32, u32, u32), String)> = None;
            for d in l.values.iter().skip(1) {
                if let Some(rank) = decoration_rank(d, arch, version, build) {
                    if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                        best = Some((rank, format!("{base}.{d}")));
                    }
                }
            }
            let name = match best {
                Some((_, n)) if self.section(&n).is_some() => n,
                _ => base.clone(),
            };
            if self.section(&name).is_some() && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// The boot-start kernel services this package installs as function
    /// drivers for a guest of `arch` and version, with the ids of the
    /// devices each drives.
    pub fn boot_services(
        &self,
        arch: &str,
        version: (u32, u32),
        build: Option<u32>,
    ) -> Result<Vec<BootService>, InfError> {
        let class_guid = self
            .value("Version", "ClassGuid")
            .map(|g| g.trim().to_ascii_uppercase());
        let class = self.class();
        let mut out: Vec<BootService> = Vec::new();
        for models in self.models_sections(arch, version, build) {
            for l in self.section(&models).unwrap_or_default() {
                let Some(install) = l.values.first().map(|v| self.expand(v)) else {
                    continue;
                };
                let ids: Vec<String> = l
                    .values
                    .iter()
                    .skip(1)
                    .map(|v| self.expand(v).trim().to_ascii_uppercase())
                    .filter(|v| !v.is_empty())
                    .collect();
                if install.is_empty() || ids.is_empty() {
                    continue;
                }
                let services = [
                    format!("{install}.NT{arch}.Services"),
                    format!("{install}.NT.Services"),
                    format!("{install}.Services"),
                ]
                .into_iter()
                .find(|s| self.section(s).is_some());
                let Some(services) = services else {
                    continue;
                };
                for a in self.section(&services).unwrap_or_default() {
                    if !a
                        .key
                        .as_deref()
                        .is_some_and(|k| k.eq_ignore_ascii_case("AddService"))
                    {
                        continue;
                    }
                    let name = a.values.first().map(|v| self.expand(v)).unwrap_or_default();
                    let flags = a
                        .values
                        .get(1)
                        .and_then(|v| parse_number(&self.expand(v)))
                        .unwrap_or(0);
                    let Some(sec) = a.values.get(2).map(|v| self.expand(v)) else {
                        continue;
                    };
                    if name.is_empty() || flags & SPSVCINST_ASSOCSERVICE == 0 {
                        continue;
                    }
                    let start = self.number(&sec, "StartType")?;
                    let stype = self.number(&sec, "ServiceType")?;
                    if start != Some(SERVICE_BOOT_START) || stype != Some(SERVICE_KERNEL_DRIVER) {
                        continue;
                    }
                    let binary = self
                        .value(&sec, "ServiceBinary")
                        .and_then(|b| b.rsplit(['\\', '/']).next().map(|s| s.trim().to_string()))
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| InfError::NoBinary {
                            section: sec.clone(),
                        })?;
                    let error_control = self.number(&sec, "ErrorControl")?.unwrap_or(1);
                    let group = self
                        .value(&sec, "LoadOrderGroup")
                        .filter(|g| !g.trim().is_empty());
                    let entry = match out
                        .iter_mut()
                        .position(|s| s.service.eq_ignore_ascii_case(&name))
                    {
                        Some(i) => &mut out[i],
                        None => {
                            out.push(BootService {
                                service: name.clone(),
                                binary,
                                error_control,
                                group,
                                class_guid: class_guid.clone(),
                                class: class.clone(),
                                hardware_ids: Vec::new(),
                            });
                            let last = out.len() - 1;
                            &mut out[last]
                        }
                    };
                    for id in &ids {
                        if entry.hardware_ids.len() < MAX_HARDWARE_IDS
                            && !entry.hardware_ids.contains(id)
                        {
                            entry.hardware_ids.push(id.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// An INF number: decimal, or hexadecimal after `0x`; surrounding blanks
/// ignored.
fn parse_number(t: &str) -> Option<u32> {
    let t = t.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// How well a `[Manufacturer]` decoration fits: `None` when it does not;
/// else (arch-specific, major, minor, build), larger is better.
fn decoration_rank(
    d: &str,
    arch: &str,
    version: (u32, u32),
    build: Option<u32>,
) -> Option<(bool, u32, u32, u32)> {
    let mut parts = d.split('.');
    let head = parts.next()?.trim();
    let rest = head
        .get(..2)
        .filter(|p| p.eq_ignore_ascii_case("NT"))
        .map(|_| &head[2..])?;
    let specific = !rest.is_empty();
    if specific && !rest.eq_ignore_ascii_case(arch) {
        return None;
    }
    let num = |p: Option<&str>| -> Option<u32> {
        match p.map(str::trim) {
            None | Some("") => Some(0),
            Some(t) => parse_number(t),
        }
    };
    let major = num(parts.next())?;
    let minor = num(parts.next())?;
    let _product = parts.next();
    let _suite = parts.next();
    let b = num(parts.next())?;
    if (major, minor) > version {
        return None;
    }
    if b > 0 && build.is_some_and(|g| b > g) {
        return None;
    }
    Some((specific, major, minor, b))
}

/// The INF arch decoration of an inspected arch (`x86_64` → `amd64`).
pub fn inf_arch(arch: &str) -> &'static str {
    match arch {
        "i386" | "i486" | "i586" | "i686" | "x86" => "x86",
        "aarch64" | "arm64" => "arm64",
        "ia64" => "ia64",
        _ => "amd64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of virtio-win's viostor.inf (Red Hat's package for KVM):
    /// decorated models, a Strings table, a boot-start miniport.
    const VIOSTOR: &str = r#"
; comment
[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%VENDOR%

[Manufacturer]
%VENDOR% = VENDOR,NTamd64.10.0, NTx86.10.0

[VENDOR.NTamd64.10.0]
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, \
   PCI\VEN_1AF4&DEV_1001
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01

[rhelscsi_inst]
CopyFiles=MINIPORT.CopyFiles

[rhelscsi_inst.Services]
AddService = viostor, 0x00000002 , rhelscsi_Service_Inst, miniport_EventLog_Inst

[rhelscsi_Service_Inst]
ServiceType    = %SERVICE_KERNEL_DRIVER%
StartType      = %SERVICE_BOOT_START%
ErrorControl   = %SERVICE_ERROR_NORMAL%
ServiceBinary  = %12%\viostor.sys
LoadOrderGroup = SCSI miniport

[Strings]
VENDOR = "Red Hat, Inc."
RHELScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"
SERVICE_BOOT_START = 0x0
SERVICE_KERNEL_DRIVER = 1
SERVICE_ERROR_NORMAL = 1
"#;

    #[test]
    fn virtio_style_boot_miniport() {
        let inf = Inf::parse(VIOSTOR).unwrap();
        let s = inf.boot_services("amd64", (10, 0), Some(19041)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].service, "viostor");
        assert_eq!(s[0].binary, "viostor.sys");
        assert_eq!(s[0].group.as_deref(), Some("SCSI miniport"));
        assert_eq!(s[0].error_control, 1);
        assert_eq!(
            s[0].class_guid.as_deref(),
            Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
        );
        assert_eq!(
            s[0].hardware_ids,
            [
                "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
                "PCI\\VEN_1AF4&DEV_1001",
                "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"
            ]
        );
        // Windows 7 (6.1) fits no decoration and there is no undecorated
        // models section: nothing.
        assert!(inf.boot_services("amd64", (6, 1), None).unwrap().is_empty());
        // The x86 section is named but absent: nothing.
        assert!(inf.boot_services("x86", (10, 0), None).unwrap().is_empty());
    }

    #[test]
    fn utf16_with_bom_decodes() {
        let mut b = vec![0xFF, 0xFE];
        b.extend(VIOSTOR.encode_utf16().flat_map(u16::to_le_bytes));
        let text = decode(&b).unwrap();
        let s = Inf::parse(&text)
            .unwrap()
            .boot_services("amd64", (10, 0), None)
            .unwrap();
        assert_eq!(s[0].service, "viostor");
        // An odd trailing byte is dropped, not a panic.
        b.push(0x41);
        assert!(decode(&b).is_ok());
    }

    #[test]
    fn demand_start_and_non_function_services_are_not_boot_drivers() {
        let t = VIOSTOR.replace("StartType      = %SERVICE_BOOT_START%", "StartType = 3");
        assert!(Inf::parse(&t)
            .unwrap()
            .boot_services("amd64", (10, 0), None)
            .unwrap()
            .is_empty());
        let t = VIOSTOR.replace("viostor, 0x00000002 ,", "viostor, 0 ,");
        assert!(Inf::parse(&t)
            .unwrap()
            .boot_services("amd64", (10, 0), None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn best_decoration_wins_and_undecorated_is_the_fallback() {
        let t = r"
[Manufacturer]
%M% = M, NTamd64.6.1, NTamd64.6.3, NTamd64.10.0.0.0.22000
[M]
x = old, PCI\VEN_1&DEV_1
[M.NTamd64.6.1]
x = w7, PCI\VEN_1&DEV_2
[M.NTamd64.6.3]
x = w81, PCI\VEN_1&DEV_3
[M.NTamd64.10.0.0.0.22000]
x = w11, PCI\VEN_1&DEV_4
[w7.Services]
AddService = s7, 2, s
[w81.NTamd64.Services]
AddService = s81, 2, s
[w11.Services]
AddService = s11, 2, s
[old.Services]
AddService = sold, 2, s
[s]
ServiceType=1
StartType=0
ServiceBinary=%12%\x.sys
";
        let inf = Inf::parse(t).unwrap();
        let name = |v, b| inf.boot_services("amd64", v, b).unwrap()[0].service.clone();
        assert_eq!(name((6, 1), Some(7601)), "s7");
        assert_eq!(name((6, 3), Some(9600)), "s81");
        assert_eq!(name((10, 0), Some(17763)), "s81");
        assert_eq!(name((10, 0), Some(22631)), "s11");
        assert_eq!(name((6, 0), None), "sold");
        assert_eq!(
            inf.boot_services("x86", (10, 0), None).unwrap()[0].service,
            "sold"
        );
    }

    #[test]
    fn hostile_text_is_refused_or_ignored_without_panic() {
        assert!(matches!(
            decode(&vec![b'a'; MAX_INF_BYTES + 1]),
            Err(InfError::TooLarge { .. })
        ));
        let t = VIOSTOR.replace(
            "ErrorControl   = %SERVICE_ERROR_NORMAL%",
            "ErrorControl = zz",
        );
        assert!(matches!(
            Inf::parse(&t)
                .unwrap()
                .boot_services("amd64", (10, 0), None),
            Err(InfError::BadNumber { .. })
        ));
        let t = VIOSTOR.replace("ServiceBinary  = %12%\\viostor.sys", "");
        assert!(matches!(
            Inf::parse(&t)
                .unwrap()
                .boot_services("amd64", (10, 0), None),
            Err(InfError::NoBinary { .. })
        ));
        for s in ["[", "[a", "=", "%", "%%%", "a=\"", ";", "\\", "[x]\n\\\n\\"] {
            let inf = Inf::parse(s).unwrap();
            let _ = inf.boot_services("amd64", (10, 0), None);
            let _ = inf.expand(s);
        }
    }
}
