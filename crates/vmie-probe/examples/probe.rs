//! `cargo run -p vmie-probe --example probe -- IMAGE...`: print what
//! [`vmie_probe::probe`] finds on each raw image.

use std::path::Path;

use vmie_disk::FileDevice;
use vmie_probe::{probe, ProbeOptions};

fn main() {
    let mut failed = false;
    for arg in std::env::args().skip(1) {
        let result = FileDevice::open(Path::new(&arg))
            .map_err(|e| e.to_string())
            .and_then(|dev| probe(&dev, &ProbeOptions::default()).map_err(|e| e.to_string()));
        match result {
            Ok(Some(p)) => println!("{arg}: {p:#?}"),
            Ok(None) => println!("{arg}: nothing recognised"),
            Err(e) => {
                eprintln!("{arg}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
