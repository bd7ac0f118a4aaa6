//! The wire decoder under arbitrary input: it returns a value or an error, never panics; and every valid job
//! entry round-trips.

use proptest::prelude::*;
use rill::wire::{self, RawEntry};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    to: String,
    n: u32,
    tags: Vec<String>,
    blob: Option<Vec<u8>>,
}

fn field_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec!["v", "payload", "id", "attempts", "max_attempts", "enqueued_ms", "last_error", "x-trace"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "1",
            "0",
            "-1",
            "2",
            "18446744073709551616",
            "1e3",
            "",
            " ",
            "nan",
            "abc"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        (0u64..u64::MAX).prop_map(|n| n.to_string().into_bytes()),
    ]
}

fn job() -> impl Strategy<Value = Job> {
    (
        ".{0,20}",
        any::<u32>(),
        prop::collection::vec(".{0,8}", 0..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..32)),
    )
        .prop_map(|(to, n, tags, blob)| Job { to, n, tags, blob })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_field_maps_never_panic(
        id_ms in 0u64..u64::MAX,
        id_seq in 0u64..1000,
        fields in prop::collection::vec((field_name(), field_value()), 0..10),
    ) {
        let raw = RawEntry { id: format!("{id_ms}-{id_seq}"), fields: Some(fields) };
        if let Ok(env) = wire::parse_entry(raw, 1024) {
            // Whatever is accepted obeys the spec's limits.
            prop_assert!(env.payload.len() <= 1024 && !env.payload.is_empty());
            prop_assert!(env.attempts <= wire::MAX_ATTEMPTS_LIMIT);
            prop_assert!(env.max_attempts.is_none_or(|m| (1..=wire::MAX_ATTEMPTS_LIMIT).contains(&m)));
            prop_assert!(rill::keys::validate_job_id(&env.job_id).is_ok() || env.job_id == env.entry_id);
            let _ = wire::decode::<Job>(&env.payload);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_payload_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::decode::<Job>(&bytes);
        let _ = wire::decode::<ciborium::Value>(&bytes);
        let _ = wire::decode::<String>(&bytes);
    }

    #[test]
    fn valid_entries_round_trip(
        data in job(),
        id in prop::option::of("[a-zA-Z0-9:{}._-]{1,40}"),
        attempts in prop::option::of(0u32..=wire::MAX_ATTEMPTS_LIMIT),
        max in prop::option::of(1u32..=wire::MAX_ATTEMPTS_LIMIT),
        enqueued in prop::option::of(0u64..16_725_225_600_000),
        last_error in prop::option::of(".{0,40}"),
    ) {
        let payload = wire::encode(&data).unwrap();
        let mut fields = vec![(b"v".to_vec(), b"1".to_vec()), (b"payload".to_vec(), payload.clone())];
        let mut push = |k: &str, v: Option<String>| if let Some(v) = v { fields.push((k.as_bytes().to_vec(), v.into_bytes())) };
        push("id", id.clone());
        push("attempts", attempts.map(|a| a.to_string()));
        push("max_attempts", max.map(|a| a.to_string()));
        push("enqueued_ms", enqueued.map(|a| a.to_string()));
        push("last_error", last_error.clone());
        let env = wire::parse_entry(RawEntry { id: "1700000000000-7".into(), fields: Some(fields) }, 1 << 20).unwrap();
        prop_assert_eq!(&env.job_id, id.as_deref().unwrap_or("1700000000000-7"));
        prop_assert_eq!(env.attempts, attempts.unwrap_or(0));
        prop_assert_eq!(env.max_attempts, max);
        prop_assert_eq!(env.enqueued_ms, enqueued.unwrap_or(1_700_000_000_000));
        prop_assert_eq!(env.last_error, last_error);
        prop_assert_eq!(wire::decode::<Job>(&env.payload).unwrap(), data);
    }
}
