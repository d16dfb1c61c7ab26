use thiserror::Error;

/// Everything that can go wrong at the disk layer. Every variant names the
/// device (image path, or `image partition N`) and, where it applies, the
/// offset, so a refusal can be traced to a byte.
#[derive(Debug, Error)]
pub enum DiskError {
    /// An access outside the device.
    #[error(
        "{device}: access of {len} bytes at offset {offset} is outside the device ({size} bytes)"
    )]
    OutOfBounds {
        /// The device.
        device: String,
        /// Start of the access.
        offset: u64,
        /// Its length.
        len: u64,
        /// The device's size.
        size: u64,
    },
    /// The operating system refused an I/O call.
    #[error("{device}: {op}: {source}")]
    Io {
        /// The device or file.
        device: String,
        /// What we were doing.
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A write to a device opened read-only.
    #[error("{device}: device is read-only")]
    ReadOnly {
        /// The device.
        device: String,
    },
    /// The input is not a raw disk image we can use.
    #[error("{path}: {why}")]
    NotAnImage {
        /// The file.
        path: String,
        /// Why not.
        why: String,
    },
    /// A lock was poisoned by a panic in another thread.
    #[error("{device}: internal lock poisoned")]
    Poisoned {
        /// The device.
        device: String,
    },
    /// The undo journal is missing, damaged, or does not match the image.
    #[error("{path}: {why}")]
    Journal {
        /// The journal or image file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A failure injected by a test (see [`crate::FaultPlan`]).
    #[error("injected failure at write {0}")]
    Injected(u64),
}

impl DiskError {
    pub(crate) fn io(
        device: impl Into<String>,
        op: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            device: device.into(),
            op: op.into(),
            source,
        }
    }

    pub(crate) fn journal(path: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Journal {
            path: path.into(),
            why: why.into(),
        }
    }

    /// Whether this error means the input was refused (unsupported or unsafe),
    /// as opposed to an I/O or internal failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NotAnImage { .. } | Self::OutOfBounds { .. } | Self::Journal { .. }
        )
    }
}
