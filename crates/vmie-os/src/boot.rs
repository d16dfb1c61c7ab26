//! Kernels, boot loader, default kernel, firmware.
//!
//! Firmware heuristic: `uefi` when fstab mounts `/boot/efi` or `/efi` (or
//! `/boot` as vfat), or when an EFI binary (`*.efi`: grub, shim,
//! systemd-boot, `BOOT*.EFI`) or a grub.cfg is found under
//! `/boot/efi/EFI/*/` or `/efi/EFI/*/` in the root filesystem (an ESP is
//! usually a separate filesystem, so fstab is the main evidence); `bios`
//! otherwise. A guest set up for both (hybrid images) reports `uefi`; the
//! evidence is listed in [`Bootloader::firmware_evidence`].

use std::collections::BTreeMap;

use serde::Serialize;
use vmie_guestfs::{FileType, GuestFsExt};

use crate::fstab::FstabEntry;
use crate::initramfs::{self, DriverState, InitramfsInfo, InitramfsLimits};
use crate::util::{join, shell_vars, unquote, var, version_cmp, Ctx};

/// Firmware the guest is set up to boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Bios,
}

/// One menu entry of a boot loader configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct MenuEntry {
    /// Title (`menuentry 'TITLE'`, `title`, `LABEL`/`MENU LABEL`, BLS `title`).
    pub title: String,
    /// GRUB 2 `--id`/`$menuentry_id_option` or BLS file stem.
    pub id: Option<String>,
    /// Kernel path as written.
    pub kernel: Option<String>,
    /// Initramfs path as written.
    pub initrd: Option<String>,
    /// Kernel command line as written (`linux PATH ARGS`, `kernel PATH ARGS`,
    /// extlinux `APPEND`, BLS `options`; variables such as `$kernelopts`
    /// are not expanded).
    pub args: Option<String>,
    /// For GRUB 2: the `N>M` index path of an entry inside a submenu.
    pub index: String,
}

/// A parsed boot menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BootMenu {
    /// Entries in order (submenus flattened).
    pub entries: Vec<MenuEntry>,
    /// The `default` setting as written (`0`, `saved`, `${saved_entry}`, a title or id).
    pub default: Option<String>,
}

/// The boot loader found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Bootloader {
    /// `grub2`, `bls` (GRUB 2 with BootLoaderSpec entries), `grub` (legacy),
    /// `extlinux`, `syslinux`, `systemd-boot`, or `None`.
    pub kind: Option<String>,
    /// Configuration files found.
    pub config_files: Vec<String>,
    /// `saved_entry` of grubenv.
    pub saved_entry: Option<String>,
    /// The menu (GRUB, extlinux, or BLS entries).
    pub menu: BootMenu,
    /// Index into `menu.entries` of the default entry.
    pub default_entry: Option<usize>,
    /// Why [`Firmware`] was decided as it was.
    pub firmware_evidence: Vec<String>,
    /// `GRUB_CMDLINE_LINUX` of `/etc/default/grub`.
    pub grub_cmdline_linux: Option<String>,
    /// `GRUB_CMDLINE_LINUX_DEFAULT` of `/etc/default/grub`.
    pub grub_cmdline_linux_default: Option<String>,
}

/// An installed kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Version (`vmlinuz-VERSION`).
    pub version: String,
    /// Guest path of the image.
    pub path: String,
    /// `/lib/modules/VERSION` (or `/usr/lib/modules/VERSION`) when present.
    pub modules_dir: Option<String>,
    /// Guest path of its initramfs, when found.
    pub initramfs_path: Option<String>,
    /// What the initramfs holds (when read).
    pub initramfs: Option<InitramfsInfo>,
    /// Whether the boot loader boots this kernel by default.
    pub is_default: bool,
    /// State of each driver of [`initramfs::DRIVERS`].
    pub drivers: BTreeMap<String, DriverState>,
}

fn words(line: &str) -> Vec<String> {
    // Split on whitespace, honouring single and double quotes.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parse a GRUB 2 `grub.cfg`: `menuentry` and `submenu` blocks (flattened,
/// with `N>M` indexes) and the last top-level `set default=`.
pub fn parse_grub2_cfg(text: &str) -> BootMenu {
    let mut menu = BootMenu::default();
    // Stack of open blocks: (is_menu_block, index counter for children).
    let mut depth_menu: Vec<Option<usize>> = Vec::new(); // Some(entry idx) for menuentry
    let mut sub_path: Vec<(usize, usize)> = Vec::new(); // (depth at open, index)
    let mut counters: Vec<usize> = vec![0];
    let mut depth: usize = 0;
    for raw in text.lines().take(200_000) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w = words(line);
        let first = w.first().map(String::as_str).unwrap_or("");
        let opens = line.ends_with('{');
        let closes = line == "}" || line.starts_with('}');
        if first == "menuentry" || first == "submenu" {
            let title = w.get(1).cloned().unwrap_or_default();
            let id = w
                .iter()
                .position(|x| x == "$menuentry_id_option" || x == "--id")
                .and_then(|i| w.get(i + 1))
                .cloned();
            let n = counters.last().copied().unwrap_or(0);
            if let Some(c) = counters.last_mut() {
                *c += 1;
            }
            let mut index: Vec<String> = sub_path.iter().map(|(_, i)| i.to_string()).collect();
            index.push(n.to_string());
            if first == "menuentry" {
                menu.entries.push(MenuEntry {
                    title,
                    id,
                    kernel: None,
                    initrd: None,
                    args: None,
                    index: index.join(">"),
                });
                if opens {
                    depth += 1;
                    depth_menu.push(Some(menu.entries.len() - 1));
                }
            } else if opens {
                depth += 1;
                depth_menu.push(None);
                sub_path.push((depth, n));
                counters.push(0);
            }
            continue;
        }
        if closes {
            if let Some(top) = depth_menu.pop() {
                if top.is_none() && sub_path.last().is_some_and(|(d, _)| *d == depth) {
                    sub_path.pop();
                    counters.pop();
                }
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        let current = depth_menu.iter().rev().find_map(|x| *x);
        if let Some(e) = current.and_then(|i| menu.entries.get_mut(i)) {
            match first {
                "linux" | "linux16" | "linuxefi" | "kernel" => {
                    e.kernel = w.get(1).cloned();
                    let args: Vec<&str> = w.iter().skip(2).map(String::as_str).collect();
                    e.args = Some(args.join(" "));
                }
                "initrd" | "initrd16" | "initrdefi" => {
                    e.initrd = w.get(1).cloned();
                }
                _ => {}
            }
        } else if first == "set" && depth_menu.is_empty() {
            if let Some(v) = w.get(1).and_then(|a| a.strip_prefix("default=")) {
                menu.default = Some(unquote(v).to_string());
            }
        }
        if opens && first != "menuentry" && first != "submenu" {
            // if/function blocks: track depth only.
            depth += 1;
            depth_menu.push(None);
        }
    }
    menu
}

/// Parse GRUB legacy `menu.lst` / `grub.conf`: `default=` and `title`
/// blocks (`kernel`, `initrd`; for Xen, the first `module` that is a Linux
/// kernel).
pub fn parse_grub_legacy(text: &str) -> BootMenu {
    let mut menu = BootMenu::default();
    for raw in text.lines().take(200_000) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, val) = match line.split_once(|c: char| c == '=' || c.is_whitespace()) {
            Some((k, v)) => (k, v.trim().trim_start_matches('=').trim()),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase();
        match key.as_str() {
            "title" => menu.entries.push(MenuEntry {
                title: val.to_string(),
                index: menu.entries.len().to_string(),
                ..MenuEntry::default()
            }),
            "default" if menu.entries.is_empty() => menu.default = Some(val.to_string()),
            "kernel" => {
                if let Some(e) = menu.entries.last_mut() {
                    let (k, a) = val.split_once(char::is_whitespace).unwrap_or((val, ""));
                    e.kernel = Some(k.to_string());
                    e.args = Some(a.trim().to_string());
                }
            }
            "module" => {
                if let Some(e) = menu.entries.last_mut() {
                    let m = val.split_whitespace().next().unwrap_or("");
                    let is_xen = e
                        .kernel
                        .as_deref()
                        .map(|k| k.rsplit('/').next().unwrap_or(k).starts_with("xen"))
                        .unwrap_or(false);
                    let base = m.rsplit('/').next().unwrap_or(m);
                    if is_xen && base.starts_with("vmlinuz") {
                        e.kernel = Some(m.to_string());
                        e.args = val
                            .split_once(char::is_whitespace)
                            .map(|(_, a)| a.trim().to_string());
                    } else if is_xen && base.starts_with("initr") && e.initrd.is_none() {
                        e.initrd = Some(m.to_string());
                    }
                }
            }
            "initrd" => {
                if let Some(e) = menu.entries.last_mut() {
                    e.initrd = val.split_whitespace().next().map(str::to_string);
                }
            }
            _ => {}
        }
    }
    menu
}

/// Parse extlinux/syslinux configuration: `DEFAULT`, `LABEL`, `MENU LABEL`,
/// `KERNEL`/`LINUX`, `INITRD` (or `initrd=` in `APPEND`).
pub fn parse_extlinux(text: &str) -> BootMenu {
    let mut menu = BootMenu::default();
    for raw in text.lines().take(200_000) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.splitn(2, char::is_whitespace);
        let key = it.next().unwrap_or("").to_ascii_lowercase();
        let val = it.next().unwrap_or("").trim();
        match key.as_str() {
            "default" => menu.default = Some(val.to_string()),
            "label" => menu.entries.push(MenuEntry {
                title: val.to_string(),
                id: Some(val.to_string()),
                index: menu.entries.len().to_string(),
                ..MenuEntry::default()
            }),
            "kernel" | "linux" => {
                if let Some(e) = menu.entries.last_mut() {
                    e.kernel = val.split_whitespace().next().map(str::to_string);
                }
            }
            "initrd" => {
                if let Some(e) = menu.entries.last_mut() {
                    e.initrd = val.split(',').next().map(str::to_string);
                }
            }
            "append" => {
                if let Some(e) = menu.entries.last_mut() {
                    e.args = Some(val.to_string());
                    if e.initrd.is_none() {
                        e.initrd = val
                            .split_whitespace()
                            .find_map(|a| a.strip_prefix("initrd="))
                            .and_then(|v| v.split(',').next())
                            .map(str::to_string);
                    }
                }
            }
            "menu" => {
                if let Some(rest) = val.strip_prefix("label ").or(val.strip_prefix("LABEL ")) {
                    if let Some(e) = menu.entries.last_mut() {
                        e.title = rest.trim().to_string();
                    }
                } else if val.eq_ignore_ascii_case("default") {
                    if let Some(e) = menu.entries.last() {
                        menu.default = e.id.clone();
                    }
                }
            }
            _ => {}
        }
    }
    menu
}

/// One BootLoaderSpec entry file.
pub fn parse_bls_entry(id: &str, text: &str) -> MenuEntry {
    let mut e = MenuEntry {
        id: Some(id.to_string()),
        ..MenuEntry::default()
    };
    let mut version = None;
    for line in text.lines().take(10_000) {
        let line = line.trim();
        let mut it = line.splitn(2, char::is_whitespace);
        let key = it.next().unwrap_or("");
        let val = it.next().unwrap_or("").trim();
        match key {
            "title" => e.title = val.to_string(),
            "version" => version = Some(val.to_string()),
            "linux" => e.kernel = Some(val.to_string()),
            "options" => e.args = Some(val.to_string()),
            "initrd" if e.initrd.is_none() => e.initrd = Some(val.to_string()),
            _ => {}
        }
    }
    if e.title.is_empty() {
        e.title = version.unwrap_or_else(|| id.to_string());
    }
    e
}

/// Index of the default entry of `menu`, given grubenv's `saved_entry`:
/// a number (top level, or `N>M`), a title or an id. `saved`,
/// `${saved_entry}` use `saved_entry`; no default means entry 0.
pub fn default_entry(menu: &BootMenu, saved_entry: Option<&str>) -> Option<usize> {
    if menu.entries.is_empty() {
        return None;
    }
    let mut want = menu.default.clone().unwrap_or_else(|| "0".into());
    if want == "saved" || want.contains("saved_entry") || want.contains("next_entry") {
        want = saved_entry.unwrap_or("0").to_string();
    }
    let want = want.trim();
    if want.is_empty() {
        return Some(0);
    }
    if want.bytes().all(|c| c.is_ascii_digit() || c == b'>') {
        // GRUB 2 index: N selects the Nth top-level item; a submenu's first
        // entry when N names a submenu.
        let exact = menu.entries.iter().position(|e| e.index == want);
        if exact.is_some() {
            return exact;
        }
        let prefix = format!("{want}>");
        if let Some(p) = menu
            .entries
            .iter()
            .position(|e| e.index.starts_with(&prefix))
        {
            return Some(p);
        }
        // Legacy menus have plain indexes; out of range → 0 as GRUB does.
        return Some(0);
    }
    if let Some(p) = menu
        .entries
        .iter()
        .position(|e| e.id.as_deref() == Some(want))
    {
        return Some(p);
    }
    if let Some(p) = menu.entries.iter().position(|e| e.title == want) {
        return Some(p);
    }
    // `Advanced options>Title` style.
    if let Some(last) = want.rsplit('>').next() {
        if let Some(p) = menu
            .entries
            .iter()
            .position(|e| e.title == last || e.id.as_deref() == Some(last))
        {
            return Some(p);
        }
    }
    Some(0)
}

/// Parse a grubenv block (`key=value` lines, `#` padding).
pub fn parse_grubenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn grub2_cfgs(ctx: &Ctx<'_>) -> Vec<String> {
    let mut v = Vec::new();
    for p in ["/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"] {
        if ctx.is_file(p) {
            v.push(p.to_string());
        }
    }
    for base in ["/boot/efi/EFI", "/efi/EFI"] {
        for (name, t) in ctx.list(base) {
            if t == FileType::Directory {
                let p = format!("{base}/{name}/grub.cfg");
                if ctx.is_file(&p) {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// Detect the boot loader and parse its menu.
pub(crate) fn detect_bootloader(ctx: &Ctx<'_>) -> Bootloader {
    let mut bl = Bootloader::default();
    let grubenv = ["/boot/grub2/grubenv", "/boot/grub/grubenv"]
        .iter()
        .find_map(|p| ctx.read_text(p).map(|t| (p.to_string(), t)));
    if let Some((p, t)) = &grubenv {
        bl.config_files.push(p.clone());
        bl.saved_entry = parse_grubenv(t).get("saved_entry").cloned();
    }
    let bls_dir = [
        "/boot/loader/entries",
        "/boot/efi/loader/entries",
        "/efi/loader/entries",
    ]
    .into_iter()
    .find(|d| ctx.list(d).iter().any(|(n, _)| n.ends_with(".conf")));
    let cfgs = grub2_cfgs(ctx);
    let default_grub = ctx.read_text("/etc/default/grub");
    let grub_vars = default_grub.as_deref().map(shell_vars).unwrap_or_default();
    let blscfg_enabled = var(&grub_vars, "GRUB_ENABLE_BLSCFG") == Some("true");
    bl.grub_cmdline_linux = var(&grub_vars, "GRUB_CMDLINE_LINUX").map(str::to_string);
    bl.grub_cmdline_linux_default =
        var(&grub_vars, "GRUB_CMDLINE_LINUX_DEFAULT").map(str::to_string);
    let systemd_boot_conf = [
        "/boot/loader/loader.conf",
        "/boot/efi/loader/loader.conf",
        "/efi/loader/loader.conf",
    ]
    .into_iter()
    .find(|p| ctx.is_file(p));
    if !cfgs.is_empty() {
        let text = cfgs
            .iter()
            .find_map(|p| ctx.read_text(p))
            .unwrap_or_default();
        bl.config_files.extend(cfgs.iter().cloned());
        let uses_bls = bls_dir.is_some() && (text.contains("blscfg") || blscfg_enabled);
        if uses_bls {
            bl.kind = Some("bls".into());
            let mut menu = parse_grub2_cfg(&text);
            if let Some(dir) = bls_dir {
                let bls = bls_menu(ctx, dir, &mut bl.config_files);
                menu.entries = bls.entries.into_iter().chain(menu.entries).collect();
            }
            bl.menu = menu;
        } else {
            bl.kind = Some("grub2".into());
            bl.menu = parse_grub2_cfg(&text);
        }
    } else if let Some((lp, menu)) = legacy_grub(ctx) {
        bl.kind = Some("grub".into());
        bl.config_files.push(lp);
        bl.menu = menu;
        if bl.menu.default.as_deref() == Some("saved") {
            if let Some(t) = ctx.read_text("/boot/grub/default") {
                bl.saved_entry = t.lines().next().map(|l| l.trim().to_string());
            }
        }
    } else if let Some(sb) = systemd_boot_conf {
        bl.kind = Some("systemd-boot".into());
        bl.config_files.push(sb.into());
        let conf = ctx.read_text(sb).unwrap_or_default();
        if let Some(dir) = bls_dir {
            bl.menu = bls_menu(ctx, dir, &mut bl.config_files);
        }
        bl.menu.default = conf.lines().find_map(|l| {
            let l = l.trim();
            l.strip_prefix("default")
                .map(|v| v.trim().trim_end_matches(".conf").to_string())
        });
    } else if let Some((p, kind)) = [
        ("/boot/extlinux/extlinux.conf", "extlinux"),
        ("/boot/extlinux.conf", "extlinux"),
        ("/extlinux.conf", "extlinux"),
        ("/boot/syslinux/syslinux.cfg", "syslinux"),
        ("/boot/syslinux.cfg", "syslinux"),
        ("/syslinux.cfg", "syslinux"),
    ]
    .into_iter()
    .find(|(p, _)| ctx.is_file(p))
    {
        bl.kind = Some(kind.into());
        bl.config_files.push(p.into());
        bl.menu = parse_extlinux(&ctx.read_text(p).unwrap_or_default());
    } else if let Some(dir) = bls_dir {
        bl.kind = Some("bls".into());
        bl.menu = bls_menu(ctx, dir, &mut bl.config_files);
    }
    bl.default_entry = match bl.kind.as_deref() {
        Some("bls") | Some("systemd-boot") => bls_default(&bl.menu, bl.saved_entry.as_deref()),
        Some(_) => default_entry(&bl.menu, bl.saved_entry.as_deref()),
        None => None,
    };
    bl
}

/// The first GRUB legacy configuration with entries (menu.lst is often a
/// symlink to grub.conf, or a copy of its name), else the first found.
fn legacy_grub(ctx: &Ctx<'_>) -> Option<(String, BootMenu)> {
    let mut first = None;
    for p in [
        "/boot/grub/menu.lst",
        "/boot/grub/grub.conf",
        "/etc/grub.conf",
    ] {
        if !ctx.is_file(p) {
            continue;
        }
        let menu = parse_grub_legacy(&ctx.read_text(p).unwrap_or_default());
        if !menu.entries.is_empty() {
            return Some((p.to_string(), menu));
        }
        if first.is_none() {
            first = Some((p.to_string(), menu));
        }
    }
    first
}

fn bls_menu(ctx: &Ctx<'_>, dir: &str, files: &mut Vec<String>) -> BootMenu {
    let mut entries = Vec::new();
    for (name, t) in ctx.list(dir) {
        let Some(stem) = name.strip_suffix(".conf") else {
            continue;
        };
        if t == FileType::Directory {
            continue;
        }
        let p = join(dir, &name);
        if let Some(text) = ctx.read_text(&p) {
            files.push(p);
            entries.push(parse_bls_entry(stem, &text));
        }
    }
    // grub's blscfg and systemd-boot list newest first.
    entries
        .sort_by(|a, b| version_cmp(b.id.as_deref().unwrap_or(""), a.id.as_deref().unwrap_or("")));
    for (i, e) in entries.iter_mut().enumerate() {
        e.index = i.to_string();
    }
    BootMenu {
        entries,
        default: None,
    }
}

fn bls_default(menu: &BootMenu, saved: Option<&str>) -> Option<usize> {
    if menu.entries.is_empty() {
        return None;
    }
    let want = saved.or(menu.default.as_deref());
    if let Some(w) = want {
        if let Some(p) = menu
            .entries
            .iter()
            .position(|e| e.id.as_deref() == Some(w) || e.title == w)
        {
            return Some(p);
        }
        if let Some(pat) = w.strip_suffix('*') {
            if let Some(p) = menu
                .entries
                .iter()
                .position(|e| e.id.as_deref().is_some_and(|i| i.starts_with(pat)))
            {
                return Some(p);
            }
        }
        if let Ok(n) = w.parse::<usize>() {
            if n < menu.entries.len() {
                return Some(n);
            }
        }
    }
    Some(0)
}

/// Decide the firmware from fstab and the EFI tree.
pub(crate) fn detect_firmware(
    ctx: &Ctx<'_>,
    fstab: &[FstabEntry],
    bl: &mut Bootloader,
) -> Firmware {
    for e in fstab {
        if e.mountpoint == "/boot/efi" || e.mountpoint == "/efi" {
            bl.firmware_evidence.push(format!(
                "fstab line {} mounts {} ({})",
                e.line, e.mountpoint, e.fstype
            ));
        } else if e.mountpoint == "/boot" && (e.fstype == "vfat" || e.fstype == "msdos") {
            bl.firmware_evidence.push(format!(
                "fstab line {} mounts /boot as {}",
                e.line, e.fstype
            ));
        }
    }
    for base in ["/boot/efi/EFI", "/efi/EFI", "/boot/EFI"] {
        for (dir, t) in ctx.list(base) {
            if t != FileType::Directory {
                continue;
            }
            let d = join(base, &dir);
            for (f, _) in ctx.list(&d) {
                let l = f.to_ascii_lowercase();
                if l.ends_with(".efi") || l == "grub.cfg" {
                    bl.firmware_evidence.push(join(&d, &f));
                }
            }
        }
    }
    if ctx.is_file("/boot/efi/loader/loader.conf") || ctx.is_file("/efi/loader/loader.conf") {
        bl.firmware_evidence
            .push("systemd-boot loader.conf on the ESP".into());
    }
    if bl.firmware_evidence.is_empty() {
        Firmware::Bios
    } else {
        Firmware::Uefi
    }
}

fn kernel_version_of_path(p: &str) -> Option<String> {
    let base = p.rsplit('/').next().unwrap_or(p);
    for pre in ["vmlinuz-", "vmlinux-", "kernel-", "Image-", "bzImage-"] {
        if let Some(v) = base.strip_prefix(pre) {
            return Some(v.to_string());
        }
    }
    // BLS: /usr/lib/modules/V/vmlinuz or /ID/V/linux.
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() >= 2 {
        return parts.get(parts.len() - 2).map(|s| s.to_string());
    }
    None
}

/// Kernels in /boot (and usr-merged /usr/lib/modules/V/vmlinuz), newest
/// first, with modules, initramfs and driver states.
pub(crate) fn detect_kernels(
    ctx: &Ctx<'_>,
    bl: &Bootloader,
    warnings: &mut Vec<String>,
) -> (Vec<Kernel>, Option<String>) {
    let mut found: Vec<(String, String)> = Vec::new();
    for (name, t) in ctx.list("/boot") {
        if t == FileType::Directory {
            continue;
        }
        for pre in ["vmlinuz-", "vmlinux-", "kernel-"] {
            if let Some(v) = name.strip_prefix(pre) {
                if !v.is_empty() && !name.ends_with(".hmac") && !name.ends_with(".sig") {
                    found.push((v.to_string(), join("/boot", &name)));
                }
            }
        }
    }
    for mdir in ["/usr/lib/modules", "/lib/modules"] {
        for (v, t) in ctx.list(mdir) {
            if t != FileType::Directory || found.iter().any(|(fv, _)| *fv == v) {
                continue;
            }
            let p = format!("{mdir}/{v}/vmlinuz");
            if ctx.is_file(&p) {
                found.push((v, p));
            }
        }
    }
    found.sort_by(|a, b| version_cmp(&b.0, &a.0));
    found.dedup_by(|a, b| a.0 == b.0);

    // Default kernel from the boot menu.
    let default_version = bl
        .default_entry
        .and_then(|i| bl.menu.entries.get(i))
        .and_then(|e| e.kernel.as_deref())
        .and_then(kernel_version_of_path);

    let limits = InitramfsLimits {
        max_decompressed: ctx.opts.max_decompressed_size,
        max_entries: ctx.opts.max_cpio_entries,
        ..InitramfsLimits::default()
    };
    let mut kernels = Vec::new();
    for (version, path) in found.into_iter().take(64) {
        let modules_dir = ["/lib/modules", "/usr/lib/modules"]
            .iter()
            .map(|m| format!("{m}/{version}"))
            .find(|d| ctx.is_dir(d))
            .or_else(|| flavour_modules_dir(ctx, &version));
        let initramfs_path = [
            format!("/boot/initramfs-{version}.img"),
            format!("/boot/initrd.img-{version}"),
            format!("/boot/initrd-{version}"),
            format!("/boot/initrd-{version}.img"),
            format!("/boot/initramfs-{version}"),
            format!("/boot/initrd.img-{version}.img"),
        ]
        .into_iter()
        .find(|p| ctx.is_file(p))
        .or_else(|| {
            // The boot menu's initrd for this kernel.
            bl.menu
                .entries
                .iter()
                .filter(|e| {
                    e.kernel
                        .as_deref()
                        .and_then(kernel_version_of_path)
                        .as_deref()
                        == Some(&version)
                })
                .filter_map(|e| e.initrd.as_deref())
                .map(|i| {
                    let base = i.rsplit('/').next().unwrap_or(i);
                    format!("/boot/{base}")
                })
                .find(|p| ctx.is_file(p))
        });
        let (builtin, root_modules) = match &modules_dir {
            Some(d) => (
                ctx.read_text(&format!("{d}/modules.builtin")),
                ctx.read_text(&format!("{d}/modules.dep"))
                    .map(|t| {
                        t.lines()
                            .filter_map(|l| l.split(':').next())
                            .filter_map(initramfs::module_name)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            ),
            None => (None, Vec::new()),
        };
        // With an early stop asked for, reading ends once every driver of
        // DRIVERS not built into this kernel has been listed.
        let want: std::collections::BTreeSet<String> = if ctx.opts.initramfs_early_stop {
            let built: Vec<String> = builtin
                .as_deref()
                .map(|t| t.lines().filter_map(initramfs::module_name).collect())
                .unwrap_or_default();
            initramfs::DRIVERS
                .iter()
                .map(|d| d.to_string())
                .filter(|d| !built.contains(d))
                .collect()
        } else {
            Default::default()
        };
        let initramfs = match (&initramfs_path, ctx.opts.read_initramfs) {
            (Some(p), true) => Some(read_initramfs(ctx, p, &limits, &want, warnings)),
            _ => None,
        };
        let in_initramfs = initramfs
            .as_ref()
            .map(|i| i.modules.clone())
            .unwrap_or_default();
        let drivers = initramfs::driver_states(builtin.as_deref(), &in_initramfs, &root_modules);
        kernels.push(Kernel {
            is_default: default_version.as_deref() == Some(version.as_str()),
            version,
            path,
            modules_dir,
            initramfs_path,
            initramfs,
            drivers,
        });
    }
    // A usr-merged /usr/lib/modules/V/vmlinuz that a /boot kernel (named by
    // flavour, as on Arch) already stands for is the same kernel.
    let boot_dirs: Vec<String> = kernels
        .iter()
        .filter(|k| k.path.starts_with("/boot/"))
        .filter_map(|k| k.modules_dir.clone())
        .collect();
    kernels.retain(|k| {
        k.path.starts_with("/boot/")
            || !k
                .modules_dir
                .as_ref()
                .is_some_and(|d| boot_dirs.contains(d))
    });
    let default_kernel = kernels
        .iter()
        .find(|k| k.is_default)
        .map(|k| k.version.clone());
    (kernels, default_kernel)
}

/// For kernels named by flavour rather than version (Alpine `vmlinuz-lts`
/// → `/lib/modules/6.1.62-0-lts`; Arch `vmlinuz-linux` → the modules
/// directory whose `pkgbase` file says `linux`): the newest match.
fn flavour_modules_dir(ctx: &Ctx<'_>, flavour: &str) -> Option<String> {
    if flavour.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let suffix = format!("-{flavour}");
    let mut best: Option<(String, String)> = None;
    for base in ["/lib/modules", "/usr/lib/modules"] {
        for (name, t) in ctx.list(base) {
            if t != FileType::Directory {
                continue;
            }
            let dir = join(base, &name);
            let matches = name.ends_with(&suffix)
                || ctx
                    .read_text(&join(&dir, "pkgbase"))
                    .is_some_and(|p| p.trim() == flavour);
            if matches
                && best
                    .as_ref()
                    .is_none_or(|(n, _)| version_cmp(&name, n).is_gt())
            {
                best = Some((name, dir));
            }
        }
        if best.is_some() {
            break;
        }
    }
    best.map(|(_, d)| d)
}

fn read_initramfs(
    ctx: &Ctx<'_>,
    path: &str,
    limits: &InitramfsLimits,
    want: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> InitramfsInfo {
    let mut info = InitramfsInfo {
        path: path.to_string(),
        ..InitramfsInfo::default()
    };
    let size = ctx.fs.metadata(path).map(|(_, m)| m.size).unwrap_or(0);
    info.size = size;
    if size > ctx.opts.max_initramfs_size {
        let m = format!(
            "{path}: {size} bytes, over the initramfs limit of {}; not read",
            ctx.opts.max_initramfs_size
        );
        warnings.push(m.clone());
        info.error = Some(m);
        return info;
    }
    let Some(data) = ctx.read_bytes(path, ctx.opts.max_initramfs_size) else {
        info.error = Some("could not be read".into());
        return info;
    };
    match initramfs::parse_initramfs_until(&data, limits, want) {
        Ok(i) => {
            info.complete = !i.stopped_early;
            info.modules = i.module_names();
            info.generator = i.generator().map(str::to_string);
            info.append_refusal = i.append_refusal();
            info.dirs = i.dirs();
            info.module_dirs = i.module_dirs();
            info.conf_modules = i.conf_modules.clone();
            info.segments = i.segments;
            info.entries = i.entries.len();
            if let Some(n) = i.note {
                warnings.push(format!("{path}: {n}"));
            }
        }
        Err(e) => {
            warnings.push(format!("{path}: {e}"));
            info.error = Some(e.to_string());
        }
    }
    info
}
