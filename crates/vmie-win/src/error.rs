//! The error type of vmie-win.

use thiserror::Error;

/// Errors of Windows inspection. Almost everything unreadable inside a
/// Windows guest becomes a warning of [`crate::WindowsInfo`] instead; these
/// are what stops an inspection.
#[derive(Debug, Error)]
pub enum WinError {
    /// The filesystem has no Windows system root (refusal of the input).
    #[error("{fs}: not a Windows system root (needs /Windows or /WINNT with System32/config/SYSTEM and SOFTWARE)")]
    NotWindows {
        /// Filesystem location.
        fs: String,
    },
    /// Reading the guest failed below the filesystem (an I/O error of the device).
    #[error(transparent)]
    Fs(#[from] vmie_guestfs::FsError),
}

impl WinError {
    /// Whether this is a refusal of the input (rather than an I/O error).
    pub fn is_refusal(&self) -> bool {
        match self {
            WinError::NotWindows { .. } => true,
            WinError::Fs(e) => !matches!(e, vmie_guestfs::FsError::Disk(_)),
        }
    }
}
