//! VMDK text descriptors against qemu: monolithicFlat, twoGbMaxExtentFlat
//! and twoGbMaxExtentSparse images qemu-img writes from a real raw disk,
//! hand-written descriptors mixing FLAT (with an offset), ZERO and SPARSE
//! extents (also a real streamOptimized extent from go-vmdk-parser), and
//! delta (snapshot) disks over their parent all read byte-identical to
//! `qemu-img convert -O raw`; hostile descriptors (extents past their file,
//! absolute or `..` names, devices, missing files, unknown types, too many
//! extents, parent loops, a parent whose CID changed) are refused naming
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vmie_disk::format::detect_container;
use vmie_disk::image::{open_image_with, ImageLimits};
use vmie_disk::{Device, DiskError, DiskSet, FileDevice};

const GO_VMDK: &str = "/work/shared/realdata/go-vmdk-parser/pkg/virtualization/vmdk/testdata";

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(p: &Path) -> Result<Arc<dyn Device>, DiskError> {
    open_with(p, &ImageLimits::default())
}

fn open_with(p: &Path, limits: &ImageLimits) -> Result<Arc<dyn Device>, DiskError> {
    let f = Arc::new(FileDevice::open(p)?);
    let fmt = detect_container(f.as_ref())?.expect("a container");
    open_image_with(f, fmt, limits)
}

/// `qemu-img convert -O raw img dir/name`.
fn to_raw(img: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    qemu_img(&["convert", "-O", "raw", s(img), s(&out)]);
    out
}

/// A raw image of `mib` MiB where every 4 KiB block names itself (`seed`
/// varies the content).
fn raw_image(path: &Path, mib: u64, seed: usize) {
    let mut data = vec![0u8; (mib << 20) as usize];
    for (i, block) in data.chunks_mut(4096).enumerate() {
        if (i + seed) % 5 == 0 {
            continue; // some zero blocks
        }
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((i * 31 + j * 7 + seed) % 251) as u8 + 1;
        }
    }
    std::fs::write(path, data).unwrap();
}

/// `dev` reads exactly like the raw file `raw`: whole, in 1 MiB chunks, and
/// at unaligned ranges across extent boundaries.
fn assert_same(raw: &Path, dev: &dyn Device) {
    let r = FileDevice::open(raw).unwrap();
    assert_eq!(dev.len(), r.len(), "{}", dev.describe());
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < r.len() {
        let n = (r.len() - off).min(1 << 20) as usize;
        r.read_at(off, &mut a[..n]).unwrap();
        dev.read_at(off, &mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "{}: differs at {off}", dev.describe());
        off += n as u64;
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 200_000).min(r.len() / 2) as usize;
        let at = (x >> 20) % (r.len() - len as u64);
        let mut p = vec![0u8; len];
        let mut q = vec![0u8; len];
        r.read_at(at, &mut p).unwrap();
        dev.read_at(at, &mut q).unwrap();
        assert!(p == q, "{}: {len} bytes at {at} differ", dev.describe());
    }
    assert!(dev.read_at(dev.len() - 1, &mut [0u8; 2]).is_err());
    assert!(dev.write_at(0, &[0]).is_err(), "read-only");
}

fn demo() -> PathBuf {
    xtask::fixtures::image("demo").unwrap_or_else(|e| panic!("building fixture demo: {e:#}"))
}

/// The demo guest converted to each descriptor subformat reads like the
/// raw image (the 4 GiB disk is two extents in the twoGb formats).
#[test]
fn qemu_descriptor_subformats_read_like_the_raw_image() {
    let raw = demo();
    for sub in [
        "monolithicFlat",
        "twoGbMaxExtentFlat",
        "twoGbMaxExtentSparse",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("vm.vmdk");
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&raw),
            s(&img),
        ]);
        let text = std::fs::read_to_string(&img).unwrap();
        assert!(text.starts_with("# Disk DescriptorFile"), "{text}");
        let dev = open(&img).unwrap();
        assert!(
            dev.describe().ends_with(&format!("(VMDK {sub})")),
            "{}",
            dev.describe()
        );
        assert_same(&raw, dev.as_ref());
        // DiskSet counts the reads of every extent file in the image's
        // statistics.
        let set = DiskSet::open(std::slice::from_ref(&img), false).unwrap();
        let mut b = vec![0u8; 1 << 16];
        set.disks()[0].device().read_at(0, &mut b).unwrap();
        let (bytes, _) = set.read_stats();
        assert!(bytes >= 1 << 16, "{sub}: {bytes} bytes counted");
        let err = DiskSet::open(std::slice::from_ref(&img), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("qemu-img convert -O raw"), "{err}");
    }
}

/// Descriptors written by hand, as VMware tools write them: a FLAT extent
/// at an offset in its file, a SPARSE extent (a name with a space) and a
/// FLAT one read like qemu reads the same descriptor; with a ZERO extent and
/// an RDONLY extent added (qemu skips both, VMware's format makes them part
/// of the disk), they read like the extents' source bytes laid end to end.
#[test]
fn hand_written_descriptors_with_mixed_extents_read_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // flat.bin: 1 MiB of padding, then 3 MiB used by the first extent.
    raw_image(&d.join("flat.bin"), 4, 1);
    raw_image(&d.join("part.raw"), 2, 2);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        s(&d.join("part.raw")),
        s(&d.join("sparse extent.vmdk")),
    ]);
    raw_image(&d.join("tail.bin"), 1, 3);
    let head = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
                createType=\"monolithicFlat\"\n\n# Extent description\n";
    let tail = "\nddb.adapterType = \"lsilogic\"\n";
    let img = d.join("vm.vmdk");
    std::fs::write(
        &img,
        format!(
            "{head}RW 6144 FLAT \"flat.bin\" 2048\nRW 4096 SPARSE \"sparse extent.vmdk\"\n\
             RW 2048 FLAT \"./tail.bin\" 0\n{tail}"
        ),
    )
    .unwrap();
    let raw = to_raw(&img, d, "vm.raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 6 << 20);
    assert_same(&raw, open(&img).unwrap().as_ref());
    std::fs::write(
        &img,
        format!(
            "{head}RDONLY 6144 FLAT \"flat.bin\" 2048\nRW 1024 ZERO\n\
             RW 4096 SPARSE \"sparse extent.vmdk\"\nRW 2048 FLAT \"./tail.bin\" 0\n{tail}"
        ),
    )
    .unwrap();
    let mut want = std::fs::read(d.join("flat.bin")).unwrap()[1 << 20..].to_vec();
    want.extend_from_slice(&[0u8; 1 << 19]);
    want.extend_from_slice(&std::fs::read(d.join("part.raw")).unwrap());
    want.extend_from_slice(&std::fs::read(d.join("tail.bin")).unwrap());
    std::fs::write(&raw, &want).unwrap();
    assert_same(&raw, open(&img).unwrap().as_ref());
}

/// The real streamOptimized and monolithicSparse extents of go-vmdk-parser
/// (made by qemu-img), named by a descriptor: as a twoGbMaxExtentSparse
/// descriptor listing both, read like qemu reads it; each alone under a
/// descriptor of its own createType (which qemu does not open), read like
/// qemu reads the extent itself.
#[test]
fn real_sparse_extents_named_by_a_descriptor_read_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n";
    let mut both = String::new();
    for (file, ct) in [
        ("vmdk-streamoptimized.img", "streamOptimized"),
        ("vmdk-monolith.img", "monolithicSparse"),
    ] {
        let src = Path::new(GO_VMDK).join(file);
        let ext = d.join(file);
        std::fs::copy(&src, &ext).unwrap();
        let alone = to_raw(&ext, d, &format!("{file}.raw"));
        assert_same(&alone, open(&ext).unwrap().as_ref());
        let sectors = std::fs::metadata(&alone).unwrap().len() / 512;
        let line = format!("RW {sectors} SPARSE \"{file}\"\n");
        both.push_str(&line);
        let img = d.join(format!("{ct}.vmdk"));
        std::fs::write(&img, format!("{head}createType=\"{ct}\"\n{line}")).unwrap();
        let dev = open(&img).unwrap();
        assert!(dev.describe().ends_with(&format!("(VMDK {ct})")));
        assert_same(&alone, dev.as_ref());
    }
    let img = d.join("both.vmdk");
    std::fs::write(
        &img,
        format!("{head}createType=\"twoGbMaxExtentSparse\"\n{both}"),
    )
    .unwrap();
    let raw = to_raw(&img, d, "both.raw");
    assert_same(&raw, open(&img).unwrap().as_ref());
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut a = vec!["-f", "vmdk"];
    for c in cmds {
        a.push("-c");
        a.push(c);
    }
    a.push(s(img));
    let out = Command::new("qemu-io").args(&a).output().expect("qemu-io");
    assert!(
        out.status.success(),
        "qemu-io {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delta disks made by `qemu-img create -b` and written by `qemu-io` (only
/// what was written is in the child; a zero write hides the parent's data)
/// read like qemu reads them and like the raw image with the same writes, as
/// a monolithicSparse child (embedded descriptor) and a
/// twoGbMaxExtentSparse child (descriptor file), in a chain of three.
#[test]
fn delta_disks_read_through_their_parents_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    raw_image(&d.join("base.raw"), 8, 0);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        s(&d.join("base.raw")),
        s(&d.join("base.vmdk")),
    ]);
    let mut data = std::fs::read(d.join("base.raw")).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        s(&d.join("mid.vmdk")),
    ]);
    qemu_io(
        &d.join("mid.vmdk"),
        &["write -P 0xab 5000 4000", "write -z 3M 64k"],
    );
    data[5000..9000].fill(0xab);
    data[3 << 20..(3 << 20) + 65536].fill(0);
    std::fs::write(d.join("mid.raw"), &data).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        "-b",
        "mid.vmdk",
        "-F",
        "vmdk",
        s(&d.join("top.vmdk")),
    ]);
    qemu_io(&d.join("top.vmdk"), &["write -P 0xcd 7340032 12345"]);
    data[7 << 20..(7 << 20) + 12345].fill(0xcd);
    std::fs::write(d.join("top.raw"), &data).unwrap();
    // The children hold only what was written.
    assert!(std::fs::metadata(d.join("top-s001.vmdk")).unwrap().len() < 1 << 20);
    assert!(std::fs::metadata(d.join("mid.vmdk")).unwrap().len() < 1 << 20);
    let mid = open(&d.join("mid.vmdk")).unwrap();
    assert!(
        mid.describe()
            .ends_with("(VMDK monolithicSparse, parent \"base.vmdk\")"),
        "{}",
        mid.describe()
    );
    assert_same(&d.join("mid.raw"), mid.as_ref());
    let top = open(&d.join("top.vmdk")).unwrap();
    assert_same(&d.join("top.raw"), top.as_ref());
    // And qemu reads the chain the same way.
    let q = to_raw(&d.join("top.vmdk"), d, "q.raw");
    assert_eq!(std::fs::read(q).unwrap(), data);
    // Three images: a limit of two refuses the chain.
    let two = ImageLimits {
        max_chain: 2,
        ..ImageLimits::default()
    };
    let err = open_with(&d.join("top.vmdk"), &two)
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than 2 images"), "{err}");
}

/// Rewrite `key=value` in the descriptor file `p`.
fn set_key(p: &Path, key: &str, value: &str) {
    let t = std::fs::read_to_string(p).unwrap();
    let is_key = |l: &str| l.split_once('=').is_some_and(|(k, _)| k.trim() == key);
    let mut out: Vec<String> = t
        .lines()
        .map(|l| {
            if is_key(l) {
                format!("{key}={value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !t.lines().any(is_key) {
        out.insert(2, format!("{key}={value}"));
    }
    std::fs::write(p, out.join("\n") + "\n").unwrap();
}

fn cid(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap();
    t.lines()
        .find_map(|l| l.strip_prefix("CID="))
        .unwrap()
        .to_string()
}

/// A parent whose CID is not the child's parentCID (it changed since the
/// snapshot), a loop of descriptors and a missing parent are refused.
#[test]
fn hostile_parents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    raw_image(&d.join("base.raw"), 2, 0);
    let flat = |name: &str| {
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            s(&d.join("base.raw")),
            s(&d.join(name)),
        ]);
    };
    flat("p.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        "-b",
        "p.vmdk",
        "-F",
        "vmdk",
        s(&d.join("c.vmdk")),
    ]);
    open(&d.join("c.vmdk")).unwrap();
    // The parent changed: another CID.
    let old = cid(&d.join("p.vmdk"));
    set_key(&d.join("p.vmdk"), "CID", "0badcafe");
    let err = open(&d.join("c.vmdk")).unwrap_err().to_string();
    assert!(
        err.contains("p.vmdk") && err.contains("0badcafe") && err.contains(&old),
        "{err}"
    );
    // A loop: the parent names the child as its own parent.
    set_key(&d.join("p.vmdk"), "CID", &old);
    set_key(&d.join("p.vmdk"), "parentCID", &cid(&d.join("c.vmdk")));
    set_key(&d.join("p.vmdk"), "parentFileNameHint", "\"c.vmdk\"");
    let err = open(&d.join("c.vmdk")).unwrap_err().to_string();
    assert!(err.contains("loop"), "{err}");
    // Missing parent; a parent that is not a VMDK; no parent name.
    set_key(&d.join("c.vmdk"), "parentFileNameHint", "\"gone.vmdk\"");
    let err = open(&d.join("c.vmdk")).unwrap_err().to_string();
    assert!(err.contains("gone.vmdk"), "{err}");
    set_key(&d.join("c.vmdk"), "parentFileNameHint", "\"base.raw\"");
    let err = open(&d.join("c.vmdk")).unwrap_err().to_string();
    assert!(err.contains("declared as vmdk"), "{err}");
    set_key(&d.join("c.vmdk"), "parentFileNameHint", "\"\"");
    let err = open(&d.join("c.vmdk")).unwrap_err().to_string();
    assert!(err.contains("parentFileNameHint"), "{err}");
}

/// Write `desc` as `name` in `d` and open it: the error text.
fn refused(d: &Path, desc: &str, limits: &ImageLimits) -> String {
    let p = d.join("h.vmdk");
    std::fs::write(&p, desc).unwrap();
    open_with(&p, limits).unwrap_err().to_string()
}

fn header(ct: &str) -> String {
    format!("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"{ct}\"\n")
}

#[test]
fn hostile_descriptors_are_refused_naming_the_extent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    raw_image(&d.join("f.bin"), 1, 0);
    std::fs::write(d.join("notsparse.vmdk"), header("monolithicFlat")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("dev.bin")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let l = ImageLimits::default();
    let h = header("monolithicFlat");
    let cases: Vec<(String, Vec<&str>)> = vec![
        // past the end of the file, by size and by offset
        (format!("{h}RW 2049 FLAT \"f.bin\" 0\n"), vec!["line 6", "past the end"]),
        (format!("{h}RW 2048 FLAT \"f.bin\" 1\n"), vec!["line 6", "past the end"]),
        (
            format!("{h}RW 1 FLAT \"f.bin\" 36028797018963968\n"),
            vec!["offset", "too large"],
        ),
        (format!("{h}RW 0 FLAT \"f.bin\" 0\n"), vec!["0 sectors"]),
        (
            format!("{h}RW 36028797018963968 FLAT \"f.bin\" 0\n"),
            vec!["out of range"],
        ),
        (
            format!("{h}RW 18014398509481983 ZERO\nRW 18014398509481983 ZERO\nRW 18014398509481983 ZERO\n"),
            vec!["2^64"],
        ),
        (format!("{h}RW x FLAT \"f.bin\" 0\n"), vec!["not a number"]),
        (format!("{h}RW 8 FLAT \"f.bin\" y\n"), vec!["offset \"y\""]),
        (format!("{h}RW 8 FLAT \"f.bin\n"), vec!["closing quote"]),
        (format!("{h}RW 8 FLAT\n"), vec!["names no file"]),
        // names: absolute, .., a device, a directory, missing
        (format!("{h}RW 8 FLAT \"/etc/passwd\" 0\n"), vec!["relative"]),
        (format!("{h}RW 8 FLAT \"../f.bin\" 0\n"), vec!["relative"]),
        (format!("{h}RW 8 FLAT \"dev.bin\" 0\n"), vec!["not a regular file"]),
        (format!("{h}RW 8 FLAT \"sub\" 0\n"), vec!["not a regular file"]),
        (format!("{h}RW 8 FLAT \"gone.bin\" 0\n"), vec!["gone.bin"]),
        // types and access
        (format!("{h}NOACCESS 8 FLAT \"f.bin\" 0\n"), vec!["NOACCESS"]),
        (format!("{h}RW 8 VMFSRDM \"f.bin\"\n"), vec!["VMFSRDM", "qemu-img convert"]),
        (format!("{h}RW 8 VMFSSPARSE \"f.bin\"\n"), vec!["VMFSSPARSE"]),
        (format!("{h}RW 8 SPARSE \"f.bin\"\n"), vec!["KDMV"]),
        (format!("{h}RW 8 SPARSE \"notsparse.vmdk\"\n"), vec!["text descriptor"]),
        (format!("{h}RW 8 SPARSE \"f.bin\" 4\n"), vec!["offset 0"]),
        (header("vmfsRawDeviceMap") + "RW 8 FLAT \"f.bin\" 0\n", vec!["vmfsRawDeviceMap"]),
        (header("vmfsSparse") + "RW 8 FLAT \"f.bin\" 0\n", vec!["vmfsSparse"]),
        (h.clone(), vec!["no extents"]),
        ("# Disk DescriptorFile\nCID=xyz\n".into(), vec!["CID"]),
        (format!("{h}parentCID=1\nRW 8 FLAT \"f.bin\" 0\n"), vec!["parentFileNameHint"]),
    ];
    for (desc, want) in cases {
        let err = refused(d, &desc, &l);
        for w in want {
            assert!(err.contains(w), "{desc:?}: wanted {w:?} in {err}");
        }
    }
    // A sparse extent smaller than its line says.
    raw_image(&d.join("small.raw"), 1, 0);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        s(&d.join("small.raw")),
        s(&d.join("small.vmdk")),
    ]);
    let err = refused(d, &format!("{h}RW 4096 SPARSE \"small.vmdk\"\n"), &l);
    assert!(err.contains("less than the extent"), "{err}");
    // Not UTF-8.
    let mut b = header("monolithicFlat").into_bytes();
    b.extend_from_slice(b"RW 8 FLAT \"\xff.bin\" 0\n");
    std::fs::write(d.join("h.vmdk"), &b).unwrap();
    let err = open(&d.join("h.vmdk")).unwrap_err().to_string();
    assert!(err.contains("UTF-8"), "{err}");
    // Counts and sizes capped by the limits.
    let many = format!("{h}{}", "RW 1 ZERO\n".repeat(11));
    let ten = ImageLimits {
        max_extents: 10,
        ..ImageLimits::default()
    };
    assert!(refused(d, &many, &ten).contains("more than 10 extents"));
    let eleven = ImageLimits {
        max_extents: 11,
        ..ImageLimits::default()
    };
    std::fs::write(d.join("h.vmdk"), &many).unwrap();
    assert_eq!(
        open_with(&d.join("h.vmdk"), &eleven).unwrap().len(),
        11 * 512
    );
    let tiny = ImageLimits {
        max_descriptor_bytes: 100,
        ..ImageLimits::default()
    };
    assert!(refused(d, &many, &tiny).contains("limit of 100 bytes"));
}
