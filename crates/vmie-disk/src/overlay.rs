//! The copy-on-write overlay: every write of a run lands here, in memory, and
//! reaches the image only through [`crate::journal::commit`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{check_range, Device, DiskError};

/// A copy-on-write layer in front of a device. Writes are kept in memory as
/// non-overlapping, non-adjacent extents; reads see the base device with the
/// pending writes laid over it. The base is never written by the overlay.
#[derive(Debug)]
pub struct Overlay {
    base: Arc<dyn Device>,
    /// offset -> bytes; extents never overlap nor touch.
    pending: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl Overlay {
    /// An empty overlay over `base`.
    pub fn new(base: Arc<dyn Device>) -> Self {
        Self {
            base,
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// The device underneath.
    pub fn base(&self) -> &Arc<dyn Device> {
        &self.base
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<u64, Vec<u8>>>, DiskError> {
        self.pending.lock().map_err(|_| DiskError::Poisoned {
            device: self.base.describe(),
        })
    }

    /// Whether any write is pending.
    pub fn is_dirty(&self) -> bool {
        self.lock().map(|p| !p.is_empty()).unwrap_or(true)
    }

    /// The pending extents, in offset order, each with its new bytes. Extents
    /// whose bytes equal the base are dropped, so a write that changes nothing
    /// commits nothing.
    pub fn changes(&self) -> Result<Vec<(u64, Vec<u8>)>, DiskError> {
        let pending = self.lock()?;
        let mut out = Vec::with_capacity(pending.len());
        for (&off, data) in pending.iter() {
            let mut base = vec![0u8; data.len()];
            self.base.read_at(off, &mut base)?;
            if &base != data {
                out.push((off, data.clone()));
            }
        }
        Ok(out)
    }

    /// Total bytes pending.
    pub fn pending_bytes(&self) -> u64 {
        self.lock()
            .map(|p| p.values().map(|v| v.len() as u64).sum())
            .unwrap_or(0)
    }

    /// Forget every pending write.
    pub fn discard(&self) -> Result<(), DiskError> {
        self.lock()?.clear();
        Ok(())
    }
}

impl Device for Overlay {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len(), offset, buf.len())?;
        self.base.read_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        let pending = self.lock()?;
        // The extent starting at or before `offset` may reach into the range;
        // every extent starting inside the range does.
        let first = pending
            .range(..=offset)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(offset);
        for (&ext_off, data) in pending.range(first..end) {
            let ext_end = ext_off + data.len() as u64;
            let lo = ext_off.max(offset);
            let hi = ext_end.min(end);
            if lo >= hi {
                continue;
            }
            let dst = (lo - offset) as usize..(hi - offset) as usize;
            let src = (lo - ext_off) as usize..(hi - ext_off) as usize;
            buf[dst].copy_from_slice(&data[src]);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len(), offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let mut pending = self.lock()?;
        // Gather every extent that overlaps or touches [offset, end).
        let mut new_start = offset;
        let mut new_end = end;
        let mut absorbed = Vec::new();
        if let Some((&k, v)) = pending.range(..offset).next_back() {
            if k + v.len() as u64 >= offset {
                absorbed.push(k);
                new_start = k;
                new_end = new_end.max(k + v.len() as u64);
            }
        }
        for (&k, v) in pending.range(offset..=end) {
            absorbed.push(k);
            new_end = new_end.max(k + v.len() as u64);
        }
        let mut merged = vec![0u8; (new_end - new_start) as usize];
        for k in &absorbed {
            if let Some(v) = pending.remove(k) {
                let at = (k - new_start) as usize;
                merged[at..at + v.len()].copy_from_slice(&v);
            }
        }
        let at = (offset - new_start) as usize;
        merged[at..at + buf.len()].copy_from_slice(buf);
        pending.insert(new_start, merged);
        Ok(())
    }

    fn describe(&self) -> String {
        self.base.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemDevice;
    use proptest::prelude::*;

    proptest! {
        /// The overlay reads exactly like a plain in-memory device given the
        /// same writes, and the base is never touched.
        #[test]
        fn overlay_matches_model(writes in proptest::collection::vec((0u64..4000, proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
                                 reads in proptest::collection::vec((0u64..4096, 0usize..400), 0..20)) {
            let base_bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
            let base = Arc::new(MemDevice::new("base", base_bytes.clone()));
            let ov = Overlay::new(base.clone());
            let model = MemDevice::new("model", base_bytes.clone());
            for (off, data) in &writes {
                let a = ov.write_at(*off, data);
                let b = model.write_at(*off, data);
                prop_assert_eq!(a.is_ok(), b.is_ok());
            }
            for (off, len) in reads {
                let mut x = vec![0; len];
                let mut y = vec![0; len];
                let a = ov.read_at(off, &mut x);
                let b = model.read_at(off, &mut y);
                prop_assert_eq!(a.is_ok(), b.is_ok());
                prop_assert_eq!(x, y);
            }
            prop_assert_eq!(base.contents(), base_bytes);
            // Pending extents never overlap nor touch.
            let p = ov.pending.lock().unwrap();
            let mut prev_end = None;
            for (k, v) in p.iter() {
                if let Some(e) = prev_end { prop_assert!(*k > e); }
                prev_end = Some(k + v.len() as u64);
            }
        }
    }
}
