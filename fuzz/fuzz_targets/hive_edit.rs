// Hive edits on hostile hives: the input is an edit script and a hive,
//
//   [S: script length][script: S bytes][hive bytes ...]
//
// The script is decoded into up to 16 edits (set/delete value, create/delete
// key) aimed at keys and values the hive really has, so most edits reach the
// allocator, the subkey lists and the base block rather than failing lookup.
// Properties:
// - nothing panics, whatever the bytes (every edit returns Ok or Err);
// - if the untouched hive passes the self-check (our reader, then nt-hive),
//   the hive after the edits that succeeded passes it too, with every
//   successful edit visible through nt-hive as it was made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmie_hive::{reg_type, verify_with_nt_hive, Edit, Hive, HiveOptions};

const MAX_KEYS: usize = 64;
const MAX_EDITS: usize = 16;

/// Reads bytes off the script; zero once it runs out.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Breadth-first list of key paths, root first (bounded).
fn key_paths(hive: &Hive) -> Vec<String> {
    let mut out = vec!["\\".to_string()];
    let mut queue = vec![hive.root()];
    let mut i = 0;
    while i < queue.len() && out.len() < MAX_KEYS {
        let Ok(subs) = hive.subkeys(queue[i]) else {
            break;
        };
        i += 1;
        for k in subs {
            if out.len() >= MAX_KEYS {
                break;
            }
            if let Ok(p) = hive.key_path(k) {
                out.push(p);
                queue.push(k);
            }
        }
    }
    out
}

/// A key or value name: an existing one, or a new one made from the script
/// (ASCII, with the odd non-ASCII character that upcasing must handle).
fn name(s: &mut Script<'_>, existing: &[String]) -> String {
    let b = s.byte();
    if b & 0x80 == 0 && !existing.is_empty() {
        return existing[usize::from(b) % existing.len()].clone();
    }
    let len = usize::from(b & 0x0F);
    let raw = s.bytes(len);
    let mut n: String = raw
        .iter()
        .map(|&c| match c {
            0xF0..=0xFF => 'ß',
            0xE0..=0xEF => 'é',
            c if c.is_ascii_graphic() && c != b'\\' => char::from(c),
            _ => 'n',
        })
        .collect();
    if n.is_empty() && b & 0x40 == 0 {
        n.push('k');
    }
    n
}

fn value_names(hive: &Hive, path: &str) -> Vec<String> {
    let Ok(k) = hive.open_key(path) else {
        return Vec::new();
    };
    let Ok(vals) = hive.values(k) else {
        return Vec::new();
    };
    vals.into_iter()
        .take(64)
        .filter_map(|v| hive.value(v).ok().map(|v| v.name))
        .collect()
}

fn child(parent: &str, name: &str) -> String {
    if parent == "\\" {
        format!("\\{name}")
    } else {
        format!("{parent}\\{name}")
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&slen, rest)) = data.split_first() else {
        return;
    };
    let slen = usize::from(slen).min(rest.len());
    let (script, hive_bytes) = rest.split_at(slen);
    let opts = HiveOptions {
        name: "fuzz".into(),
        max_hive_size: 16 << 20,
        max_subkeys_visited: 100_000,
        max_value_size: 1 << 20,
        ..Default::default()
    };
    let Ok(mut hive) = Hive::from_bytes(hive_bytes.to_vec(), &opts) else {
        return;
    };
    let consistent = verify_with_nt_hive(hive_bytes, &[]).is_ok();
    let mut keys = key_paths(&hive);
    let mut s = Script(script);
    let mut edits: Vec<Edit> = Vec::new();
    let mut tried = 0;
    while !s.is_empty() && tried < MAX_EDITS {
        tried += 1;
        let op = s.byte();
        let key = keys[usize::from(s.byte()) % keys.len()].clone();
        match op % 4 {
            0 => {
                let vnames = value_names(&hive, &key);
                let vname = name(&mut s, &vnames);
                let vtype = match s.byte() % 8 {
                    0 => reg_type::SZ,
                    1 => reg_type::EXPAND_SZ,
                    2 => reg_type::BINARY,
                    3 => reg_type::DWORD,
                    4 => reg_type::MULTI_SZ,
                    5 => reg_type::QWORD,
                    6 => reg_type::NONE,
                    _ => u32::from(s.byte()),
                };
                // Sizes around the inline (<= 4), small, and big-data
                // (> 16344 bytes) boundaries.
                let len = match s.byte() {
                    b @ 0..=199 => usize::from(b),
                    b @ 200..=249 => usize::from(b - 200) * 400,
                    b => 16_340 + usize::from(b - 250) * 2,
                };
                let fill = s.byte();
                let mut vdata = s.bytes(len);
                vdata.resize(len, fill);
                if hive.set_value(&key, &vname, vtype, &vdata).is_ok() {
                    edits.push(Edit::SetValue {
                        key,
                        name: vname,
                        vtype,
                        data: vdata,
                    });
                }
            }
            1 => {
                let vnames = value_names(&hive, &key);
                let vname = name(&mut s, &vnames);
                if hive.delete_value(&key, &vname).is_ok() {
                    edits.push(Edit::DeleteValue { key, name: vname });
                }
            }
            2 => {
                let kname = name(&mut s, &[]);
                if hive.create_key(&key, &kname).is_ok() {
                    let path = child(&key, &kname);
                    if keys.len() < MAX_KEYS * 2 {
                        keys.push(path.clone());
                    }
                    edits.push(Edit::CreateKey { path });
                }
            }
            _ => {
                if key != "\\" && hive.delete_key(&key).is_ok() {
                    let under = format!("{}\\", key.to_uppercase());
                    let gone = key.to_uppercase();
                    keys.retain(|k| {
                        let u = k.to_uppercase();
                        u != gone && !u.starts_with(&under)
                    });
                    edits.push(Edit::DeleteKey { path: key });
                }
            }
        }
    }
    if consistent && !edits.is_empty() {
        if let Err(e) = verify_with_nt_hive(hive.bytes(), &edits) {
            panic!("edits succeeded on a consistent hive but the self-check fails: {e}\nedits: {edits:?}");
        }
    }
});
