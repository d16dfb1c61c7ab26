//! Recognising image container formats. qcow2, VMDK, VHD and VHDX are read
//! through [`crate::image`], and an OVA's disks through
//! [`crate::image::open_ova`]; writing needs a raw image, and VDI is not
//! read at all, so the user gets told how to convert instead of a confusing
//! "no partition table".

use crate::{Device, DiskError};

/// A virtual-disk container format, recognised by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFormat {
    /// QEMU copy-on-write v1/v2/v3.
    Qcow,
    /// VMware sparse (hosted or ESXi COWD) extent or text descriptor.
    Vmdk,
    /// Microsoft VHD (fixed images carry the footer only at the end).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// An OVA: a tar archive of an OVF descriptor and the VM's disks (see
    /// [`crate::image::open_ova`]).
    Ova,
}

impl ContainerFormat {
    /// The name qemu-img uses for this format.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Qcow => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhd => "vpc",
            Self::Vhdx => "vhdx",
            Self::Vdi => "vdi",
            Self::Ova => "ova",
        }
    }

    /// The name people know the format by (qemu-img calls VHD `vpc`).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Qcow => "qcow2",
            Self::Vmdk => "VMDK",
            Self::Vhd => "VHD",
            Self::Vhdx => "VHDX",
            Self::Vdi => "VDI",
            Self::Ova => "OVA",
        }
    }
}

/// Look for a container format's magic in `dev`.
///
/// A fixed VHD is a raw image with a 512-byte footer; we still refuse it so the
/// footer is not mistaken for data and the user converts it explicitly.
pub fn detect_container(dev: &dyn Device) -> Result<Option<ContainerFormat>, DiskError> {
    let mut head = [0u8; 512];
    let n = usize::try_from(dev.len().min(512)).unwrap_or(0);
    dev.read_at(0, &mut head[..n])?;
    let head = &head[..n];
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"QFI\xfb") {
        return Ok(Some(ContainerFormat::Qcow));
    }
    if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        return Ok(Some(ContainerFormat::Vmdk));
    }
    if starts(b"vhdxfile") {
        return Ok(Some(ContainerFormat::Vhdx));
    }
    if starts(b"conectix") {
        return Ok(Some(ContainerFormat::Vhd));
    }
    if crate::image::ova::looks_like_ova(head) {
        return Ok(Some(ContainerFormat::Ova));
    }
    if head.len() >= 0x44 && head[0x40..0x44] == [0x7f, 0x10, 0xda, 0xbe] && starts(b"<<< ") {
        return Ok(Some(ContainerFormat::Vdi));
    }
    if dev.len() >= 1024 && dev.len() % 512 == 0 {
        let mut tail = [0u8; 8];
        dev.read_at(dev.len() - 512, &mut tail)?;
        if &tail == b"conectix" {
            return Ok(Some(ContainerFormat::Vhd));
        }
    }
    Ok(None)
}

/// The conversion command for `path`: `qemu-img convert -O raw 'vm.vmdk' 'vm.raw'`.
pub fn conversion_command(path: &str) -> String {
    let p = std::path::Path::new(path);
    let out = match p.extension() {
        Some(e) if e != "raw" => p.with_extension("raw"),
        _ => std::path::PathBuf::from(format!("{path}.raw")),
    };
    format!("qemu-img convert -O raw '{path}' '{}'", out.display())
}

/// The fixup run that writes a fixed raw copy of `path` instead:
/// `vmie-fixup --output 'vm.raw' 'vm.vmdk'`.
pub fn output_command(path: &str) -> String {
    let p = std::path::Path::new(path);
    let out = match p.extension() {
        Some(e) if e != "raw" => p.with_extension("raw"),
        _ => std::path::PathBuf::from(format!("{path}.raw")),
    };
    format!("vmie-fixup --output '{}' '{path}'", out.display())
}

/// A refusal of `dev`, a `fmt` container, for the reason `why`, with the
/// conversion command.
pub fn conversion_refusal(dev: &dyn Device, fmt: ContainerFormat, why: &str) -> DiskError {
    if fmt == ContainerFormat::Ova {
        return crate::image::ova::refusal(dev, why);
    }
    let path = dev.describe();
    DiskError::NotAnImage {
        why: format!(
            "this is a {} image: {why}. Convert it to a raw image first: {}; or have the fixup run write a fixed raw copy: {}",
            fmt.display_name(),
            conversion_command(&path),
            output_command(&path)
        ),
        path,
    }
}

/// Refuse `dev` if it is a container rather than a raw image, with a message
/// that says how to convert it. (Commands that write use this: they need a
/// raw image; commands that only read open containers through
/// [`crate::image::open_image`].)
pub fn ensure_raw(dev: &dyn Device) -> Result<(), DiskError> {
    if let Some(fmt) = detect_container(dev)? {
        return Err(conversion_refusal(
            dev,
            fmt,
            "vmie-fixup reads it, but writes raw disk images (and fixed VHDs) only",
        ));
    }
    Ok(())
}
