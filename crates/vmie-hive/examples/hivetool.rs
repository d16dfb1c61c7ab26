//! Small driver: `hivetool export HIVE [KEY]` prints the hivexregedit-compatible export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let path = args.get(2).expect("usage: hivetool export|walk HIVE [KEY]");
    let bytes = std::fs::read(path).unwrap();
    let opts = vmie_hive::HiveOptions {
        name: path.clone(),
        ..Default::default()
    };
    let mut hive = match vmie_hive::Hive::from_bytes(bytes, &opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    match cmd {
        "export" => {
            match vmie_hive::export_hivex_bytes(&hive, args.get(3).map(String::as_str), None) {
                Ok(b) => std::io::stdout().write_all(&b).unwrap(),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        "merge" => {
            let text = std::fs::read_to_string(args.get(3).unwrap()).unwrap();
            match vmie_hive::merge(&mut hive, &text) {
                Ok(r) => eprintln!("{r:?}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
            std::fs::write(args.get(4).unwrap(), hive.bytes()).unwrap();
        }
        _ => println!("{:?}", hive.walk(hive.root())),
    }
}
