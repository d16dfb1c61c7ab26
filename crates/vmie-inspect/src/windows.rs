//! A Windows guest: its system volume (NTFS, read through `vmie-ntfs`) and
//! what `vmie-win` finds in its registry hives, kernel32.dll and BCD store.

use vmie_probe::FsKind;

use crate::{InspectError, Vm, Volume};

/// A Windows guest found on a VM.
#[derive(Debug)]
pub struct WindowsGuest {
    /// The system volume's name (`image partition N`).
    pub root: String,
    /// What inspection found.
    pub info: vmie_win::WindowsInfo,
    /// Size, free space and the dirty flag of the system volume.
    pub volume: vmie_ntfs::NtfsVolumeInfo,
}

impl Vm {
    /// NTFS volumes holding a Windows system root (`\Windows\System32\config`
    /// with SYSTEM and SOFTWARE).
    pub fn windows_roots(&self) -> Vec<&Volume> {
        self.volumes()
            .filter(|v| v.probe.as_ref().is_some_and(|p| p.kind == FsKind::Ntfs))
            .filter(|v| {
                self.open_fs(v)
                    .is_ok_and(|fs| vmie_win::is_windows_root(fs.as_ref()))
            })
            .collect()
    }

    /// The system partitions of the Windows guest whose system volume is
    /// `root`: every other NTFS or FAT volume that holds a BCD store
    /// (`\\Boot\\BCD`, a BIOS install's "System Reserved" volume;
    /// `\\EFI\\Microsoft\\Boot\\BCD`, a UEFI install's EFI system
    /// partition), in disk and partition order.
    pub fn system_partitions(&self, root: &Volume) -> Vec<&Volume> {
        self.volumes()
            .filter(|v| v.name != root.name)
            .filter(|v| {
                v.probe
                    .as_ref()
                    .is_some_and(|p| matches!(p.kind, FsKind::Ntfs | FsKind::Vfat))
            })
            .filter(|v| {
                self.open_fs(v).is_ok_and(|fs| {
                    vmie_win::bcd_store_path(fs.as_ref(), &vmie_win::WinInspectOptions::default())
                        .is_ok_and(|p| p.is_some())
                })
            })
            .collect()
    }

    /// Inspect the Windows guest whose system volume is `root`.
    pub fn windows_guest(&self, root: &Volume) -> Result<WindowsGuest, InspectError> {
        let fs = vmie_ntfs::NtfsFs::open(root.device.clone(), root.name.clone())?;
        let volume = fs.volume_info()?;
        let opts = vmie_win::WinInspectOptions::default();
        let mut info = vmie_win::inspect_windows(&fs, &opts).map_err(|e| match e {
            // I/O stays an I/O error (exit 3), not a refusal.
            vmie_win::WinError::Fs(e) => InspectError::Fs(e),
            other => InspectError::Select(format!("{}: {other}", root.name)),
        })?;
        if info.boot.is_none() {
            // A BIOS install keeps its BCD on the "System Reserved" volume, a
            // UEFI install on the EFI system partition.
            for v in self.system_partitions(root) {
                let Ok(other) = self.open_fs(v) else { continue };
                let mut warnings = Vec::new();
                if let Ok(Some(mut b)) =
                    vmie_win::find_boot_config(other.as_ref(), &opts, &mut warnings)
                {
                    b.path = b.path.map(|p| format!("{}:{p}", v.name));
                    info.boot = Some(b);
                    info.hives.bcd = true;
                    info.warnings.extend(warnings);
                    break;
                }
            }
        }
        Ok(WindowsGuest {
            root: root.name.clone(),
            info,
            volume,
        })
    }
}
