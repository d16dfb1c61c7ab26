//! The panic boundary around the `ntfs` crate, proven by fault injection.
//!
//! No image that passes our validation is known to panic the crate (the two
//! panics found earlier are now refused before it sees the record), so the
//! boundary is proven with a device that panics on the N-th read made
//! *inside* a boundary (`vmie_disk::guard::inside`), that is, by the crate:
//! our own reads (boot sector, raw MFT records, attribute lists) are made
//! outside any boundary. For every N, the operation that was running must
//! return `FsError::Corrupt` naming the volume and the MFT record (or the
//! boot sector), and the test process goes on. A crate call left unguarded
//! would not trigger the injection; one guarded but mapped wrongly fails the
//! assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::backtrace::Backtrace;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use vmie_disk::{Device, DiskError, MemDevice};
use vmie_guestfs::{FileType, FsError, GuestFs, GuestPath};
use vmie_ntfs::NtfsFs;

const NEVER: usize = usize::MAX;

/// A device that panics on its `panic_at`-th read made inside a boundary.
/// With `audit`, it also looks at the call stack of every read and keeps
/// those made by the `ntfs` crate outside any boundary.
#[derive(Debug)]
struct PanicOnGuardedRead {
    inner: MemDevice,
    guarded_reads: AtomicUsize,
    panic_at: usize,
    audit: bool,
    unguarded_crate_reads: Mutex<Vec<String>>,
}

/// Whether a captured call stack has a frame of the `ntfs` crate itself
/// (not of vmie_ntfs).
fn has_ntfs_crate_frame(stack: &str) -> bool {
    stack.lines().any(|l| {
        let l = l.trim_start();
        let sym = l.split_once(": ").map_or(l, |(_, s)| s);
        sym.starts_with("ntfs::") || sym.starts_with("<ntfs::")
    })
}

impl Device for PanicOnGuardedRead {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        if self.audit && !vmie_disk::guard::inside() {
            let stack = Backtrace::force_capture().to_string();
            if has_ntfs_crate_frame(&stack) {
                self.unguarded_crate_reads.lock().unwrap().push(stack);
            }
        }
        if vmie_disk::guard::inside() {
            let n = self.guarded_reads.fetch_add(1, Ordering::SeqCst);
            if n == self.panic_at {
                panic!("injected panic on guarded read {n} (byte {offset})");
            }
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.inner.write_at(offset, buf)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Panics inside a boundary become errors: keep them off stderr (the
/// default hook still reports any other panic).
fn quiet_inside_boundaries() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !vmie_disk::guard::inside() {
                default(info);
            }
        }));
    });
}

/// Open the volume and use every read primitive on it, stopping at the
/// first error.
fn script(dev: Arc<dyn Device>) -> Result<(), FsError> {
    let fs = NtfsFs::open(dev, "guarded.img")?;
    fs.volume_info()?;
    let root = GuestPath::root();
    for e in fs.read_dir(&root)? {
        let p = root.join(&e.name);
        match fs.symlink_metadata(&p)?.file_type {
            FileType::Regular => {
                fs.read_file(&p, 4 << 20)?;
            }
            FileType::Directory => {
                let n = fs.read_dir(&p)?.len();
                assert!(n > 0 || e.name != b"many_subdirs");
            }
            _ => {}
        }
    }
    // A case-insensitive lookup through an index node, and a read of a file
    // that is not where the listing starts.
    fs.symlink_metadata(&GuestPath::lexical(b"/MANY_SUBDIRS/300"))?;
    fs.read_file(&GuestPath::lexical(b"/sparse-file"), 4 << 20)?;
    Ok(())
}

fn device(image: &[u8], panic_at: usize, audit: bool) -> Arc<PanicOnGuardedRead> {
    Arc::new(PanicOnGuardedRead {
        inner: MemDevice::new("guarded.img", image.to_vec()),
        guarded_reads: AtomicUsize::new(0),
        panic_at,
        audit,
        unguarded_crate_reads: Mutex::new(Vec::new()),
    })
}

/// The audit's stack test sees the crate's frames: a read the crate makes
/// outside a boundary (here, called directly) is caught by it.
#[test]
fn the_audit_sees_the_crates_frames() {
    let image = std::fs::read(common::testfs1()).unwrap();
    let dev = device(&image, NEVER, true);
    let mut cursor = vmie_disk::DeviceCursor::new(dev.clone());
    ntfs::Ntfs::new(&mut cursor).unwrap();
    let unguarded = dev.unguarded_crate_reads.lock().unwrap();
    assert!(!unguarded.is_empty());
    assert!(!has_ntfs_crate_frame("  3: vmie_ntfs::NtfsFs::load\n"));
}

#[test]
fn a_panic_in_the_ntfs_crate_is_a_refusal_naming_volume_and_record() {
    quiet_inside_boundaries();
    let image = std::fs::read(common::testfs1()).unwrap();

    // Unharmed: the script runs through, and counts the crate's reads. The
    // audit proves every read the crate makes is inside a boundary (it does
    // find the crate's frames: see the first check).
    let dev = device(&image, NEVER, true);
    script(dev.clone()).unwrap();
    let total = dev.guarded_reads.load(Ordering::SeqCst);
    assert!(total > 50, "only {total} reads made by the crate");
    let unguarded = dev.unguarded_crate_reads.lock().unwrap();
    assert!(
        unguarded.is_empty(),
        "{} reads by the ntfs crate outside a boundary; the first:\n{}",
        unguarded.len(),
        unguarded[0]
    );

    let mut places = std::collections::BTreeSet::new();
    for k in 0..total {
        let e =
            script(device(&image, k, false)).expect_err("the injected panic must become an error");
        match &e {
            FsError::Corrupt { fs, place, detail } => {
                assert_eq!(fs, "guarded.img", "read {k}: {e}");
                assert!(
                    detail.starts_with("the ntfs crate failed on corrupt data (injected panic"),
                    "read {k}: {e}"
                );
                assert!(
                    place.contains("(MFT record ") || place == "boot sector",
                    "read {k}: {e}"
                );
                places.insert(place.clone());
            }
            other => panic!("read {k}: expected Corrupt, got {other:?}"),
        }
        assert!(!vmie_disk::guard::inside());
    }
    // The panics were caught at many places: the volume's metadata files,
    // directories and files by path.
    for want in [
        "boot sector",
        "$UpCase (MFT record 10)",
        "$Bitmap (MFT record 6)",
        "$Volume (MFT record 3)",
        "$MFT (MFT record 0)",
        "/MANY_SUBDIRS/300 (MFT record 368)",
        "/many_subdirs (MFT record ",
        "/1000-bytes-file (MFT record ",
    ] {
        assert!(
            places.iter().any(|p| p.starts_with(want)),
            "no panic caught at {want}: {places:?}"
        );
    }
    eprintln!(
        "{total} reads by the ntfs crate, each turned into a refusal; {} places: {places:?}",
        places.len()
    );
}
