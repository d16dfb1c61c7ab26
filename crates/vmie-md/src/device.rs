//! An assembled array as a [`Device`]: RAID1 (reads from one member, writes
//! to every member) and linear (members' data areas end to end).

use std::sync::Arc;

use vmie_disk::{check_range, Device, DiskError};

/// A member's data area: the device and the byte offset of the array's
/// first byte on it.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub dev: Arc<dyn Device>,
    pub offset: u64,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Every byte is on each leg at `offset + pos`.
    Mirror {
        /// Legs that may serve reads, in role order (in sync, not
        /// recovering).
        read: Vec<Leg>,
        /// Legs every write goes to (all present active members).
        write: Vec<Leg>,
    },
    /// (start in the array, length, leg), contiguous from 0, in role order.
    Concat(Vec<(u64, u64, Leg)>),
}

/// An md array opened in userspace.
#[derive(Debug, Clone)]
pub struct MdDevice {
    name: String,
    len: u64,
    layout: Layout,
    writable: bool,
}

impl MdDevice {
    /// RAID1 over `read` (non-empty) and `write` legs; every leg is checked
    /// to hold `len` bytes from its offset.
    pub(crate) fn mirror(
        name: String,
        len: u64,
        read: Vec<Leg>,
        write: Vec<Leg>,
        writable: bool,
    ) -> Result<Self, String> {
        if read.is_empty() {
            return Err("no member can serve reads".into());
        }
        for l in read.iter().chain(&write) {
            check_leg(l, len)?;
        }
        Ok(Self {
            name,
            len,
            layout: Layout::Mirror { read, write },
            writable,
        })
    }

    /// Linear over `(leg, bytes)` in role order.
    pub(crate) fn concat(name: String, parts: Vec<(Leg, u64)>) -> Result<Self, String> {
        let mut segs = Vec::with_capacity(parts.len());
        let mut len = 0u64;
        for (leg, n) in parts {
            check_leg(&leg, n)?;
            if n > 0 {
                segs.push((len, n, leg));
            }
            len = len.checked_add(n).ok_or("array size overflows")?;
        }
        Ok(Self {
            name,
            len,
            layout: Layout::Concat(segs),
            writable: true,
        })
    }

    /// Whether writes are accepted (see [`crate::Array::writable`]).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The member devices and offsets `len` bytes at array `offset` map
    /// to: for RAID1 every written member, for linear the pieces in order
    /// (`(member description, member offset, length)`). For tests and
    /// reports.
    pub fn map(&self, offset: u64, len: u64) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        match &self.layout {
            Layout::Mirror { write, read } => {
                let legs = if write.is_empty() { read } else { write };
                for l in legs {
                    out.push((l.dev.describe(), l.offset.saturating_add(offset), len));
                }
            }
            Layout::Concat(segs) => {
                let end = offset.saturating_add(len);
                for (start, n, leg) in segs {
                    let s = offset.max(*start);
                    let e = end.min(start + n);
                    if s < e {
                        out.push((leg.dev.describe(), leg.offset + (s - start), e - s));
                    }
                }
            }
        }
        out
    }

    fn oob(&self, offset: u64, len: usize) -> DiskError {
        DiskError::OutOfBounds {
            device: self.describe(),
            offset,
            len: len as u64,
            size: self.len,
        }
    }

    /// Split an access into runs on one leg each: `f(leg, leg offset,
    /// buffer range)`.
    fn pieces(
        &self,
        segs: &[(u64, u64, Leg)],
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Leg, u64, std::ops::Range<usize>) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let i = segs.partition_point(|(s, _, _)| *s <= pos);
            let (start, n, leg) = i
                .checked_sub(1)
                .and_then(|i| segs.get(i))
                .ok_or_else(|| self.oob(offset, len))?;
            let rel = pos - start;
            if rel >= *n {
                return Err(self.oob(offset, len));
            }
            let run = usize::try_from(n - rel)
                .unwrap_or(usize::MAX)
                .min(len - done);
            let at = leg
                .offset
                .checked_add(rel)
                .ok_or_else(|| self.oob(offset, len))?;
            f(leg, at, done..done + run)?;
            done += run;
        }
        Ok(())
    }
}

fn check_leg(l: &Leg, len: u64) -> Result<(), String> {
    match l.offset.checked_add(len) {
        Some(e) if e <= l.dev.len() => Ok(()),
        _ => Err(format!(
            "{}: {len} bytes at offset {} do not fit in its {} bytes",
            l.dev.describe(),
            l.offset,
            l.dev.len()
        )),
    }
}

impl Device for MdDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        match &self.layout {
            Layout::Mirror { read, .. } => {
                // The first member that can serve the read; an I/O error
                // tries the next (as md's read_balance retries), any other
                // error is returned.
                let mut last = None;
                for l in read {
                    match l.dev.read_at(l.offset + offset, buf) {
                        Ok(()) => return Ok(()),
                        Err(e @ DiskError::Io { .. }) => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or_else(|| self.oob(offset, buf.len())))
            }
            Layout::Concat(segs) => self.pieces(segs, offset, buf.len(), |l, at, r| {
                l.dev.read_at(at, &mut buf[r])
            }),
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        if !self.writable {
            return Err(DiskError::ReadOnly {
                device: self.describe(),
            });
        }
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        match &self.layout {
            Layout::Mirror { write, .. } => {
                for l in write {
                    l.dev.write_at(l.offset + offset, buf)?;
                }
                Ok(())
            }
            Layout::Concat(segs) => self.pieces(segs, offset, buf.len(), |l, at, r| {
                l.dev.write_at(at, &buf[r])
            }),
        }
    }

    fn sync(&self) -> Result<(), DiskError> {
        match &self.layout {
            Layout::Mirror { read, write } => {
                for l in write.iter().chain(read) {
                    l.dev.sync()?;
                }
            }
            Layout::Concat(segs) => {
                for (_, _, l) in segs {
                    l.dev.sync()?;
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("md array {}", self.name)
    }
}
