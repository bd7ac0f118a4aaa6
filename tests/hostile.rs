//! Hostile and malformed input: a corpus of entries written with raw XADD (tests/vectors/entries-refused.jsonl), each of
//! which must be dead-lettered with its precise reason while the well-formed jobs around it run, and names that
//! try to escape the key layout, refused before any I/O.

mod support;

use std::time::Duration;

use rill::{Job, JobError, JobState, Worker};
use serde::{Deserialize, Serialize};
use support::{TestRedis, eventually, spawn_worker};

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    n: u32,
}

#[derive(Deserialize)]
struct Case {
    note: String,
    reason: String,
    expect: String,
    fields: Vec<(String, String)>,
}

/// `hex:..` is bytes, `repeat:N:HH` is N copies of byte HH, anything else is the text itself.
fn bytes(v: &str) -> Vec<u8> {
    if let Some(hex) = v.strip_prefix("hex:") {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    } else if let Some(rep) = v.strip_prefix("repeat:") {
        let (n, b) = rep.split_once(':').unwrap();
        vec![u8::from_str_radix(b, 16).unwrap(); n.parse().unwrap()]
    } else {
        v.as_bytes().to_vec()
    }
}

fn corpus() -> Vec<Case> {
    let text = include_str!("vectors/entries-refused.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_entry_is_dead_lettered_with_its_reason() {
    let cases = corpus();
    assert!(cases.len() >= 50, "the corpus has {} entries", cases.len());
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("inbox").unwrap();
    let mut c = redis.aconn().await;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        good.push(
            q.enqueue(&Email {
                to: format!("before-{i}"),
                n: i as u32,
            })
            .await
            .unwrap(),
        );
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&q.keys().ready).arg("*");
        for (k, v) in &case.fields {
            cmd.arg(bytes(k)).arg(bytes(v));
        }
        bad.push(cmd.query_async::<String>(&mut c).await.unwrap());
    }
    // Valid entries a foreign producer may write: extension fields, and two jobs sharing one id.
    for extra in [
        vec![
            ("x-trace", b"00-abc-01".to_vec()),
            ("x-bin", vec![0, 255, 7]),
        ],
        vec![("id", b"same-id".to_vec())],
        vec![
            ("id", b"same-id".to_vec()),
            ("last_error", b"\xff not utf-8 \xfe".to_vec()),
        ],
    ] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&q.keys().ready)
            .arg("*")
            .arg("v")
            .arg("1")
            .arg("payload");
        cmd.arg(
            rill::wire::encode(&Email {
                to: "extra".into(),
                n: 0,
            })
            .unwrap(),
        );
        for (k, v) in extra {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut c).await.unwrap();
    }
    let w = spawn_worker(
        Worker::new(client.clone(), "inbox").unwrap().concurrency(8),
        |job: Job<Email>| async move { Ok::<_, JobError>(job.data().n) },
    );
    let want_good = good.len() as u64 + 3;
    let want_bad = bad.len() as u64;
    eventually(Duration::from_secs(30), "all jobs handled", || async {
        let s = w.stats.snapshot();
        s.completed == want_good && s.malformed == want_bad
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.dead, want_bad);
    let dead = q.dead_letters(None, 1000).await.unwrap();
    assert_eq!(dead.len(), cases.len());
    for (case, id) in cases.iter().zip(&bad) {
        let d = dead
            .iter()
            .find(|d| &d.job_id == id)
            .unwrap_or_else(|| panic!("{}: not dead-lettered", case.note));
        assert_eq!(d.reason, case.reason, "{}: {}", case.note, d.error);
        assert!(
            d.error.contains(&case.expect),
            "{}: error {:?} lacks {:?}",
            case.note,
            d.error,
            case.expect
        );
        assert_eq!(q.state(id).await.unwrap(), JobState::Dead, "{}", case.note);
        // The dead letter keeps the original fields, byte for byte.
        let original: Vec<(Vec<u8>, Vec<u8>)> = case
            .fields
            .iter()
            .map(|(k, v)| (bytes(k), bytes(v)))
            .collect();
        assert_eq!(d.fields, original, "{}", case.note);
    }
    for (i, id) in good.iter().enumerate() {
        assert_eq!(q.result::<u32>(id).await.unwrap(), Some(i as u32));
    }
}

#[test]
fn names_that_escape_the_key_layout_are_refused_before_io() {
    // Nothing listens on port 1: any I/O would fail differently.
    let client = rill::Client::new("redis://127.0.0.1:1").unwrap();
    let long = "q".repeat(129);
    for bad in [
        "",
        "a{b",
        "}",
        "{q}",
        "a:b",
        "a b",
        " ",
        "\t",
        "tab\tq",
        "new\nline",
        "é",
        "a/b",
        long.as_str(),
    ] {
        assert!(
            matches!(
                client.queue::<u8>(bad),
                Err(rill::Error::InvalidName { .. })
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            Worker::new(client.clone(), bad),
            Err(rill::Error::InvalidName { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_attempts_are_used_up_is_dead_lettered_without_running() {
    let redis = support::TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("spent").unwrap();
    // Written by another client: attempts already at the maximum.
    let mut c = redis.aconn().await;
    let payload = rill::wire::encode(&7u32).unwrap();
    let id: String = redis::cmd("XADD")
        .arg(&q.keys().ready)
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(payload)
        .arg("attempts")
        .arg("3")
        .arg("max_attempts")
        .arg("3")
        .query_async(&mut c)
        .await
        .unwrap();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = ran.clone();
    let w = support::spawn_worker(
        rill::Worker::new(client.clone(), "spent").unwrap(),
        move |_job: rill::Job<u32>| {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(()) }
        },
    );
    support::eventually(
        std::time::Duration::from_secs(10),
        "dead-lettered",
        || async { q.counts().await.unwrap().dead == 1 },
    )
    .await;
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "it must not run"
    );
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(
        (dead[0].job_id.as_str(), dead[0].reason.as_str()),
        (id.as_str(), "exhausted")
    );
    assert!(
        dead[0].error.contains("attempt 4 of 3"),
        "{}",
        dead[0].error
    );
    w.stop().await;
}
