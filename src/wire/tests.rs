//! Unit tests of the wire format: entries, fields, CBOR, replies.
use super::*;

fn raw(fields: &[(&str, &[u8])]) -> RawEntry {
    RawEntry {
        id: "1700000000000-3".into(),
        fields: Some(
            fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        ),
    }
}

#[test]
fn minimal_entry_takes_defaults_from_the_entry_id() {
    let p = encode(&"hi").unwrap();
    let e = parse_entry(raw(&[("v", b"1"), ("payload", &p)]), 1024).unwrap();
    assert_eq!(e.job_id, "1700000000000-3");
    assert_eq!(e.attempts, 0);
    assert_eq!(e.max_attempts, None);
    assert_eq!(e.enqueued_ms, 1_700_000_000_000);
    assert_eq!(decode::<String>(&e.payload).unwrap(), "hi");
}

#[test]
fn full_entry() {
    let e = parse_entry(
        raw(&[
            ("v", b"1"),
            ("payload", b"\xf6"),
            ("id", b"order-42"),
            ("attempts", b"2"),
            ("max_attempts", b"5"),
            ("timeout_ms", b"30000"),
            ("enqueued_ms", b"1699999999999"),
            ("last_error", b"boom"),
            ("x-trace", b"00-abc"),
        ]),
        1024,
    )
    .unwrap();
    assert_eq!(e.job_id, "order-42");
    assert_eq!((e.attempts, e.max_attempts), (2, Some(5)));
    assert_eq!(e.timeout_ms, Some(30_000));
    assert_eq!(e.enqueued_ms, 1_699_999_999_999);
    assert_eq!(e.last_error.as_deref(), Some("boom"));
}

#[test]
fn refusals_name_their_reason() {
    type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a str);
    let cases: &[Case<'_>] = &[
        (&[("payload", b"\xf6")], "missing field `v`"),
        (&[("v", b"1")], "missing field `payload`"),
        (
            &[("v", b"2"), ("payload", b"\xf6")],
            "unsupported format version",
        ),
        (&[("v", b"1"), ("payload", b"")], "empty"),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("colour", b"red")],
            "unknown field",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("v", b"1")],
            "appears twice",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("attempts", b"-1")],
            "non-negative",
        ),
        (
            &[
                ("v", b"1"),
                ("payload", b"\xf6"),
                ("attempts", b"99999999999"),
            ],
            "out of range",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("max_attempts", b"0")],
            "at least 1",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("timeout_ms", b"0")],
            "`timeout_ms` must be at least 1",
        ),
        (
            &[
                ("v", b"1"),
                ("payload", b"\xf6"),
                ("timeout_ms", b"99999999999999"),
            ],
            "out of range",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("enqueued_ms", b"1e9")],
            "decimal",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("id", b"a b")],
            "field `id`",
        ),
        (
            &[("v", b"1"), ("payload", b"\xf6"), ("id", b"\xff")],
            "not valid UTF-8",
        ),
    ];
    for (fields, want) in cases {
        let err = parse_entry(raw(fields), 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::Malformed);
        assert!(err.detail.contains(want), "{fields:?}: {}", err.detail);
    }
    let big = vec![0u8; 2000];
    let err = parse_entry(raw(&[("v", b"1"), ("payload", &big)]), 1024).unwrap_err();
    assert_eq!(err.reason, DeadReason::TooLarge);
    let gone = RawEntry {
        id: "1-1".into(),
        fields: None,
    };
    assert!(
        parse_entry(gone, 10)
            .unwrap_err()
            .detail
            .contains("deleted")
    );
}

#[test]
fn dead_reasons_round_trip() {
    for r in [
        DeadReason::Failed,
        DeadReason::Exhausted,
        DeadReason::Malformed,
        DeadReason::TooLarge,
    ] {
        assert_eq!(DeadReason::parse(r.as_str()), Some(r));
    }
    assert_eq!(DeadReason::parse("nope"), None);
}

#[test]
fn read_reply_shapes() {
    use redis::Value as V;
    let s = |x: &str| V::BulkString(x.as_bytes().to_vec());
    let reply = V::Array(vec![V::Array(vec![
        s("k"),
        V::Array(vec![
            V::Array(vec![s("1-0"), V::Array(vec![s("v"), s("1")])]),
            V::Array(vec![s("2-0"), V::Nil]),
        ]),
    ])]);
    let got = parse_read_reply(reply).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].fields.as_ref().unwrap()[0].0, b"v");
    assert!(got[1].fields.is_none());
    assert!(parse_read_reply(V::Nil).unwrap().is_empty());
    assert!(parse_read_reply(V::Int(3)).is_err());
    assert!(
        parse_entries(V::Array(vec![V::Array(vec![
            s("1-0"),
            V::Array(vec![s("v")])
        ])]))
        .is_err()
    );
}

#[test]
fn every_malformed_read_reply_is_a_protocol_error() {
    use redis::Value as V;
    let s = |x: &str| V::BulkString(x.as_bytes().to_vec());
    let detail = |r: Result<Vec<RawEntry>>| match r {
        Err(Error::Protocol { detail, .. }) => detail,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    let one = |entry: V| V::Array(vec![entry]);
    assert_eq!(detail(parse_entries(V::Int(1))), "not an array");
    assert_eq!(
        detail(parse_entries(one(V::Int(1)))),
        "entry is not an array"
    );
    assert_eq!(
        detail(parse_entries(one(V::Array(vec![s("1-0")])))),
        "entry is not [id, fields]"
    );
    assert_eq!(
        detail(parse_entries(one(V::Array(vec![V::Int(1), V::Nil])))),
        "entry id is not a string"
    );
    assert_eq!(
        detail(parse_entries(one(V::Array(vec![s("1-0"), V::Int(1)])))),
        "fields are neither an array nor nil"
    );
    assert_eq!(
        detail(parse_read_reply(V::Array(vec![V::Int(1)]))),
        "stream is not [key, entries]"
    );
    // RESP3 answers with a map of stream name to entries, and simple strings are strings.
    let map = V::Map(vec![(
        s("k"),
        one(V::Array(vec![
            V::SimpleString("1-0".into()),
            V::Array(vec![V::SimpleString("v".into()), s("1")]),
        ])),
    )]);
    let got = parse_read_reply(map).unwrap();
    assert_eq!(got[0].id, "1-0");
    assert_eq!(
        got[0].fields.as_ref().unwrap()[0],
        (b"v".to_vec(), b"1".to_vec())
    );
    assert_eq!(bytes(&V::SimpleString("x".into())), Some(&b"x"[..]));
    assert_eq!(bytes(&V::Nil), None);
}

#[test]
fn long_bad_values_are_cut_in_the_reason() {
    let long = "9".repeat(30);
    let p = encode(&1).unwrap();
    let fields = [
        ("v", &b"1"[..]),
        ("payload", &p),
        ("attempts", long.as_bytes()),
    ];
    let m = parse_entry(raw(&fields), 1024).unwrap_err();
    assert!(
        m.detail.contains("must be a non-negative decimal"),
        "{}",
        m.detail
    );
    assert_eq!(truncate("héllo", 2), "hé");
    assert_eq!(truncate("hi", 5), "hi");
}

#[test]
fn the_job_id_an_entry_names_is_read_even_when_the_rest_is_malformed() {
    assert_eq!(
        job_id_of(&raw(&[("id", b"order-42"), ("payload", b"\xff")])).as_deref(),
        Some("order-42")
    );
    // No id, an invalid one, a repeated one, or a deleted entry: the entry id stands in.
    assert_eq!(job_id_of(&raw(&[("v", b"1")])), None);
    assert_eq!(job_id_of(&raw(&[("id", b"has space")])), None);
    assert_eq!(job_id_of(&raw(&[("id", b"\xff\xfe")])), None);
    assert_eq!(job_id_of(&raw(&[("id", b"a"), ("id", b"b")])), None);
    let gone = RawEntry {
        id: "1-0".into(),
        fields: None,
    };
    assert_eq!(job_id_of(&gone), None);
}

#[test]
fn decode_errors_read_as_sentences() {
    let text = |bytes: &[u8]| decode::<u32>(bytes).unwrap_err().to_string();
    let wrong_type = text(&encode(&"seven").unwrap());
    assert!(
        wrong_type.starts_with("cannot decode CBOR: ") && !wrong_type.contains("Semantic("),
        "{wrong_type}"
    );
    assert_eq!(
        text(&[0x1a, 0x00]),
        "cannot decode CBOR: the value ends early"
    );
    for bad in [&[0xff][..], &[0x1c]] {
        let t = text(bad);
        assert!(!t.contains("Syntax(") && !t.contains("Semantic("), "{t}");
    }
}
