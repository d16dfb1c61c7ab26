//! Key derivation (PBKDF2, Argon2), the LUKS anti-forensic merge, and the
//! base64 of LUKS2's JSON.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Hash functions LUKS headers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    /// Parse a hash spec (`sha1`, `sha256`, `sha512`).
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            _ => Err(format!(
                "hash {s:?} is not supported (only sha1, sha256, sha512)"
            )),
        }
    }

    fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn go<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Self::Sha1 => go::<Sha1>(parts),
            Self::Sha256 => go::<Sha256>(parts),
            Self::Sha512 => go::<Sha512>(parts),
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// PBKDF2-HMAC with `hash` (iterations already checked against the cap).
pub(crate) fn pbkdf2(hash: Hash, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    match hash {
        Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, out),
        Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out),
        Hash::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, out),
    }
}

/// Argon2 variants LUKS2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Argon {
    I,
    Id,
}

/// Argon2 (version 0x13, as cryptsetup's) with parameters already checked
/// against the caps. The argon2 crate's own parameter errors come back as
/// text.
pub(crate) fn argon2(
    variant: Argon,
    password: &[u8],
    salt: &[u8],
    time: u32,
    memory_kib: u32,
    lanes: u32,
    out: &mut [u8],
) -> Result<(), String> {
    let params = argon2::Params::new(memory_kib, time, lanes, Some(out.len()))
        .map_err(|e| format!("argon2 parameters refused: {e}"))?;
    let alg = match variant {
        Argon::I => argon2::Algorithm::Argon2i,
        Argon::Id => argon2::Algorithm::Argon2id,
    };
    argon2::Argon2::new(alg, argon2::Version::V0x13, params)
        .hash_password_into(password, salt, out)
        .map_err(|e| format!("argon2 refused: {e}"))
}

/// The anti-forensic diffuse function: every digest-sized piece of `buf`
/// replaced by H(be32(index) ‖ piece), the last piece truncated.
fn diffuse(hash: Hash, buf: &mut [u8]) {
    let ds = hash.len();
    for (i, piece) in buf.chunks_mut(ds).enumerate() {
        let idx = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let h = hash.digest_parts(&[&idx, piece]);
        let n = piece.len();
        piece.copy_from_slice(&h[..n]);
    }
}

/// AF-merge `stripes` stripes of `key_len` bytes each (the decrypted key
/// material, at least `key_len * stripes` bytes) into the key.
pub(crate) fn af_merge(hash: Hash, material: &[u8], key_len: usize, stripes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; key_len];
    for (i, stripe) in material.chunks_exact(key_len).take(stripes).enumerate() {
        for (b, s) in buf.iter_mut().zip(stripe) {
            *b ^= s;
        }
        if i + 1 < stripes {
            diffuse(hash, &mut buf);
        }
    }
    buf
}

/// Decode standard base64 (padding optional; whitespace refused).
pub(crate) fn base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let t = s.trim_end_matches('=');
    if s.len() - t.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in t.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding (at most 4 of them).
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64("").unwrap(), b"");
        assert!(base64("a").is_none());
        assert!(base64("aGV sbG8=").is_none());
        assert!(base64("aGVsbG8===").is_none());
    }

    /// RFC 6070 PBKDF2-HMAC-SHA1 vector 2.
    #[test]
    fn pbkdf2_sha1_rfc6070() {
        let mut out = [0u8; 20];
        pbkdf2(Hash::Sha1, b"password", b"salt", 2, &mut out);
        assert_eq!(
            out,
            [
                0xea, 0x6c, 0x01, 0x4d, 0xc7, 0x2d, 0x6f, 0x8c, 0xcd, 0x1e, 0xd9, 0x2a, 0xce, 0x1d,
                0x41, 0xf0, 0xd8, 0xde, 0x89, 0x57
            ]
        );
    }

    #[test]
    fn af_merge_one_stripe_is_identity() {
        assert_eq!(af_merge(Hash::Sha256, &[1, 2, 3], 3, 1), vec![1, 2, 3]);
    }
}
