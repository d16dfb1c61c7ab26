//! vmie-luks against the real tool and an independent implementation:
//! volumes made by `cryptsetup luksFormat`/`luksAddKey` (on plain files,
//! no device-mapper), volume keys checked against `--volume-key-file` and
//! `cryptsetup luksDump --dump-volume-key`, payloads encrypted and checked
//! by Python's `cryptography` (tests/sectors.py), an ext4 made by
//! `mkfs.ext4 -d` read through the payload, and a 4096-byte-sector payload
//! written by `cryptsetup reencrypt --encrypt` itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use vmie_disk::{Device, FileDevice};
use vmie_guestfs::GuestFsExt;
use vmie_luks::{inspect, open, Key, LuksError, Options};

const PASS: &[u8] = b"correct horse battery staple";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cryptsetup() -> Command {
    Command::new("cryptsetup")
}

/// Fixed test volume key (64 bytes).
fn vk_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
        .collect()
}

struct Vol {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: PathBuf,
    vk: Vec<u8>,
    vk_file: PathBuf,
    pass_file: PathBuf,
}

/// `cryptsetup luksFormat` a 48 MiB file with `extra` options, the volume
/// key fixed, passphrase PASS (given as a key file: its exact bytes).
fn format(extra: &[&str], key_len: usize) -> Vol {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let image = dir.join("luks.img");
    std::fs::write(&image, vec![0u8; 48 << 20]).unwrap();
    let vk = vk_bytes(key_len);
    let vk_file = dir.join("vk");
    std::fs::write(&vk_file, &vk).unwrap();
    let pass_file = dir.join("pass");
    std::fs::write(&pass_file, PASS).unwrap();
    let mut c = cryptsetup();
    c.args(["luksFormat", "--batch-mode"])
        .args(extra)
        .arg("--key-size")
        .arg((key_len * 8).to_string())
        .arg("--volume-key-file")
        .arg(&vk_file)
        .arg("--key-file")
        .arg(&pass_file)
        .arg(&image);
    run(&mut c);
    Vol {
        _dir: d,
        dir,
        image,
        vk,
        vk_file,
        pass_file,
    }
}

const FAST: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn dev(p: &Path) -> Arc<dyn Device> {
    Arc::new(FileDevice::open_rw(p).unwrap())
}

/// `cryptsetup luksDump --dump-volume-key` with the passphrase.
fn dumped_key(v: &Vol) -> Vec<u8> {
    let out = run(cryptsetup()
        .args([
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
        ])
        .arg(&v.pass_file)
        .arg(&v.image));
    let mut hex = String::new();
    let mut on = false;
    for line in out.lines() {
        if let Some(rest) = line.split_once("MK dump:").map(|x| x.1) {
            on = true;
            hex.push_str(rest);
        } else if on && line.starts_with(|c: char| c.is_whitespace()) {
            hex.push_str(line);
        } else if on {
            break;
        }
    }
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The payload offset as cryptsetup reports it (bytes).
fn payload_offset(v: &Vol) -> u64 {
    let out = run(cryptsetup().arg("luksDump").arg(&v.image));
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("Payload offset:") {
            return s.trim().parse::<u64>().unwrap() * 512;
        }
        if let Some(s) = line.trim().strip_prefix("offset:") {
            return s.split_whitespace().next().unwrap().parse().unwrap();
        }
    }
    panic!("no payload offset in {out}");
}

/// A 16 MiB ext4 made by mkfs.ext4 from a directory with one file.
fn ext4_plain(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello.txt"), b"hello from inside LUKS\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let img = dir.join("plain.img");
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("16M"));
    std::fs::read(&img).unwrap()
}

fn python(args: &[&str], env_len: Option<u64>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sectors.py");
    // Debian's interpreter, where python3-cryptography installs.
    let mut c = Command::new("/usr/bin/python3");
    c.arg(script).args(args).stdin(Stdio::null());
    if let Some(n) = env_len {
        c.env("LEN", n.to_string());
    }
    run(&mut c);
}

/// Encrypt `plain` into the volume's payload with Python, shrinking the
/// file to exactly the payload.
fn encrypt_payload(v: &Vol, mode: &str, ss: u32, plain: &[u8]) -> u64 {
    let off = payload_offset(v);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&v.image)
        .unwrap();
    f.set_len(off + plain.len() as u64).unwrap();
    drop(f);
    let p = v.dir.join("plain.bin");
    std::fs::write(&p, plain).unwrap();
    python(
        &[
            "enc",
            mode,
            v.vk_file.to_str().unwrap(),
            v.image.to_str().unwrap(),
            &off.to_string(),
            &ss.to_string(),
            p.to_str().unwrap(),
        ],
        None,
    );
    off
}

fn decrypt_payload(v: &Vol, mode: &str, ss: u32, off: u64, len: u64) -> Vec<u8> {
    let p = v.dir.join("decrypted.bin");
    python(
        &[
            "dec",
            mode,
            v.vk_file.to_str().unwrap(),
            v.image.to_str().unwrap(),
            &off.to_string(),
            &ss.to_string(),
            p.to_str().unwrap(),
        ],
        Some(len),
    );
    std::fs::read(&p).unwrap()
}

/// The whole data path on one volume: unlock, key check, read back, ext4,
/// writes checked by Python.
fn data_path(v: &Vol, mode: &str, ss: u32, version: u16) {
    let plain = ext4_plain(&v.dir);
    let off = encrypt_payload(v, mode, ss, &plain);
    let base = dev(&v.image);
    let info = inspect(base.as_ref(), &Options::default()).unwrap();
    assert_eq!(info.version, version);
    assert_eq!(info.payload_offset, off);
    assert_eq!(info.sector_size, ss);
    let t = Instant::now();
    let l = open(
        base.clone(),
        &Key::Passphrase(PASS.to_vec()),
        &Options::default(),
    )
    .unwrap();
    let unlock = t.elapsed();
    assert_eq!(l.volume_key(), &v.vk[..]);
    assert_eq!(l.volume_key(), &dumped_key(v)[..]);
    assert_eq!(l.len(), plain.len() as u64);

    let mut got = vec![0u8; plain.len()];
    let t = Instant::now();
    l.read_at(0, &mut got).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(got == plain, "payload differs from plain.img");
    println!(
        "LUKS{version} {mode} {ss}-byte sectors ({}): unlock {:.3} s; read 16 MiB at {:.1} MiB/s",
        info.slots[0].kdf,
        unlock.as_secs_f64(),
        16.0 / secs
    );
    // Unaligned reads.
    for (o, n) in [(1u64, 10usize), (511, 2), (4095, 4099), (12345, 70000)] {
        let mut b = vec![0u8; n];
        l.read_at(o, &mut b).unwrap();
        assert_eq!(&b[..], &plain[o as usize..o as usize + n]);
    }

    // ext4 through the payload.
    let ldev: Arc<dyn Device> = Arc::new(l);
    let fs = vmie_ext4::Ext4Fs::open(ldev.clone(), "luks payload").unwrap();
    assert_eq!(
        fs.read("/etc/hello.txt").unwrap(),
        b"hello from inside LUKS\n"
    );
    let big = fs.read("/big.bin").unwrap();
    assert_eq!(big.len(), 3_000_000);
    assert!(big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(fs);

    // Writes, aligned and not, then decrypted by Python.
    let mut expect = plain.clone();
    let writes: [(u64, usize); 6] = [
        (0, 512),
        (700, 100),
        (4090, 20),
        (8192, 4096 * 3),
        (100_001, 9_999),
        (plain.len() as u64 - 3, 3),
    ];
    for (i, (o, n)) in writes.iter().enumerate() {
        let b: Vec<u8> = (0..*n).map(|k| (k as u8) ^ (i as u8 * 41 + 1)).collect();
        ldev.write_at(*o, &b).unwrap();
        expect[*o as usize..*o as usize + n].copy_from_slice(&b);
    }
    let mut back = vec![0u8; expect.len()];
    ldev.read_at(0, &mut back).unwrap();
    assert!(back == expect, "read-back after writes differs");
    let py = decrypt_payload(v, mode, ss, off, expect.len() as u64);
    assert!(py == expect, "Python's decryption of our writes differs");
    // Out of range is an error, not a panic.
    assert!(ldev
        .read_at(expect.len() as u64 - 1, &mut [0u8; 2])
        .is_err());
    assert!(ldev.write_at(u64::MAX, &[0u8; 2]).is_err());
}

#[test]
fn luks1_xts_sha256_ext4_payload() {
    let v = format(&[&["--type", "luks1"], FAST].concat(), 64);
    data_path(&v, "xts", 512, 1);
}

#[test]
fn luks1_xts_sha1_aes128() {
    let v = format(&[&["--type", "luks1", "--hash", "sha1"], FAST].concat(), 32);
    data_path(&v, "xts", 512, 1);
}

#[test]
fn luks1_cbc_essiv_sha512() {
    let v = format(
        &[
            &[
                "--type",
                "luks1",
                "--hash",
                "sha512",
                "--cipher",
                "aes-cbc-essiv:sha256",
            ],
            FAST,
        ]
        .concat(),
        32,
    );
    data_path(&v, "cbc-essiv", 512, 1);
}

#[test]
fn luks2_pbkdf2_ext4_payload() {
    // cryptsetup 2.6 picks 4096-byte sectors for a file by itself.
    let v = format(
        &[&["--type", "luks2", "--sector-size", "512"], FAST].concat(),
        64,
    );
    data_path(&v, "xts", 512, 2);
}

#[test]
fn luks2_argon2id_4096_byte_sectors() {
    let v = format(
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "32768",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-parallel",
            "1",
            "--sector-size",
            "4096",
        ],
        64,
    );
    let info = inspect(dev(&v.image).as_ref(), &Options::default()).unwrap();
    assert!(
        info.slots[0].kdf.starts_with("argon2id"),
        "{:?}",
        info.slots
    );
    data_path(&v, "xts", 4096, 2);
}

#[test]
fn luks2_argon2i() {
    let v = format(
        &[
            "--type",
            "luks2",
            "--pbkdf",
            "argon2i",
            "--pbkdf-memory",
            "8192",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-parallel",
            "2",
        ],
        64,
    );
    let l = open(
        dev(&v.image),
        &Key::Passphrase(PASS.to_vec()),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(l.volume_key(), &v.vk[..]);
}

/// cryptsetup itself encrypts a payload of 4096-byte sectors (offline
/// `reencrypt --encrypt`, in userspace): our reads must give the original
/// bytes back, which fixes the IV counting (512-byte units) by the tool.
#[test]
fn luks2_4096_payload_written_by_cryptsetup() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    let plain: Vec<u8> = (0..(16u32 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let mut file = plain.clone();
    file.resize(48 << 20, 0);
    std::fs::write(&img, &file).unwrap();
    let vkf = d.path().join("vk");
    std::fs::write(&vkf, vk_bytes(64)).unwrap();
    let pw = d.path().join("pw");
    std::fs::write(&pw, PASS).unwrap();
    run(cryptsetup()
        .args([
            "reencrypt",
            "--encrypt",
            "--type",
            "luks2",
            "--sector-size",
            "4096",
            "--reduce-device-size",
            "32M",
            "--batch-mode",
            "--force-offline-reencrypt",
        ])
        .args(FAST)
        .arg("--key-file")
        .arg(&pw)
        .arg("--volume-key-file")
        .arg(&vkf)
        .arg(&img));
    let l = open(dev(&img), &Key::File(PASS.to_vec()), &Options::default()).unwrap();
    assert_eq!(l.info().sector_size, 4096);
    let mut got = vec![0u8; plain.len()];
    l.read_at(0, &mut got).unwrap();
    assert!(
        got == plain,
        "cryptsetup's 4096-byte-sector payload reads back wrong"
    );
}

/// Several slots: the passphrase only in slot 3, a key file in slot 5.
fn slots_case(ty: &str) {
    let v = format(&[&["--type", ty, "--key-slot", "1"], FAST].concat(), 64);
    let second = v.dir.join("second");
    std::fs::write(&second, b"another passphrase").unwrap();
    let keyfile = v.dir.join("keyfile");
    let kf: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&keyfile, &kf).unwrap();
    for (slot, new) in [("3", &second), ("5", &keyfile)] {
        run(cryptsetup()
            .args(["luksAddKey", "--batch-mode", "--key-slot", slot])
            .args(FAST)
            .arg("--key-file")
            .arg(&v.pass_file)
            .arg(&v.image)
            .arg(new));
    }
    let base = dev(&v.image);
    let info = inspect(base.as_ref(), &Options::default()).unwrap();
    let ids: Vec<u32> = info.slots.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![1, 3, 5]);
    let o = Options::default();
    let l = open(
        base.clone(),
        &Key::Passphrase(b"another passphrase".to_vec()),
        &o,
    )
    .unwrap();
    assert_eq!(l.slot(), 3);
    assert_eq!(l.volume_key(), &v.vk[..]);
    let l = open(base.clone(), &Key::File(kf.clone()), &o).unwrap();
    assert_eq!(l.slot(), 5);
    let l = open(base.clone(), &Key::Passphrase(PASS.to_vec()), &o).unwrap();
    assert_eq!(l.slot(), 1);
    // A key file with one byte less is another key.
    let e = open(base.clone(), &Key::File(kf[..4095].to_vec()), &o).unwrap_err();
    assert!(matches!(e, LuksError::WrongKey { .. }), "{e}");
    let e = open(base, &Key::Passphrase(b"wrong".to_vec()), &o).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("no key slot of LUKS volume") && msg.contains("opens with the given key"),
        "{msg}"
    );
}

#[test]
fn luks1_several_slots() {
    slots_case("luks1");
}

#[test]
fn luks2_several_slots() {
    slots_case("luks2");
}

/// Over the copy-on-write overlay, as vmie-fixup stacks it: writes through
/// the payload land in the overlay only (whole sectors of ciphertext), the
/// image file is untouched, and discarding the overlay undoes them.
#[test]
fn writes_stay_in_the_overlay() {
    let v = format(
        &[&["--type", "luks2", "--sector-size", "512"], FAST].concat(),
        64,
    );
    let before = std::fs::read(&v.image).unwrap();
    let base: Arc<dyn Device> = Arc::new(FileDevice::open(&v.image).unwrap());
    let overlay = Arc::new(vmie_disk::Overlay::new(base));
    let l = open(
        overlay.clone(),
        &Key::Passphrase(PASS.to_vec()),
        &Options::default(),
    )
    .unwrap();
    let off = l.info().payload_offset;
    let mut orig = vec![0u8; 2048];
    l.read_at(1000, &mut orig).unwrap();
    l.write_at(1000, b"written through LUKS").unwrap();
    let mut back = [0u8; 20];
    l.read_at(1000, &mut back).unwrap();
    assert_eq!(&back, b"written through LUKS");
    // Unchanged bytes of the touched sectors read back as before.
    let mut after = vec![0u8; 2048];
    l.read_at(1000, &mut after).unwrap();
    assert_eq!(&after[20..], &orig[20..]);
    assert_eq!(std::fs::read(&v.image).unwrap(), before);
    let changes = overlay.changes().unwrap();
    assert!(!changes.is_empty());
    for (o, b) in &changes {
        assert!(
            *o >= off + 512 && o + b.len() as u64 <= off + 1536,
            "{o} +{}",
            b.len()
        );
    }
    overlay.discard().unwrap();
    l.read_at(1000, &mut after).unwrap();
    assert_eq!(after, orig);
}
