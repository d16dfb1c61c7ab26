//! `inspect --format xml`: virt-inspector's XML (`<operatingsystems>`), valid
//! against its RELAX NG schema `virt-inspector.rng` (Debian's guestfs-tools;
//! `cargo xtask deps` puts a copy at /usr/local/share/vmie-fixup/).
//!
//! What virt-inspector does and we follow:
//! - devices by their canonical names as the libguestfs appliance sees the
//!   VM's disks in order: `/dev/sda`, `/dev/sdb`, ... (`/dev/sdaa` after
//!   `/dev/sdz`), partitions `/dev/sda1`, LVs `/dev/VG/LV`;
//! - `<mountpoints>`: the guest's fstab entries whose mount point starts
//!   with `/`, each resolved to the device it names (`UUID=`, `LABEL=`,
//!   `PARTUUID=`, `PARTLABEL=`, `/dev/sdXN`, `/dev/vdXN`, `/dev/mapper/VG-LV`
//!   ...); a `/dev/…` name that is not part of the VM (a data disk that
//!   stayed behind) kept as the guest wrote it, other unresolvable specs
//!   left out; sorted by mount point length then name; a Windows guest has
//!   only `/` on its system volume;
//! - `<filesystems>`: the root and every resolved fstab entry (swap
//!   included), sorted by device name, with blkid's type, label and UUID
//!   (an empty `<filesystem dev="/dev/sdb1"/>` for a device not in the VM);
//! - fields left out when unknown; `major_version`/`minor_version` always.
//!
//! Where the schema has a closed list (`distro`, `package_format`,
//! `package_management`), a value of ours outside it is left out, except
//! Red Hat rebuilds the schema does not name (Rocky, AlmaLinux, Amazon
//! Linux, CloudLinux, Virtuozzo, Circle), which are `redhat-based` as in
//! libguestfs; the JSON output keeps our own name.
//!
//! Every text and attribute value comes from the guest and is escaped:
//! `& < >` always, `" '` in attributes, tab/CR/LF in attributes and CR in
//! text as character references (a parser would otherwise normalise them),
//! and characters XML 1.0 cannot carry (C0 controls, U+FFFE, U+FFFF) as
//! U+FFFD.

use std::fmt::Write as _;

use vmie_inspect::{LinuxGuest, Vm, Volume, WindowsGuest};

/// One `<operatingsystem>`.
#[derive(Debug, Default)]
pub(crate) struct XmlOs {
    pub(crate) root: String,
    pub(crate) name: &'static str,
    pub(crate) arch: Option<String>,
    pub(crate) distro: Option<String>,
    pub(crate) product_name: Option<String>,
    pub(crate) product_variant: Option<String>,
    pub(crate) major_version: u32,
    pub(crate) minor_version: u32,
    pub(crate) windows_systemroot: Option<String>,
    pub(crate) windows_current_control_set: Option<String>,
    pub(crate) package_format: Option<String>,
    pub(crate) package_management: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) osinfo: Option<String>,
    /// (mount point, device), sorted.
    pub(crate) mountpoints: Vec<(String, String)>,
    /// Sorted by device.
    pub(crate) filesystems: Vec<XmlFs>,
    /// (drive letter, device).
    pub(crate) drive_mappings: Vec<(String, String)>,
}

/// One `<filesystem>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct XmlFs {
    pub(crate) dev: String,
    pub(crate) fstype: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) uuid: Option<String>,
}

const DISTROS: &[&str] = &[
    "alpinelinux",
    "altlinux",
    "archlinux",
    "buildroot",
    "centos",
    "cirros",
    "coreos",
    "debian",
    "fedora",
    "freebsd",
    "freedos",
    "frugalware",
    "gentoo",
    "kalilinux",
    "kylin",
    "linuxmint",
    "mageia",
    "mandriva",
    "meego",
    "msdos",
    "neokylin",
    "netbsd",
    "openbsd",
    "openmandriva",
    "opensuse",
    "oraclelinux",
    "pardus",
    "pldlinux",
    "redhat-based",
    "rhel",
    "scientificlinux",
    "slackware",
    "sles",
    "suse-based",
    "ttylinux",
    "ubuntu",
    "voidlinux",
    "windows",
];
const PACKAGE_FORMATS: &[&str] = &[
    "apk", "deb", "ebuild", "pacman", "pisi", "pkgsrc", "rpm", "xbps",
];
const PACKAGE_MANAGEMENTS: &[&str] = &[
    "apk", "apt", "dnf", "pacman", "pisi", "portage", "up2date", "urpmi", "xbps", "yum", "zypper",
];

/// Our distro name as the schema's list has it.
fn schema_distro(d: &str) -> Option<String> {
    if DISTROS.contains(&d) {
        return Some(d.to_string());
    }
    match d {
        "rocky" | "almalinux" | "amazonlinux" | "cloudlinux" | "virtuozzo" | "circle" => {
            Some("redhat-based".into())
        }
        _ => None,
    }
}

fn in_list(v: &Option<String>, list: &[&str]) -> Option<String> {
    v.clone().filter(|v| list.contains(&v.as_str()))
}

/// The canonical device name of a volume.
pub(crate) fn dev_name(v: &Volume) -> String {
    if let Some(lv) = &v.lv {
        return format!("/dev/{}/{}", lv.vg, lv.lv);
    }
    match &v.stack {
        Some(vmie_inspect::stack::StackId::Luks { mapper, .. }) => return mapper.clone(),
        Some(vmie_inspect::stack::StackId::Md { device, .. }) => return device.clone(),
        None => {}
    }
    vmie_inspect::stack::guest_device(v).unwrap_or_default()
}

fn fs_of(v: &Volume) -> XmlFs {
    XmlFs {
        dev: dev_name(v),
        fstype: v.probe.as_ref().map(|p| p.kind.blkid_type().to_string()),
        label: v
            .probe
            .as_ref()
            .and_then(|p| p.label.clone())
            .filter(|l| !l.is_empty()),
        uuid: v
            .probe
            .as_ref()
            .and_then(|p| p.uuid.clone())
            .filter(|u| !u.is_empty()),
    }
}

/// Mount points virt-inspector ignores.
fn ignored_mountpoint(mp: &str) -> bool {
    ["/dev", "/media", "/proc", "/selinux", "/sys"]
        .iter()
        .any(|p| mp == *p || mp.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

fn sort_mountpoints(m: &mut [(String, String)]) {
    m.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
}

/// The `<operatingsystem>` of a Linux guest.
pub(crate) fn linux_os(vm: &Vm, g: &LinuxGuest) -> XmlOs {
    let i = &g.info;
    let root = vm.volumes().find(|v| v.name == g.root);
    let root_dev = root.map(dev_name).unwrap_or_else(|| g.root.clone());
    let fvols = vm.fstab_volumes();
    let all: Vec<&Volume> = vm.volumes().filter(|v| !v.is_extended()).collect();
    let mut mountpoints = vec![("/".to_string(), root_dev.clone())];
    let mut filesystems: Vec<XmlFs> = root.map(fs_of).into_iter().collect();
    for e in &i.fstab {
        if e.mountpoint == "/" || ignored_mountpoint(&e.mountpoint) {
            continue;
        }
        let found = match vmie_rules::fstab::lookup(&e.spec, &fvols) {
            Some(Some(fv)) => all.iter().find(|x| {
                x.disk == fv.disk
                    && x.number == fv.partition
                    && x.lv.as_ref().map(|l| (l.vg.clone(), l.lv.clone())) == fv.lvm
            }),
            _ => None,
        };
        let Some(vol) = found else {
            // A device that is not part of the VM (a data disk that stayed
            // behind): virt-inspector keeps a /dev name as the guest wrote
            // it, with an empty <filesystem>; other specs it cannot find
            // (UUID=, LABEL=) are left out.
            if e.spec.starts_with("/dev/") {
                if e.mountpoint.starts_with('/')
                    && !mountpoints.iter().any(|(m, _)| m == &e.mountpoint)
                {
                    mountpoints.push((e.mountpoint.clone(), e.spec.clone()));
                }
                if !filesystems.iter().any(|f| f.dev == e.spec) {
                    filesystems.push(XmlFs {
                        dev: e.spec.clone(),
                        ..XmlFs::default()
                    });
                }
            }
            continue;
        };
        let dev = dev_name(vol);
        if e.mountpoint.starts_with('/') && !mountpoints.iter().any(|(m, _)| m == &e.mountpoint) {
            mountpoints.push((e.mountpoint.clone(), dev.clone()));
        }
        if !filesystems.iter().any(|f| f.dev == dev) {
            filesystems.push(fs_of(vol));
        }
    }
    sort_mountpoints(&mut mountpoints);
    filesystems.sort_by(|a, b| a.dev.cmp(&b.dev));
    XmlOs {
        root: root_dev,
        name: "linux",
        arch: i.arch.clone(),
        distro: schema_distro(&i.distro),
        product_name: i.product_name.clone(),
        product_variant: None,
        major_version: i.major_version,
        minor_version: i.minor_version,
        windows_systemroot: None,
        windows_current_control_set: None,
        package_format: in_list(&i.package_format, PACKAGE_FORMATS),
        package_management: in_list(&i.package_management, PACKAGE_MANAGEMENTS),
        hostname: i.hostname.clone(),
        osinfo: i.osinfo.clone(),
        mountpoints,
        filesystems,
        drive_mappings: Vec::new(),
    }
}

/// The `<operatingsystem>` of a Windows guest.
pub(crate) fn windows_os(vm: &Vm, g: &WindowsGuest) -> XmlOs {
    let i = &g.info;
    let root = vm.volumes().find(|v| v.name == g.root);
    let root_dev = root.map(dev_name).unwrap_or_else(|| g.root.clone());
    let mut drive_mappings: Vec<(String, String)> = i
        .drive_mappings
        .iter()
        .filter_map(|d| {
            let vol = match &d.target {
                vmie_win::DriveTarget::Mbr {
                    disk_signature,
                    offset,
                } => {
                    let sig = format!("{disk_signature:08x}");
                    vm.layouts().iter().enumerate().find_map(|(n, l)| {
                        if l.disk_id.as_deref() != Some(sig.as_str()) {
                            return None;
                        }
                        l.volumes
                            .iter()
                            .find(|v| v.disk == n && v.number.is_some() && v.start == *offset)
                    })
                }
                vmie_win::DriveTarget::Gpt { guid } => vm.volumes().find(|v| {
                    v.part_uuid
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(guid))
                }),
                _ => None,
            }?;
            Some((d.letter.clone(), dev_name(vol)))
        })
        .collect();
    drive_mappings.sort_by(|a, b| {
        a.0.to_ascii_lowercase()
            .cmp(&b.0.to_ascii_lowercase())
            .then_with(|| a.0.cmp(&b.0))
    });
    XmlOs {
        root: root_dev.clone(),
        name: "windows",
        arch: i.arch.clone(),
        distro: Some("windows".into()),
        product_name: i.product_name.clone(),
        product_variant: i.product_variant.clone(),
        major_version: i.major_version,
        minor_version: i.minor_version,
        windows_systemroot: i.systemroot.clone(),
        windows_current_control_set: i.current_control_set.clone(),
        package_format: None,
        package_management: None,
        hostname: i.hostname.clone(),
        osinfo: vmie_fixup::win_osinfo(i),
        mountpoints: vec![("/".into(), root_dev)],
        filesystems: root.map(fs_of).into_iter().collect(),
        drive_mappings,
    }
}

/// `s` as XML character data (`attr`: inside a double-quoted attribute).
pub(crate) fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            '\t' | '\n' if attr => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, depth: usize, name: &str, text: &str) {
    let _ = writeln!(
        out,
        "{:indent$}<{name}>{}</{name}>",
        "",
        escape(text, false),
        indent = depth * 2
    );
}

fn opt(out: &mut String, depth: usize, name: &str, v: &Option<String>) {
    if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
        element(out, depth, name, v);
    }
}

/// The document. `oses` must not be empty (the schema wants one or more).
pub(crate) fn document(oses: &[XmlOs]) -> String {
    if oses.is_empty() {
        // What virt-inspector (guestfs-tools 1.48) prints, exit 0, for disks
        // without a guest; its own schema does not accept it.
        return "<?xml version=\"1.0\"?>\n<operatingsystems/>\n".into();
    }
    let mut out = String::from("<?xml version=\"1.0\"?>\n<operatingsystems>\n");
    for os in oses {
        out.push_str("  <operatingsystem>\n");
        element(&mut out, 2, "root", &os.root);
        element(&mut out, 2, "name", os.name);
        opt(&mut out, 2, "arch", &os.arch);
        opt(&mut out, 2, "distro", &os.distro);
        opt(&mut out, 2, "product_name", &os.product_name);
        opt(&mut out, 2, "product_variant", &os.product_variant);
        element(&mut out, 2, "major_version", &os.major_version.to_string());
        element(&mut out, 2, "minor_version", &os.minor_version.to_string());
        opt(&mut out, 2, "package_format", &os.package_format);
        opt(&mut out, 2, "package_management", &os.package_management);
        opt(&mut out, 2, "windows_systemroot", &os.windows_systemroot);
        opt(
            &mut out,
            2,
            "windows_current_control_set",
            &os.windows_current_control_set,
        );
        opt(&mut out, 2, "hostname", &os.hostname);
        opt(&mut out, 2, "osinfo", &os.osinfo);
        out.push_str("    <mountpoints>\n");
        for (mp, dev) in &os.mountpoints {
            let _ = writeln!(
                out,
                "      <mountpoint dev=\"{}\">{}</mountpoint>",
                escape(dev, true),
                escape(mp, false)
            );
        }
        out.push_str("    </mountpoints>\n    <filesystems>\n");
        for f in &os.filesystems {
            if f.fstype.is_none() && f.label.is_none() && f.uuid.is_none() {
                let _ = writeln!(out, "      <filesystem dev=\"{}\"/>", escape(&f.dev, true));
                continue;
            }
            let _ = writeln!(out, "      <filesystem dev=\"{}\">", escape(&f.dev, true));
            opt(&mut out, 4, "type", &f.fstype);
            opt(&mut out, 4, "label", &f.label);
            opt(&mut out, 4, "uuid", &f.uuid);
            out.push_str("      </filesystem>\n");
        }
        out.push_str("    </filesystems>\n");
        if !os.drive_mappings.is_empty() {
            out.push_str("    <drive_mappings>\n");
            for (letter, dev) in &os.drive_mappings {
                let _ = writeln!(
                    out,
                    "      <drive_mapping name=\"{}\">{}</drive_mapping>",
                    escape(letter, true),
                    escape(dev, false)
                );
            }
            out.push_str("    </drive_mappings>\n");
        }
        out.push_str("  </operatingsystem>\n");
    }
    out.push_str("</operatingsystems>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmie_inspect::stack::disk_name;

    #[test]
    fn escaping() {
        assert_eq!(escape(r#"<&"'>"#, false), "&lt;&amp;\"'&gt;");
        assert_eq!(escape(r#"<&"'>"#, true), "&lt;&amp;&quot;&apos;&gt;");
        assert_eq!(escape("a\tb\nc\rd", true), "a&#9;b&#10;c&#13;d");
        assert_eq!(escape("a\tb\nc\rd", false), "a\tb\nc&#13;d");
        assert_eq!(
            escape("x\u{1}\u{1b}\u{FFFF}y", false),
            "x\u{FFFD}\u{FFFD}\u{FFFD}y"
        );
        assert_eq!(escape("Ünïcødé ✓", true), "Ünïcødé ✓");
    }

    #[test]
    fn disk_names_follow_linux() {
        assert_eq!(disk_name(0), "sda");
        assert_eq!(disk_name(25), "sdz");
        assert_eq!(disk_name(26), "sdaa");
        assert_eq!(disk_name(27), "sdab");
        assert_eq!(disk_name(51), "sdaz");
        assert_eq!(disk_name(52), "sdba");
        assert_eq!(disk_name(701), "sdzz");
        assert_eq!(disk_name(702), "sdaaa");
    }

    #[test]
    fn schema_lists() {
        assert_eq!(schema_distro("debian").as_deref(), Some("debian"));
        assert_eq!(schema_distro("rocky").as_deref(), Some("redhat-based"));
        assert_eq!(schema_distro("photon"), None);
        assert_eq!(in_list(&Some("tdnf".into()), PACKAGE_MANAGEMENTS), None);
        assert!(ignored_mountpoint("/proc"));
        assert!(ignored_mountpoint("/media/cdrom"));
        assert!(!ignored_mountpoint("/mediaX"));
        let mut m = vec![
            ("/boot/efi".to_string(), "b".to_string()),
            ("/srv".to_string(), "c".to_string()),
            ("/".to_string(), "a".to_string()),
            ("/boot".to_string(), "d".to_string()),
        ];
        sort_mountpoints(&mut m);
        let order: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(order, ["/", "/srv", "/boot", "/boot/efi"]);
    }
}
