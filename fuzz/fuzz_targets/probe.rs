// cargo-fuzz target for vmie-probe: probe() on arbitrary bytes. Must never
// panic or hang, whatever the bytes claim.
// Signatures live at many offsets (0, 1 KiB ext, 4 KiB MD 1.2, 32 KiB
// ISO9660, 64 KiB btrfs, the end for MD 0.90/1.0), so the first input byte
// chooses where the rest is placed inside a zero-filled device and how large
// that device is (small, just over the 1.44 MB "tiny" limit so RAID probing
// runs, or 10 MiB so the XFS external-log check runs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmie_disk::MemDevice;
use vmie_probe::{probe, ProbeOptions};

const PLACES: [u64; 8] = [0, 0, 1024, 4096, 32 * 1024, 64 * 1024, u64::MAX, 512];
const SIZES: [u64; 4] = [0, 128 * 1024, 1_500_000, 10 * 1024 * 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let place = PLACES[usize::from(mode & 7)];
    let min_size = SIZES[usize::from((mode >> 3) & 3)];
    let len = rest.len() as u64;
    let size = min_size.max(len.saturating_add(if place == u64::MAX { 0 } else { place }));
    let start = if place == u64::MAX { size - len } else { place };
    let mut bytes = vec![0u8; size as usize];
    bytes[start as usize..(start + len) as usize].copy_from_slice(rest);
    let opts = ProbeOptions {
        // Keep runs fast; the limits themselves are part of what is fuzzed.
        max_total_read_bytes: if mode & 0x20 != 0 { 64 * 1024 } else { 4 << 20 },
        luks2_secondary_headers: mode & 0x40 != 0,
        check_xfs_log: mode & 0x80 == 0,
        ..ProbeOptions::default()
    };
    let dev = MemDevice::new("fuzz.img", bytes);
    let _ = probe(&dev, &opts);
});
