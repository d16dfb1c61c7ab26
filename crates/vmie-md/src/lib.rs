//! Linux software RAID (md) assembled in userspace: member superblocks
//! (0.90, 1.0, 1.1, 1.2) are read and checked, members are grouped into
//! arrays by array UUID, and RAID1 and linear arrays become a [`Device`]
//! ([`MdDevice`]) that reads and writes through the members' devices (the
//! partitions over the overlay), so a filesystem on an array is inspected
//! and fixed like one on a partition.
//!
//! Everything else (raid0/4/5/6/10, multipath, an incomplete linear array,
//! conflicting roles, reshapes, journals, PPL, clustered md, bad-block
//! logs) is listed as an [`Array`] that is not opened, with the reason.
//!
//! **Writes.** RAID1 writes go to every present in-sync member, byte for
//! byte the same, so the members stay identical and md sees nothing to
//! resync; superblocks are never written (events, state and bitmap stay as
//! they were). md's internal write-intent bitmap only names regions that
//! may differ between members: writing every member identically keeps
//! them in sync, so a bitmap is ignored as long as every slot of the array
//! is present. When a slot is missing (degraded) or its member is stale,
//! a later `mdadm --re-add` of that member would resync only the regions
//! the bitmap names, and our writes are not in it: such an array is opened
//! read-only. A member being recovered (`recovery_offset`) is written but
//! never read from.
#![forbid(unsafe_code)]

mod device;
pub mod sb;

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use vmie_disk::{Device, DiskError};

pub use device::MdDevice;
pub use sb::{read_superblock, Metadata, Role, Superblock};

use device::Leg;

/// Limits on what hostile superblocks may make us read or build.
#[derive(Debug, Clone, Copy)]
pub struct MdOptions {
    /// Members handed to one [`assemble`] call.
    pub max_members: usize,
    /// Largest v1 `max_dev` accepted (the format's own limit is 1920).
    pub max_dev: u32,
    /// Largest `raid_disks` of an array we open.
    pub max_raid_disks: u32,
}

impl Default for MdOptions {
    fn default() -> Self {
        Self {
            max_members: 1024,
            max_dev: sb::MAX_DEV_FORMAT,
            max_raid_disks: 256,
        }
    }
}

/// What can go wrong reading md metadata.
#[derive(Debug, Error)]
pub enum MdError {
    /// Disk layer.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// No md superblock at any of the four places.
    #[error("{member}: no md superblock (0.90, 1.0, 1.1 or 1.2)")]
    NotMember {
        /// The member's name.
        member: String,
    },
    /// A superblock that is damaged or out of range.
    #[error("{member}: md superblock at offset {offset}: {why}")]
    Corrupt {
        /// The member's name.
        member: String,
        /// Byte offset of the superblock on the member.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// More members than [`MdOptions::max_members`].
    #[error("{count} md members given, over the limit of {max}")]
    TooManyMembers {
        /// Members given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// A member of an array as found.
#[derive(Debug, Clone)]
pub struct ArrayMember {
    /// The name it was handed in with (such as `disk1.raw partition 1`).
    pub name: String,
    /// Its superblock.
    pub superblock: Superblock,
    /// Whether the opened array uses it (false for spares, faulty and
    /// stale members, and when the array is not opened).
    pub used: bool,
}

/// An md array: the members found with one array UUID.
#[derive(Debug, Clone)]
pub struct Array {
    /// Array UUID, bytes in the order mdadm prints them.
    pub uuid: [u8; 16],
    /// v1 `set_name` as stored (`host:name` or `name`).
    pub name: Option<String>,
    /// Level (-1 linear, 1 raid1, ...), from the newest superblock.
    pub level: i32,
    /// Superblock format.
    pub metadata: Metadata,
    /// Slots in the array.
    pub raid_disks: u32,
    /// The members, in the order given.
    pub members: Vec<ArrayMember>,
    /// The array as a device, when it was opened.
    pub device: Option<Arc<MdDevice>>,
    /// Why it was not opened.
    pub not_opened: Option<String>,
    /// Things a user should know (stale, degraded, not clean, read-only).
    pub warnings: Vec<String>,
}

impl Array {
    /// UUID as mdadm prints it: `d0942beb:afc47ede:3d186b3c:53958f34`.
    pub fn uuid_mdadm(&self) -> String {
        let hex: Vec<String> = self
            .uuid
            .chunks(4)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        hex.join(":")
    }

    /// UUID as blkid and `/dev/disk/by-uuid`-style tools print it:
    /// `d0942beb-afc4-7ede-3d18-6b3c53958f34`.
    pub fn uuid_dashed(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Level as mdadm names it (`raid1`, `linear`, ...).
    pub fn level_name(&self) -> String {
        level_name(self.level)
    }

    /// The name under `/dev/md/` mdadm gives the array: the part of a v1
    /// name after `host:` (mdadm drops the host part when it is the
    /// local host; offline the guest is the local host), or the 0.90
    /// preferred minor (`/dev/mdN`). `None` when neither is known.
    pub fn dev_path(&self) -> Option<String> {
        if let Some(n) = &self.name {
            let short = n.split_once(':').map_or(n.as_str(), |(_, s)| s);
            if !short.is_empty() && !short.contains('/') {
                return Some(format!("/dev/md/{short}"));
            }
        }
        self.members
            .first()
            .and_then(|m| m.superblock.md_minor)
            .map(|n| format!("/dev/md{n}"))
    }

    /// Names of the members, in the order given.
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// The array as a `Device`, when it was opened.
    pub fn device(&self) -> Option<Arc<dyn Device>> {
        self.device.clone().map(|d| d as Arc<dyn Device>)
    }

    /// Whether the opened array accepts writes.
    pub fn writable(&self) -> bool {
        self.device.as_ref().is_some_and(|d| d.writable())
    }
}

/// mdadm's name of a level.
pub fn level_name(level: i32) -> String {
    match level {
        -1 => "linear".into(),
        -4 => "multipath".into(),
        -5 => "faulty".into(),
        0 | 1 | 4 | 5 | 6 | 10 => format!("raid{level}"),
        n => format!("level {n}"),
    }
}

/// A member whose superblock could not be used.
#[derive(Debug)]
pub struct RejectedMember {
    /// Its name.
    pub name: String,
    /// Why.
    pub error: MdError,
}

/// Result of [`assemble`].
#[derive(Debug, Default)]
pub struct Assembly {
    /// Arrays, in the order their first member was given.
    pub arrays: Vec<Array>,
    /// Members whose superblock was refused.
    pub rejected: Vec<RejectedMember>,
    /// Warnings about single members (several superblock formats).
    pub warnings: Vec<String>,
}

/// Read every member's superblock, group members by array UUID and open
/// the RAID1 and linear arrays. `members` are the volumes probed as
/// `linux_raid_member`, each with the name used in messages.
///
/// Only more members than [`MdOptions::max_members`] is an error; a member
/// whose superblock is damaged is listed in [`Assembly::rejected`] and an
/// array that cannot be opened is listed with [`Array::not_opened`].
pub fn assemble(
    members: Vec<(Arc<dyn Device>, String)>,
    opts: &MdOptions,
) -> Result<Assembly, MdError> {
    if members.len() > opts.max_members {
        return Err(MdError::TooManyMembers {
            count: members.len(),
            max: opts.max_members,
        });
    }
    let mut out = Assembly::default();
    // Members with their devices by array UUID, in the order given.
    let mut groups: Vec<([u8; 16], Group)> = Vec::new();
    for (dev, name) in members {
        match read_superblock(dev.as_ref(), &name, opts) {
            Ok((sb, w)) => {
                out.warnings.extend(w);
                let m = ArrayMember {
                    name,
                    superblock: sb,
                    used: false,
                };
                match groups.iter_mut().find(|(u, _)| *u == m.superblock.uuid) {
                    Some((_, g)) => g.push((dev, m)),
                    None => groups.push((m.superblock.uuid, vec![(dev, m)])),
                }
            }
            Err(error) => out.rejected.push(RejectedMember { name, error }),
        }
    }
    for (uuid, g) in groups {
        out.arrays.push(build(uuid, g, opts));
    }
    Ok(out)
}

/// The members of one array UUID with their devices.
type Group = Vec<(Arc<dyn Device>, ArrayMember)>;

/// Build one array from the members sharing `uuid`.
fn build(uuid: [u8; 16], g: Group, opts: &MdOptions) -> Array {
    // The reference is the newest superblock (highest events; the first
    // given on a tie), as the kernel's refdev.
    let newest = g
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, m))| (m.superblock.events, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let r = g[newest].1.superblock.clone();
    let mut a = Array {
        uuid,
        name: r.name.clone(),
        level: r.level,
        metadata: r.metadata,
        raid_disks: r.raid_disks,
        members: Vec::new(),
        device: None,
        not_opened: None,
        warnings: Vec::new(),
    };
    let array_name = r.name.clone().unwrap_or_else(|| a.uuid_mdadm());
    let mut devs = Vec::new();
    for (d, m) in g {
        devs.push(d);
        a.members.push(m);
    }
    match open(&mut a, &devs, &r, &array_name, opts) {
        Ok(dev) => a.device = Some(Arc::new(dev)),
        Err(why) => {
            for m in &mut a.members {
                m.used = false;
            }
            a.not_opened = Some(why);
        }
    }
    a
}

/// Decide which members serve the array and build its device, or say why
/// not. Marks the members used.
fn open(
    a: &mut Array,
    devs: &[Arc<dyn Device>],
    r: &Superblock,
    array_name: &str,
    opts: &MdOptions,
) -> Result<MdDevice, String> {
    // Fresh members: events at most one behind the newest, as md.c's
    // validate_super (`++ev1; if (ev1 < mddev->events) reject`) and
    // mdadm's assemble (event_margin 1) accept; older ones are stale and
    // left out, as both do, before anything else is compared (a stale
    // member may predate a grow or a feature change).
    let max_events = r.events;
    let fresh: Vec<bool> = a
        .members
        .iter()
        .map(|m| m.superblock.events.saturating_add(1) >= max_events)
        .collect();
    for (m, _) in a.members.iter().zip(&fresh).filter(|(_, f)| !**f) {
        a.warnings.push(format!(
            "{}: stale member (events {} < {max_events}), left out",
            m.name, m.superblock.events
        ));
    }
    // Fresh members must describe the same array. md.c refuses a member
    // whose level, layout or chunk differ (super_1_load) or whose constant
    // words differ (0.90 md_sb_equal).
    let usable =
        sb::feature::BITMAP_OFFSET | sb::feature::RECOVERY_OFFSET | sb::feature::RECOVERY_BITMAP;
    for (m, _) in a.members.iter().zip(&fresh).filter(|(_, f)| **f) {
        let s = &m.superblock;
        let differs = [
            (!s.metadata.same_format(&r.metadata), "metadata format"),
            (s.level != r.level, "level"),
            (s.layout != r.layout, "layout"),
            (s.chunk != r.chunk, "chunk size"),
            (s.raid_disks != r.raid_disks, "raid_disks"),
            (s.dev_size != r.dev_size, "size"),
        ];
        if let Some((_, what)) = differs.iter().find(|(d, _)| *d) {
            return Err(format!(
                "{} disagrees with the newest member on the {what}",
                m.name
            ));
        }
        if s.name != r.name {
            a.warnings.push(format!(
                "{}: array name {:?} differs from the newest member's {:?}",
                m.name, s.name, r.name
            ));
        }
    }
    if !matches!(r.level, -1 | 1) {
        return Err(format!(
            "{} is not supported (only raid1 and linear arrays are opened)",
            level_name(r.level)
        ));
    }
    if r.raid_disks == 0 || r.raid_disks > opts.max_raid_disks {
        return Err(format!(
            "raid_disks {} is outside 1..={}",
            r.raid_disks, opts.max_raid_disks
        ));
    }
    for (m, _) in a.members.iter().zip(&fresh).filter(|(_, f)| **f) {
        let f = m.superblock.feature_map & !usable;
        if f != 0 {
            return Err(format!(
                "{}: feature {} is not supported",
                m.name,
                sb::feature::names(f).join(", ")
            ));
        }
    }
    if r.level == -1 && r.has_bitmap() {
        return Err("a linear array with a bitmap is not a layout md makes".into());
    }
    // slot -> member index
    let mut slots: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, m) in a.members.iter().enumerate() {
        let s = &m.superblock;
        if !fresh[i] {
            continue;
        }
        match s.role {
            Role::Active(n) => {
                if n >= r.raid_disks {
                    return Err(format!(
                        "{} claims slot {n} of an array of {} devices",
                        m.name, r.raid_disks
                    ));
                }
                if let Some(&j) = slots.get(&n) {
                    return Err(format!(
                        "{} and {} both claim slot {n}",
                        a.members[j].name, m.name
                    ));
                }
                slots.insert(n, i);
            }
            Role::Spare => a.warnings.push(format!("{}: spare, not used", m.name)),
            Role::Faulty => a
                .warnings
                .push(format!("{}: marked faulty, left out", m.name)),
            Role::Journal => return Err(format!("{}: a journal device", m.name)),
        }
    }
    let missing: Vec<u32> = (0..r.raid_disks)
        .filter(|n| !slots.contains_key(n))
        .collect();
    if !r.clean {
        a.warnings.push(
            "the array was not stopped cleanly: the kernel will resync it from the first member"
                .into(),
        );
    }
    let leg = |i: usize, a: &Array| Leg {
        dev: devs[i].clone(),
        offset: a.members[i].superblock.data_offset,
    };
    let dev = if r.level == 1 {
        let len = r.dev_size;
        if len == 0 {
            return Err("the array size (superblock size field) is 0".into());
        }
        let mut read = Vec::new();
        let mut write = Vec::new();
        for &i in slots.values() {
            let s = &a.members[i].superblock;
            if s.data_size < len {
                return Err(format!(
                    "{}: its data area ({} bytes) is smaller than the array ({len} bytes)",
                    a.members[i].name, s.data_size
                ));
            }
            match s.recovery_offset {
                Some(off) => a.warnings.push(format!(
                    "{}: being recovered (up to byte {off}): written, never read",
                    a.members[i].name
                )),
                None => read.push(leg(i, a)),
            }
            write.push(leg(i, a));
        }
        if !missing.is_empty() {
            a.warnings.push(format!(
                "degraded: slot(s) {missing:?} of {} missing",
                r.raid_disks
            ));
        }
        let writable = !r.has_bitmap() || missing.is_empty();
        if !writable {
            a.warnings.push(
                "read-only: the array has a write-intent bitmap and a missing member, which a \
                 later re-add would resync only where the bitmap says"
                    .into(),
            );
        }
        MdDevice::mirror(array_name.to_string(), len, read, write, writable)?
    } else {
        if let Some(n) = missing.first() {
            return Err(format!(
                "linear array: the member in slot {n} is missing ({} of {} present)",
                slots.len(),
                r.raid_disks
            ));
        }
        // md-linear.c linear_conf: each member contributes rdev->sectors
        // (v1 data_size; 0.90 everything before the superblock), rounded
        // down to a multiple of the chunk size when there is one.
        let mut parts = Vec::new();
        for &i in slots.values() {
            let s = &a.members[i].superblock;
            if s.recovery_offset.is_some() {
                return Err(format!("{}: being recovered", a.members[i].name));
            }
            let mut n = s.data_size;
            if r.chunk > 0 {
                n -= n % r.chunk;
            }
            parts.push((leg(i, a), n));
        }
        MdDevice::concat(array_name.to_string(), parts)?
    };
    for &i in slots.values() {
        a.members[i].used = true;
    }
    Ok(dev)
}
