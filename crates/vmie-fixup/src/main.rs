//! `vmie-fixup`: the command-line interface.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use vmie_disk::journal::{self, CommitOptions};
use vmie_guestfs::{FileType, GuestFsExt};
use vmie_inspect::{InspectError, Vm};

/// `println!` that ends the program quietly when the reader went away
/// (`vmie-fixup … | head`), instead of panicking on a broken pipe.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// Same for `print!`.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = write!(o, $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod fix;
mod guesttree;
mod hivecli;
mod human;
mod writecli;
mod xml;

use human::vlog;

const EXIT_HELP: &str = "\
EXIT CODES:
    0  done
    1  refused: the image is unsupported or unsafe to change, or the request
       cannot be met on it (no such guest file, unknown volume); nothing was
       written
    2  usage error (bad arguments, an image or input file that does not exist)
    3  I/O or internal error";

/// Make a VM's disk image bootable in a cloud, offline, in userspace.
///
/// `vmie-fixup IMAGE...` inspects the guest on the VM's disks (boot disk
/// first), checks it, and applies the fixup rules (fstab by UUID, DHCP on
/// every network stack, GRUB default and timeout, kernel command lines,
/// initramfs driver check) in place. `--dry-run` does the same and writes
/// nothing. The original of every changed file is kept beside it as
/// NAME.vmie.bak.
///
/// vmie-fixup reads raw disk images itself: partition tables (MBR, GPT),
/// and filesystems, without mounting, root, kernel modules or a helper VM.
/// Every write goes through a copy-on-write overlay and is committed with an
/// undo journal beside the image (IMAGE.vmie-undo.N), so `vmie-fixup undo`
/// puts back the original bytes exactly.
///
/// Raw images are read and written. qcow2 (with its backing files), VMDK
/// (monolithicSparse, streamOptimized), VHD and VHDX (fixed, dynamic) are
/// read in place by every
/// command that only reads (inspect, ls, cat, --dry-run); a fixed VHD is
/// also written in place. To fix the others, let vmie-fixup write a fixed
/// raw copy (vmie-fixup --output out.raw in.vmdk), or convert first:
/// qemu-img convert -O raw in.vmdk out.raw
#[derive(Debug, Parser)]
#[command(
    name = "vmie-fixup",
    version,
    after_help = EXIT_HELP,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    fix: fix::FixArgs,
    /// Say on standard error what was read and decided, with timings.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only errors (and the data a command was asked for).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Open LUKS-encrypted volumes with this key (repeat for several), as
    /// virt-inspector and virt-v2v take it: SELECTOR:key:PASSPHRASE or
    /// SELECTOR:file:KEYFILE, where SELECTOR is `all`, the LUKS UUID, or the
    /// volume's device name as libguestfs names it (/dev/sda2: disk a,
    /// partition 2). Without a key an encrypted volume is reported, never
    /// guessed; writes inside it are encrypted back in place.
    #[arg(long = "key", global = true, value_name = "SELECTOR:key:KEY")]
    keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    /// Text for people.
    Human,
    /// JSON for machines; the schema is versioned by `schema_version`.
    Json,
}

/// `inspect`'s formats: [`Format`] and virt-inspector's XML (only
/// `inspect` has it; the other commands' `--format` refuses `xml`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum InspectFormat {
    /// Text for people.
    Human,
    /// JSON for machines; the schema is versioned by `schema_version`.
    Json,
    /// virt-inspector's XML, valid against its virt-inspector.rng.
    Xml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the disks, partitions and volumes of a VM.
    ///
    /// Give every disk of the VM, boot disk first. Nothing is written.
    #[command(
        after_help = "EXAMPLES:\n    vmie-fixup inspect vm.raw\n    vmie-fixup inspect --format json boot.raw data.raw\n    vmie-fixup inspect --format xml vm.raw"
    )]
    Inspect {
        /// Raw disk images of one VM, boot disk first.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = InspectFormat::Human)]
        format: InspectFormat,
    },
    /// List a directory inside the guest (like virt-ls).
    ///
    /// Without VOL, the guest's whole tree: its root filesystem and what its
    /// fstab mounts (a separate /boot, /srv/data, ...), as virt-ls sees it.
    /// VOL is a partition number as Linux numbers it (1-4 primary, 5+
    /// logical) or a filesystem UUID: that one volume, from its own root.
    #[command(
        disable_help_flag = true,
        after_help = "EXAMPLES:\n    vmie-fixup ls vm.raw /etc\n    vmie-fixup ls -lh vm.raw /srv/data\n    vmie-fixup ls -R --format json vm.raw /boot\n    vmie-fixup ls -l vm.raw:6 /"
    )]
    Ls {
        /// IMAGE (the guest's tree) or IMAGE:VOL (one volume).
        #[arg(value_name = "IMAGE[:VOL]")]
        target: String,
        /// Directory inside the guest.
        path: String,
        /// Long listing: type and mode, owner, size, modification time (UTC),
        /// and symlink targets.
        #[arg(short, long)]
        long: bool,
        /// Sizes as 4.0K, 1.2M, 3G (with -l).
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// List subdirectories too, recursively (symlinks are not followed).
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Output format; json gives every field of -l, sizes in bytes and
        /// times in seconds since the epoch.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Another disk of the same VM (repeatable): a volume group whose
        /// physical volumes span disks opens only with all of them.
        #[arg(long = "disk", value_name = "IMAGE")]
        disks: Vec<PathBuf>,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Print files inside the guest to standard output (like virt-cat).
    ///
    /// Without VOL, paths are looked up in the guest's whole tree (root
    /// plus its fstab mounts); with VOL, on that one volume.
    #[command(
        after_help = "EXAMPLES:\n    vmie-fixup cat vm.raw /etc/fstab /etc/hostname\n    vmie-fixup cat vm.raw:1 /etc/os-release"
    )]
    Cat {
        /// IMAGE (the guest's tree) or IMAGE:VOL (one volume).
        #[arg(value_name = "IMAGE[:VOL]")]
        target: String,
        /// Files inside the guest, printed in order; symlinks are followed
        /// inside the guest only.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// Another disk of the same VM (repeatable): a volume group whose
        /// physical volumes span disks opens only with all of them.
        #[arg(long = "disk", value_name = "IMAGE")]
        disks: Vec<PathBuf>,
    },
    /// Copy a local file into the guest, creating or replacing GUESTPATH.
    ///
    /// Without VOL the path is in the guest's whole tree, so /srv/data/x
    /// lands on the filesystem mounted at /srv/data. A replaced file keeps
    /// its inode, owner, mode and xattrs; a new one is 0644 root:root. The
    /// write is read back through an independent reader and committed with
    /// an undo journal (vmie-fixup undo IMAGE puts it back).
    #[command(
        after_help = "EXAMPLES:\n    vmie-fixup copy-in vm.raw ./fstab /etc/fstab\n    vmie-fixup copy-in --dry-run vm.raw ./motd /etc/motd\n    vmie-fixup copy-in vm.raw:6 ./data.txt /data.txt"
    )]
    CopyIn {
        /// IMAGE (the guest's tree) or IMAGE:VOL (one volume).
        #[arg(value_name = "IMAGE[:VOL]")]
        target: String,
        /// The file on this machine.
        local: PathBuf,
        /// Where it goes in the guest (symlinks followed inside the guest).
        guest_path: String,
        /// Say what would change, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Another disk of the same VM (repeatable): a volume group whose
        /// physical volumes span disks opens only with all of them.
        #[arg(long = "disk", value_name = "IMAGE")]
        disks: Vec<PathBuf>,
    },
    /// Write standard input to GUESTPATH in the guest (create or replace).
    ///
    /// Like copy-in: the guest's whole tree without VOL, one volume with it.
    #[command(
        after_help = "EXAMPLES:\n    echo vm1 | vmie-fixup write vm.raw /etc/hostname\n    vmie-fixup write -n vm.raw /etc/motd < motd"
    )]
    Write {
        /// IMAGE (the guest's tree) or IMAGE:VOL (one volume).
        #[arg(value_name = "IMAGE[:VOL]")]
        target: String,
        /// Where it goes in the guest (symlinks followed inside the guest).
        guest_path: String,
        /// Say what would change, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Another disk of the same VM (repeatable): a volume group whose
        /// physical volumes span disks opens only with all of them.
        #[arg(long = "disk", value_name = "IMAGE")]
        disks: Vec<PathBuf>,
    },
    /// List or check rule packs (the fixups, declared in TOML).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Read and edit Windows registry hive files offline (like hivexregedit).
    #[command(subcommand)]
    Hive(hivecli::HiveCommand),
    /// Read Windows boot configuration (BCD) stores offline (like bcdedit).
    #[command(subcommand)]
    Bcd(hivecli::BcdCommand),
    /// Restore the bytes an earlier run changed, from its undo journal.
    ///
    /// Undoes the newest run on each image (or every run with --all), and
    /// refuses if the image was changed by anything else since. Safe to
    /// rerun: an undo (or a run) that was killed is finished by running undo
    /// again; until then every other command refuses the image.
    Undo {
        /// Raw disk images to restore.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// Undo every run, newest first, back to the original image.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// List the rules a run would use: id, when it applies, what it does.
    List {
        /// Add the rule packs in DIR (*.toml), or the one pack FILE.toml;
        /// may be given several times.
        #[arg(long = "rules", value_name = "DIR|FILE")]
        dirs: Vec<PathBuf>,
        /// Leave out the rules shipped with vmie-fixup.
        #[arg(long)]
        no_default_rules: bool,
    },
    /// Check rule packs: report the first error with file, line and column.
    #[command(
        after_help = "EXAMPLES:\n    vmie-fixup rules check ./my-rules\n    vmie-fixup rules check ./my-rules/site.toml"
    )]
    Check {
        /// Directories of rule packs (*.toml), or single .toml files.
        #[arg(required = true, value_name = "DIR|FILE")]
        dirs: Vec<PathBuf>,
    },
}

/// A failure with its exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

pub(crate) fn refused(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

pub(crate) fn classify(error: anyhow::Error) -> Failure {
    let code = if let Some(e) = error.downcast_ref::<InspectError>() {
        if e.is_refusal() {
            1
        } else {
            3
        }
    } else if let Some(e) = error.downcast_ref::<vmie_disk::DiskError>() {
        if e.is_refusal() {
            1
        } else {
            3
        }
    } else if let Some(e) = error.downcast_ref::<vmie_guestfs::FsError>() {
        match e {
            vmie_guestfs::FsError::Disk(d) if !d.is_refusal() => 3,
            _ => 1,
        }
    } else {
        3
    };
    Failure { code, error }
}

fn main() -> ExitCode {
    // A panic inside a parser boundary (vmie_disk::guard) becomes a refusal
    // that carries the message; only a panic outside one is printed.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !vmie_disk::guard::inside() {
            default_hook(info);
        }
    }));
    // -v/-q anywhere before `--`: clap would not take them before a
    // subcommand (the fixup run's own arguments conflict with subcommands).
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    // --key likewise, anywhere before `--`.
    let (mut quiet, mut verbose, mut rest) = (false, false, false);
    let mut key_args: Vec<String> = Vec::new();
    let mut key_next = false;
    for a in std::env::args_os() {
        if key_next {
            key_next = false;
            key_args.push(a.to_string_lossy().into_owned());
            continue;
        }
        if !rest {
            match a.to_str() {
                Some("--key") => {
                    key_next = true;
                    continue;
                }
                Some(k) if k.starts_with("--key=") => {
                    key_args.push(k["--key=".len()..].to_string());
                    continue;
                }
                Some("--") => rest = true,
                Some("-v" | "--verbose") => {
                    verbose = true;
                    continue;
                }
                Some("-q" | "--quiet") => {
                    quiet = true;
                    continue;
                }
                _ => {}
            }
        }
        args.push(a);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if verbose && quiet {
        eprintln!("vmie-fixup: error: --verbose and --quiet cannot be used together");
        return ExitCode::from(2);
    }
    human::set_level(quiet || cli.quiet, verbose || cli.verbose);
    if key_next {
        eprintln!("vmie-fixup: error: --key needs a value: SELECTOR:key:KEY or SELECTOR:file:FILE");
        return ExitCode::from(2);
    }
    let mut keys = Vec::with_capacity(key_args.len() + cli.keys.len());
    for k in key_args.iter().chain(&cli.keys) {
        match vmie_inspect::stack::KeySpec::parse(k) {
            Ok(k) => keys.push(k),
            Err(e) => {
                eprintln!("vmie-fixup: error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    guesttree::set_keys(keys);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let broken_pipe = f
                .error
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("vmie-fixup: error: {}", human::error_text(&f.error));
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let Some(command) = cli.command else {
        return fix::run(&cli.fix);
    };
    match command {
        Command::Inspect { images, format } => inspect(&images, format),
        Command::Ls {
            target,
            path,
            long,
            human,
            recursive,
            format,
            disks,
            help: _,
        } => ls(
            &target,
            &disks,
            &path,
            &LsOpts {
                long,
                human,
                recursive,
                format,
            },
        ),
        Command::Cat {
            target,
            paths,
            disks,
        } => cat(&target, &disks, &paths),
        Command::CopyIn {
            target,
            local,
            guest_path,
            dry_run,
            disks,
        } => writecli::copy_in(&target, &disks, &local, &guest_path, dry_run),
        Command::Write {
            target,
            guest_path,
            dry_run,
            disks,
        } => writecli::write_stdin(&target, &disks, &guest_path, dry_run),
        Command::Undo { images, all } => undo(&images, all),
        Command::Rules(RulesCommand::List {
            dirs,
            no_default_rules,
        }) => rules_list(&dirs, no_default_rules),
        Command::Rules(RulesCommand::Check { dirs }) => rules_check(&dirs),
        Command::Hive(c) => hivecli::hive(&c),
        Command::Bcd(c) => hivecli::bcd(&c),
    }
}

// ---------------------------------------------------------------- rules

fn rules_list(dirs: &[PathBuf], no_default: bool) -> Result<(), Failure> {
    let rules = human::load_rules(no_default, dirs).map_err(refused)?;
    for r in &rules {
        let actions: Vec<&str> = r.actions.iter().map(|a| a.name()).collect();
        outln!("{}  ({})", r.id, r.source.display());
        outln!("    {}", r.description);
        let w = &r.when;
        let mut conds = Vec::new();
        if let Some(o) = w.os {
            conds.push(format!(
                "os={}",
                if o == vmie_rules::rules::OsType::Linux {
                    "linux"
                } else {
                    "windows"
                }
            ));
        }
        if let Some(d) = &w.distro {
            conds.push(format!("distro in [{}]", d.join(", ")));
        }
        if let Some(v) = &w.version {
            conds.push(format!("version {v}"));
        }
        if let Some(b) = &w.bootloader {
            conds.push(format!("bootloader in [{}]", b.join(", ")));
        }
        if let Some(n) = &w.network_stack {
            conds.push(format!("network stack in [{}]", n.join(", ")));
        }
        if let Some(f) = &w.file_exists {
            conds.push(format!("{f} exists"));
        }
        outln!(
            "    when: {}",
            if conds.is_empty() {
                "always".into()
            } else {
                conds.join(", ")
            }
        );
        outln!("    does: {}", actions.join(", "));
    }
    Ok(())
}

fn rules_check(dirs: &[PathBuf]) -> Result<(), Failure> {
    if let Some(missing) = dirs.iter().find(|p| !p.exists()) {
        return Err(Failure {
            code: 2,
            error: anyhow::anyhow!(
                "{}: no such rule pack: give a directory of *.toml packs or one .toml file",
                missing.display()
            ),
        });
    }
    let rules = human::load_rules(true, dirs).map_err(refused)?;
    if !human::quiet() {
        let (d, f) = dirs.iter().fold(
            (0, 0),
            |(d, f), p| {
                if p.is_dir() {
                    (d + 1, f)
                } else {
                    (d, f + 1)
                }
            },
        );
        let mut wheres = Vec::new();
        if d > 0 {
            wheres.push(format!("{d} director{}", if d == 1 { "y" } else { "ies" }));
        }
        if f > 0 {
            wheres.push(format!("{f} file{}", if f == 1 { "" } else { "s" }));
        }
        outln!(
            "{} rule(s) in {}: all valid",
            rules.len(),
            wheres.join(" and ")
        );
    }
    Ok(())
}

fn open(images: &[PathBuf]) -> Result<Vm, Failure> {
    guesttree::open_vm(images, false)
}

// ---------------------------------------------------------------- inspect

/// JSON schema version of `inspect --format json`. Bump on any incompatible
/// change; adding fields is compatible.
const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct InspectJson {
    schema_version: u32,
    disks: Vec<DiskJson>,
    /// LVM volume groups found on the disks.
    volume_groups: Vec<VgJson>,
    /// LUKS volumes: opened with a `--key` (their payload's filesystem), or
    /// left closed (and why).
    encrypted_volumes: Vec<EncryptedJson>,
    /// Linux md RAID arrays assembled from their members, or not opened
    /// (and why); members whose superblock is refused, by name.
    md_arrays: Vec<MdJson>,
    /// Guests found (virt-inspector field names where it has them).
    operating_systems: Vec<serde_json::Value>,
    /// The import service's requirements, checked.
    preflight: Vec<vmie_inspect::preflight::Check>,
}

#[derive(Serialize)]
struct MdJson {
    /// `/dev/md/NAME` or `/dev/mdN`, as mdadm names it.
    device: String,
    opened: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    /// The member volumes.
    members: Vec<String>,
    /// Whether writes are accepted.
    writable: bool,
    /// The array's volume name, as other fields name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystem: Option<FilesystemJson>,
    /// Why it is not opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

fn md_json(vm: &Vm) -> Vec<MdJson> {
    let st = vm.stacked();
    let opened = st.volumes.iter().filter_map(|v| match &v.stack {
        Some(vmie_inspect::stack::StackId::Md {
            uuid,
            device,
            level,
            metadata,
            members,
            writable,
        }) => Some(MdJson {
            device: device.clone(),
            opened: true,
            uuid: Some(uuid.clone()),
            level: Some(level.clone()),
            metadata: Some(metadata.clone()),
            members: members.clone(),
            writable: *writable,
            volume: Some(v.name.clone()),
            filesystem: fs_json(v),
            why: None,
        }),
        _ => None,
    });
    let closed = st.md_closed.iter().map(|(name, why)| MdJson {
        device: name.clone(),
        opened: false,
        uuid: None,
        level: None,
        metadata: None,
        members: Vec::new(),
        writable: false,
        volume: None,
        filesystem: None,
        why: Some(why.clone()),
    });
    opened.chain(closed).collect()
}

#[derive(Serialize)]
struct EncryptedJson {
    /// The volume holding the LUKS header (`image partition N`).
    volume: String,
    /// Whether a key opened it.
    opened: bool,
    /// LUKS version, UUID and the decrypted device's name as libguestfs
    /// would give it (`/dev/mapper/cryptsda2`); when opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapper: Option<String>,
    /// The payload's volume name, as other fields name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// What the payload holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystem: Option<FilesystemJson>,
    /// Why it is not opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

fn encrypted_json(vm: &Vm) -> Vec<EncryptedJson> {
    let st = vm.stacked();
    let opened = st.volumes.iter().filter_map(|v| match &v.stack {
        Some(vmie_inspect::stack::StackId::Luks {
            uuid,
            version,
            of,
            mapper,
        }) => Some(EncryptedJson {
            volume: of.clone(),
            opened: true,
            version: Some(*version),
            uuid: Some(uuid.clone()),
            mapper: Some(mapper.clone()),
            payload: Some(v.name.clone()),
            filesystem: fs_json(v),
            why: None,
        }),
        _ => None,
    });
    let locked = st.locked.iter().map(|(name, why)| EncryptedJson {
        volume: name.clone(),
        opened: false,
        version: None,
        uuid: None,
        mapper: None,
        payload: None,
        filesystem: None,
        why: Some(why.clone()),
    });
    opened.chain(locked).collect()
}

#[derive(Serialize)]
struct DiskJson {
    path: String,
    /// For a disk of an OVA, its member's name in the archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
    /// The image format, as qemu-img names it.
    format: &'static str,
    size: u64,
    partition_table: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<String>,
    partitions: Vec<PartitionJson>,
    /// The filesystem on the whole disk when there is no partition table.
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystem: Option<FilesystemJson>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct PartitionJson {
    number: u32,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    type_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    type_name: Option<&'static str>,
    bootable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    partlabel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partuuid: Option<String>,
    filesystem: Option<FilesystemJson>,
}

#[derive(Serialize)]
struct VgJson {
    name: String,
    uuid: String,
    seqno: u64,
    extent_size: u64,
    physical_volumes: Vec<PvJson>,
    logical_volumes: Vec<LvJson>,
}

#[derive(Serialize)]
struct PvJson {
    uuid: String,
    /// The volume holding it; null when no given disk does.
    volume: Option<String>,
    /// The device name the metadata last saw.
    device_hint: Option<String>,
    pe_start: u64,
    pe_count: u64,
}

#[derive(Serialize)]
struct LvJson {
    name: String,
    uuid: String,
    size: u64,
    /// `/dev/mapper/` name.
    mapper: String,
    segments: Vec<SegJson>,
    /// Why it is not opened; null when it is.
    refused: Option<String>,
    filesystem: Option<FilesystemJson>,
}

#[derive(Serialize)]
struct SegJson {
    #[serde(rename = "type")]
    seg_type: String,
    start_extent: u64,
    extent_count: u64,
    /// (PV UUID or sub-LV name, first extent) per stripe.
    stripes: Vec<(String, u64)>,
    stripe_size: u64,
}

fn vg_json(vm: &Vm) -> Vec<VgJson> {
    let lvm = vm.lvm();
    lvm.scan
        .vgs
        .iter()
        .map(|vg| VgJson {
            name: vg.meta.name.clone(),
            uuid: vg.meta.uuid.clone(),
            seqno: vg.meta.seqno,
            extent_size: vg.meta.extent_size,
            physical_volumes: vg
                .meta
                .pvs
                .iter()
                .zip(&vg.pv_devices)
                .map(|(p, d)| PvJson {
                    uuid: p.uuid.clone(),
                    volume: d.and_then(|i| lvm.pv_volumes.get(i).cloned()),
                    device_hint: p.device_hint.clone(),
                    pe_start: p.pe_start,
                    pe_count: p.pe_count,
                })
                .collect(),
            logical_volumes: vg
                .visible_lvs()
                .map(|lv| {
                    let opened = lvm.volumes.iter().find(|v| {
                        v.lv.as_ref()
                            .is_some_and(|l| l.vg_uuid == vg.meta.uuid && l.lv_uuid == lv.uuid)
                    });
                    LvJson {
                        name: lv.name.clone(),
                        uuid: lv.uuid.clone(),
                        size: vg.lv_size(lv),
                        mapper: format!(
                            "/dev/mapper/{}",
                            vmie_lvm::mapper_name(&vg.meta.name, &lv.name)
                        ),
                        segments: lv
                            .segments
                            .iter()
                            .map(|s| SegJson {
                                seg_type: s.seg_type.clone(),
                                start_extent: s.start_extent,
                                extent_count: s.extent_count,
                                stripes: s
                                    .stripes
                                    .iter()
                                    .map(|(k, e)| {
                                        let name = vg
                                            .meta
                                            .pvs
                                            .iter()
                                            .find(|p| &p.key == k)
                                            .map_or_else(|| k.clone(), |p| p.uuid.clone());
                                        (name, *e)
                                    })
                                    .collect(),
                                stripe_size: s.stripe_size,
                            })
                            .collect(),
                        refused: match opened {
                            Some(_) => None,
                            None => Some(
                                lvm.refused
                                    .iter()
                                    .find(|(g, l, _)| g == &vg.meta.name && l == &lv.name)
                                    .map_or_else(
                                        || "not opened".to_string(),
                                        |(_, _, w)| w.clone(),
                                    ),
                            ),
                        },
                        filesystem: opened.and_then(fs_json),
                    }
                })
                .collect(),
        })
        .collect()
}

#[derive(Serialize)]
struct FilesystemJson {
    kind: &'static str,
    uuid: Option<String>,
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    state: vmie_probe::FsState,
}

fn fs_json(v: &vmie_inspect::Volume) -> Option<FilesystemJson> {
    v.probe.as_ref().map(|p| FilesystemJson {
        kind: p.kind.as_str(),
        uuid: p.uuid.clone(),
        label: p.label.clone(),
        version: p.version.clone(),
        size: p.size,
        state: p.state.clone(),
    })
}

fn inspect(images: &[PathBuf], format: InspectFormat) -> Result<(), Failure> {
    let vm = open(images)?;
    let guests = fix::guests(&vm);
    let windows = fix::windows_guests(&vm);
    let doc = InspectJson {
        schema_version: SCHEMA_VERSION,
        operating_systems: guests
            .iter()
            .flatten()
            .map(fix::os_json)
            .chain(windows.iter().flatten().map(fix::win_os_json))
            .collect(),
        preflight: vmie_inspect::preflight::preflight(&vm, &guests, &windows),
        volume_groups: vg_json(&vm),
        encrypted_volumes: encrypted_json(&vm),
        md_arrays: md_json(&vm),
        disks: vm
            .layouts()
            .iter()
            .map(|l| DiskJson {
                path: l.path.display().to_string(),
                member: l.member.clone(),
                format: l.format,
                size: l.size,
                partition_table: l.table.as_str(),
                identifier: l.disk_id.clone(),
                filesystem: l
                    .volumes
                    .iter()
                    .find(|v| v.number.is_none())
                    .and_then(fs_json),
                partitions: l
                    .volumes
                    .iter()
                    .filter_map(|v| {
                        Some(PartitionJson {
                            number: v.number?,
                            start: v.start,
                            size: v.size,
                            type_id: v.type_id.clone().unwrap_or_default(),
                            type_name: v.type_name,
                            bootable: v.bootable,
                            partlabel: v.part_label.clone(),
                            partuuid: v.part_uuid.clone(),
                            filesystem: fs_json(v),
                        })
                    })
                    .collect(),
                warnings: l.warnings.clone(),
            })
            .collect(),
    };
    if format == InspectFormat::Xml {
        let oses: Vec<xml::XmlOs> = guests
            .iter()
            .flatten()
            .map(|g| xml::linux_os(&vm, g))
            .chain(windows.iter().flatten().map(|g| xml::windows_os(&vm, g)))
            .collect();
        stats(&vm);
        let mut out = std::io::stdout().lock();
        return out
            .write_all(xml::document(&oses).as_bytes())
            .map_err(|e| Failure {
                code: 3,
                error: e.into(),
            });
    }
    let mut out = std::io::stdout().lock();
    let res = match format {
        InspectFormat::Json | InspectFormat::Xml => serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(anyhow::Error::from)
            .and_then(|_| writeln!(out).map_err(anyhow::Error::from)),
        InspectFormat::Human => print_human(&mut out, &vm)
            .and_then(|_| print_guests(&mut out, &guests))
            .and_then(|_| print_windows(&mut out, &windows))
            .and_then(|_| {
                writeln!(out)?;
                for c in &doc.preflight {
                    writeln!(
                        out,
                        "preflight {} [{}]: {}",
                        human::severity_word(c.severity),
                        c.id,
                        c.message
                    )?;
                }
                Ok(())
            })
            .map_err(anyhow::Error::from),
    };
    stats(&vm);
    res.map_err(|e| Failure { code: 3, error: e })
}

/// With `VMIE_STATS` set, print on stderr how much of the images was read.
pub(crate) fn stats(vm: &Vm) {
    if std::env::var_os("VMIE_STATS").is_some() {
        let (bytes, calls) = vm.disks().read_stats();
        eprintln!("vmie-fixup: stats: read {bytes} bytes from the images in {calls} reads");
    }
}

use human::size_str;

fn print_human(out: &mut impl Write, vm: &Vm) -> std::io::Result<()> {
    for (i, l) in vm.layouts().iter().enumerate() {
        let role = if i == 0 { "boot disk" } else { "disk" };
        writeln!(
            out,
            "{} ({role}): {}, partition table: {}{}",
            l.path.display(),
            size_str(l.size),
            l.table.as_str(),
            l.disk_id
                .as_ref()
                .map(|d| format!(" (id {d})"))
                .unwrap_or_default()
        )?;
        for w in &l.warnings {
            writeln!(out, "  warning: {w}")?;
        }
        if l.volumes.is_empty() {
            writeln!(out, "  (no partitions)")?;
        }
        for v in &l.volumes {
            let num = v
                .number
                .map(|n| format!("{n:>3}"))
                .unwrap_or_else(|| "  -".into());
            let boot = if v.bootable { "*" } else { " " };
            let ty = match (&v.type_id, v.type_name) {
                (Some(t), Some(n)) => format!("{n} ({t})"),
                (Some(t), None) => t.clone(),
                _ => "whole disk".into(),
            };
            write!(
                out,
                "  {num}{boot} start {:>12}  {:>10}  {ty}",
                v.start,
                size_str(v.size)
            )?;
            write_fs(out, v)?;
            writeln!(out)?;
        }
    }
    let lvm = vm.lvm();
    for vg in &lvm.scan.vgs {
        writeln!(
            out,
            "volume group {} (UUID {}), extents of {}",
            vg.meta.name,
            vg.meta.uuid,
            size_str(vg.meta.extent_size)
        )?;
        for (p, d) in vg.meta.pvs.iter().zip(&vg.pv_devices) {
            match d.and_then(|i| lvm.pv_volumes.get(i)) {
                Some(name) => writeln!(out, "  PV {} on {name}", p.uuid)?,
                None => writeln!(
                    out,
                    "  PV {} MISSING (last seen as {})",
                    p.uuid,
                    p.device_hint.as_deref().unwrap_or("?")
                )?,
            }
        }
        for lv in vg.visible_lvs() {
            write!(
                out,
                "  LV {:<16} {:>10}  {}",
                lv.name,
                size_str(vg.lv_size(lv)),
                lv.seg_types().join("+")
            )?;
            let opened = lvm.volumes.iter().find(|v| {
                v.lv.as_ref()
                    .is_some_and(|l| l.vg_uuid == vg.meta.uuid && l.lv_uuid == lv.uuid)
            });
            match opened {
                Some(v) => write_fs(out, v)?,
                None => {
                    let why = lvm
                        .refused
                        .iter()
                        .find(|(g, l, _)| g == &vg.meta.name && l == &lv.name)
                        .map_or("not opened", |(_, _, w)| w.as_str());
                    write!(out, "\n        not opened: {why}")?;
                }
            }
            writeln!(out)?;
        }
    }
    for p in &lvm.scan.problems {
        writeln!(out, "LVM: {p}")?;
    }
    for a in md_json(vm) {
        match &a.volume {
            Some(v) => {
                write!(
                    out,
                    "md array {} ({}, metadata {}, UUID {}){} on {}",
                    a.device,
                    a.level.as_deref().unwrap_or("?"),
                    a.metadata.as_deref().unwrap_or("?"),
                    a.uuid.as_deref().unwrap_or("?"),
                    if a.writable { "" } else { " read-only" },
                    a.members.join(", ")
                )?;
                if let Some(vol) = vm.volumes().find(|x| &x.name == v) {
                    write_fs(out, vol)?;
                }
                writeln!(out)?;
            }
            None => writeln!(
                out,
                "md {}: not opened: {}",
                a.device,
                a.why.as_deref().unwrap_or("?")
            )?,
        }
    }
    for w in &vm.stacked().md_warnings {
        writeln!(out, "md: {w}")?;
    }
    for e in encrypted_json(vm) {
        match (&e.payload, &e.why) {
            (Some(p), _) => {
                write!(
                    out,
                    "LUKS{} {} on {}: opened as {p} ({})",
                    e.version.unwrap_or_default(),
                    e.uuid.as_deref().unwrap_or("?"),
                    e.volume,
                    e.mapper.as_deref().unwrap_or("?")
                )?;
                if let Some(v) = vm.volumes().find(|v| &v.name == p) {
                    write_fs(out, v)?;
                }
                writeln!(out)?;
            }
            (None, why) => writeln!(
                out,
                "encrypted {}: not opened: {}",
                e.volume,
                why.as_deref().unwrap_or("no key")
            )?,
        }
    }
    Ok(())
}

/// The filesystem on a volume, for `inspect`'s human output.
fn write_fs(out: &mut impl Write, v: &vmie_inspect::Volume) -> std::io::Result<()> {
    if let Some(p) = &v.probe {
        write!(out, "\n        {}", p.kind.as_str())?;
        if let Some(u) = &p.uuid {
            write!(out, "  UUID={u}")?;
        }
        if let Some(lb) = &p.label {
            write!(out, "  LABEL=\"{lb}\"")?;
        }
        let s = &p.state;
        let mut flags = Vec::new();
        if s.needs_recovery {
            flags.push("needs journal/log recovery".to_string());
        }
        if s.errors {
            flags.push("has errors".to_string());
        }
        if s.dirty {
            flags.push("dirty".to_string());
        }
        if s.hibernated {
            flags.push("hibernated".to_string());
        }
        if s.encrypted {
            flags.push("encrypted".to_string());
        }
        if !s.unknown_features.is_empty() {
            flags.push(format!(
                "unknown features: {}",
                s.unknown_features.join(", ")
            ));
        }
        if !flags.is_empty() {
            write!(out, "  [{}]", flags.join("; "))?;
        }
        for n in &s.notes {
            write!(out, "\n        note: {n}")?;
        }
    } else if let Some(e) = &v.probe_error {
        write!(out, "\n        unreadable: {e}")?;
    } else if !v.is_extended() {
        write!(out, "\n        (no filesystem recognised)")?;
    }
    Ok(())
}

fn print_guests(
    out: &mut impl Write,
    guests: &[Result<vmie_inspect::LinuxGuest, String>],
) -> std::io::Result<()> {
    for g in guests {
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                writeln!(out, "\nLinux root that could not be inspected: {e}")?;
                continue;
            }
        };
        let i = &g.info;
        writeln!(out, "\nLinux on {}", g.root)?;
        // Debian's product name is its version ("12.2", as virt-inspector
        // says): the distro says more.
        let product = i
            .product_name
            .as_deref()
            .filter(|p| !p.starts_with(|c: char| c.is_ascii_digit()));
        match product {
            Some(p) => writeln!(
                out,
                "  {p} ({} {}.{}), {}",
                i.distro,
                i.major_version,
                i.minor_version,
                i.arch.as_deref().unwrap_or("unknown arch")
            )?,
            None => writeln!(
                out,
                "  {} {}.{}, {}",
                i.distro,
                i.major_version,
                i.minor_version,
                i.arch.as_deref().unwrap_or("unknown arch")
            )?,
        }
        if let Some(h) = &i.hostname {
            writeln!(out, "  hostname: {h}")?;
        }
        if let Some(o) = &i.osinfo {
            writeln!(out, "  osinfo: {o}")?;
        }
        let mounts: Vec<String> = g
            .mounted
            .iter()
            .map(|(m, v)| format!("{m} = {v}"))
            .collect();
        writeln!(out, "  mounts: {}", mounts.join(", "))?;
        writeln!(
            out,
            "  boot: {} ({})",
            i.bootloader
                .kind
                .as_deref()
                .unwrap_or("no bootloader found"),
            human::firmware_word(&i.firmware)
        )?;
        for k in &i.kernels {
            let drivers: Vec<&str> = k
                .drivers
                .iter()
                .filter(|(_, s)| {
                    matches!(
                        s,
                        vmie_os::DriverState::Builtin | vmie_os::DriverState::Initramfs
                    )
                })
                .map(|(n, _)| n.as_str())
                .collect();
            writeln!(
                out,
                "  kernel {}{}: boot drivers {}",
                k.version,
                if k.is_default { " (default)" } else { "" },
                if k.initramfs.is_some() {
                    drivers.join(" ")
                } else {
                    "unknown (initramfs not read)".into()
                }
            )?;
        }
        for n in &i.network.interfaces {
            writeln!(
                out,
                "  network: {} {} via {} ({})",
                n.name,
                human::net_method_word(&n.method),
                n.stack,
                n.source
            )?;
        }
        for w in &i.warnings {
            writeln!(out, "  note: {w}")?;
        }
    }
    Ok(())
}

fn print_windows(
    out: &mut impl Write,
    guests: &[Result<vmie_inspect::WindowsGuest, String>],
) -> std::io::Result<()> {
    for g in guests {
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                writeln!(
                    out,
                    "\nWindows system volume that could not be inspected: {e}"
                )?;
                continue;
            }
        };
        let i = &g.info;
        writeln!(out, "\nWindows on {}", g.root)?;
        writeln!(
            out,
            "  {} ({}{}.{} build {}), {}{}",
            i.product_name.as_deref().unwrap_or("unknown product"),
            i.release
                .as_deref()
                .map(|r| format!("{r}, "))
                .unwrap_or_default(),
            i.major_version,
            i.minor_version,
            i.build_id.as_deref().unwrap_or("?"),
            i.arch.as_deref().unwrap_or("unknown arch"),
            i.product_variant
                .as_deref()
                .map(|v| format!(", {v}"))
                .unwrap_or_default(),
        )?;
        if let Some(h) = &i.hostname {
            writeln!(out, "  hostname: {h}")?;
        }
        if let Some(o) = vmie_fixup::win_osinfo(i) {
            writeln!(out, "  osinfo: {o}")?;
        }
        writeln!(
            out,
            "  system root: {} on {} ({} free of {}{})",
            i.systemroot.as_deref().unwrap_or("?"),
            g.root,
            size_str(g.volume.free_bytes),
            size_str(g.volume.total_bytes),
            if g.volume.dirty { ", dirty" } else { "" }
        )?;
        for d in &i.drive_mappings {
            let what = match &d.target {
                vmie_win::DriveTarget::Mbr {
                    disk_signature,
                    offset,
                } => format!("MBR disk {disk_signature:08x}, partition at {offset}"),
                vmie_win::DriveTarget::Gpt { guid } => format!("GPT partition {guid}"),
                vmie_win::DriveTarget::Device { path } => path.clone(),
                vmie_win::DriveTarget::Unknown { len } => format!("({len}-byte value)"),
            };
            writeln!(out, "  drive {}: {what}", d.letter)?;
        }
        for n in &i.network_interfaces {
            let how = if n.dhcp == Some(false) {
                format!("static {}", n.ip_addresses.join(" "))
            } else {
                "DHCP".into()
            };
            writeln!(out, "  network: {} {how}", n.guid)?;
        }
        for w in &i.warnings {
            writeln!(out, "  note: {w}")?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- ls / cat

struct LsOpts {
    long: bool,
    human: bool,
    recursive: bool,
    format: Format,
}

/// `ls --format json` schema version.
const LS_SCHEMA_VERSION: u32 = 1;

/// Deepest directory `ls -R` descends into.
const LS_MAX_DEPTH: usize = 256;

#[derive(Serialize)]
struct LsEntry {
    /// Full guest path.
    path: String,
    name: String,
    #[serde(rename = "type")]
    file_type: FileType,
    /// Permission bits (`0o7777` part of st_mode), as a number.
    mode: u32,
    /// `-rw-r--r--`.
    permissions: String,
    uid: u32,
    gid: u32,
    size: u64,
    /// Seconds since the Unix epoch.
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

fn mode_string(t: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(t.letter());
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure {
        code: 3,
        error: anyhow::Error::from(e).context("writing to standard output"),
    }
}

fn ls(target: &str, disks: &[PathBuf], path: &str, o: &LsOpts) -> Result<(), Failure> {
    let t = guesttree::parse_target(target, disks)?;
    let tree = guesttree::open_tree(&t, false)?;
    let fs = tree.fs();
    let (dir, entries) = fs.list(path).map_err(|e| classify(e.into()))?;
    vlog!("{dir}: {} entries", entries.len());
    let mut seen = std::collections::HashSet::new();
    if let Ok(m) = fs.symlink_metadata(&dir) {
        if let Some(i) = m.inode {
            seen.insert((tree.volume_of(&dir).to_string(), i));
        }
    }
    let mut json = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut first = true;
    ls_dir(
        &tree, &dir, entries, o, 0, &mut seen, &mut json, &mut out, &mut first,
    )?;
    if o.format == Format::Json {
        let doc = serde_json::json!({
            "schema_version": LS_SCHEMA_VERSION,
            "path": dir.to_string(),
            "entries": json,
        });
        serde_json::to_writer_pretty(&mut out, &doc).map_err(|e| io_failure(e.into()))?;
        writeln!(out).map_err(io_failure)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn ls_dir(
    tree: &guesttree::Tree,
    dir: &vmie_guestfs::GuestPath,
    entries: Vec<vmie_guestfs::DirEntry>,
    o: &LsOpts,
    depth: usize,
    seen: &mut std::collections::HashSet<(String, u64)>,
    json: &mut Vec<LsEntry>,
    out: &mut impl Write,
    first: &mut bool,
) -> Result<(), Failure> {
    let fs = tree.fs();
    let human_out = o.format == Format::Human;
    if o.recursive && human_out {
        if !*first {
            writeln!(out).map_err(io_failure)?;
        }
        writeln!(out, "{dir}:").map_err(io_failure)?;
    }
    *first = false;
    let need_meta = o.long || o.format == Format::Json;
    let mut subdirs = Vec::new();
    for e in entries {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let p = dir.join(&e.name);
        let meta = if need_meta || o.recursive {
            Some(fs.symlink_metadata(&p).map_err(|e| classify(e.into()))?)
        } else {
            None
        };
        let ft = meta.as_ref().map(|m| m.file_type).unwrap_or(e.file_type);
        if o.recursive && ft == FileType::Directory {
            subdirs.push((p.clone(), meta.as_ref().and_then(|m| m.inode)));
        }
        let target = if ft == FileType::Symlink && need_meta {
            fs.read_link(&p)
                .ok()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
        } else {
            None
        };
        match (&meta, o.format) {
            (Some(m), Format::Json) => json.push(LsEntry {
                path: p.to_string(),
                name,
                file_type: m.file_type,
                mode: m.mode,
                permissions: mode_string(m.file_type, m.mode),
                uid: m.uid,
                gid: m.gid,
                size: m.size,
                mtime: m.mtime.secs,
                target,
            }),
            (Some(m), Format::Human) if o.long => {
                let size = if o.human {
                    format!("{:>6}", human::ls_size(m.size))
                } else {
                    format!("{:>10}", m.size)
                };
                let mut l = format!(
                    "{} {:>5} {:>5} {size} {} {name}",
                    mode_string(m.file_type, m.mode),
                    m.uid,
                    m.gid,
                    human::time_str(m.mtime.secs)
                );
                if let Some(t) = target {
                    l.push_str(" -> ");
                    l.push_str(&t);
                }
                writeln!(out, "{l}").map_err(io_failure)?;
            }
            _ => writeln!(out, "{name}").map_err(io_failure)?,
        }
    }
    for (sub, inode) in subdirs {
        if depth + 1 >= LS_MAX_DEPTH {
            return Err(refused(anyhow::anyhow!(
                "{sub}: more than {LS_MAX_DEPTH} directory levels; not listed further"
            )));
        }
        if let Some(i) = inode {
            // A directory reached twice (a hard-linked directory in a
            // damaged filesystem) is listed once.
            if !seen.insert((tree.volume_of(&sub).to_string(), i)) {
                continue;
            }
        }
        let entries = fs.read_dir(&sub).map_err(|e| classify(e.into()))?;
        ls_dir(tree, &sub, entries, o, depth + 1, seen, json, out, first)?;
    }
    Ok(())
}

fn cat(target: &str, disks: &[PathBuf], paths: &[String]) -> Result<(), Failure> {
    let t = guesttree::parse_target(target, disks)?;
    let tree = guesttree::open_tree(&t, false)?;
    let mut out = std::io::stdout().lock();
    for p in paths {
        let data = tree.fs().read(p).map_err(|e| classify(e.into()))?;
        vlog!("{p}: {} bytes", data.len());
        out.write_all(&data)
            .context("writing to standard output")
            .map_err(|e| Failure { code: 3, error: e })?;
    }
    Ok(())
}

// ---------------------------------------------------------------- undo

fn undo(images: &[PathBuf], all: bool) -> Result<(), Failure> {
    guesttree::ensure_images_exist(images)?;
    for image in images {
        loop {
            let r = journal::undo(image, &CommitOptions::default()).map_err(refused_or_io)?;
            if !human::quiet() {
                if let Some(t) = &r.removed_temp {
                    outln!(
                        "{}: removed {}, left by a run killed before it changed the image",
                        r.image.display(),
                        t.display()
                    );
                }
                outln!(
                    "{}: restored {} range(s) from {}{}",
                    r.image.display(),
                    r.ranges,
                    r.journal.display(),
                    if r.resumed {
                        " (finishing an interrupted undo)"
                    } else if r.interrupted {
                        " (an interrupted run)"
                    } else {
                        ""
                    }
                );
            }
            if !all || journal::journals(image).map_err(refused_or_io)?.is_empty() {
                break;
            }
        }
    }
    Ok(())
}

fn refused_or_io(e: vmie_disk::DiskError) -> Failure {
    if e.is_refusal() {
        refused(e.into())
    } else {
        Failure {
            code: 3,
            error: e.into(),
        }
    }
}
