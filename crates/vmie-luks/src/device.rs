//! The decrypted payload of an opened LUKS volume as a [`Device`].

use std::fmt;
use std::sync::Arc;

use vmie_disk::{check_range, Device, DiskError};

use crate::cipher::SectorCipher;
use crate::{LuksError, LuksInfo};

/// Ciphertext handled per step of a long read (bounds the scratch buffer).
const CHUNK: usize = 1 << 20;

/// An opened LUKS volume: reads decrypt whole sectors of the underlying
/// device, writes encrypt them back (partial sectors by
/// read-modify-write, in one `write_at` on the underlying device).
pub struct LuksDevice {
    inner: Arc<dyn Device>,
    name: String,
    /// Payload start on `inner`.
    offset: u64,
    len: u64,
    sector: usize,
    /// IV of payload sector 0 (512-byte units, iv_tweak).
    iv_base: u64,
    cipher: SectorCipher,
    info: LuksInfo,
    slot: u32,
    volume_key: Vec<u8>,
}

impl fmt::Debug for LuksDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuksDevice")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("sector", &self.sector)
            .field("cipher", &self.cipher)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl LuksDevice {
    pub(crate) fn new(
        inner: Arc<dyn Device>,
        info: LuksInfo,
        slot: u32,
        volume_key: Vec<u8>,
        cipher: SectorCipher,
        iv_base: u64,
    ) -> Result<Self, LuksError> {
        let name = format!("{} (LUKS{} {})", inner.describe(), info.version, info.uuid);
        let sector = info.sector_size as usize;
        let end = info.payload_offset.checked_add(info.payload_len);
        if sector == 0
            || info.payload_len % sector as u64 != 0
            || end.is_none_or(|e| e > inner.len())
        {
            return Err(LuksError::Corrupt {
                device: inner.describe(),
                offset: info.payload_offset,
                why: format!(
                    "payload of {} bytes at {} in {}-byte sectors does not fit the device ({} bytes)",
                    info.payload_len,
                    info.payload_offset,
                    info.sector_size,
                    inner.len()
                ),
            });
        }
        Ok(Self {
            offset: info.payload_offset,
            len: info.payload_len,
            inner,
            name,
            sector,
            iv_base,
            cipher,
            info,
            slot,
            volume_key,
        })
    }

    /// The volume as [`crate::inspect`] describes it.
    pub fn info(&self) -> &LuksInfo {
        &self.info
    }

    /// The key slot that opened it.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The volume (master) key: for checks against
    /// `cryptsetup luksDump --dump-volume-key`. Handle with care.
    pub fn volume_key(&self) -> &[u8] {
        &self.volume_key
    }

    /// The underlying device (ciphertext).
    pub fn inner(&self) -> &Arc<dyn Device> {
        &self.inner
    }

    /// IV of the sector at payload byte `at` (a multiple of the sector
    /// size): 512-byte units plus iv_tweak, as dm-crypt without
    /// `iv_large_sectors` (see the crate docs).
    fn iv(&self, at: u64) -> u64 {
        self.iv_base.wrapping_add(at / 512)
    }

    fn step(&self) -> u64 {
        self.sector as u64 / 512
    }

    /// Read and decrypt `buf.len()` bytes (whole sectors) at sector-aligned
    /// payload offset `at`.
    fn read_sectors(&self, at: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.inner.read_at(self.offset + at, buf)?;
        self.cipher
            .run(self.iv(at), self.step(), self.sector, buf, false);
        Ok(())
    }
}

impl Device for LuksDevice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        let ss = self.sector as u64;
        let end = offset + buf.len() as u64;
        let mut tmp = Vec::new();
        let mut pos = offset;
        while pos < end {
            let first = pos / ss * ss;
            let in_sector = (pos - first) as usize;
            let done = (pos - offset) as usize;
            let left = (end - pos) as usize;
            if in_sector == 0 && left >= self.sector {
                // Whole sectors: decrypt straight into the caller's buffer.
                let n = (left / self.sector * self.sector).min(CHUNK);
                self.read_sectors(first, &mut buf[done..done + n])?;
                pos += n as u64;
            } else {
                // A partial sector at either end.
                tmp.resize(self.sector, 0);
                self.read_sectors(first, &mut tmp)?;
                let n = (self.sector - in_sector).min(left);
                buf[done..done + n].copy_from_slice(&tmp[in_sector..in_sector + n]);
                pos += n as u64;
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(&|| self.describe(), self.len, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let ss = self.sector as u64;
        let first = offset / ss * ss;
        let end = offset + buf.len() as u64;
        // `len` is a multiple of the sector size, so this stays inside.
        let last = end.div_ceil(ss) * ss;
        let total = usize::try_from(last - first).map_err(|_| DiskError::OutOfBounds {
            device: self.describe(),
            offset,
            len: buf.len() as u64,
            size: self.len,
        })?;
        let mut data = vec![0u8; total];
        let head = (offset - first) as usize;
        if head != 0 {
            self.read_sectors(first, &mut data[..self.sector])?;
        }
        let tail = (last - end) as usize;
        if tail != 0 && (total > self.sector || head == 0) {
            let at = total - self.sector;
            self.read_sectors(last - ss, &mut data[at..])?;
        }
        data[head..head + buf.len()].copy_from_slice(buf);
        self.cipher
            .run(self.iv(first), self.step(), self.sector, &mut data, true);
        self.inner.write_at(self.offset + first, &data)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.inner.sync()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
