//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use vmie_guestfs::MemFs;

/// `../shared/realdata/<rel>` beside the workspace.
pub fn realdata(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/realdata"
    ))
    .join(rel)
}

/// Build a MemFs from the host directory `dir` (files and symlinks),
/// mounted at `at` in the guest.
pub fn add_tree(mut fs: MemFs, dir: &Path, at: &str) -> MemFs {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let guest = if at == "/" {
            format!("/{name}")
        } else {
            format!("{at}/{name}")
        };
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            fs = fs.with_symlink(&guest, &t.to_string_lossy());
        } else if ft.is_dir() {
            fs = fs.with_dir(&guest);
            fs = add_tree(fs, &e.path(), &guest);
        } else {
            fs = fs.with_file(&guest, &std::fs::read(e.path()).unwrap());
        }
    }
    fs
}

/// A MemFs holding the tree at `dir`.
pub fn memfs_from(dir: &Path) -> MemFs {
    add_tree(MemFs::new(dir.display().to_string()), dir, "/")
}

/// Whether `realdata` is present (it is in CI and on developer machines).
pub fn require(p: &Path) {
    assert!(
        p.exists(),
        "{} is missing: the golden tests need ../shared/realdata beside the workspace",
        p.display()
    );
}

/// A cpio "newc" (070701) or "crc" (070702) archive of `(name, mode, data)`
/// entries with its trailer, padded to 512 bytes like cpio -H newc.
pub fn cpio(entries: &[(&str, u32, &[u8])], crc: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let magic = if crc { "070702" } else { "070701" };
    let mut ino = 1u32;
    let mut push = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        let check: u32 = if crc {
            data.iter().map(|b| u32::from(*b)).sum()
        } else {
            0
        };
        let hdr = format!(
            "{magic}{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{check:08x}",
            0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1
        );
        ino += 1;
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (name, mode, data) in entries {
        push(&mut out, name, *mode, data);
    }
    push(&mut out, "TRAILER!!!", 0, b"");
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}

/// Run `tool args` with `input` on stdin; its stdout. Panics naming the
/// Debian package when the tool is missing.
pub fn filter(tool: &str, args: &[&str], debian_pkg: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "`{tool}` is needed by this test ({e}): install the Debian package `{debian_pkg}`"
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
