//! The architecture of a PE image (`kernel32.dll`) from its COFF header.

use thiserror::Error;

/// Why a PE header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeError {
    /// Shorter than a DOS header (64 bytes).
    #[error("{len} bytes: too short for a DOS header")]
    TooShort {
        /// File length.
        len: usize,
    },
    /// No `MZ` at offset 0.
    #[error("no MZ signature")]
    NoMz,
    /// `e_lfanew` (offset 0x3c) points outside the file or inside the DOS header.
    #[error("e_lfanew {e_lfanew:#x} is out of bounds (file is {len} bytes)")]
    BadLfanew {
        /// The field's value.
        e_lfanew: u32,
        /// File length.
        len: usize,
    },
    /// No `PE\0\0` at `e_lfanew`.
    #[error("no PE signature at {at:#x}")]
    NoPe {
        /// Offset looked at.
        at: u32,
    },
    /// A Machine value we have no name for.
    #[error("unknown COFF machine {0:#06x}")]
    UnknownMachine(u16),
}

/// COFF `Machine` of a PE image: checks `MZ`, bounds-checks `e_lfanew`
/// (at least 0x40, `PE\0\0` and Machine inside the file) and the signature.
pub fn pe_machine(bytes: &[u8]) -> Result<u16, PeError> {
    if bytes.len() < 0x40 {
        return Err(PeError::TooShort { len: bytes.len() });
    }
    if bytes.get(..2) != Some(b"MZ".as_slice()) {
        return Err(PeError::NoMz);
    }
    let lf = bytes
        .get(0x3c..0x40)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or(PeError::TooShort { len: bytes.len() })?;
    let bad = PeError::BadLfanew {
        e_lfanew: lf,
        len: bytes.len(),
    };
    let start = usize::try_from(lf).map_err(|_| bad.clone())?;
    if start < 0x40 {
        return Err(bad);
    }
    let end = start.checked_add(6).ok_or_else(|| bad.clone())?;
    let hdr = bytes.get(start..end).ok_or(bad)?;
    if hdr.get(..4) != Some(b"PE\0\0".as_slice()) {
        return Err(PeError::NoPe { at: lf });
    }
    let m = hdr
        .get(4..6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_le_bytes)
        .ok_or(PeError::NoPe { at: lf })?;
    Ok(m)
}

/// The architecture name (virt-inspector's) of a COFF machine.
pub fn machine_arch(machine: u16) -> Option<&'static str> {
    Some(match machine {
        0x014c => "i386",
        0x8664 => "x86_64",
        0xaa64 => "aarch64",
        0x0200 => "ia64",
        0x01c4 => "arm",
        _ => return None,
    })
}

/// The architecture of a PE image: `i386` (0x14c), `x86_64` (0x8664),
/// `aarch64` (0xaa64), `ia64`, `arm`.
pub fn pe_arch(bytes: &[u8]) -> Result<&'static str, PeError> {
    let m = pe_machine(bytes)?;
    machine_arch(m).ok_or(PeError::UnknownMachine(m))
}

/// `PROCESSOR_ARCHITECTURE` of the system environment → architecture name.
pub fn processor_architecture_arch(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "X86" => "i386",
        "AMD64" => "x86_64",
        "ARM64" => "aarch64",
        "IA64" => "ia64",
        "ARM" => "arm",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pe(lfanew: u32, machine: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0] = b'M';
        b[1] = b'Z';
        b[0x3c..0x40].copy_from_slice(&lfanew.to_le_bytes());
        let at = lfanew as usize;
        if at >= 0x40 && at + 6 <= len {
            b[at..at + 4].copy_from_slice(b"PE\0\0");
            b[at + 4..at + 6].copy_from_slice(&machine.to_le_bytes());
        }
        b
    }

    #[test]
    fn machines() {
        assert_eq!(pe_arch(&pe(0x80, 0x14c, 0x200)), Ok("i386"));
        assert_eq!(pe_arch(&pe(0x80, 0x8664, 0x200)), Ok("x86_64"));
        assert_eq!(pe_arch(&pe(0xf8, 0xaa64, 0x200)), Ok("aarch64"));
        assert_eq!(
            pe_arch(&pe(0x80, 0x1234, 0x200)),
            Err(PeError::UnknownMachine(0x1234))
        );
    }

    #[test]
    fn hostile() {
        assert_eq!(pe_arch(b"MZ"), Err(PeError::TooShort { len: 2 }));
        assert_eq!(pe_arch(&[0u8; 0x40]), Err(PeError::NoMz));
        // PE header exactly at the end: 6 bytes fit.
        assert_eq!(pe_arch(&pe(0x7a, 0x8664, 0x80)), Ok("x86_64"));
        // One byte short.
        assert!(matches!(
            pe_arch(&pe(0x7b, 0x8664, 0x80)),
            Err(PeError::BadLfanew { e_lfanew: 0x7b, .. })
        ));
        for lf in [0u32, 0x3c, 0x1000, u32::MAX, u32::MAX - 3] {
            assert!(matches!(
                pe_arch(&pe(lf, 0x8664, 0x80)),
                Err(PeError::BadLfanew { .. })
            ));
        }
        let mut b = pe(0x80, 0x8664, 0x100);
        b[0x80] = b'X';
        assert_eq!(pe_arch(&b), Err(PeError::NoPe { at: 0x80 }));
    }

    #[test]
    fn processor_architecture() {
        assert_eq!(processor_architecture_arch("x86"), Some("i386"));
        assert_eq!(processor_architecture_arch("AMD64"), Some("x86_64"));
        assert_eq!(processor_architecture_arch("ARM64"), Some("aarch64"));
        assert_eq!(processor_architecture_arch("MIPS"), None);
    }
}
