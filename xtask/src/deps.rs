//! The one list of Debian packages that the tests, the fixtures, the demo,
//! the fuzz run, the bench and the boot test need, and `cargo xtask deps`,
//! which installs the missing ones. `.ci/run` calls `cargo xtask deps`; nothing
//! else names packages to install.
//!
//! Whether a package is there is decided by a file it ships (not by a command
//! on `PATH`: `grub-mkimage` comes from grub-common, but the BIOS modules it
//! needs come from grub-pc-bin, and only `moddep.lst` tells them apart).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian package, and files it ships (all must exist for it to count as
/// installed).
pub const PACKAGES: &[(&str, &[&str])] = &[
    (
        "e2fsprogs",
        &[
            "/usr/sbin/mke2fs",
            "/usr/sbin/e2fsck",
            "/usr/sbin/debugfs",
            "/usr/sbin/dumpe2fs",
        ],
    ),
    (
        "xfsprogs",
        &[
            "/usr/sbin/mkfs.xfs",
            "/usr/sbin/xfs_repair",
            "/usr/sbin/xfs_db",
        ],
    ),
    ("btrfs-progs", &["/usr/sbin/mkfs.btrfs", "/usr/bin/btrfs"]),
    (
        "dosfstools",
        &["/usr/sbin/mkfs.vfat", "/usr/sbin/fsck.vfat"],
    ),
    ("mtools", &["/usr/bin/mcopy"]),
    ("fdisk", &["/usr/sbin/sfdisk"]),
    (
        "util-linux",
        &["/usr/sbin/blkid", "/usr/sbin/mkswap", "/usr/bin/umount"],
    ),
    (
        "ntfs-3g",
        &[
            "/usr/bin/ntfs-3g",
            "/usr/sbin/mkntfs",
            "/usr/sbin/ntfscp",
            "/usr/bin/ntfsfix",
            "/usr/sbin/ntfsresize",
            "/usr/bin/ntfsinfo",
        ],
    ),
    ("genisoimage", &["/usr/bin/genisoimage"]),
    ("lvm2", &["/usr/sbin/lvcreate"]),
    ("cryptsetup-bin", &["/usr/sbin/cryptsetup"]),
    // md RAID: `mdadm --examine` on the host is the reference for the
    // superblocks the kernel wrote (crates/vmie-md/tests).
    ("mdadm", &["/usr/sbin/mdadm"]),
    // setfattr: ntfs-3g makes a compressed file for vmie-ntfs's refusals.
    ("attr", &["/usr/bin/setfattr"]),
    // An independent AES-XTS/CBC-ESSIV (OpenSSL's) encrypts and decrypts
    // LUKS payloads in crates/vmie-luks/tests (cryptsetup cannot open here).
    (
        "python3-cryptography",
        &["/usr/lib/python3/dist-packages/cryptography/__init__.py"],
    ),
    ("gzip", &["/usr/bin/gzip"]),
    ("xz-utils", &["/usr/bin/xz"]),
    ("zstd", &["/usr/bin/zstd"]),
    ("lz4", &["/usr/bin/lz4"]),
    ("bzip2", &["/usr/bin/bzip2"]),
    ("cpio", &["/usr/bin/cpio"]),
    // modprobe --show-depends -d: the boot test checks the injected drivers resolve.
    ("kmod", &["/usr/bin/kmod", "/usr/sbin/modprobe"]),
    // libvhdi reads differencing VHDs (qemu does not): the reference in
    // crates/vmie-disk/tests/vhd_differencing.rs.
    (
        "python3-libvhdi",
        &["/usr/lib/python3/dist-packages/pyvhdi.cpython-311-x86_64-linux-gnu.so"],
    ),
    ("libhivex-bin", &["/usr/bin/hivexsh", "/usr/bin/hivexget"]),
    ("libwin-hivex-perl", &["/usr/bin/hivexregedit"]),
    ("time", &["/usr/bin/time"]),
    // `inspect --format xml` is validated against virt-inspector's RELAX NG
    // schema (see `VIRT_INSPECTOR_RNG`), and osinfo short ids against
    // libosinfo's database.
    ("libxml2-utils", &["/usr/bin/xmllint"]),
    (
        "osinfo-db",
        &[
            "/usr/share/osinfo/VERSION",
            "/usr/share/osinfo/os/debian.org/debian-11.xml",
        ],
    ),
    // The boot test: a real Debian guest, GRUB written without mounting, qemu.
    ("debootstrap", &["/usr/sbin/debootstrap"]),
    ("grub-common", &["/usr/bin/grub-mkimage"]),
    (
        "grub-pc-bin",
        &[
            "/usr/lib/grub/i386-pc/moddep.lst",
            "/usr/lib/grub/i386-pc/boot.img",
        ],
    ),
    // qemu-utils and qemu-system-x86 are installed together at Debian's
    // version (see `QEMU`), not from this list.
];

/// Installed after [`QEMU`], since they depend on qemu-system-x86: guestfish
/// and the kernel its appliance boots (supermin builds the appliance from
/// the host's kernel). The md RAID tests make their arrays with the real
/// kernel md driver inside that appliance (this machine's kernel has none).
pub const AFTER_QEMU: &[(&str, &[&str])] = &[
    ("libguestfs-tools", &["/usr/bin/guestfish"]),
    (
        "linux-image-amd64",
        &["/usr/share/doc/linux-image-amd64/copyright"],
    ),
];

/// Installed together at the version Debian offers for qemu-system-x86: the
/// machine image ships a newer qemu-utils that conflicts with it.
pub const QEMU: &[(&str, &[&str])] = &[
    ("qemu-system-x86", &["/usr/bin/qemu-system-x86_64"]),
    ("qemu-utils", &["/usr/bin/qemu-img"]),
];

/// Where `cargo xtask deps` puts virt-inspector's RELAX NG schema, taken
/// from Debian's guestfs-tools package (`apt-get download`, then only that
/// file extracted with `dpkg-deb -x` and gunzipped). guestfs-tools itself
/// (virt-inspector) is not needed: the tests compare with reference XML.
pub const VIRT_INSPECTOR_RNG: &str = "/usr/local/share/vmie-fixup/virt-inspector.rng";

/// The package shipping the schema, and the schema's path inside it.
const RNG_PACKAGE: &str = "guestfs-tools";
const RNG_IN_PACKAGE: &str = "usr/share/doc/guestfs-tools/virt-inspector.rng.gz";

/// The Debian package that ships `tool` (a program name), for messages.
pub fn package_of(tool: &str) -> Option<&'static str> {
    PACKAGES.iter().chain(QEMU).find_map(|(pkg, files)| {
        files
            .iter()
            .any(|f| Path::new(f).file_name().is_some_and(|n| n == tool))
            .then_some(*pkg)
    })
}

fn installed(files: &[&str]) -> bool {
    files.iter().all(|f| Path::new(f).is_file())
}

/// The packages of the list that are missing here.
pub fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, files)| !installed(files))
        .map(|(p, _)| *p)
        .collect()
}

fn apt(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    eprintln!("xtask: $ apt-get {}", args.join(" "));
    let st = cmd.status().context("starting apt-get")?;
    if !st.success() {
        bail!("apt-get {} failed: {st}", args.join(" "));
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Install every missing package of the list (apt-get update first), and
/// qemu-system-x86 with qemu-utils at Debian's version. Without root, fails
/// naming what to install.
pub fn deps() -> Result<()> {
    let missing = missing();
    let qemu_missing = QEMU.iter().any(|(_, f)| !installed(f));
    let rng_missing = !Path::new(VIRT_INSPECTOR_RNG).is_file();
    let after: Vec<&str> = AFTER_QEMU
        .iter()
        .filter(|(_, f)| !installed(f))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() && !qemu_missing && !rng_missing && after.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {} {} {}{} (run as root, or: sudo cargo xtask deps)",
            missing.join(" "),
            if qemu_missing { "qemu-system-x86" } else { "" },
            after.join(" "),
            if rng_missing {
                format!(" and {VIRT_INSPECTOR_RNG} (from {RNG_PACKAGE})")
            } else {
                String::new()
            }
        );
    }
    apt(&["update", "-q"])?;
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
    }
    if qemu_missing {
        let out = Command::new("apt-cache")
            .args(["policy", "qemu-system-x86"])
            .output()
            .context("apt-cache policy qemu-system-x86")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .map(|v| v.trim().to_string())
            })
            .filter(|v| v != "(none)")
            .context("no candidate version of qemu-system-x86 in apt's lists")?;
        let utils = format!("qemu-utils={v}");
        let extra = format!("qemu-block-extra={v}");
        apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--allow-downgrades",
            &utils,
            &extra,
            "qemu-system-x86",
        ])?;
    }
    if !after.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&after);
        apt(&args)?;
    }
    if rng_missing {
        fetch_rng()?;
    }
    let still = missing_after();
    if !still.is_empty() {
        bail!("installed, but still missing files: {}", still.join(", "));
    }
    Ok(())
}

fn missing_after() -> Vec<String> {
    PACKAGES
        .iter()
        .chain(QEMU)
        .chain(AFTER_QEMU)
        .flat_map(|(_, files)| files.iter())
        .chain(std::iter::once(&VIRT_INSPECTOR_RNG))
        .filter(|f| !Path::new(f).is_file())
        .map(|f| f.to_string())
        .collect()
}

/// `apt-get download` guestfs-tools into a fresh directory under the
/// system's temp dir, extract the package there with `dpkg-deb -x` (nothing
/// is installed), gunzip its virt-inspector.rng.gz to
/// [`VIRT_INSPECTOR_RNG`] (through a temporary name, so a failure leaves no
/// half-written schema), and remove the directory.
fn fetch_rng() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vmie-xtask-rng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let res = fetch_rng_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn fetch_rng_in(dir: &Path) -> Result<()> {
    eprintln!(
        "xtask: $ apt-get download {RNG_PACKAGE} (in {})",
        dir.display()
    );
    let st = Command::new("apt-get")
        .args(["download", "-q", RNG_PACKAGE])
        .current_dir(dir)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("starting apt-get download")?;
    if !st.success() {
        bail!("apt-get download {RNG_PACKAGE} failed: {st}");
    }
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?;
    let root = dir.join("x");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .context("starting dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed: {st}", deb.display());
    }
    let gz = root.join(RNG_IN_PACKAGE);
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .context("starting gzip")?;
    if !out.status.success() || !out.stdout.starts_with(b"<grammar") {
        bail!(
            "{} in {} is not the gzipped RELAX NG schema expected",
            RNG_IN_PACKAGE,
            deb.display()
        );
    }
    let dest = Path::new(VIRT_INSPECTOR_RNG);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = dest.with_extension("rng.tmp");
    std::fs::write(&tmp, &out.stdout).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    eprintln!("xtask: wrote {VIRT_INSPECTOR_RNG}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_package() {
        assert_eq!(package_of("moddep.lst"), Some("grub-pc-bin"));
        assert_eq!(package_of("mkfs.xfs"), Some("xfsprogs"));
        assert_eq!(package_of("qemu-img"), Some("qemu-utils"));
        assert_eq!(package_of("no-such-tool"), None);
    }
}
