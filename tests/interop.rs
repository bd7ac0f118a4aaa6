//! Interoperability: a Python client written from SPEC.md alone enqueues with a plain XADD, reads results,
//! and works jobs through lua/ack.lua, side by side with the Rust library. That client speaks to one server, so
//! these tests run on one also when the suite runs on clusters.

mod support;

use std::process::Command;
use std::time::Duration;

use rill::{Job, JobError, JobState, Worker};
use serde::{Deserialize, Serialize};
use support::{TestRedis, eventually, spawn_worker};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Email {
    to: String,
    n: u32,
}

fn python(redis: &TestRedis, ns: &str, args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/foreign_client.py"
    );
    let out = Command::new(support::foreign::python())
        .arg(script)
        .arg(redis.url())
        .arg(ns)
        .arg("emails")
        .args(args)
        .output()
        .expect("the Python found above runs");
    assert!(
        out.status.success(),
        "foreign client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_and_a_rust_worker_interoperate() {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    let ids: Vec<String> = python(&redis, &ns, &["enqueue", "10"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(q.state(&ids[0]).await.unwrap(), JobState::Waiting);
    let w = spawn_worker(
        Worker::new(client.clone(), "emails").unwrap(),
        |job: Job<Email>| async move {
            assert_eq!(job.attempt(), 1);
            let n = job.data().n;
            Ok::<_, JobError>(serde_json::json!({ "sent": job.data().to, "n": n }))
        },
    );
    eventually(Duration::from_secs(20), "10 foreign jobs", || async {
        w.stats.snapshot().completed == 10
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.malformed, 0);
    // Python reads the results back from SPEC.md's job record layout.
    let mut args = vec!["results"];
    args.extend(ids.iter().map(String::as_str));
    let lines = python(&redis, &ns, &args);
    let results: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["state"], "completed");
        assert_eq!(r["result"]["sent"], format!("py{i}@example.com"));
        assert_eq!(r["result"]["n"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_completes_rust_jobs_through_the_scripts() {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    let mut ids = q
        .enqueue_many(
            &(0..4)
                .map(|n| Email {
                    to: format!("rs{n}"),
                    n,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    ids.push(
        q.enqueue_with(
            &Email {
                to: "custom".into(),
                n: 4,
            },
            rill::Enqueue::new().id("custom-4"),
        )
        .await
        .unwrap(),
    );
    assert_eq!(python(&redis, &ns, &["work", "5"]).trim(), "5");
    #[derive(Deserialize)]
    struct Done {
        by: String,
        n: u32,
    }
    for (n, id) in ids.iter().enumerate() {
        let info = q.job(id).await.unwrap();
        assert_eq!(info.state, JobState::Completed, "{id}");
        let done: Done = info.result().unwrap().unwrap();
        assert_eq!((done.by.as_str(), done.n), ("python", n as u32));
    }
    assert_eq!(
        q.counts().await.unwrap().waiting + q.counts().await.unwrap().active,
        0
    );
}

/// The conformance vectors (tests/vectors/) from a Python client written from SPEC.md: key names, refused names,
/// CBOR payloads and script calls, the same files `tests/vectors.rs` runs for the Rust library.
#[test]
fn a_python_client_passes_the_conformance_vectors() {
    let redis = TestRedis::start_single();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/vectors.py");
    let out = Command::new(support::foreign::python())
        .arg(script)
        .arg(redis.url())
        .arg(support::namespace())
        .output()
        .expect("the Python found above runs");
    assert!(
        out.status.success(),
        "the Python vectors run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vectors ok");
}
