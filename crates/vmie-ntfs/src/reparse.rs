//! Reparse points: NTFS symbolic links and junctions as guest symlinks.
//!
//! Only two tags become symlinks: `IO_REPARSE_TAG_SYMLINK` and
//! `IO_REPARSE_TAG_MOUNT_POINT` (junctions). Their substitute name is turned
//! into a guest path:
//!
//! - a relative symlink (`..\foo`) keeps its components, `\` becoming `/`;
//! - an absolute target on a drive letter (`\??\C:\Users`, `C:\Users`) becomes
//!   `/Users`: the drive letter is dropped, on the assumption that the link
//!   points into the volume it is on (true for the junctions Windows itself
//!   creates, such as `Documents and Settings`);
//! - anything else (`\??\UNC\...`, `\??\Volume{...}\...`) has no guest path
//!   and is refused.

use crate::le::{le16, le32};

/// `IO_REPARSE_TAG_MOUNT_POINT`: a junction (or a volume mount point).
pub(crate) const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `IO_REPARSE_TAG_SYMLINK`: a symbolic link.
pub(crate) const TAG_SYMLINK: u32 = 0xA000_000C;
/// `SYMLINK_FLAG_RELATIVE`.
const SYMLINK_RELATIVE: u32 = 1;
/// Largest reparse point: 16 KiB of data after the 8-byte header.
pub(crate) const MAX_REPARSE: u64 = (16 << 10) + 8;

/// Whether reparse data with this tag is a link we show as a symlink.
pub(crate) fn is_link(tag: u32) -> bool {
    tag == TAG_SYMLINK || tag == TAG_MOUNT_POINT
}

/// The guest path a symlink or junction's reparse data points at. The error
/// says why it has none.
pub(crate) fn link_target(data: &[u8]) -> Result<String, String> {
    let tag = le32(data, 0);
    if !is_link(tag) {
        return Err(format!(
            "reparse tag {tag:#010x} is not a symlink or junction"
        ));
    }
    let data_len = usize::from(le16(data, 4));
    let buf_start = if tag == TAG_SYMLINK { 20 } else { 16 };
    let end = 8 + data_len;
    if end > data.len() || buf_start > end {
        return Err(format!(
            "reparse data of {data_len} bytes does not fit the {}-byte attribute",
            data.len()
        ));
    }
    let paths = &data[buf_start..end];
    let relative = tag == TAG_SYMLINK && le32(data, 16) & SYMLINK_RELATIVE != 0;
    let name = |off: usize, len: usize| -> Result<String, String> {
        let b = paths
            .get(off..off + len)
            .ok_or_else(|| format!("reparse name ({len} bytes at {off}) runs past the data"))?;
        let u: Vec<u16> = b.chunks_exact(2).map(|c| le16(c, 0)).collect();
        String::from_utf16(&u).map_err(|_| "reparse name is not valid UTF-16".to_string())
    };
    let mut target = name(usize::from(le16(data, 8)), usize::from(le16(data, 10)))?;
    if target.is_empty() {
        target = name(usize::from(le16(data, 12)), usize::from(le16(data, 14)))?;
    }
    if target.is_empty() || target.contains('\0') {
        return Err("reparse point has no usable target name".into());
    }
    translate(&target, relative)
}

/// Windows path → guest path (see the module documentation).
fn translate(target: &str, relative: bool) -> Result<String, String> {
    if relative {
        return Ok(target.replace('\\', "/"));
    }
    let s = target
        .strip_prefix("\\??\\")
        .or_else(|| target.strip_prefix("\\\\?\\"))
        .unwrap_or(target);
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b.len() == 2 || b[2] == b'\\')
    {
        let rest = s[2..].replace('\\', "/");
        return Ok(if rest.is_empty() { "/".into() } else { rest });
    }
    Err(format!("target {target:?} is not a path on a drive letter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
        let s: Vec<u8> = sub.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let p: Vec<u8> = print.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut body = Vec::new();
        body.extend(0u16.to_le_bytes());
        body.extend((s.len() as u16).to_le_bytes());
        body.extend((s.len() as u16).to_le_bytes());
        body.extend((p.len() as u16).to_le_bytes());
        if let Some(f) = flags {
            body.extend(f.to_le_bytes());
        }
        body.extend(&s);
        body.extend(&p);
        let mut d = Vec::new();
        d.extend(tag.to_le_bytes());
        d.extend((body.len() as u16).to_le_bytes());
        d.extend(0u16.to_le_bytes());
        d.extend(body);
        d
    }

    #[test]
    fn junctions_and_symlinks() {
        let j = data(TAG_MOUNT_POINT, "\\??\\C:\\Users", "C:\\Users", None);
        assert_eq!(link_target(&j).unwrap(), "/Users");
        let s = data(TAG_SYMLINK, "..\\a\\b", "..\\a\\b", Some(1));
        assert_eq!(link_target(&s).unwrap(), "../a/b");
        let s = data(TAG_SYMLINK, "\\??\\D:\\", "D:\\", Some(0));
        assert_eq!(link_target(&s).unwrap(), "/");
        let s = data(TAG_SYMLINK, "", "C:\\x", Some(0));
        assert_eq!(link_target(&s).unwrap(), "/x");
        let unc = data(TAG_SYMLINK, "\\??\\UNC\\srv\\share", "", Some(0));
        assert!(link_target(&unc).is_err());
        let vol = data(TAG_MOUNT_POINT, "\\??\\Volume{1234}\\", "", None);
        assert!(link_target(&vol).is_err());
        let other = data(0x8000_0017, "x", "x", None);
        assert!(link_target(&other).is_err());
        let mut short = j;
        short.truncate(20);
        assert!(link_target(&short).is_err());
    }
}
