use thiserror::Error;
use vmie_disk::DiskError;

/// Why a partition table could not be read. Every variant names the disk and,
/// where it applies, the header or partition and the byte offset, so a refusal
/// can be traced to a byte of the image.
///
/// Damage that Linux tolerates (a partition past the end of the disk, a broken
/// EBR chain, a damaged primary GPT header with a good backup) is not an
/// error: it becomes a warning in [`crate::PartitionTable::warnings`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PartError {
    /// Reading the disk failed.
    #[error("{disk}: reading {what} at byte {offset}: {source}")]
    Read {
        /// The disk.
        disk: String,
        /// What we were reading (`the MBR`, `the GPT entry array`, ...).
        what: String,
        /// Byte offset of the read.
        offset: u64,
        /// The device error.
        #[source]
        source: DiskError,
    },
    /// A GPT header whose checksum is right but whose fields are outside the
    /// limits we accept (so neither we nor the `gpt` crate may act on it).
    #[error("{disk}: {header} GPT header at LBA {lba} (byte {offset}): {field} is {value}: {why}")]
    GptHeader {
        /// The disk.
        disk: String,
        /// `primary` or `backup`.
        header: &'static str,
        /// LBA the header was read from.
        lba: u64,
        /// Byte offset of the header.
        offset: u64,
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Which limit it breaks.
        why: String,
    },
    /// The protective MBR says GPT, but no usable GPT header was found.
    #[error("{disk}: protective MBR (type 0xee) present but no usable GPT: {why}")]
    NoUsableGpt {
        /// The disk.
        disk: String,
        /// What was wrong with each header looked at.
        why: String,
    },
    /// The `mbrman` or `gpt` crate panicked on a table we had validated (the
    /// call is made behind `vmie_disk::guard::catch`, as defence in depth).
    #[error("{disk}: the {table} partition table: the {parser} crate failed on corrupt data ({message}); refused")]
    Panicked {
        /// The disk.
        disk: String,
        /// `MBR` or `GPT`.
        table: &'static str,
        /// `mbrman` or `gpt`.
        parser: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The requested logical sector size is not supported.
    #[error("{disk}: unsupported logical sector size {sector_size} (only 512 and 4096)")]
    SectorSize {
        /// The disk.
        disk: String,
        /// The size asked for.
        sector_size: u32,
    },
}

impl PartError {
    /// Whether this error means the input was refused (a table we will not
    /// act on, or an unsupported option), as opposed to an I/O failure.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Read { source, .. } => source.is_refusal(),
            Self::GptHeader { .. }
            | Self::NoUsableGpt { .. }
            | Self::Panicked { .. }
            | Self::SectorSize { .. } => true,
        }
    }
}
