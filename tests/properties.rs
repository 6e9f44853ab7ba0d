//! Property tests of the parsers a stranger reaches: DIDs, request signatures and auth tokens,
//! DDO policies and file lists, job requests and their entrypoints, receipts. Each must answer
//! every input with a value or an error, never a panic, and keep its invariants. Bounded (256
//! cases each, proptest's default); `PROPTEST_CASES=20000 cargo test --test properties` runs
//! them longer.

use alloy::primitives::{Address, B256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use brizo::assets::{ddo, did};
use brizo::auth::signature;
use brizo::jobs::workspace;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep, with the keys DDOs use mixed into random ones.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("service".to_string()),
        Just("type".to_string()),
        Just("attributes".to_string()),
        Just("main".to_string()),
        Just("privacy".to_string()),
        Just("trustedAlgorithms".to_string()),
        Just("allowRawAlgorithm".to_string()),
        Just("supportedContainers".to_string()),
        Just("encryptedFiles".to_string()),
        Just("algorithm".to_string()),
        Just("container".to_string()),
        Just("entrypoint".to_string()),
        Just("image".to_string()),
        Just("tag".to_string()),
        Just("url".to_string()),
        "[a-z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        Just(Value::from("compute")),
        Just(Value::from("metadata")),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn dids_parse_or_refuse_and_round_trip(text in ".{0,80}", bytes in any::<[u8; 32]>()) {
        let _ = did::parse(&text);
        let _ = did::parse_id(&text);
        let id = B256::from(bytes);
        prop_assert_eq!(did::parse(&did::format(&id)), Some(id));
    }

    #[test]
    fn signatures_and_tokens_never_panic(message in ".{0,64}", signature in ".{0,200}", now in any::<u64>()) {
        let _ = signature::recover(&message, &signature);
        let _ = signature::verify(Address::ZERO, &message, &signature, now);
    }

    /// A real signature verifies for its message and signer only.
    #[test]
    fn a_signature_holds_for_its_message_only(message in "[ -~]{1,64}", other in "[ -~]{1,64}") {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let sig = key.sign_message_sync(message.as_bytes()).unwrap().to_string();
        prop_assert!(signature::verify(key.address(), &message, &sig, 0).is_ok());
        if other != message {
            prop_assert!(signature::verify(key.address(), &other, &sig, 0).is_err());
        }
        prop_assert!(signature::verify(Address::repeat_byte(1), &message, &sig, 0).is_err());
    }

    #[test]
    fn ddo_policies_and_files_never_panic(doc in json(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ddo::compute_policy(&doc);
        let _ = ddo::algorithm_info(&doc);
        let _ = ddo::container_info(&doc);
        let _ = ddo::encrypted_files(&doc);
        let _ = ddo::main(&doc);
        let _ = ddo::file_urls(&bytes);
        let _ = ddo::file_urls(doc.to_string().as_bytes());
    }

    #[test]
    fn job_requests_parse_or_refuse(doc in json(), entrypoint in ".{0,120}") {
        let _ = serde_json::from_value::<brizo::jobs::JobRequest>(doc.clone());
        let _ = serde_json::from_value::<brizo::proof::receipt::SignedReceipt>(doc);
        if let Ok(argv) = workspace::command_line(&entrypoint) {
            prop_assert!(!argv.is_empty(), "an accepted entrypoint has a command: {:?}", entrypoint);
        }
    }

    /// Input names never climb out of /data/inputs, whatever a request names them.
    #[test]
    fn placed_inputs_stay_under_the_inputs_folder(names in prop::collection::vec(prop::option::of("[a-z._:-]{1,12}"), 0..8)) {
        let inputs: Vec<brizo::jobs::model::InputSource> =
            names.iter().map(|n| brizo::jobs::model::InputSource { url: "file:///x".into(), name: n.clone() }).collect();
        for placed in workspace::place_inputs(&inputs) {
            if workspace::valid_input_name(&placed.name) {
                prop_assert!(placed.target().starts_with("/data/inputs/"));
                prop_assert!(!placed.rel().split('/').any(|part| part == ".." || part == "."), "{}", placed.rel());
            }
        }
    }
}
