//! Mutation test: structured corruption of a small guest image, then every
//! command of the `vmie-fixup` binary on it.
//!
//! Two base images, both made by the real mke2fs from the demo guest tree
//! plus an htree directory of 400 entries (`/var/lib/many`), in an MBR:
//!
//! - `plain`: ext4 without metadata checksums, so any byte of metadata can be
//!   changed and nothing has to be re-sealed: bytes of the superblock, group
//!   descriptors, bitmaps, inodes and directory blocks (htree root and leaves
//!   included) are set, flipped or zeroed;
//! - `csum`: ext4 with metadata_csum, corrupted through `debugfs -w`, which
//!   re-seals every checksum it writes: bitmap bits freed or set, descriptor
//!   and superblock counts and pointers changed, inode fields (links, size,
//!   flags, block map) changed, names unlinked.
//!
//! Asserted for every case:
//! - no panic, no signal: exit codes are only the documented 0, 1, 2, 3;
//! - a run that fails (exit ≠ 0) leaves the image byte-identical;
//! - a committed fixup never leaves more e2fsck -fn findings than the input
//!   had, and never any on an input e2fsck found clean; its `undo` gives the
//!   input back byte for byte;
//! - with `--check-fs`, a committed fixup leaves e2fsck clean.
//!
//! `VMIE_MUTATION_CASES=N` sets the number of cases per base image (default
//! 60); `VMIE_MUTATION_SEED` the first seed; `VMIE_MUTATION_KEEP=DIR` keeps
//! every mutated input there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const FS_OFFSET: u64 = 1 << 20;
const FS_SIZE_MIB: u64 = 40;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmie-fixup")
}

fn sbin(tool: &str) -> PathBuf {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(d).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} not found (Debian package e2fsprogs / fdisk)");
}

fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// A tiny deterministic generator (xorshift64*), so a failing case is
/// reproduced from its seed alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// A base image and where its metadata lies (byte ranges on the disk).
struct Base {
    disk: PathBuf,
    regions: Vec<(String, u64, u64)>,
    /// Block numbers of file and directory data (for debugfs freeb).
    used_blocks: Vec<u64>,
    _dir: tempfile::TempDir,
}

fn build(csum: bool) -> Base {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trees/demo");
    must(Command::new("cp").arg("-a").arg(&demo).arg(&tree));
    let many = tree.join("var/lib/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..400 {
        std::fs::write(
            many.join(format!(
                "entry-{i:04}-with-a-name-long-enough-to-fill-blocks"
            )),
            format!("{i}\n"),
        )
        .unwrap();
    }
    let fs = dir.path().join("fs.img");
    let features = if csum {
        "metadata_csum,uninit_bg"
    } else {
        "^metadata_csum,^uninit_bg"
    };
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(FS_SIZE_MIB << 20)
        .unwrap();
    must(
        Command::new(sbin("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", features])
            .args(["-U", "de0a0001-0000-4000-8000-00000000abcd", "-L", "rootfs"])
            .args(["-E", "root_owner=0:0,lazy_itable_init=0", "-d"])
            .arg(&tree)
            .arg(&fs)
            .env("E2FSPROGS_FAKE_TIME", "1700000000"),
    );
    let disk = dir.path().join("disk.img");
    let bytes = std::fs::read(&fs).unwrap();
    {
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(FS_OFFSET + (FS_SIZE_MIB << 20) + (1 << 20))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, FS_OFFSET).unwrap();
    }
    let mut sf = Command::new(sbin("sfdisk"));
    sf.args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "label: dos\nlabel-id: 0x5eed00aa\nstart=2048, size={}, type=83, bootable",
            (FS_SIZE_MIB << 20) / 512
        )
        .unwrap();
    }
    assert!(child.wait().unwrap().success());

    // Where the metadata is, from e2fsprogs' own view.
    let fsarg = format!("{}?offset={FS_OFFSET}", disk.display());
    let debugfs = |req: &str| -> String {
        let out = must(Command::new(sbin("debugfs")).args(["-R", req]).arg(&fsarg));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bs = 1024u64;
    let mut regions = vec![
        ("superblock".to_string(), FS_OFFSET + 1024, 1024),
        ("group descriptors".to_string(), FS_OFFSET + 2 * bs, bs),
    ];
    let dumpe2fs = must(Command::new(sbin("dumpe2fs")).arg(&fsarg));
    let text = String::from_utf8_lossy(&dumpe2fs.stdout).into_owned();
    for line in text.lines().take(400) {
        let l = line.trim();
        for (key, what) in [
            ("Block bitmap at ", "block bitmap"),
            ("Inode bitmap at ", "inode bitmap"),
        ] {
            if let Some(rest) = l.strip_prefix(key) {
                let n: u64 = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                regions.push((what.into(), FS_OFFSET + n * bs, bs));
            }
        }
    }
    let mut used_blocks = Vec::new();
    for path in ["/", "/etc", "/var/lib/many", "/boot/grub", "/etc/default"] {
        let blocks = debugfs(&format!("blocks {path}"));
        for b in blocks
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok())
        {
            regions.push((format!("directory block of {path}"), FS_OFFSET + b * bs, bs));
            used_blocks.push(b);
        }
    }
    for path in [
        "/",
        "/etc",
        "/etc/fstab",
        "/etc/default/grub",
        "/boot/grub/grub.cfg",
        "/var/lib/many",
        "/etc/network/interfaces",
        "/bin",
    ] {
        let imap = debugfs(&format!("imap {path}"));
        // "located at block 35, offset 0x0b00"
        let Some(at) = imap.split("located at block ").nth(1) else {
            continue;
        };
        let block: u64 = at.split(',').next().unwrap().trim().parse().unwrap();
        let off = at
            .split("offset 0x")
            .nth(1)
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap();
        regions.push((
            format!("inode of {path}"),
            FS_OFFSET + block * bs + off,
            256,
        ));
    }
    for path in ["/etc/fstab", "/etc/default/grub", "/boot/grub/grub.cfg"] {
        let blocks = debugfs(&format!("blocks {path}"));
        used_blocks.extend(
            blocks
                .split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok()),
        );
    }
    Base {
        disk,
        regions,
        used_blocks,
        _dir: dir,
    }
}

fn plain() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| build(false))
}

fn csum() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| build(true))
}

/// A raw corruption of `plain`: one region, one of several kinds of damage.
fn mutate_raw(base: &Base, rng: &mut Rng, img: &Path) -> String {
    let (what, start, len) = rng.pick(&base.regions).clone();
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    use std::os::unix::fs::FileExt;
    let n = 1 + rng.below(3);
    let mut done = Vec::new();
    for _ in 0..n {
        let off = start + rng.below(len);
        match rng.below(4) {
            0 => {
                let b = [rng.next() as u8];
                f.write_all_at(&b, off).unwrap();
                done.push(format!("byte {off:#x}={:#x}", b[0]));
            }
            1 => {
                let mut b = [0u8];
                std::os::unix::fs::FileExt::read_exact_at(
                    &std::fs::File::open(img).unwrap(),
                    &mut b,
                    off,
                )
                .unwrap();
                b[0] ^= 1 << rng.below(8);
                f.write_all_at(&b, off).unwrap();
                done.push(format!("bit flip at {off:#x}"));
            }
            2 => {
                let off = off & !3;
                let r = rng.next() as u32;
                let v: u32 = *rng.pick(&[0, 1, 0xffff_ffff, 0x7fff_ffff, r]);
                f.write_all_at(&v.to_le_bytes(), off).unwrap();
                done.push(format!("u32 {off:#x}={v:#x}"));
            }
            _ => {
                let l = 1 + rng.below(32);
                f.write_all_at(&vec![0u8; l as usize], off).unwrap();
                done.push(format!("{l} zero bytes at {off:#x}"));
            }
        }
    }
    format!("{what}: {}", done.join(", "))
}

/// A structured corruption of `csum` through debugfs, which re-seals every
/// checksum it writes.
fn mutate_debugfs(base: &Base, rng: &mut Rng, img: &Path) -> String {
    let used = *rng.pick(&base.used_blocks);
    let any_block = rng.below(FS_SIZE_MIB << 10);
    let r = rng.below(1 << 20);
    let num = *rng.pick(&[0u64, 1, 7, 100, 4096, 0xffff, 0xffff_ffff, r]);
    let path = *rng.pick(&[
        "/etc",
        "/etc/fstab",
        "/var/lib/many",
        "/boot/grub/grub.cfg",
        "/",
        "/etc/default/grub",
    ]);
    let reqs: Vec<String> = match rng.below(12) {
        0 => vec![format!("freeb {used}")],
        1 => vec![format!("setb {any_block} {}", 1 + rng.below(64))],
        2 => vec![format!("set_bg {} free_blocks_count {num}", rng.below(5))],
        3 => vec![format!("set_bg {} free_inodes_count {num}", rng.below(5))],
        4 => vec![format!(
            "set_bg {} {} {num}",
            rng.below(5),
            rng.pick(&[
                "block_bitmap",
                "inode_bitmap",
                "inode_table",
                "flags",
                "itable_unused"
            ])
        )],
        5 => vec![format!(
            "ssv {} {num}",
            rng.pick(&[
                "free_blocks_count",
                "free_inodes_count",
                "state",
                "errors",
                "first_data_block",
                "log_block_size",
                "inodes_per_group"
            ])
        )],
        6 => vec![format!(
            "sif {path} {} {num}",
            rng.pick(&[
                "links_count",
                "size",
                "flags",
                "blocks",
                "mode",
                "block[0]",
                "block[3]",
                "block[4]",
                "block[5]"
            ])
        )],
        7 => vec![format!("freei {path}")],
        8 => vec![format!("seti <{}>", 12 + rng.below(600))],
        9 => vec![format!("unlink {path}")],
        10 => vec![
            format!("freeb {used}"),
            format!("set_bg 0 free_blocks_count {num}"),
        ],
        _ => vec![format!("sif /var/lib/many block[{}] {num}", rng.below(15))],
    };
    let fsarg = format!("{}?offset={FS_OFFSET}", img.display());
    // debugfs takes one -R; run each request on its own.
    for r in &reqs {
        let out = Command::new(sbin("debugfs"))
            .args(["-w", "-R", r])
            .arg(&fsarg)
            .output()
            .unwrap();
        assert!(out.status.code().is_some());
    }
    format!("debugfs -w {}", reqs.join(" ; "))
}

fn e2fsck_findings(img: &Path) -> (i32, usize) {
    let out = Command::new(sbin("e2fsck"))
        .arg("-fn")
        .arg(format!("{}?offset={FS_OFFSET}", img.display()))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty()
                && !l.starts_with("Pass ")
                && !l.contains(" files (")
                && !l.starts_with("e2fsck ")
        })
        .count();
    (out.status.code().unwrap_or(-1), n)
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Runs every command on the mutated image and checks the invariants.
fn check_case(img: &Path, label: &str) {
    let s = img.to_str().unwrap();
    let vol = format!("{s}:1");
    let before = sha(img);
    let (fsck_rc, fsck_n) = e2fsck_findings(img);
    let read_only: Vec<Vec<String>> = vec![
        vec!["inspect".into(), s.into()],
        vec!["inspect".into(), "--format".into(), "json".into(), s.into()],
        vec!["ls".into(), "-l".into(), vol.clone(), "/".into()],
        vec!["ls".into(), vol.clone(), "/etc".into()],
        vec![
            "ls".into(),
            "-l".into(),
            vol.clone(),
            "/var/lib/many".into(),
        ],
        vec!["cat".into(), vol.clone(), "/etc/fstab".into()],
        vec![
            "cat".into(),
            vol.clone(),
            "/var/lib/many/entry-0123-with-a-name-long-enough-to-fill-blocks".into(),
        ],
        vec!["--dry-run".into(), s.into()],
        vec![
            "--dry-run".into(),
            "--format".into(),
            "json".into(),
            s.into(),
        ],
    ];
    for args in &read_only {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&a);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0..=3)),
            "{label}: vmie-fixup {a:?} ended with {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked at"),
            "{label}: vmie-fixup {a:?} panicked: {err}"
        );
        assert_eq!(
            sha(img),
            before,
            "{label}: vmie-fixup {a:?} changed the image"
        );
    }

    // The fixup itself.
    let out = run(&[s]);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0..=3)),
        "{label}: the fixup ended with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if code != Some(0) {
        assert_eq!(
            sha(img),
            before,
            "{label}: a refused fixup changed the image"
        );
        return;
    }
    if sha(img) == before {
        return;
    }
    let (rc_after, n_after) = e2fsck_findings(img);
    if fsck_rc == 0 {
        assert_eq!(
            rc_after, 0,
            "{label}: the fixup turned a clean filesystem into one e2fsck finds fault with"
        );
    }
    assert!(
        n_after <= fsck_n,
        "{label}: the fixup made the filesystem worse: e2fsck findings {fsck_n} -> {n_after}"
    );
    let out = run(&["undo", s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: undo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha(img),
        before,
        "{label}: undo did not give the input back"
    );

    // With --check-fs, a committed run leaves e2fsck clean.
    let out = run(&["--check-fs", s]);
    if out.status.code() == Some(0) && sha(img) != before {
        let (rc, _) = e2fsck_findings(img);
        assert_eq!(
            rc, 0,
            "{label}: --check-fs committed, yet e2fsck finds faults"
        );
        assert_eq!(run(&["undo", s]).status.code(), Some(0));
    } else {
        assert_eq!(
            sha(img),
            before,
            "{label}: a refused --check-fs run changed the image"
        );
    }
}

fn cases() -> u64 {
    std::env::var("VMIE_MUTATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn first_seed() -> u64 {
    std::env::var("VMIE_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn campaign(base: &Base, kind: &str, mutate: fn(&Base, &mut Rng, &Path) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("case.img");
    for seed in first_seed()..first_seed() + cases() {
        std::fs::copy(&base.disk, &img).unwrap();
        let mut rng = Rng::new(seed);
        let what = mutate(base, &mut rng, &img);
        // To study a case: VMIE_MUTATION_KEEP=DIR keeps each mutated input.
        if let Ok(keep) = std::env::var("VMIE_MUTATION_KEEP") {
            std::fs::copy(&img, Path::new(&keep).join(format!("{kind}-{seed}.img"))).unwrap();
        }
        check_case(&img, &format!("{kind} seed {seed} ({what})"));
    }
}

#[test]
fn unmutated_bases_fix_cleanly() {
    for base in [plain(), csum()] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("clean.img");
        std::fs::copy(&base.disk, &img).unwrap();
        assert_eq!(e2fsck_findings(&img).0, 0);
        let before = sha(&img);
        let out = run(&["--check-fs", img.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(sha(&img), before, "the demo tree has things to fix");
        assert_eq!(e2fsck_findings(&img).0, 0);
        assert_eq!(run(&["undo", img.to_str().unwrap()]).status.code(), Some(0));
        assert_eq!(sha(&img), before);
    }
}

#[test]
fn check_fs_refuses_a_volume_e2fsck_finds_fault_with() {
    let base = csum();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad.img");
    std::fs::copy(&base.disk, &img).unwrap();
    // A data block of /etc/fstab marked free, counts left as they were: the
    // kind of damage only a full check sees.
    let fsarg = format!("{}?offset={FS_OFFSET}", img.display());
    let blocks = must(
        Command::new(sbin("debugfs"))
            .args(["-R", "blocks /etc/hostname"])
            .arg(&fsarg),
    );
    let b: u64 = String::from_utf8_lossy(&blocks.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    must(
        Command::new(sbin("debugfs"))
            .args(["-w", "-R", &format!("freeb {b}")])
            .arg(&fsarg),
    );
    // Make the descriptor's and the superblock's free counts agree with the
    // bitmap, so that only a full check can see the block is in use.
    let group = (b - 1) / 8192; // 1 KiB blocks: block 0 is before group 0
    let dump = must(Command::new(sbin("dumpe2fs")).arg(&fsarg));
    let text = String::from_utf8_lossy(&dump.stdout).into_owned();
    let section = text
        .split(&format!("Group {group}:"))
        .nth(1)
        .unwrap()
        .split("\nGroup ")
        .next()
        .unwrap()
        .to_string();
    let free_line = section
        .lines()
        .find(|l| l.trim_start().starts_with("Free blocks:"))
        .unwrap();
    let bitmap_free: u64 = free_line
        .trim_start()
        .trim_start_matches("Free blocks:")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, z)) => z.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum();
    let sb_free: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for req in [
        format!("set_bg {group} free_blocks_count {bitmap_free}"),
        format!("set_bg {group} checksum calc"),
        format!("ssv free_blocks_count {}", sb_free + 1),
    ] {
        must(
            Command::new(sbin("debugfs"))
                .args(["-w", "-R", &req])
                .arg(&fsarg),
        );
    }
    assert_ne!(e2fsck_findings(&img).0, 0);
    let before = sha(&img);
    // Without --check-fs our writer cannot see this damage (it is not where
    // it allocates); with it, nothing is written.
    for args in [
        vec!["--check-fs", img.to_str().unwrap()],
        vec!["--check-fs", "--dry-run", img.to_str().unwrap()],
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("partition 1") && err.contains("e2fsck"),
            "{err}"
        );
        assert_eq!(sha(&img), before);
    }
}

#[test]
fn raw_metadata_corruption() {
    campaign(plain(), "plain", mutate_raw);
}

#[test]
fn resealed_debugfs_corruption() {
    campaign(csum(), "csum", mutate_debugfs);
}

/// When the checker finds a fault after the commit, the commit is rolled
/// back through its undo journal. Our writer leaves no such fault on a clean
/// volume, so the checker is stood in for by one that passes the first check
/// (through the real e2fsck) and fails the second.
#[test]
fn check_fs_rolls_back_a_commit_the_checker_rejects() {
    use std::os::unix::fs::PermissionsExt;
    let base = csum();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vm.img");
    std::fs::copy(&base.disk, &img).unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let script = bin_dir.join("e2fsck");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}\nif [ \"$n\" = 0 ]; then exec {real} \"$@\"; fi\necho 'Inode 12 ref count is 2, should be 1.'\nexit 4\n",
            c = dir.path().join("count").display(),
            real = sbin("e2fsck").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = sha(&img);
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin())
        .args(["--check-fs", img.to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rolled back") && err.contains("ref count"),
        "{err}"
    );
    assert_eq!(sha(&img), before, "the image is as it was");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("vmie-undo"))
        .collect();
    assert!(left.is_empty(), "the journal is retired: {left:?}");
}
