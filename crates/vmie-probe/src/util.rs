//! Checksums, UUID formatting and label decoding shared by the probers.
//!
//! Label handling follows libblkid's conventions: a label is the bytes up to
//! the first NUL, with trailing (and for "id labels" also leading) C-locale
//! whitespace removed; an empty result means "no label".

pub(crate) use vmie_disk::checksum::crc32c_update;

/// The standard CRC-32C of `data` (initial and final inversion).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// The checksum LVM2 puts in its label header (see
/// [`vmie_disk::checksum::lvm2_crc`]).
pub(crate) use vmie_disk::checksum::lvm2_crc;

fn le64_of(s: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    for (d, v) in a.iter_mut().zip(s) {
        *d = *v;
    }
    u64::from_le_bytes(a)
}

fn le32_of(s: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    for (d, v) in a.iter_mut().zip(s) {
        *d = *v;
    }
    u32::from_le_bytes(a)
}

/// XXH64 with the given seed (btrfs's `xxhash` checksum uses seed 0).
pub(crate) fn xxh64(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, input: u64) -> u64 {
        acc.wrapping_add(input.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, val: u64) -> u64 {
        (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
    }

    let len = data.len() as u64;
    let mut stripes = data.chunks_exact(32);
    let mut h = if data.len() >= 32 {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        for s in &mut stripes {
            let (a, rest) = s.split_at(8);
            let (b, rest) = rest.split_at(8);
            let (c, d) = rest.split_at(8);
            v1 = round(v1, le64_of(a));
            v2 = round(v2, le64_of(b));
            v3 = round(v3, le64_of(c));
            v4 = round(v4, le64_of(d));
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        merge(h, v4)
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    let rest = stripes.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        h ^= round(0, le64_of(w));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let (w, r) = rest.split_at(4);
        h ^= u64::from(le32_of(w)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = r;
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Lower-case hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A DCE UUID as blkid prints it (`8-4-4-4-12`, lower case); `None` for a
/// wrong length or an all-zero UUID, which blkid does not report.
pub(crate) fn uuid_dce(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let (a, r) = b.split_at(4);
    let (c, r) = r.split_at(2);
    let (d, r) = r.split_at(2);
    let (e, f) = r.split_at(2);
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex(a),
        hex(c),
        hex(d),
        hex(e),
        hex(f)
    ))
}

/// Whitespace as C's `isspace` in the C locale.
pub(crate) fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The bytes before the first NUL.
pub(crate) fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => b.get(..n).unwrap_or(b),
        None => b,
    }
}

fn rtrim(mut b: &[u8]) -> &[u8] {
    while let Some((&last, rest)) = b.split_last() {
        if is_c_space(last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn ltrim(mut b: &[u8]) -> &[u8] {
    while let Some((&first, rest)) = b.split_first() {
        if is_c_space(first) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn nonempty(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(b).into_owned())
    }
}

/// blkid's `LABEL`: up to the first NUL, trailing whitespace removed.
pub(crate) fn label_rtrim(b: &[u8]) -> Option<String> {
    nonempty(rtrim(c_str(b)))
}

/// blkid's "id label" (`LABEL_FATBOOT`, `SUBSYSTEM`, ...): both ends trimmed.
pub(crate) fn label_trim(b: &[u8]) -> Option<String> {
    nonempty(ltrim(rtrim(c_str(b))))
}

/// Decode UTF-16 (`be` for big-endian) up to the first NUL character into
/// UTF-8, as libblkid's `ul_encode_to_utf8`; unpaired surrogates become
/// U+FFFD.
pub(crate) fn utf16_to_utf8(b: &[u8], be: bool) -> String {
    let units = b.chunks_exact(2).map(|c| {
        let mut a = [0u8; 2];
        for (d, v) in a.iter_mut().zip(c) {
            *d = *v;
        }
        if be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    });
    let mut out = String::new();
    for ch in char::decode_utf16(units.take_while(|&u| u != 0)) {
        out.push(ch.unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    out
}

/// A UTF-16 label, trailing whitespace removed (and leading too if `both`).
pub(crate) fn utf16_label(b: &[u8], be: bool, both: bool) -> Option<String> {
    let s = utf16_to_utf8(b, be);
    let t = if both {
        ltrim(rtrim(s.as_bytes()))
    } else {
        rtrim(s.as_bytes())
    };
    nonempty(t)
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn xxh64_known_vectors() {
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        // 39 bytes: covers stripes, 8-byte words, a 4-byte word and bytes.
        assert_eq!(
            xxh64(b"Nobody inspects the spammish repetition", 0),
            0xFBCE_A83C_8A37_8BF1
        );
    }

    #[test]
    fn uuid_formatting() {
        let u = [
            0x22, 0xf0, 0xea, 0xc3, 0x5c, 0x89, 0x4e, 0xc1, 0x90, 0x76, 0x60, 0x79, 0x91, 0x19,
            0xaa, 0xea,
        ];
        assert_eq!(
            uuid_dce(&u).as_deref(),
            Some("22f0eac3-5c89-4ec1-9076-60799119aaea")
        );
        assert_eq!(uuid_dce(&[0u8; 16]), None);
        assert_eq!(uuid_dce(&[1u8; 15]), None);
    }

    #[test]
    fn labels() {
        assert_eq!(label_rtrim(b"abc  \0zz").as_deref(), Some("abc"));
        assert_eq!(label_rtrim(b"  \0"), None);
        assert_eq!(label_rtrim(b" x ").as_deref(), Some(" x"));
        assert_eq!(label_trim(b" x ").as_deref(), Some("x"));
        let w: Vec<u8> = "Новый том  "
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(utf16_label(&w, false, false).as_deref(), Some("Новый том"));
        let mut s = String::from("ééé");
        assert!(truncate_utf8(&mut s, 3));
        assert_eq!(s, "é");
    }
}
