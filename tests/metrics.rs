//! Prometheus metrics (feature `metrics`): a worker's outcomes and timings, and queue depths read for a scrape.

mod support;

use std::time::Duration;

use rill::metrics::Metrics;
use rill::{Job, JobError, Worker};
use support::{TestRedis, eventually, spawn_worker};

/// The value of the sample line that starts with `series` (name and labels), from the text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_outcomes_timings_and_the_queue_depth_are_exported() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("m").unwrap();
    let metrics = Metrics::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let w = spawn_worker(
        Worker::new(client.clone(), "m")
            .unwrap()
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .block(Duration::from_millis(200))
            .metrics(&metrics),
        |job: Job<u32>| async move {
            match (*job.data(), job.attempt()) {
                (1, 1) => Err(JobError::retry("once")),
                (2, _) => Err(JobError::permanent("never")),
                _ => Ok(()),
            }
        },
    );
    q.enqueue_many(&[0, 0, 0, 1, 2]).await.unwrap();
    eventually(Duration::from_secs(15), "every job ended", || async {
        let r = w.stats.snapshot();
        r.completed == 4 && r.dead == 1
    })
    .await;
    metrics
        .observe_queues(std::slice::from_ref(&q))
        .await
        .unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let jobs = |outcome: &str| {
        sample(
            &text,
            &format!("rill_jobs_total{{queue=\"m\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(jobs("completed"), Some(4.0), "{text}");
    assert_eq!(jobs("retried"), Some(1.0), "{text}");
    assert_eq!(jobs("dead"), Some(1.0), "{text}");
    assert_eq!(jobs("stale"), Some(0.0), "{text}");
    // Six handler runs: three, the retried job twice, the dead one once.
    assert_eq!(
        sample(&text, "rill_job_duration_seconds_count{queue=\"m\"}"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rill_job_wait_seconds_count{queue=\"m\"}"),
        Some(6.0),
        "{text}"
    );
    assert!(
        text.contains("# UNIT rill_job_duration_seconds seconds"),
        "{text}"
    );
    // Redis calls timed: an ack call at least, the retry's and the death's fail calls, heartbeats.
    let calls = |call: &str| {
        let series = format!("rill_redis_call_seconds_count{{queue=\"m\",call=\"{call}\"}}");
        sample(&text, &series).unwrap_or(0.0)
    };
    assert!(calls("ack") >= 1.0, "{text}");
    assert_eq!(calls("fail"), 2.0, "{text}");
    assert!(calls("heartbeat") >= 1.0, "{text}");
    assert_eq!(calls("adopt"), 0.0, "{text}");
    let depth = |state: &str| {
        sample(
            &text,
            &format!("rill_queue_jobs{{queue=\"m\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(
        (depth("waiting"), depth("dead")),
        (Some(0.0), Some(1.0)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rill_queue_oldest_waiting_seconds{queue=\"m\"}"),
        Some(0.0)
    );
    // Depth needs no worker: a waiting job shows up, with its age.
    w.stop().await;
    q.enqueue(&0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    metrics
        .observe_queues(std::slice::from_ref(&q))
        .await
        .unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(
        sample(&text, "rill_queue_jobs{queue=\"m\",state=\"waiting\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "rill_queue_oldest_waiting_seconds{queue=\"m\"}").unwrap() > 0.0,
        "{text}"
    );
    dashboard_queries_only(&text);
}

/// Every `rill_*` name the example Grafana dashboard queries is a family of `text` (a scrape in which every
/// family has samples).
fn dashboard_queries_only(text: &str) {
    // Families (with their `_total`, `_bucket`, ... sample names) as the registry declares them.
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("rill_") {
                    assert!(
                        families.iter().any(|f| word.starts_with(f)),
                        "{word} (in {expr:?}) is not among {families:?}"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 6, "{queried}");
}
