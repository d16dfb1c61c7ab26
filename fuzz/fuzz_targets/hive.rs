// Hive::from_bytes + walk + export + a few edits on arbitrary bytes: must
// return Ok/Err, never panic, never hang, never allocate by an unchecked field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmie_hive::{export_hivex_bytes, Hive, HiveOptions};

fuzz_target!(|data: &[u8]| {
    let opts = HiveOptions {
        name: "fuzz".into(),
        max_hive_size: 64 << 20,
        max_subkeys_visited: 100_000,
        max_value_size: 4 << 20,
        ..Default::default()
    };
    // Also exercise log replay: split the input into a primary and a log.
    let split = data.len() / 2;
    let _ = Hive::from_bytes_with_logs(data[..split].to_vec(), &[&data[split..]], &opts);
    let Ok(mut hive) = Hive::from_bytes(data.to_vec(), &opts) else {
        return;
    };
    let _ = hive.walk(hive.root());
    let _ = export_hivex_bytes(&hive, None, None);
    let _ = vmie_hive::bcd::show(&hive);
    let _ = vmie_hive::system::current_control_set(&hive);
    let _ = hive.set_value("\\", "fuzz", 3, &[0u8; 64]);
    let _ = hive.create_key("\\", "FuzzKey");
    let _ = vmie_hive::merge(
        &mut hive,
        "[\\FuzzKey\\Sub]\n\"v\"=hex(7):61,00,00,00,00,00\n",
    );
    let _ = hive.delete_key("\\FuzzKey");
});
