//! Hostile volumes: chains that loop or leave the volume, bad BPBs, a
//! directory chain that loops, truncated images, random corruption, an
//! FSInfo sector with absurd counts. Each gives a clean error in bounded
//! time, and a refused write leaves the device bytes unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use vmie_disk::{Device, MemDevice};
use vmie_fat::FatFs;
use vmie_guestfs::{FsError, GuestFs, GuestFsExt, GuestPath, NewAttrs};

type Patch = Box<dyn Fn(&mut Vec<u8>)>;
type WriteOp = dyn Fn(&mut FatFs) -> Result<(), FsError>;

struct G {
    bps: usize,
    reserved: usize,
    nfats: usize,
    fatsz: usize,
    root_entries: usize,
    spc: usize,
    bits: u32,
}

fn geo(b: &[u8], bits: u32) -> G {
    let fat16 = u16::from_le_bytes([b[22], b[23]]) as usize;
    G {
        bps: u16::from_le_bytes([b[11], b[12]]) as usize,
        spc: b[13] as usize,
        reserved: u16::from_le_bytes([b[14], b[15]]) as usize,
        nfats: b[16] as usize,
        root_entries: u16::from_le_bytes([b[17], b[18]]) as usize,
        fatsz: if fat16 != 0 {
            fat16
        } else {
            u32::from_le_bytes([b[36], b[37], b[38], b[39]]) as usize
        },
        bits,
    }
}

impl G {
    fn data(&self) -> usize {
        (self.reserved + self.nfats * self.fatsz) * self.bps + self.root_entries * 32
    }
    fn cluster(&self, c: usize) -> usize {
        self.data() + (c - 2) * self.spc * self.bps
    }
    fn set_fat(&self, b: &mut [u8], c: usize, v: u32) {
        for k in 0..self.nfats {
            let fat = (self.reserved + k * self.fatsz) * self.bps;
            match self.bits {
                16 => b[fat + 2 * c..fat + 2 * c + 2].copy_from_slice(&(v as u16).to_le_bytes()),
                _ => b[fat + 4 * c..fat + 4 * c + 4].copy_from_slice(&v.to_le_bytes()),
            }
        }
    }
    /// First cluster of the short entry `name` in the directory at byte `dir`.
    fn first_cluster(&self, b: &[u8], dir: usize, name: &[u8; 11]) -> usize {
        for e in b[dir..dir + 8192].chunks_exact(32) {
            if &e[..11] == name {
                let lo = u16::from_le_bytes([e[26], e[27]]) as usize;
                let hi = u16::from_le_bytes([e[20], e[21]]) as usize;
                return hi << 16 | lo;
            }
        }
        panic!("{name:?} not found");
    }
    /// Data clusters of the volume.
    fn cluster_count(&self, b: &[u8]) -> u32 {
        let tot16 = u16::from_le_bytes([b[19], b[20]]) as usize;
        let total = if tot16 != 0 {
            tot16
        } else {
            u32::from_le_bytes([b[32], b[33], b[34], b[35]]) as usize
        };
        ((total * self.bps - self.data()) / (self.spc * self.bps)) as u32
    }
    fn root(&self) -> usize {
        if self.bits == 32 {
            self.cluster(2)
        } else {
            (self.reserved + self.nfats * self.fatsz) * self.bps
        }
    }
}

fn mem(b: Vec<u8>) -> (Arc<MemDevice>, Result<FatFs, FsError>) {
    let d = Arc::new(MemDevice::new("hostile", b));
    let fs = FatFs::open(d.clone() as Arc<dyn Device>, "hostile").map(|f| f.with_clock(NOW));
    (d, fs)
}

fn corrupt(r: Result<impl std::fmt::Debug, FsError>, what: &str) -> String {
    match r {
        Err(e @ FsError::Corrupt { .. }) => e.to_string(),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// Every write on `fs` that walks the chain of `path` is refused as
/// corrupt and writes nothing (a rename of `path` itself does not walk it).
fn writes_refused(dev: &MemDevice, fs: &mut FatFs, path: &str) {
    let before = dev.contents();
    let p = GuestPath::from(path);
    corrupt(fs.replace_file(&p, b"new contents"), "replace");
    corrupt(fs.remove(&p), "remove");
    assert!(
        dev.contents() == before,
        "a refused write changed the device"
    );
    // Renaming over it walks its chain to free it.
    let other = GuestPath::from("/other.bin");
    fs.create_file(&other, b"o", &NewAttrs::default()).unwrap();
    let with_other = dev.contents();
    corrupt(fs.rename(&other, &p), "rename over it");
    assert!(
        dev.contents() == with_other,
        "a refused rename changed the device"
    );
    fs.remove(&other).unwrap();
}

#[test]
fn fat_chain_loop_and_past_the_end() {
    for bits in [16u32, 32] {
        let img = mkfs(bits, if bits == 16 { 20_000 } else { 40_000 }, &[]);
        let cs_guess = if bits == 16 { 2048 } else { 512 };
        img.put("/LOOP.BIN", &pattern(5 * cs_guess, 1));
        img.put("/PAST.BIN", &pattern(5 * cs_guess, 2));
        let mut b = img.bytes();
        let g = geo(&b, bits);
        assert_eq!(g.spc * g.bps, cs_guess);
        let l = g.first_cluster(&b, g.root(), b"LOOP    BIN");
        g.set_fat(&mut b, l + 2, l as u32);
        let p = g.first_cluster(&b, g.root(), b"PAST    BIN");
        let past = if bits == 16 { 0xFFE0 } else { 0x0FFF_FF00 };
        g.set_fat(&mut b, p + 1, past);
        let (dev, fs) = mem(b);
        let mut fs = fs.unwrap();
        let e = corrupt(fs.read("/LOOP.BIN"), "loop");
        assert!(e.contains("loops"), "{e}");
        let e = corrupt(fs.read("/past.bin"), "past");
        assert!(e.contains("past the last cluster"), "{e}");
        writes_refused(&dev, &mut fs, "/LOOP.BIN");
        writes_refused(&dev, &mut fs, "/PAST.BIN");
    }
}

#[test]
fn directory_chain_loop() {
    let img = mkfs(32, 40_000, &[]);
    img.mmd("/DIR");
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("file number {i}"), vec![b'x']))
        .collect();
    img.put_many("/DIR", &files);
    let mut b = img.bytes();
    let g = geo(&b, 32);
    let d = g.first_cluster(&b, g.root(), b"DIR        ");
    // The directory spans several clusters; its third links back to its first.
    let fat = g.reserved * g.bps;
    let second = u32::from_le_bytes(b[fat + 4 * d..fat + 4 * d + 4].try_into().unwrap()) as usize;
    let third = u32::from_le_bytes(
        b[fat + 4 * second..fat + 4 * second + 4]
            .try_into()
            .unwrap(),
    ) as usize;
    assert!(third < 0x0FFF_FFF8);
    g.set_fat(&mut b, third, d as u32);
    let (dev, fs) = mem(b);
    let mut fs = fs.unwrap();
    let e = corrupt(fs.read_dir(&GuestPath::from("/DIR")), "dir loop");
    assert!(e.contains("loops"), "{e}");
    let before = dev.contents();
    corrupt(
        fs.create_file(&GuestPath::from("/DIR/new"), b"x", &NewAttrs::default()),
        "create in looping dir",
    );
    corrupt(fs.remove(&GuestPath::from("/DIR")), "remove looping dir");
    corrupt(
        fs.mkdir(&GuestPath::from("/DIR/sub"), &NewAttrs::default()),
        "mkdir in looping dir",
    );
    corrupt(
        fs.replace_file(&GuestPath::from("/DIR/file number 39"), b"y"),
        "replace in looping dir",
    );
    assert!(dev.contents() == before);
    fs.create_file(&GuestPath::from("/top"), b"t", &NewAttrs::default())
        .unwrap();
    let before = dev.contents();
    corrupt(
        fs.rename(&GuestPath::from("/top"), &GuestPath::from("/DIR/top")),
        "rename into looping dir",
    );
    assert!(dev.contents() == before);
    // The root still reads.
    assert!(fs.read_dir(&GuestPath::root()).is_ok());
}

#[test]
fn subdirectory_pointing_at_its_ancestor() {
    let img = mkfs(32, 40_000, &[]);
    img.mmd("/A");
    img.mmd("/A/B");
    let mut b = img.bytes();
    let g = geo(&b, 32);
    let a = g.first_cluster(&b, g.root(), b"A          ");
    let adir = g.cluster(a);
    // B's entry in A now names A itself.
    for e in b[adir..adir + 512].chunks_exact_mut(32) {
        if &e[..11] == b"B          " {
            e[26..28].copy_from_slice(&(a as u16).to_le_bytes());
            e[20..22].copy_from_slice(&((a >> 16) as u16).to_le_bytes());
        }
    }
    let (_dev, fs) = mem(b);
    let fs = fs.unwrap();
    let e = corrupt(fs.read_dir(&GuestPath::from("/A/B/B/B/x")), "ancestor");
    assert!(e.contains("loop"), "{e}");
}

#[test]
fn bad_boot_sectors() {
    let img = mkfs(16, 20_000, &[]);
    let good = img.bytes();
    let cases: Vec<(&str, Patch)> = vec![
        ("0 sectors per cluster", Box::new(|b| b[13] = 0)),
        ("3 sectors per cluster", Box::new(|b| b[13] = 3)),
        (
            "bytes per sector 0",
            Box::new(|b| b[11..13].copy_from_slice(&0u16.to_le_bytes())),
        ),
        (
            "bytes per sector 8192",
            Box::new(|b| b[11..13].copy_from_slice(&8192u16.to_le_bytes())),
        ),
        (
            "bytes per sector 768",
            Box::new(|b| b[11..13].copy_from_slice(&768u16.to_le_bytes())),
        ),
        (
            "0 reserved",
            Box::new(|b| b[14..16].copy_from_slice(&0u16.to_le_bytes())),
        ),
        ("0 FATs", Box::new(|b| b[16] = 0)),
        ("200 FATs", Box::new(|b| b[16] = 200)),
        (
            "huge total",
            Box::new(|b| {
                b[19..21].copy_from_slice(&0u16.to_le_bytes());
                b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
        ),
        (
            "huge FAT",
            Box::new(|b| b[22..24].copy_from_slice(&u16::MAX.to_le_bytes())),
        ),
        (
            "tiny FAT",
            Box::new(|b| b[22..24].copy_from_slice(&1u16.to_le_bytes())),
        ),
        ("no signature", Box::new(|b| b[510] = 0)),
        (
            "0 total",
            Box::new(|b| {
                b[19..21].copy_from_slice(&0u16.to_le_bytes());
                b[32..36].copy_from_slice(&0u32.to_le_bytes());
            }),
        ),
    ];
    for (what, patch) in cases {
        let mut b = good.clone();
        patch(&mut b);
        let (_, fs) = mem(b);
        match fs {
            Err(FsError::Corrupt { place, detail, .. }) => {
                assert!(place.contains("boot sector"), "{what}: {place} {detail}")
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // FAT32 with a root cluster outside the volume.
    let img = mkfs(32, 40_000, &[]);
    let mut b = img.bytes();
    b[44..48].copy_from_slice(&0x0FFF_FF00u32.to_le_bytes());
    assert!(mem(b).1.is_err());
}

#[test]
fn truncated_images() {
    let img = mkfs(32, 40_000, &[]);
    img.put("/f", b"x");
    let b = img.bytes();
    for len in [0usize, 100, 511, 4096, b.len() / 2, b.len() - 1] {
        let (_, fs) = mem(b[..len].to_vec());
        let e = fs.expect_err("a truncated image must be refused");
        assert!(matches!(e, FsError::Corrupt { .. }), "{len}: {e}");
    }
}

/// Random bytes flipped in the metadata (boot sector, FATs, root
/// directory, first clusters): every operation returns, none panics; a
/// failed write leaves the device as it was.
#[test]
fn random_corruption_never_panics() {
    let img = mkfs(12, 1024, &[]);
    img.mmd("/EFI");
    img.mmd("/EFI/BOOT");
    img.put("/EFI/BOOT/BOOTX64.EFI", &pattern(9000, 3));
    img.put("/grub.cfg", b"set timeout=5\n");
    img.put("/A long file name.txt", &pattern(3000, 4));
    let good = img.bytes();
    let g = geo(&good, 12);
    let meta_end = g.cluster(12);
    let mut x = 0x1234_5678u32;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let cases = std::env::var("VMIE_PROPTEST_CASES")
        .or_else(|_| std::env::var("PROPTEST_CASES"))
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(300, |n| n.max(24) * 10);
    let mut opened = 0;
    for _ in 0..cases {
        let mut b = good.clone();
        for _ in 0..(rnd() % 8 + 1) {
            let at = (rnd() as usize) % meta_end;
            b[at] = rnd() as u8;
        }
        let (dev, fs) = mem(b);
        let Ok(mut fs) = fs else { continue };
        opened += 1;
        for p in ["/", "/EFI", "/EFI/BOOT"] {
            if let Ok((_, ents)) = fs.list(p) {
                for e in ents {
                    let mut q = p.trim_end_matches('/').to_string();
                    q.push('/');
                    q.push_str(&String::from_utf8_lossy(&e.name));
                    let _ = fs.read(&q);
                }
            }
        }
        let before = dev.contents();
        let ops: [&WriteOp; 4] = [
            &|fs| fs.replace_file(&GuestPath::from("/grub.cfg"), &[7; 5000]),
            &|fs| {
                fs.create_file(
                    &GuestPath::from("/EFI/new name.cfg"),
                    b"x",
                    &NewAttrs::default(),
                )
            },
            &|fs| {
                fs.rename(
                    &GuestPath::from("/EFI/BOOT/BOOTX64.EFI"),
                    &GuestPath::from("/moved"),
                )
            },
            &|fs| fs.remove(&GuestPath::from("/A long file name.txt")),
        ];
        for op in ops {
            let snapshot = dev.contents();
            if op(&mut fs).is_err() {
                assert!(
                    dev.contents() == snapshot,
                    "a failed write changed the device"
                );
            }
        }
        drop(before);
    }
    assert!(
        opened > cases / 4,
        "only {opened} of {cases} corrupted volumes opened"
    );
}

/// FSInfo's counts are hints (Microsoft's specification; Linux and fsck.fat
/// recompute them): absurd ones are not carried into what we write. A free
/// count larger than the volume, or smaller than what a write allocates,
/// becomes "unknown" (0xFFFFFFFF); a next-free hint outside the data area
/// is not followed and is replaced by the last cluster allocated. The
/// writes go through, fsck.fat -n is clean and the fatfs crate mounts the
/// result.
#[test]
fn fsinfo_with_absurd_counts() {
    let le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    for (free, next) in [(0xFFFF_FFF0u32, 0x0FFF_FFF0u32), (3, 1), (0, 0xFFFF_FFFE)] {
        let img = mkfs(32, 40_000, &[]);
        let mut b = img.bytes();
        let g = geo(&b, 32);
        let fsi = u16::from_le_bytes([b[48], b[49]]) as usize * g.bps;
        b[fsi + 488..fsi + 492].copy_from_slice(&free.to_le_bytes());
        b[fsi + 492..fsi + 496].copy_from_slice(&next.to_le_bytes());
        std::fs::write(&img.path, &b).unwrap();
        let mut s = open(&img.path);
        assert_eq!(s.fs.independent_check_gap().unwrap(), None);
        s.fs.create_file(&gp("/big.bin"), &pattern(20_000, 5), &NewAttrs::default())
            .unwrap();
        s.commit();
        let after = img.bytes();
        let new_free = le(&after, fsi + 488);
        let new_next = le(&after, fsi + 492);
        assert_eq!(
            new_free, 0xFFFF_FFFF,
            "free count {free:#x} -> {new_free:#x}"
        );
        assert!(
            (2..=g.cluster_count(&after) + 1).contains(&new_next),
            "next free {next:#x} -> {new_next:#x}"
        );
        // fsck.fat -n: clean but for its note that the free count is
        // unknown, which FAT allows.
        let out = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&img.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let complaints: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.starts_with("fsck.fat ")
                    && !l.contains(" files, ")
                    && !l.starts_with("Free cluster summary uninitialized")
            })
            .collect();
        assert!(out.status.success() && complaints.is_empty(), "{text}");
        assert_eq!(
            fatfs_tree(&img.path).get("/big.bin"),
            Some(&Some(pattern(20_000, 5)))
        );
    }
}
