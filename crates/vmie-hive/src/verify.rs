//! Self-check: re-open an edited hive with nt-hive (an independent regf
//! implementation) and compare every edited key and value.
//!
//! nt-hive is only handed bytes this crate wrote and re-parsed itself first:
//! it has internal `assert!`s that a hostile hive could reach.

use std::collections::BTreeMap;

use crate::error::{HiveError, Result};
use crate::hive::{split_path, upcase, Hive, HiveOptions};

/// One edit whose result the self-check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    SetValue {
        key: String,
        name: String,
        vtype: u32,
        data: Vec<u8>,
    },
    DeleteValue {
        key: String,
        name: String,
    },
    CreateKey {
        path: String,
    },
    DeleteKey {
        path: String,
    },
}

fn norm(path: &str) -> Vec<Vec<u16>> {
    split_path(path).into_iter().map(upcase).collect()
}

fn is_under(p: &[Vec<u16>], root: &[Vec<u16>]) -> bool {
    p.len() >= root.len() && p.get(..root.len()) == Some(root)
}

type ValueKey = (Vec<Vec<u16>>, Vec<u16>);
/// (key path, value name, expected type and data or absent).
type ValueWant = (String, String, Option<(u32, Vec<u8>)>);

/// Re-open `bytes` with nt-hive and check that the final state implied by
/// `edits` (applied in order) is what it reads. Also walks the whole tree
/// through nt-hive (bounded) to prove it is readable.
pub fn verify_with_nt_hive(bytes: &[u8], edits: &[Edit]) -> Result<()> {
    let fail = |path: &str, reason: String| HiveError::Verify {
        hive: "edited hive".into(),
        path: path.to_string(),
        reason,
    };
    // Our own reader first: nt-hive only sees hives we can parse.
    let ours = Hive::from_bytes(
        bytes.to_vec(),
        &HiveOptions {
            name: "edited hive".into(),
            ..Default::default()
        },
    )?;
    ours.walk(ours.root())?;

    let mut keys: BTreeMap<Vec<Vec<u16>>, (String, bool)> = BTreeMap::new();
    let mut vals: BTreeMap<ValueKey, ValueWant> = BTreeMap::new();
    for e in edits {
        match e {
            Edit::SetValue {
                key,
                name,
                vtype,
                data,
            } => {
                let k = norm(key);
                keys.insert(k.clone(), (key.clone(), true));
                vals.insert(
                    (k, upcase(name)),
                    (key.clone(), name.clone(), Some((*vtype, data.clone()))),
                );
            }
            Edit::DeleteValue { key, name } => {
                vals.insert((norm(key), upcase(name)), (key.clone(), name.clone(), None));
            }
            Edit::CreateKey { path } => {
                keys.insert(norm(path), (path.clone(), true));
            }
            Edit::DeleteKey { path } => {
                let k = norm(path);
                keys.retain(|p, _| !is_under(p, &k));
                vals.retain(|(p, _), _| !is_under(p, &k));
                keys.insert(k, (path.clone(), false));
            }
        }
    }

    let hive = nt_hive::Hive::new(bytes)
        .map_err(|e| fail("\\", format!("nt-hive refuses the hive: {e}")))?;
    let root = hive
        .root_key_node()
        .map_err(|e| fail("\\", format!("nt-hive cannot read the root key: {e}")))?;
    let minor = ours.minor_version();
    let old_big = |v: &nt_hive::KeyValue<'_, &[u8]>| {
        minor < 4 && (v.data_size() & 0x7FFF_FFFF) as usize > crate::hive::BIG_DATA_SEGMENT
    };
    let open = |path: &str| -> Result<Option<nt_hive::KeyNode<'_, &[u8]>>> {
        let p = split_path(path).join("\\");
        if p.is_empty() {
            return Ok(Some(root.clone()));
        }
        match root.subpath(&p) {
            None => Ok(None),
            Some(Ok(k)) => Ok(Some(k)),
            Some(Err(e)) => Err(fail(path, format!("nt-hive: {e}"))),
        }
    };
    for (path, exists) in keys.values() {
        let found = open(path)?.is_some();
        if found != *exists {
            return Err(fail(
                path,
                format!(
                    "key should {}exist but nt-hive {}finds it",
                    if *exists { "" } else { "not " },
                    if found { "" } else { "not " }
                ),
            ));
        }
    }
    for (path, name, want) in vals.values() {
        let Some(k) = open(path)? else {
            return Err(fail(
                path,
                "key of an edited value not found by nt-hive".into(),
            ));
        };
        let got = match k.value(name) {
            None => None,
            Some(Err(e)) => return Err(fail(path, format!("nt-hive value {name:?}: {e}"))),
            Some(Ok(v)) if old_big(&v) => {
                // nt-hive reads any value > 16344 bytes as big data, but regf
                // < 1.4 stores it in one cell (as Windows does): use our reader.
                let ok = ours.open_key(path).and_then(|k| ours.get_value(k, name))?;
                ok.map(|v| (Some(v.vtype), v.data))
            }
            Some(Ok(v)) => {
                let data = v
                    .data()
                    .and_then(|d| d.into_vec())
                    .map_err(|e| fail(path, format!("nt-hive data of {name:?}: {e}")))?;
                let t = v.data_type().ok().map(|t| t as u32);
                Some((t, data))
            }
        };
        match (want, got) {
            (None, None) => {}
            (Some((wt, wd)), Some((gt, gd))) => {
                if gd != *wd {
                    return Err(fail(
                        path,
                        format!(
                            "value {name:?}: nt-hive reads {} bytes, expected {}",
                            gd.len(),
                            wd.len()
                        ),
                    ));
                }
                if let Some(gt) = gt {
                    if gt != *wt {
                        return Err(fail(path, format!("value {name:?}: type {gt} != {wt}")));
                    }
                }
            }
            (w, g) => {
                return Err(fail(
                    path,
                    format!(
                        "value {name:?}: expected {}, nt-hive {}",
                        if w.is_some() { "present" } else { "absent" },
                        if g.is_some() { "finds it" } else { "does not" }
                    ),
                ));
            }
        }
    }
    // Whole-tree readability through nt-hive, bounded by our own key count.
    let (nkeys, _) = ours.walk(ours.root())?;
    let mut stack = vec![root];
    let mut seen = 0usize;
    while let Some(k) = stack.pop() {
        seen += 1;
        if seen > nkeys {
            return Err(fail("\\", "nt-hive sees more keys than exist".into()));
        }
        if let Some(vs) = k.values() {
            let vs = vs.map_err(|e| fail("\\", format!("nt-hive values: {e}")))?;
            for v in vs {
                let v = v.map_err(|e| fail("\\", format!("nt-hive value: {e}")))?;
                if old_big(&v) {
                    continue;
                }
                v.data()
                    .and_then(|d| d.into_vec())
                    .map_err(|e| fail("\\", format!("nt-hive data: {e}")))?;
            }
        }
        if let Some(sk) = k.subkeys() {
            let sk = sk.map_err(|e| fail("\\", format!("nt-hive subkeys: {e}")))?;
            for c in sk {
                stack.push(c.map_err(|e| fail("\\", format!("nt-hive subkey: {e}")))?);
            }
        }
    }
    if seen != nkeys {
        return Err(fail(
            "\\",
            format!("nt-hive sees {seen} keys, we see {nkeys}"),
        ));
    }
    Ok(())
}
