//! The guest tree the file commands (`ls`, `cat`, `copy-in`, `write`,
//! `hive … IMAGE GUESTPATH`) work on: without `:VOL`, the inspected guest's
//! whole tree (its root and the filesystems its fstab mounts, as virt-ls and
//! virt-cat see it); with `:VOL`, that one volume.
//!
//! Writes go through the overlay, are read back through freshly opened
//! filesystems (the self-check) and committed with an undo journal.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use vmie_guestfs::{resolve, FileType, FsError, GuestFs, GuestPath, NewAttrs};
use vmie_inspect::stack::KeySpec;
use vmie_inspect::{OpenOptions, Vm, VolumeSelector};

use crate::human::{file_type_word, vlog};
use crate::{classify, refused, Failure};

/// `IMAGE` or `IMAGE:VOL`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The image file (it exists).
    pub(crate) image: PathBuf,
    /// `None`: the guest's whole tree.
    pub(crate) sel: Option<VolumeSelector>,
    /// The VM's other disks (`--disk`), after `image`.
    pub(crate) disks: Vec<PathBuf>,
}

/// A missing image: a usage error (exit 2), named.
pub(crate) fn missing_image(p: &Path) -> Failure {
    Failure {
        code: 2,
        error: anyhow!("{}: no such image file", p.display()),
    }
}

/// Refuse (exit 2) the first image that does not exist.
pub(crate) fn ensure_images_exist(images: &[PathBuf]) -> Result<(), Failure> {
    match images.iter().find(|p| !p.exists()) {
        Some(p) => Err(missing_image(p)),
        None => Ok(()),
    }
}

/// Split `IMAGE[:VOL]`. A path that exists as given wins over a split, so
/// image names containing `:` still work.
pub(crate) fn parse_target(t: &str, disks: &[PathBuf]) -> Result<Target, Failure> {
    ensure_images_exist(disks)?;
    if Path::new(t).exists() {
        return Ok(Target {
            image: PathBuf::from(t),
            sel: None,
            disks: disks.to_vec(),
        });
    }
    match t.rsplit_once(':') {
        Some((img, vol)) if !img.is_empty() => {
            if !Path::new(img).exists() {
                return Err(missing_image(Path::new(img)));
            }
            Ok(Target {
                image: PathBuf::from(img),
                sel: Some(VolumeSelector::parse(vol)),
                disks: disks.to_vec(),
            })
        }
        _ => Err(missing_image(Path::new(t))),
    }
}

/// Open a VM's images, refusing a boot disk that is not a disk image.
/// The `--key` options of this run (set once by `main`).
static KEYS: std::sync::OnceLock<Vec<KeySpec>> = std::sync::OnceLock::new();

/// Record the run's `--key` options.
pub(crate) fn set_keys(keys: Vec<KeySpec>) {
    let _ = KEYS.set(keys);
}

/// The run's `--key` options.
pub(crate) fn keys() -> Vec<KeySpec> {
    KEYS.get().cloned().unwrap_or_default()
}

pub(crate) fn open_vm(images: &[PathBuf], writable: bool) -> Result<Vm, Failure> {
    ensure_images_exist(images)?;
    let opts = OpenOptions {
        writable,
        keys: keys(),
        ..OpenOptions::default()
    };
    let vm = Vm::open(images, &opts).map_err(|e| classify(e.into()))?;
    for l in vm.layouts() {
        vlog!(
            "{}: {} bytes, partition table {}, {} volume(s): {}",
            l.path.display(),
            l.size,
            l.table.as_str(),
            l.volumes.len(),
            vmie_inspect::describe_choices(l)
        );
    }
    if let Some(why) = vmie_inspect::preflight::not_a_disk_image(&vm) {
        return Err(refused(anyhow!(why)));
    }
    Ok(vm)
}

/// An opened guest tree.
pub(crate) struct Tree {
    pub(crate) vm: Vm,
    fs: Box<dyn GuestFs>,
    /// The root volume (whole tree) or the one volume.
    root: String,
    /// Whether `fs` is the guest's mounted tree.
    whole: bool,
    /// (mountpoint, volume name), root first.
    mounted: Vec<(String, String)>,
}

impl Tree {
    /// The tree for reading and, through the overlay, writing.
    pub(crate) fn fs(&self) -> &dyn GuestFs {
        self.fs.as_ref()
    }

    /// A freshly opened tree over the same overlays (for the self-check).
    fn reopen(&self) -> Result<Box<dyn GuestFs>, Failure> {
        let vol = self
            .vm
            .volumes()
            .find(|v| v.name == self.root)
            .ok_or_else(|| refused(anyhow!("{} is no longer found", self.root)))?;
        if self.whole {
            let t = self.vm.mount_guest(vol).map_err(|e| classify(e.into()))?;
            Ok(Box::new(t.mounts))
        } else {
            self.vm.open_fs(vol).map_err(|e| classify(e.into()))
        }
    }

    /// The volume that holds `p` (the longest mountpoint prefix).
    pub(crate) fn volume_of(&self, p: &GuestPath) -> &str {
        self.mounted
            .iter()
            .filter(|(m, _)| {
                p.components()
                    .starts_with(GuestPath::from(m.as_str()).components())
            })
            .max_by_key(|(m, _)| GuestPath::from(m.as_str()).components().len())
            .map(|(_, v)| v.as_str())
            .unwrap_or(self.root.as_str())
    }
}

/// Open the tree `target` names: one volume with `:VOL`, else the guest.
pub(crate) fn open_tree(target: &Target, writable: bool) -> Result<Tree, Failure> {
    let images: Vec<PathBuf> = std::iter::once(target.image.clone())
        .chain(target.disks.iter().cloned())
        .collect();
    let vm = open_vm(&images, writable)?;
    let image = target.image.display().to_string();
    if let Some(sel) = &target.sel {
        let (fs, name) = {
            let vol = vm.select(0, sel).map_err(|e| classify(e.into()))?;
            vlog!("volume {}: opening its filesystem", vol.name);
            (
                vm.open_fs(vol).map_err(|e| classify(e.into()))?,
                vol.name.clone(),
            )
        };
        return Ok(Tree {
            vm,
            fs,
            mounted: vec![("/".into(), name.clone())],
            root: name,
            whole: false,
        });
    }
    let linux: Vec<String> = vm.linux_roots().iter().map(|v| v.name.clone()).collect();
    vlog!("Linux roots: {}", list_or_none(&linux));
    match linux.as_slice() {
        [root] => {
            let t = {
                let vol = vm
                    .volumes()
                    .find(|v| &v.name == root)
                    .ok_or_else(|| refused(anyhow!("{root} is no longer found")))?;
                vm.mount_guest(vol).map_err(|e| classify(e.into()))?
            };
            for (m, v) in &t.mounted {
                vlog!("mounted {v} on {m}");
            }
            for n in &t.not_mounted {
                vlog!("not mounted: {n}");
            }
            Ok(Tree {
                vm,
                fs: Box::new(t.mounts),
                root: root.clone(),
                whole: true,
                mounted: t.mounted,
            })
        }
        [] => {
            let windows: Vec<String> = vm.windows_roots().iter().map(|v| v.name.clone()).collect();
            vlog!("Windows system volumes: {}", list_or_none(&windows));
            let (fs, name) = match windows.as_slice() {
                [one] => {
                    let vol = vm
                        .volumes()
                        .find(|v| &v.name == one)
                        .ok_or_else(|| refused(anyhow!("{one} is no longer found")))?;
                    (
                        vm.open_fs(vol).map_err(|e| classify(e.into()))?,
                        one.clone(),
                    )
                }
                [] => {
                    // No guest: the one readable volume, as before.
                    let vol = vm.select(0, &VolumeSelector::Auto).map_err(|e| {
                        refused(anyhow!(
                            "no guest operating system found on {image}, and {e}"
                        ))
                    })?;
                    (
                        vm.open_fs(vol).map_err(|e| classify(e.into()))?,
                        vol.name.clone(),
                    )
                }
                many => {
                    return Err(refused(anyhow!(
                        "{image}: {} Windows system volumes ({}); name one as {image}:N",
                        many.len(),
                        many.join(", ")
                    )))
                }
            };
            Ok(Tree {
                vm,
                fs,
                mounted: vec![("/".into(), name.clone())],
                root: name,
                whole: false,
            })
        }
        many => Err(refused(anyhow!(
            "{image}: {} Linux root filesystems ({}); name one as {image}:N or {image}:UUID",
            many.len(),
            many.join(", ")
        ))),
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One file to create or replace.
pub(crate) struct Put {
    /// Guest path as given (symlinks are followed inside the guest).
    pub(crate) path: String,
    /// New contents.
    pub(crate) data: Vec<u8>,
    /// Keep the original as `NAME.vmie.bak` (never overwriting an existing backup).
    pub(crate) backup: bool,
}

/// Create or replace every file of `puts` in the tree, self-check, and
/// commit (unless `dry_run`). Returns one line per change, and the undo
/// journals written.
pub(crate) fn put_files(
    tree: &mut Tree,
    puts: &[Put],
    dry_run: bool,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let mut lines = Vec::new();
    let mut expect: Vec<(GuestPath, Vec<u8>)> = Vec::new();
    for put in puts {
        let p = resolve(tree.fs(), put.path.as_bytes(), true).map_err(|e| classify(e.into()))?;
        let vol = tree.volume_of(&p).to_string();
        let existing = match tree.fs().symlink_metadata(&p) {
            Ok(m) if m.file_type == FileType::Regular => Some(m),
            Ok(m) => {
                return Err(refused(anyhow!(
                    "{vol}: {p} exists and is a {}, not a regular file",
                    file_type_word(m.file_type)
                )));
            }
            Err(FsError::NotFound { .. }) => None,
            Err(e) => return Err(classify(e.into())),
        };
        let what = match &existing {
            Some(m) => {
                if put.backup {
                    let old = tree
                        .fs()
                        .read_file(&p, u64::MAX)
                        .map_err(|e| classify(e.into()))?;
                    // The one rule for where an original is kept.
                    let bak = vmie_rules::engine::backup_path(&p);
                    match tree.fs().symlink_metadata(&bak) {
                        Ok(_) => vlog!("{bak} exists: the first original is kept"),
                        Err(FsError::NotFound { .. }) => {
                            tree.fs
                                .create_file(&bak, &old, &NewAttrs::like(m))
                                .map_err(|e| classify(e.into()))?;
                            lines.push(format!(
                                "{vol}: {}keep the original as {bak}",
                                verb(dry_run)
                            ));
                            expect.push((bak, old));
                        }
                        Err(e) => return Err(classify(e.into())),
                    }
                }
                tree.fs
                    .replace_file(&p, &put.data)
                    .map_err(|e| classify(e.into()))?;
                format!("replace {p} ({} -> {} bytes)", m.size, put.data.len())
            }
            None => {
                tree.fs
                    .create_file(&p, &put.data, &NewAttrs::default())
                    .map_err(|e| classify(e.into()))?;
                format!(
                    "create {p} ({} bytes, mode 0644, root:root)",
                    put.data.len()
                )
            }
        };
        vlog!("{vol}: staged: {what}");
        lines.push(format!("{vol}: {}{what}", verb(dry_run)));
        expect.push((p, put.data.clone()));
    }
    // Self-check: an independent, freshly opened reader over the same overlays.
    let fresh = tree.reopen()?;
    for (p, data) in &expect {
        let back = fresh
            .read_file(p, u64::MAX)
            .map_err(|e| refused(anyhow!("self-check: {e}; nothing written")))?;
        if &back != data {
            return Err(refused(anyhow!(
                "self-check: {p} reads back differently; nothing written"
            )));
        }
    }
    vlog!("self-check: {} file(s) read back equal", expect.len());
    let changed: u64 = tree
        .vm
        .disks()
        .disks()
        .iter()
        .map(|d| d.overlay().pending_bytes())
        .sum();
    if dry_run {
        lines.push(format!(
            "{changed} bytes of the image would change (dry run: nothing written)"
        ));
        return Ok((lines, Vec::new()));
    }
    let report = tree
        .vm
        .disks()
        .commit(&Default::default())
        .map_err(|e| classify(e.into()))?;
    let journals: Vec<String> = report
        .images
        .iter()
        .map(|i| i.journal.display().to_string())
        .collect();
    vlog!(
        "committed {changed} bytes; undo journal(s): {}",
        journals.join(", ")
    );
    Ok((lines, journals))
}

fn verb(dry_run: bool) -> &'static str {
    if dry_run {
        "would "
    } else {
        ""
    }
}
