//! A logical volume as a [`Device`]: LV offsets mapped onto PV offsets,
//! segment by segment, stripe by stripe, every access bounds-checked.

use std::sync::Arc;

use vmie_disk::{check_range, Device, DiskError};

/// One segment, in bytes.
#[derive(Debug, Clone)]
pub(crate) struct Mapped {
    /// Start in the LV.
    pub start: u64,
    /// Length.
    pub len: u64,
    /// Bytes per stripe chunk (the whole segment for one stripe).
    pub stripe_size: u64,
    /// (PV device, byte offset of this stripe's first extent on it).
    pub stripes: Vec<(Arc<dyn Device>, u64)>,
}

/// Where one segment of an LV lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMap {
    /// Byte offset in the LV.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Bytes per stripe chunk (the whole segment when it has one stripe).
    pub stripe_size: u64,
    /// (PV device name, byte offset on it) per stripe.
    pub stripes: Vec<(String, u64)>,
}

/// A linear or striped logical volume over its PVs' devices (partitions or
/// disks, each through the overlay).
#[derive(Debug, Clone)]
pub struct LvDevice {
    name: String,
    len: u64,
    segs: Vec<Mapped>,
}

impl LvDevice {
    pub(crate) fn new(name: String, segs: Vec<Mapped>) -> Result<Self, String> {
        let mut len = 0u64;
        for s in &segs {
            if s.start != len || s.stripes.is_empty() || s.stripe_size == 0 {
                return Err("segments are not contiguous".into());
            }
            len = len.checked_add(s.len).ok_or("LV size overflows")?;
        }
        Ok(Self { name, len, segs })
    }

    /// The LV's segments, for reports and tests.
    pub fn segments(&self) -> Vec<SegmentMap> {
        self.segs
            .iter()
            .map(|s| SegmentMap {
                start: s.start,
                len: s.len,
                stripe_size: s.stripe_size,
                stripes: s.stripes.iter().map(|(d, o)| (d.describe(), *o)).collect(),
            })
            .collect()
    }

    /// The PV device and offset holding LV byte `off`, and how many bytes
    /// from there stay on that device contiguously.
    fn locate(&self, off: u64) -> Result<(&Arc<dyn Device>, u64, u64), DiskError> {
        let oob = || DiskError::OutOfBounds {
            device: self.name.clone(),
            offset: off,
            len: 1,
            size: self.len,
        };
        let i = self.segs.partition_point(|s| s.start <= off);
        let seg = i
            .checked_sub(1)
            .and_then(|i| self.segs.get(i))
            .ok_or_else(oob)?;
        let rel = off - seg.start;
        if rel >= seg.len {
            return Err(oob());
        }
        let n = seg.stripes.len() as u64;
        let chunk = rel / seg.stripe_size;
        let within = rel % seg.stripe_size;
        let (dev, base) = seg.stripes.get((chunk % n) as usize).ok_or_else(oob)?;
        let row = chunk / n;
        let at = row
            .checked_mul(seg.stripe_size)
            .and_then(|x| x.checked_add(*base))
            .and_then(|x| x.checked_add(within))
            .ok_or_else(oob)?;
        let run = (seg.stripe_size - within).min(seg.len - rel);
        Ok((dev, at, run))
    }

    /// Split `len` bytes at LV `offset` into runs that each stay on one PV
    /// device, and call `f(device, device offset, buffer range)` for each.
    fn pieces(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Arc<dyn Device>, u64, std::ops::Range<usize>) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, len)?;
        let mut done = 0usize;
        while done < len {
            let (dev, at, run) = self.locate(offset + done as u64)?;
            let n = usize::try_from(run).unwrap_or(usize::MAX).min(len - done);
            f(dev, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

impl Device for LvDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.pieces(offset, buf.len(), |dev, at, r| dev.read_at(at, &mut buf[r]))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.pieces(offset, buf.len(), |dev, at, r| dev.write_at(at, &buf[r]))
    }

    fn sync(&self) -> Result<(), DiskError> {
        for s in &self.segs {
            for (d, _) in &s.stripes {
                d.sync()?;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("logical volume {}", self.name)
    }
}
