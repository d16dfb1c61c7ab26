//! md member superblocks: v0.90 (at the end, native-endian) and v1.x
//! (little-endian; 1.0 near the end, 1.1 at the start, 1.2 at 4 KiB).
//!
//! Layouts and checks follow the kernel's `include/uapi/linux/raid/md_p.h`
//! and `drivers/md/md.c` (`super_90_load`, `calc_sb_csum`, `super_1_load`,
//! `calc_sb_1_csum`, `super_1_validate`).

use std::fmt;

use vmie_disk::{read_vec, Device};

use crate::{MdError, MdOptions};

/// md's superblock magic.
pub const MD_MAGIC: u32 = 0xa92b_4efc;
/// v0.90: 64 KiB reserved at the end of the member (`MD_RESERVED_BYTES`).
const RESERVED_090: u64 = 0x10000;
/// v0.90: the superblock is 4 KiB (`MD_SB_BYTES`).
const SB_BYTES_090: usize = 4096;
/// v0.90: descriptors in the superblock (`MD_SB_DISKS`).
const SB_DISKS_090: u32 = 27;
/// v1: the fixed part.
const SB1_FIXED: usize = 256;
/// v1: the kernel reads one 4 KiB page, so `max_dev <= (4096 - 256) / 2`.
pub const MAX_DEV_FORMAT: u32 = (4096 - 256) / 2;

/// v1 `feature_map` bits (md_p.h).
pub mod feature {
    /// Internal write-intent bitmap at `bitmap_offset`.
    pub const BITMAP_OFFSET: u32 = 1;
    /// This member is being recovered up to `recovery_offset`.
    pub const RECOVERY_OFFSET: u32 = 2;
    /// A reshape is in progress.
    pub const RESHAPE_ACTIVE: u32 = 4;
    /// The bad-block log is not empty.
    pub const BAD_BLOCKS: u32 = 8;
    /// This member replaces another with the same role.
    pub const REPLACEMENT: u32 = 16;
    /// Reshape going backwards.
    pub const RESHAPE_BACKWARDS: u32 = 32;
    /// `new_offset` must be honoured (reshape).
    pub const NEW_OFFSET: u32 = 64;
    /// Recovery uses the bitmap.
    pub const RECOVERY_BITMAP: u32 = 128;
    /// Clustered md (one bitmap per node).
    pub const CLUSTERED: u32 = 256;
    /// raid4/5/6 write journal.
    pub const JOURNAL: u32 = 512;
    /// raid5 partial parity log.
    pub const PPL: u32 = 1024;
    /// raid5 multiple partial parity logs.
    pub const MULTIPLE_PPLS: u32 = 2048;
    /// raid0 layout is meaningful.
    pub const RAID0_LAYOUT: u32 = 4096;
    /// Every bit the kernel knows (`MD_FEATURE_ALL`).
    pub const ALL: u32 = 8191;

    /// Names of the bits set in `map`.
    pub fn names(map: u32) -> Vec<&'static str> {
        const NAMES: [&str; 13] = [
            "bitmap",
            "recovery offset",
            "reshape active",
            "bad blocks",
            "replacement",
            "reshape backwards",
            "new offset",
            "recovery bitmap",
            "clustered",
            "journal",
            "ppl",
            "multiple ppls",
            "raid0 layout",
        ];
        NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| map & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Which superblock format a member carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metadata {
    /// 0.90, at the last 64 KiB-aligned block of the member; in the byte
    /// order of the machine that wrote it.
    V090 {
        /// Written big-endian.
        big_endian: bool,
    },
    /// 1.0: 8 to 12 KiB from the end, 4 KiB aligned.
    V10,
    /// 1.1: at offset 0.
    V11,
    /// 1.2: at offset 4 KiB.
    V12,
}

impl Metadata {
    /// The name mdadm gives it (`--metadata=`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Metadata::V090 { .. } => "0.90",
            Metadata::V10 => "1.0",
            Metadata::V11 => "1.1",
            Metadata::V12 => "1.2",
        }
    }

    /// Same format, whatever the byte order.
    pub fn same_format(&self, other: &Metadata) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this member is in its array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds slot N (`0..raid_disks`).
    Active(u32),
    /// A spare (v1 role 0xFFFF; v0.90 neither active nor faulty).
    Spare,
    /// Marked faulty (v1 role 0xFFFE; v0.90 `MD_DISK_FAULTY`).
    Faulty,
    /// A raid4/5/6 write journal (v1 role 0xFFFD).
    Journal,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Active(n) => write!(f, "active device {n}"),
            Role::Spare => f.write_str("spare"),
            Role::Faulty => f.write_str("faulty"),
            Role::Journal => f.write_str("journal"),
        }
    }
}

/// The checked facts of one member's superblock. Sizes and offsets are in
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format.
    pub metadata: Metadata,
    /// Byte offset of the superblock on the member.
    pub sb_offset: u64,
    /// Array UUID, in the order mdadm prints it.
    pub uuid: [u8; 16],
    /// v1 `set_name` (such as `host:0`); `None` for 0.90 or when empty.
    pub name: Option<String>,
    /// v0.90 `md_minor` (the array was `/dev/mdN`).
    pub md_minor: Option<u32>,
    /// RAID level: -1 linear, -4 multipath, -5 faulty, 0, 1, 4, 5, 6, 10.
    pub level: i32,
    /// Layout (raid5/6/10).
    pub layout: u32,
    /// Slots in the array.
    pub raid_disks: u32,
    /// Chunk size (0 when the level has none).
    pub chunk: u64,
    /// Bytes of each member used by the array (`size`: v1 sectors, v0.90
    /// KiB); what a RAID1 array holds.
    pub dev_size: u64,
    /// Where the data starts on this member.
    pub data_offset: u64,
    /// Bytes of data area on this member (v1 `data_size`; v0.90: up to the
    /// superblock).
    pub data_size: u64,
    /// This member's role.
    pub role: Role,
    /// Update count: the highest is the newest.
    pub events: u64,
    /// v1 feature bits (for 0.90: `BITMAP_OFFSET` when a bitmap is
    /// present, `RESHAPE_ACTIVE` for 0.91).
    pub feature_map: u32,
    /// The array was stopped cleanly (no resync pending).
    pub clean: bool,
    /// Recovered up to here (v1 `recovery_offset`, when the feature says
    /// it must be honoured).
    pub recovery_offset: Option<u64>,
    /// Creation time, seconds.
    pub ctime: u64,
}

impl Superblock {
    /// Whether the array keeps an internal write-intent bitmap.
    pub fn has_bitmap(&self) -> bool {
        self.feature_map & feature::BITMAP_OFFSET != 0
    }
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Where each format's superblock lies on a member of `len` bytes.
fn locations(len: u64) -> Vec<(Metadata, u64)> {
    let mut v = Vec::new();
    if len >= 2 * RESERVED_090 {
        v.push((
            Metadata::V090 { big_endian: false },
            (len & !(RESERVED_090 - 1)) - RESERVED_090,
        ));
    }
    // md.c: sb_start = (sectors - 8*2) & ~(4*2 - 1).
    if let Some(s) = (len / 512).checked_sub(16) {
        let off = (s & !7) * 512;
        if off > 0 {
            v.push((Metadata::V10, off));
        }
    }
    v.push((Metadata::V11, 0));
    v.push((Metadata::V12, 4096));
    v
}

/// Read the md superblock of `dev` (called `name` in messages).
///
/// Every format's location is tried; a member carrying valid superblocks of
/// two formats (a disk reused without `mdadm --zero-superblock`) gets the
/// one with the newest creation time, as mdadm's `guess_super` does, and
/// the choice is returned as a warning. Checksum, version, sizes and
/// offsets are all checked against the member; a location that does not
/// carry the magic is skipped, one that carries it but fails a check is an
/// error unless another location holds a valid superblock.
pub fn read_superblock(
    dev: &dyn Device,
    name: &str,
    opts: &MdOptions,
) -> Result<(Superblock, Vec<String>), MdError> {
    let len = dev.len();
    let mut found: Vec<Superblock> = Vec::new();
    let mut first_err: Option<MdError> = None;
    for (meta, off) in locations(len) {
        let r = match meta {
            Metadata::V090 { .. } => parse_090(dev, name, off),
            _ => parse_1(dev, name, meta, off, opts),
        };
        match r {
            Ok(Some(sb)) => found.push(sb),
            Ok(None) => {}
            Err(e @ MdError::Disk(_)) => return Err(e),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    let mut warnings = Vec::new();
    if found.len() > 1 {
        let kinds: Vec<String> = found
            .iter()
            .map(|s| format!("{} (created {})", s.metadata, s.ctime))
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.ctime));
        warnings.push(format!(
            "{name}: superblocks of several formats: {}; using the newest ({}), as mdadm does",
            kinds.join(", "),
            found[0].metadata
        ));
    }
    match found.into_iter().next() {
        Some(sb) => Ok((sb, warnings)),
        None => Err(first_err.unwrap_or_else(|| MdError::NotMember {
            member: name.to_string(),
        })),
    }
}

fn corrupt(member: &str, offset: u64, why: impl Into<String>) -> MdError {
    MdError::Corrupt {
        member: member.to_string(),
        offset,
        why: why.into(),
    }
}

/// v0.90: 1024 native-endian 32-bit words.
fn parse_090(dev: &dyn Device, name: &str, off: u64) -> Result<Option<Superblock>, MdError> {
    let buf = read_vec(dev, off, SB_BYTES_090)?;
    let big_endian = if le32(&buf, 0) == MD_MAGIC {
        false
    } else if u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) == MD_MAGIC {
        true
    } else {
        return Ok(None);
    };
    let w = |i: usize| {
        let b = [buf[i * 4], buf[i * 4 + 1], buf[i * 4 + 2], buf[i * 4 + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let bad = |why: String| corrupt(name, off, format!("v0.90 superblock: {why}"));
    let (major, minor) = (w(1), w(2));
    if major != 0 || !(90..=91).contains(&minor) {
        return Err(bad(format!("version {major}.{minor} is not 0.90")));
    }
    // calc_sb_csum: the 32-bit sum of every word (sb_csum taken as 0),
    // carried once; compared after folding both to 16 bits (md_csum_fold).
    let mut sum: u64 = 0;
    for i in 0..SB_BYTES_090 / 4 {
        if i != 38 {
            sum += u64::from(w(i));
        }
    }
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    let fold = |c: u32| {
        let c = (c & 0xffff) + (c >> 16);
        (c & 0xffff) + (c >> 16)
    };
    if fold(csum) != fold(w(38)) {
        return Err(bad(format!(
            "checksum {:#010x} does not match the computed {csum:#010x}",
            w(38)
        )));
    }
    let raid_disks = w(10);
    if raid_disks == 0 || raid_disks > SB_DISKS_090 {
        return Err(bad(format!(
            "raid_disks {raid_disks} is outside 1..={SB_DISKS_090}"
        )));
    }
    let level = w(7) as i32;
    let dev_size = u64::from(w(8)) * 1024;
    // The data area is everything before the superblock (data_offset 0).
    if level >= 1 && dev_size > off {
        return Err(bad(format!(
            "size {dev_size} bytes runs into the superblock at {off}"
        )));
    }
    let number = w(992);
    if number >= SB_DISKS_090 {
        return Err(bad(format!(
            "this_disk.number {number} is outside the {SB_DISKS_090} descriptors"
        )));
    }
    let d = 128 + 32 * number as usize;
    let (raid_disk, state) = (w(d + 3), w(d + 4));
    // md_p.h: MD_DISK_FAULTY 0, ACTIVE 1, SYNC 2.
    let role = if state & 1 != 0 {
        Role::Faulty
    } else if state & 4 != 0 {
        Role::Active(raid_disk)
    } else {
        Role::Spare
    };
    let mut uuid = [0u8; 16];
    uuid[0..4].copy_from_slice(&w(5).to_be_bytes());
    uuid[4..8].copy_from_slice(&w(13).to_be_bytes());
    uuid[8..12].copy_from_slice(&w(14).to_be_bytes());
    uuid[12..16].copy_from_slice(&w(15).to_be_bytes());
    // events: a native u64 at word 39 (events_lo/hi in native order).
    let events = if big_endian {
        (u64::from(w(39)) << 32) | u64::from(w(40))
    } else {
        (u64::from(w(40)) << 32) | u64::from(w(39))
    };
    let sb_state = w(33);
    let mut feature_map = 0;
    // MD_SB_BITMAP_PRESENT = 8.
    if sb_state & (1 << 8) != 0 {
        feature_map |= feature::BITMAP_OFFSET;
    }
    if minor == 91 {
        feature_map |= feature::RESHAPE_ACTIVE;
    }
    Ok(Some(Superblock {
        metadata: Metadata::V090 { big_endian },
        sb_offset: off,
        uuid,
        name: None,
        md_minor: Some(w(11)),
        level,
        layout: w(64),
        raid_disks,
        chunk: u64::from(w(65)),
        dev_size,
        data_offset: 0,
        data_size: off,
        role,
        events,
        feature_map,
        clean: sb_state & 1 != 0,
        recovery_offset: None,
        ctime: u64::from(w(6)),
    }))
}

/// v1.x: little-endian, 256 fixed bytes then `max_dev` 16-bit roles.
fn parse_1(
    dev: &dyn Device,
    name: &str,
    meta: Metadata,
    off: u64,
    opts: &MdOptions,
) -> Result<Option<Superblock>, MdError> {
    let len = dev.len();
    if off.checked_add(SB1_FIXED as u64).is_none_or(|e| e > len) {
        return Ok(None);
    }
    let head = read_vec(dev, off, SB1_FIXED)?;
    if le32(&head, 0) != MD_MAGIC {
        return Ok(None);
    }
    let bad = |why: String| corrupt(name, off, format!("v{meta} superblock: {why}"));
    let major = le32(&head, 4);
    if major != 1 {
        return Err(bad(format!("major version {major} is not 1")));
    }
    let max_dev = le32(&head, 220);
    if max_dev > MAX_DEV_FORMAT.min(opts.max_dev) {
        return Err(bad(format!(
            "max_dev {max_dev} is over the limit of {}",
            MAX_DEV_FORMAT.min(opts.max_dev)
        )));
    }
    let super_offset = le64(&head, 144);
    if super_offset != off / 512 {
        return Err(bad(format!(
            "super_offset {super_offset} is not this superblock's sector {}",
            off / 512
        )));
    }
    let feature_map = le32(&head, 8);
    if feature_map & !feature::ALL != 0 {
        return Err(bad(format!(
            "unknown feature bits {:#x}",
            feature_map & !feature::ALL
        )));
    }
    let sb_len = SB1_FIXED + 2 * max_dev as usize;
    let full = read_vec(dev, off, sb_len)?;
    // calc_sb_1_csum: sum of little-endian 32-bit words over 256 + 2*max_dev
    // bytes (sb_csum taken as 0), a trailing 16-bit word added alone, then
    // the carry folded in once.
    let mut sum: u64 = 0;
    let mut words = full.chunks_exact(4);
    for (i, c) in (&mut words).enumerate() {
        if i != 216 / 4 {
            sum += u64::from(le32(c, 0));
        }
    }
    if words.remainder().len() == 2 {
        sum += u64::from(le16(words.remainder(), 0));
    }
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    let stored = le32(&head, 216);
    if csum != stored {
        return Err(bad(format!(
            "checksum {stored:#010x} does not match the computed {csum:#010x}"
        )));
    }
    if le32(&head, 12) != 0 || head[224..256].iter().any(|&b| b != 0) {
        return Err(bad("reserved padding is not zero (a newer format?)".into()));
    }
    let sectors = |o: usize, what: &str| {
        le64(&head, o)
            .checked_mul(512)
            .ok_or_else(|| bad(format!("{what} overflows")))
    };
    let data_offset = sectors(128, "data_offset")?;
    let data_size = sectors(136, "data_size")?;
    if data_size < 10 * 512 {
        return Err(bad(format!("data_size {data_size} bytes is too small")));
    }
    let data_end = data_offset
        .checked_add(data_size)
        .ok_or_else(|| bad("data_offset + data_size overflows".into()))?;
    // The superblock occupies 256 + 2*max_dev bytes rounded up to a sector.
    let sb_end = off + (sb_len as u64).div_ceil(512) * 512;
    if meta == Metadata::V10 {
        if data_end > off {
            return Err(bad(format!(
                "data area {data_offset}..{data_end} runs into the superblock at {off}"
            )));
        }
    } else {
        if data_offset < sb_end {
            return Err(bad(format!(
                "data_offset {data_offset} lies inside the superblock (ends at {sb_end})"
            )));
        }
        if data_end > len {
            return Err(bad(format!(
                "data area {data_offset}..{data_end} is past the end of the member ({len} bytes)"
            )));
        }
    }
    let dev_number = le32(&head, 160);
    if dev_number >= max_dev {
        return Err(bad(format!(
            "dev_number {dev_number} is outside the role table (max_dev {max_dev})"
        )));
    }
    let role = match le16(&full, SB1_FIXED + 2 * dev_number as usize) {
        0xffff => Role::Spare,
        0xfffe => Role::Faulty,
        0xfffd => Role::Journal,
        r if r < 0xff00 => Role::Active(u32::from(r)),
        r => {
            return Err(bad(format!(
                "role {r:#06x} of dev_number {dev_number} is unknown"
            )))
        }
    };
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&head[16..32]);
    let raw_name = &head[32..64];
    let end = raw_name.iter().position(|&b| b == 0).unwrap_or(32);
    let set_name = String::from_utf8_lossy(&raw_name[..end]).into_owned();
    let dev_size = sectors(80, "size")?;
    let recovery_offset = if feature_map & feature::RECOVERY_OFFSET != 0 {
        Some(sectors(152, "recovery_offset")?)
    } else {
        None
    };
    let chunk = u64::from(le32(&head, 88)) * 512;
    Ok(Some(Superblock {
        metadata: meta,
        sb_offset: off,
        uuid,
        name: (!set_name.is_empty()).then_some(set_name),
        md_minor: None,
        level: le32(&head, 72) as i32,
        layout: le32(&head, 76),
        raid_disks: le32(&head, 92),
        chunk,
        dev_size,
        data_offset,
        data_size,
        role,
        events: le64(&head, 200),
        feature_map,
        clean: le64(&head, 208) == u64::MAX,
        recovery_offset,
        ctime: le64(&head, 64) & ((1 << 40) - 1),
    }))
}
