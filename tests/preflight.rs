//! One fixture image per preflight check: each case builds a VM with the real
//! tools (mke2fs -d, sfdisk, mkfs.xfs, cryptsetup, qemu-img, ntfscp, ...) from
//! the demo guest's tree with one thing changed, runs `vmie-fixup inspect
//! --format json` on it, and asserts that the check fires, while it does not
//! on the unchanged demo guest. A last test reads every check id out of the
//! preflight source and fails if one has no case here (or no written reason
//! why it cannot have one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use xtask::fixtures::image::{
    copy_sparse, create_sparse, ntfs_volume_flag_offsets, patch, read_at,
};

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn realdata(rel: &str) -> PathBuf {
    root().join("../shared/realdata").join(rel)
}

fn tool(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (see .ci/run for the packages)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory with a copy of the demo guest's tree in `tree/`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        tool(
            Command::new("cp")
                .arg("-a")
                .arg(root().join("fixtures/trees/demo/."))
                .arg(&tree),
        );
        Case { dir }
    }

    fn tree(&self, rel: &str) -> PathBuf {
        self.dir.path().join("tree").join(rel)
    }

    fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> &Self {
        let p = self.tree(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, data).unwrap();
        self
    }

    fn remove(&self, rel: &str) -> &Self {
        let p = self.tree(rel);
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
        self
    }

    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) -> &Self {
        let p = self.tree(rel);
        let s = std::fs::read_to_string(&p).unwrap();
        std::fs::write(p, f(s)).unwrap();
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An ext4 filesystem image of `mib` MiB made from the tree.
    fn root_fs(&self, mib: u64) -> PathBuf {
        let img = self.path(&format!("root-{mib}.ext4"));
        create_sparse(&img, mib * MIB).unwrap();
        tool(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(self.dir.path().join("tree"))
                .arg(&img),
        );
        img
    }

    /// An empty filesystem of `kind` (`mkfs.KIND`), `mib` MiB.
    fn empty_fs(&self, kind: &str, mib: u64) -> PathBuf {
        let img = self.path(&format!("{kind}-{mib}.img"));
        create_sparse(&img, mib * MIB).unwrap();
        let mut cmd = Command::new(format!("mkfs.{kind}"));
        match kind {
            "ext4" => cmd.args(["-q", "-F"]),
            "xfs" => cmd.args(["-q", "-f"]),
            _ => &mut cmd,
        };
        tool(cmd.arg(&img));
        img
    }

    /// A disk of `size` bytes with table `label` (dos or gpt) holding each
    /// (filesystem image, partition MiB, sfdisk type) in order; the first
    /// MBR partition is bootable.
    fn disk(
        &self,
        name: &str,
        size: u64,
        label: &str,
        parts: &[(Option<&Path>, u64, &str)],
    ) -> PathBuf {
        let img = self.path(name);
        create_sparse(&img, size).unwrap();
        let mut script = format!("label: {label}\n");
        let mut start = MIB;
        let mut places = Vec::new();
        for (i, (fs, mib, ty)) in parts.iter().enumerate() {
            let boot = if i == 0 && label == "dos" {
                ", bootable"
            } else {
                ""
            };
            script += &format!(
                "start={}, size={}, type={ty}{boot}\n",
                start / 512,
                mib * MIB / 512
            );
            places.push((*fs, start, mib * MIB));
            start += mib * MIB;
        }
        let mut child = Command::new("sfdisk")
            .args(["-q", "--no-reread", "--no-tell-kernel"])
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk (Debian package fdisk)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (fs, off, len) in places {
            if let Some(fs) = fs {
                copy_sparse(fs, &img, off, len).unwrap();
            }
        }
        img
    }

    /// The usual one-disk VM: the tree as ext4 root in partition 1.
    fn vm(&self) -> Vec<PathBuf> {
        let fs = self.root_fs(400);
        vec![self.disk("disk.raw", 512 * MIB, "dos", &[(Some(&fs), 401, "83")])]
    }
}

fn inspect(disks: &[PathBuf]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(["inspect", "--format", "json"])
        .args(disks)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect {disks:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fired(doc: &Value) -> Vec<(String, String)> {
    doc["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_fires(id: &str, severity: &str, disks: &[PathBuf]) {
    let doc = inspect(disks);
    let got = fired(&doc);
    assert!(
        got.iter().any(|(i, s)| i == id && s == severity),
        "{id} ({severity}) did not fire on {disks:?}: {}",
        doc["preflight"]
    );
}

/// An x86 32-bit ELF header (e_machine 3).
fn elf32() -> Vec<u8> {
    let mut h = vec![0u8; 52];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1; // little endian
    h[6] = 1;
    h[0x10] = 2; // ET_EXEC
    h[0x12] = 3; // EM_386
    h[0x14] = 1;
    h
}

/// Every Linux-guest case: id, severity, and how to change the demo tree.
#[allow(clippy::type_complexity)]
fn tree_cases() -> Vec<(&'static str, &'static str, Box<dyn Fn(&Case)>)> {
    vec![
        (
            "fstab-unreadable",
            "error",
            Box::new(|c: &Case| {
                c.remove("etc/fstab");
            }),
        ),
        (
            "root-filesystem",
            "error",
            Box::new(|c: &Case| {
                c.edit("etc/fstab", |s| {
                    s.replace("/               ext4", "/ reiserfs")
                });
            }),
        ),
        (
            "btrfs-subvolumes",
            "error",
            Box::new(|c: &Case| {
                c.edit("etc/fstab", |s| {
                    s + "/dev/sdb1 /home btrfs subvol=@home,compress=zstd 0 0\n"
                });
            }),
        ),
        (
            "lvm-devices-file",
            "info",
            Box::new(|c: &Case| {
                c.write(
                    "etc/lvm/devices/system.devices",
                    b"# LVM uses devices listed in this file.\nVERSION=1.1.2\nIDTYPE=sys_wwid IDNAME=naa.6000c29b2f9d8e0a DEVNAME=/dev/sda2 PVID=0LKIptA6vOoLD29HJjqWlrMN1nJfCW4Z PART=2\n",
                );
            }),
        ),
        (
            "lvm-filter-names-devices",
            "warning",
            Box::new(|c: &Case| {
                c.write(
                    "etc/lvm/lvm.conf",
                    b"devices {\n\t# filter = [ \"a|.*|\" ]\n\tfilter = [ \"a|^/dev/sda2$|\", \"r|.*|\" ]\n}\n",
                );
            }),
        ),
        (
            "linux-32bit",
            "error",
            Box::new(|c: &Case| {
                c.write("usr/bin/dash", elf32());
            }),
        ),
        (
            "arch-unknown",
            "info",
            Box::new(|c: &Case| {
                c.write("usr/bin/dash", "#!/bin/false\n");
                c.write("usr/bin/true", "#!/bin/false\n");
            }),
        ),
        (
            "custom-kernel",
            "warning",
            Box::new(|c: &Case| {
                c.write("boot/vmlinuz-6.1.0-mybuild", "kernel");
                c.write("usr/lib/modules/6.1.0-mybuild/modules.dep", "");
            }),
        ),
        (
            "default-not-newest",
            "info",
            Box::new(|c: &Case| {
                c.write("boot/vmlinuz-6.1.0-27-amd64", "kernel");
                c.write("usr/lib/modules/6.1.0-27-amd64/modules.dep", "");
            }),
        ),
        (
            "uefi-linux",
            "error",
            Box::new(|c: &Case| {
                c.write("boot/efi/EFI/debian/grubx64.efi", "MZ");
            }),
        ),
        (
            "bootloader-not-grub",
            "warning",
            Box::new(|c: &Case| {
                c.remove("boot/grub");
            }),
        ),
        (
            "no-dhcp-client",
            "warning",
            Box::new(|c: &Case| {
                c.remove("usr/sbin/dhclient");
            }),
        ),
        (
            "no-sshd",
            "warning",
            Box::new(|c: &Case| {
                c.remove("usr/sbin/sshd");
            }),
        ),
        (
            "sshd-disabled",
            "warning",
            Box::new(|c: &Case| {
                c.remove("etc/systemd/system/multi-user.target.wants/ssh.service");
            }),
        ),
        (
            "vmware-tools",
            "warning",
            Box::new(|c: &Case| {
                c.write("usr/bin/vmtoolsd", "vmtoolsd");
            }),
        ),
        (
            "multiple-nics",
            "info",
            Box::new(|c: &Case| {
                c.edit("etc/network/interfaces", |s| {
                    s + "\nauto ens224\niface ens224 inet dhcp\n"
                });
            }),
        ),
    ]
}

#[test]
fn the_demo_guest_fires_only_what_it_should() {
    let c = Case::new();
    let mut got = fired(&inspect(&c.vm()));
    got.sort();
    assert_eq!(
        got,
        [
            ("license".into(), "info".into()),
            ("os-not-listed".into(), "warning".into())
        ]
    );
    // A listed release clears os-not-listed.
    let c = Case::new();
    c.write(
        "etc/os-release",
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"8\"\n",
    );
    c.write(
        "usr/lib/os-release",
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"8\"\n",
    );
    c.write("etc/debian_version", "8.0\n");
    let doc = inspect(&c.vm());
    assert!(
        !fired(&doc).iter().any(|(i, _)| i == "os-not-listed"),
        "{}",
        doc["preflight"]
    );
}

#[test]
fn each_guest_change_fires_its_check() {
    for (id, severity, change) in tree_cases() {
        eprintln!("== {id}");
        let c = Case::new();
        change(&c);
        assert_fires(id, severity, &c.vm());
    }
}

#[test]
fn low_free_space_on_a_small_root() {
    let c = Case::new();
    let fs = c.root_fs(64);
    let disk = c.disk("disk.raw", 80 * MIB, "dos", &[(Some(&fs), 64, "83")]);
    assert_fires("low-free-space", "warning", &[disk]);
}

#[test]
fn volume_level_checks() {
    // A Btrfs data partition: found, not read.
    let c = Case::new();
    let root = c.root_fs(400);
    let xfs = c.empty_fs("btrfs", 300);
    let disk = c.disk(
        "d.raw",
        800 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&xfs), 300, "83")],
    );
    assert_fires("volume-not-read", "info", &[disk]);

    // A data filesystem that was not cleanly unmounted.
    let c = Case::new();
    let root = c.root_fs(400);
    let data = c.empty_fs("ext4", 64);
    tool(
        Command::new("debugfs")
            .args(["-w", "-R", "ssv state 0"])
            .arg(&data),
    );
    let disk = c.disk(
        "d.raw",
        500 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&data), 64, "83")],
    );
    assert_fires("volume-not-clean", "warning", &[disk]);

    // A LUKS2 partition made by cryptsetup.
    let c = Case::new();
    let root = c.root_fs(400);
    let luks = c.path("luks.img");
    create_sparse(&luks, 32 * MIB).unwrap();
    let key = c.path("key");
    std::fs::write(&key, "not a secret").unwrap();
    tool(
        Command::new("cryptsetup")
            .args([
                "luksFormat",
                "-q",
                "--type",
                "luks2",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
            ])
            .arg(&key)
            .arg(&luks),
    );
    let disk = c.disk(
        "d.raw",
        500 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&luks), 32, "83")],
    );
    assert_fires("encrypted-volume", "warning", &[disk]);

    // An NTFS data partition whose $UpCase record (MFT record 10) is
    // zeroed: recognised, but it cannot be opened.
    let c = Case::new();
    let root = c.root_fs(400);
    let ntfs = c.path("bad.ntfs");
    create_sparse(&ntfs, 32 * MIB).unwrap();
    tool(Command::new("mkntfs").args(["-F", "-q", "-f"]).arg(&ntfs));
    let boot = read_at(&ntfs, 0, 512).unwrap();
    let cluster = u64::from(u16::from_le_bytes([boot[11], boot[12]])) * u64::from(boot[13]);
    let mft = u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap()) * cluster;
    patch(&ntfs, mft + 10 * 1024, &[0u8; 1024]).unwrap();
    let disk = c.disk(
        "d.raw",
        500 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&ntfs), 32, "7")],
    );
    assert_fires("volume-unreadable", "warning", &[disk]);

    // An LVM2 physical volume made by lvm 2.03 (dfvfs's test image) as a
    // second disk, its metadata-area header damaged (one byte of its
    // checksum): the group cannot be activated.
    let c = Case::new();
    let lvm = c.path("lvm.raw");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(realdata("dfvfs/test_data_history/lvm.qcow2"))
            .arg(&lvm),
    );
    let mut disks = c.vm();
    disks.push(lvm.clone());
    let doc = inspect(&disks);
    assert!(
        !fired(&doc).iter().any(|(i, _)| i.starts_with("lvm")),
        "a whole LVM disk raises nothing: {}",
        doc["preflight"]
    );
    assert_eq!(doc["volume_groups"][0]["name"], "test_volume_group");
    let first = read_at(&lvm, 4096, 1).unwrap();
    patch(&lvm, 4096, &[first[0] ^ 0xff]).unwrap();
    assert_fires("lvm-metadata-damaged", "warning", &disks);
}

#[test]
fn lvm_checks() {
    // A VG over two disks with only the first given: the import service's
    // "Logical volume group activation failed", naming the missing PV.
    let span = xtask::lvm::fixture("lvm-span").unwrap();
    assert_fires("lvm-missing-pv", "error", &span.disks[..1]);
    let doc = inspect(&span.disks[..1]);
    let msg = doc["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "lvm-missing-pv")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    let missing = &span.manifest.vgs[0].pvs[1].uuid;
    assert!(
        msg.contains(missing.as_str()) && msg.contains("Logical volume group activation failed"),
        "{msg}"
    );
    // Both disks: the root LV spans them.
    assert_fires("lvm-root-spans-disks", "warning", &span.disks);
    // Thin provisioning is refused by name.
    let thin = xtask::lvm::fixture("lvm-thin").unwrap();
    assert_fires("lvm-unsupported", "error", &thin.disks);
}

#[test]
fn vm_level_checks() {
    // No Linux root: a disk holding one empty data filesystem.
    let c = Case::new();
    let data = c.empty_fs("ext4", 64);
    let disk = c.disk("d.raw", 80 * MIB, "dos", &[(Some(&data), 64, "83")]);
    assert_fires("no-bootable-partition", "error", &[disk]);

    // Two Linux roots on one disk: multi-boot.
    let c = Case::new();
    let root = c.root_fs(400);
    let disk = c.disk(
        "d.raw",
        900 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&root), 400, "83")],
    );
    assert_fires("multiple-directories", "error", &[disk]);

    // A Linux root on a GPT disk.
    let c = Case::new();
    let root = c.root_fs(400);
    let disk = c.disk("d.raw", 500 * MIB, "gpt", &[(Some(&root), 400, "linux")]);
    assert_fires("gpt-root", "error", &[disk]);

    // The root on the second disk, a data disk first.
    let c = Case::new();
    let data = c.empty_fs("ext4", 64);
    let first = c.disk("first.raw", 80 * MIB, "dos", &[(Some(&data), 64, "83")]);
    let second = c.vm().remove(0);
    assert_fires("root-not-on-boot-disk", "warning", &[first, second]);

    // A 2.5 TiB (sparse) boot disk.
    let c = Case::new();
    let root = c.root_fs(400);
    let disk = c.disk(
        "big.raw",
        2 * TIB + TIB / 2,
        "dos",
        &[(Some(&root), 400, "83")],
    );
    assert_fires("boot-volume-over-2tib", "error", &[disk]);

    // A 4.5 TiB (sparse, empty) data disk.
    let c = Case::new();
    let mut disks = c.vm();
    let data = c.path("data.raw");
    create_sparse(&data, 4 * TIB + TIB / 2).unwrap();
    disks.push(data);
    assert_fires("disk-over-4tib", "info", &disks);

    // 22 disks.
    let c = Case::new();
    let mut disks = c.vm();
    for i in 0..21 {
        let p = c.path(&format!("extra-{i}.raw"));
        create_sparse(&p, MIB).unwrap();
        disks.push(p);
    }
    assert_fires("too-many-volumes", "error", &disks);
}

/// Check ids that no fixture can fire here, and why.
const NO_FIXTURE: &[(&str, &str)] = &[
    (
        "gpt-data-volume-over-16tib",
        "a sparse data disk over 16 TiB cannot be created on the ext4 filesystems CI runs on (largest file 16 TiB)",
    ),
    (
        "inspection-failed",
        "defensive: inspection degrades a bad file to a warning, so no image makes it fail after the root was recognised",
    ),
];

/// Ids covered by the tests above.
fn covered() -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = tree_cases().iter().map(|c| c.0).collect();
    ids.extend([
        "license",
        "os-not-listed",
        "low-free-space",
        "volume-not-read",
        "volume-not-clean",
        "volume-unreadable",
        "encrypted-volume",
        "lvm-metadata-damaged",
        "lvm-missing-pv",
        "lvm-root-spans-disks",
        "lvm-unsupported",
        "no-bootable-partition",
        "root-unreadable",
        "multiple-directories",
        "gpt-root",
        "root-not-on-boot-disk",
        "boot-volume-over-2tib",
        "disk-over-4tib",
        "too-many-volumes",
    ]);
    ids.extend(WINDOWS_COVERED);
    ids
}

// ------------------------------------------------------------------ Windows

const V2V: &str = "virt-v2v/test-data/phony-guests";

/// What goes into a Windows system volume.
#[derive(Clone)]
struct Win {
    /// virt-v2v SOFTWARE export the SOFTWARE hive starts from.
    software: &'static str,
    /// .reg text merged into SOFTWARE after it (prefix HKLM\SOFTWARE).
    software_extra: String,
    /// .reg text merged into SYSTEM after windows-system.reg.
    system_extra: String,
    /// .reg text merged into the BCD store after windows-bcd.reg.
    bcd_extra: String,
    /// Put a hibernation image (`hiberfil.sys` starting "HIBR") at the root.
    hibernated: bool,
    /// Set the dirty flag of `$Volume`.
    dirty: bool,
    /// Replace the SYSTEM hive by garbage.
    garbage_system: bool,
    /// Grow the volume (sparse) to this many MiB with ntfsresize.
    grow_mib: Option<u64>,
    /// Keep the BCD store in \\Boot on the system volume (else: nowhere;
    /// see `system_reserved`).
    bcd_on_system: bool,
}

/// A Windows 10 guest with .NET 4.8, a fixed pagefile, RDP on, DHCP and
/// no VMware Tools: fires only what every such guest does.
fn win10() -> Win {
    Win {
        software: "win10-software.reg",
        software_extra: r#"[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full]
"Release"=dword:00080ea8
"Install"=dword:00000001
"#
        .into(),
        system_extra: r#"[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Session Manager\Memory Management]
"PagingFiles"=hex(7):43,00,3a,00,5c,00,70,00,61,00,67,00,65,00,66,00,69,00,6c,00,65,00,2e,00,73,00,79,00,73,00,20,00,31,00,30,00,32,00,34,00,20,00,32,00,30,00,34,00,38,00,00,00,00,00
[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Nls\Language]
"InstallLanguage"="0409"
"Default"="0409"
[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Terminal Server]
"fDenyTSConnections"=dword:00000000
[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\ena]
"Start"=dword:00000003
"Type"=dword:00000001
"#
        .into(),
        bcd_extra: String::new(),
        hibernated: false,
        dirty: false,
        grow_mib: Some(8 << 10),
        bcd_on_system: true,
        garbage_system: false,
    }
}

/// `hivexregedit --merge` each .reg text into a copy of virt-v2v's minimal
/// hive.
fn hive(c: &Case, name: &str, prefix: Option<&str>, regs: &[String]) -> PathBuf {
    let h = c.path(name);
    std::fs::copy(realdata(&format!("{V2V}/minimal-hive")), &h).unwrap();
    for (i, reg) in regs.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        let f = c.path(&format!("{name}-{i}.reg"));
        let text = if reg.starts_with("Windows Registry") {
            reg.clone()
        } else {
            format!(
                "Windows Registry Editor Version 5.00\n\n{}",
                with_parents(reg, prefix.unwrap_or(""))
            )
        };
        std::fs::write(&f, text).unwrap();
        let mut cmd = Command::new("hivexregedit");
        cmd.arg("--merge");
        if let Some(p) = prefix {
            cmd.arg("--prefix").arg(p);
        }
        tool(cmd.arg(&h).arg(&f));
    }
    h
}

/// hivexregedit creates a key only under an existing parent: put an empty
/// section for every missing ancestor (below `prefix`) before each key.
fn with_parents(reg: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in reg.lines() {
        if let Some(key) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out += "\n";
            }
            let parts: Vec<&str> = key.split('\\').collect();
            for n in 1..parts.len() {
                let anc = parts[..n].join("\\");
                if anc.len() > prefix.len() && !anc.is_empty() && seen.insert(anc.clone()) {
                    out += &format!("[{anc}]\n\n");
                }
            }
            seen.insert(key.to_string());
        }
        out += line;
        out += "\n";
    }
    out
}

/// A minimal PE image of machine `m`: MZ, e_lfanew, PE\0\0, Machine.
fn pe(m: u16) -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&m.to_le_bytes());
    b
}

/// The NTFS system volume: dfvfs's Windows-made volume (which holds
/// \Windows\System32\config) with our hives, kernel32.dll and a BCD store
/// copied in through ntfs-3g (FUSE), optionally grown by ntfsresize.
fn windows_fs(c: &Case, w: &Win) -> PathBuf {
    let img = c.path("windows.ntfs");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(realdata("dfvfs/test_data/windows_volume.qcow2"))
            .arg(&img),
    );
    if let Some(mib) = w.grow_mib {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(mib * MIB)
            .unwrap();
        tool(
            Command::new("ntfsresize")
                .args(["-f", "-f", "-P"])
                .arg(&img),
        );
        // ntfsresize marks the volume dirty so that chkdsk runs; it is not.
        tool(Command::new("ntfsfix").arg("-d").arg(&img));
    }
    let software = hive(
        c,
        "SOFTWARE",
        Some("HKEY_LOCAL_MACHINE\\SOFTWARE"),
        &[
            std::fs::read_to_string(realdata(&format!("{V2V}/{}", w.software))).unwrap(),
            w.software_extra.clone(),
        ],
    );
    let system = hive(
        c,
        "SYSTEM",
        Some("HKEY_LOCAL_MACHINE\\SYSTEM"),
        &[
            std::fs::read_to_string(realdata(&format!("{V2V}/windows-system.reg"))).unwrap(),
            w.system_extra.clone(),
        ],
    );
    let bcd = bcd_hive(c, &w.bcd_extra);
    copy_in(c, &img, |mnt| {
        std::fs::copy(&software, mnt.join("Windows/System32/config/SOFTWARE"))?;
        if w.garbage_system {
            let junk: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7919 % 251) as u8).collect();
            std::fs::write(mnt.join("Windows/System32/config/SYSTEM"), junk)?;
        } else {
            std::fs::copy(&system, mnt.join("Windows/System32/config/SYSTEM"))?;
        }
        std::fs::write(mnt.join("Windows/System32/kernel32.dll"), pe(0x8664))?;
        if w.bcd_on_system {
            std::fs::create_dir_all(mnt.join("Boot"))?;
            std::fs::copy(&bcd, mnt.join("Boot/BCD"))?;
        }
        if w.hibernated {
            let mut h = b"HIBR".to_vec();
            h.resize(64 << 10, 0);
            std::fs::write(mnt.join("hiberfil.sys"), h)?;
        }
        Ok(())
    });
    if w.dirty {
        for off in ntfs_volume_flag_offsets(&img).unwrap() {
            patch(&img, off, &1u16.to_le_bytes()).unwrap();
        }
        let out = Command::new("ntfsinfo")
            .args(["-f", "-m"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("Volume Flags: 0x0001"));
    }
    img
}

/// virt-v2v's BCD export, plus `extra`, merged by hivexregedit.
fn bcd_hive(c: &Case, extra: &str) -> PathBuf {
    hive(
        c,
        "BCD",
        None,
        &[
            std::fs::read_to_string(realdata(&format!("{V2V}/windows-bcd.reg"))).unwrap(),
            extra.to_string(),
        ],
    )
}

/// A BIOS install's "System Reserved" volume: mkntfs, then \\Boot\\BCD
/// (with `bcd_extra`) and a bootmgr file copied in through ntfs-3g.
fn system_reserved(c: &Case, bcd_extra: &str) -> PathBuf {
    let img = c.path("reserved.ntfs");
    create_sparse(&img, 100 * MIB).unwrap();
    tool(
        Command::new("mkntfs")
            .args(["-F", "-q", "-f", "-L", "System Reserved"])
            .arg(&img),
    );
    let bcd = bcd_hive(c, bcd_extra);
    copy_in(c, &img, |mnt| {
        std::fs::create_dir_all(mnt.join("Boot"))?;
        std::fs::copy(&bcd, mnt.join("Boot/BCD"))?;
        std::fs::write(mnt.join("bootmgr"), b"bootmgr")
    });
    img
}

/// Mount the NTFS image `img` through ntfs-3g (FUSE, as root), run `f` on
/// the mountpoint, and unmount it whatever `f` returned.
fn copy_in(c: &Case, img: &Path, f: impl FnOnce(&Path) -> std::io::Result<()>) {
    let mnt = c.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    tool(Command::new("ntfs-3g").arg(img).arg(&mnt));
    let res = f(&mnt);
    // Another test thread's fork can hold a just-closed file of the mount
    // for a moment ("target is busy", seen in CI under load): retry.
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new("umount").arg(&mnt).output().unwrap();
        if out.status.success() {
            res.unwrap();
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("umount {}: {last}", mnt.display());
}

/// A one-disk Windows VM: MBR, the system volume in partition 1 (type 7).
fn windows_vm(c: &Case, w: &Win) -> Vec<PathBuf> {
    let fs = windows_fs(c, w);
    let mib = std::fs::metadata(&fs).unwrap().len().div_ceil(MIB);
    vec![c.disk("win.raw", (mib + 2) * MIB, "dos", &[(Some(&fs), mib, "7")])]
}

#[test]
fn the_windows_10_guest_fires_only_what_it_should() {
    let c = Case::new();
    let doc = inspect(&windows_vm(&c, &win10()));
    let os = &doc["operating_systems"][0];
    assert_eq!(os["type"], "windows", "{doc}");
    assert_eq!(os["arch"], "x86_64");
    assert_eq!(os["major_version"], 10);
    assert_eq!(os["hostname"], "windows.invalid");
    assert_eq!(os["windows_current_control_set"], "ControlSet001");
    let mut got = fired(&doc);
    got.sort();
    assert_eq!(
        got,
        [("license".into(), "info".into())],
        "{}",
        doc["preflight"]
    );
}

/// Every Windows case: id, severity, and how to change the Windows 10 guest.
#[allow(clippy::type_complexity)]
fn windows_cases() -> Vec<(&'static str, &'static str, Box<dyn Fn(&mut Win)>)> {
    let sys = r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001";
    vec![
        (
            "windows-low-free-space",
            "error",
            Box::new(|w: &mut Win| w.grow_mib = None),
        ),
        (
            "windows-not-listed",
            "warning",
            Box::new(|w: &mut Win| w.software = "win2k22-software.reg"),
        ),
        (
            "windows-hibernated",
            "error",
            Box::new(|w: &mut Win| w.hibernated = true),
        ),
        (
            "windows-dirty",
            "error",
            Box::new(|w: &mut Win| w.dirty = true),
        ),
        (
            "windows-pagefile-automatic",
            "warning",
            Box::new(move |w: &mut Win| {
                w.system_extra += &format!("[{sys}\\Control\\Session Manager\\Memory Management]\n\"PagingFiles\"=hex(7):3f,00,3a,00,5c,00,70,00,61,00,67,00,65,00,66,00,69,00,6c,00,65,00,2e,00,73,00,79,00,73,00,00,00,00,00\n");
            }),
        ),
        (
            "windows-language",
            "warning",
            Box::new(move |w: &mut Win| {
                w.system_extra +=
                    &format!("[{sys}\\Control\\Nls\\Language]\n\"InstallLanguage\"=\"0411\"\n");
            }),
        ),
        (
            "windows-system-unreadable",
            "warning",
            Box::new(|w: &mut Win| w.garbage_system = true),
        ),
        (
            "windows-bcd-not-found",
            "info",
            Box::new(|w: &mut Win| w.bcd_on_system = false),
        ),
        (
            "windows-dotnet-35sp1",
            "error",
            Box::new(|w: &mut Win| w.software_extra.clear()),
        ),
        (
            "windows-dotnet-45",
            "warning",
            Box::new(|w: &mut Win| {
                w.software_extra = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v3.5]\n\"Install\"=dword:00000001\n\"SP\"=dword:00000001\n".into();
            }),
        ),
        (
            "windows-ena-missing",
            "warning",
            Box::new(|w: &mut Win| {
                w.system_extra = w
                    .system_extra
                    .replace("Services\\ena]", "Services\\not-ena]");
            }),
        ),
        (
            "windows-rdp-disabled",
            "warning",
            Box::new(move |w: &mut Win| {
                w.system_extra += &format!(
                    "[{sys}\\Control\\Terminal Server]\n\"fDenyTSConnections\"=dword:00000001\n"
                );
            }),
        ),
        (
            "windows-static-ip",
            "info",
            Box::new(move |w: &mut Win| {
                w.system_extra += &format!("[{sys}\\Services\\Tcpip\\Parameters\\Interfaces\\{{5a3e1b1c-0000-4000-8000-000000000001}}]\n\"EnableDHCP\"=dword:00000000\n\"IPAddress\"=hex(7):31,00,30,00,2e,00,30,00,2e,00,30,00,2e,00,35,00,00,00,00,00\n\"SubnetMask\"=hex(7):32,00,35,00,35,00,2e,00,32,00,35,00,35,00,2e,00,32,00,35,00,35,00,2e,00,30,00,00,00,00,00\n");
            }),
        ),
        (
            "windows-vmware-tools",
            "warning",
            Box::new(move |w: &mut Win| {
                w.system_extra +=
                    &format!("[{sys}\\Services\\VMTools]\n\"Start\"=dword:00000002\n");
            }),
        ),
        (
            "windows-ems",
            "info",
            Box::new(|w: &mut Win| {
                // bootems on {bootmgr} (BcdLibraryBoolean_EmsEnabled, 0x16000020).
                w.bcd_extra = "[\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Elements\\16000020]\n\"Element\"=hex(3):01\n".into();
            }),
        ),
    ]
}

#[test]
fn each_windows_change_fires_its_check() {
    for (id, severity, change) in windows_cases() {
        eprintln!("== {id}");
        let c = Case::new();
        let mut w = win10();
        change(&mut w);
        assert_fires(id, severity, &windows_vm(&c, &w));
    }
}

#[test]
fn windows_vm_level_checks() {
    // Windows and Linux on one VM.
    let c = Case::new();
    let mut disks = windows_vm(&c, &win10());
    disks.extend(c.vm());
    assert_fires("dual-boot", "error", &disks);
    // Two Windows system volumes.
    let c = Case::new();
    let a = windows_vm(&c, &win10()).remove(0);
    let c2 = Case::new();
    let b = windows_vm(&c2, &win10()).remove(0);
    assert_fires("multiple-windows", "error", &[a, b]);
    // EMS on in the BCD of a separate System Reserved volume (partition 1),
    // Windows on partition 2.
    let c = Case::new();
    let reserved = system_reserved(
        &c,
        "[\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Elements\\16000020]\n\"Element\"=hex(3):01\n",
    );
    let mut w = win10();
    w.bcd_on_system = false;
    let sys = windows_fs(&c, &w);
    let mib = std::fs::metadata(&sys).unwrap().len().div_ceil(MIB);
    let disk = c.disk(
        "win2.raw",
        (mib + 104) * MIB,
        "dos",
        &[(Some(&reserved), 100, "7"), (Some(&sys), mib, "7")],
    );
    let doc = inspect(std::slice::from_ref(&disk));
    let os = &doc["operating_systems"][0];
    assert_eq!(
        os["root"],
        format!("{} partition 2", disk.display()),
        "{doc}"
    );
    assert!(
        os["boot"]["path"]
            .as_str()
            .unwrap()
            .ends_with("partition 1:/Boot/BCD"),
        "{doc}"
    );
    assert_fires("windows-ems", "info", &[disk]);
    // The system volume on the second disk, a data disk first.
    let c = Case::new();
    let data = c.empty_fs("ext4", 64);
    let first = c.disk("first.raw", 80 * MIB, "dos", &[(Some(&data), 64, "83")]);
    let second = windows_vm(&c, &win10()).remove(0);
    assert_fires("windows-not-on-boot-disk", "warning", &[first, second]);
    // A SOFTWARE hive without a product version.
    let c = Case::new();
    let mut w = win10();
    w.software = "windows-software-all.reg";
    assert_fires("windows-version-unknown", "warning", &windows_vm(&c, &w));
}

/// Ids covered by the Windows tests above.
const WINDOWS_COVERED: &[&str] = &[
    "dual-boot",
    "multiple-windows",
    "windows-low-free-space",
    "windows-not-listed",
    "windows-hibernated",
    "windows-dirty",
    "windows-pagefile-automatic",
    "windows-language",
    "windows-dotnet-35sp1",
    "windows-dotnet-45",
    "windows-rdp-disabled",
    "windows-ena-missing",
    "windows-static-ip",
    "windows-vmware-tools",
    "windows-ems",
    "windows-version-unknown",
    "windows-system-unreadable",
    "windows-bcd-not-found",
    "windows-not-on-boot-disk",
];

#[test]
fn every_check_has_a_fixture() {
    let src = std::fs::read_to_string(root().join("crates/vmie-inspect/src/preflight.rs")).unwrap();
    let re = regex_lite(&src);
    let covered = covered();
    let missing: Vec<&String> = re
        .iter()
        .filter(|id| !covered.contains(&id.as_str()) && !NO_FIXTURE.iter().any(|(n, _)| n == id))
        .collect();
    assert!(
        missing.is_empty(),
        "preflight checks without a fixture: {missing:?}"
    );
    for id in &covered {
        assert!(
            re.iter().any(|r| r == id),
            "{id} is covered here but not a check any more"
        );
    }
}

/// The ids in `check(&mut out, "id", ...)` calls.
fn regex_lite(src: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("check(") {
        rest = &rest[i + 6..];
        let call = rest.trim_start();
        let Some(after) = call
            .strip_prefix("&mut out,")
            .or_else(|| call.strip_prefix("out,"))
        else {
            continue;
        };
        let after = after.trim_start();
        if let Some(s) = after.strip_prefix('"') {
            if let Some(end) = s.find('"') {
                ids.push(s[..end].to_string());
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Issue 18: when no guest is found because the volume that may hold it
/// cannot be read (Btrfs, not read yet), that is the first error.
#[test]
fn an_unreadable_root_is_the_first_error() {
    let c = Case::new();
    let xfs = c.empty_fs("btrfs", 300);
    let disk = c.disk("d.raw", 320 * MIB, "dos", &[(Some(&xfs), 300, "83")]);
    let doc = inspect(&[disk]);
    let got = fired(&doc);
    assert_eq!(
        got.first().map(|(i, s)| (i.as_str(), s.as_str())),
        Some(("root-unreadable", "error")),
        "{}",
        doc["preflight"]
    );
    let msg = doc["preflight"][0]["message"].as_str().unwrap();
    assert!(msg.contains("partition 1 holds Btrfs"), "{msg}");
    assert!(got.iter().any(|(i, _)| i == "no-bootable-partition"));
    // A readable root: the check stays quiet even with a Btrfs volume.
    let c = Case::new();
    let root = c.root_fs(400);
    let xfs = c.empty_fs("btrfs", 300);
    let disk = c.disk(
        "d.raw",
        800 * MIB,
        "dos",
        &[(Some(&root), 400, "83"), (Some(&xfs), 300, "83")],
    );
    assert!(!fired(&inspect(&[disk]))
        .iter()
        .any(|(i, _)| i == "root-unreadable"));
}
