//! Issue 16: the fixup run changes a Windows guest the way it changes a
//! Linux one. For Windows Server 2022, Windows 10 and Windows 7 (32-bit)
//! guests: dfvfs's Windows-made NTFS volume, grown (ntfsresize) past the
//! import service's 6 GiB free-space minimum, with SOFTWARE and SYSTEM hives
//! built from virt-v2v's .reg exports and a real BIOS BCD store
//! (windeploy-linux, EMS turned on in it by hivexregedit) in \Boot. Server
//! 2025 as a BIOS install (the BCD on an mkntfs "System Reserved" volume,
//! partition 1) and Windows 11 as a UEFI install (windeploy-linux's real
//! UEFI BCD on an mkfs.fat EFI system partition, GPT).
//!
//! `vmie-fixup --format json` exits 0 with the shipped Windows rules'
//! changes; the dry run lists the same and writes nothing; afterwards
//! ntfsfix -n (and fsck.fat -n on an ESP) is clean, the hives read through ntfscat open in hivexsh and
//! hivexregedit --export shows the new values, `SYSTEM.vmie.bak` and
//! `BCD.vmie.bak` equal the originals, a second run changes nothing, and
//! `vmie-fixup undo` restores the image byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/windows.rs"]
mod windows;

use windows::{hive, realdata, tool};

#[path = "common/cli.rs"]
mod common;

use common::{run, s};

const MIB: u64 = 1 << 20;
/// The grown volume: past the 6 GiB free-space check.
const VOL_MIB: u64 = 6300;
const BOOTMGR: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
/// windeploy-linux's BCD: bootmgr's default OS loader.
const LOADER: &str = "{1b67bffd-e290-11eb-8ffa-f459a0d9b879}";
/// windeploy-linux's UEFI BCD (`BCD-efi`, winload.efi): its default loader.
const LOADER_EFI: &str = "{d65367c7-3fb7-11ec-8288-eab76d76405a}";

impl Layout {
    /// The real BCD store the layout's guest starts from, and its default
    /// OS loader.
    fn bcd(self) -> (&'static str, &'static str) {
        match self {
            Layout::Esp => ("windeploy-linux/BCD-efi", LOADER_EFI),
            Layout::Volume | Layout::SystemReserved => ("windeploy-linux/BCD", LOADER),
        }
    }
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "vmie-fixup {args:?} failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn schema(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The run report against schemas/report.schema.json.
fn validate_report(doc: &serde_json::Value) {
    let registry = jsonschema::Registry::new()
        .add(
            "https://vmie-fixup.invalid/schemas/common.schema.json",
            schema("common.schema.json"),
        )
        .unwrap()
        .prepare()
        .unwrap();
    let v = jsonschema::options()
        .with_registry(&registry)
        .build(&schema("report.schema.json"))
        .unwrap();
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "report schema: {errors:#?}");
}

fn merge(h: &Path, prefix: &str, reg: &str, dir: &Path) {
    let f = dir.join("extra.reg");
    std::fs::write(&f, format!("Windows Registry Editor Version 5.00\n\n{reg}")).unwrap();
    tool(
        Command::new("hivexregedit")
            .args(["--merge", "--prefix", prefix])
            .arg(h)
            .arg(&f),
    );
}

/// Where the guest keeps its BCD store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    /// `\Boot\BCD` on the Windows volume (MBR partition 1).
    Volume,
    /// A BIOS install: `\Boot\BCD` on a "System Reserved" NTFS volume
    /// (MBR partition 1, active), Windows in partition 2.
    SystemReserved,
    /// A UEFI install: `\EFI\Microsoft\Boot\BCD` on a FAT32 EFI system
    /// partition (GPT partition 1), Windows in partition 2 (basic data).
    Esp,
}

/// The system partition's size in the System Reserved and ESP layouts.
const SYS_MIB: u64 = 64;

/// The guest's original files, to compare with the backups.
struct Guest {
    disk: PathBuf,
    system: PathBuf,
    bcd: PathBuf,
    /// The Windows volume's first MiB on the disk.
    win_at: u64,
}

/// A one-disk Windows VM (see the module documentation). `stornvme`: the
/// SYSTEM hive has the inbox NVMe driver's service key (Start=3, as 8.1 /
/// 2012 R2 and later ship it).
fn guest(dir: &Path, software: &str, stornvme: bool, layout: Layout) -> Guest {
    guest_with(dir, software, None, stornvme, layout, None)
}

/// [`guest`], with a real SYSTEM hive from ../shared/realdata (`system`)
/// instead of one built from virt-v2v's export.
fn guest_with(
    dir: &Path,
    software: &str,
    system: Option<&str>,
    stornvme: bool,
    layout: Layout,
    extra_system: Option<&str>,
) -> Guest {
    let vol = dir.join("vol.raw");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(realdata("dfvfs/test_data/windows_volume.qcow2"))
            .arg(&vol),
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vol)
        .unwrap()
        .set_len(VOL_MIB * MIB)
        .unwrap();
    tool(
        Command::new("ntfsresize")
            .args(["-f", "-f", "-P"])
            .arg(&vol),
    );
    // ntfsresize marks the volume dirty so that chkdsk runs; it is not.
    tool(Command::new("ntfsfix").arg("-d").arg(&vol));

    let sw = hive(dir, "SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE", software);
    // .NET 4.8 (the import service requires 3.5 SP1 or later).
    merge(
        &sw,
        "HKEY_LOCAL_MACHINE\\SOFTWARE",
        "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup]\n\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP]\n\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4]\n\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4\\Full]\n\
         \"Release\"=dword:00080ea8\n\"Install\"=dword:00000001\n",
        dir,
    );
    let sys = match system {
        Some(real) => {
            let h = dir.join("SYSTEM");
            if real.ends_with(".xz") {
                unxz(&realdata(real), &h);
            } else {
                std::fs::copy(realdata(real), &h).unwrap();
            }
            h
        }
        None => hive(
            dir,
            "SYSTEM",
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            "windows-system.reg",
        ),
    };
    if let Some(reg) = extra_system {
        merge(&sys, "HKEY_LOCAL_MACHINE\\SYSTEM", reg, dir);
    }
    if stornvme {
        merge(
            &sys,
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\stornvme]\n\
             \"Start\"=dword:00000003\n\"Type\"=dword:00000001\n\n\
             [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\stornvme\\StartOverride]\n\
             \"0\"=dword:00000003\n",
            dir,
        );
    }
    // A real BIOS BCD store, with EMS on ({bootmgr} bootems, the loader's ems).
    let bcd = dir.join("BCD");
    let (store, loader) = layout.bcd();
    std::fs::copy(realdata(store), &bcd).unwrap();
    merge(
        &bcd,
        "HKEY_LOCAL_MACHINE\\BCD00000000",
        &format!(
            "[HKEY_LOCAL_MACHINE\\BCD00000000\\Objects\\{BOOTMGR}\\Elements\\16000020]\n\
             \"Element\"=hex(3):01\n\n\
             [HKEY_LOCAL_MACHINE\\BCD00000000\\Objects\\{loader}\\Elements\\260000b0]\n\
             \"Element\"=hex(3):01\n"
        ),
        dir,
    );
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    let machine: u16 = if software.contains("-32-") {
        0x14c
    } else {
        0x8664
    };
    pe[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    let k32 = dir.join("kernel32.dll");
    std::fs::write(&k32, pe).unwrap();

    // \Boot does not exist on the volume and ntfscp cannot make it: ntfs-3g.
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    tool(Command::new("ntfs-3g").arg(&vol).arg(&mnt));
    let copied = (|| -> std::io::Result<()> {
        let config = mnt.join("Windows/System32/config");
        std::fs::copy(&sw, config.join("SOFTWARE"))?;
        std::fs::copy(&sys, config.join("SYSTEM"))?;
        // A real hive's transaction logs, when realdata has them beside it.
        for ext in ["LOG1", "LOG2"] {
            if let Some(stem) = system.and_then(|r| r.strip_suffix(".xz")) {
                let log = realdata_path(&format!("{stem}.{ext}.xz"));
                if log.exists() {
                    unxz(&log, &config.join(format!("SYSTEM.{ext}")));
                }
                continue;
            }
            if let Some(real) = system {
                let log = realdata_path(real).with_extension(ext);
                let log = if log.exists() {
                    log
                } else {
                    std::path::PathBuf::from(format!("{}.{ext}", realdata_path(real).display()))
                };
                if log.exists() {
                    std::fs::copy(&log, config.join(format!("SYSTEM.{ext}")))?;
                }
            }
        }
        std::fs::copy(&k32, mnt.join("Windows/System32/kernel32.dll"))?;
        std::fs::create_dir_all(mnt.join("Windows/System32/drivers"))?;
        if layout == Layout::Volume {
            std::fs::create_dir_all(mnt.join("Boot"))?;
            std::fs::copy(&bcd, mnt.join("Boot/BCD"))?;
        }
        Ok(())
    })();
    umount(&mnt);
    copied.unwrap();

    // The system partition, made by mkntfs or mkfs.fat.
    let sysvol = dir.join("sys.raw");
    match layout {
        Layout::Volume => {}
        Layout::SystemReserved => {
            std::fs::File::create(&sysvol)
                .unwrap()
                .set_len(SYS_MIB * MIB)
                .unwrap();
            tool(
                Command::new("mkntfs")
                    .args(["-F", "-Q", "-q", "-L", "System Reserved"])
                    .arg(&sysvol),
            );
            tool(Command::new("ntfs-3g").arg(&sysvol).arg(&mnt));
            let copied = (|| -> std::io::Result<()> {
                std::fs::create_dir_all(mnt.join("Boot"))?;
                std::fs::copy(&bcd, mnt.join("Boot/BCD"))?;
                std::fs::write(mnt.join("bootmgr"), b"not a boot manager")?;
                Ok(())
            })();
            umount(&mnt);
            copied.unwrap();
        }
        Layout::Esp => {
            tool(
                Command::new("mkfs.fat")
                    .args(["-F", "32", "-n", "SYSTEM", "-C"])
                    .arg(&sysvol)
                    .arg((SYS_MIB * 1024).to_string()),
            );
            let img = format!("{}", sysvol.display());
            for d in [
                "::/EFI",
                "::/EFI/Microsoft",
                "::/EFI/Microsoft/Boot",
                "::/EFI/Boot",
            ] {
                tool(Command::new("mmd").args(["-i", &img, d]));
            }
            tool(
                Command::new("mcopy")
                    .args(["-i", &img])
                    .arg(&bcd)
                    .arg("::/EFI/Microsoft/Boot/BCD"),
            );
        }
    }

    let win_at = if layout == Layout::Volume {
        1
    } else {
        1 + SYS_MIB
    };
    let disk = dir.join("win.raw");
    std::fs::File::create(&disk)
        .unwrap()
        // GPT keeps a backup table in the last MiB.
        .set_len((win_at + VOL_MIB + 1) * MIB)
        .unwrap();
    let mut sf = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let script = match layout {
        Layout::Volume => format!("start=2048, size={}, type=7\n", VOL_MIB * 2048),
        Layout::SystemReserved => format!(
            "start=2048, size={}, type=7, bootable\nstart={}, size={}, type=7\n",
            SYS_MIB * 2048,
            win_at * 2048,
            VOL_MIB * 2048
        ),
        Layout::Esp => format!(
            "label: gpt\nstart=2048, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
             start={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
            SYS_MIB * 2048,
            win_at * 2048,
            VOL_MIB * 2048
        ),
    };
    sf.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sf.wait().unwrap().success());
    if layout != Layout::Volume {
        dd(&sysvol, &disk, 0, 1, SYS_MIB);
        std::fs::remove_file(&sysvol).unwrap();
    }
    dd(&vol, &disk, 0, win_at, VOL_MIB);
    std::fs::remove_file(&vol).unwrap();
    Guest {
        disk,
        system: sys,
        bcd,
        win_at,
    }
}

fn ntfsfix_clean(vol: &Path) {
    let fix = Command::new("ntfsfix").arg("-n").arg(vol).output().unwrap();
    assert!(
        fix.status.success(),
        "ntfsfix -n {}: {}{}",
        vol.display(),
        String::from_utf8_lossy(&fix.stdout),
        String::from_utf8_lossy(&fix.stderr)
    );
}

/// A path in ../shared/realdata (which may not exist).
/// `xz -dc FROM > TO`.
fn unxz(from: &Path, to: &Path) {
    let out = Command::new("xz").arg("-dc").arg(from).output().unwrap();
    assert!(out.status.success(), "xz -dc {}", from.display());
    std::fs::write(to, out.stdout).unwrap();
}

fn realdata_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel)
}

/// Unmount an ntfs-3g mount (FUSE may still be busy for a moment).
fn umount(mnt: &Path) {
    let mut unmounted = false;
    for _ in 0..50 {
        if Command::new("umount").arg(mnt).status().unwrap().success() {
            unmounted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(unmounted, "umount {}", mnt.display());
}

/// Copy `count` MiB from MiB `skip` of `from` to MiB `seek` of `to`, sparse.
fn dd(from: &Path, to: &Path, skip: u64, seek: u64, count: u64) {
    tool(
        Command::new("dd")
            .arg(format!("if={}", from.display()))
            .arg(format!("of={}", to.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("skip={skip}"))
            .arg(format!("seek={seek}"))
            .arg(format!("count={count}")),
    );
}

fn same(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .args(["-s"])
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

fn ntfscat(vol: &Path, path: &str, to: &Path) {
    let out = Command::new("ntfscat").arg(vol).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(to, out.stdout).unwrap();
}

fn export(hive: &Path, key: &str) -> String {
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit --export {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (hive, key, value, old, new) of every registry change in a run report.
fn registry(doc: &serde_json::Value) -> Vec<[String; 5]> {
    let mut v: Vec<[String; 5]> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["registry"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            [f("hive"), f("key"), f("value"), f("old"), f("new")]
        })
        .collect();
    v.sort();
    v
}

fn row(hive: &str, key: &str, value: &str, old: &str, new: &str) -> [String; 5] {
    [hive, key, value, old, new].map(str::to_string)
}

fn fix_end_to_end(software: &str, stornvme: bool, layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(dir.path(), software, stornvme, layout);
    let (_, loader) = layout.bcd();
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let img = s(&g.disk);

    let mut want = vec![
        row(
            "BCD",
            &format!("Objects\\{BOOTMGR}\\Elements\\16000020"),
            "Element",
            "hex(3):01",
            "hex(3):00",
        ),
        row(
            "BCD",
            &format!("Objects\\{loader}\\Elements\\260000b0"),
            "Element",
            "hex(3):01",
            "hex(3):00",
        ),
        row(
            "BCD",
            &format!("Objects\\{loader}\\Elements\\250000e0"),
            "Element",
            "-",
            "hex(3):01,00,00,00,00,00,00,00",
        ),
        row(
            "SYSTEM",
            "ControlSet001\\Control\\TimeZoneInformation",
            "RealTimeIsUniversal",
            "-",
            "dword:00000001",
        ),
        row(
            "SYSTEM",
            "ControlSet001\\Services\\partmgr\\Parameters",
            "SanPolicy",
            "-",
            "dword:00000001",
        ),
    ];
    if stornvme {
        want.push(row(
            "SYSTEM",
            "ControlSet001\\Services\\stornvme",
            "Start",
            "dword:00000003",
            "dword:00000000",
        ));
        want.push(row(
            "SYSTEM",
            "ControlSet001\\Services\\stornvme\\StartOverride",
            "-",
            "(key)",
            "-",
        ));
    }
    want.sort();

    // The dry run lists the changes and writes nothing.
    let dry = json(&["--dry-run", "--format", "json", img]);
    assert_eq!(registry(&dry), want, "{dry:#}");
    validate_report(&dry);
    assert_eq!(dry["applied"], false);
    assert!(same(&g.disk, &original), "the dry run wrote to the image");
    let human = run(&["--dry-run", img]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    for line in [
        "+[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\TimeZoneInformation]",
        "+\"RealTimeIsUniversal\"=dword:00000001",
        "-\"Element\"=hex(3):01",
        "+\"Element\"=hex(3):00",
        "2 file(s) would change (dry run: nothing written)",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let skipped = dry["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == "windows-stornvme-boot");
    assert_eq!(skipped, !stornvme, "{:#}", dry["preflight"]);

    // The run.
    let t = std::time::Instant::now();
    let doc = json(&["--format", "json", img]);
    eprintln!("{software}: Windows fixup run took {:?}", t.elapsed());
    assert_eq!(registry(&doc), want, "{doc:#}");
    assert_eq!(doc["applied"], true);
    validate_report(&doc);
    let paths: Vec<&str> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    let bcd_path = match layout {
        Layout::Volume => "/Boot/BCD",
        Layout::SystemReserved => "/@system/Boot/BCD",
        Layout::Esp => "/@system/EFI/Microsoft/Boot/BCD",
    };
    assert_eq!(paths, [bcd_path, "/Windows/System32/config/SYSTEM"]);
    if layout != Layout::Volume {
        // The report names the volume that /@system stands for.
        let named = doc["preflight"].as_array().unwrap().iter().any(|c| {
            c["id"] == "windows-system-partition"
                && c["message"].as_str().unwrap().contains("is /@system")
        });
        assert!(named, "{:#}", doc["preflight"]);
    }
    for c in doc["changes"].as_array().unwrap() {
        let b = c["backup"].as_str().unwrap();
        assert_eq!(b, format!("{}.vmie.bak", c["path"].as_str().unwrap()));
    }

    // Read back by the Linux tools.
    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
    ntfsfix_clean(&vol);
    let sys = dir.path().join("SYSTEM.after");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM", &sys);
    let bak = dir.path().join("SYSTEM.bak");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM.vmie.bak", &bak);
    assert!(same(&bak, &g.system), "SYSTEM.vmie.bak is not the original");
    let bcd = dir.path().join("BCD.after");
    let bcd_bak = dir.path().join("BCD.bak");
    match layout {
        Layout::Volume => {
            ntfscat(&vol, "/Boot/BCD", &bcd);
            ntfscat(&vol, "/Boot/BCD.vmie.bak", &bcd_bak);
        }
        Layout::SystemReserved => {
            let sysvol = dir.path().join("sys.ntfs");
            dd(&g.disk, &sysvol, 1, 0, SYS_MIB);
            ntfsfix_clean(&sysvol);
            ntfscat(&sysvol, "/Boot/BCD", &bcd);
            ntfscat(&sysvol, "/Boot/BCD.vmie.bak", &bcd_bak);
        }
        Layout::Esp => {
            let esp = dir.path().join("esp.fat");
            dd(&g.disk, &esp, 1, 0, SYS_MIB);
            let fsck = Command::new("fsck.fat")
                .arg("-n")
                .arg(&esp)
                .output()
                .unwrap();
            assert!(
                fsck.status.success(),
                "fsck.fat -n: {}{}",
                String::from_utf8_lossy(&fsck.stdout),
                String::from_utf8_lossy(&fsck.stderr)
            );
            let img = format!("{}", esp.display());
            for (from, to) in [
                ("::/EFI/Microsoft/Boot/BCD", &bcd),
                ("::/EFI/Microsoft/Boot/BCD.vmie.bak", &bcd_bak),
            ] {
                tool(Command::new("mcopy").args(["-n", "-i", &img, from]).arg(to));
            }
        }
    }
    assert!(same(&bcd_bak, &g.bcd), "BCD.vmie.bak is not the original");
    for h in [&sys, &bcd] {
        let out = Command::new("hivexsh")
            .arg(h)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"ls\nquit\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "hivexsh {}: {}",
            h.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tz = export(&sys, "\\ControlSet001\\Control\\TimeZoneInformation");
    assert!(
        tz.contains("\"RealTimeIsUniversal\"=dword:00000001"),
        "{tz}"
    );
    let pm = export(&sys, "\\ControlSet001\\Services\\partmgr\\Parameters");
    assert!(pm.contains("\"SanPolicy\"=dword:00000001"), "{pm}");
    if stornvme {
        let nv = export(&sys, "\\ControlSet001\\Services\\stornvme");
        assert!(nv.contains("\"Start\"=dword:00000000"), "{nv}");
        assert!(!nv.contains("StartOverride"), "{nv}");
        assert!(
            export(&g.system, "\\ControlSet001\\Services\\stornvme").contains("StartOverride]"),
            "the original has no StartOverride key"
        );
    }
    let ems = export(&bcd, &format!("\\Objects\\{loader}\\Elements\\260000b0"));
    assert!(ems.contains("\"Element\"=hex(3):00"), "{ems}");
    let bootems = export(&bcd, &format!("\\Objects\\{BOOTMGR}\\Elements\\16000020"));
    assert!(bootems.contains("\"Element\"=hex(3):00"), "{bootems}");
    let bsp = export(&bcd, &format!("\\Objects\\{loader}\\Elements\\250000e0"));
    assert!(
        bsp.contains("\"Element\"=hex(3):01,00,00,00,00,00,00,00"),
        "{bsp}"
    );

    // A second run changes nothing (and keeps the first originals).
    let again = json(&["--format", "json", img]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["applied"], false);

    // Undo restores every byte.
    let out = run(&["undo", img]);
    assert!(
        out.status.success(),
        "undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same(&g.disk, &original), "undo did not restore the image");
}

#[test]
fn windows_server_2022_is_fixed_end_to_end() {
    fix_end_to_end("win2k22-software.reg", true, Layout::Volume);
}

#[test]
fn windows_10_is_fixed_end_to_end() {
    fix_end_to_end("win10-software.reg", true, Layout::Volume);
}

#[test]
fn windows_7_32_is_fixed_without_stornvme() {
    // Windows 7 has no inbox NVMe driver: the rule reports and skips it.
    fix_end_to_end("win7-32-software.reg", false, Layout::Volume);
}

#[test]
fn windows_server_2025_bios_with_system_reserved_is_fixed() {
    // A BIOS install: the BCD is on the active "System Reserved" volume.
    fix_end_to_end("win2k25-software.reg", true, Layout::SystemReserved);
}

#[test]
fn windows_11_uefi_with_an_efi_system_partition_is_fixed() {
    // A UEFI install: the BCD (a real UEFI store) is on the FAT32 EFI
    // system partition.
    fix_end_to_end("win11-software.reg", true, Layout::Esp);
}

/// The real SYSTEM hive of a VMware guest (regipy: Windows 7 with two static
/// interfaces, VMware Tools, the RDP firewall rule off): the shipped network,
/// RDP and VMware Tools rules change exactly what they should, hivexregedit
/// reads the results, the rest of the rules key is untouched.
#[test]
fn a_real_vmware_system_hive_gets_dhcp_rdp_and_tools_off() {
    let (system, software, want) = (
            "regipy/SYSTEM",
            "win7-32-software.reg",
            vec![
                row("SYSTEM", "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{698E50A9-4F58-4D86-B61D-F42E58DCACF6}", "EnableDHCP", "dword:00000000", "dword:00000001"),
                row("SYSTEM", "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{6AAFC9A9-0542-4DB2-8760-CCFFA953737C}", "EnableDHCP", "dword:00000000", "dword:00000001"),
                row("SYSTEM", "ControlSet001\\Services\\VMTools", "Start", "dword:00000002", "dword:00000004"),
            ],
    );
    {
        let dir = tempfile::tempdir().unwrap();
        let g = guest_with(
            dir.path(),
            software,
            Some(system),
            false,
            Layout::Volume,
            None,
        );
        let original = dir.path().join("original.raw");
        tool(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&g.disk)
                .arg(&original),
        );
        let img = s(&g.disk);
        let doc = json(&["--format", "json", img]);
        validate_report(&doc);
        let got: Vec<[String; 5]> = registry(&doc)
            .into_iter()
            .filter(|r| r[0] == "SYSTEM")
            .filter(|r| {
                ["EnableDHCP", "fDenyTSConnections"].contains(&r[2].as_str())
                    || r[1].ends_with("VMTools")
                    || r[1].ends_with("VGAuthService")
            })
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{system}: {doc:#}");
        // The firewall rule: the same string with Active=TRUE.
        let fw: Vec<&serde_json::Value> = doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["registry"].as_array().unwrap().iter())
            .filter(|r| r["value"] == "RemoteDesktop-UserMode-In-TCP")
            .collect();
        assert_eq!(fw.len(), 1, "{system}: {doc:#}");

        let vol = dir.path().join("vol.ntfs");
        dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
        ntfsfix_clean(&vol);
        let after = dir.path().join("SYSTEM.after");
        ntfscat(&vol, "/Windows/System32/config/SYSTEM", &after);
        let bak = dir.path().join("SYSTEM.bak");
        ntfscat(&vol, "/Windows/System32/config/SYSTEM.vmie.bak", &bak);
        assert!(
            same(&bak, &g.system),
            "{system}: SYSTEM.vmie.bak is not the original"
        );
        let rules = export(
            &after,
            "\\ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules",
        );
        let before = export(
            &g.system,
            "\\ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules",
        );
        let tcp = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("\"RemoteDesktop-UserMode-In-TCP\""))
                .map(decode_sz)
                .unwrap()
        };
        assert!(tcp(&before).contains("|Active=FALSE|"), "{}", tcp(&before));
        assert_eq!(
            tcp(&rules),
            tcp(&before).replace("|Active=FALSE|", "|Active=TRUE|")
        );
        // Everything else in the rules key is as it was.
        let others = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("\"RemoteDesktop-UserMode-In-TCP\""))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(others(&rules), others(&before));
        let tools = export(&after, "\\ControlSet001\\Services\\VMTools");
        assert!(
            tools.contains("\"Start\"=dword:00000004"),
            "{system}: {tools}"
        );
        let again = json(&["--format", "json", img]);
        assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
        let out = run(&["undo", img]);
        assert!(
            out.status.success(),
            "undo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            same(&g.disk, &original),
            "{system}: undo did not restore the image"
        );
    }
}

/// The text of a `"name"=hex(1):..` line of a hivexregedit export.
fn decode_sz(line: &str) -> String {
    let hex = line
        .split_once("=hex(1):")
        .map(|(_, h)| h)
        .unwrap_or_default();
    let bytes: Vec<u8> = hex
        .split(',')
        .filter(|b| !b.is_empty())
        .map(|b| u8::from_str_radix(b.trim(), 16).unwrap())
        .collect();
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).unwrap()
}

/// regipy's Windows 10 1709 SYSTEM hive was copied while dirty (primary
/// sequence 4317, secondary 4316) and without its logs: the run refuses to
/// edit it, names the hive, and writes nothing.
#[test]
fn a_dirty_real_hive_without_logs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest_with(
        dir.path(),
        "win10-software.reg",
        Some("regipy/SYSTEM_WIN_10_1709"),
        false,
        Layout::Volume,
        None,
    );
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let out = run(&["--format", "json", s(&g.disk)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = doc["preflight"].as_array().unwrap().iter().any(|c| {
        c["severity"] == "error"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("/Windows/System32/config/SYSTEM")
            && c["message"].as_str().unwrap().contains("hive is dirty")
    });
    assert!(refused, "{doc:#}");
    assert_eq!(doc["applied"], false);
    assert!(same(&g.disk, &original), "a refused run wrote to the image");
}

/// `--drivers DIR`: every file of the packages is staged under
/// `\Windows\vmie-drivers` byte for byte (read back by ntfscat), each folder
/// holding an .inf is added to SOFTWARE's DevicePath (hivexregedit), the
/// dry run lists the same and writes nothing, a second run changes nothing,
/// undo restores every byte; a folder without an .inf is refused.
#[test]
fn drivers_are_staged_and_added_to_device_path() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(dir.path(), "win2k22-software.reg", true, Layout::Volume);
    let drivers = dir.path().join("drivers");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("README.txt", b"cloud drivers\r\n".to_vec()),
        (
            "ena/ena.inf",
            b"[Version]\r\nSignature=\"$WINDOWS NT$\"\r\nClass=Net\r\n".to_vec(),
        ),
        (
            "ena/ena.sys",
            (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("ena/ena.cat", vec![0x30, 0x82, 0x01, 0x00]),
        (
            "nvme/x64/AWSNVMe.inf",
            b"[Version]\r\nClass=SCSIAdapter\r\n".to_vec(),
        ),
        ("nvme/x64/AWSNVMe.sys", vec![0x4d, 0x5a, 0x90, 0x00]),
    ];
    for (rel, data) in &files {
        let p = drivers.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let img = s(&g.disk);
    let drv = s(&drivers);

    let dry = json(&["--dry-run", "--format", "json", "--drivers", drv, img]);
    assert!(same(&g.disk, &original), "the dry run wrote");
    let staged = |doc: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["rule"] == "windows-drivers" && c["op"] == "created")
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut want: Vec<String> = files
        .iter()
        .map(|(rel, _)| format!("/Windows/vmie-drivers/{rel}"))
        .collect();
    want.sort();
    assert_eq!(staged(&dry), want, "{dry:#}");

    let doc = json(&["--format", "json", "--drivers", drv, img]);
    validate_report(&doc);
    assert_eq!(staged(&doc), want);
    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
    ntfsfix_clean(&vol);
    for (rel, data) in &files {
        let out = dir.path().join("staged");
        ntfscat(&vol, &format!("/Windows/vmie-drivers/{rel}"), &out);
        assert_eq!(&std::fs::read(&out).unwrap(), data, "{rel}");
    }
    let sw = dir.path().join("SOFTWARE.after");
    ntfscat(&vol, "/Windows/System32/config/SOFTWARE", &sw);
    let cv = export(&sw, "\\Microsoft\\Windows\\CurrentVersion");
    let line = cv
        .lines()
        .find(|l| l.starts_with("\"DevicePath\"=hex(2):"))
        .unwrap_or_else(|| panic!("no DevicePath: {cv}"));
    let text = decode_sz(&line.replacen("hex(2):", "hex(1):", 1));
    assert_eq!(
        text,
        "%SystemRoot%\\inf;%SystemRoot%\\vmie-drivers\\ena;%SystemRoot%\\vmie-drivers\\nvme\\x64"
    );
    let bak = dir.path().join("SOFTWARE.bak");
    ntfscat(&vol, "/Windows/System32/config/SOFTWARE.vmie.bak", &bak);
    // The original has no DevicePath (virt-v2v's export has no
    // CurrentVersion key at all).
    let o = Command::new("hivexregedit")
        .args(["--export"])
        .arg(&bak)
        .arg("\\Microsoft")
        .output()
        .unwrap();
    assert!(o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("DevicePath"));

    let again = json(&["--format", "json", "--drivers", drv, img]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
    let out = run(&["undo", img]);
    assert!(
        out.status.success(),
        "undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same(&g.disk, &original), "undo did not restore the image");

    // No .inf: refused before anything is read from the image.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"x").unwrap();
    let out = run(&["--drivers", s(&empty), img]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no driver package (.inf file)"));
    assert!(same(&g.disk, &original));
}

/// A driver package in the INF dialect of virtio-win's viostor.inf:
/// decorated models for x64 and x86, a boot-start miniport service.
const VIOSTOR_INF: &str = "; a boot-start storage miniport\r\n\
[Version]\r\n\
Signature=\"$WINDOWS NT$\"\r\n\
Class=SCSIAdapter\r\n\
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}\r\n\
Provider=%VENDOR%\r\n\
\r\n\
[Manufacturer]\r\n\
%VENDOR% = VENDOR, NTamd64.6.1, NTx86.6.1\r\n\
\r\n\
[VENDOR.NTamd64.6.1]\r\n\
%Desc% = stor_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001\r\n\
%Desc% = stor_inst, PCI\\VEN_1AF4&DEV_1042\r\n\
\r\n\
[VENDOR.NTx86.6.1]\r\n\
%Desc% = stor_inst, PCI\\VEN_1AF4&DEV_1001\r\n\
\r\n\
[stor_inst]\r\n\
CopyFiles = stor_files\r\n\
\r\n\
[stor_inst.Services]\r\n\
AddService = viostor, 0x00000002, stor_service, stor_eventlog\r\n\
\r\n\
[stor_service]\r\n\
ServiceType    = %SERVICE_KERNEL_DRIVER%\r\n\
StartType      = %SERVICE_BOOT_START%\r\n\
ErrorControl   = 1\r\n\
ServiceBinary  = %12%\\viostor.sys\r\n\
LoadOrderGroup = SCSI miniport\r\n\
\r\n\
[Strings]\r\n\
VENDOR = \"Red Hat, Inc.\"\r\n\
Desc = \"Red Hat VirtIO SCSI controller\"\r\n\
SERVICE_KERNEL_DRIVER = 1\r\n\
SERVICE_BOOT_START = 0\r\n";

/// `--drivers` with a boot-start storage driver: the driver file lands in
/// `System32\drivers` (read back by ntfscat), its service is a boot-start
/// kernel driver, and its hardware ids map to it where that Windows looks:
/// `DriverDatabase` (Windows 8 and later, `ddb`) or the control set's
/// `CriticalDeviceDatabase` (Windows 7). Checked with hivexregedit; dry run
/// = run, second run changes nothing, undo restores every byte; a package
/// missing the driver file its INF names is refused, nothing written.
fn boot_driver_is_registered(software: &str, ddb: bool, system: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // A Windows 8+ SYSTEM hive has a DriverDatabase (stornvme's class-code
    // entry as in a real Windows 10 1709 SYSTEM hive, regipy).
    let extra = (ddb && system.is_none()).then_some(
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DeviceIds]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI\\CC_010802]\n\
         \"stornvme.inf\"=hex(3):01,ff,00,00\n",
    );
    let g = guest_with(
        dir.path(),
        software,
        system,
        system.is_none(),
        Layout::Volume,
        extra,
    );
    let drivers = dir.path().join("drivers");
    std::fs::create_dir_all(drivers.join("viostor")).unwrap();
    let sys: Vec<u8> = (0..30_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(drivers.join("viostor/viostor.inf"), VIOSTOR_INF).unwrap();
    std::fs::write(drivers.join("viostor/viostor.sys"), &sys).unwrap();
    std::fs::write(drivers.join("viostor/viostor.cat"), [0x30, 0x82]).unwrap();
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let img = s(&g.disk);
    let drv = s(&drivers);
    let dry = json(&["--dry-run", "--format", "json", "--drivers", drv, img]);
    assert!(same(&g.disk, &original), "the dry run wrote");
    let doc = json(&["--format", "json", "--drivers", drv, img]);
    validate_report(&doc);
    assert_eq!(registry(&dry), registry(&doc));
    let info = doc["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["message"].as_str())
        .find(|m| m.starts_with("boot-start driver viostor"))
        .unwrap_or_else(|| panic!("no boot-start finding: {doc:#}"))
        .to_string();
    assert!(
        info.contains(if ddb {
            "DriverDatabase"
        } else {
            "CriticalDeviceDatabase"
        }),
        "{info}"
    );

    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
    ntfsfix_clean(&vol);
    let out = dir.path().join("viostor.sys");
    ntfscat(&vol, "/Windows/System32/drivers/viostor.sys", &out);
    assert_eq!(std::fs::read(&out).unwrap(), sys);
    let after = dir.path().join("SYSTEM.after");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM", &after);
    let svc = export(&after, "\\ControlSet001\\Services\\viostor");
    for want in [
        "\"Type\"=dword:00000001",
        "\"Start\"=dword:00000000",
        "\"ErrorControl\"=dword:00000001",
    ] {
        assert!(svc.contains(want), "{want} not in {svc}");
    }
    assert_eq!(
        sz_value(&svc, "Group").as_deref(),
        Some("SCSI miniport"),
        "{svc}"
    );
    let image = svc
        .lines()
        .find(|l| l.starts_with("\"ImagePath\"=hex(2):"))
        .unwrap_or_else(|| panic!("no ImagePath: {svc}"));
    assert_eq!(
        decode_sz(&image.replacen("hex(2):", "hex(1):", 1)),
        "System32\\drivers\\viostor.sys"
    );
    let ids: &[&str] = if software.contains("-32-") {
        &["VEN_1AF4&DEV_1001"]
    } else {
        &[
            "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "VEN_1AF4&DEV_1001",
            "VEN_1AF4&DEV_1042",
        ]
    };
    if ddb {
        let arch = if software.contains("-32-") {
            "x86"
        } else {
            "amd64"
        };
        let package = format!("vmie-viostor.inf_{arch}_0000000000000000");
        for id in ids {
            let k = export(&after, &format!("\\DriverDatabase\\DeviceIds\\PCI\\{id}"));
            assert!(k.contains("\"vmie-viostor.inf\"=hex(3):01,ff,00,00"), "{k}");
            let d = export(
                &after,
                &format!("\\DriverDatabase\\DriverPackages\\{package}\\Descriptors\\PCI\\{id}"),
            );
            assert_eq!(
                sz_value(&d, "Configuration").as_deref(),
                Some("vmie_viostor"),
                "{d}"
            );
        }
        let c = export(
            &after,
            &format!("\\DriverDatabase\\DriverPackages\\{package}\\Configurations\\vmie_viostor"),
        );
        assert_eq!(sz_value(&c, "Service").as_deref(), Some("viostor"), "{c}");
        assert!(c.contains("\"ConfigFlags\"=dword:00000000"), "{c}");
        let p = export(
            &after,
            &format!("\\DriverDatabase\\DriverPackages\\{package}"),
        );
        // The class GUID {4D36E97B-...} as Windows stores it, after the
        // 8-byte header (the layout of stornvme.inf's package in a real
        // Windows 10 SYSTEM hive).
        assert!(
            p.contains("\"Version\"=hex(3):00,ff,09,00,00,00,00,00,7b,e9,36,4d,25,e3,ce,11,bf,c1,08,00,2b,e1,03,18,"),
            "{p}"
        );
        let f = export(&after, "\\DriverDatabase\\DriverInfFiles\\vmie-viostor.inf");
        assert_eq!(sz_value(&f, "Active"), Some(package.clone()), "{f}");
        // The inbox entry is untouched.
        let cc = export(&after, "\\DriverDatabase\\DeviceIds\\PCI\\CC_010802");
        assert!(cc.contains("\"stornvme.inf\"=hex(3):01,ff,00,00"), "{cc}");
    } else {
        for id in ids {
            let k = export(
                &after,
                &format!("\\ControlSet001\\Control\\CriticalDeviceDatabase\\PCI#{id}"),
            );
            assert_eq!(sz_value(&k, "Service").as_deref(), Some("viostor"), "{k}");
            assert_eq!(
                sz_value(&k, "ClassGUID").as_deref(),
                Some("{4d36e97b-e325-11ce-bfc1-08002be10318}"),
                "{k}"
            );
        }
        let o = Command::new("hivexregedit")
            .args(["--export"])
            .arg(&after)
            .arg("\\DriverDatabase")
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "a DriverDatabase was made for Windows 7"
        );
    }
    let h = Command::new("hivexsh")
        .arg(&after)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(h.status.success(), "hivexsh cannot open the hive");

    let again = json(&["--format", "json", "--drivers", drv, img]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
    let out = run(&["undo", img]);
    assert!(
        out.status.success(),
        "undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same(&g.disk, &original), "undo did not restore the image");

    // The INF names viostor.sys; without it the package is refused.
    std::fs::remove_file(drivers.join("viostor/viostor.sys")).unwrap();
    let out = run(&["--drivers", drv, img]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("needs viostor.sys, which is not in that folder"),
        "{err}"
    );
    assert!(same(&g.disk, &original));
}

/// The REG_SZ value `name` of a hivexregedit export (written as hex(1)).
fn sz_value(export: &str, name: &str) -> Option<String> {
    let head = format!("\"{name}\"=hex(1):");
    export.lines().find(|l| l.starts_with(&head)).map(decode_sz)
}

#[test]
fn a_boot_start_driver_is_registered_in_the_driver_database() {
    boot_driver_is_registered("win2k22-software.reg", true, None);
}

/// regipy's SYSTEM: a real Windows 7 SYSTEM hive from a VMware guest: the
/// driver goes into its real control set's CriticalDeviceDatabase.
#[test]
fn a_boot_start_driver_is_registered_in_a_real_windows_7_hive() {
    boot_driver_is_registered("win7-32-software.reg", false, Some("regipy/SYSTEM"));
}

/// regipy's SYSTEM_B: a real Windows 10 SYSTEM hive, dirty, whose
/// `.LOG1`/`.LOG2` hold sequences 2107-2130 while the hive stops at 1621:
/// the logs do not continue it, so it cannot be recovered as Windows would;
/// refused, naming the hive, nothing written.
#[test]
fn a_real_dirty_hive_whose_logs_do_not_continue_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest_with(
        dir.path(),
        "win10-software.reg",
        Some("regipy/SYSTEM_B.xz"),
        false,
        Layout::Volume,
        None,
    );
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let out = run(&["--format", "json", s(&g.disk)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = doc["preflight"].as_array().unwrap().iter().any(|c| {
        c["severity"] == "error"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("/Windows/System32/config/SYSTEM: cannot edit this hive")
            && c["message"]
                .as_str()
                .unwrap()
                .contains("no usable transaction log entry continues its sequence")
    });
    assert!(said, "{:#}", doc["preflight"]);
    assert_eq!(doc["applied"], false);
    assert!(same(&g.disk, &original), "a refused run wrote to the image");
}

#[test]
fn a_boot_start_driver_is_registered_in_the_critical_device_database() {
    boot_driver_is_registered("win7-32-software.reg", false, None);
}

/// A REG_MULTI_SZ as a .reg file writes it.
fn hex7(items: &[&str]) -> String {
    let mut b: Vec<u8> = Vec::new();
    for i in items {
        b.extend(i.encode_utf16().flat_map(u16::to_le_bytes));
        b.extend([0, 0]);
    }
    b.extend([0, 0]);
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("hex(7):{}", h.join(","))
}

/// A guest that came from Parallels (its services and the prl_strg disk
/// filter, as virt-v2v handles them): prl_strg leaves the disk class's
/// LowerFilters (the other filter stays) and then the Parallels services
/// are disabled. A user's rule that disables a driver still listed as a
/// filter is refused with a warning and changes nothing. IDE drivers at 3
/// go to boot-start. Read back by hivexregedit; undo restores every byte.
#[test]
fn a_parallels_guest_loses_its_disk_filter_and_filters_are_never_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let class = "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}";
    let svc = "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services";
    let extra = format!(
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Class]\n\n\
         [{class}]\n\"UpperFilters\"={}\n\"LowerFilters\"={}\n\n\
         [{svc}\\prl_strg]\n\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\n\
         [{svc}\\prl_fs]\n\"Start\"=dword:00000001\n\"Type\"=dword:00000002\n\n\
         [{svc}\\EhStorClass]\n\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\n\
         [{svc}\\intelide]\n\"Start\"=dword:00000003\n\"Type\"=dword:00000001\n\n\
         [{svc}\\atapi]\n\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002\\Services]\n\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002\\Services\\prl_fs]\n\"Start\"=dword:00000001\n",
        hex7(&["partmgr"]),
        hex7(&["EhStorClass", "prl_strg"]),
    );
    let g = guest_with(
        dir.path(),
        "win10-software.reg",
        None,
        true,
        Layout::Volume,
        Some(&extra),
    );
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("user.toml"),
        "[[rule]]\nid = \"user-ehstor-off\"\ndescription = \"disable a filter driver\"\n\
         when = { os = \"windows\" }\n\
         actions = [{ type = \"registry\", hive = \"SYSTEM\", key = 'CurrentControlSet\\Services\\EhStorClass', value = \"Start\", set = { dword = 4 } }]\n\n\
         [[rule]]\nid = \"user-every-cs\"\ndescription = \"a value in every control set\"\n\
         when = { os = \"windows\" }\n\
         actions = [{ type = \"registry\", hive = \"SYSTEM\", key = 'EveryControlSet\\Services\\prl_fs', value = \"VmieMark\", set = { dword = 7 }, only_if = \"present\" }]\n",
    )
    .unwrap();
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let img = s(&g.disk);
    let rl = s(&rules);
    let doc = json(&["--format", "json", "--rules", rl, img]);
    validate_report(&doc);
    let reg = registry(&doc);
    let key_class = "ControlSet001\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}";
    let lower = reg
        .iter()
        .find(|r| r[1] == key_class && r[2] == "LowerFilters")
        .unwrap_or_else(|| panic!("LowerFilters unchanged: {reg:?}"));
    assert_eq!(lower[3], hex7(&["EhStorClass", "prl_strg"]), "{lower:?}");
    assert_eq!(lower[4], hex7(&["EhStorClass"]), "{lower:?}");
    for (svc, old) in [("prl_strg", "0"), ("prl_fs", "1")] {
        assert!(
            reg.iter()
                .any(|r| r[1] == format!("ControlSet001\\Services\\{svc}")
                    && r[2] == "Start"
                    && r[3].contains(old)
                    && r[4].contains('4')),
            "{svc} not disabled: {reg:?}"
        );
    }
    // EveryControlSet: both control sets (Select\Current is 1).
    for cs in ["ControlSet001", "ControlSet002"] {
        assert!(
            reg.iter()
                .any(|r| r[1] == format!("{cs}\\Services\\prl_fs") && r[2] == "VmieMark"),
            "{cs}: {reg:?}"
        );
    }
    assert!(
        reg.iter()
            .any(|r| r[1] == "ControlSet001\\Services\\intelide"
                && r[2] == "Start"
                && r[4].contains('0')),
        "intelide: {reg:?}"
    );
    assert!(
        !reg.iter()
            .any(|r| r[1].contains("EhStorClass") || r[1].contains("atapi")),
        "{reg:?}"
    );
    let warned = doc["preflight"].as_array().unwrap().iter().any(|c| {
        c["id"] == "user-ehstor-off"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("not disabled: EhStorClass is a filter driver of {4d36e967-e325-11ce-bfc1-08002be10318} (LowerFilters)")
    });
    assert!(warned, "{:#}", doc["preflight"]);

    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
    ntfsfix_clean(&vol);
    let after = dir.path().join("SYSTEM.after");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM", &after);
    let c = export(&after, &format!("\\{key_class}"));
    assert!(
        c.contains(&format!("\"LowerFilters\"={}", hex7(&["EhStorClass"]))),
        "{c}"
    );
    assert!(
        c.contains(&format!("\"UpperFilters\"={}", hex7(&["partmgr"]))),
        "{c}"
    );
    let e = export(&after, "\\ControlSet001\\Services\\EhStorClass");
    assert!(e.contains("\"Start\"=dword:00000000"), "{e}");
    let p = export(&after, "\\ControlSet001\\Services\\prl_strg");
    assert!(p.contains("\"Start\"=dword:00000004"), "{p}");

    let again = json(&["--format", "json", "--rules", rl, img]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
    let out = run(&["undo", img]);
    assert!(
        out.status.success(),
        "undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same(&g.disk, &original), "undo did not restore the image");
}

/// The real BCD stores of regipy and EricZimmerman (Windows 10 installs,
/// each with its own default loader), EMS turned on in them by
/// hivexregedit, as the guest's `\Boot\BCD` (replaced by ntfscp, no
/// mount): EMS off in `{bootmgr}` and the default loader, boot status
/// policy set, `vmie-fixup bcd show` and hivexsh read the result, undo
/// restores every byte.
#[test]
fn real_bcd_stores_are_fixed() {
    for (store, default) in [
        ("regipy/BCD", "{733b62e5-f608-11eb-825c-c112f60133ab}"),
        (
            "EricZimmerman-Registry/BCD",
            "{7619dcc9-fafe-11d9-b411-000476eba25f}",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let g = guest(dir.path(), "win2k22-software.reg", true, Layout::Volume);
        let bcd = dir.path().join("BCD.real");
        std::fs::copy(realdata(store), &bcd).unwrap();
        merge(
            &bcd,
            "HKEY_LOCAL_MACHINE\\BCD00000000",
            &format!(
                "[HKEY_LOCAL_MACHINE\\BCD00000000\\Objects\\{BOOTMGR}\\Elements\\16000020]\n\
                 \"Element\"=hex(3):01\n\n\
                 [HKEY_LOCAL_MACHINE\\BCD00000000\\Objects\\{default}\\Elements\\260000b0]\n\
                 \"Element\"=hex(3):01\n"
            ),
            dir.path(),
        );
        let vol = dir.path().join("vol.ntfs");
        dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
        tool(
            Command::new("ntfscp")
                .arg("-f")
                .arg(&vol)
                .arg(&bcd)
                .arg("/Boot/BCD"),
        );
        dd(&vol, &g.disk, 0, g.win_at, VOL_MIB);
        let original = dir.path().join("original.raw");
        tool(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&g.disk)
                .arg(&original),
        );
        let img = s(&g.disk);
        let doc = json(&["--format", "json", img]);
        validate_report(&doc);
        let reg: Vec<[String; 5]> = registry(&doc)
            .into_iter()
            .filter(|r| r[0] == "BCD")
            .collect();
        let has = |key: &str, old: &str, new: &str| {
            reg.iter()
                .any(|r| r[1] == key && r[3] == old && r[4] == new)
        };
        assert!(
            has(
                &format!("Objects\\{BOOTMGR}\\Elements\\16000020"),
                "hex(3):01",
                "hex(3):00"
            ),
            "{store}: {reg:?}"
        );
        assert!(
            has(
                &format!("Objects\\{default}\\Elements\\260000b0"),
                "hex(3):01",
                "hex(3):00"
            ),
            "{store}: {reg:?}"
        );
        assert!(
            reg.iter().any(
                |r| r[1] == format!("Objects\\{default}\\Elements\\250000e0")
                    && r[4] == "hex(3):01,00,00,00,00,00,00,00"
            ),
            "{store}: {reg:?}"
        );
        dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
        ntfsfix_clean(&vol);
        let after = dir.path().join("BCD.after");
        ntfscat(&vol, "/Boot/BCD", &after);
        let show = run(&["bcd", "show", s(&after)]);
        assert!(show.status.success(), "{store}: bcd show failed");
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(
            text.contains("bootems                 No"),
            "{store}: {text}"
        );
        let h = Command::new("hivexsh")
            .arg(&after)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(h.status.success(), "{store}: hivexsh cannot open the BCD");
        let again = json(&["--format", "json", img]);
        assert_eq!(
            again["changes"],
            serde_json::json!([]),
            "{store}: {again:#}"
        );
        let out = run(&["undo", img]);
        assert!(out.status.success());
        assert!(
            same(&g.disk, &original),
            "{store}: undo did not restore the image"
        );
    }
}

/// A dirty SYSTEM hive with its transaction logs (yarp's NewDirtyHive,
/// made by Windows 10, as SYSTEM with SYSTEM.LOG1/.LOG2): the run replays
/// the logs in memory, edits the recovered hive, and writes it back clean:
/// equal sequence numbers, and hivexregedit shows exactly what Windows 10
/// recovered from the same files plus the rule's value; the backup is the
/// dirty original; undo restores every byte.
#[test]
fn a_dirty_hive_with_logs_is_replayed_then_edited() {
    let dir = tempfile::tempdir().unwrap();
    let real = "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive";
    let g = guest_with(
        dir.path(),
        "win10-software.reg",
        Some(real),
        false,
        Layout::Volume,
        None,
    );
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("site.toml"),
        "[[rule]]\nid = \"site-mark\"\ndescription = \"a value in the dirty hive\"\nwhen = { os = \"windows\" }\nactions = [{ type = \"registry\", hive = \"SYSTEM\", key = 'Key3', value = \"vmie\", set = { dword = 1 } }]\n",
    )
    .unwrap();
    let original = dir.path().join("original.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&original),
    );
    let img = s(&g.disk);
    let args = [
        "--format",
        "json",
        "--no-default-rules",
        "--rules",
        s(&rules),
        img,
    ];
    let doc = json(&args);
    let replayed = doc["preflight"].as_array().unwrap().iter().any(|c| {
        c["severity"] == "info"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("was dirty: replayed")
    });
    assert!(replayed, "{doc:#}");
    assert_eq!(
        registry(&doc),
        [row("SYSTEM", "Key3", "vmie", "-", "dword:00000001")]
    );
    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, g.win_at, 0, VOL_MIB);
    ntfsfix_clean(&vol);
    let after = dir.path().join("SYSTEM.after");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM", &after);
    let b = std::fs::read(&after).unwrap();
    assert_eq!(b[4..8], b[8..12], "the written hive is not clean");
    let bak = dir.path().join("SYSTEM.bak");
    ntfscat(&vol, "/Windows/System32/config/SYSTEM.vmie.bak", &bak);
    assert!(
        same(&bak, &g.system),
        "SYSTEM.vmie.bak is not the dirty original"
    );
    let got: Vec<String> = export(&after, "\\")
        .lines()
        .filter(|l| *l != "\"vmie\"=dword:00000001")
        .map(str::to_string)
        .collect();
    let want: Vec<String> = export(
        &realdata("yarp/hives_for_tests/NewDirtyHive1/RecoveredHive_Windows10"),
        "\\",
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(
        got, want,
        "the recovered content differs from Windows 10's recovery"
    );
    assert!(export(&after, "\\Key3").contains("\"vmie\"=dword:00000001"));
    let out = run(&["undo", img]);
    assert!(
        out.status.success(),
        "undo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same(&g.disk, &original), "undo did not restore the image");
}

#[test]
fn a_rule_pack_with_reg_file_and_only_if_works() {
    // Site rules: a .reg file merged into SOFTWARE, a value set only where
    // it equals something, a deletion, a value set only where it is absent
    // (which the second run then leaves alone).
    let dir = tempfile::tempdir().unwrap();
    let g = guest(dir.path(), "win10-software.reg", true, Layout::Volume);
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("site.reg"),
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Vmie]\n\"Site\"=\"yes\"\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("site.toml"),
        r#"[[rule]]
id = "site-software"
description = "d"
when = { os = "windows" }
actions = [
  { type = "registry", hive = "SOFTWARE", reg_file = "site.reg" },
  { type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Services\stornvme', value = "Start", set = { dword = 2 }, only_if = { equals = { dword = 3 } } },
  { type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Services\stornvme', value = "Type", delete = true },
  { type = "registry", hive = "SYSTEM", key = 'CurrentControlSet\Services\stornvme', value = "Group", set = { multi_sz = ["a", "b"] }, only_if = "absent" },
  { type = "bcd", objects = ["loaders"], element = "ems", delete = true },
  { type = "bcd", objects = ["resume"], element = "bootstatuspolicy", integer = 1 },
]
"#,
    )
    .unwrap();
    let img = s(&g.disk);
    let doc = json(&[
        "--format",
        "json",
        "--no-default-rules",
        "--rules",
        s(&rules),
        img,
    ]);
    let mut want = vec![
        row(
            "SOFTWARE",
            "Vmie",
            "Site",
            "-",
            "hex(1):79,00,65,00,73,00,00,00",
        ),
        row(
            "SYSTEM",
            "ControlSet001\\Services\\stornvme",
            "Start",
            "dword:00000003",
            "dword:00000002",
        ),
        row(
            "SYSTEM",
            "ControlSet001\\Services\\stornvme",
            "Type",
            "dword:00000001",
            "-",
        ),
        row(
            "SYSTEM",
            "ControlSet001\\Services\\stornvme",
            "Group",
            "-",
            "hex(7):61,00,00,00,62,00,00,00,00,00",
        ),
        // `delete` on every OS loader; the `resume` role is windeploy's
        // "Resume from Hibernate" object.
        row(
            "BCD",
            &format!("Objects\\{LOADER}\\Elements\\260000b0"),
            "Element",
            "hex(3):01",
            "-",
        ),
        row(
            "BCD",
            "Objects\\{1b67bffc-e290-11eb-8ffa-f459a0d9b879}\\Elements\\250000e0",
            "Element",
            "-",
            "hex(3):01,00,00,00,00,00,00,00",
        ),
    ];
    want.sort();
    assert_eq!(registry(&doc), want, "{doc:#}");
    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, 1, 0, VOL_MIB);
    let sw = dir.path().join("SOFTWARE.after");
    ntfscat(&vol, "/Windows/System32/config/SOFTWARE", &sw);
    assert!(export(&sw, "\\Vmie").contains("\"Site\"=hex(1):79,00,65,00,73,00,00,00"));
    let again = json(&[
        "--format",
        "json",
        "--no-default-rules",
        "--rules",
        s(&rules),
        img,
    ]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
}

#[test]
fn a_preflight_error_writes_nothing() {
    // The shared test disk is not grown: under 6 GiB free on the system
    // volume, an import error. The gate blocks; nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let disk = windows::windows_disk(dir.path(), "win10-software.reg");
    let before = std::fs::read(&disk).unwrap();
    let out = run(&["--format", "json", s(&disk)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["preflight"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "windows-low-free-space" && c["severity"] == "error"),
        "{doc:#}"
    );
    assert_eq!(doc["changes"], serde_json::json!([]));
    assert_eq!(doc["applied"], false);
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the image was written"
    );
}

#[test]
fn a_damaged_hive_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(dir.path(), "win10-software.reg", true, Layout::Volume);
    // SYSTEM with one base-block byte changed (its checksum no longer
    // matches), put in place by ntfscp.
    let mut bad = std::fs::read(&g.system).unwrap();
    bad[4] ^= 0x7;
    let badf = dir.path().join("SYSTEM.bad");
    std::fs::write(&badf, bad).unwrap();
    let vol = dir.path().join("vol.ntfs");
    dd(&g.disk, &vol, 1, 0, VOL_MIB);
    tool(
        Command::new("ntfscp")
            .arg("-f")
            .arg(&vol)
            .arg(&badf)
            .arg("/Windows/System32/config/SYSTEM"),
    );
    dd(&vol, &g.disk, 0, 1, VOL_MIB);
    let before = dir.path().join("before.raw");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&g.disk)
            .arg(&before),
    );
    let out = run(&["--format", "json", s(&g.disk)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<&serde_json::Value> = doc["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{doc:#}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("/Windows/System32/config/SYSTEM: cannot edit this hive"),
        "{doc:#}"
    );
    assert_eq!(doc["applied"], false);
    assert!(same(&g.disk, &before), "the image was written");
}

#[test]
fn bad_windows_rules_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        (
            r#"{ type = "registry", hive = "../SAM", key = "x", value = "v", set = { dword = 1 } }"#,
            "bad hive name",
        ),
        (
            r#"{ type = "registry", hive = "SYSTEM", key = "x", value = "v" }"#,
            "exactly one of",
        ),
        (
            r#"{ type = "registry", hive = "SYSTEM", key = 'a\*', }"#,
            "a key with `*` is never created",
        ),
        (
            r#"{ type = "registry", hive = "SYSTEM", key = "x", value = "v", replace = { from = "", to = "y" } }"#,
            "replace.from is empty",
        ),
        (
            r#"{ type = "registry", hive = "SYSTEM", key = "x", value = "v", set = { dword = 1 }, replace = { from = "a", to = "b" } }"#,
            "exactly one of",
        ),
        (
            r#"{ type = "registry", hive = "SYSTEM", key = "x", delete = true, only_if = "present" }"#,
            "only_if needs a value",
        ),
        (
            r#"{ type = "bcd", objects = ["loaders"], element = "ems", integer = 1 }"#,
            "needs `boolean`",
        ),
        (
            r#"{ type = "bcd", objects = ["loaders"], element = "nosuch", boolean = true }"#,
            "unknown element",
        ),
    ] {
        std::fs::write(
            dir.path().join("bad.toml"),
            format!("[[rule]]\nid = \"x\"\ndescription = \"d\"\nactions = [{bad}]\n"),
        )
        .unwrap();
        let out = run(&["rules", "check", s(dir.path())]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(why) && err.contains("bad.toml:"),
            "{bad}: {err}"
        );
    }
}
