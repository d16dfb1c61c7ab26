//! BCD (boot configuration data) hive helpers: objects and their elements.
//!
//! Layout: `\Objects\{GUID}\Description` holds `Type` (DWORD object type);
//! `\Objects\{GUID}\Elements\XXXXXXXX` (element type code, lowercase hex)
//! holds `Element`. The element code's bits 24–27 give its format.

use crate::error::{HiveError, Result};
use crate::hive::{reg_type, Decoded, Hive, Value};

/// Element description (a string element).
pub const ELEMENT_DESCRIPTION: u32 = 0x1200_0004;

/// Format of an element (bits 24–27 of its code).
pub fn element_format(code: u32) -> u32 {
    (code >> 24) & 0xF
}

/// A decoded element value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BcdValue {
    Device(Vec<u8>),
    String(String),
    Object(String),
    ObjectList(Vec<String>),
    Integer(u64),
    Boolean(bool),
    IntegerList(Vec<u64>),
    /// Anything not matching its format.
    Raw(u32, Vec<u8>),
}

/// One element of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BcdElement {
    pub code: u32,
    pub value: BcdValue,
}

/// One BCD object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BcdObject {
    /// The key name, e.g. `{9dea862c-5cdd-4e70-acc1-f32b344d4795}`.
    pub guid: String,
    /// `Description\Type`.
    pub object_type: Option<u32>,
    /// Element 12000004.
    pub description: Option<String>,
    pub elements: Vec<BcdElement>,
}

fn decode(code: u32, v: &Value) -> BcdValue {
    let le_u64s = |d: &[u8]| -> Vec<u64> {
        d.chunks_exact(8)
            .map(|c| u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or([0; 8])))
            .collect()
    };
    match (element_format(code), v.decoded()) {
        (2, Decoded::String(s)) => BcdValue::String(s),
        (3, Decoded::String(s)) => BcdValue::Object(s),
        (4, Decoded::MultiString(l)) => BcdValue::ObjectList(l),
        (1, _) if v.vtype == reg_type::BINARY => BcdValue::Device(v.data.clone()),
        (5, _) if v.vtype == reg_type::BINARY && (1..=8).contains(&v.data.len()) => {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(&v.data) {
                *d = *s;
            }
            BcdValue::Integer(u64::from_le_bytes(b))
        }
        (6, _) if v.vtype == reg_type::BINARY && !v.data.is_empty() => {
            BcdValue::Boolean(v.data.iter().any(|&b| b != 0))
        }
        (7, _) if v.vtype == reg_type::BINARY && v.data.len() % 8 == 0 => {
            BcdValue::IntegerList(le_u64s(&v.data))
        }
        _ => BcdValue::Raw(v.vtype, v.data.clone()),
    }
}

/// Elements of the object at `\Objects\{guid}`.
pub fn elements(hive: &Hive, guid: &str) -> Result<Vec<BcdElement>> {
    let path = format!("\\Objects\\{guid}\\Elements");
    let k = match hive.open_key(&path) {
        Ok(k) => k,
        Err(HiveError::KeyNotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in hive.subkeys(k)? {
        let name = hive.key_name(e)?;
        let Ok(code) = u32::from_str_radix(&name, 16) else {
            continue;
        };
        if let Some(v) = hive.get_value(e, "Element")? {
            out.push(BcdElement {
                code,
                value: decode(code, &v),
            });
        }
    }
    out.sort_by_key(|e| e.code);
    Ok(out)
}

/// All objects, sorted by GUID.
pub fn objects(hive: &Hive) -> Result<Vec<BcdObject>> {
    let objs = hive.open_key("\\Objects")?;
    let mut out = Vec::new();
    for o in hive.subkeys(objs)? {
        let guid = hive.key_name(o)?;
        let object_type = match hive.open_key(&format!("\\Objects\\{guid}\\Description")) {
            Ok(d) => hive.get_value(d, "Type")?.and_then(|v| match v.decoded() {
                Decoded::Dword(t) => Some(t),
                _ => None,
            }),
            Err(_) => None,
        };
        let elements = elements(hive, &guid)?;
        let description = elements.iter().find_map(|e| match (&e.value, e.code) {
            (BcdValue::String(s), ELEMENT_DESCRIPTION) => Some(s.clone()),
            _ => None,
        });
        out.push(BcdObject {
            guid,
            object_type,
            description,
            elements,
        });
    }
    out.sort_by(|a, b| {
        a.guid
            .to_ascii_lowercase()
            .cmp(&b.guid.to_ascii_lowercase())
    });
    Ok(out)
}

/// Objects for display: empty if the hive is not a readable BCD.
pub fn show(hive: &Hive) -> Vec<BcdObject> {
    objects(hive).unwrap_or_default()
}

fn set_element(
    hive: &mut Hive,
    guid: &str,
    code: u32,
    want_format: u32,
    data: &[u8],
) -> Result<()> {
    let obj = format!("\\Objects\\{guid}");
    if element_format(code) != want_format {
        return Err(HiveError::Invalid {
            hive: hive.name().to_string(),
            path: obj,
            reason: format!(
                "element {code:08x} has format {}, not {want_format}",
                element_format(code)
            ),
        });
    }
    hive.open_key(&obj)?;
    let path = format!("{obj}\\Elements\\{code:08x}");
    hive.ensure_key(&path)?;
    hive.set_value(&path, "Element", reg_type::BINARY, data)
}

/// Set a boolean element (format 6): REG_BINARY of one byte.
pub fn set_boolean(hive: &mut Hive, guid: &str, code: u32, value: bool) -> Result<()> {
    set_element(hive, guid, code, 6, &[u8::from(value)])
}

/// Set an integer element (format 5): REG_BINARY of 8 bytes, little-endian.
pub fn set_integer(hive: &mut Hive, guid: &str, code: u32, value: u64) -> Result<()> {
    set_element(hive, guid, code, 5, &value.to_le_bytes())
}
