use thiserror::Error;

/// Errors of OS inspection.
#[derive(Debug, Error)]
pub enum OsError {
    /// The filesystem is not a Linux root (refusal of the input).
    #[error("{fs}: not a Linux root filesystem (needs /etc, /bin and /etc/fstab or /etc/hosts)")]
    NotLinux {
        /// Filesystem location.
        fs: String,
    },
    /// Reading the guest failed.
    #[error(transparent)]
    Fs(#[from] vmie_guestfs::FsError),
    /// An initramfs could not be decoded (corrupt, unsupported, or over a limit).
    #[error("initramfs: {0}")]
    Initramfs(String),
}

impl OsError {
    /// Whether this is a refusal of the input (rather than an I/O error).
    pub fn is_refusal(&self) -> bool {
        match self {
            OsError::NotLinux { .. } | OsError::Initramfs(_) => true,
            OsError::Fs(e) => !matches!(e, vmie_guestfs::FsError::Disk(_)),
        }
    }
}
