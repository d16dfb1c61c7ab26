//! Hostile superblocks: real members made by the kernel, then damaged (and
//! re-sealed with a fresh checksum where the damage must reach the checks
//! behind it). Clean errors or arrays listed as not opened, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use vmie_disk::{Device, DiskError};
use vmie_md::{assemble, Assembly, MdError, MdOptions, Metadata, Role};

/// A member in memory: the real bytes, shared, with patched ranges on top.
#[derive(Debug)]
struct Patched {
    name: String,
    base: Arc<Vec<u8>>,
    patches: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl Patched {
    fn new(name: &str, base: Arc<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            base,
            patches: Mutex::new(Vec::new()),
        }
    }
    /// Edit `len` bytes at `off` through `f`.
    fn edit(&self, off: u64, len: usize, f: impl FnOnce(&mut [u8])) {
        let mut b = vec![0u8; len];
        self.read_at(off, &mut b).unwrap();
        f(&mut b);
        self.patches.lock().unwrap().push((off, b));
    }
}

impl Device for Patched {
    fn len(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        vmie_disk::check_range(&|| self.name.clone(), self.len(), offset, buf.len())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.base[o..o + buf.len()]);
        for (po, p) in self.patches.lock().unwrap().iter() {
            let (s, e) = (
                offset.max(*po),
                (offset + buf.len() as u64).min(po + p.len() as u64),
            );
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&p[(s - po) as usize..(e - po) as usize]);
            }
        }
        Ok(())
    }
    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<(), DiskError> {
        panic!("hostile tests never write to members")
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

fn load(f: &Fixture) -> Vec<Arc<Patched>> {
    f.disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = part1(d, false);
            let mut v = vec![0u8; p.len() as usize];
            p.read_at(0, &mut v).unwrap();
            Arc::new(Patched::new(&format!("member{i}"), Arc::new(v)))
        })
        .collect()
}

fn asm(ms: &[Arc<Patched>]) -> Assembly {
    let v = ms
        .iter()
        .map(|m| (m.clone() as Arc<dyn Device>, m.name.clone()))
        .collect();
    assemble(v, &MdOptions::default()).unwrap()
}

const SB12: u64 = 4096;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Write the v1 checksum of the superblock in `sb` (fixed part + roles).
fn reseal(sb: &mut [u8]) {
    let max_dev = le32(sb, 220) as usize;
    let n = (256 + 2 * max_dev).min(sb.len());
    sb[216..220].fill(0);
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 4 <= n {
        sum += u64::from(le32(sb, i));
        i += 4;
    }
    if n - i == 2 {
        sum += u64::from(u16::from_le_bytes([sb[i], sb[i + 1]]));
    }
    let c = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    sb[216..220].copy_from_slice(&c.to_le_bytes());
}

/// Write the v0.90 checksum (little-endian words) of `sb`.
fn reseal090(sb: &mut [u8]) {
    sb[152..156].fill(0);
    let sum: u64 = (0..1024).map(|i| u64::from(le32(sb, i * 4))).sum();
    let c = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    sb[152..156].copy_from_slice(&c.to_le_bytes());
}

/// Edit member `m`'s v1.2 superblock and re-seal it.
fn edit12(m: &Patched, f: impl FnOnce(&mut [u8])) {
    m.edit(SB12, 4096, |sb| {
        f(sb);
        reseal(sb);
    });
}

fn rejected_with(a: &Assembly, member: &str, text: &str) {
    let r = a
        .rejected
        .iter()
        .find(|r| r.name == member)
        .unwrap_or_else(|| panic!("{member} not rejected: {a:?}"));
    let msg = r.error.to_string();
    assert!(msg.contains(text), "{msg}");
    assert!(msg.contains(member), "{msg}");
}

fn not_opened_with(a: &Assembly, text: &str) {
    assert_eq!(a.arrays.len(), 1, "{a:?}");
    let why = a.arrays[0].not_opened.clone().unwrap_or_else(|| {
        panic!("opened: {:?}", a.arrays[0].warnings);
    });
    assert!(why.contains(text), "{why}");
    assert!(a.arrays[0].device.is_none());
}

#[test]
fn v1_checksum_corrupt() {
    let ms = load(&raid1("1.2"));
    ms[0].edit(SB12 + 40, 1, |b| b[0] ^= 0x55);
    let a = asm(&ms);
    rejected_with(&a, "member0", "checksum");
    assert!(a.rejected[0].error.to_string().contains("offset 4096"));
    // The other member still makes a (degraded) array.
    assert_eq!(a.arrays.len(), 1);
    assert!(a.arrays[0].device.is_some());
    assert!(a.arrays[0].warnings.iter().any(|w| w.contains("degraded")));
}

#[test]
fn v1_data_offset_past_end() {
    let ms = load(&raid1("1.2"));
    let len = ms[0].len();
    edit12(&ms[0], |sb| {
        sb[128..136].copy_from_slice(&(len / 512 - 100).to_le_bytes())
    });
    edit12(&ms[1], |sb| {
        sb[128..136].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    let a = asm(&ms);
    rejected_with(&a, "member0", "past the end");
    rejected_with(&a, "member1", "overflows");
    assert!(a.arrays.is_empty());
}

#[test]
fn v1_raid_disks_65535() {
    let ms = load(&raid1("1.2"));
    for m in &ms {
        edit12(m, |sb| sb[92..96].copy_from_slice(&65535u32.to_le_bytes()));
    }
    not_opened_with(&asm(&ms), "raid_disks 65535");
}

#[test]
fn v1_dev_number_and_max_dev_out_of_range() {
    let ms = load(&raid1("1.2"));
    edit12(&ms[0], |sb| {
        sb[160..164].copy_from_slice(&5000u32.to_le_bytes())
    });
    edit12(&ms[1], |sb| {
        sb[220..224].copy_from_slice(&u32::MAX.to_le_bytes())
    });
    let a = asm(&ms);
    rejected_with(&a, "member0", "dev_number 5000");
    rejected_with(&a, "member1", "max_dev 4294967295");
}

#[test]
fn v1_two_members_same_role() {
    let ms = load(&raid1("1.2"));
    edit12(&ms[1], |sb| {
        let n = le32(sb, 160) as usize;
        sb[256 + 2 * n..258 + 2 * n].copy_from_slice(&0u16.to_le_bytes());
    });
    not_opened_with(&asm(&ms), "both claim slot 0");
}

#[test]
fn v1_more_members_than_raid_disks() {
    let ms = load(&raid1("1.2"));
    for m in &ms {
        edit12(m, |sb| sb[92..96].copy_from_slice(&1u32.to_le_bytes()));
    }
    not_opened_with(&asm(&ms), "claims slot 1 of an array of 1 devices");
}

#[test]
fn v1_features() {
    // Reshape in progress: listed, not opened.
    let ms = load(&raid1("1.2"));
    edit12(&ms[0], |sb| sb[8] |= 4);
    not_opened_with(&asm(&ms), "reshape active");
    // A bit the kernel does not know: the member is refused.
    let ms = load(&raid1("1.2"));
    edit12(&ms[0], |sb| sb[10] |= 0x10);
    rejected_with(&asm(&ms), "member0", "unknown feature");
}

#[test]
fn v1_stale_member_left_out() {
    let ms = load(&raid1("1.2"));
    edit12(&ms[1], |sb| {
        let ev = u64::from_le_bytes(sb[200..208].try_into().unwrap());
        sb[200..208].copy_from_slice(&(ev - 5).to_le_bytes());
        // A stale member may predate a grow: its raid_disks is not compared.
        sb[92..96].copy_from_slice(&3u32.to_le_bytes());
    });
    let a = asm(&ms);
    let arr = &a.arrays[0];
    assert!(arr.device.is_some());
    assert!(arr.members[0].used && !arr.members[1].used);
    assert!(
        arr.warnings.iter().any(|w| w.contains("stale")),
        "{:?}",
        arr.warnings
    );
    assert!(arr.warnings.iter().any(|w| w.contains("degraded")));
    // One event behind is in sync, as the kernel and mdadm accept.
    let ms = load(&raid1("1.2"));
    edit12(&ms[1], |sb| {
        let ev = u64::from_le_bytes(sb[200..208].try_into().unwrap());
        sb[200..208].copy_from_slice(&(ev - 1).to_le_bytes());
    });
    let a = asm(&ms);
    assert!(a.arrays[0].members.iter().all(|m| m.used));
}

#[test]
fn v1_recovering_member_never_read() {
    let ms = load(&raid1("1.2"));
    // Member 0 recovering: reads must come from member 1.
    edit12(&ms[0], |sb| {
        sb[8] |= 2;
        sb[152..160].copy_from_slice(&1000u64.to_le_bytes());
    });
    let a = asm(&ms);
    let arr = &a.arrays[0];
    let dev = arr.device().unwrap();
    assert!(arr.members.iter().all(|m| m.used));
    assert!(arr.warnings.iter().any(|w| w.contains("being recovered")));
    let off = arr.members[0].superblock.data_offset;
    let mut want = [0u8; 16];
    ms[1]
        .read_at(arr.members[1].superblock.data_offset + 1024, &mut want)
        .unwrap();
    ms[0].edit(off + 1024, 16, |b| b.fill(0xAB));
    let mut got = [0u8; 16];
    dev.read_at(1024, &mut got).unwrap();
    assert_eq!(got, want);
}

#[test]
fn v1_bitmap_and_missing_member_is_read_only() {
    let ms = load(&raid1("1.2"));
    edit12(&ms[0], |sb| {
        sb[8] |= 1;
        sb[96..100].copy_from_slice(&8u32.to_le_bytes());
    });
    let a = asm(&ms[..1]);
    let arr = &a.arrays[0];
    assert!(arr.superblock_has_bitmap());
    let dev = arr.device().unwrap();
    assert!(!arr.writable());
    assert!(matches!(
        dev.write_at(0, &[0u8; 512]),
        Err(DiskError::ReadOnly { .. })
    ));
    // With both members present, the bitmap does not matter.
    edit12(&ms[1], |sb| {
        sb[8] |= 1;
        sb[96..100].copy_from_slice(&8u32.to_le_bytes());
    });
    assert!(asm(&ms).arrays[0].writable());
}

trait HasBitmap {
    fn superblock_has_bitmap(&self) -> bool;
}
impl HasBitmap for vmie_md::Array {
    fn superblock_has_bitmap(&self) -> bool {
        self.members.iter().all(|m| m.superblock.has_bitmap())
    }
}

#[test]
fn linear_member_missing() {
    let ms = load(&linear());
    let a = asm(&ms[1..]);
    not_opened_with(&a, "slot 0 is missing");
    let a = asm(&ms[..1]);
    not_opened_with(&a, "slot 1 is missing");
}

#[test]
fn too_many_members() {
    let ms = load(&raid1("1.2"));
    let v: Vec<(Arc<dyn Device>, String)> = ms
        .iter()
        .map(|m| (m.clone() as Arc<dyn Device>, m.name.clone()))
        .collect();
    let opts = MdOptions {
        max_members: 1,
        ..Default::default()
    };
    assert!(matches!(
        assemble(v, &opts),
        Err(MdError::TooManyMembers { count: 2, max: 1 })
    ));
}

fn sb090_offset(len: u64) -> u64 {
    (len & !0xffff) - 0x10000
}

#[test]
fn v090_checksum_and_byte_order() {
    let ms = load(&raid1("0.90"));
    let good = asm(&ms);
    let arr = &good.arrays[0];
    assert!(arr.device.is_some());
    let (uuid, events) = (arr.uuid, arr.members[0].superblock.events);
    // A damaged word.
    let off = sb090_offset(ms[0].len());
    ms[0].edit(off + 100 * 4, 1, |b| b[0] ^= 1);
    rejected_with(&asm(&ms), "member0", "checksum");
    // The same superblocks as a big-endian machine writes them.
    let ms = load(&raid1("0.90"));
    for m in &ms {
        m.edit(sb090_offset(m.len()), 4096, |sb| {
            // What mdadm's super0_swap_endian does: every 32-bit word
            // byte-swapped, then the halves of the 64-bit event counters
            // exchanged (they are native u64s).
            for w in sb.chunks_mut(4) {
                w.reverse();
            }
            for w in [39, 41] {
                let (a, b) = sb.split_at_mut((w + 1) * 4);
                a[w * 4..].swap_with_slice(&mut b[..4]);
            }
        });
    }
    let a = asm(&ms);
    let arr = &a.arrays[0];
    assert!(arr.device.is_some(), "{a:?}");
    assert_eq!(arr.metadata, Metadata::V090 { big_endian: true });
    assert_eq!(arr.uuid, uuid);
    assert_eq!(arr.members[0].superblock.events, events);
    assert_eq!(arr.members[1].superblock.role, Role::Active(1));
}

/// Random damage to the superblock areas, sealed or not: every outcome is
/// a clean one, and an opened array reads its first and last bytes.
#[test]
fn random_damage_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for f in [raid1("1.2"), raid1("0.90"), raid1("1.0"), linear()] {
        let base = load(&f);
        let mut outcomes = [0usize; 3];
        for _ in 0..400 {
            let ms: Vec<Arc<Patched>> = base
                .iter()
                .map(|m| Arc::new(Patched::new(&m.name, m.base.clone())))
                .collect();
            for m in &ms {
                let (sb, v1) = match asm(std::slice::from_ref(m)).arrays.first() {
                    Some(a) => (
                        a.members[0].superblock.sb_offset,
                        a.metadata != (Metadata::V090 { big_endian: false }),
                    ),
                    None => continue,
                };
                m.edit(sb, 4096, |b| {
                    for _ in 0..(1 + rnd() % 4) {
                        let i = (rnd() % if rnd() % 2 == 0 { 256 } else { 4096 }) as usize;
                        b[i] = rnd() as u8;
                    }
                    if rnd() % 4 != 0 {
                        if v1 {
                            reseal(b)
                        } else {
                            reseal090(b)
                        }
                    }
                });
            }
            let a = asm(&ms);
            outcomes[0] += a.rejected.len();
            for arr in &a.arrays {
                match arr.device() {
                    Some(d) => {
                        outcomes[1] += 1;
                        if !d.is_empty() {
                            let mut b = [0u8; 1];
                            d.read_at(0, &mut b).unwrap();
                            d.read_at(d.len() - 1, &mut b).unwrap();
                        }
                    }
                    None => outcomes[2] += 1,
                }
            }
        }
        println!("rejected members, opened, not opened: {outcomes:?}");
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }
}
