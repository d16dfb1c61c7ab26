use thiserror::Error;

/// Errors of the guest file API. Every variant names the filesystem's location
/// (`fs`: image and partition) and the guest path where it applies.
#[derive(Debug, Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("{fs}: {path}: no such file or directory")]
    NotFound {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// A path component that must be a directory is not.
    #[error("{fs}: {path}: not a directory")]
    NotADirectory {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// A file operation on a directory.
    #[error("{fs}: {path}: is a directory")]
    IsADirectory {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// A regular-file operation on something else (device, fifo, socket, symlink).
    #[error("{fs}: {path}: not a regular file")]
    NotAFile {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// Not a symbolic link.
    #[error("{fs}: {path}: not a symbolic link")]
    NotASymlink {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// Too many symbolic links followed: a loop, or a chain too long.
    #[error("{fs}: {path}: too many levels of symbolic links (more than {hops}): a symlink loop?")]
    SymlinkLoop {
        /// Filesystem location.
        fs: String,
        /// Guest path as given.
        path: String,
        /// The hop limit.
        hops: u32,
    },
    /// A path or name too long.
    #[error("{fs}: {path}: path too long")]
    PathTooLong {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// The file is larger than the configured read limit.
    #[error("{fs}: {path}: file is {size} bytes, over the read limit of {limit} bytes")]
    TooLarge {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The target exists already.
    #[error("{fs}: {path}: already exists")]
    Exists {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// A directory to remove is not empty.
    #[error("{fs}: {path}: directory not empty")]
    NotEmpty {
        /// Filesystem location.
        fs: String,
        /// Guest path.
        path: String,
    },
    /// No space or no free inode.
    #[error("{fs}: no space left: {what}")]
    NoSpace {
        /// Filesystem location.
        fs: String,
        /// Blocks or inodes.
        what: String,
    },
    /// This filesystem (or this implementation) does not write.
    #[error("{fs}: {op} is not supported: {why}")]
    Unsupported {
        /// Filesystem location.
        fs: String,
        /// The operation.
        op: String,
        /// Why.
        why: String,
    },
    /// The on-disk structures are inconsistent.
    #[error("{fs}: corrupt filesystem at {place}: {detail}")]
    Corrupt {
        /// Filesystem location.
        fs: String,
        /// Where (path, inode, block or offset).
        place: String,
        /// What is wrong.
        detail: String,
    },
    /// An error of the disk layer underneath.
    #[error(transparent)]
    Disk(#[from] vmie_disk::DiskError),
}
