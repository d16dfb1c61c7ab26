//! Helpers shared by the integration tests: real data beside the checkout,
//! decompression, and blkid's `KEY=value` output.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use vmie_probe::Probe;

/// A file under `../shared/realdata` (beside the checkout).
pub fn realdata(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel);
    assert!(
        p.exists(),
        "{}: missing (is ../shared beside the checkout?)",
        p.display()
    );
    p
}

/// Decompress an `.xz` file into memory.
pub fn unxz(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::BufReader::new(f), &mut out)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    out
}

/// Decompress a `.zst` file into memory.
pub fn unzstd(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f))
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let mut out = Vec::new();
    dec.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

/// Undo blkid's `\xNN` escaping (as in `ID_FS_LABEL_ENC`, or `-o export`
/// values with `\ `), byte-wise, then read as UTF-8.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("blkid output is UTF-8 here")
}

/// Parse `KEY=value` lines; keys with an `ID_FS_` prefix lose it. For the
/// udev format (`ID_FS_LABEL_ENC`), the `_ENC` values replace the mangled
/// plain ones.
pub fn parse_kv(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut enc = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.strip_prefix("ID_FS_").unwrap_or(k);
        if let Some(base) = k.strip_suffix("_ENC") {
            enc.insert(base.to_string(), unescape(v));
        } else {
            m.insert(k.to_string(), unescape(v));
        }
    }
    m.extend(enc);
    m
}

/// What we report for blkid's tag `key`.
pub fn ours(p: &Probe, key: &str) -> Option<String> {
    match key {
        "TYPE" => Some(p.detail("TYPE").unwrap_or(p.kind.blkid_type()).to_string()),
        "USAGE" => Some(p.kind.usage().to_string()),
        "UUID" => p.uuid.clone(),
        "LABEL" => p.label.clone(),
        "VERSION" => p.version.clone(),
        other => p.detail(other).map(str::to_string),
    }
}

/// Compare `p` with blkid's tags; keys in `skip` are not compared. Returns
/// the list of mismatches.
pub fn compare(p: &Probe, blkid: &BTreeMap<String, String>, skip: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for (k, v) in blkid {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let o = ours(p, k);
        if o.as_deref() != Some(v.as_str()) {
            bad.push(format!("{k}: blkid {v:?}, ours {o:?}"));
        }
    }
    // Tags blkid does not print must not be invented either.
    for k in ["UUID", "LABEL", "VERSION", "UUID_SUB", "SEC_TYPE"] {
        if !blkid.contains_key(k) && !skip.contains(&k) {
            if let Some(o) = ours(p, k) {
                bad.push(format!("{k}: blkid prints none, ours {o:?}"));
            }
        }
    }
    bad
}
