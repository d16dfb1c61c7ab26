//! What people read: verbosity (`-v`, `-q`), error chains without
//! repetition, and words for the enums that reach human output.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use vmie_rules::engine::Severity;

/// 0 = quiet (errors only), 1 = normal, 2 = verbose.
static LEVEL: AtomicU8 = AtomicU8::new(1);
static START: OnceLock<Instant> = OnceLock::new();

/// Set from `-q` / `-v`; also starts the clock of verbose timings.
pub(crate) fn set_level(quiet: bool, verbose: bool) {
    let _ = START.set(Instant::now());
    let l = if verbose {
        2
    } else if quiet {
        0
    } else {
        1
    };
    LEVEL.store(l, Ordering::Relaxed);
}

/// `-q`: print only errors (data a command was asked for, such as `cat`
/// output or an `inspect` report, is still printed).
pub(crate) fn quiet() -> bool {
    LEVEL.load(Ordering::Relaxed) == 0
}

/// `-v`: say on standard error what was read and decided, with timings.
pub(crate) fn verbose() -> bool {
    LEVEL.load(Ordering::Relaxed) >= 2
}

/// One verbose line on standard error, stamped with the time since start.
pub(crate) fn log(args: std::fmt::Arguments<'_>) {
    if verbose() {
        let t = START.get_or_init(Instant::now).elapsed();
        eprintln!(
            "vmie-fixup: [{:>4}.{:03}s] {args}",
            t.as_secs(),
            t.subsec_millis()
        );
    }
}

/// `vlog!("opened {}", x)`: a verbose line (nothing unless `-v`).
macro_rules! vlog {
    ($($t:tt)*) => {
        if $crate::human::verbose() {
            $crate::human::log(format_args!($($t)*));
        }
    };
}
pub(crate) use vlog;

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message already holds (`open X: No such file (os error 2)` is not
/// followed by `: No such file (os error 2)` again).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if t.is_empty() || s.contains(&t) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&t);
    }
    s
}

/// `error`, `warning`, `info`.
pub(crate) fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// `BIOS`, `UEFI`.
pub(crate) fn firmware_word(f: &vmie_os::Firmware) -> &'static str {
    match f {
        vmie_os::Firmware::Bios => "BIOS",
        vmie_os::Firmware::Uefi => "UEFI",
    }
}

/// `static`, `DHCP`, `no address`, `loopback`.
pub(crate) fn net_method_word(m: &vmie_os::NetMethod) -> &'static str {
    match m {
        vmie_os::NetMethod::Static => "static",
        vmie_os::NetMethod::Dhcp => "DHCP",
        vmie_os::NetMethod::Manual => "no address",
        vmie_os::NetMethod::Loopback => "loopback",
    }
}

/// `regular file`, `directory`, `symbolic link`, ….
pub(crate) fn file_type_word(t: vmie_guestfs::FileType) -> &'static str {
    use vmie_guestfs::FileType as T;
    match t {
        T::Regular => "regular file",
        T::Directory => "directory",
        T::Symlink => "symbolic link",
        T::CharDevice => "character device",
        T::BlockDevice => "block device",
        T::Fifo => "named pipe",
        T::Socket => "socket",
        T::Unknown => "file of unknown type",
    }
}

/// `1.5 GiB`, `512 B`.
pub(crate) fn size_str(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `ls -h` sizes: `512`, `4.0K`, `1.2M`, as coreutils prints them.
pub(crate) fn ls_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{:.1}{}", (v * 10.0).ceil() / 10.0, UNITS[u])
    } else {
        format!("{}{}", v.ceil() as u64, UNITS[u])
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of seconds since the Unix epoch.
pub(crate) fn time_str(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Rule packs: the shipped ones (unless `no_default`) and each path given,
/// a directory of `*.toml` packs or one `.toml` file.
pub(crate) fn load_rules(
    no_default: bool,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<vmie_rules::rules::Rule>> {
    Ok(vmie_fixup::load_rules(no_default, paths)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_without_repeats() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let inner = io.to_string();
        let e = anyhow::Error::new(io).context(format!("x.raw: open: {inner}"));
        assert_eq!(error_text(&e), format!("x.raw: open: {inner}"));
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(time_str(0), "1970-01-01 00:00");
        assert_eq!(time_str(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(time_str(951_782_400), "2000-02-29 00:00");
        assert_eq!(ls_size(512), "512");
        assert_eq!(ls_size(4096), "4.0K");
        assert_eq!(ls_size(1_500_000), "1.5M");
        assert_eq!(ls_size(20 << 20), "20M");
    }
}
