//! LUKS1 and LUKS2 volumes in pure Rust: read the header (hostile input:
//! every offset, size and cost checked before use), unlock a key slot with
//! a passphrase or key file, and expose the decrypted payload as a
//! [`Device`] whose reads decrypt and whose writes encrypt back to the
//! underlying device (in vmie-fixup, the copy-on-write overlay, so every
//! write stays undoable).
//!
//! - [`inspect`]: what a volume is without a key (version, UUID, cipher,
//!   active slots and their KDFs).
//! - [`open`]: try every usable slot with a [`Key`]; a [`LuksDevice`] on
//!   success.
//!
//! Supported: AES in `xts-plain64` (LUKS1 and LUKS2) and
//! `cbc-essiv:sha256` (LUKS1, and LUKS2 volumes converted from it); hashes
//! sha1, sha256, sha512; PBKDF2 and (LUKS2) Argon2i/Argon2id key slots;
//! LUKS2 sectors of 512 to 4096 bytes. Refused by name: other ciphers,
//! authenticated encryption (dm-integrity), volumes in reencryption,
//! detached headers, KDF costs above [`Options`].
//!
//! IVs: dm-crypt's plain64/essiv IV of a payload sector is its offset in
//! 512-byte units plus the segment's `iv_tweak`, whatever the sector size:
//! cryptsetup never sets `iv_large_sectors` for LUKS2 (only for BitLocker
//! and plain mode on request), and its userspace storage wrapper for LUKS2
//! is built without `CSW_LARGE_IV` (lib/luks2/luks2_reencrypt.c,
//! lib/crypto_backend/crypto_storage.c `iv_shift`). So a 4096-byte sector
//! n of a LUKS2 payload has IV `8 n + iv_tweak`; checked against a volume
//! `cryptsetup reencrypt --encrypt --sector-size 4096` wrote
//! (tests/luks.rs).
#![forbid(unsafe_code)]

mod cipher;
mod device;
mod kdf;
mod luks1;
mod luks2;

use std::fmt;
use std::sync::Arc;

use vmie_disk::{Device, DiskError};

pub use device::LuksDevice;

use cipher::{Mode, SectorCipher};
use kdf::Hash;

/// Caps on what a header may ask for (the header is hostile input: its KDF
/// costs could exhaust memory or time).
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest PBKDF2 iteration count run (key slots and digests).
    pub max_pbkdf2_iterations: u32,
    /// Largest Argon2 memory cost, KiB.
    pub max_argon2_memory_kib: u32,
    /// Largest Argon2 time cost (passes).
    pub max_argon2_time: u32,
    /// Largest Argon2 lane count.
    pub max_argon2_lanes: u32,
    /// Largest LUKS2 header (binary header and JSON area), bytes.
    pub max_luks2_header: u64,
    /// Largest key file taken (cryptsetup's default `--keyfile-size` limit is 8 MiB).
    pub max_key_file: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_pbkdf2_iterations: 50_000_000,
            max_argon2_memory_kib: 1024 * 1024,
            max_argon2_time: 1000,
            max_argon2_lanes: 64,
            max_luks2_header: 4 * 1024 * 1024,
            max_key_file: 8 * 1024 * 1024,
        }
    }
}

/// What unlocks a key slot.
#[derive(Clone)]
pub enum Key {
    /// A passphrase, exactly these bytes (no trailing newline is removed).
    Passphrase(Vec<u8>),
    /// A key file's whole contents, used as the passphrase as
    /// `cryptsetup --key-file FILE` does.
    File(Vec<u8>),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Passphrase(p) => write!(f, "Passphrase({} bytes)", p.len()),
            Key::File(p) => write!(f, "File({} bytes)", p.len()),
        }
    }
}

impl Key {
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Passphrase(p) | Key::File(p) => p,
        }
    }
}

/// Why a LUKS volume was refused.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    /// No LUKS header.
    #[error("{device}: not a LUKS volume (no valid LUKS1 or LUKS2 header)")]
    NotLuks {
        /// The device.
        device: String,
    },
    /// A header field is impossible.
    #[error("{device}: LUKS header at offset {offset}: {why}")]
    Corrupt {
        /// The device.
        device: String,
        /// Where the header (or the field) is.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A valid volume using something we do not implement.
    #[error("{device}: LUKS volume not supported: {what}")]
    Unsupported {
        /// The device.
        device: String,
        /// What.
        what: String,
    },
    /// A cost in the header above the caps of [`Options`].
    #[error("{device}: LUKS {what} exceeds the limit of {limit}; refused before deriving any key")]
    Limit {
        /// The device.
        device: String,
        /// The field and its value.
        what: String,
        /// The cap.
        limit: String,
    },
    /// Every usable slot was tried and none opened.
    #[error("no key slot of LUKS volume {device} opens with the given key{detail}")]
    WrongKey {
        /// The device.
        device: String,
        /// Slots that could not be tried, and why; tokens.
        detail: String,
    },
    /// Reading the device failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl LuksError {
    /// Whether the volume was refused (as opposed to an I/O failure).
    pub fn is_refusal(&self) -> bool {
        match self {
            LuksError::Disk(d) => d.is_refusal(),
            _ => true,
        }
    }
}

/// An active key slot, as [`inspect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot number.
    pub id: u32,
    /// KDF and its costs, such as `pbkdf2-sha256, 1000 iterations` or
    /// `argon2id, time 4, memory 32768 KiB, 1 lanes`.
    pub kdf: String,
    /// Why the slot cannot be used by [`open`], if it cannot.
    pub unusable: Option<String>,
}

/// A LUKS volume described without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksInfo {
    /// 1 or 2.
    pub version: u16,
    /// The volume's UUID.
    pub uuid: String,
    /// LUKS2 label, if set.
    pub label: Option<String>,
    /// Which header copy was read (`primary`, or `secondary at N`).
    pub header: String,
    /// The data cipher as the header writes it (`aes-xts-plain64`).
    pub cipher: String,
    /// Why the data cipher is not supported, if it is not.
    pub cipher_unsupported: Option<String>,
    /// Volume key size in bits.
    pub key_bits: u32,
    /// Byte offset of the encrypted payload on the device.
    pub payload_offset: u64,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Encryption sector size (512 for LUKS1).
    pub sector_size: u32,
    /// Active key slots.
    pub slots: Vec<SlotInfo>,
    /// LUKS2 token types (systemd-tpm2, clevis, …): keys we cannot use.
    pub tokens: Vec<String>,
}

/// How a slot's problem is reported when no slot could be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    Unsupported,
    Limit,
    Corrupt,
}

#[derive(Debug, Clone)]
pub(crate) struct SlotProblem {
    pub kind: Problem,
    pub what: String,
    /// For limits: the cap.
    pub limit: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Kdf {
    Pbkdf2 {
        hash: Hash,
        iterations: u32,
        salt: Vec<u8>,
    },
    Argon2 {
        variant: kdf::Argon,
        time: u32,
        memory_kib: u32,
        lanes: u32,
        salt: Vec<u8>,
    },
}

impl Kdf {
    fn derive(&self, password: &[u8], out: &mut [u8]) -> Result<(), String> {
        match self {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => {
                kdf::pbkdf2(*hash, password, salt, *iterations, out);
                Ok(())
            }
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                lanes,
                salt,
            } => kdf::argon2(*variant, password, salt, *time, *memory_kib, *lanes, out),
        }
    }
}

/// What a derived volume key is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub hash: Hash,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

/// One key slot, checked against the device and the caps.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub id: u32,
    /// Description of the KDF for reports (also when it cannot be run).
    pub kdf_text: String,
    /// Everything needed to try the slot, or why it cannot be tried.
    pub plan: Result<SlotPlan, SlotProblem>,
}

#[derive(Debug, Clone)]
pub(crate) struct SlotPlan {
    pub kdf: Kdf,
    pub area_offset: u64,
    /// Bytes of key material to read (whole 512-byte sectors).
    pub area_len: usize,
    pub area_mode: Mode,
    pub area_key_len: usize,
    pub af_hash: Hash,
    pub stripes: usize,
    pub key_len: usize,
    pub check: Check,
}

/// A parsed volume: both versions reduce to this.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    pub version: u16,
    pub uuid: String,
    pub label: Option<String>,
    pub header: String,
    pub cipher_text: String,
    pub mode: Result<Mode, String>,
    pub key_len: usize,
    pub payload_offset: u64,
    pub payload_len: u64,
    pub sector_size: u32,
    /// In 512-byte units, added to the payload sector's 512-byte number.
    pub iv_tweak: u64,
    pub slots: Vec<Slot>,
    pub tokens: Vec<String>,
}

/// The cap on a PBKDF2 iteration count, as a slot problem.
pub(crate) fn check_pbkdf2(iterations: u32, what: &str, opts: &Options) -> Result<(), SlotProblem> {
    if iterations == 0 {
        return Err(SlotProblem {
            kind: Problem::Corrupt,
            what: format!("{what}: PBKDF2 iteration count 0"),
            limit: String::new(),
        });
    }
    if iterations > opts.max_pbkdf2_iterations {
        return Err(SlotProblem {
            kind: Problem::Limit,
            what: format!("{what}: PBKDF2 iteration count {iterations}"),
            limit: format!("{} iterations", opts.max_pbkdf2_iterations),
        });
    }
    Ok(())
}

/// Read and check the header of `dev` (LUKS1 or LUKS2).
fn parse(dev: &dyn Device, opts: &Options) -> Result<Volume, LuksError> {
    let name = dev.describe();
    let mut head = [0u8; 8];
    if dev.len() < 8 {
        return Err(LuksError::NotLuks { device: name });
    }
    dev.read_at(0, &mut head)?;
    let version = u16::from_be_bytes([head[6], head[7]]);
    if &head[..6] == luks1::MAGIC && version == 1 {
        return luks1::parse(dev, opts);
    }
    // LUKS2: the primary header, or a secondary one when the primary is
    // damaged or missing.
    luks2::parse(dev, opts)
}

/// Describe the LUKS volume on `dev` without a key.
pub fn inspect(dev: &dyn Device, opts: &Options) -> Result<LuksInfo, LuksError> {
    let v = parse(dev, opts)?;
    Ok(info_of(&v))
}

fn info_of(v: &Volume) -> LuksInfo {
    LuksInfo {
        version: v.version,
        uuid: v.uuid.clone(),
        label: v.label.clone(),
        header: v.header.clone(),
        cipher: v.cipher_text.clone(),
        cipher_unsupported: v.mode.as_ref().err().cloned(),
        key_bits: u32::try_from(v.key_len * 8).unwrap_or(u32::MAX),
        payload_offset: v.payload_offset,
        payload_len: v.payload_len,
        sector_size: v.sector_size,
        slots: v
            .slots
            .iter()
            .map(|s| SlotInfo {
                id: s.id,
                kdf: s.kdf_text.clone(),
                unusable: s.plan.as_ref().err().map(|p| p.what.clone()),
            })
            .collect(),
        tokens: v.tokens.clone(),
    }
}

/// Open the LUKS volume on `dev` with `key`: every usable slot is tried in
/// order; the first whose derived volume key matches the header's digest
/// opens the payload.
pub fn open(dev: Arc<dyn Device>, key: &Key, opts: &Options) -> Result<LuksDevice, LuksError> {
    let name = dev.describe();
    if let Key::File(f) = key {
        if f.len() > opts.max_key_file {
            return Err(LuksError::Limit {
                device: name,
                what: format!("key file of {} bytes", f.len()),
                limit: format!("{} bytes", opts.max_key_file),
            });
        }
    }
    let v = parse(dev.as_ref(), opts)?;
    let mode = v.mode.clone().map_err(|what| LuksError::Unsupported {
        device: name.clone(),
        what,
    })?;
    let mut skipped: Vec<(u32, SlotProblem)> = Vec::new();
    let mut tried = 0usize;
    for slot in &v.slots {
        let plan = match &slot.plan {
            Ok(p) => p,
            Err(p) => {
                skipped.push((slot.id, p.clone()));
                continue;
            }
        };
        tried += 1;
        match try_slot(dev.as_ref(), plan, key.bytes()) {
            Ok(Some(vk)) => {
                let cipher = SectorCipher::new(mode, &vk).ok_or_else(|| LuksError::Corrupt {
                    device: name.clone(),
                    offset: 0,
                    why: format!(
                        "volume key of {} bytes does not fit {}",
                        vk.len(),
                        mode.spec()
                    ),
                })?;
                let info = info_of(&v);
                return LuksDevice::new(dev, info, slot.id, vk, cipher, v.iv_tweak);
            }
            Ok(None) => {}
            Err(SlotError::Disk(e)) => return Err(LuksError::Disk(e)),
            Err(SlotError::Kdf(why)) => skipped.push((
                slot.id,
                SlotProblem {
                    kind: Problem::Corrupt,
                    what: why,
                    limit: String::new(),
                },
            )),
        }
    }
    if tried == 0 {
        if let Some((_, p)) = skipped.first() {
            return Err(match p.kind {
                Problem::Limit => LuksError::Limit {
                    device: name,
                    what: p.what.clone(),
                    limit: p.limit.clone(),
                },
                Problem::Unsupported => LuksError::Unsupported {
                    device: name,
                    what: p.what.clone(),
                },
                Problem::Corrupt => LuksError::Corrupt {
                    device: name,
                    offset: 0,
                    why: p.what.clone(),
                },
            });
        }
    }
    let mut detail = String::new();
    if tried == 0 && skipped.is_empty() {
        detail.push_str(" (it has no active key slot)");
    }
    for (id, p) in &skipped {
        detail.push_str(&format!("; slot {id} not tried: {}", p.what));
        if !p.limit.is_empty() {
            detail.push_str(&format!(" (limit {})", p.limit));
        }
    }
    if !v.tokens.is_empty() {
        detail.push_str(&format!(
            "; the volume has tokens ({}) whose keys cannot be used here",
            v.tokens.join(", ")
        ));
    }
    Err(LuksError::WrongKey {
        device: name,
        detail,
    })
}

enum SlotError {
    Disk(DiskError),
    Kdf(String),
}

/// Derive, decrypt the key material, merge, and check: the volume key, or
/// `None` when the key does not open this slot.
fn try_slot(dev: &dyn Device, p: &SlotPlan, password: &[u8]) -> Result<Option<Vec<u8>>, SlotError> {
    let mut derived = vec![0u8; p.area_key_len];
    p.kdf
        .derive(password, &mut derived)
        .map_err(SlotError::Kdf)?;
    let mut area = vmie_disk::read_vec(dev, p.area_offset, p.area_len).map_err(SlotError::Disk)?;
    let c = SectorCipher::new(p.area_mode, &derived).ok_or_else(|| {
        SlotError::Kdf(format!(
            "key slot key of {} bytes does not fit {}",
            derived.len(),
            p.area_mode.spec()
        ))
    })?;
    c.run(0, 1, 512, &mut area, false);
    let vk = kdf::af_merge(p.af_hash, &area, p.key_len, p.stripes);
    let mut got = vec![0u8; p.check.digest.len()];
    kdf::pbkdf2(
        p.check.hash,
        &vk,
        &p.check.salt,
        p.check.iterations,
        &mut got,
    );
    if got == p.check.digest {
        Ok(Some(vk))
    } else {
        Ok(None)
    }
}

/// Bytes of key material for `key_len` × `stripes`, in whole 512-byte sectors.
pub(crate) fn af_sectors_bytes(key_len: usize, stripes: usize) -> Option<usize> {
    let n = key_len.checked_mul(stripes)?;
    n.div_ceil(512).checked_mul(512)
}

/// A NUL-terminated text field.
pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
