//! The small API the CLI uses.

use crate::error::{HiveError, Result};
use crate::hive::{Hive, Value};

/// What `get` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetResult {
    /// A key: its subkey names and values (stored order).
    Key {
        path: String,
        subkeys: Vec<String>,
        values: Vec<Value>,
    },
    /// One value.
    Value(Value),
}

/// Read a key (with `value: None`) or one of its values (`Some("")` = default value).
pub fn get(hive: &Hive, key: &str, value: Option<&str>) -> Result<GetResult> {
    let k = hive.open_key(key)?;
    match value {
        Some(name) => hive
            .get_value(k, name)?
            .map(GetResult::Value)
            .ok_or_else(|| HiveError::ValueNotFound {
                hive: hive.name().to_string(),
                path: key.to_string(),
                name: name.to_string(),
            }),
        None => {
            let subkeys = hive
                .subkeys(k)?
                .into_iter()
                .map(|c| hive.key_name(c))
                .collect::<Result<Vec<_>>>()?;
            let values = hive
                .values(k)?
                .into_iter()
                .map(|v| hive.value(v))
                .collect::<Result<Vec<_>>>()?;
            Ok(GetResult::Key {
                path: hive.key_path(k)?,
                subkeys,
                values,
            })
        }
    }
}
