//! 8.3 short names, VFAT long names, and the comparison Windows makes.
//!
//! - Lookup is case-insensitive: both names are upper-cased character by
//!   character with Unicode's simple mapping (a character whose upper case
//!   is more than one character is kept as it is), as Windows' `$UpCase`
//!   table does for the characters it maps.
//! - Short-name bytes from 0x80 up are read as Latin-1 (we do not carry the
//!   OEM code page tables); new short names are ASCII only, other
//!   characters become `_` and the name gets a long name.
//! - A new name that is a valid 8.3 name whose base and extension are each
//!   all upper or all lower case is stored as a short name alone, with the
//!   NT lower-case flags (byte 12: 0x08 base, 0x10 extension), as Windows NT
//!   and Linux do; every other name gets long-name entries and a generated
//!   `BASIS~N` short name.

/// NT flag: the base name is lower case.
pub(crate) const NT_LOWER_BASE: u8 = 0x08;
/// NT flag: the extension is lower case.
pub(crate) const NT_LOWER_EXT: u8 = 0x10;

/// Characters allowed in a short name besides A-Z and 0-9.
const SHORT_SPECIAL: &[u8] = b"$%'-_@~`!(){}^#&";

fn short_char_ok(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_SPECIAL.contains(&c)
}

/// The display name of a short entry's 11 name bytes.
pub(crate) fn decode_short(raw: &[u8; 11], nt: u8) -> String {
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5;
    }
    while base.last() == Some(&b' ') {
        base.pop();
    }
    let mut ext: Vec<u8> = raw[8..].to_vec();
    while ext.last() == Some(&b' ') {
        ext.pop();
    }
    let conv = |b: &[u8], lower: bool| -> String {
        b.iter()
            .map(|&c| {
                let c = if lower { c.to_ascii_lowercase() } else { c };
                char::from(c)
            })
            .collect()
    };
    let mut s = conv(&base, nt & NT_LOWER_BASE != 0);
    if !ext.is_empty() {
        s.push('.');
        s.push_str(&conv(&ext, nt & NT_LOWER_EXT != 0));
    }
    s
}

/// The checksum of a short name that its long-name entries carry.
pub(crate) fn checksum(raw: &[u8; 11]) -> u8 {
    raw.iter()
        .fold(0u8, |s, &c| (s >> 1 | (s & 1) << 7).wrapping_add(c))
}

/// `s` upper-cased with the simple mapping.
pub(crate) fn upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

/// Whether two names are equal as Windows compares them.
pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    a == b || upper(a) == upper(b)
}

/// Why `name` cannot be a FAT name, if it cannot; otherwise its UTF-16.
pub(crate) fn check_long(name: &[u8]) -> Result<(String, Vec<u16>), String> {
    let s = std::str::from_utf8(name)
        .map_err(|_| "the name is not UTF-8 (FAT stores names as UTF-16)".to_string())?;
    if s.is_empty() || s == "." || s == ".." {
        return Err("an empty, `.` or `..` name".into());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c))
    {
        return Err(format!("the character {c:?} is not allowed in FAT names"));
    }
    if s.ends_with(' ') || s.ends_with('.') {
        return Err("a FAT name cannot end in a space or a dot".into());
    }
    let u: Vec<u16> = s.encode_utf16().collect();
    if u.len() > 255 {
        return Err(format!(
            "{} UTF-16 units, more than FAT's 255 per name",
            u.len()
        ));
    }
    Ok((s.to_string(), u))
}

/// How a new name is stored.
#[derive(Debug, Clone)]
pub(crate) struct NamePlan {
    /// The short entry's 11 name bytes.
    pub short: [u8; 11],
    /// NT case flags for byte 12.
    pub nt: u8,
    /// The long name, when one is needed.
    pub lfn: Option<Vec<u16>>,
}

fn pad11(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut r = [b' '; 11];
    r[..base.len()].copy_from_slice(base);
    r[8..8 + ext.len()].copy_from_slice(ext);
    if r[0] == 0xE5 {
        r[0] = 0x05;
    }
    r
}

/// Whether `part` is all upper case, all lower case (letters only count).
fn case_of(part: &str) -> Option<bool> {
    let has_lower = part.chars().any(|c| c.is_ascii_lowercase());
    let has_upper = part.chars().any(|c| c.is_ascii_uppercase());
    match (has_lower, has_upper) {
        (true, true) => None,
        (true, false) => Some(true),
        _ => Some(false),
    }
}

/// The 8.3 form of `s` when it is one (ignoring case): (base, ext).
fn as_83(s: &str) -> Option<(String, String)> {
    if !s.is_ascii() || s.starts_with('.') {
        return None;
    }
    let (base, ext) = match s.rfind('.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 {
        return None;
    }
    let up = |p: &str| p.to_ascii_uppercase();
    if !up(base).bytes().all(short_char_ok) || !up(ext).bytes().all(short_char_ok) {
        return None;
    }
    Some((base.to_string(), ext.to_string()))
}

/// Plan the entries of new name `s` (checked by [`check_long`]) in a
/// directory where `taken` says whether a short name is in use. `None`
/// when no `~N` tail up to 999999 is free.
pub(crate) fn plan(s: &str, utf16: &[u16], taken: &dyn Fn(&[u8; 11]) -> bool) -> Option<NamePlan> {
    if let Some((base, ext)) = as_83(s) {
        if let (Some(lb), Some(le)) = (case_of(&base), case_of(&ext)) {
            let short = pad11(
                base.to_ascii_uppercase().as_bytes(),
                ext.to_ascii_uppercase().as_bytes(),
            );
            if !taken(&short) {
                let mut nt = 0;
                if lb {
                    nt |= NT_LOWER_BASE;
                }
                if le {
                    nt |= NT_LOWER_EXT;
                }
                return Some(NamePlan {
                    short,
                    nt,
                    lfn: None,
                });
            }
        }
    }
    // Windows' basis: upper case, spaces and leading dots dropped, bad
    // characters as `_`, base up to 8 before the last dot, extension up to 3.
    let mut lossy = false;
    let conv = |c: char, lossy: &mut bool| -> Option<u8> {
        if c == ' ' {
            *lossy = true;
            return None;
        }
        if !c.is_ascii() {
            *lossy = true;
            return Some(b'_');
        }
        let u = c.to_ascii_uppercase() as u8;
        if short_char_ok(u) {
            Some(u)
        } else {
            *lossy = true;
            Some(b'_')
        }
    };
    let trimmed = s.trim_start_matches('.');
    if trimmed.len() != s.len() {
        lossy = true;
    }
    let (bpart, epart) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut base: Vec<u8> = Vec::new();
    for c in bpart.chars() {
        if c == '.' {
            lossy = true;
            continue;
        }
        if let Some(b) = conv(c, &mut lossy) {
            if base.len() < 8 {
                base.push(b);
            } else {
                lossy = true;
            }
        }
    }
    let mut ext: Vec<u8> = Vec::new();
    for c in epart.chars() {
        if let Some(b) = conv(c, &mut lossy) {
            if ext.len() < 3 {
                ext.push(b);
            } else {
                lossy = true;
            }
        }
    }
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    let lfn = Some(utf16.to_vec());
    if !lossy {
        let short = pad11(&base, &ext);
        if !taken(&short) {
            return Some(NamePlan { short, nt: 0, lfn });
        }
    }
    for n in 1u32..=999_999 {
        let tail = format!("~{n}");
        let keep = (8 - tail.len()).min(base.len());
        let mut b = base[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        let short = pad11(&b, &ext);
        if !taken(&short) {
            return Some(NamePlan { short, nt: 0, lfn });
        }
    }
    None
}

/// The long-name entries of `utf16` for a short name with `sum`, in
/// on-disk order (the last part, flagged 0x40, first).
pub(crate) fn lfn_entries(utf16: &[u16], sum: u8) -> Vec<[u8; 32]> {
    let parts = utf16.len().div_ceil(13).max(1);
    let mut out = Vec::with_capacity(parts);
    for p in (0..parts).rev() {
        let mut e = [0u8; 32];
        let mut ord = (p + 1) as u8;
        if p == parts - 1 {
            ord |= 0x40;
        }
        e[0] = ord;
        e[11] = 0x0F;
        e[13] = sum;
        for i in 0..13 {
            let idx = p * 13 + i;
            let ch: u16 = match idx.cmp(&utf16.len()) {
                std::cmp::Ordering::Less => utf16[idx],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
            let off = match i {
                0..=4 => 1 + 2 * i,
                5..=10 => 14 + 2 * (i - 5),
                _ => 28 + 2 * (i - 11),
            };
            e[off..off + 2].copy_from_slice(&ch.to_le_bytes());
        }
        out.push(e);
    }
    out
}

/// The 13 characters of one long-name entry.
pub(crate) fn lfn_chars(e: &[u8]) -> [u16; 13] {
    let mut r = [0u16; 13];
    for (i, slot) in r.iter_mut().enumerate() {
        let off = match i {
            0..=4 => 1 + 2 * i,
            5..=10 => 14 + 2 * (i - 5),
            _ => 28 + 2 * (i - 11),
        };
        *slot = u16::from_le_bytes([e[off], e[off + 1]]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_s(s: &str, taken: &[&[u8; 11]]) -> NamePlan {
        let (s, u) = check_long(s.as_bytes()).unwrap();
        plan(&s, &u, &|x| taken.contains(&x)).unwrap()
    }

    #[test]
    fn short_names() {
        let p = plan_s("BOOTX64.EFI", &[]);
        assert_eq!(&p.short, b"BOOTX64 EFI");
        assert!(p.lfn.is_none() && p.nt == 0);
        let p = plan_s("grub.cfg", &[]);
        assert_eq!(&p.short, b"GRUB    CFG");
        assert_eq!(p.nt, NT_LOWER_BASE | NT_LOWER_EXT);
        let p = plan_s("Grub.cfg", &[]);
        assert_eq!(&p.short, b"GRUB    CFG");
        assert!(p.lfn.is_some());
        let p = plan_s("Microsoft Windows.txt", &[]);
        assert_eq!(&p.short, b"MICROS~1TXT");
        let p = plan_s("Microsoft Windows.txt", &[b"MICROS~1TXT"]);
        assert_eq!(&p.short, b"MICROS~2TXT");
        let p = plan_s(".bashrc", &[]);
        assert_eq!(&p.short, b"BASHRC~1   ");
        let p = plan_s("a.b.c", &[]);
        assert_eq!(&p.short, b"AB~1    C  ");
        assert_eq!(decode_short(b"GRUB    CFG", NT_LOWER_BASE), "grub.CFG");
    }

    #[test]
    fn checks() {
        assert!(check_long(b"a:b").is_err());
        assert!(check_long(b"x.").is_err());
        assert!(check_long(&[b'a'; 256]).is_err());
        assert!(check_long(&[0xff]).is_err());
        assert!(eq_ci("Grub.CFG", "grub.cfg"));
        assert!(eq_ci("ÄÖ", "äö"));
        // Checksum from the specification's algorithm on a known name.
        let e = lfn_entries(&"hello".encode_utf16().collect::<Vec<_>>(), 7);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0][0], 0x41);
        assert_eq!(
            &lfn_chars(&e[0])[..7],
            &[104, 101, 108, 108, 111, 0, 0xFFFF]
        );
    }
}
