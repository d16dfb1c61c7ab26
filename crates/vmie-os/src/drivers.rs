//! Offline driver injection: the archive that, appended to a kernel's
//! initramfs, makes the kernel's own modules for a cloud's disks (NVMe,
//! Xen PV, virtio) load at boot, as `dracut --add-drivers` or
//! `update-initramfs` with the module listed would have.
//!
//! What goes in the archive, for kernel `V` whose modules are under
//! `MODDIR` on the root filesystem:
//! - every module of the dependency closure (from the guest's own
//!   `MODDIR/modules.dep`) that the initramfs lacks, byte for byte;
//! - the guest's own module indexes (`modules.dep.bin`, `modules.alias.bin`,
//!   `modules.builtin.bin`, and `modules.symbols.bin`,
//!   `modules.builtin.alias.bin`, `modules.softdep` when present), which
//!   depmod wrote for the whole `MODDIR`: they resolve every module of the
//!   initramfs and the added ones (a module of the index that is not in the
//!   initramfs is "not found", as it was before);
//! - what makes the init system load them before it looks for the root:
//!   initramfs-tools' `conf/modules` (the image's own list plus the
//!   drivers), dracut's `etc/cmdline.d/90-vmie-fixup-drivers.conf`
//!   (`rd.driver.pre=`, read before udev starts).
//!
//! The files go where the image keeps its modules (`lib/modules/V` or
//! `usr/lib/modules/V`). Everything is read through a callback with a size
//! cap, so the guest's files are never trusted for a size.

use std::collections::{BTreeMap, BTreeSet};

use crate::cpio::CpioWriter;
use crate::initramfs::{module_name, InitramfsInfo};

/// Most bytes read for one module or index file.
const MAX_FILE: u64 = 64 << 20;
/// Most lines of `modules.dep` considered.
const MAX_DEP_LINES: usize = 200_000;
/// The marker the kernel's module signing appends to a signed module.
const SIG_MARKER: &[u8] = b"~Module signature appended~\n";
/// Index files copied from the root filesystem: (name, required).
const INDEXES: &[(&str, bool)] = &[
    ("modules.dep.bin", true),
    ("modules.alias.bin", true),
    ("modules.builtin.bin", true),
    ("modules.symbols.bin", false),
    ("modules.builtin.alias.bin", false),
    ("modules.softdep", false),
];

/// `modules.dep`: each module's path (relative to the modules directory)
/// and the paths of the modules it needs, by normalised name.
#[derive(Debug, Default, Clone)]
pub struct ModDep {
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

impl ModDep {
    /// Parse the text of `modules.dep` (`path: dep dep …` lines; at most
    /// 200,000 lines are read).
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines().take(MAX_DEP_LINES) {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            let Some(name) = module_name(path) else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.entry(name).or_insert((path.to_string(), deps));
        }
        Self { by_name }
    }

    /// The path of module `name` (`-` and `_` alike).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&name.replace('-', "_"))
            .map(|(p, _)| p.as_str())
    }

    /// The paths of `names` and everything they need, sorted. A dependency
    /// missing from the file is skipped (modprobe would fail on it too, and
    /// it is reported by the caller when it is one of `names`).
    pub fn closure(&self, names: &[String]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
        while let Some(n) = todo.pop() {
            let Some((path, deps)) = self.by_name.get(&n) else {
                continue;
            };
            if !out.insert(path.clone()) {
                continue;
            }
            todo.extend(deps.iter().filter_map(|d| module_name(d)));
        }
        out
    }
}

/// Reads a guest file (`path`, at most `cap` bytes); `Err` says why not.
pub type ReadGuest<'r> = dyn FnMut(&str, u64) -> Result<Vec<u8>, String> + 'r;

/// What [`plan`] needs about one kernel.
#[derive(Debug)]
pub struct InjectRequest<'a> {
    /// Kernel version.
    pub version: &'a str,
    /// Its modules directory on the root (`/lib/modules/V`).
    pub modules_dir: &'a str,
    /// Its initramfs, as read by inspection.
    pub initramfs: &'a InitramfsInfo,
    /// The drivers to add (module names, none built in nor present).
    pub drivers: &'a [String],
    /// Text of `/boot/config-V`, if read (for `CONFIG_MODULE_SIG_FORCE`).
    pub config: Option<&'a str>,
}

/// The archive to append, and what it holds.
#[derive(Debug)]
pub struct Injection {
    /// The cpio archive (a multiple of 4 bytes, ending with its trailer).
    pub archive: Vec<u8>,
    /// The drivers it makes load (normalised names).
    pub drivers: Vec<String>,
    /// Every file it adds or replaces, as inside the initramfs.
    pub files: Vec<String>,
    /// Requested drivers the guest has no module for (not added).
    pub unavailable: Vec<String>,
}

/// Build the archive that adds `req.drivers` to `req.initramfs`, reading
/// guest files with `read(path, cap)`. `Err` is a refusal saying why
/// (nothing can be added), for the report.
pub fn plan(req: &InjectRequest<'_>, read: &mut ReadGuest<'_>) -> Result<Injection, String> {
    let ir = req.initramfs;
    if let Some(e) = &ir.error {
        return Err(format!("its initramfs could not be read whole: {e}"));
    }
    if let Some(why) = &ir.append_refusal {
        return Err(why.clone());
    }
    let generator =
        match ir.generator.as_deref() {
            Some(g @ ("initramfs-tools" | "dracut")) => g,
            _ => return Err(
                "its initramfs was built by neither initramfs-tools nor dracut, so how it loads \
                 modules is unknown"
                    .into(),
            ),
        };
    let dep_text = read(&format!("{}/modules.dep", req.modules_dir), MAX_FILE)?;
    let dep = ModDep::parse(&String::from_utf8_lossy(&dep_text));
    let (available, unavailable): (Vec<String>, Vec<String>) = req
        .drivers
        .iter()
        .map(|d| d.replace('-', "_"))
        .partition(|d| dep.path_of(d).is_some());
    if available.is_empty() {
        return Err(format!(
            "the guest has no module for {} in {} (a custom kernel, or its modules were removed)",
            unavailable.join(", "),
            req.modules_dir
        ));
    }
    let present: BTreeSet<&str> = ir.modules.iter().map(String::as_str).collect();
    let enforce = req
        .config
        .is_some_and(|c| c.lines().any(|l| l.trim() == "CONFIG_MODULE_SIG_FORCE=y"));
    // Where the image keeps this kernel's modules.
    let inside = ir
        .module_dirs
        .iter()
        .find(|d| d.rsplit('/').next() == Some(req.version))
        .cloned()
        .unwrap_or_else(|| format!("lib/modules/{}", req.version));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for rel in dep.closure(&available) {
        if module_name(&rel).is_some_and(|n| present.contains(n.as_str())) {
            continue;
        }
        if rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!(
                "modules.dep names {rel:?}, not a path under {}",
                req.modules_dir
            ));
        }
        let data = read(&format!("{}/{rel}", req.modules_dir), MAX_FILE)?;
        if enforce && !data.ends_with(SIG_MARKER) {
            return Err(format!(
                "the kernel enforces module signatures (CONFIG_MODULE_SIG_FORCE=y) and \
                 {}/{rel} carries no signature that can be checked{}",
                req.modules_dir,
                if rel.ends_with(".ko") {
                    ""
                } else {
                    " (it is compressed)"
                }
            ));
        }
        files.push((format!("{inside}/{rel}"), data));
    }
    for (name, required) in INDEXES {
        match read(&format!("{}/{name}", req.modules_dir), MAX_FILE) {
            Ok(d) => files.push((format!("{inside}/{name}"), d)),
            Err(e) if *required => {
                return Err(format!(
                    "{}/{name}, which modprobe needs to find the modules, could not be read: {e}",
                    req.modules_dir
                ))
            }
            Err(_) => {}
        }
    }
    match generator {
        "initramfs-tools" => {
            let mut text = ir.conf_modules.clone().unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("# added by vmie-fixup: the cloud's disk drivers\n");
            for d in &available {
                text.push_str(d);
                text.push('\n');
            }
            files.push(("conf/modules".into(), text.into_bytes()));
        }
        _ => files.push((
            "etc/cmdline.d/90-vmie-fixup-drivers.conf".into(),
            format!("rd.driver.pre={}\n", available.join(",")).into_bytes(),
        )),
    }
    let mut w = CpioWriter::new(0);
    let mut made: BTreeSet<String> = BTreeSet::new();
    let mut names = Vec::new();
    for (path, data) in &files {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let d = &path[..at + i];
            if !ir.dirs.contains(d) && made.insert(d.to_string()) {
                w.dir(d, 0o755).map_err(|e| e.to_string())?;
            }
            at += i + 1;
        }
        w.file(path, 0o644, data).map_err(|e| e.to_string())?;
        names.push(path.clone());
    }
    Ok(Injection {
        archive: w.finish().map_err(|e| e.to_string())?,
        drivers: available,
        files: names,
        unavailable,
    })
}

/// `original` with `archive` appended where the kernel looks for the next
/// member: at a multiple of 4 bytes, zeros between.
pub fn appended(original: &[u8], archive: &[u8]) -> Vec<u8> {
    let pad = (4 - original.len() % 4) % 4;
    let mut v = Vec::with_capacity(original.len() + pad + archive.len());
    v.extend_from_slice(original);
    v.resize(original.len() + pad, 0);
    v.extend_from_slice(archive);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
kernel/drivers/nvme/host/nvme-core.ko:\n\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/block/loop.ko: kernel/drivers/block/loop.ko\n";

    #[test]
    fn closure_follows_dependencies_and_stops_at_cycles() {
        let d = ModDep::parse(DEP);
        assert_eq!(
            d.path_of("nvme-core"),
            Some("kernel/drivers/nvme/host/nvme-core.ko")
        );
        let c: Vec<_> = d
            .closure(&[
                "nvme".into(),
                "virtio_blk".into(),
                "loop".into(),
                "absent".into(),
            ])
            .into_iter()
            .collect();
        assert_eq!(c.len(), 6, "{c:?}");
        assert!(c.iter().any(|p| p.ends_with("virtio_ring.ko")));
    }

    fn info(generator: &str) -> InitramfsInfo {
        InitramfsInfo {
            path: "/boot/initrd.img-6.1.0-1-amd64".into(),
            modules: vec!["virtio".into()],
            generator: Some(generator.into()),
            conf_modules: Some("ext4".into()),
            module_dirs: vec!["usr/lib/modules/6.1.0-1-amd64".into()],
            dirs: ["usr", "usr/lib", "usr/lib/modules"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..InitramfsInfo::default()
        }
    }

    fn reader(path: &str, _cap: u64) -> Result<Vec<u8>, String> {
        match path.rsplit('/').next() {
            Some("modules.dep") => Ok(DEP.as_bytes().to_vec()),
            Some("modules.symbols.bin") => Err("not found".into()),
            Some(n) => Ok(n.as_bytes().to_vec()),
            None => Err("?".into()),
        }
    }

    #[test]
    fn initramfs_tools_gets_modules_indexes_and_conf_modules() {
        let ir = info("initramfs-tools");
        let drivers = vec![
            "nvme".to_string(),
            "virtio-blk".into(),
            "xen_blkfront".into(),
        ];
        let req = InjectRequest {
            version: "6.1.0-1-amd64",
            modules_dir: "/lib/modules/6.1.0-1-amd64",
            initramfs: &ir,
            drivers: &drivers,
            config: None,
        };
        let inj = plan(&req, &mut reader).unwrap();
        assert_eq!(inj.drivers, ["nvme", "virtio_blk"]);
        assert_eq!(inj.unavailable, ["xen_blkfront"]);
        let m = "usr/lib/modules/6.1.0-1-amd64";
        assert!(inj
            .files
            .contains(&format!("{m}/kernel/drivers/nvme/host/nvme-core.ko")));
        // Already in the image: not added again.
        assert!(!inj.files.iter().any(|f| f.ends_with("/virtio.ko")));
        assert!(inj.files.contains(&format!("{m}/modules.dep.bin")));
        assert!(!inj.files.iter().any(|f| f.ends_with("modules.symbols.bin")));
        let parsed = crate::initramfs::parse_initramfs(&inj.archive, &Default::default()).unwrap();
        assert_eq!(
            parsed.conf_modules.as_deref(),
            Some("ext4\n# added by vmie-fixup: the cloud's disk drivers\nnvme\nvirtio_blk\n")
        );
        // Directories the image has are not repeated; new ones are made.
        let dirs = parsed.dirs();
        assert!(!dirs.contains("usr/lib"));
        assert!(dirs.contains(&format!("{m}/kernel/drivers/nvme")));
    }

    #[test]
    fn dracut_gets_rd_driver_pre() {
        let ir = info("dracut");
        let drivers = vec!["nvme".to_string()];
        let req = InjectRequest {
            version: "6.1.0-1-amd64",
            modules_dir: "/lib/modules/6.1.0-1-amd64",
            initramfs: &ir,
            drivers: &drivers,
            config: None,
        };
        let inj = plan(&req, &mut reader).unwrap();
        assert!(inj
            .files
            .contains(&"etc/cmdline.d/90-vmie-fixup-drivers.conf".to_string()));
        assert!(!inj.files.contains(&"conf/modules".to_string()));
    }

    #[test]
    fn refusals_say_why() {
        let drivers = vec!["nvme".to_string()];
        let mut ir = info("dracut");
        let try_plan = |ir: &InitramfsInfo, config: Option<&str>| {
            plan(
                &InjectRequest {
                    version: "6.1.0-1-amd64",
                    modules_dir: "/lib/modules/6.1.0-1-amd64",
                    initramfs: ir,
                    drivers: &drivers,
                    config,
                },
                &mut reader,
            )
            .unwrap_err()
        };
        let e = try_plan(&ir, Some("CONFIG_MODULE_SIG_FORCE=y\n"));
        assert!(e.contains("enforces module signatures"), "{e}");
        ir.generator = None;
        assert!(try_plan(&ir, None).contains("neither initramfs-tools nor dracut"));
        ir.append_refusal = Some("lz4".into());
        assert_eq!(try_plan(&ir, None), "lz4");
        let ir = info("dracut");
        let none = vec!["xen_blkfront".to_string()];
        let e = plan(
            &InjectRequest {
                version: "6.1.0-1-amd64",
                modules_dir: "/lib/modules/6.1.0-1-amd64",
                initramfs: &ir,
                drivers: &none,
                config: None,
            },
            &mut reader,
        )
        .unwrap_err();
        assert!(e.contains("no module for xen_blkfront"), "{e}");
    }

    #[test]
    fn appended_pads_to_four_bytes() {
        assert_eq!(appended(b"abcde", b"0707"), b"abcde\0\0\x000707");
        assert_eq!(appended(b"abcd", b"0707"), b"abcd0707");
    }
}
