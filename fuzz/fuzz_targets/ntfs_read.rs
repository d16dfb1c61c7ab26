// NTFS read path (our boot sector and MFT record checks in front of the ntfs
// crate, our $I30 index parser) and the Windows inspection on top, on
// arbitrary bytes: open, list the root, look up the hives, read volume info.
// Must never panic or hang.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmie_disk::{Device, MemDevice};
use vmie_guestfs::GuestFsExt;
use vmie_ntfs::NtfsFs;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() < 1024 * 1024 {
        bytes.resize(1024 * 1024, 0);
    }
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new("fuzz.img", bytes));
    if let Ok(fs) = NtfsFs::open(dev, "fuzz.img") {
        let _ = fs.list("/");
        let _ = fs.volume_info();
        if vmie_win::is_windows_root(&fs) {
            let _ = vmie_win::inspect_windows(&fs, &vmie_win::WinInspectOptions::default());
        }
    }
});
