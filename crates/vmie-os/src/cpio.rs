//! Writing cpio `newc` archives as the kernel's initramfs unpacker reads
//! them (Documentation/driver-api/early-userspace/buffer-format.rst):
//! a 110-byte ASCII header (`070701`, thirteen 8-digit hex fields), the
//! name with its NUL, padding to 4 bytes, the data, padding to 4 bytes; the
//! archive ends with the entry `TRAILER!!!`, which also resets the
//! unpacker's hard-link table, so an archive written here can follow any
//! other one. No entry is a hard link (each has its own inode number and
//! `nlink` 1, 2 for directories), every field fits its 8 hex digits or the
//! entry is refused, and times are fixed, so the same input gives the same
//! bytes.

use crate::OsError;

/// File type bits of `st_mode`.
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// A `newc` archive being written.
#[derive(Debug, Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
    /// Seconds since the epoch stamped on every entry.
    mtime: u32,
}

impl CpioWriter {
    /// An empty archive whose entries carry `mtime`.
    pub fn new(mtime: u32) -> Self {
        Self {
            buf: Vec::new(),
            next_ino: 1,
            mtime,
        }
    }

    /// Add a directory (`perm`: the permission bits).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), OsError> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, &[])
    }

    /// Add a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), OsError> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, data)
    }

    /// Bytes written so far (before [`CpioWriter::finish`]).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The archive, with its trailer, a multiple of 4 bytes long.
    pub fn finish(mut self) -> Result<Vec<u8>, OsError> {
        self.header("TRAILER!!!", 0, 0, 0, 1)?;
        Ok(self.buf)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> Result<(), OsError> {
        let name = name.trim_start_matches('/');
        if name.is_empty()
            || name == "TRAILER!!!"
            || name.contains('\0')
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(OsError::Initramfs(format!(
                "cpio writer: {name:?} is not a relative path of plain components"
            )));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            OsError::Initramfs(format!(
                "cpio writer: {name}: {} bytes do not fit a newc header",
                data.len()
            ))
        })?;
        let ino = self.next_ino;
        self.next_ino = ino
            .checked_add(1)
            .ok_or_else(|| OsError::Initramfs("cpio writer: too many entries".into()))?;
        self.header(name, ino, mode, size, nlink)?;
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        size: u32,
        nlink: u32,
    ) -> Result<(), OsError> {
        let namesize = u32::try_from(name.len() + 1)
            .ok()
            .filter(|n| *n <= 4096)
            .ok_or_else(|| OsError::Initramfs(format!("cpio writer: name too long: {name}")))?;
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let fields = [
            ino, mode, 0, 0, nlink, self.mtime, size, 0, 0, 0, 0, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::{parse_initramfs, InitramfsLimits};

    #[test]
    fn an_archive_reads_back_through_our_parser() {
        let mut w = CpioWriter::new(0);
        w.dir("lib", 0o755).unwrap();
        w.dir("lib/modules", 0o755).unwrap();
        w.file("lib/modules/a.ko", 0o644, b"abc").unwrap();
        w.file("conf/modules", 0o644, b"").unwrap();
        let a = w.finish().unwrap();
        assert_eq!(a.len() % 4, 0);
        let i = parse_initramfs(&a, &InitramfsLimits::default()).unwrap();
        let names: Vec<_> = i.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["lib", "lib/modules", "lib/modules/a.ko", "conf/modules"]
        );
        assert_eq!(i.entries[2].size, 3);
        assert_eq!(i.entries[2].mode, 0o100_644);
        assert_eq!(i.module_names(), ["a"]);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(0);
        for n in ["", "/", "a/../b", "a//b", "./a", "TRAILER!!!", "a\0b"] {
            assert!(w.file(n, 0o644, b"").is_err(), "{n:?}");
        }
        assert!(w.is_empty());
        assert!(w.file(&"x".repeat(5000), 0o644, b"").is_err());
    }
}
