//! Sector ciphers of dm-crypt that LUKS volumes use: AES in XTS mode with
//! the `plain64` IV, and AES in CBC mode with the `essiv:sha256` IV.
//!
//! A sector is encrypted on its own with an IV made from its number:
//! `plain64` is the 64-bit little-endian sector number padded with zeros to
//! 16 bytes (the XTS tweak, encrypted by the second half of the key);
//! `essiv:sha256` is that same block encrypted with AES-256 under
//! SHA-256(key) (the CBC IV). XTS sectors are multiples of 16 bytes, so no
//! ciphertext stealing is ever needed.

use std::fmt;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};
use sha2::{Digest, Sha256};

/// The cipher modes we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `aes-xts-plain64` (keys of 32, 48 or 64 bytes: two AES keys).
    XtsPlain64,
    /// `aes-cbc-essiv:sha256` (keys of 16, 24 or 32 bytes).
    CbcEssivSha256,
}

impl Mode {
    /// The dm-crypt name of the mode with its cipher.
    pub(crate) fn spec(self) -> &'static str {
        match self {
            Mode::XtsPlain64 => "aes-xts-plain64",
            Mode::CbcEssivSha256 => "aes-cbc-essiv:sha256",
        }
    }

    /// Whether `len` bytes are a valid key for this mode.
    pub(crate) fn key_len_ok(self, len: usize) -> bool {
        match self {
            Mode::XtsPlain64 => matches!(len, 32 | 48 | 64),
            Mode::CbcEssivSha256 => matches!(len, 16 | 24 | 32),
        }
    }
}

/// Parse a cipher name and mode (LUKS1 keeps them apart, LUKS2 joins them
/// with a dash). Anything but AES in the two modes above is refused with a
/// sentence naming it.
pub(crate) fn parse(cipher: &str, mode: &str) -> Result<Mode, String> {
    let full = if mode.is_empty() {
        cipher.to_string()
    } else {
        format!("{cipher}-{mode}")
    };
    if cipher != "aes" {
        return Err(format!(
            "cipher {full:?} is not supported (only aes-xts-plain64 and aes-cbc-essiv:sha256)"
        ));
    }
    match mode {
        "xts-plain64" => Ok(Mode::XtsPlain64),
        "cbc-essiv:sha256" => Ok(Mode::CbcEssivSha256),
        _ => Err(format!(
            "cipher mode {full:?} is not supported (only aes-xts-plain64 and aes-cbc-essiv:sha256)"
        )),
    }
}

/// Parse a LUKS2 `encryption` string such as `aes-xts-plain64`.
pub(crate) fn parse_joined(spec: &str) -> Result<Mode, String> {
    match spec.split_once('-') {
        Some((c, m)) => parse(c, m),
        None => parse(spec, ""),
    }
}

enum AnyAes {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl AnyAes {
    fn new(key: &[u8]) -> Option<Self> {
        match key.len() {
            16 => Aes128::new_from_slice(key).ok().map(Self::A128),
            24 => Aes192::new_from_slice(key).ok().map(Self::A192),
            32 => Aes256::new_from_slice(key).ok().map(Self::A256),
            _ => None,
        }
    }

    fn encrypt(&self, blocks: &mut [Block]) {
        match self {
            Self::A128(c) => c.encrypt_blocks(blocks),
            Self::A192(c) => c.encrypt_blocks(blocks),
            Self::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    fn decrypt(&self, blocks: &mut [Block]) {
        match self {
            Self::A128(c) => c.decrypt_blocks(blocks),
            Self::A192(c) => c.decrypt_blocks(blocks),
            Self::A256(c) => c.decrypt_blocks(blocks),
        }
    }
}

enum Kind {
    Xts { data: AnyAes, tweak: AnyAes },
    CbcEssiv { data: AnyAes, essiv: Aes256 },
}

/// A keyed sector cipher.
pub(crate) struct SectorCipher {
    mode: Mode,
    kind: Kind,
}

impl fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SectorCipher({})", self.mode.spec())
    }
}

/// Scratch space for one sector, reused across sectors of one call.
#[derive(Default)]
pub(crate) struct Scratch {
    blocks: Vec<Block>,
    tweaks: Vec<u128>,
}

fn block_of(bytes: &[u8]) -> Block {
    let mut b = Block::default();
    b.copy_from_slice(bytes);
    b
}

fn xor_into(dst: &mut [u8], a: &[u8], b: &[u8]) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x ^ y;
    }
}

/// Multiply an XTS tweak by the primitive element α of GF(2^128) (the
/// tweak's bytes read as a little-endian number, as IEEE 1619 does).
fn mul_alpha(t: u128) -> u128 {
    let carry = t >> 127;
    (t << 1) ^ (carry * 0x87)
}

impl SectorCipher {
    /// Key `mode` with `key`; `None` when the key length does not fit.
    pub(crate) fn new(mode: Mode, key: &[u8]) -> Option<Self> {
        if !mode.key_len_ok(key.len()) {
            return None;
        }
        let kind = match mode {
            Mode::XtsPlain64 => {
                let (a, b) = key.split_at(key.len() / 2);
                Kind::Xts {
                    data: AnyAes::new(a)?,
                    tweak: AnyAes::new(b)?,
                }
            }
            Mode::CbcEssivSha256 => {
                let salt = Sha256::digest(key);
                Kind::CbcEssiv {
                    data: AnyAes::new(key)?,
                    essiv: Aes256::new_from_slice(&salt).ok()?,
                }
            }
        };
        Some(Self { mode, kind })
    }

    fn iv_block(iv: u64) -> Block {
        let mut b = Block::default();
        b[..8].copy_from_slice(&iv.to_le_bytes());
        b
    }

    /// Encrypt (`enc`) or decrypt one sector in place. `sector.len()` must
    /// be a non-zero multiple of 16 (callers pass 512..=4096).
    pub(crate) fn sector(&self, iv: u64, sector: &mut [u8], enc: bool, s: &mut Scratch) {
        match &self.kind {
            Kind::Xts { data, tweak } => {
                let mut t = Self::iv_block(iv);
                tweak.encrypt(std::slice::from_mut(&mut t));
                let mut tw = u128::from_le_bytes(t.into());
                s.blocks.clear();
                s.tweaks.clear();
                for chunk in sector.chunks_exact(16) {
                    let mut b = block_of(chunk);
                    xor_into(&mut b, chunk, &tw.to_le_bytes());
                    s.blocks.push(b);
                    s.tweaks.push(tw);
                    tw = mul_alpha(tw);
                }
                if enc {
                    data.encrypt(&mut s.blocks);
                } else {
                    data.decrypt(&mut s.blocks);
                }
                for ((chunk, b), t) in sector.chunks_exact_mut(16).zip(&s.blocks).zip(&s.tweaks) {
                    xor_into(chunk, b, &t.to_le_bytes());
                }
            }
            Kind::CbcEssiv { data, essiv } => {
                let mut ivb = Self::iv_block(iv);
                essiv.encrypt_block(&mut ivb);
                if enc {
                    let mut prev = ivb;
                    for chunk in sector.chunks_exact_mut(16) {
                        let mut b = block_of(chunk);
                        xor_into(&mut b, chunk, &prev);
                        data.encrypt(std::slice::from_mut(&mut b));
                        chunk.copy_from_slice(&b);
                        prev = b;
                    }
                } else {
                    s.blocks.clear();
                    s.blocks.extend(sector.chunks_exact(16).map(block_of));
                    data.decrypt(&mut s.blocks);
                    // Backwards, so the previous ciphertext block is still in place.
                    let n = s.blocks.len();
                    for i in (0..n).rev() {
                        let start = i * 16;
                        let prev = if i == 0 {
                            ivb
                        } else {
                            block_of(&sector[start - 16..start])
                        };
                        xor_into(&mut sector[start..start + 16], &s.blocks[i], &prev);
                    }
                }
            }
        }
    }

    /// Decrypt or encrypt `data` (a multiple of `sector_size` bytes) whose
    /// first sector has IV `iv`, the IV growing by `iv_step` per sector.
    pub(crate) fn run(
        &self,
        iv: u64,
        iv_step: u64,
        sector_size: usize,
        data: &mut [u8],
        enc: bool,
    ) {
        let mut s = Scratch::default();
        let mut iv = iv;
        for sector in data.chunks_exact_mut(sector_size) {
            self.sector(iv, sector, enc, &mut s);
            iv = iv.wrapping_add(iv_step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IEEE 1619-2007 XTS-AES-128 vector 4 (first 32 bytes of the
    /// 512-byte data unit 0 whose plaintext is bytes 0..=255 twice).
    #[test]
    fn xts_ieee1619_vector4() {
        let mut key = Vec::new();
        key.extend_from_slice(&[
            0x27, 0x18, 0x28, 0x18, 0x28, 0x45, 0x90, 0x45, 0x23, 0x53, 0x60, 0x28, 0x74, 0x71,
            0x35, 0x26,
        ]);
        key.extend_from_slice(&[
            0x31, 0x41, 0x59, 0x26, 0x53, 0x58, 0x97, 0x93, 0x23, 0x84, 0x62, 0x64, 0x33, 0x83,
            0x27, 0x95,
        ]);
        let c = SectorCipher::new(Mode::XtsPlain64, &key).unwrap();
        let mut data: Vec<u8> = (0..512).map(|i| (i % 256) as u8).collect();
        let plain = data.clone();
        c.run(0, 1, 512, &mut data, true);
        assert_eq!(
            &data[..16],
            &[
                0x27, 0xa7, 0x47, 0x9b, 0xef, 0xa1, 0xd4, 0x76, 0x48, 0x9f, 0x30, 0x8c, 0xd4, 0xcf,
                0xa6, 0xe2
            ]
        );
        c.run(0, 1, 512, &mut data, false);
        assert_eq!(data, plain);
    }

    #[test]
    fn cbc_essiv_round_trip() {
        let c = SectorCipher::new(Mode::CbcEssivSha256, &[7u8; 32]).unwrap();
        let plain: Vec<u8> = (0..1024).map(|i| (i * 7 % 251) as u8).collect();
        let mut data = plain.clone();
        c.run(5, 1, 512, &mut data, true);
        assert_ne!(data, plain);
        c.run(5, 1, 512, &mut data, false);
        assert_eq!(data, plain);
    }

    #[test]
    fn refusals_name_the_cipher() {
        assert!(parse("twofish", "xts-plain64")
            .unwrap_err()
            .contains("twofish-xts-plain64"));
        assert!(parse_joined("aes-xts-essiv:sha256")
            .unwrap_err()
            .contains("aes-xts-essiv"));
        assert_eq!(parse_joined("aes-xts-plain64"), Ok(Mode::XtsPlain64));
        assert!(SectorCipher::new(Mode::XtsPlain64, &[0; 16]).is_none());
    }
}
