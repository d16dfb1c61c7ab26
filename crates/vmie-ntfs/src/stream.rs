//! The stream the `ntfs` crate reads through: a [`DeviceCursor`] that lets a
//! file record run on across the end of an MFT extent.
//!
//! The crate finds MFT record `n` at the byte where its first byte lies and
//! reads the whole record from there in one piece. When the MFT is
//! fragmented and clusters are smaller than records (512-byte clusters,
//! 1 KiB records, as mkntfs makes on small volumes), a record can start in
//! one extent of the MFT and end in the next, and the crate would read the
//! second half from whatever follows the first extent on disk. So a read that
//! starts inside an MFT extent and runs past its end continues at the start
//! of the next extent (in VCN order). No other read of a consistent volume
//! starts inside the MFT and crosses an extent end: the crate reads data runs
//! one run at a time.

use std::io::{self, Read, Seek, SeekFrom};

use vmie_disk::{DeviceCursor, DiskError};

use crate::boot::Geometry;
use crate::record::{Body, RawRecord, AT_DATA};

/// Byte ranges of the MFT on the volume, in VCN order, from its validated
/// record 0 (the first extent of its unnamed `$DATA`).
pub(crate) fn mft_extents(geo: &Geometry, mft: &RawRecord) -> Result<Vec<(u64, u64)>, String> {
    let runs = mft
        .attrs
        .iter()
        .find_map(|a| match &a.body {
            Body::NonResident {
                lowest_vcn: 0,
                runs,
                ..
            } if a.ty == AT_DATA && a.name.is_empty() => Some(runs),
            _ => None,
        })
        .ok_or("no non-resident unnamed $DATA attribute")?;
    let cs = u64::from(geo.cluster_size);
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        // Runs were checked to lie inside the volume, so this cannot overflow.
        let lcn = r.lcn.ok_or("the MFT has a sparse run")?;
        out.push((lcn * cs, (lcn + r.clusters) * cs));
    }
    match out.first() {
        Some(&(start, _)) if start != geo.mft_offset => {
            return Err("the MFT's data does not start where the boot sector says".into())
        }
        // Record 0 was read (and checked) in one piece before the extents
        // were known, so it must lie in the first one.
        Some(&(start, end)) if end - start >= u64::from(geo.file_record_size) => {}
        _ => return Err("the MFT's first extent is shorter than a file record".into()),
    }
    Ok(out)
}

/// [`DeviceCursor`] plus the MFT's extents.
#[derive(Debug)]
pub(crate) struct Stream {
    cur: DeviceCursor,
    pos: u64,
    mft: Vec<(u64, u64)>,
}

impl Stream {
    pub(crate) fn new(cur: DeviceCursor, mft: Vec<(u64, u64)>) -> Self {
        Self { cur, pos: 0, mft }
    }

    /// Fill `buf` from byte `pos` exactly as the crate reads a record there.
    /// The error is the device's, or (inner `Err`) a short read.
    pub(crate) fn read_record(
        &mut self,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<(), Result<DiskError, String>> {
        let io_err = |e: io::Error| match e.into_inner().map(|i| i.downcast::<DiskError>()) {
            Some(Ok(d)) => Ok(*d),
            Some(Err(other)) => Err(other.to_string()),
            None => Err("read failed".to_string()),
        };
        self.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        let n = self.read(buf).map_err(io_err)?;
        if n < buf.len() {
            return Err(Err(format!(
                "the record at byte {pos} is cut off by the end of the device"
            )));
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let mut want = buf.len() - done;
            let pos = self.pos;
            if let Some(&(_, end)) = self.mft.iter().find(|(s, e)| (*s..*e).contains(&pos)) {
                want = want.min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            }
            self.cur.seek(SeekFrom::Start(pos))?;
            let n = self.cur.read(&mut buf[done..done + want])?;
            if n == 0 {
                break;
            }
            done += n;
            self.pos += n as u64;
            if done < buf.len() {
                // Reached the end of an MFT extent with more to read: go on
                // in the next extent.
                let here = self.pos;
                if let Some(i) = self.mft.iter().position(|&(_, e)| e == here) {
                    if let Some(&(next, _)) = self.mft.get(i + 1) {
                        self.pos = next;
                    }
                }
            }
        }
        Ok(done)
    }
}

impl Seek for Stream {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let p = self.cur.seek(pos)?;
        self.pos = p;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmie_disk::{Device, MemDevice};

    use super::*;

    #[test]
    fn records_continue_in_the_next_extent() {
        let data: Vec<u8> = (0..64u8).collect();
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new("m", data));
        // MFT extents: bytes 8..16, then 40..48.
        let mut s = Stream::new(DeviceCursor::new(dev), vec![(8, 16), (40, 48)]);
        let mut buf = [0u8; 12];
        s.read_record(12, &mut buf).unwrap();
        assert_eq!(buf, [12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47]);
        // Outside the MFT nothing is remapped.
        s.seek(SeekFrom::Start(14)).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [14, 15]);
        s.seek(SeekFrom::Start(2)).unwrap();
        let mut buf = [0u8; 20];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf[19], 21);
        // The end of the device is a short read, not a panic.
        let mut buf = [0u8; 8];
        assert!(matches!(s.read_record(60, &mut buf), Err(Err(_))));
    }
}
