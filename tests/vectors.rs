//! Conformance vectors (`tests/vectors/`): the same JSON files any client of rill runs to check itself against
//! SPEC.md. Here the Rust library runs them: key names and refused names, CBOR payloads, and script calls on seeded
//! state with the reply and the state they must leave. (The refused entries, `entries-refused.jsonl`, run in
//! `tests/hostile.rs`; the Python client written from SPEC.md runs these files too, in `tests/interop.rs`.)

mod support;

use serde_json::{Value as Json, json};

use rill::keys::{QueueKeys, validate_job_id, validate_name};
use support::TestRedis;

fn vectors(name: &str) -> Json {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The key a vector's field name stands for.
fn key(k: &QueueKeys, name: &str) -> String {
    match name {
        "ready" => k.ready.clone(),
        "delayed" => k.delayed.clone(),
        "scheduled" => k.scheduled.clone(),
        "index" => k.index.clone(),
        "dead" => k.dead.clone(),
        "dead_index" => k.dead_index.clone(),
        "events" => k.events.clone(),
        "signals" => k.signals.clone(),
        "outcomes" => k.outcomes.clone(),
        "paused" => k.paused.clone(),
        "parked" => k.parked.clone(),
        "workers" => k.workers.clone(),
        "heartbeats" => k.heartbeats.clone(),
        "schedules" => k.schedules.clone(),
        "limit" => k.limit.clone(),
        "limit_starts" => k.limit_starts.clone(),
        "priorities" => k.priorities.clone(),
        "held" => k.held.clone(),
        "key_ring" => k.key_ring.clone(),
        "key_queued" => k.key_queued.clone(),
        "key_running" => k.key_running.clone(),
        "key_starts" => k.key_starts.clone(),
        "queues" => k.queues.clone(),
        other => match other.split_once(' ') {
            Some(("job", id)) => k.job(id),
            Some(("checkpoints", id)) => k.checkpoints(id),
            Some(("dedup", id)) => k.dedup(id),
            Some(("worker", id)) => k.worker(id),
            Some(("schedule", id)) => k.schedule(id),
            Some(("level", p)) => k.level(p.parse().expect("a level number")).to_owned(),
            _ => panic!("no key named {other:?}"),
        },
    }
}

#[test]
fn key_names_and_refused_names_match_the_vectors() {
    let v = vectors("keys.json");
    for q in v["queues"].as_array().unwrap() {
        let k = QueueKeys::new(
            q["namespace"].as_str().unwrap(),
            q["queue"].as_str().unwrap(),
        )
        .unwrap();
        for section in ["keys", "per_name"] {
            for (name, want) in q[section].as_object().unwrap() {
                assert_eq!(key(&k, name), want.as_str().unwrap(), "{name}");
            }
        }
    }
    for r in v["refused_names"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        assert!(
            validate_name(name).is_err(),
            "{name:?} ({}) is refused",
            r["why"]
        );
        assert!(QueueKeys::new("rill", name).is_err());
    }
    for r in v["refused_job_ids"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        assert!(
            validate_job_id(id).is_err(),
            "{id:?} ({}) is refused",
            r["why"]
        );
    }
    for id in v["accepted_job_ids"].as_array().unwrap() {
        validate_job_id(id.as_str().unwrap()).unwrap();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn payloads_encode_and_decode_as_the_vectors_say() {
    let v = vectors("payloads.json");
    for case in v["payloads"].as_array().unwrap() {
        let value = &case["json"];
        let bytes = unhex(case["cbor_hex"].as_str().unwrap());
        // What rill writes, byte for byte; and what it reads back.
        assert_eq!(
            hex(&rill::wire::encode(value).unwrap()),
            case["cbor_hex"],
            "{}",
            case["note"]
        );
        let back: Json = rill::wire::decode(&bytes).unwrap();
        assert_eq!(&back, value, "{}", case["note"]);
    }
    for case in v["other_encodings"].as_array().unwrap() {
        let back: Json = rill::wire::decode(&unhex(case["cbor_hex"].as_str().unwrap())).unwrap();
        assert_eq!(back, case["json"], "{}", case["note"]);
    }
}

/// A vector's text as the bytes it stands for: `hex:..` is bytes, `{name}` is a key of the case's queue.
fn arg(k: &QueueKeys, s: &str) -> Vec<u8> {
    if let Some(h) = s.strip_prefix("hex:") {
        return unhex(h);
    }
    match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(name) => key(k, name).into_bytes(),
        None => s.as_bytes().to_vec(),
    }
}

/// A reply as a vector writes it: integers as numbers, nil as null, text as text, other bytes as `hex:..`.
fn to_json(v: &redis::Value) -> Json {
    match v {
        redis::Value::Nil => Json::Null,
        redis::Value::Int(n) => json!(n),
        redis::Value::Okay => json!("OK"),
        redis::Value::SimpleString(s) => json!(s),
        redis::Value::BulkString(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!(format!("hex:{}", hex(b))),
        },
        redis::Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Whether `got` is what `want` says: `"<id>"` stands for any stream entry id, `"<any>"` for anything, and
/// `{name}` for that key's name.
fn matches(k: &QueueKeys, want: &Json, got: &Json) -> bool {
    match (want, got) {
        (Json::String(w), _) if w == "<any>" => true,
        (Json::String(w), Json::String(g)) if w == "<id>" => {
            g.split_once('-').is_some_and(|(a, b)| {
                a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
            })
        }
        (Json::String(w), Json::String(g)) => {
            w == g || (w.starts_with('{') && arg(k, w) == g.as_bytes())
        }
        (Json::Array(w), Json::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| matches(k, w, g))
        }
        (w, g) => w == g,
    }
}

fn command(k: &QueueKeys, words: &Json) -> redis::Cmd {
    let words = words.as_array().unwrap();
    let mut cmd = redis::cmd(words[0].as_str().unwrap());
    for w in &words[1..] {
        cmd.arg(arg(k, w.as_str().unwrap()));
    }
    cmd
}

#[tokio::test]
async fn script_calls_return_and_leave_what_the_vectors_say() {
    let v = vectors("scripts.json");
    let redis = TestRedis::start();
    let mut conn = redis.aconn().await;
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let name = format!("{} ({})", case["script"].as_str().unwrap(), case["note"]);
        let k = QueueKeys::new(&support::namespace(), &format!("v{i}")).unwrap();
        for words in case["seed"].as_array().unwrap() {
            let _: redis::Value = command(&k, words)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: seed {words}: {e}"));
        }
        let path = format!(
            "{}/lua/{}",
            env!("CARGO_MANIFEST_DIR"),
            case["script"].as_str().unwrap()
        );
        let source = std::fs::read_to_string(path).unwrap();
        let keys = case["keys"].as_array().unwrap();
        let mut eval = redis::cmd("EVAL");
        eval.arg(source).arg(keys.len());
        for w in keys.iter().chain(case["argv"].as_array().unwrap()) {
            eval.arg(arg(&k, w.as_str().unwrap()));
        }
        let reply: redis::Value = eval
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = to_json(&reply);
        assert!(
            matches(&k, &case["reply"], &got),
            "{name}: replied {got}, the vector says {}",
            case["reply"]
        );
        for check in case["state"].as_array().unwrap() {
            let r: redis::Value = command(&k, &check[0])
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", check[0]));
            let got = to_json(&r);
            assert!(
                matches(&k, &check[1], &got),
                "{name}: {} gave {got}, the vector says {}",
                check[0],
                check[1]
            );
        }
    }
}
