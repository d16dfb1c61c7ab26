//! What a BCD store says about booting: default entry, timeout, EMS,
//! boot status policy. Element values are looked up the way the boot
//! manager does: on the object itself, else through its `inherit` list
//! (element 14000006), depth first, bounded.

use std::collections::{HashMap, HashSet};

use vmie_hive::bcd::{BcdObject, BcdValue};
use vmie_hive::{Hive, HiveError};

use crate::info::BootConfig;

/// `{bootmgr}`.
pub const BOOTMGR_GUID: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
/// `BcdLibraryObjectList_InheritedObjects`.
pub const ELEM_INHERIT: u32 = 0x1400_0006;
/// `BcdLibraryString_ApplicationPath`.
pub const ELEM_APP_PATH: u32 = 0x1200_0002;
/// `BcdLibraryBoolean_AutoRecoveryEnabled` (`recoveryenabled`).
pub const ELEM_RECOVERY_ENABLED: u32 = 0x1600_0009;
/// `BcdLibraryBoolean_EmsEnabled` (`bootems`).
pub const ELEM_BOOTEMS: u32 = 0x1600_0020;
/// `BcdBootMgrObject_DefaultObject` (`default`).
pub const ELEM_DEFAULT_OBJECT: u32 = 0x2300_0003;
/// `BcdBootMgrInteger_Timeout` (`timeout`).
pub const ELEM_TIMEOUT: u32 = 0x2500_0004;
/// `BcdOSLoaderInteger_BootStatusPolicy` (`bootstatuspolicy`).
pub const ELEM_BOOTSTATUSPOLICY: u32 = 0x2500_00e0;
/// `BcdOSLoaderBoolean_EmsEnabled` (`ems`).
pub const ELEM_OSLOADER_EMS: u32 = 0x2600_00b0;
/// Object type of a Windows OS loader (winload) entry.
pub const OBJECT_TYPE_OSLOADER: u32 = 0x1020_0003;

/// Deepest inherit chain followed.
const MAX_INHERIT_DEPTH: usize = 16;

struct Store<'a> {
    by_guid: HashMap<String, &'a BcdObject>,
}

impl<'a> Store<'a> {
    fn new(objs: &'a [BcdObject]) -> Self {
        Store {
            by_guid: objs
                .iter()
                .map(|o| (o.guid.to_ascii_lowercase(), o))
                .collect(),
        }
    }

    fn get(&self, guid: &str) -> Option<&'a BcdObject> {
        self.by_guid.get(&guid.to_ascii_lowercase()).copied()
    }

    /// The element `code` of `guid`, or of what it inherits.
    fn effective(&self, guid: &str, code: u32) -> Option<&'a BcdValue> {
        let mut seen = HashSet::new();
        self.walk(guid, code, 0, &mut seen)
    }

    fn walk(
        &self,
        guid: &str,
        code: u32,
        depth: usize,
        seen: &mut HashSet<String>,
    ) -> Option<&'a BcdValue> {
        if depth > MAX_INHERIT_DEPTH || !seen.insert(guid.to_ascii_lowercase()) {
            return None;
        }
        let obj = self.get(guid)?;
        if let Some(e) = obj.elements.iter().find(|e| e.code == code) {
            return Some(&e.value);
        }
        let inherits = obj.elements.iter().find_map(|e| match (&e.value, e.code) {
            (BcdValue::ObjectList(l), ELEM_INHERIT) => Some(l),
            _ => None,
        })?;
        inherits
            .iter()
            .find_map(|g| self.walk(g, code, depth + 1, seen))
    }
}

fn as_bool(v: Option<&BcdValue>) -> Option<bool> {
    match v? {
        BcdValue::Boolean(b) => Some(*b),
        BcdValue::Integer(n) => Some(*n != 0),
        _ => None,
    }
}

fn as_int(v: Option<&BcdValue>) -> Option<u64> {
    match v? {
        BcdValue::Integer(n) => Some(*n),
        _ => None,
    }
}

fn as_string(v: Option<&BcdValue>) -> Option<String> {
    match v? {
        BcdValue::String(s) | BcdValue::Object(s) => Some(s.clone()),
        _ => None,
    }
}

/// Read the boot configuration of a BCD hive.
pub fn boot_config(hive: &Hive) -> Result<BootConfig, HiveError> {
    let objs = vmie_hive::bcd::objects(hive)?;
    let store = Store::new(&objs);
    let mut out = BootConfig {
        timeout: as_int(store.effective(BOOTMGR_GUID, ELEM_TIMEOUT)),
        bootems: as_bool(store.effective(BOOTMGR_GUID, ELEM_BOOTEMS)),
        default_entry: as_string(store.effective(BOOTMGR_GUID, ELEM_DEFAULT_OBJECT)),
        ..BootConfig::default()
    };
    if let Some(def) = out.default_entry.clone() {
        if let Some(o) = store.get(&def) {
            out.default_description = o.description.clone();
        }
        out.default_path = as_string(store.effective(&def, ELEM_APP_PATH));
        // `bcdedit /ems {default} on` sets 0x260000b0 on the loader;
        // `bcdedit /bootems {default} on` sets 0x16000020 there.
        out.ems = match (
            as_bool(store.effective(&def, ELEM_OSLOADER_EMS)),
            as_bool(store.effective(&def, ELEM_BOOTEMS)),
        ) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (None, None) => None,
            _ => Some(false),
        };
        out.bootstatuspolicy = as_int(store.effective(&def, ELEM_BOOTSTATUSPOLICY));
        out.recovery_enabled = as_bool(store.effective(&def, ELEM_RECOVERY_ENABLED));
    }
    out.ems_entries = objs
        .iter()
        .filter(|o| o.object_type == Some(OBJECT_TYPE_OSLOADER))
        .filter(|o| {
            as_bool(store.effective(&o.guid, ELEM_OSLOADER_EMS)) == Some(true)
                || as_bool(store.effective(&o.guid, ELEM_BOOTEMS)) == Some(true)
        })
        .map(|o| o.guid.clone())
        .collect();
    Ok(out)
}
