//! The LUKS2 header: two copies of a 4096-byte binary header followed by a
//! JSON area, each checksummed (SHA-256 over `hdr_size` bytes with the
//! checksum field zeroed). The copy read is chosen as cryptsetup does
//! (lib/luks2/luks2_disk_metadata.c): the primary at 0 and the secondary at
//! the primary's `hdr_size`; when the primary is bad, the secondary at the
//! first of the standard offsets that holds a valid one; of two valid
//! copies the higher `seqid`. Nothing is ever repaired (we never write the
//! header).
//!
//! Binary header (big-endian): magic[6] version u16 hdr_size u64 seqid u64
//! label[48] checksum_alg[32] salt[64] uuid[40] subsystem[48] hdr_offset
//! u64 padding[184] csum[64] padding to 4096.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use vmie_disk::Device;

use crate::kdf::{self, Hash};
use crate::{
    af_sectors_bytes, check_pbkdf2, cipher, cstr, Check, Kdf, LuksError, Options, Problem, Slot,
    SlotPlan, SlotProblem, Volume,
};

const MAGIC_1: &[u8] = b"LUKS\xba\xbe";
const MAGIC_2: &[u8] = b"SKUL\xba\xbe";
const BIN_LEN: u64 = 4096;
const MIN_HDR: u64 = 0x4000;
const MAX_HDR: u64 = 0x40_0000;
/// Where cryptsetup looks for a secondary header when the primary gives no size.
const SECONDARY: [u64; 9] = [
    0x04000, 0x008000, 0x010000, 0x020000, 0x40000, 0x080000, 0x100000, 0x200000, 0x400000,
];
/// LUKS2 objects (key slots, tokens, segments) are numbered 0..32.
const OBJECTS_MAX: u32 = 32;
/// cryptsetup reads and writes LUKS2 slots with 4000 stripes only.
const STRIPES: u64 = 4000;

struct Hdr {
    offset: u64,
    seqid: u64,
    hdr_size: u64,
    label: String,
    uuid: String,
    json: Map<String, Value>,
}

fn be64(h: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Read and check one header copy at `off`. `Err(None)`: no header
/// there (wrong magic); `Err(Some(why))`: a damaged or refused one.
fn read_hdr(
    dev: &dyn Device,
    off: u64,
    secondary: bool,
    opts: &Options,
) -> Result<Hdr, Option<String>> {
    let end = off.checked_add(BIN_LEN).ok_or(None)?;
    if end > dev.len() {
        return Err(None);
    }
    let mut bin = vec![0u8; BIN_LEN as usize];
    dev.read_at(off, &mut bin)
        .map_err(|e| Some(e.to_string()))?;
    let magic = if secondary { MAGIC_2 } else { MAGIC_1 };
    if &bin[..6] != magic {
        return Err(None);
    }
    let version = u16::from_be_bytes([bin[6], bin[7]]);
    if version != 2 {
        return Err(Some(format!("header version {version}")));
    }
    let hdr_size = be64(&bin, 8);
    let hdr_offset = be64(&bin, 256);
    if hdr_offset != off {
        return Err(Some(format!("header says it is at offset {hdr_offset}")));
    }
    if !(MIN_HDR..=MAX_HDR).contains(&hdr_size) || hdr_size % BIN_LEN != 0 {
        return Err(Some(format!("header size {hdr_size} (16 KiB to 4 MiB)")));
    }
    if hdr_size > opts.max_luks2_header {
        return Err(Some(format!(
            "header size {hdr_size} exceeds the limit of {} bytes",
            opts.max_luks2_header
        )));
    }
    if secondary && off != hdr_size {
        return Err(Some(format!(
            "secondary header at {off} but header size {hdr_size}"
        )));
    }
    let alg = cstr(&bin[72..104]);
    if alg != "sha256" {
        return Err(Some(format!("checksum algorithm {alg:?} (only sha256)")));
    }
    match off.checked_add(hdr_size) {
        Some(e) if e <= dev.len() => {}
        _ => {
            return Err(Some(format!(
                "header of {hdr_size} bytes runs past the end of the device ({} bytes)",
                dev.len()
            )))
        }
    }
    let json_len =
        usize::try_from(hdr_size - BIN_LEN).map_err(|_| Some("header size".to_string()))?;
    let mut area = vec![0u8; json_len];
    dev.read_at(off + BIN_LEN, &mut area)
        .map_err(|e| Some(e.to_string()))?;
    let mut stored = [0u8; 32];
    stored.copy_from_slice(&bin[448..480]);
    bin[448..512].fill(0);
    let mut h = Sha256::new();
    h.update(&bin);
    h.update(&area);
    if h.finalize().as_slice() != stored {
        return Err(Some("header checksum mismatch".into()));
    }
    let text_end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let json: Value = serde_json::from_slice(&area[..text_end])
        .map_err(|e| Some(format!("JSON area does not parse: {e}")))?;
    let Value::Object(json) = json else {
        return Err(Some("JSON area is not an object".into()));
    };
    Ok(Hdr {
        offset: off,
        seqid: be64(&bin, 16),
        hdr_size,
        label: cstr(&bin[24..72]),
        uuid: cstr(&bin[168..208]),
        json,
    })
}

pub(crate) fn parse(dev: &dyn Device, opts: &Options) -> Result<Volume, LuksError> {
    let device = dev.describe();
    let primary = read_hdr(dev, 0, false, opts);
    let secondary = match &primary {
        Ok(p) => read_hdr(dev, p.hdr_size, true, opts),
        Err(_) => {
            let mut found = Err(None);
            for off in SECONDARY {
                match read_hdr(dev, off, true, opts) {
                    Ok(h) => {
                        found = Ok(h);
                        break;
                    }
                    Err(Some(why)) => {
                        if found.is_err() {
                            found = Err(Some(format!("at {off}: {why}")));
                        }
                    }
                    Err(None) => {}
                }
            }
            found
        }
    };
    let hdr = match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            if s.seqid > p.seqid {
                s
            } else {
                p
            }
        }
        (Ok(p), Err(_)) => p,
        (Err(_), Ok(s)) => s,
        (Err(None), Err(None)) => {
            let mut head = [0u8; 8];
            if dev.len() >= 8 {
                dev.read_at(0, &mut head)?;
                if &head[..6] == MAGIC_1 {
                    return Err(LuksError::Unsupported {
                        device,
                        what: format!("LUKS version {}", u16::from_be_bytes([head[6], head[7]])),
                    });
                }
            }
            return Err(LuksError::NotLuks { device });
        }
        (p, s) => {
            let why = |r: Result<Hdr, Option<String>>| match r {
                Err(Some(w)) => w,
                _ => "none found".to_string(),
            };
            return Err(LuksError::Corrupt {
                device,
                offset: 0,
                why: format!(
                    "no valid LUKS2 header: primary: {}; secondary: {}",
                    why(p),
                    why(s)
                ),
            });
        }
    };
    volume(dev, hdr, opts)
}

fn get<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value, String> {
    o.get(key).ok_or_else(|| format!("{what} has no {key:?}"))
}

fn obj<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, String> {
    get(o, key, what)?
        .as_object()
        .ok_or_else(|| format!("{what}: {key:?} is not an object"))
}

fn string<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str, String> {
    get(o, key, what)?
        .as_str()
        .ok_or_else(|| format!("{what}: {key:?} is not a string"))
}

/// A number written as a decimal string (offsets, sizes).
fn num_str(o: &Map<String, Value>, key: &str, what: &str) -> Result<u64, String> {
    let s = string(o, key, what)?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: {key:?} is {s:?}, not a number"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("{what}: {key:?} is {s:?}, out of range"))
}

fn int(o: &Map<String, Value>, key: &str, what: &str) -> Result<u64, String> {
    get(o, key, what)?
        .as_u64()
        .ok_or_else(|| format!("{what}: {key:?} is not a non-negative integer"))
}

fn int32(o: &Map<String, Value>, key: &str, what: &str) -> Result<u32, String> {
    let v = int(o, key, what)?;
    u32::try_from(v).map_err(|_| format!("{what}: {key:?} = {v} is out of range"))
}

fn b64(o: &Map<String, Value>, key: &str, what: &str) -> Result<Vec<u8>, String> {
    kdf::base64(string(o, key, what)?).ok_or_else(|| format!("{what}: {key:?} is not base64"))
}

/// The object ids of a JSON list of strings such as `["0", "1"]`.
fn id_list(o: &Map<String, Value>, key: &str, what: &str) -> Result<Vec<String>, String> {
    get(o, key, what)?
        .as_array()
        .ok_or_else(|| format!("{what}: {key:?} is not a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{what}: {key:?} holds a non-string"))
        })
        .collect()
}

fn object_id(k: &str, what: &str) -> Result<u32, String> {
    match k.parse::<u32>() {
        Ok(n) if n < OBJECTS_MAX && n.to_string() == k => Ok(n),
        _ => Err(format!(
            "{what} id {k:?} (ids are 0 to {})",
            OBJECTS_MAX - 1
        )),
    }
}

fn volume(dev: &dyn Device, hdr: Hdr, opts: &Options) -> Result<Volume, LuksError> {
    let device = dev.describe();
    let at = hdr.offset;
    let corrupt = |why: String| LuksError::Corrupt {
        device: device.clone(),
        offset: at,
        why,
    };
    let unsupported = |what: String| LuksError::Unsupported {
        device: device.clone(),
        what,
    };
    let j = &hdr.json;

    // config: sizes and mandatory requirements (reencryption, …).
    let config = obj(j, "config", "LUKS2 JSON").map_err(&corrupt)?;
    let json_size = num_str(config, "json_size", "config").map_err(&corrupt)?;
    if json_size != hdr.hdr_size - BIN_LEN {
        return Err(corrupt(format!(
            "config json_size {json_size} does not match the header size {}",
            hdr.hdr_size
        )));
    }
    if let Some(req) = config.get("requirements") {
        let req = req
            .as_object()
            .ok_or_else(|| corrupt("config requirements is not an object".into()))?;
        if let Some(m) = req.get("mandatory") {
            let list: Vec<String> = m
                .as_array()
                .ok_or_else(|| corrupt("config requirements mandatory is not a list".into()))?
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .collect();
            if !list.is_empty() {
                return Err(unsupported(format!(
                    "mandatory requirements {} (a reencryption in progress or a newer format)",
                    list.join(", ")
                )));
            }
        }
    }

    // The one data segment.
    let segments = obj(j, "segments", "LUKS2 JSON").map_err(&corrupt)?;
    if segments.len() != 1 {
        return Err(unsupported(format!(
            "{} data segments (a reencryption in progress?): only one crypt segment is read",
            segments.len()
        )));
    }
    let Some((seg_id, seg)) = segments.iter().next() else {
        return Err(corrupt("no data segment".into()));
    };
    object_id(seg_id, "segment").map_err(&corrupt)?;
    let seg = seg
        .as_object()
        .ok_or_else(|| corrupt(format!("segment {seg_id} is not an object")))?;
    let what = format!("segment {seg_id}");
    let seg_type = string(seg, "type", &what).map_err(&corrupt)?;
    if seg_type != "crypt" {
        return Err(unsupported(format!(
            "segment {seg_id} of type {seg_type:?} (a reencryption in progress?)"
        )));
    }
    if seg.get("integrity").is_some() {
        return Err(unsupported(format!(
            "segment {seg_id} uses authenticated encryption (dm-integrity)"
        )));
    }
    if let Some(f) = seg.get("flags").and_then(Value::as_array) {
        if !f.is_empty() {
            return Err(unsupported(format!(
                "segment {seg_id} has flags {f:?} (a reencryption in progress?)"
            )));
        }
    }
    let cipher_text = string(seg, "encryption", &what)
        .map_err(&corrupt)?
        .to_string();
    let mode = cipher::parse_joined(&cipher_text);
    let sector_size = int32(seg, "sector_size", &what).map_err(&corrupt)?;
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(corrupt(format!("{what}: sector size {sector_size}")));
    }
    let ss = u64::from(sector_size);
    let iv_tweak = num_str(seg, "iv_tweak", &what).map_err(&corrupt)?;
    if iv_tweak % (ss / 512) != 0 {
        return Err(corrupt(format!(
            "{what}: iv_tweak {iv_tweak} is not a multiple of the sector size in 512-byte units"
        )));
    }
    let payload_offset = num_str(seg, "offset", &what).map_err(&corrupt)?;
    if payload_offset % 512 != 0 {
        return Err(corrupt(format!(
            "{what}: offset {payload_offset} is not sector-aligned"
        )));
    }
    if payload_offset < 2 * hdr.hdr_size {
        return Err(unsupported(format!(
            "{what}: payload at {payload_offset} overlaps the headers (a detached-header volume?)"
        )));
    }
    if payload_offset > dev.len() {
        return Err(corrupt(format!(
            "{what}: payload offset {payload_offset} is past the end of the device ({} bytes)",
            dev.len()
        )));
    }
    let payload_len = match string(seg, "size", &what).map_err(&corrupt)? {
        "dynamic" => (dev.len() - payload_offset) / ss * ss,
        _ => {
            let size = num_str(seg, "size", &what).map_err(&corrupt)?;
            if size % ss != 0 {
                return Err(corrupt(format!(
                    "{what}: size {size} is not a multiple of the sector size"
                )));
            }
            match payload_offset.checked_add(size) {
                Some(e) if e <= dev.len() => size,
                _ => {
                    return Err(corrupt(format!(
                        "{what}: {size} bytes at {payload_offset} run past the end of the device ({} bytes)",
                        dev.len()
                    )))
                }
            }
        }
    };

    // Digests.
    let digests = obj(j, "digests", "LUKS2 JSON").map_err(&corrupt)?;
    if digests.len() > OBJECTS_MAX as usize {
        return Err(corrupt(format!("{} digests", digests.len())));
    }

    // Tokens: only their types, for reports.
    let mut tokens = Vec::new();
    if let Some(t) = j.get("tokens") {
        let t = t
            .as_object()
            .ok_or_else(|| corrupt("tokens is not an object".into()))?;
        if t.len() > OBJECTS_MAX as usize {
            return Err(corrupt(format!("{} tokens", t.len())));
        }
        for (_, tok) in t {
            let ty = tok
                .as_object()
                .and_then(|o| o.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            tokens.push(ty.to_string());
        }
    }

    // Key slots, in numeric order.
    let keyslots = obj(j, "keyslots", "LUKS2 JSON").map_err(&corrupt)?;
    if keyslots.len() > OBJECTS_MAX as usize {
        return Err(corrupt(format!("{} key slots", keyslots.len())));
    }
    let mut ids = Vec::new();
    for (k, v) in keyslots {
        let id = object_id(k, "key slot").map_err(&corrupt)?;
        let o = v
            .as_object()
            .ok_or_else(|| corrupt(format!("key slot {k} is not an object")))?;
        ids.push((id, k.as_str(), o));
    }
    ids.sort_by_key(|(id, _, _)| *id);
    let mut slots = Vec::new();
    for (id, k, o) in ids {
        // An area inside the payload would be overwritten by payload writes.
        if let Ok(area) = obj(o, "area", "key slot") {
            if let (Ok(off), Ok(size)) = (
                num_str(area, "offset", "area"),
                num_str(area, "size", "area"),
            ) {
                if off.saturating_add(size) > payload_offset
                    && off < payload_offset.saturating_add(payload_len)
                {
                    return Err(corrupt(format!(
                        "key slot {k}: area {off}..{} overlaps the payload at {payload_offset}",
                        off.saturating_add(size)
                    )));
                }
            }
        }
        let kdf_text = kdf_text(o);
        let plan = slot_plan(dev, &hdr, k, o, digests, seg_id, payload_offset, opts);
        slots.push(Slot { id, kdf_text, plan });
    }

    let key_len = slots
        .iter()
        .find_map(|s| s.plan.as_ref().ok().map(|p| p.key_len))
        .or_else(|| {
            keyslots
                .values()
                .find_map(|v| v.get("key_size").and_then(Value::as_u64))
                .and_then(|n| usize::try_from(n).ok())
        })
        .unwrap_or(0);
    Ok(Volume {
        version: 2,
        uuid: hdr.uuid.clone(),
        label: Some(hdr.label.clone()).filter(|l| !l.is_empty()),
        header: if hdr.offset == 0 {
            "primary".into()
        } else {
            format!("secondary at {}", hdr.offset)
        },
        cipher_text,
        mode,
        key_len,
        payload_offset,
        payload_len,
        sector_size,
        iv_tweak,
        slots,
        tokens,
    })
}

fn kdf_text(o: &Map<String, Value>) -> String {
    let Some(k) = o.get("kdf").and_then(Value::as_object) else {
        return "no kdf".into();
    };
    let ty = k.get("type").and_then(Value::as_str).unwrap_or("?");
    let n = |key: &str| {
        k.get(key)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    };
    match ty {
        "pbkdf2" => format!(
            "pbkdf2-{}, {} iterations",
            k.get("hash").and_then(Value::as_str).unwrap_or("?"),
            n("iterations")
        ),
        "argon2i" | "argon2id" => format!(
            "{ty}, time {}, memory {} KiB, {} lanes",
            n("time"),
            n("memory"),
            n("cpus")
        ),
        _ => ty.to_string(),
    }
}

fn problem(kind: Problem, what: String) -> SlotProblem {
    SlotProblem {
        kind,
        what,
        limit: String::new(),
    }
}

fn limit(what: String, limit: String) -> SlotProblem {
    SlotProblem {
        kind: Problem::Limit,
        what,
        limit,
    }
}

#[allow(clippy::too_many_arguments)]
fn slot_plan(
    dev: &dyn Device,
    hdr: &Hdr,
    k: &str,
    o: &Map<String, Value>,
    digests: &Map<String, Value>,
    seg_id: &str,
    payload_offset: u64,
    opts: &Options,
) -> Result<SlotPlan, SlotProblem> {
    let what = format!("key slot {k}");
    let bad = |w: String| problem(Problem::Corrupt, w);
    let unsup = |w: String| problem(Problem::Unsupported, w);
    let ty = string(o, "type", &what).map_err(bad)?;
    if ty != "luks2" {
        return Err(unsup(format!("{what} of type {ty:?}")));
    }
    if o.get("priority").and_then(Value::as_u64) == Some(0) {
        return Err(unsup(format!(
            "{what} has priority \"ignore\" (cryptsetup only tries it when named)"
        )));
    }
    let key_len = int(o, "key_size", &what).map_err(bad)?;
    if key_len == 0 || key_len > 64 {
        return Err(bad(format!("{what}: key size {key_len} (1 to 64 bytes)")));
    }
    let key_len = key_len as usize;

    // Anti-forensic split.
    let af = obj(o, "af", &what).map_err(bad)?;
    let af_type = string(af, "type", &what).map_err(bad)?;
    if af_type != "luks1" {
        return Err(unsup(format!("{what}: AF type {af_type:?}")));
    }
    let stripes = int(af, "stripes", &what).map_err(bad)?;
    if stripes != STRIPES {
        return Err(bad(format!(
            "{what}: {stripes} AF stripes (LUKS2 slots have {STRIPES})"
        )));
    }
    let af_hash = Hash::parse(string(af, "hash", &what).map_err(bad)?).map_err(unsup)?;

    // The area holding the split key.
    let area = obj(o, "area", &what).map_err(bad)?;
    let area_type = string(area, "type", &what).map_err(bad)?;
    if area_type != "raw" {
        return Err(unsup(format!("{what}: area type {area_type:?}")));
    }
    let area_mode = cipher::parse_joined(string(area, "encryption", &what).map_err(bad)?)
        .map_err(|w| unsup(format!("{what}: {w}")))?;
    let area_key_len = int(area, "key_size", &what).map_err(bad)?;
    if !area_mode.key_len_ok(usize::try_from(area_key_len).unwrap_or(0)) {
        return Err(bad(format!(
            "{what}: area key size {area_key_len} does not fit {}",
            area_mode.spec()
        )));
    }
    let area_key_len = area_key_len as usize;
    let area_offset = num_str(area, "offset", &what).map_err(bad)?;
    let area_size = num_str(area, "size", &what).map_err(bad)?;
    let need = af_sectors_bytes(key_len, STRIPES as usize)
        .ok_or_else(|| bad(format!("{what}: key material size overflows")))?;
    let end = area_offset.checked_add(area_size);
    if area_offset % 512 != 0
        || area_offset < 2 * hdr.hdr_size
        || (need as u64) > area_size
        || end.is_none_or(|e| e > payload_offset || e > dev.len())
    {
        return Err(bad(format!(
            "{what}: area of {area_size} bytes at {area_offset} (needs {need}) is not between the headers and the payload ({payload_offset}) inside the device ({} bytes)",
            dev.len()
        )));
    }

    // KDF, capped before anything runs.
    let kdf_o = obj(o, "kdf", &what).map_err(bad)?;
    let kdf_type = string(kdf_o, "type", &what).map_err(bad)?;
    let salt = b64(kdf_o, "salt", &what).map_err(bad)?;
    let kdf = match kdf_type {
        "pbkdf2" => {
            let hash = Hash::parse(string(kdf_o, "hash", &what).map_err(bad)?).map_err(unsup)?;
            let iterations = int(kdf_o, "iterations", &what).map_err(bad)?;
            let iterations = u32::try_from(iterations).map_err(|_| {
                limit(
                    format!("{what}: PBKDF2 iteration count {iterations}"),
                    format!("{} iterations", opts.max_pbkdf2_iterations),
                )
            })?;
            check_pbkdf2(iterations, &what, opts)?;
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            }
        }
        "argon2i" | "argon2id" => {
            let time = int(kdf_o, "time", &what).map_err(bad)?;
            let memory = int(kdf_o, "memory", &what).map_err(bad)?;
            let lanes = int(kdf_o, "cpus", &what).map_err(bad)?;
            if memory > u64::from(opts.max_argon2_memory_kib) {
                return Err(limit(
                    format!("{what}: Argon2 memory cost of {memory} KiB"),
                    format!("{} KiB", opts.max_argon2_memory_kib),
                ));
            }
            if time > u64::from(opts.max_argon2_time) {
                return Err(limit(
                    format!("{what}: Argon2 time cost {time}"),
                    format!("{}", opts.max_argon2_time),
                ));
            }
            if lanes > u64::from(opts.max_argon2_lanes) {
                return Err(limit(
                    format!("{what}: Argon2 with {lanes} lanes"),
                    format!("{} lanes", opts.max_argon2_lanes),
                ));
            }
            if time == 0 || lanes == 0 || memory < 8 * lanes || salt.len() < 8 {
                return Err(bad(format!(
                    "{what}: Argon2 time {time}, memory {memory} KiB, {lanes} lanes, salt of {} bytes",
                    salt.len()
                )));
            }
            Kdf::Argon2 {
                variant: if kdf_type == "argon2i" {
                    kdf::Argon::I
                } else {
                    kdf::Argon::Id
                },
                time: time as u32,
                memory_kib: memory as u32,
                lanes: lanes as u32,
                salt,
            }
        }
        _ => return Err(unsup(format!("{what}: KDF {kdf_type:?}"))),
    };

    // The digest this slot's key is checked against, which must be the
    // data segment's.
    let mut found = None;
    for (dk, d) in digests {
        let d = d
            .as_object()
            .ok_or_else(|| bad(format!("digest {dk} is not an object")))?;
        let dwhat = format!("digest {dk}");
        if id_list(d, "keyslots", &dwhat)
            .map_err(bad)?
            .iter()
            .any(|s| s == k)
        {
            found = Some((dk, d, dwhat));
            break;
        }
    }
    let Some((dk, d, dwhat)) = found else {
        return Err(bad(format!("{what} is not assigned to any digest")));
    };
    if !id_list(d, "segments", &dwhat)
        .map_err(bad)?
        .iter()
        .any(|s| s == seg_id)
    {
        return Err(unsup(format!(
            "{what} is unbound (digest {dk} is not the data segment's): its key is not the volume key"
        )));
    }
    let dtype = string(d, "type", &dwhat).map_err(bad)?;
    if dtype != "pbkdf2" {
        return Err(unsup(format!("{dwhat} of type {dtype:?}")));
    }
    let dhash = Hash::parse(string(d, "hash", &dwhat).map_err(bad)?).map_err(unsup)?;
    let diter = int(d, "iterations", &dwhat).map_err(bad)?;
    let diter = u32::try_from(diter).map_err(|_| {
        limit(
            format!("{dwhat}: PBKDF2 iteration count {diter}"),
            format!("{} iterations", opts.max_pbkdf2_iterations),
        )
    })?;
    check_pbkdf2(diter, &dwhat, opts)?;
    let dsalt = b64(d, "salt", &dwhat).map_err(bad)?;
    let digest = b64(d, "digest", &dwhat).map_err(bad)?;
    if digest.is_empty() || digest.len() > 64 {
        return Err(bad(format!("{dwhat}: digest of {} bytes", digest.len())));
    }
    Ok(SlotPlan {
        kdf,
        area_offset,
        area_len: need,
        area_mode,
        area_key_len,
        af_hash,
        stripes: STRIPES as usize,
        key_len,
        check: Check {
            hash: dhash,
            iterations: diter,
            salt: dsalt,
            digest,
        },
    })
}
