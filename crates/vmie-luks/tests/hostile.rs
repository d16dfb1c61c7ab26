//! Hostile headers: real volumes made by cryptsetup, then damaged. Every
//! case must end in a clear error (or a successful open), never a panic,
//! never an allocation or a KDF run the header alone asks for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vmie_disk::{Device, MemDevice};
use vmie_luks::{inspect, open, Key, LuksError, Options};

const PASS: &[u8] = b"hostile test passphrase";

/// A small volume made by cryptsetup, as bytes.
fn make(ty: &str) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("v.img");
    std::fs::write(&img, vec![0u8; 3 << 20]).unwrap();
    let pw = d.path().join("pw");
    std::fs::write(&pw, PASS).unwrap();
    let mut c = Command::new("cryptsetup");
    c.args(["luksFormat", "--batch-mode", "--type", ty])
        .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .args(["--offset", "4096", "--key-file"])
        .arg(&pw);
    if ty == "luks2" {
        c.args([
            "--luks2-keyslots-size",
            "1M",
            "--luks2-metadata-size",
            "16k",
        ]);
    }
    let out = c.arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&img).unwrap()
}

fn mem(b: Vec<u8>) -> Arc<dyn Device> {
    Arc::new(MemDevice::new("hostile.img", b))
}

fn open_pass(b: Vec<u8>) -> Result<vmie_luks::LuksDevice, LuksError> {
    open(mem(b), &Key::Passphrase(PASS.to_vec()), &Options::default())
}

fn be32_set(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn hdr_size(b: &[u8]) -> usize {
    u64::from_be_bytes(b[8..16].try_into().unwrap()) as usize
}

/// Re-seal a LUKS2 header copy at `off` after its bytes changed.
fn reseal(b: &mut [u8], off: usize) {
    let size = hdr_size(&b[off..]);
    reseal_as(b, off, size);
}

/// Re-seal `size` bytes at `off` whatever the header says its size is.
fn reseal_as(b: &mut [u8], off: usize, size: usize) {
    let mut h = b[off..off + size].to_vec();
    h[448..512].fill(0);
    let sum = Sha256::digest(&h);
    b[off + 448..off + 512].fill(0);
    b[off + 448..off + 480].copy_from_slice(&sum);
}

/// Rewrite the JSON of both LUKS2 header copies through `f`, re-sealed.
fn with_json(b: &[u8], f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut b = b.to_vec();
    let size = hdr_size(&b);
    for off in [0, size] {
        let area = &b[off + 4096..off + size];
        let end = area.iter().position(|&c| c == 0).unwrap();
        let mut v: Value = serde_json::from_slice(&area[..end]).unwrap();
        f(&mut v);
        let text = serde_json::to_vec(&v).unwrap();
        assert!(text.len() < size - 4096);
        b[off + 4096..off + size].fill(0);
        b[off + 4096..off + 4096 + text.len()].copy_from_slice(&text);
        reseal(&mut b, off);
    }
    b
}

fn err_of(b: Vec<u8>) -> LuksError {
    let e = open_pass(b).unwrap_err();
    assert!(e.is_refusal(), "{e}");
    e
}

#[test]
fn the_unmodified_volumes_open() {
    for ty in ["luks1", "luks2"] {
        let l = open_pass(make(ty)).unwrap();
        assert_eq!(l.slot(), 0);
    }
}

#[test]
fn luks1_damaged_headers() {
    let good = make("luks1");
    // Truncated.
    for n in [0usize, 7, 100, 591] {
        let e = err_of(good[..n].to_vec());
        assert!(
            matches!(e, LuksError::NotLuks { .. } | LuksError::Corrupt { .. }),
            "{n}: {e}"
        );
    }
    // Truncated after the header: the key material is gone.
    let e = err_of(good[..4096].to_vec());
    assert!(
        e.to_string().contains("key material") || e.to_string().contains("payload"),
        "{e}"
    );

    let case = |at: usize, v: u32| {
        let mut b = good.clone();
        be32_set(&mut b, at, v);
        err_of(b)
    };
    // Slot 0: key material offset past the end, stripes 0 and huge.
    let e = case(208 + 40, 0xFFFF_FFF0);
    assert!(e.to_string().contains("key material"), "{e}");
    for s in [0u32, 3999, u32::MAX] {
        let e = case(208 + 44, s);
        assert!(e.to_string().contains("stripes"), "{e}");
    }
    // Key bytes, payload offset.
    for k in [0u32, 65, u32::MAX] {
        let e = case(108, k);
        assert!(e.to_string().contains("key size"), "{e}");
    }
    let e = case(104, u32::MAX);
    assert!(e.to_string().contains("past the end"), "{e}");
    // Iteration counts: slot and master-key digest.
    let t = Instant::now();
    let e = case(208 + 4, u32::MAX);
    assert!(matches!(e, LuksError::Limit { .. }), "{e}");
    let e = case(164, u32::MAX);
    assert!(matches!(e, LuksError::Limit { .. }), "{e}");
    assert!(t.elapsed().as_secs() < 5, "a capped KDF ran");
    // Slot state neither active nor disabled.
    let e = case(208, 0x1234_5678);
    assert!(e.to_string().contains("slot 0"), "{e}");
    // Other ciphers are named.
    let mut b = good.clone();
    b[8..40].fill(0);
    b[8..15].copy_from_slice(b"twofish");
    let info = inspect(mem(b.clone()).as_ref(), &Options::default()).unwrap();
    assert!(info.cipher_unsupported.unwrap().contains("twofish"));
    let e = err_of(b);
    assert!(
        matches!(e, LuksError::Unsupported { .. }) && e.to_string().contains("twofish"),
        "{e}"
    );
    // Hash unknown.
    let mut b = good.clone();
    b[72..104].fill(0);
    b[72..81].copy_from_slice(b"ripemd160");
    let e = err_of(b);
    assert!(e.to_string().contains("ripemd160"), "{e}");
    // Wrong passphrase.
    let e = open(
        mem(good),
        &Key::Passphrase(b"nope".to_vec()),
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no key slot of LUKS volume hostile.img opens with the given key"),
        "{e}"
    );
}

#[test]
fn luks2_kdf_costs_are_capped_before_running() {
    let good = make("luks2");
    let kdf = |f: &dyn Fn(&mut Value)| with_json(&good, |j| f(&mut j["keyslots"]["0"]["kdf"]));
    let t = Instant::now();
    // Argon2 asking for 4 TiB.
    let b = kdf(&|k| {
        *k = json!({"type": "argon2id", "time": 4, "memory": 4u64 << 30, "cpus": 1,
                    "salt": k["salt"].clone()})
    });
    let e = err_of(b);
    assert!(
        matches!(e, LuksError::Limit { .. }) && e.to_string().contains("memory"),
        "{e}"
    );
    // Just above the default cap (1 GiB).
    let b = kdf(&|k| {
        *k = json!({"type": "argon2i", "time": 4, "memory": (1u64 << 20) + 1, "cpus": 1,
                    "salt": k["salt"].clone()})
    });
    assert!(matches!(err_of(b), LuksError::Limit { .. }));
    // Argon2 time and lanes.
    let b = kdf(&|k| {
        *k = json!({"type": "argon2id", "time": u32::MAX, "memory": 1024, "cpus": 1,
                    "salt": k["salt"].clone()})
    });
    assert!(matches!(err_of(b), LuksError::Limit { .. }));
    let b = kdf(&|k| {
        *k = json!({"type": "argon2id", "time": 1, "memory": 1024, "cpus": 1 << 20,
                    "salt": k["salt"].clone()})
    });
    assert!(matches!(err_of(b), LuksError::Limit { .. }));
    // PBKDF2 iterations.
    for it in [u64::from(u32::MAX), 1 << 40] {
        let b = kdf(&|k| k["iterations"] = json!(it));
        let e = err_of(b);
        assert!(
            matches!(e, LuksError::Limit { .. }) && e.to_string().contains("iteration"),
            "{e}"
        );
    }
    let b = with_json(&good, |j| j["digests"]["0"]["iterations"] = json!(u32::MAX));
    assert!(matches!(err_of(b), LuksError::Limit { .. }));
    assert!(t.elapsed().as_secs() < 5, "a capped KDF ran");
    // A lower cap of our own.
    let o = Options {
        max_pbkdf2_iterations: 999,
        ..Options::default()
    };
    let e = open(mem(good), &Key::Passphrase(PASS.to_vec()), &o).unwrap_err();
    assert!(matches!(e, LuksError::Limit { .. }), "{e}");
}

#[test]
fn luks2_damaged_json() {
    let good = make("luks2");
    let slot = |f: &dyn Fn(&mut Value)| with_json(&good, |j| f(&mut j["keyslots"]["0"]));
    for s in [
        json!(0),
        json!(1),
        json!(u64::MAX),
        json!("4000"),
        json!(-1),
    ] {
        let e = err_of(slot(&|k| k["af"]["stripes"] = s.clone()));
        assert!(e.to_string().contains("stripes"), "{e}");
    }
    for ks in [json!(0), json!(1u64 << 40), json!(65), json!("64")] {
        let e = err_of(slot(&|k| k["key_size"] = ks.clone()));
        assert!(e.to_string().contains("key"), "{e}");
    }
    for (field, v) in [
        ("offset", json!("999999999999")),
        ("offset", json!("18446744073709551615")),
        ("offset", json!("99999999999999999999999")),
        ("size", json!("18446744073709551615")),
        ("offset", json!("x")),
        ("size", json!(12)),
    ] {
        let e = err_of(slot(&|k| k["area"][field] = v.clone()));
        assert!(e.to_string().contains("key slot 0"), "{field}={v}: {e}");
    }
    let e = err_of(slot(&|k| k["kdf"]["salt"] = json!("!!not base64!!")));
    assert!(e.to_string().contains("base64"), "{e}");
    let e = err_of(slot(&|k| {
        k["area"]["encryption"] = json!("serpent-xts-plain64")
    }));
    assert!(e.to_string().contains("serpent"), "{e}");

    let seg = |f: &dyn Fn(&mut Value)| with_json(&good, |j| f(&mut j["segments"]["0"]));
    let e = err_of(seg(&|s| s["encryption"] = json!("twofish-xts-plain64")));
    assert!(
        matches!(e, LuksError::Unsupported { .. }) && e.to_string().contains("twofish"),
        "{e}"
    );
    let e = err_of(seg(&|s| {
        s["integrity"] = json!({"type": "hmac(sha256)", "journal_encryption": "none",
                                "journal_integrity": "none"})
    }));
    assert!(e.to_string().contains("integrity"), "{e}");
    let e = err_of(seg(&|s| s["type"] = json!("linear")));
    assert!(e.to_string().contains("linear"), "{e}");
    let e = err_of(seg(&|s| s["sector_size"] = json!(777)));
    assert!(e.to_string().contains("sector size"), "{e}");
    let e = err_of(seg(&|s| s["size"] = json!("999999999995904")));
    assert!(e.to_string().contains("past the end"), "{e}");
    let e = err_of(seg(&|s| s["offset"] = json!("0")));
    assert!(e.to_string().contains("overlaps"), "{e}");
    let e = err_of(with_json(&good, |j| {
        j["config"]["requirements"] = json!({"mandatory": ["online-reencrypt-v2"]})
    }));
    assert!(e.to_string().contains("online-reencrypt-v2"), "{e}");
    let e = err_of(with_json(&good, |j| {
        j["segments"]["1"] = j["segments"]["0"].clone();
    }));
    assert!(e.to_string().contains("2 data segments"), "{e}");
    // Unbound slot: its digest is not the segment's.
    let e = err_of(with_json(&good, |j| {
        j["digests"]["0"]["segments"] = json!([])
    }));
    assert!(e.to_string().contains("unbound"), "{e}");
    // Tokens are named when no slot opens.
    let b = with_json(&good, |j| {
        j["tokens"]["0"] = json!({"type": "systemd-tpm2", "keyslots": ["0"]})
    });
    let e = open(
        mem(b),
        &Key::Passphrase(b"nope".to_vec()),
        &Options::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("systemd-tpm2"), "{e}");

    // JSON that does not parse, with a valid checksum, in both copies.
    let mut b = good.clone();
    let size = hdr_size(&b);
    for off in [0, size] {
        b[off + 4096..off + 4106].copy_from_slice(b"{{{{{{{{{{");
        reseal(&mut b, off);
    }
    let e = err_of(b);
    assert!(e.to_string().contains("JSON"), "{e}");
    // Deep nesting is refused by the parser's depth limit.
    let mut b = good.clone();
    for off in [0, size] {
        b[off + 4096..off + size].fill(0);
        b[off + 4096..off + 4096 + 5000].fill(b'[');
        reseal(&mut b, off);
    }
    assert!(matches!(err_of(b), LuksError::Corrupt { .. }));
    // A huge header size (1 GiB of JSON asked for) in both copies.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&(1u64 << 30).to_be_bytes());
    b[size + 8..size + 16].copy_from_slice(&(1u64 << 30).to_be_bytes());
    let e = err_of(b);
    assert!(e.to_string().contains("header size"), "{e}");
    // A JSON cap below the header size.
    let o = Options {
        max_luks2_header: 8192,
        ..Options::default()
    };
    assert!(inspect(mem(good.clone()).as_ref(), &o).is_err());
}

#[test]
fn luks2_header_copies() {
    let good = make("luks2");
    let size = hdr_size(&good);
    // Primary damaged: the secondary is used.
    let mut b = good.clone();
    b[4096 + 3] ^= 0x55;
    let l = open_pass(b.clone()).unwrap();
    assert_eq!(l.info().header, format!("secondary at {size}"));
    // Primary gone entirely (magic too): found at the standard offset.
    b[..4096].fill(0);
    let l = open_pass(b).unwrap();
    assert_eq!(l.info().header, format!("secondary at {size}"));
    // Both valid: the higher seqid wins.
    let mut b = good.clone();
    b[size + 24..size + 29].copy_from_slice(b"newer");
    let seq = u64::from_be_bytes(b[16..24].try_into().unwrap());
    b[size + 16..size + 24].copy_from_slice(&(seq + 1).to_be_bytes());
    reseal(&mut b, size);
    let info = inspect(mem(b.clone()).as_ref(), &Options::default()).unwrap();
    assert_eq!(info.label.as_deref(), Some("newer"));
    // Both damaged.
    b[4096 + 3] ^= 0x55;
    b[size + 4096 + 3] ^= 0x55;
    let e = err_of(b);
    assert!(e.to_string().contains("checksum"), "{e}");
    // Truncated inside the JSON area.
    let e = err_of(good[..6000].to_vec());
    assert!(matches!(e, LuksError::Corrupt { .. }), "{e}");
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn exercise(b: Vec<u8>) -> bool {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let o = Options::default();
        let _ = inspect(mem(b.clone()).as_ref(), &o);
        if let Ok(l) = open(mem(b), &Key::Passphrase(PASS.to_vec()), &o) {
            let mut s = [0u8; 4096];
            let n = (l.len() as usize).min(s.len());
            let _ = l.read_at(0, &mut s[..n]);
            let _ = l.write_at(0, &s[..n]);
        }
    }));
    r.is_ok()
}

#[test]
fn random_byte_damage_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for ty in ["luks1", "luks2"] {
        let good = make(ty);
        let size = hdr_size(&good);
        let span = if ty == "luks1" { 1024 } else { 4096 };
        for i in 0..300 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(span);
                b[at] = rng.next() as u8;
            }
            if ty == "luks2" {
                // Keep the checksum valid half the time so the JSON is read.
                if i % 2 == 0 {
                    reseal_as(&mut b, 0, size);
                }
            }
            assert!(exercise(b), "{ty} case {i} panicked");
        }
    }
}

#[test]
fn random_json_damage_never_panics() {
    let good = make("luks2");
    let base: Value = {
        let size = hdr_size(&good);
        let area = &good[4096..size];
        let end = area.iter().position(|&c| c == 0).unwrap();
        serde_json::from_slice(&area[..end]).unwrap()
    };
    // Every path to a value.
    fn paths(v: &Value, p: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(p.clone());
        if let Value::Object(m) = v {
            for (k, c) in m {
                p.push(k.clone());
                paths(c, p, out);
                p.pop();
            }
        }
    }
    let mut all = Vec::new();
    paths(&base, &mut Vec::new(), &mut all);
    let values = [
        json!(0),
        json!(1),
        json!(-1),
        json!(4000),
        json!(4096),
        json!(u32::MAX),
        json!(u64::MAX),
        json!(1e308),
        json!(""),
        json!("0"),
        json!("dynamic"),
        json!("18446744073709551615"),
        json!("99999999999999999999999"),
        json!(null),
        json!([]),
        json!(["0", "7", "31", "32"]),
        json!({}),
        json!("aes-xts-plain64"),
        json!("argon2id"),
    ];
    let mut rng = Rng(42);
    for i in 0..400 {
        let p = &all[rng.below(all.len())];
        let v = values[rng.below(values.len())].clone();
        let b = with_json(&good, |j| {
            let mut cur = &mut *j;
            for k in p {
                cur = &mut cur[k.as_str()];
            }
            *cur = v.clone();
        });
        assert!(exercise(b), "case {i}: {p:?} = {v} panicked");
    }
}
