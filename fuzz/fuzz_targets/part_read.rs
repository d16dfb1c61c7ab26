// cargo-fuzz target for vmie-part: read_partitions on arbitrary bytes.
// Inputs are small, so the disk is padded with zeros to 64 KiB half the time
// (the first byte decides) to let backup GPT headers and EBRs lie inside it.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmie_disk::{Device, MemDevice};
use vmie_part::{read_partitions, PartOptions, TableKind};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() < 64 * 1024 {
        bytes.resize(64 * 1024, 0);
    }
    let opts = PartOptions {
        max_gpt_entries: 1024,
        max_logical: if mode & 2 == 2 { 4 } else { 128 },
        sector_size: if mode & 4 == 4 { 4096 } else { 512 },
    };
    let len = bytes.len() as u64;
    let disk: Arc<dyn Device> = Arc::new(MemDevice::new("fuzz.img", bytes));
    if let Ok(table) = read_partitions(disk, &opts) {
        for p in &table.partitions {
            assert!(p.size > 0 && p.start.checked_add(p.size).is_some_and(|end| end <= len));
            assert_eq!(p.device.len(), p.size);
        }
        if table.kind == TableKind::None {
            assert!(table.partitions.is_empty());
        }
    }
});
