// ext2/3/4 read path (our superblock checks in front of ext4-view, and the
// guest-confined resolver) on arbitrary bytes: open, list the root, read
// /etc/os-release through symlinks. Must never panic or hang.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmie_disk::{Device, MemDevice};
use vmie_ext4::Ext4Fs;
use vmie_guestfs::GuestFsExt;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() < 64 * 1024 {
        bytes.resize(64 * 1024, 0);
    }
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("fuzz.img", bytes));
    if let Ok(fs) = Ext4Fs::open(dev, "fuzz.img") {
        let _ = fs.list("/");
        let _ = fs.read("/etc/os-release");
    }
});
