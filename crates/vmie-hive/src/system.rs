//! SYSTEM hive helpers.

use crate::error::{HiveError, Result};
use crate::hive::{Decoded, Hive};

/// The current control set of a SYSTEM hive: `ControlSet00N` from `Select\Current`
/// (checked to exist).
pub fn current_control_set(hive: &Hive) -> Result<String> {
    let sel = hive.open_key("\\Select")?;
    let v = hive
        .get_value(sel, "Current")?
        .ok_or_else(|| HiveError::ValueNotFound {
            hive: hive.name().to_string(),
            path: "\\Select".into(),
            name: "Current".into(),
        })?;
    let n = match v.decoded() {
        Decoded::Dword(n) if (1..=999).contains(&n) => n,
        other => {
            return Err(HiveError::Invalid {
                hive: hive.name().to_string(),
                path: "\\Select".into(),
                reason: format!("Current is not a control set number: {other:?}"),
            })
        }
    };
    let name = format!("ControlSet{n:03}");
    hive.open_key(&name)?;
    Ok(name)
}
