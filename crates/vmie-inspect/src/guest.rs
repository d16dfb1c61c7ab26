//! A Linux guest: its root volume, what `vmie-os` finds in it, and its
//! filesystems mounted as its fstab says, as one tree.

use vmie_guestfs::{GuestFs, GuestFsExt, GuestPath, Mounts};
use vmie_os::{InspectOptions, LinuxInfo};
use vmie_rules::engine::{Context, Kernel};
use vmie_rules::fstab;
use vmie_rules::rules::{Facts, OsType};

use crate::{readable, InspectError, Vm, Volume};

/// A Linux guest found on a VM.
#[derive(Debug)]
pub struct LinuxGuest {
    /// The root volume's name (`image partition N`).
    pub root: String,
    /// What inspection found.
    pub info: LinuxInfo,
    /// The guest's filesystems, mounted at their fstab mountpoints.
    pub mounts: Mounts,
    /// (mountpoint, volume name) of every mount, root first.
    pub mounted: Vec<(String, String)>,
    /// fstab entries that could not be mounted, and why.
    pub not_mounted: Vec<String>,
}

/// A guest's filesystems mounted as its fstab says.
#[derive(Debug)]
pub struct MountedTree {
    /// The tree.
    pub mounts: Mounts,
    /// (mountpoint, volume name) of every mount, root first.
    pub mounted: Vec<(String, String)>,
    /// fstab entries that could not be mounted, and why.
    pub not_mounted: Vec<String>,
    /// The OSTree deployment that is the root, when the root volume is an
    /// OSTree physical root.
    pub ostree: Option<vmie_os::OstreeDeployment>,
}

impl Vm {
    /// The VM's volumes as the fstab and kernel-argument rules see them.
    pub fn fstab_volumes(&self) -> Vec<fstab::Volume> {
        self.volumes()
            .filter(|v| !v.is_extended())
            .map(|v| fstab::Volume {
                disk: v.disk,
                partition: v.number,
                uuid: v.probe.as_ref().and_then(|p| p.uuid.clone()),
                label: v.probe.as_ref().and_then(|p| p.label.clone()),
                partuuid: v.part_uuid.clone(),
                partlabel: v.part_label.clone(),
                lvm: v.lv.as_ref().map(|l| (l.vg.clone(), l.lv.clone())),
            })
            .collect()
    }

    /// Volumes holding a Linux root filesystem we can read (NTFS, readable
    /// for Windows, is not looked into).
    pub fn linux_roots(&self) -> Vec<&Volume> {
        self.volumes()
            .filter(|v| {
                v.probe
                    .as_ref()
                    .is_some_and(|p| readable(p.kind) && p.kind != vmie_probe::FsKind::Ntfs)
            })
            .filter(|v| {
                self.open_fs(v).is_ok_and(|fs| {
                    vmie_os::is_linux_root(fs.as_ref())
                        || vmie_os::ostree_deployment(fs.as_ref()).is_some()
                })
            })
            .collect()
    }

    /// Mount the Linux root on `root` and the rest of its fstab as one tree,
    /// without inspecting it.
    pub fn mount_guest(&self, root: &Volume) -> Result<MountedTree, InspectError> {
        let phys = self.open_fs(root)?;
        let mut ostree = None;
        let root_fs: Box<dyn GuestFs> = if vmie_os::is_linux_root(phys.as_ref()) {
            phys
        } else if let Some(d) = vmie_os::ostree_deployment(phys.as_ref()) {
            // The booted system's `/` is the deployment. Its `/var` and the
            // physical root (`/sysroot`) are bind mounts of the same
            // filesystem: not mounted again, since two writers over one
            // volume would each cache its own allocation state.
            let base = GuestPath::from(d.path.as_str());
            ostree = Some(d);
            Box::new(vmie_guestfs::SubdirFs::new(phys, base))
        } else {
            phys
        };
        let fstab_text = root_fs.read("/etc/fstab").unwrap_or_default();
        let entries = vmie_os::parse_fstab(&String::from_utf8_lossy(&fstab_text));
        let mut mounts = Mounts::new();
        mounts.mount(GuestPath::root(), root_fs);
        let mut mounted = vec![("/".to_string(), root.name.clone())];
        let mut not_mounted = Vec::new();
        let vols = self.fstab_volumes();
        let all: Vec<&Volume> = self.volumes().filter(|v| !v.is_extended()).collect();
        let mut entries: Vec<&vmie_os::FstabEntry> = entries
            .iter()
            .filter(|e| e.mountpoint.starts_with('/') && e.mountpoint != "/")
            .collect();
        // Parents before children: /boot before /boot/efi.
        entries.sort_by_key(|e| e.mountpoint.matches('/').count());
        for e in entries {
            let Some(found) = fstab::lookup(&e.spec, &vols) else {
                continue; // pseudo, network, dm names we do not know
            };
            let Some(v) = found else {
                not_mounted.push(format!(
                    "{} on {}: no such volume on this VM",
                    e.spec, e.mountpoint
                ));
                continue;
            };
            let Some(vol) = all.iter().find(|x| {
                x.disk == v.disk
                    && x.number == v.partition
                    && x.lv.as_ref().map(|l| (l.vg.clone(), l.lv.clone())) == v.lvm
            }) else {
                continue;
            };
            match self.open_fs(vol) {
                Ok(fs) => {
                    mounts.mount(GuestPath::from(e.mountpoint.as_str()), fs);
                    mounted.push((e.mountpoint.clone(), vol.name.clone()));
                }
                Err(err) => not_mounted.push(format!("{} on {}: {err}", e.spec, e.mountpoint)),
            }
        }
        Ok(MountedTree {
            mounts,
            mounted,
            not_mounted,
            ostree,
        })
    }

    /// Mount the Linux root on `root` and the rest of its fstab, then
    /// inspect the whole tree (so a separate /boot shows its kernels and
    /// boot loader).
    pub fn linux_guest(
        &self,
        root: &Volume,
        opts: &InspectOptions,
    ) -> Result<LinuxGuest, InspectError> {
        let MountedTree {
            mounts,
            mounted,
            not_mounted,
            ostree,
        } = self.mount_guest(root)?;
        let mut info = vmie_os::inspect_linux(&mounts, opts)
            .map_err(|e| InspectError::Select(format!("{}: {e}", root.name)))?;
        if let Some(d) = &ostree {
            info.warnings.push(format!(
                "OSTree: the root is the deployment {} of {} (chosen by {}); its /var ({}) and the physical root (/sysroot) are not mounted",
                d.path, root.name, d.chosen_by, d.var
            ));
        }
        Ok(LinuxGuest {
            root: root.name.clone(),
            info,
            mounts,
            mounted,
            not_mounted,
        })
    }
}

impl LinuxGuest {
    /// The rule engine's view of this guest.
    pub fn context(&self, volumes: Vec<fstab::Volume>) -> Context {
        let i = &self.info;
        Context {
            facts: Facts {
                os: Some(OsType::Linux),
                distro: Some(i.distro.clone()),
                version: Some((i.major_version, i.minor_version)),
                bootloader: i.bootloader.kind.clone(),
                network_stacks: i.network.stacks.clone(),
                arch: i.arch.clone(),
                firmware: Some(
                    match i.firmware {
                        vmie_os::Firmware::Uefi => "uefi",
                        vmie_os::Firmware::Bios => "bios",
                    }
                    .to_string(),
                ),
                ..Facts::default()
            },
            volumes,
            kernels: i
                .kernels
                .iter()
                .map(|k| Kernel {
                    version: k.version.clone(),
                    // A partly read initramfs lists only some of its
                    // drivers: not a basis for saying which it lacks.
                    initramfs_readable: k.initramfs.as_ref().is_some_and(|i| i.error.is_none()),
                    initramfs_problem: match &k.initramfs {
                        None => Some("no initramfs found".into()),
                        Some(i) => i.error.as_ref().map(|e| format!("{}: {e}", i.path)),
                    },
                    drivers: k
                        .drivers
                        .iter()
                        .filter(|(_, s)| {
                            matches!(
                                s,
                                vmie_os::DriverState::Builtin | vmie_os::DriverState::Initramfs
                            )
                        })
                        .map(|(n, _)| n.clone())
                        .collect(),
                    modules_dir: k.modules_dir.clone(),
                    initramfs: k.initramfs.clone(),
                })
                .collect(),
        }
    }

    /// The guest tree, for reading and (through the overlay) writing.
    pub fn fs(&mut self) -> &mut dyn GuestFs {
        &mut self.mounts
    }
}
