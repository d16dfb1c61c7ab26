// The whole fixup path on a damaged image, without the commit:
// vmie_fixup::plan as `vmie-fixup --dry-run` runs it (Vm::open: container
// check, partition table, probe of every volume; inspection of every Linux
// root with its fstab mounts as one tree and of every Windows system volume;
// the preflight gate; the shipped rules through the engine over the overlay;
// the self-check that re-reads every change through freshly opened
// filesystems) and its JSON report. When the gate blocks, the rules run
// anyway on the one Linux guest, so damage that preflight refuses still
// reaches the engine and the ext4 writer.
//
// Structured mutation: a whole disk image is too large for libFuzzer to
// mutate usefully (almost every byte flip lands in free space, and most
// inputs die at the partition table). So the images are fixed *bases*, small
// but real guests built by `cargo xtask fuzz` (fuzz/bases/*.img), and the
// fuzzer's bytes are a list of patches on one of them:
//
//   [base index][patch]...    patch = [tag][idx: u16 LE][off: u16 LE][len][len bytes]
//
//   tag bit 0 = 0: idx picks one of the base's non-zero 512-byte sectors
//                  (metadata, directories, small files), off is within it
//          bit 0 = 1: idx:off is an absolute byte offset (mod the image size)
//   tag bit 1 = 1: instead of writing the bytes, zero len * 64 bytes there
//
// With no patches the base is inspected as built, so the seeds reach every
// layer at once, and each patch is a targeted corruption deep inside it.
// The patched image lives in a file (Vm::open takes paths) on /dev/shm when
// there is one; patches are undone after each run, so a run costs the
// inspection, not a copy of the image.
//
// Must never panic, hang, or allocate what a damaged field asks for.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vmie_fixup::FixOptions;
use vmie_inspect::Vm;
use vmie_rules::engine;
use vmie_rules::rules::Rule;

struct Base {
    bytes: Vec<u8>,
    /// Indices of the non-zero 512-byte sectors.
    hot: Vec<u32>,
    path: PathBuf,
    file: File,
}

fn bases_dir() -> PathBuf {
    std::env::var_os("VMIE_FUZZ_BASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bases"))
}

fn load_bases() -> Vec<Base> {
    let dir = bases_dir();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the bases with `cargo xtask fuzz`",
                dir.display()
            )
        })
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no base images in {}; run `cargo xtask fuzz`",
        dir.display()
    );
    // `cargo xtask fuzz` points VMIE_FUZZ_TMP at a directory it removes
    // after the run.
    let tmp = match std::env::var_os("VMIE_FUZZ_TMP") {
        Some(d) => PathBuf::from(d),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    names
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let bytes = std::fs::read(p).expect("reading a base image");
            let hot = bytes
                .chunks(512)
                .enumerate()
                .filter(|(_, c)| c.iter().any(|&b| b != 0))
                .map(|(n, _)| n as u32)
                .collect();
            let path = tmp.join(format!("vmie-fuzz-{}-{i}.img", std::process::id()));
            std::fs::write(&path, &bytes).expect("writing the working copy of a base");
            let file = File::options()
                .write(true)
                .open(&path)
                .expect("opening the working copy");
            Base {
                bytes,
                hot,
                path,
                file,
            }
        })
        .collect()
}

fn bases() -> &'static Mutex<Vec<Base>> {
    static B: OnceLock<Mutex<Vec<Base>>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(load_bases()))
}

fn rules() -> &'static [Rule] {
    static R: OnceLock<Vec<Rule>> = OnceLock::new();
    R.get_or_init(|| vmie_rules::rules::load(false, &[]).expect("the shipped rules load"))
}

/// Byte ranges (offset, new bytes) decoded from the input.
fn patches(base: &Base, mut data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let size = base.bytes.len() as u64;
    let mut out = Vec::new();
    while data.len() >= 6 && out.len() < 64 {
        let tag = data[0];
        let idx = u16::from_le_bytes([data[1], data[2]]);
        let off = u16::from_le_bytes([data[3], data[4]]);
        let len = usize::from(data[5]);
        data = &data[6..];
        let at = if tag & 1 == 0 && !base.hot.is_empty() {
            let sector = base.hot[usize::from(idx) % base.hot.len()];
            u64::from(sector) * 512 + u64::from(off % 512)
        } else {
            ((u64::from(idx) << 16) | u64::from(off)) % size
        };
        let bytes = if tag & 2 != 0 {
            vec![0u8; len * 64]
        } else {
            let n = len.min(data.len());
            let (b, rest) = data.split_at(n);
            data = rest;
            b.to_vec()
        };
        let n = bytes.len().min((size - at) as usize);
        out.push((at, bytes[..n].to_vec()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let bases = bases().lock().unwrap_or_else(|e| e.into_inner());
    let base = &bases[usize::from(which) % bases.len()];
    let patches = patches(base, rest);
    for (at, bytes) in &patches {
        base.file
            .write_all_at(bytes, *at)
            .expect("patching the working copy");
    }
    dry_run(&base.path);
    // Undo the patches (in reverse, as they may overlap).
    for (at, bytes) in patches.iter().rev() {
        let orig = &base.bytes[*at as usize..*at as usize + bytes.len()];
        base.file
            .write_all_at(orig, *at)
            .expect("restoring the working copy");
    }
});

/// `vmie-fixup --dry-run IMAGE`: the library's plan (open, inspect,
/// preflight gate, rules on the overlay, self-check) and its JSON report.
fn dry_run(image: &Path) {
    static OPTS: OnceLock<FixOptions> = OnceLock::new();
    let opts = OPTS.get_or_init(|| FixOptions {
        dry_run: true,
        ..FixOptions::new(rules().to_vec())
    });
    let images = [image.to_path_buf()];
    match vmie_fixup::plan(&images, opts) {
        Ok(plan) => {
            let _ = serde_json::to_vec(plan.report());
            if plan.is_blocked() && plan.report().changes.is_empty() {
                // The preflight gate stopped it before the rules: run them
                // anyway, so that damage the gate refuses still reaches the
                // engine and the ext4 writer.
                rules_anyway(plan.vm());
            }
        }
        Err(e) => {
            let _ = e.exit_code();
        }
    }
}

/// The engine on the one Linux guest, and the library's self-check steps,
/// whatever preflight says.
fn rules_anyway(vm: &Vm) {
    let mut found = vmie_fixup::linux_guests(vm);
    if found.len() != 1 {
        return;
    }
    let Some(Ok(mut g)) = found.pop() else { return };
    let ctx = g.context(vm.fstab_volumes());
    let Ok(report) = engine::run(g.fs(), rules(), &ctx) else {
        return;
    };
    if !report.changes.is_empty() {
        let _ = vmie_fixup::self_check(vm, &g, &report.changes);
    }
}

