//! The JSON outputs against their published schemas
//! (crates/vmie-fixup/schemas/*.schema.json): `inspect --format json` and the
//! run report, dry and committed, on fixture images made by the real tools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    xtask::fixtures::image(name).unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

fn schema(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn validator(schema_name: &str) -> jsonschema::Validator {
    let common = schema("common.schema.json");
    let registry = jsonschema::Registry::new()
        .add(
            "https://vmie-fixup.invalid/schemas/common.schema.json",
            common,
        )
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&schema(schema_name))
        .unwrap()
}

fn validate(schema_name: &str, doc: &Value) {
    let v = validator(schema_name);
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\n{doc:#}");
}

fn json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn inspect_output_matches_its_schema() {
    for name in ["demo", "rhel8", "gpt-mixed", "ntfs-files", "whole-ext2"] {
        let img = fixture(name);
        validate(
            "inspect.schema.json",
            &json(&["inspect", "--format", "json", img.to_str().unwrap()]),
        );
    }
}

#[test]
fn run_report_matches_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["demo", "rhel8", "gpt-mixed"] {
        let img = dir.path().join(format!("{name}.raw"));
        std::fs::copy(fixture(name), &img).unwrap();
        let s = img.to_str().unwrap();
        let dry = json(&["--dry-run", "--format", "json", s]);
        validate("report.schema.json", &dry);
        let real = json(&["--format", "json", s]);
        validate("report.schema.json", &real);
        if real["applied"] == true {
            assert!(!real["changes"].as_array().unwrap().is_empty());
        }
    }
}

/// The schema is not vacuous: a report with a field of the wrong type, or
/// without a required one, is rejected.
#[test]
fn the_schema_rejects_what_it_should() {
    let img = fixture("demo");
    let mut dry = json(&["--dry-run", "--format", "json", img.to_str().unwrap()]);
    dry["changes"][0]["op"] = Value::from("edited");
    let v = validator("report.schema.json");
    assert!(!v.is_valid(&dry));
    dry["changes"][0]["op"] = Value::from("modified");
    assert!(v.is_valid(&dry));
    dry.as_object_mut().unwrap().remove("undo_journal");
    assert!(!v.is_valid(&dry));
}

/// `osinfo` (added within schema_version 1): a string, or null when there
/// is none; nothing else.
#[test]
fn the_schema_types_osinfo() {
    let img = fixture("demo");
    let mut doc = json(&["inspect", "--format", "json", img.to_str().unwrap()]);
    assert_eq!(doc["operating_systems"][0]["osinfo"], "debian12");
    let v = validator("inspect.schema.json");
    doc["operating_systems"][0]["osinfo"] = Value::Null;
    assert!(v.is_valid(&doc));
    doc["operating_systems"][0]["osinfo"] = Value::from(12);
    assert!(!v.is_valid(&doc));
}
