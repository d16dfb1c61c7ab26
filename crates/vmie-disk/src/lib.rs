//! Disk layer of vmie-fixup.
//!
//! - [`Device`]: byte-addressed, bounds-checked access (`read_at`, `write_at`, `len`).
//! - [`FileDevice`]: a raw image file; [`Window`]: a partition inside a device.
//! - [`Overlay`]: copy-on-write layer; every write of a run lands here.
//! - [`journal`]: commit of an overlay through an undo journal, and undo.
//! - [`DiskSet`]: the images of one VM, the first being the boot disk.
//! - [`format`](mod@format): recognising qcow2, VMDK, VHD, VHDX, VDI and OVA containers.
//! - [`image`]: read-only devices over qcow2, VMDK (with descriptors and
//!   delta disks), VHD (with differencing disks) and VHDX images, and the
//!   disks of an OVA read in place.
//! - [`guard`]: the panic boundary around third-party parsers.
#![forbid(unsafe_code)]

pub mod checksum;
mod device;
mod error;
pub mod export;
pub mod format;
pub mod guard;
pub mod image;
pub mod journal;
mod overlay;
mod set;

pub use device::{check_range, read_vec, Device, DeviceCursor, FileDevice, MemDevice, Window};
pub use error::DiskError;
pub use journal::FaultPlan;
pub use overlay::Overlay;
pub use set::{Disk, DiskSet};
