//! Data runs for writing: the mapping-pairs encoding Windows writes, and the
//! map from a byte range of an attribute's value to byte ranges of the
//! volume.
//!
//! Each run is a header byte (low nibble: bytes of the cluster count, high
//! nibble: bytes of the LCN delta), the count, then the LCN as a signed delta
//! from the previous run's LCN, both little-endian in the fewest bytes that
//! hold the value as a two's-complement number (so a count of 0x80 takes two
//! bytes, as Windows and ntfs-3g write it). A zero byte ends the list. We
//! never write sparse runs.

use crate::record::Run;

/// Bytes needed to hold `v` as a little-endian two's-complement integer.
fn signed_len(v: i64) -> usize {
    let mut n = 1;
    while n < 8 {
        let bits = 8 * n as u32;
        let lo = -(1i64 << (bits - 1));
        let hi = (1i64 << (bits - 1)) - 1;
        if (lo..=hi).contains(&v) {
            break;
        }
        n += 1;
    }
    n
}

/// Encode `runs` (each `(lcn, clusters)`, clusters > 0), with the end byte.
pub(crate) fn encode(runs: &[(u64, u64)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut prev: i64 = 0;
    for &(lcn, len) in runs {
        let lcn_i = i64::try_from(lcn).map_err(|_| format!("cluster {lcn} is out of range"))?;
        let len_i = i64::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| format!("run length {len} is out of range"))?;
        let delta = lcn_i
            .checked_sub(prev)
            .ok_or_else(|| format!("cluster delta to {lcn} is out of range"))?;
        // A zero delta would read back as a sparse run; it cannot happen for
        // two runs of one file (they would overlap) except at LCN 0.
        if delta == 0 {
            return Err(format!(
                "a run at cluster {lcn} repeats the previous run's start"
            ));
        }
        let cl = signed_len(len_i);
        let dl = signed_len(delta);
        out.push(((dl as u8) << 4) | cl as u8);
        out.extend_from_slice(&len_i.to_le_bytes()[..cl]);
        out.extend_from_slice(&delta.to_le_bytes()[..dl]);
        prev = lcn_i;
    }
    out.push(0);
    Ok(out)
}

/// Merge adjacent runs (`(lcn, clusters)`) that continue each other.
pub(crate) fn merge(runs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for &(lcn, len) in runs {
        match out.last_mut() {
            Some((l, n)) if *l + *n == lcn => *n += len,
            _ => out.push((lcn, len)),
        }
    }
    out
}

/// The runs of a value that must have no sparse run, as `(lcn, clusters)`.
pub(crate) fn allocated(runs: &[Run]) -> Result<Vec<(u64, u64)>, String> {
    runs.iter()
        .map(|r| {
            r.lcn
                .map(|l| (l, r.clusters))
                .ok_or_else(|| "the value has a sparse run".to_string())
        })
        .collect()
}

/// The volume byte ranges `(offset, length)` holding bytes `off..off + len`
/// of a value stored in `runs` with clusters of `cs` bytes.
pub(crate) fn map_range(
    runs: &[(u64, u64)],
    cs: u64,
    off: u64,
    len: u64,
) -> Result<Vec<(u64, usize)>, String> {
    let mut out = Vec::new();
    let mut vpos = 0u64; // value byte where the current run starts
    let mut want = off;
    let end = off
        .checked_add(len)
        .ok_or_else(|| format!("range {off}+{len} overflows"))?;
    for &(lcn, n) in runs {
        if want >= end {
            break;
        }
        let rbytes = n
            .checked_mul(cs)
            .ok_or_else(|| format!("run of {n} clusters overflows"))?;
        let rend = vpos + rbytes;
        if want < rend {
            let take = (rend.min(end) - want) as usize;
            let dev = lcn
                .checked_mul(cs)
                .and_then(|b| b.checked_add(want - vpos))
                .ok_or_else(|| format!("cluster {lcn} overflows"))?;
            out.push((dev, take));
            want += take as u64;
        }
        vpos = rend;
    }
    if want < end {
        return Err(format!(
            "bytes {off}..{end} are past the {vpos} bytes the runs hold"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::Geometry;
    use crate::record::parse_runs;

    #[test]
    fn encodes_as_windows_does_and_reads_back() {
        // 0x80 clusters needs 2 bytes (0x80 would be negative in one).
        assert_eq!(
            encode(&[(0x1120, 0x200)]).unwrap(),
            vec![0x22, 0x00, 0x02, 0x20, 0x11, 0]
        );
        assert_eq!(encode(&[(5, 0x80)]).unwrap(), vec![0x12, 0x80, 0x00, 5, 0]);
        let runs = vec![(1000u64, 3u64), (10, 200), (70_000, 1), (69_990, 5)];
        let b = encode(&runs).unwrap();
        let geo = Geometry {
            sector_size: 512,
            cluster_size: 4096,
            total_sectors: 800_000,
            total_clusters: 100_000,
            size: 800_000 * 512,
            mft_lcn: 4,
            mft_offset: 4 * 4096,
            file_record_size: 1024,
            index_record_size: 4096,
            serial: 0,
            mirr_lcn: 2,
        };
        let back: Vec<(u64, u64)> = parse_runs(&geo, &b)
            .unwrap()
            .into_iter()
            .map(|r| (r.lcn.unwrap(), r.clusters))
            .collect();
        assert_eq!(back, runs);
        assert!(encode(&[(5, 0)]).is_err());
        assert_eq!(signed_len(-1), 1);
        assert_eq!(signed_len(-129), 2);
        assert_eq!(signed_len(i64::MAX), 8);
    }

    #[test]
    fn maps_ranges_across_runs() {
        let runs = [(10u64, 2u64), (100, 1)];
        assert_eq!(
            map_range(&runs, 512, 700, 600).unwrap(),
            vec![(10 * 512 + 700, 324), (100 * 512, 276)]
        );
        assert!(map_range(&runs, 512, 1000, 1000).is_err());
        assert_eq!(merge(&[(1, 2), (3, 4), (9, 1)]), vec![(1, 6), (9, 1)]);
    }
}
