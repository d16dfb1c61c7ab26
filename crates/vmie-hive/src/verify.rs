//! Self-check: validate the edited hive as strictly as hivex's reader
//! ([`Hive::validate`]), then re-open it with nt-hive (an independent regf
//! implementation) and compare every edited key and value.
//!
//! nt-hive is only handed bytes this crate wrote and validated itself first
//! (it has internal `assert!`s that a hostile hive could reach), and every
//! call into it runs inside [`vmie_disk::guard::catch`].

use std::collections::BTreeMap;

use crate::error::{HiveError, Result};
use crate::hive::{names_equal, split_path, upcase, Hive, HiveOptions, KeyId};

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
    ours.validate()?;

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

    vmie_disk::guard::catch(
        || "edited hive: nt-hive self-check".to_string(),
        || nt_hive_check(bytes, &ours, &keys, &vals),
    )
    .map_err(|p| fail("\\", p.to_string()))?
}

type NtKey<'h> = nt_hive::KeyNode<'h, &'h [u8]>;

/// Our child of `k` named `name` (first match in stored order, as nt-hive's
/// linear scan below finds it).
fn our_child(ours: &Hive, k: KeyId, name: &str) -> Result<Option<KeyId>> {
    for c in ours.subkeys(k)? {
        if names_equal(&ours.key_name(c)?, name) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn vfail(path: &str, reason: String) -> HiveError {
    HiveError::Verify {
        hive: "edited hive".into(),
        path: path.to_string(),
        reason,
    }
}

/// nt-hive's subkeys of `k` (ours: `ok`) with their names, in stored order;
/// none where our reader finds none.
fn nt_kids<'h>(
    ours: &Hive,
    path: &str,
    k: &NtKey<'h>,
    ok: KeyId,
) -> Result<Vec<(NtKey<'h>, String)>> {
    if ours.subkeys(ok)?.is_empty() {
        return Ok(Vec::new());
    }
    let Some(list) = k.subkeys() else {
        return Err(vfail(path, "nt-hive finds no subkey list".into()));
    };
    let list = list.map_err(|e| vfail(path, format!("nt-hive subkeys: {e}")))?;
    let mut out = Vec::new();
    for c in list {
        let c = c.map_err(|e| vfail(path, format!("nt-hive subkey: {e}")))?;
        let n = c
            .name()
            .map_err(|e| vfail(path, format!("nt-hive subkey name: {e}")))?
            .to_string_lossy();
        out.push((c, n));
    }
    Ok(out)
}

/// The nt-hive half of the self-check (runs inside the panic boundary).
///
/// nt-hive is asked about a key's subkeys (values) only where our reader
/// finds some: Windows, hivex and our editor ignore the list offset of a key
/// whose count is 0 (real hives keep stale ones there), nt-hive would follow
/// it. Keys are found by a linear scan of nt-hive's subkey lists, not by its
/// binary search, which assumes sorted lists.
fn nt_hive_check(
    bytes: &[u8],
    ours: &Hive,
    keys: &BTreeMap<Vec<Vec<u16>>, (String, bool)>,
    vals: &BTreeMap<ValueKey, ValueWant>,
) -> Result<()> {
    let fail = |path: &str, reason: String| HiveError::Verify {
        hive: "edited hive".into(),
        path: path.to_string(),
        reason,
    };
    let hive = nt_hive::Hive::new(bytes)
        .map_err(|e| fail("\\", format!("nt-hive refuses the hive: {e}")))?;
    let root = hive
        .root_key_node()
        .map_err(|e| fail("\\", format!("nt-hive cannot read the root key: {e}")))?;
    let minor = ours.minor_version();
    let old_big = |v: &nt_hive::KeyValue<'_, &[u8]>| {
        minor < 4 && (v.data_size() & 0x7FFF_FFFF) as usize > crate::hive::BIG_DATA_SEGMENT
    };
    let open = |path: &str| -> Result<Option<(NtKey<'_>, KeyId)>> {
        let mut cur = (root.clone(), ours.root());
        for comp in split_path(path) {
            let Some(oc) = our_child(ours, cur.1, comp)? else {
                return Ok(None);
            };
            let found = nt_kids(ours, path, &cur.0, cur.1)?
                .into_iter()
                .find(|(_, n)| names_equal(n, comp));
            let Some((nc, _)) = found else {
                return Err(fail(path, format!("nt-hive does not find subkey {comp:?}")));
            };
            cur = (nc, oc);
        }
        Ok(Some(cur))
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
        let Some((k, ok)) = open(path)? else {
            return Err(fail(
                path,
                "key of an edited value not found by nt-hive".into(),
            ));
        };
        let got = match (ours.values(ok)?.is_empty(), k.value(name)) {
            (true, _) | (false, None) => None,
            (false, Some(Err(e))) => {
                return Err(fail(path, format!("nt-hive value {name:?}: {e}")))
            }
            (false, Some(Ok(v))) if old_big(&v) => {
                // nt-hive reads any value > 16344 bytes as big data, but regf
                // < 1.4 stores it in one cell (as Windows does): use our reader.
                let ok = ours.get_value(ok, name)?;
                ok.map(|v| (Some(v.vtype), v.data))
            }
            (false, Some(Ok(v))) => {
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
    // Whole tree in lockstep with our reader: the same subkeys (names, order)
    // and value counts, every value's data readable through nt-hive.
    let mut stack = vec![(root.clone(), ours.root())];
    let mut seen = 0usize;
    while let Some((k, ok)) = stack.pop() {
        seen += 1;
        if seen > ours.opts.max_subkeys_visited {
            return Err(fail(
                "\\",
                "nt-hive walk exceeds max_subkeys_visited".into(),
            ));
        }
        let path = || ours.key_path(ok).unwrap_or_else(|_| "?".into());
        let our_vals = ours.values(ok)?;
        if !our_vals.is_empty() {
            let Some(vs) = k.values() else {
                return Err(fail(&path(), "nt-hive finds no value list".into()));
            };
            let vs = vs.map_err(|e| fail(&path(), format!("nt-hive values: {e}")))?;
            let mut n = 0usize;
            for v in vs {
                let v = v.map_err(|e| fail(&path(), format!("nt-hive value: {e}")))?;
                n += 1;
                if old_big(&v) {
                    continue;
                }
                v.data()
                    .and_then(|d| d.into_vec())
                    .map_err(|e| fail(&path(), format!("nt-hive data: {e}")))?;
            }
            if n != our_vals.len() {
                return Err(fail(
                    &path(),
                    format!("nt-hive sees {n} values, we see {}", our_vals.len()),
                ));
            }
        }
        let our_kids = ours.subkeys(ok)?;
        let nt_list = nt_kids(ours, &path(), &k, ok)?;
        if nt_list.len() != our_kids.len() {
            return Err(fail(
                &path(),
                format!(
                    "nt-hive sees {} subkeys, we see {}",
                    nt_list.len(),
                    our_kids.len()
                ),
            ));
        }
        for ((nc, name), oc) in nt_list.into_iter().zip(our_kids) {
            let ours_name = ours.key_name(oc)?;
            if name != ours_name {
                return Err(fail(
                    &path(),
                    format!("nt-hive reads subkey {name:?} where we read {ours_name:?}"),
                ));
            }
            stack.push((nc, oc));
        }
    }
    Ok(())
}
