//! The LUKS1 header (big-endian, 592 bytes at offset 0).
//!
//! Layout (cryptsetup lib/luks1/luks.h): magic[6] version u16 cipherName[32]
//! cipherMode[32] hashSpec[32] payloadOffset u32 (sectors) keyBytes u32
//! mkDigest[20] mkDigestSalt[32] mkDigestIterations u32 uuid[40], then 8
//! key slots of 48 bytes: active u32, iterations u32, salt[32],
//! keyMaterialOffset u32 (sectors), stripes u32.

use vmie_disk::Device;

use crate::kdf::Hash;
use crate::{
    af_sectors_bytes, check_pbkdf2, cipher, cstr, Check, Kdf, LuksError, Options, Problem, Slot,
    SlotPlan, SlotProblem, Volume,
};

pub(crate) const MAGIC: &[u8] = b"LUKS\xba\xbe";
const HEADER_LEN: usize = 592;
const ACTIVE: u32 = 0x00AC_71F3;
const INACTIVE: u32 = 0x0000_DEAD;
/// cryptsetup reads and writes LUKS1 slots with 4000 stripes only.
const STRIPES: u32 = 4000;
const SECTOR: u64 = 512;

fn be32(h: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

pub(crate) fn parse(dev: &dyn Device, opts: &Options) -> Result<Volume, LuksError> {
    let device = dev.describe();
    let corrupt = |offset: u64, why: String| LuksError::Corrupt {
        device: device.clone(),
        offset,
        why,
    };
    if dev.len() < HEADER_LEN as u64 {
        return Err(corrupt(
            0,
            format!(
                "LUKS1 header truncated: the device has {} bytes, the header needs {HEADER_LEN}",
                dev.len()
            ),
        ));
    }
    let mut h = [0u8; HEADER_LEN];
    dev.read_at(0, &mut h)?;
    let cipher_name = cstr(&h[8..40]);
    let cipher_mode = cstr(&h[40..72]);
    let hash_spec = cstr(&h[72..104]);
    let payload_sectors = be32(&h, 104);
    let key_bytes = be32(&h, 108);
    let mk_digest = h[112..132].to_vec();
    let mk_salt = h[132..164].to_vec();
    let mk_iter = be32(&h, 164);
    let uuid = cstr(&h[168..208]);

    let mode = cipher::parse(&cipher_name, &cipher_mode);
    if key_bytes == 0 || key_bytes > 64 {
        return Err(corrupt(
            108,
            format!("key size of {key_bytes} bytes (LUKS1 keys are 1 to 64 bytes)"),
        ));
    }
    let key_len = key_bytes as usize;
    if let Ok(m) = mode {
        if !m.key_len_ok(key_len) {
            return Err(corrupt(
                108,
                format!("key size of {key_bytes} bytes does not fit {}", m.spec()),
            ));
        }
    }
    let payload_offset = u64::from(payload_sectors) * SECTOR;
    if payload_offset < HEADER_LEN as u64 {
        return Err(LuksError::Unsupported {
            device,
            what: format!(
                "payload offset {payload_sectors} sectors lies inside the header (a detached-header volume?)"
            ),
        });
    }
    if payload_offset > dev.len() {
        return Err(corrupt(
            104,
            format!(
                "payload offset {payload_offset} is past the end of the device ({} bytes)",
                dev.len()
            ),
        ));
    }
    let payload_len = (dev.len() - payload_offset) / SECTOR * SECTOR;
    let hash = Hash::parse(&hash_spec);

    let digest_check = match &hash {
        Ok(hh) => check_pbkdf2(mk_iter, "master key digest", opts).map(|()| Check {
            hash: *hh,
            iterations: mk_iter,
            salt: mk_salt,
            digest: mk_digest,
        }),
        Err(e) => Err(SlotProblem {
            kind: Problem::Unsupported,
            what: e.clone(),
            limit: String::new(),
        }),
    };

    let mut slots = Vec::new();
    for i in 0..8u32 {
        let at = 208 + 48 * i as usize;
        let active = be32(&h, at);
        match active {
            INACTIVE => continue,
            ACTIVE => {}
            other => {
                return Err(corrupt(
                    at as u64,
                    format!("key slot {i} has state {other:#010x} (neither active nor disabled)"),
                ))
            }
        }
        let iterations = be32(&h, at + 4);
        let salt = h[at + 8..at + 40].to_vec();
        let km_sectors = be32(&h, at + 40);
        let stripes = be32(&h, at + 44);
        let kdf_text = format!("pbkdf2-{hash_spec}, {iterations} iterations");
        let plan = (|| -> Result<SlotPlan, SlotProblem> {
            let bad = |what: String| SlotProblem {
                kind: Problem::Corrupt,
                what,
                limit: String::new(),
            };
            let hh = hash.clone().map_err(|what| SlotProblem {
                kind: Problem::Unsupported,
                what,
                limit: String::new(),
            })?;
            let m = mode.clone().map_err(|what| SlotProblem {
                kind: Problem::Unsupported,
                what,
                limit: String::new(),
            })?;
            if stripes != STRIPES {
                return Err(bad(format!(
                    "slot {i}: {stripes} AF stripes (LUKS1 slots have {STRIPES})"
                )));
            }
            check_pbkdf2(iterations, &format!("slot {i}"), opts)?;
            let area_len = af_sectors_bytes(key_len, STRIPES as usize)
                .ok_or_else(|| bad(format!("slot {i}: key material size overflows")))?;
            let area_offset = u64::from(km_sectors) * SECTOR;
            let end = area_offset + area_len as u64;
            if area_offset < HEADER_LEN as u64 || end > payload_offset || end > dev.len() {
                return Err(bad(format!(
                    "slot {i}: key material at {area_offset}..{end} is not between the header and the payload ({payload_offset}) inside the device ({} bytes)",
                    dev.len()
                )));
            }
            let check = digest_check.clone()?;
            Ok(SlotPlan {
                kdf: Kdf::Pbkdf2 {
                    hash: hh,
                    iterations,
                    salt,
                },
                area_offset,
                area_len,
                area_mode: m,
                area_key_len: key_len,
                af_hash: hh,
                stripes: STRIPES as usize,
                key_len,
                check,
            })
        })();
        slots.push(Slot {
            id: i,
            kdf_text,
            plan,
        });
    }
    let cipher_text = if cipher_mode.is_empty() {
        cipher_name
    } else {
        format!("{cipher_name}-{cipher_mode}")
    };
    Ok(Volume {
        version: 1,
        uuid,
        label: None,
        header: "primary".into(),
        cipher_text,
        mode,
        key_len,
        payload_offset,
        payload_len,
        sector_size: 512,
        iv_tweak: 0,
        slots,
        tokens: Vec::new(),
    })
}
