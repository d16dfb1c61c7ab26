#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Subkey list maintenance on a key with 5000 subkeys (an ri index of leaves):
//! inserts land in sorted position (nt-hive finds keys by binary search),
//! deletes shrink leaves and the ri, hashes are right.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use vmie_hive::{verify_with_nt_hive, Edit};

const K: &str = "\\key_with_many_subkeys";

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(8),
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    })]
    #[test]
    fn many_subkeys_insert_and_delete(
        adds in proptest::collection::vec("[a-zA-Z0-9_ äÖ]{1,12}", 1..40),
        dels in proptest::collection::vec(0usize..5000, 0..40),
    ) {
        let mut h = open("yarp/hives_for_tests/ManySubkeysHive");
        let k = h.open_key(K).unwrap();
        let mut names: BTreeSet<String> = h.subkeys(k).unwrap().into_iter().map(|c| h.key_name(c).unwrap().to_uppercase()).collect();
        let mut edits = Vec::new();
        for a in &adds {
            let up = a.to_uppercase();
            if names.contains(&up) {
                prop_assert!(h.create_key(K, a).is_err());
            } else {
                h.create_key(K, a).unwrap();
                names.insert(up);
                edits.push(Edit::CreateKey { path: format!("{K}\\{a}") });
            }
        }
        for d in &dels {
            let n = format!("{}", d + 1);
            let path = format!("{K}\\{n}");
            if names.remove(&n) {
                h.delete_key(&path).unwrap();
                edits.push(Edit::DeleteKey { path });
            }
        }
        let k = h.open_key(K).unwrap();
        let got: BTreeSet<String> = h.subkeys(k).unwrap().into_iter().map(|c| h.key_name(c).unwrap().to_uppercase()).collect();
        prop_assert_eq!(&got, &names);
        verify_with_nt_hive(h.bytes(), &edits).unwrap();
        if have_hivex() {
            let ours = vmie_hive::export_hivex_bytes(&h, None, None).unwrap();
            let hx = hivex_export_bytes(h.bytes(), "\\").unwrap();
            prop_assert!(ours == hx, "{}", show_diff(&ours, &hx));
        }
    }
}

#[test]
fn delete_all_subkeys_of_an_ri_list() {
    let mut h = open("yarp/hives_for_tests/ManySubkeysHive");
    h.delete_key(K).unwrap();
    assert!(h.open_key(K).is_err());
    verify_with_nt_hive(h.bytes(), &[Edit::DeleteKey { path: K.into() }]).unwrap();
    // Everything below it was freed: the file did not grow and a re-open walks.
    let re = vmie_hive::Hive::from_bytes(h.bytes().to_vec(), &opts("re")).unwrap();
    assert_eq!(re.walk(re.root()).unwrap().0, 1, "only the root is left");
}
