//! md arrays made by the real kernel through guestfish (libguestfs-tools),
//! built once per script and cached under the target directory, and the
//! host's `mdadm --examine` as the independent reader of superblocks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    missing_debug_implementations
)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use vmie_disk::{Device, FileDevice};

/// Bump to rebuild every cached fixture.
const FIXTURE_VERSION: u32 = 1;

/// One guestfish appliance at a time per test binary (2 cores, TCG).
static GUESTFISH: Mutex<()> = Mutex::new(());

fn guestfish() -> Command {
    let mut c = Command::new("guestfish");
    c.env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    c
}

/// A set of disk images holding md arrays, and what guestfish printed
/// while making them.
pub struct Fixture {
    pub dir: PathBuf,
    pub disks: Vec<PathBuf>,
    pub log: String,
}

impl Fixture {
    /// The value printed after `echo NAME` in the script.
    pub fn fact(&self, name: &str) -> String {
        let mut lines = self.log.lines();
        while let Some(l) = lines.next() {
            if l.trim() == name {
                return lines.next().unwrap_or_default().trim().to_string();
            }
        }
        panic!("no {name} in the guestfish log:\n{}", self.log)
    }

    /// Sparse copies of the disks in a fresh directory (for write tests).
    pub fn copy(&self) -> (tempfile::TempDir, Vec<PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        for d in &self.disks {
            let to = t.path().join(d.file_name().unwrap());
            let st = Command::new("cp")
                .arg("--sparse=always")
                .arg(d)
                .arg(&to)
                .status()
                .unwrap();
            assert!(st.success());
            out.push(to);
        }
        (t, out)
    }
}

/// A deterministic blob of `n` bytes.
pub fn blob(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Disks of `sizes_mib` MiB, made by running `script` (guestfish commands;
/// `@DIR@` is the build directory, where `blob.bin` of `blob_len` bytes is
/// written first) once; cached by a hash of everything that goes in.
pub fn fixture(name: &str, sizes_mib: &[u64], blob_len: usize, script: &str) -> Fixture {
    let mut h = DefaultHasher::new();
    (FIXTURE_VERSION, name, sizes_mib, blob_len, script).hash(&mut h);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("md-fixtures");
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(format!("{name}-{:016x}", h.finish()));
    let disks: Vec<PathBuf> = (0..sizes_mib.len())
        .map(|i| dir.join(format!("d{i}.img")))
        .collect();
    let done = |dir: &Path| std::fs::read_to_string(dir.join("guestfish.out")).ok();
    if let Some(log) = done(&dir) {
        return Fixture { dir, disks, log };
    }
    let _g = GUESTFISH.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(log) = done(&dir) {
        return Fixture { dir, disks, log };
    }
    // Built in a private directory and renamed into place, so another
    // test binary building the same fixture never sees half of it.
    let tmp = root.join(format!(
        "{name}.tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("blob.bin"), blob(blob_len, 7)).unwrap();
    let mut cmd = guestfish();
    for (i, mib) in sizes_mib.iter().enumerate() {
        let p = tmp.join(format!("d{i}.img"));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        cmd.arg("-a").arg(&p);
    }
    let script = script.replace("@DIR@", tmp.to_str().unwrap());
    let out = run_stdin(cmd, &script);
    std::fs::remove_file(tmp.join("blob.bin")).unwrap();
    std::fs::write(tmp.join("guestfish.out"), &out).unwrap();
    if std::fs::rename(&tmp, &dir).is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    Fixture {
        dir: dir.clone(),
        disks,
        log: done(&dir).unwrap(),
    }
}

fn run_stdin(mut cmd: Command, script: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guestfish (Debian package libguestfs-tools)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "guestfish failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A real kernel assembles the arrays on `disks` (read-only): the md
/// devices it made, and `cat PATH` of the filesystem on the first.
pub fn kernel_cat(disks: &[PathBuf], path: &str) -> (Vec<String>, Vec<u8>) {
    let _g = GUESTFISH.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = guestfish();
    cmd.arg("--ro");
    for d in disks {
        cmd.arg("-a").arg(d);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The appliance leaves an array with a member missing inactive: start
    // it degraded, as `mdadm --run` does at boot after a timeout.
    writeln!(
        stdin,
        "run\ndebug sh \"for d in /dev/md[0-9]*; do mdadm --run $d; done >/dev/null 2>&1; true\"\n\
         list-md-devices\necho @END@"
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut mds = Vec::new();
    loop {
        let mut l = String::new();
        assert!(
            stdout.read_line(&mut l).unwrap() > 0,
            "guestfish ended early"
        );
        if l.trim() == "@END@" {
            break;
        }
        if !l.trim().is_empty() {
            mds.push(l.trim().to_string());
        }
    }
    assert!(!mds.is_empty(), "the kernel assembled no md array");
    let local = std::env::temp_dir().join(format!("md-kernel-cat-{}", std::process::id()));
    writeln!(
        stdin,
        "mount-ro {} /\ndownload {path} {}\nexit",
        mds[0],
        local.display()
    )
    .unwrap();
    drop(stdin);
    let st = child.wait().unwrap();
    assert!(st.success(), "guestfish read-back failed");
    let data = std::fs::read(&local).unwrap();
    std::fs::remove_file(&local).ok();
    (mds, data)
}

/// Partition 1 of an image, as a device over the file (read-write when
/// `rw`).
pub fn part1(img: &Path, rw: bool) -> Arc<dyn Device> {
    let f: Arc<dyn Device> = Arc::new(if rw {
        FileDevice::open_rw(img).unwrap()
    } else {
        FileDevice::open(img).unwrap()
    });
    let t = vmie_part::read_partitions(f, &vmie_part::PartOptions::default()).unwrap();
    Arc::new(t.partitions[0].device.clone())
}

/// (start, size) in bytes of partition 1, from sfdisk.
pub fn part1_range(img: &Path) -> (u64, u64) {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| -> u64 {
        let i = s.find(key).unwrap() + key.len();
        let rest = s[i..].trim_start_matches([' ', ':']);
        rest.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    (num("\"start\"") * 512, num("\"size\"") * 512)
}

/// `mdadm --examine` of partition 1 of `img` (copied out sparse, since
/// mdadm reads superblocks at offsets of the device it is given):
/// `key : value` pairs.
pub fn examine(img: &Path) -> Vec<(String, String)> {
    let (start, size) = part1_range(img);
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("part");
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", p.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={}", start / 512))
        .arg(format!("count={}", size / 512))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("mdadm")
        .arg("--examine")
        .arg(&p)
        .output()
        .expect("mdadm (Debian package mdadm)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mdadm --examine refused {}: {}{}",
        img.display(),
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub fn get<'a>(kv: &'a [(String, String)], key: &str) -> &'a str {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in mdadm --examine: {kv:?}"))
}

pub const BLOB: usize = 3 << 20;

/// The commands that put a filesystem with /hello and /dir/blob on `md`
/// and stop the array cleanly.
pub fn fill(md: &str, hello: &str) -> String {
    format!(
        "mkfs ext4 {md}\n\
         mount {md} /\n\
         write /hello \"{hello}\"\n\
         mkdir /dir\n\
         upload @DIR@/blob.bin /dir/blob\n\
         echo SIZE\n\
         blockdev-getsize64 {md}\n\
         echo HELLO\n\
         cat /hello\n\
         umount-all\n\
         debug sh \"mdadm --wait {md} 2>&1; true\"\n\
         md-stop {md}\n"
    )
}

pub fn raid1(meta: &str) -> Fixture {
    let hello = format!("hello from raid1 {meta}");
    let create = if meta == "1.2" {
        // guestfish's own command (mdadm's default metadata, 1.2).
        "md-create md0 \"/dev/sda1 /dev/sdb1\" level:raid1\n".to_string()
    } else {
        format!(
            "debug sh \"mdadm --create /dev/md0 --run --metadata={meta} --level=1 \
             --raid-devices=2 /dev/sda1 /dev/sdb1 2>&1\"\n"
        )
    };
    let md = if meta == "1.2" {
        "/dev/md/md0"
    } else {
        "/dev/md0"
    };
    let script = format!(
        "run\npart-disk /dev/sda mbr\npart-disk /dev/sdb mbr\n{create}{}",
        fill(md, &hello)
    );
    fixture(&format!("raid1-{meta}"), &[64, 64], BLOB, &script)
}

pub const LINEAR_BLOB: usize = 70 << 20;

pub fn linear() -> Fixture {
    linear_meta("1.2")
}

pub fn linear_meta(meta: &str) -> Fixture {
    let script = format!(
        "run\npart-disk /dev/sda mbr\npart-disk /dev/sdb mbr\n\
         debug sh \"mdadm --create /dev/md0 --run --metadata={meta} --level=linear \
         --raid-devices=2 /dev/sda1 /dev/sdb1 2>&1\"\n{}",
        fill("/dev/md0", "hello linear")
    );
    fixture(&format!("linear-{meta}"), &[64, 48], LINEAR_BLOB, &script)
}
