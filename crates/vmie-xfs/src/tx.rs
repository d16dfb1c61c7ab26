//! One write operation as an in-memory transaction: every changed byte is
//! staged here (reads see the staged bytes), and nothing reaches the
//! device until [`Tx::commit`], after every check has passed.

use vmie_guestfs::FsError;

use crate::Ctx;

/// Most staged buffers one operation may hold (a bound on memory and on
/// the read overlay scan; a 256 MiB file staged in extents is a few
/// hundred buffers).
const MAX_STAGED: usize = 1 << 16;

#[derive(Debug)]
pub(crate) struct Tx<'a> {
    pub c: &'a Ctx,
    /// Staged writes, in order (later ones win where they overlap).
    staged: Vec<(u64, Vec<u8>)>,
    /// Primary superblock counter deltas: (icount, ifree, fdblocks).
    pub d_ifree: i64,
    pub d_fdblocks: i64,
    /// Set the v4 attribute feature bit.
    pub set_attrbit: bool,
}

impl<'a> Tx<'a> {
    pub fn new(c: &'a Ctx) -> Self {
        Self {
            c,
            staged: Vec::new(),
            d_ifree: 0,
            d_fdblocks: 0,
            set_attrbit: false,
        }
    }

    /// `len` bytes at `off`, as the device will hold them after commit.
    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let mut buf = vec![0u8; len];
        self.c.dev.read_at(off, &mut buf)?;
        let end = off + len as u64;
        for (o, b) in &self.staged {
            let bend = o + b.len() as u64;
            if bend <= off || *o >= end {
                continue;
            }
            let from = off.max(*o);
            let to = end.min(bend);
            buf[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&b[(from - o) as usize..(to - o) as usize]);
        }
        Ok(buf)
    }

    /// Stage `buf` at `off`.
    pub fn write(&mut self, off: u64, buf: Vec<u8>) -> Result<(), FsError> {
        if let Some(s) = self
            .staged
            .iter_mut()
            .find(|(o, b)| *o == off && b.len() == buf.len())
        {
            s.1 = buf;
            return Ok(());
        }
        if self.staged.len() >= MAX_STAGED {
            return Err(FsError::Unsupported {
                fs: self.c.location.clone(),
                op: "write".into(),
                why: format!("one operation would change more than {MAX_STAGED} regions"),
            });
        }
        self.staged.push((off, buf));
        Ok(())
    }

    /// Write everything staged to the device.
    pub fn commit(self) -> Result<(), FsError> {
        for (off, buf) in &self.staged {
            self.c.dev.write_at(*off, buf)?;
        }
        Ok(())
    }
}
