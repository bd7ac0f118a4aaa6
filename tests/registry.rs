//! The worker registry: registration and heartbeats, health, and a killed worker's jobs adopted at once.

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rill::{Health, HealthRule, Job, JobError, JobState, Worker};
use support::{TestRedis, eventually, spawn_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_beat_and_deregister() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("reg").unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "reg")
            .unwrap()
            .concurrency(3)
            .metadata("region", "eu-1")
            .capability("gpu")
            .capability("pdf"),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    let rule = HealthRule::default();
    eventually(Duration::from_secs(10), "registered", || async {
        q.workers(&rule).await.unwrap().len() == 1
    })
    .await;
    let (info, health) = q.workers(&rule).await.unwrap().remove(0);
    assert_eq!(info.id, w.consumer);
    assert_eq!(info.pid, std::process::id());
    assert_eq!((info.queue.as_str(), info.concurrency), ("reg", 3));
    assert_eq!(
        info.metadata.get("region").map(String::as_str),
        Some("eu-1")
    );
    assert_eq!(info.capabilities, vec!["gpu", "pdf"]);
    assert_eq!(info.status, "idle");
    assert_eq!(health, Health::Healthy);
    // Beats keep coming, on the stream too (readable with a consumer group).
    let first = info.last_beat_ms;
    eventually(Duration::from_secs(5), "a later beat", || async {
        q.worker(&w.consumer, &rule)
            .await
            .unwrap()
            .0
            .unwrap()
            .last_beat_ms
            > first
    })
    .await;
    q.enqueue_many(&[1, 2, 3]).await.unwrap();
    eventually(Duration::from_secs(10), "processed counted", || async {
        q.worker(&w.consumer, &rule)
            .await
            .unwrap()
            .0
            .unwrap()
            .processed
            == 3
    })
    .await;
    let mut c = redis.aconn().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&q.keys().heartbeats)
        .arg("monitor")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    let beats: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("monitor")
        .arg("m1")
        .arg("STREAMS")
        .arg(&q.keys().heartbeats)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let beats = rill::wire::parse_read_reply(beats).unwrap();
    assert!(beats.len() >= 2);
    w.stop().await;
    assert!(
        q.workers(&rule).await.unwrap().is_empty(),
        "deregistered on a graceful exit"
    );
    assert_eq!(
        q.worker("nobody", &rule).await.unwrap(),
        (None, Health::Unknown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_judged_crashed_and_its_jobs_run_elsewhere_within_5s() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("reg").unwrap();
    let ids = q.enqueue_many(&[60_000u64; 4]).await.unwrap();
    // The default lease (5 s): recovery here comes from the registry, not from lease expiry.
    let env = [
        ("RILL_LEASE_MS", "5000".to_owned()),
        ("RILL_CONCURRENCY", "4".to_owned()),
    ];
    let (mut child, crashed) = support::fault_worker(&redis, &ns, "reg", &env);
    let mut c = redis.aconn().await;
    let started_key = format!("{}:started", q.keys().ready);
    eventually(
        Duration::from_secs(20),
        "4 jobs running in the child",
        || {
            let mut c = c.clone();
            let k = started_key.clone();
            async move { c.hlen::<_, u64>(&k).await.unwrap() == 4 }
        },
    )
    .await;
    let rescuer = spawn_worker(
        Worker::new(client.clone(), "reg").unwrap(),
        |_job: Job<u64>| async { Ok::<_, JobError>(0u32) },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill();
    let killed = Instant::now();
    let rule = HealthRule::default();
    eventually(Duration::from_secs(10), "judged crashed", || async {
        let (_, h) = q.worker(&crashed, &rule).await.unwrap();
        h == Health::Crashed || h == Health::Unknown
    })
    .await;
    let judged = killed.elapsed();
    eventually(Duration::from_secs(10), "all 4 ran elsewhere", || async {
        rescuer.stats.snapshot().completed == 4
    })
    .await;
    let recovered = killed.elapsed();
    println!(
        "killed worker judged crashed after {judged:?}; its jobs completed elsewhere after {recovered:?}"
    );
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    for id in &ids {
        assert_eq!(q.state(id).await.unwrap(), JobState::Completed);
    }
    // Once its pending list is empty, the crashed worker leaves the group and the registry.
    eventually(Duration::from_secs(5), "crashed worker removed", || async {
        q.workers(&rule)
            .await
            .unwrap()
            .iter()
            .all(|(w, _)| w.id != crashed)
    })
    .await;
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&q.keys().ready)
        .arg("workers")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 1, "only the rescuer is left in the group");
    rescuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_registry_record_is_written_whole_again() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("reg").unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "reg").unwrap().concurrency(2),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    let rule = HealthRule::default();
    let whole = || async {
        let (info, _) = q.worker(&w.consumer, &rule).await.unwrap();
        info.is_some_and(|i| {
            !i.host.is_empty() && i.pid > 0 && i.queue == "reg" && i.concurrency == 2
        })
    };
    eventually(Duration::from_secs(10), "registered", whole).await;
    // As after Redis lost its data, or adopt.lua removed a worker it judged crashed.
    let mut c = redis.aconn().await;
    let _: () = c.del(q.keys().worker(&w.consumer)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "host, pid and queue written again",
        whole,
    )
    .await;
    w.stop().await;
}

/// An idle worker's beats write only its registry score (plain commands, no script): the record keeps the
/// `last_beat_ms` of its last written beat, and health reads the score, so it stays healthy past crash_after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_beats_with_its_registry_score_only() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("reg").unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "reg").unwrap(),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    let rule = HealthRule::default();
    eventually(Duration::from_secs(10), "registered", || async {
        q.worker(&w.consumer, &rule).await.unwrap().0.is_some()
    })
    .await;
    let mut c = redis.aconn().await;
    let written = || async {
        let mut c = redis.aconn().await;
        let ms: u64 = c
            .hget(q.keys().worker(&w.consumer), "last_beat_ms")
            .await
            .unwrap();
        ms
    };
    let record0 = written().await;
    let score0: f64 = c.zscore(&q.keys().workers, &w.consumer).await.unwrap();
    // Past crash_after (3 s): judged by the score, it is healthy.
    tokio::time::sleep(rule.crash_after + Duration::from_millis(500)).await;
    let score: f64 = c.zscore(&q.keys().workers, &w.consumer).await.unwrap();
    assert!(score > score0 + 2_000.0, "{score0} -> {score}");
    assert_eq!(written().await, record0, "the record was not written");
    let (info, health) = q.worker(&w.consumer, &rule).await.unwrap();
    assert_eq!(health, Health::Healthy);
    // The score (a later beat may have moved it since it was read above), not the record's older field.
    assert!(info.unwrap().last_beat_ms >= score as u64);
    w.stop().await;
}

#[tokio::test]
async fn entries_written_by_others_are_read_without_guessing() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("reg").unwrap();
    let keys = q.keys().clone();
    let mut c = redis.aconn().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let now = secs * 1000 + micros / 1000;
    // Listed with no record at all (the record expired, or another client wrote only the listing).
    let _: () = c.zadd(&keys.workers, "ghost", now).await.unwrap();
    // Degraded without saying why.
    let _: () = c.zadd(&keys.workers, "tired", now).await.unwrap();
    let record = [
        ("status", "degraded".to_owned()),
        ("last_beat_ms", now.to_string()),
    ];
    let _: () = c
        .hset_multiple(keys.worker("tired"), &record)
        .await
        .unwrap();
    let listed = q.workers(&HealthRule::default()).await.unwrap();
    let find = |id: &str| listed.iter().find(|(w, _)| w.id == id).cloned().unwrap();
    let (ghost, health) = find("ghost");
    assert!(ghost.host.is_empty() && ghost.pid == 0, "{ghost:?}");
    assert_eq!(health, Health::Unknown);
    let (_, health) = find("tired");
    assert_eq!(health, Health::Degraded("cannot end deliveries".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lists_the_jobs_it_runs_and_since_when() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("busy").unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let w = spawn_worker(
        Worker::new(client.clone(), "busy").unwrap().concurrency(2),
        move |_job: Job<u32>| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, JobError>(())
            }
        },
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for id in ["slow-1", "slow-2"] {
        q.enqueue_with(&1, rill::Enqueue::new().id(id))
            .await
            .unwrap();
    }
    let rule = HealthRule::default();
    eventually(
        Duration::from_secs(10),
        "both listed as running",
        || async {
            let info = q.worker(&w.consumer, &rule).await.unwrap().0;
            info.is_some_and(|i| i.running.len() == 2)
        },
    )
    .await;
    let info = q.worker(&w.consumer, &rule).await.unwrap().0.unwrap();
    let mut ids: Vec<&str> = info.running.iter().map(|r| r.job_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["slow-1", "slow-2"]);
    assert!(info.running.iter().all(|r| r.started_ms >= before));
    assert!(
        info.running[0].started_ms <= info.running[1].started_ms,
        "longest-running first"
    );
    gate.add_permits(2);
    eventually(
        Duration::from_secs(10),
        "nothing listed once they end",
        || async {
            let info = q.worker(&w.consumer, &rule).await.unwrap().0.unwrap();
            info.running.is_empty() && info.processed == 2
        },
    )
    .await;
}
