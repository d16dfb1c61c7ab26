//! A Linux guest whose root is inside LUKS2 (the header made by cryptsetup,
//! the payload encrypted by an independent AES-XTS: Python's
//! `cryptography`, i.e. OpenSSL, through vmie-luks's tests/sectors.py),
//! inspected and fixed end to end with `--key`: without a key the volume is
//! reported and left alone; with the key the guest is found, the dry run
//! plans what the run does, the decrypted root is clean by e2fsck and holds
//! the changes, a second run changes nothing and undo restores every byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "common/cli.rs"]
mod common;

use common::{ok, run, s, sha256};

const PASS: &str = "correct horse battery staple";

fn tool(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `sectors.py` (vmie-luks's independent cipher) on `image` at `offset`.
fn sectors(op: &str, vk: &Path, image: &Path, offset: u64, plain: &Path, len: Option<u64>) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(root().join("crates/vmie-luks/tests/sectors.py"))
        .args([
            op,
            "xts",
            s(vk),
            s(image),
            &offset.to_string(),
            "4096",
            s(plain),
        ]);
    if let Some(l) = len {
        c.env("LEN", l.to_string());
    }
    tool(&mut c);
}

struct Guest {
    disk: PathBuf,
    vk: PathBuf,
    /// The payload's byte offset on the disk, and its length.
    payload: (u64, u64),
}

/// An MBR disk whose partition 1 is a LUKS2 volume holding the demo
/// guest's root filesystem (ext4, /dev/sda1 in its fstab).
fn luks_guest(dir: &Path) -> Guest {
    let plain = dir.join("root.ext4");
    tool(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "rootfs"])
            .args(["-U", "de0a0001-0000-4000-8000-0000000000aa", "-d"])
            .arg(root().join("fixtures/trees/demo"))
            .arg(&plain)
            .arg("64M"),
    );
    let vk = dir.join("volume.key");
    std::fs::write(
        &vk,
        (0..64u8)
            .map(|i| i.wrapping_mul(37) ^ 0x5a)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let pass = dir.join("pass");
    std::fs::write(&pass, PASS).unwrap();
    let part = dir.join("part.luks");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    tool(
        Command::new("cryptsetup")
            .args(["luksFormat", "--batch-mode", "--type", "luks2"])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .args([
                "--sector-size",
                "4096",
                "--uuid",
                "5eed1234-0000-4000-8000-00000000c0de",
            ])
            .arg("--volume-key-file")
            .arg(&vk)
            .arg("--key-file")
            .arg(&pass)
            .arg(&part),
    );
    let dump =
        String::from_utf8(tool(Command::new("cryptsetup").arg("luksDump").arg(&part)).stdout)
            .unwrap();
    // "Data segments:" ... "offset: 16777216 [bytes]"
    let seg = dump.split("Data segments:").nth(1).unwrap();
    let offset: u64 = seg
        .lines()
        .find_map(|l| l.trim().strip_prefix("offset: "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(offset + (64 << 20), 80 << 20, "{dump}");
    sectors("enc", &vk, &part, offset, &plain, None);
    let disk = dir.join("luks.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(82 << 20)
        .unwrap();
    let mut sf = Command::new("sfdisk")
        .args(["-q", "--label", "dos"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(
        sf.stdin.take().unwrap(),
        "start=2048, size={}, type=83",
        (80 << 20) / 512
    )
    .unwrap();
    assert!(sf.wait().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &std::fs::read(&part).unwrap(), 1 << 20).unwrap();
    Guest {
        disk,
        vk,
        payload: ((1 << 20) + offset, 64 << 20),
    }
}

/// The decrypted root of the guest as a file, by the independent cipher.
fn decrypted(g: &Guest, dir: &Path) -> PathBuf {
    let out = dir.join("decrypted.ext4");
    sectors("dec", &g.vk, &g.disk, g.payload.0, &out, Some(g.payload.1));
    out
}

fn debugfs_cat(fs: &Path, path: &str) -> String {
    let out = tool(
        Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(fs),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_guest_inside_luks_is_fixed_end_to_end_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let g = luks_guest(dir.path());
    let img = s(&g.disk);
    let original = sha256(&g.disk);

    // No key: reported, never guessed; no guest found, nothing written.
    let doc: Value = serde_json::from_str(&ok(&["inspect", "--format", "json", img])).unwrap();
    let enc = &doc["encrypted_volumes"][0];
    assert_eq!(enc["opened"], false, "{doc}");
    assert!(
        enc["why"]
            .as_str()
            .unwrap()
            .contains("--key /dev/sda1:key:"),
        "{enc}"
    );
    assert_eq!(doc["operating_systems"].as_array().unwrap().len(), 0);
    // A wrong key says so.
    let doc: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--format",
        "json",
        "--key",
        "all:key:wrong",
        img,
    ]))
    .unwrap();
    assert!(
        doc["encrypted_volumes"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no key slot"),
        "{doc}"
    );

    // With the key (by device name, by UUID, from a file): the guest.
    let pass_file = dir.path().join("pass");
    let by_file = format!(
        "5eed1234-0000-4000-8000-00000000c0de:file:{}",
        s(&pass_file)
    );
    for key in [&format!("/dev/sda1:key:{PASS}"), &by_file] {
        let doc: Value =
            serde_json::from_str(&ok(&["inspect", "--format", "json", "--key", key, img])).unwrap();
        let enc = &doc["encrypted_volumes"][0];
        assert_eq!(enc["opened"], true, "{doc}");
        assert_eq!(enc["mapper"], "/dev/mapper/cryptsda1");
        assert_eq!(enc["filesystem"]["kind"], "ext4");
        let os = &doc["operating_systems"][0];
        assert_eq!(os["distro"], "debian", "{doc}");
        assert!(
            os["root"].as_str().unwrap().ends_with("(LUKS2 payload)"),
            "{os}"
        );
    }
    let key = format!("/dev/sda1:key:{PASS}");
    // virt-inspector's XML names the decrypted root as libguestfs does.
    let xml = ok(&["inspect", "--format", "xml", "--key", &key, img]);
    assert!(xml.contains("<root>/dev/mapper/cryptsda1</root>"), "{xml}");

    // The plan, then the run: the same changes; the image changed only
    // inside the partition.
    let dry: Value =
        serde_json::from_str(&ok(&["--dry-run", "--format", "json", "--key", &key, img])).unwrap();
    assert_eq!(sha256(&g.disk), original, "a dry run wrote");
    let planned = dry["changes"].as_array().unwrap();
    assert!(planned.iter().any(|c| c["path"] == "/etc/fstab"), "{dry}");
    // --check-fs cannot read ciphertext: refused, named, nothing written.
    let out = run(&["--check-fs", "--key", &key, img]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LUKS"),
        "{out:?}"
    );
    assert_eq!(sha256(&g.disk), original);
    let real: Value = serde_json::from_str(&ok(&["--format", "json", "--key", &key, img])).unwrap();
    assert_eq!(real["applied"], true, "{real}");
    assert_eq!(real["changes"], dry["changes"]);

    // The independent cipher decrypts a root that e2fsck finds clean and
    // that holds the new fstab and its backup.
    let fs = decrypted(&g, dir.path());
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&fs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn on the decrypted root: {out:?}"
    );
    let fstab = debugfs_cat(&fs, "/etc/fstab");
    assert_eq!(fstab, ok(&["cat", "--key", &key, img, "/etc/fstab"]));
    assert!(!fstab.contains("/dev/sda1 "), "{fstab}");
    assert!(debugfs_cat(&fs, "/etc/fstab.vmie.bak").contains("/dev/sda1"));

    // Nothing left to do; undo restores every byte.
    let again: Value =
        serde_json::from_str(&ok(&["--format", "json", "--key", &key, img])).unwrap();
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    ok(&["undo", img]);
    assert_eq!(sha256(&g.disk), original);
}
