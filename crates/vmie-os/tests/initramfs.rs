#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Initramfs decoding, on images built here with the real compressors
//! (Debian packages: gzip, xz-utils, zstd, lz4, bzip2).

mod common;

use common::{cpio, filter};
use vmie_os::initramfs::{driver_states, parse_initramfs, DriverState, InitramfsLimits};

const REG: u32 = 0o100644;
const DIR: u32 = 0o040755;

fn main_archive() -> Vec<u8> {
    cpio(
        &[
            ("usr", DIR, b""),
            (
                "usr/lib/modules/6.1.0-13-amd64/kernel/drivers/nvme/host/nvme.ko",
                REG,
                b"\x7fELF nvme",
            ),
            (
                "usr/lib/modules/6.1.0-13-amd64/kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz",
                REG,
                b"xz",
            ),
            (
                "usr/lib/modules/6.1.0-13-amd64/kernel/drivers/block/xen-blkfront.ko.zst",
                REG,
                b"zst",
            ),
            (
                "./usr/lib/modules/6.1.0-13-amd64/kernel/drivers/scsi/virtio_scsi.ko.gz",
                REG,
                b"gz",
            ),
            (
                "usr/lib/modules/6.1.0-13-amd64/modules.dep",
                REG,
                b"kernel/drivers/nvme/host/nvme.ko:\n",
            ),
            ("init", 0o100755, b"#!/bin/sh\n"),
        ],
        false,
    )
}

fn microcode() -> Vec<u8> {
    cpio(
        &[
            ("kernel", DIR, b""),
            ("kernel/x86/microcode/GenuineIntel.bin", REG, &[0xAB; 1000]),
        ],
        false,
    )
}

fn check_modules(img: &[u8], segments: &[&str]) {
    let i = parse_initramfs(img, &InitramfsLimits::default()).unwrap();
    assert_eq!(i.segments, segments);
    assert_eq!(
        i.module_names(),
        vec!["ena", "nvme", "virtio_scsi", "xen_blkfront"],
        "{:?}",
        i.entries
    );
    assert!(i.note.is_none(), "{:?}", i.note);
}

#[test]
fn plain_cpio_and_crc_format() {
    check_modules(&main_archive(), &["cpio"]);
    let crc = cpio(&[("lib/modules/x/virtio_net.ko", REG, b"abc")], true);
    let i = parse_initramfs(&crc, &InitramfsLimits::default()).unwrap();
    assert_eq!(i.module_names(), vec!["virtio_net"]);
    assert_eq!(i.entries[0].size, 3);
}

#[test]
fn early_microcode_then_compressed() {
    let z = filter("gzip", &["-c", "-9"], "gzip", &main_archive());
    let mut img = microcode();
    img.extend_from_slice(&z);
    check_modules(&img, &["cpio", "gzip", "cpio"]);
    let i = parse_initramfs(&img, &InitramfsLimits::default()).unwrap();
    assert!(i
        .entries
        .iter()
        .any(|e| e.name == "kernel/x86/microcode/GenuineIntel.bin"));
}

#[test]
fn gzip() {
    check_modules(
        &filter("gzip", &["-c"], "gzip", &main_archive()),
        &["gzip", "cpio"],
    );
}

#[test]
fn xz_as_the_kernel_wants_it() {
    let z = filter(
        "xz",
        &["-c", "--check=crc32", "--lzma2=dict=1MiB"],
        "xz-utils",
        &main_archive(),
    );
    check_modules(&z, &["xz", "cpio"]);
}

#[test]
fn xz_default_check() {
    check_modules(
        &filter("xz", &["-c"], "xz-utils", &main_archive()),
        &["xz", "cpio"],
    );
}

#[test]
fn legacy_lzma() {
    let z = filter("xz", &["-c", "--format=lzma"], "xz-utils", &main_archive());
    check_modules(&z, &["lzma", "cpio"]);
}

#[test]
fn zstd() {
    let z = filter("zstd", &["-c", "-q", "-19"], "zstd", &main_archive());
    check_modules(&z, &["zstd", "cpio"]);
}

#[test]
fn lz4_legacy_and_frame() {
    let legacy = filter("lz4", &["-l", "-c", "-q"], "lz4", &main_archive());
    assert_eq!(&legacy[..4], &[0x02, 0x21, 0x4c, 0x18]);
    check_modules(&legacy, &["lz4-legacy", "cpio"]);
    let frame = filter("lz4", &["-c", "-q"], "lz4", &main_archive());
    check_modules(&frame, &["lz4", "cpio"]);
}

#[test]
fn microcode_then_each_compression() {
    for (tool, args, pkg, name) in [
        ("gzip", &["-c"][..], "gzip", "gzip"),
        ("xz", &["-c", "--check=crc32"][..], "xz-utils", "xz"),
        ("zstd", &["-c", "-q"][..], "zstd", "zstd"),
        ("lz4", &["-l", "-c", "-q"][..], "lz4", "lz4-legacy"),
    ] {
        let mut img = microcode();
        img.extend_from_slice(&filter(tool, args, pkg, &main_archive()));
        check_modules(&img, &["cpio", name, "cpio"]);
    }
}

#[test]
fn bzip2_is_refused_cleanly() {
    let z = filter("bzip2", &["-c"], "bzip2", &main_archive());
    let e = parse_initramfs(&z, &InitramfsLimits::default()).unwrap_err();
    assert!(e.to_string().contains("bzip2"), "{e}");
}

#[test]
fn limits_are_enforced() {
    let big = cpio(&[("a", REG, &vec![0u8; 4 << 20][..])], false);
    let z = filter("gzip", &["-c"], "gzip", &big);
    let small = InitramfsLimits {
        max_decompressed: 1 << 20,
        ..InitramfsLimits::default()
    };
    let e = parse_initramfs(&z, &small).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    for (tool, args, pkg) in [
        ("xz", &["-c"][..], "xz-utils"),
        ("zstd", &["-c", "-q"][..], "zstd"),
        ("lz4", &["-l", "-c", "-q"][..], "lz4"),
        ("lz4", &["-c", "-q"][..], "lz4"),
        ("xz", &["-c", "--format=lzma"][..], "xz-utils"),
    ] {
        let z = filter(tool, args, pkg, &big);
        let e = parse_initramfs(&z, &small).unwrap_err();
        assert!(e.to_string().contains("limit"), "{tool} {args:?}: {e}");
    }
    let few = InitramfsLimits {
        max_entries: 3,
        ..InitramfsLimits::default()
    };
    let e = parse_initramfs(&main_archive(), &few).unwrap_err();
    assert!(e.to_string().contains("entries"), "{e}");
}

#[test]
fn hostile_inputs_never_panic() {
    assert!(parse_initramfs(b"", &InitramfsLimits::default())
        .unwrap()
        .entries
        .is_empty());
    assert!(parse_initramfs(b"garbage!", &InitramfsLimits::default()).is_err());
    let plain = main_archive();
    let gz = filter("gzip", &["-c"], "gzip", &plain);
    let xz = filter("xz", &["-c", "--check=crc32"], "xz-utils", &plain);
    let zst = filter("zstd", &["-c", "-q"], "zstd", &plain);
    let lz = filter("lz4", &["-l", "-c", "-q"], "lz4", &plain);
    for img in [&plain, &gz, &xz, &zst, &lz] {
        for cut in 0..img.len() {
            let _ = parse_initramfs(&img[..cut], &InitramfsLimits::default());
        }
        // Flip bytes, one at a time, over the first 300.
        for i in 0..img.len().min(300) {
            let mut m = img.to_vec();
            m[i] ^= 0x5a;
            let _ = parse_initramfs(&m, &InitramfsLimits::default());
        }
    }
    // A name size or file size past the end.
    let mut bad = plain.clone();
    bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"7fffffff");
    assert!(parse_initramfs(&bad, &InitramfsLimits::default()).is_err());
    // Trailing garbage after a complete archive is noted, not fatal.
    let mut trailing = plain.clone();
    trailing.extend_from_slice(b"junkjunk");
    let i = parse_initramfs(&trailing, &InitramfsLimits::default()).unwrap();
    assert!(i.note.is_some());
}

#[test]
fn driver_state_rules() {
    let builtin = "kernel/drivers/ata/ahci.ko\nkernel/drivers/nvme/host/nvme-core.ko\n";
    let initramfs = vec!["nvme".to_string(), "xen_blkfront".to_string()];
    let root = vec!["ena".to_string(), "nvme".to_string()];
    let s = driver_states(Some(builtin), &initramfs, &root);
    assert_eq!(s["ahci"], DriverState::Builtin);
    assert_eq!(s["nvme_core"], DriverState::Builtin);
    assert_eq!(s["nvme"], DriverState::Initramfs);
    assert_eq!(s["xen_blkfront"], DriverState::Initramfs);
    assert_eq!(s["ena"], DriverState::RootOnly);
    assert_eq!(s["hv_storvsc"], DriverState::Missing);
    assert_eq!(s.len(), 15);
}

mod prop {
    use proptest::prelude::*;
    use vmie_os::initramfs::{parse_initramfs, InitramfsLimits};

    fn magic() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"070701".to_vec()),
            Just(b"070702".to_vec()),
            Just(vec![0x1f, 0x8b, 8, 0]),
            Just(vec![0xfd, b'7', b'z', b'X', b'Z', 0]),
            Just(vec![0x28, 0xb5, 0x2f, 0xfd]),
            Just(vec![0x02, 0x21, 0x4c, 0x18]),
            Just(vec![0x04, 0x22, 0x4d, 0x18]),
            Just(vec![0x5d, 0, 0]),
            Just(vec![]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_images_never_panic(m in magic(), body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut img = m;
            img.extend(body);
            let limits = InitramfsLimits { max_decompressed: 1 << 20, ..InitramfsLimits::default() };
            let _ = parse_initramfs(&img, &limits);
        }
    }
}

/// lzma-rs keeps a whole xz block in memory and writes it out only at a
/// dictionary reset or at the end, so the output cap alone would come too
/// late: the stream's declared size is checked before decompressing. Here
/// 64 MiB of zeros (about 10 KiB of xz) against a 16 MiB limit, in one
/// block and in 1 MiB blocks.
#[test]
fn xz_bomb_is_refused_before_decompressing() {
    let big = cpio(&[("zeros", REG, &vec![0u8; 64 << 20][..])], false);
    let limits = InitramfsLimits {
        max_decompressed: 16 << 20,
        ..InitramfsLimits::default()
    };
    for args in [
        &["-c", "--check=crc32"][..],
        &["-c", "--check=crc64", "--block-size=1MiB"][..],
    ] {
        let z = filter("xz", args, "xz-utils", &big);
        assert!(z.len() < 64 << 10, "{args:?}: {} bytes", z.len());
        let e = parse_initramfs(&z, &limits).unwrap_err().to_string();
        assert!(
            e.contains("declares at least")
                && e.contains(
                    "over the limit of 16777216 bytes (InitramfsLimits::max_decompressed)"
                )
                && e.contains("not decompressed"),
            "{args:?}: {e}"
        );
        // Within the limit, the same streams read (the walk is not too strict).
        let roomy = InitramfsLimits {
            max_decompressed: 80 << 20,
            ..InitramfsLimits::default()
        };
        let i = parse_initramfs(&z, &roomy).unwrap();
        assert_eq!(i.segments, ["xz", "cpio"]);
        assert_eq!(i.entries.len(), 1);
    }
}

/// The walk stops where lzma-rs would: truncated and garbled xz streams
/// are errors (or partial reads), never a panic, and a walk that stops early
/// never lets through more than the stream holds.
#[test]
fn xz_walk_on_damaged_streams() {
    let big = cpio(&[("zeros", REG, &vec![0u8; 8 << 20][..])], false);
    let z = filter(
        "xz",
        &["-c", "--check=crc64", "--block-size=1MiB"],
        "xz-utils",
        &big,
    );
    let limits = InitramfsLimits {
        max_decompressed: 4 << 20,
        ..InitramfsLimits::default()
    };
    for cut in (0..z.len()).step_by(7) {
        let _ = parse_initramfs(&z[..cut], &limits);
    }
    for i in 0..z.len().min(400) {
        let mut m = z.clone();
        m[i] ^= 0xa5;
        let _ = parse_initramfs(&m, &limits);
    }
}

/// What driver injection relies on: the generator is recognised, the last
/// `conf/modules` is kept through every compression, an archive appended by
/// `drivers::appended` is read after the original, and an image whose last
/// member's end the kernel cannot find is refused for appending.
#[test]
fn appended_archives_conf_modules_and_append_refusals() {
    use vmie_os::cpio::CpioWriter;
    use vmie_os::drivers::appended;
    let tools = cpio(
        &[
            ("conf", DIR, b""),
            ("conf/initramfs.conf", REG, b"MODULES=list\n"),
            ("conf/modules", REG, b"vmw_pvscsi \nsd_mod \n"),
            ("usr/lib/modules/6.1.0-13-amd64/modules.dep.bin", REG, b"x"),
            (
                "usr/lib/modules/6.1.0-13-amd64/kernel/drivers/scsi/vmw_pvscsi.ko",
                REG,
                b"\x7fELF",
            ),
        ],
        false,
    );
    let mut w = CpioWriter::new(0);
    w.file(
        "usr/lib/modules/6.1.0-13-amd64/kernel/drivers/nvme/host/nvme.ko",
        0o644,
        b"\x7fELF nvme",
    )
    .unwrap();
    w.file("conf/modules", 0o644, b"vmw_pvscsi\nsd_mod\nnvme\n")
        .unwrap();
    let extra = w.finish().unwrap();
    for (tool, args, pkg, refused) in [
        ("gzip", &["-c"][..], "gzip", false),
        ("zstd", &["-c", "-q"][..], "zstd", false),
        ("xz", &["-c", "--check=crc32"][..], "xz-utils", false),
        ("lz4", &["-c", "-q"][..], "lz4", false),
        ("lz4", &["-l", "-c", "-q"][..], "lz4", true),
    ] {
        let z = filter(tool, args, pkg, &tools);
        let i = parse_initramfs(&z, &InitramfsLimits::default()).unwrap();
        assert_eq!(i.generator(), Some("initramfs-tools"), "{tool}");
        assert_eq!(
            i.conf_modules.as_deref(),
            Some("vmw_pvscsi \nsd_mod \n"),
            "{tool} {args:?}"
        );
        assert_eq!(i.module_dirs(), ["usr/lib/modules/6.1.0-13-amd64"]);
        assert_eq!(i.append_refusal().is_some(), refused, "{tool} {args:?}");
        if refused {
            continue;
        }
        // An odd-length original: the archive starts at the next multiple of 4.
        let mut odd = z.clone();
        odd.push(0);
        for orig in [&z, &odd] {
            let both =
                parse_initramfs(&appended(orig, &extra), &InitramfsLimits::default()).unwrap();
            assert!(both.note.is_none(), "{tool}: {:?}", both.note);
            assert_eq!(both.module_names(), ["nvme", "vmw_pvscsi"], "{tool}");
            assert_eq!(
                both.conf_modules.as_deref(),
                Some("vmw_pvscsi\nsd_mod\nnvme\n"),
                "{tool}: the appended conf/modules wins"
            );
        }
    }
    // Data after the last member that nobody recognises: no appending.
    let mut junk = filter("gzip", &["-c"], "gzip", &tools);
    junk.extend_from_slice(b"junkjunk");
    let i = parse_initramfs(&junk, &InitramfsLimits::default()).unwrap();
    assert!(i.append_refusal().is_some());
}

/// A zstd frame whose window is over libzstd's default limit (2^27 bytes,
/// what the zstd tool makes without --long) is refused before a window is
/// allocated; one at the limit decodes.
#[test]
fn zstd_window_over_the_limit_is_refused() {
    // Magic, a frame header with only a window descriptor (2^(10+e)), and
    // one last, raw, empty block.
    let frame = |e: u8| {
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, e << 3];
        f.extend_from_slice(&[0x01, 0x00, 0x00]);
        f
    };
    let e = parse_initramfs(&frame(18), &InitramfsLimits::default()).unwrap_err();
    assert!(e.to_string().contains("zstd"), "{e}");
    assert!(parse_initramfs(&frame(17), &InitramfsLimits::default()).is_ok());
}

/// Two zstd frames one after the other read as one stream, as the kernel
/// reads them: the archive split across them parses whole.
#[test]
fn concatenated_zstd_frames_are_one_stream() {
    let plain = main_archive();
    let (a, b) = plain.split_at(plain.len() / 2 + 3);
    let mut z = filter("zstd", &["-c", "-q"], "zstd", a);
    z.extend_from_slice(&filter("zstd", &["-c", "-q"], "zstd", b));
    let whole = filter("zstd", &["-c", "-q"], "zstd", &plain);
    let got = parse_initramfs(&z, &InitramfsLimits::default()).unwrap();
    let want = parse_initramfs(&whole, &InitramfsLimits::default()).unwrap();
    assert_eq!(got.module_names(), want.module_names());
    assert!(!got.module_names().is_empty());
}

/// Reading stops at the last module asked for, in every stream form (a
/// stored archive, gzip and zstd after an early-microcode archive), and
/// reads the whole image when one of them is not there.
#[test]
fn reading_stops_once_every_module_asked_for_is_seen() {
    use std::collections::BTreeSet;
    use vmie_os::initramfs::parse_initramfs_until;
    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let with_microcode = |z: Vec<u8>| {
        let mut img = microcode();
        img.extend_from_slice(&z);
        img
    };
    let images = [
        (main_archive(), vec!["cpio"]),
        (
            with_microcode(filter("gzip", &["-c"], "gzip", &main_archive())),
            vec!["cpio", "gzip", "cpio"],
        ),
        (
            with_microcode(filter("zstd", &["-c", "-q"], "zstd", &main_archive())),
            vec!["cpio", "zstd", "cpio"],
        ),
    ];
    let limits = InitramfsLimits::default();
    for (img, segments) in &images {
        let whole = parse_initramfs(img, &limits).unwrap();
        assert!(!whole.stopped_early);
        assert_eq!(&whole.segments, segments);

        // ena comes second among the modules, nvme first: the listing
        // ends with ena's entry.
        let i = parse_initramfs_until(img, &limits, &want(&["nvme", "ena"])).unwrap();
        assert!(i.stopped_early, "{segments:?}");
        assert_eq!(i.module_names(), vec!["ena", "nvme"]);
        assert!(i.entries.last().unwrap().name.ends_with("/ena.ko.xz"));
        assert_eq!(i.entries[..], whole.entries[..i.entries.len()]);
        assert!(
            i.append_refusal().is_some(),
            "a partial listing is no basis to append"
        );

        // One of them missing: read to the end, as without a stop.
        let i = parse_initramfs_until(img, &limits, &want(&["nvme", "hv_storvsc"])).unwrap();
        assert!(!i.stopped_early);
        assert_eq!((&i.segments, &i.entries), (&whole.segments, &whole.entries));
    }
}
