//! The job lifecycle end to end: producers, workers and Redis, each behaviour of the core queue.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rill::{Enqueue, Job, JobError, JobState, Worker};
use serde::{Deserialize, Serialize};
use support::{TestRedis, eventually, spawn_worker};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Email {
    to: String,
    n: u32,
}

fn email(n: u32) -> Email {
    Email {
        to: format!("user{n}@example.com"),
        n,
    }
}

const T: Duration = Duration::from_secs(20);

fn fast(worker: Worker) -> Worker {
    worker
        .lease(Duration::from_millis(600))
        .reclaim_interval(Duration::from_millis(100))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .block(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_millis(300))
        .keep_completed(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_once_results_are_kept_and_state_is_tracked() {
    support::trace();
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(q.enqueue(&email(n)).await.unwrap());
    }
    ids.extend(
        q.enqueue_many(&(50..200).map(email).collect::<Vec<_>>())
            .await
            .unwrap(),
    );
    assert_eq!(q.state(&ids[0]).await.unwrap(), JobState::Waiting);
    assert_eq!(q.counts().await.unwrap().waiting, 200);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()).concurrency(8),
        move |job: Job<Email>| {
            let seen = s2.clone();
            async move {
                assert_eq!(job.attempt(), 1);
                assert!(job.enqueued_at() <= std::time::SystemTime::now());
                seen.lock().unwrap().push(job.id().to_owned());
                Ok::<_, JobError>(format!("sent to {}", job.data().to))
            }
        },
    );
    eventually(T, "all 200 completed", || async {
        w.stats.snapshot().completed == 200
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.completed, 200);
    assert_eq!(report.stale, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "each job ran exactly once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 200);
    let info = q.job(&ids[7]).await.unwrap();
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(
        info.result::<String>().unwrap().unwrap(),
        "sent to user7@example.com"
    );
    assert_eq!(
        q.result::<String>(&ids[150]).await.unwrap().unwrap(),
        "sent to user150@example.com"
    );
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.delayed, counts.dead),
        (0, 0, 0, 0)
    );
    // Acked entries are deleted: the ready stream is empty. (On Redis 8.2, where small batches are acked with
    // XACKDEL and nothing is trimmed, a finished entry an earlier trim left behind a then-running job may stay
    // until the next trim-path ack: SPEC, ack.lua. It is finished: not pending, and delivered.)
    let mut c = redis.aconn().await;
    if support::server_version(&mut c).await.has_xackdel() {
        // (`counts.waiting` above is 0: nothing left there is undelivered either.)
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&q.keys().ready)
            .arg(rill::keys::GROUP)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(
            matches!(&pending, redis::Value::Array(a) if a.first() == Some(&redis::Value::Int(0))),
            "{pending:?}"
        );
    } else {
        let len: u64 = c.xlen(&q.keys().ready).await.unwrap();
        assert_eq!(len, 0);
    }
    // Events: completed events list every job once (one event per ack batch).
    let events = q.events(None, 1000).await.unwrap();
    let listed: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "completed")
        .flat_map(|e| {
            e.fields["ids"]
                .split(' ')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(listed.len(), 200);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    // The worker left the group.
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&q.keys().ready)
        .arg("workers")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
    assert_eq!(q.state("no-such-job").await.unwrap(), JobState::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_by_id_and_key() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let a = q
        .enqueue_with(&email(1), Enqueue::new().id("order-42"))
        .await
        .unwrap();
    let b = q
        .enqueue_with(&email(2), Enqueue::new().id("order-42"))
        .await
        .unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("order-42", "order-42"));
    let k1 = q
        .enqueue_with(&email(3), Enqueue::new().dedup_key("idem-1"))
        .await
        .unwrap();
    let k2 = q
        .enqueue_with(&email(4), Enqueue::new().dedup_key("idem-1"))
        .await
        .unwrap();
    assert_eq!(k1, k2);
    assert_ne!(k1, "idem-1");
    assert_eq!(q.counts().await.unwrap().waiting, 2);
    assert_eq!(q.state("order-42").await.unwrap(), JobState::Waiting);
    // A short TTL lets the key be used again once the first job is done.
    let t1 = q
        .enqueue_with(
            &email(5),
            Enqueue::new()
                .dedup_key("short")
                .dedup_ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let t2 = q
        .enqueue_with(&email(6), Enqueue::new().dedup_key("short"))
        .await
        .unwrap();
    assert_ne!(t1, t2);
    let ran = Arc::new(AtomicU32::new(0));
    let r2 = ran.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let ran = r2.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(job.data().n)
            }
        },
    );
    eventually(T, "4 jobs", || async { w.stats.snapshot().completed == 4 }).await;
    w.stop().await;
    assert_eq!(ran.load(Ordering::SeqCst), 4);
    assert_eq!(q.result::<u32>("order-42").await.unwrap(), Some(1));
    assert_eq!(q.state("order-42").await.unwrap(), JobState::Completed);
    // Within the dedup TTL even a finished id is not enqueued again.
    assert_eq!(
        q.enqueue_with(&email(9), Enqueue::new().id("order-42"))
            .await
            .unwrap(),
        "order-42"
    );
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    // Bad ids never reach Redis.
    assert!(matches!(
        q.enqueue_with(&email(1), Enqueue::new().id("has space"))
            .await,
        Err(rill::Error::InvalidJobId { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_wait_for_their_time() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let enqueued = Instant::now();
    let id = q
        .enqueue_with(&email(1), Enqueue::new().delay(Duration::from_millis(700)))
        .await
        .unwrap();
    let at = q
        .enqueue_with(
            &email(2),
            Enqueue::new().run_at(std::time::SystemTime::now() + Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(q.state(&id).await.unwrap(), JobState::Delayed);
    assert_eq!(q.counts().await.unwrap().delayed, 2);
    let started = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = started.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let started = s2.clone();
            async move {
                started
                    .lock()
                    .unwrap()
                    .push((job.id().to_owned(), enqueued.elapsed()));
                Ok::<_, JobError>(())
            }
        },
    );
    eventually(T, "both delayed jobs", || async {
        w.stats.snapshot().completed == 2
    })
    .await;
    w.stop().await;
    let started = started.lock().unwrap().clone();
    let when = |j: &str| started.iter().find(|(i, _)| i == j).unwrap().1;
    assert!(
        when(&id) >= Duration::from_millis(700),
        "ran after {:?}",
        when(&id)
    );
    assert!(
        when(&at) >= Duration::from_millis(300),
        "ran after {:?}",
        when(&at)
    );
    assert_eq!(q.state(&id).await.unwrap(), JobState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_succeed_or_die() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let flaky = q
        .enqueue_with(&email(1), Enqueue::new().id("flaky"))
        .await
        .unwrap();
    let doomed = q
        .enqueue_with(&email(2), Enqueue::new().id("doomed").max_attempts(3))
        .await
        .unwrap();
    let fatal = q
        .enqueue_with(&email(3), Enqueue::new().id("fatal"))
        .await
        .unwrap();
    let panics = q
        .enqueue_with(&email(4), Enqueue::new().id("panics").max_attempts(2))
        .await
        .unwrap();
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let attempts = a2.clone();
            async move {
                attempts.lock().unwrap().push((
                    job.id().to_owned(),
                    job.attempt(),
                    job.last_error().map(str::to_owned),
                ));
                match (job.id(), job.attempt()) {
                    ("flaky", 1) => Err(JobError::retry("transient")),
                    ("flaky", _) => Ok(()),
                    ("doomed", _) => Err(std::io::Error::other("still broken").into()),
                    ("fatal", _) => Err(JobError::permanent("bad address")),
                    _ => panic!("handler bug"),
                }
            }
        },
    );
    eventually(T, "one completion and three dead", || async {
        let s = w.stats.snapshot();
        s.completed == 1 && s.dead == 3
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.retried, 1 + 2 + 1);
    let attempts = attempts.lock().unwrap().clone();
    let of = |j: &str| {
        attempts
            .iter()
            .filter(|(i, ..)| i == j)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("flaky").len(), 2);
    assert_eq!(
        of("flaky")[1].2.as_deref(),
        Some("transient"),
        "the retry sees the last error"
    );
    assert_eq!(
        of("doomed").iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(of("fatal").len(), 1);
    assert_eq!(of("panics").len(), 2);
    assert_eq!(q.state(&flaky).await.unwrap(), JobState::Completed);
    for id in [&doomed, &fatal, &panics] {
        assert_eq!(q.state(id).await.unwrap(), JobState::Dead, "{id}");
    }
    let dead = q.dead_letters(None, 10).await.unwrap();
    let find = |j: &str| dead.iter().find(|d| d.job_id == j).unwrap().clone();
    assert_eq!(
        (find("doomed").reason.as_str(), find("doomed").attempts),
        ("exhausted", 3)
    );
    assert_eq!(find("doomed").error, "still broken");
    assert_eq!(find("fatal").reason, "failed");
    assert_eq!(find("fatal").error, "bad address");
    assert!(
        find("panics")
            .error
            .contains("handler panicked: handler bug")
    );
    // The dead letter keeps the job itself.
    let fatal_letter = find("fatal");
    let payload = &fatal_letter
        .fields
        .iter()
        .find(|(k, _)| k == b"payload")
        .unwrap()
        .1;
    assert_eq!(rill::wire::decode::<Email>(payload).unwrap(), email(3));
    let events = q.events(None, 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "retrying" && e.job_id == "flaky")
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "dead" && e.job_id == "fatal")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_dead_lettered_with_their_reason() {
    let redis = TestRedis::start();
    let client = rill::Client::with_config(
        &redis.client_url(),
        rill::ClientConfig {
            namespace: support::namespace(),
            max_payload_bytes: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let q = client.queue::<Email>("emails").unwrap();
    let good1 = q.enqueue(&email(1)).await.unwrap();
    let mut c = redis.aconn().await;
    type Fields = Vec<(&'static str, Vec<u8>)>;
    let bad: Vec<(Fields, &str)> = vec![
        (
            vec![("payload", rill::wire::encode(&email(9)).unwrap())],
            "missing field `v`",
        ),
        (vec![("v", b"1".to_vec())], "missing field `payload`"),
        (
            vec![("v", b"7".to_vec()), ("payload", b"\xf6".to_vec())],
            "unsupported format version",
        ),
        (
            vec![
                ("v", b"1".to_vec()),
                ("payload", b"\xff\x00garbage".to_vec()),
            ],
            "payload does not decode",
        ),
        (
            vec![
                ("v", b"1".to_vec()),
                ("payload", rill::wire::encode(&42u32).unwrap()),
            ],
            "payload does not decode",
        ),
        (
            vec![("v", b"1".to_vec()), ("payload", vec![0x41; 4096])],
            "exceeds the limit",
        ),
        (
            vec![
                ("v", b"1".to_vec()),
                ("payload", b"\xf6".to_vec()),
                ("attempts", b"many".to_vec()),
            ],
            "attempts",
        ),
    ];
    let mut bad_ids = Vec::new();
    for (fields, _) in &bad {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&q.keys().ready).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        bad_ids.push(cmd.query_async::<String>(&mut c).await.unwrap());
    }
    // A payload of the wrong shape enqueued with its own id is dead-lettered under that id.
    let _: String = redis::cmd("XADD")
        .arg(&q.keys().ready)
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(rill::wire::encode(&42u32).unwrap())
        .arg("id")
        .arg("wrong-shape")
        .query_async(&mut c)
        .await
        .unwrap();
    let good2 = q.enqueue(&email(2)).await.unwrap();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        |job: Job<Email>| async move { Ok::<_, JobError>(job.data().n) },
    );
    eventually(T, "2 done, 8 quarantined", || async {
        let s = w.stats.snapshot();
        s.completed == 2 && s.malformed == 8
    })
    .await;
    w.stop().await;
    assert_eq!(q.result::<u32>(&good1).await.unwrap(), Some(1));
    assert_eq!(q.result::<u32>(&good2).await.unwrap(), Some(2));
    let dead = q.dead_letters(None, 100).await.unwrap();
    assert_eq!(dead.len(), 8);
    let named = dead.iter().find(|d| d.job_id == "wrong-shape").unwrap();
    assert!(
        named.error.contains("payload does not decode"),
        "{}",
        named.error
    );
    assert_eq!(q.state("wrong-shape").await.unwrap(), JobState::Dead);
    for ((_, want), id) in bad.iter().zip(&bad_ids) {
        let d = dead
            .iter()
            .find(|d| &d.job_id == id)
            .expect("dead-lettered");
        assert!(d.error.contains(want), "{id}: {} (want {want})", d.error);
        let reason = if want.contains("limit") {
            "too_large"
        } else {
            "malformed"
        };
        assert_eq!(d.reason, reason);
        assert_eq!(q.state(id).await.unwrap(), JobState::Dead);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cancels_the_handler_and_nothing_is_written_for_it() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let id = q.enqueue(&email(1)).await.unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let cancelled_seen = Arc::new(AtomicU32::new(0));
    let c2 = cancelled_seen.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let started = started_tx.clone();
            let seen = c2.clone();
            async move {
                if let Some(tx) = started.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                job.cancelled().cancelled().await;
                seen.fetch_add(1, Ordering::SeqCst);
                // A stale worker that carries on regardless: its progress and its completion must be refused.
                assert!(job.progress(&50u8).await.unwrap_err().is_stale());
                Ok::<_, JobError>("late")
            }
        },
    );
    started_rx.await.unwrap();
    // Another consumer takes the job (as a reclaimer would after the lease expired).
    let mut c = redis.aconn().await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&q.keys().ready)
        .arg("workers")
        .arg("thief")
        .arg(0)
        .arg(&id)
        .query_async(&mut c)
        .await
        .unwrap();
    // The worker gives the delivery up (fenced): it writes no completion for it.
    eventually(T, "delivery given up", || async {
        w.stats.snapshot().fenced == 1
    })
    .await;
    assert_eq!(cancelled_seen.load(Ordering::SeqCst), 1);
    // A lost lease is a lease failure (what the next beat reports, making the worker degraded for it).
    assert_eq!(w.stats.snapshot().lease_failures, 1);
    let report = w.stop().await;
    assert_eq!(report.lease_lost, 1);
    assert_eq!((report.completed, report.stale), (0, 0));
    // The thief still owns it; nothing was completed.
    let info = q.job(&id).await.unwrap();
    assert_eq!(info.state, JobState::Active);
    assert_eq!(
        info.attempts, 2,
        "the thief's delivery is the second attempt"
    );
    assert_eq!(info.owner.unwrap().0, "thief");
    assert!(info.result.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_jobs_are_recovered_within_the_lease() {
    support::trace();
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let ids = q
        .enqueue_many(&(0..5).map(email).collect::<Vec<_>>())
        .await
        .unwrap();
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let h2 = hold.clone();
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let crashed = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()).concurrency(5),
        move |_job: Job<Email>| {
            let hold = h2.clone();
            let started = s2.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = hold.acquire().await;
                Ok::<_, JobError>(())
            }
        },
    );
    eventually(T, "5 running", || async {
        started.load(Ordering::SeqCst) == 5
    })
    .await;
    crashed.crash();
    let crash_at = Instant::now();
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let rescuer = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let attempts = a2.clone();
            async move {
                attempts
                    .lock()
                    .unwrap()
                    .push((job.attempt(), crash_at.elapsed()));
                Ok::<_, JobError>(())
            }
        },
    );
    eventually(T, "5 recovered", || async {
        rescuer.stats.snapshot().completed == 5
    })
    .await;
    let report = rescuer.stop().await;
    assert_eq!(report.reclaimed, 5);
    for (attempt, after) in attempts.lock().unwrap().iter() {
        assert_eq!(*attempt, 2, "the stalled delivery counts as an attempt");
        // lease 600 ms + reclaim interval 100 ms, plus scheduling slack.
        assert!(
            *after < Duration::from_millis(3000),
            "recovered after {after:?}"
        );
    }
    for id in &ids {
        assert_eq!(q.state(id).await.unwrap(), JobState::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_unfinished_jobs_back_at_once() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let quick = q.enqueue(&email(1)).await.unwrap();
    let slow = q.enqueue(&email(2)).await.unwrap();
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let saw_cancel = Arc::new(AtomicU32::new(0));
    let c2 = saw_cancel.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()).lease(Duration::from_secs(30)),
        move |job: Job<Email>| {
            let started = s2.clone();
            let saw = c2.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                if job.data().n == 2 {
                    // Ignores cancellation for a while: dropped at the deadline.
                    job.cancelled().cancelled().await;
                    saw.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, JobError>(())
            }
        },
    );
    eventually(T, "both started", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    let t0 = Instant::now();
    let report = w.stop().await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert_eq!(report.completed, 1);
    assert_eq!(report.released, 1);
    assert_eq!(
        saw_cancel.load(Ordering::SeqCst),
        1,
        "the token fired at the deadline"
    );
    assert_eq!(q.state(&quick).await.unwrap(), JobState::Completed);
    // Not active with a 30 s lease: waiting again, right now, attempt not counted.
    let info = q.job(&slow).await.unwrap();
    assert_eq!(info.state, JobState::Waiting);
    assert_eq!(info.attempts, 0);
    let next = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        |job: Job<Email>| async move { Ok::<_, JobError>(job.attempt()) },
    );
    eventually(T, "redelivered", || async {
        next.stats.snapshot().completed == 1
    })
    .await;
    next.stop().await;
    assert_eq!(q.result::<u32>(&slow).await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_data_updates_are_visible_and_carried_to_retries() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("emails").unwrap();
    let id = q
        .enqueue_with(&email(1), Enqueue::new().id("p1"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g2 = gate.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "emails").unwrap()),
        move |job: Job<Email>| {
            let tx = tx.clone();
            let gate = g2.clone();
            async move {
                if job.attempt() == 1 {
                    job.progress(&("halfway", 50)).await?;
                    job.update_data(&Email {
                        to: "fixed@example.com".into(),
                        n: 99,
                    })
                    .await?;
                    let _ = tx.send(());
                    gate.acquire().await.unwrap().forget();
                    return Err(JobError::retry_after(
                        "try again",
                        Duration::from_millis(10),
                    ));
                }
                Ok(job.data().clone())
            }
        },
    );
    rx.recv().await.unwrap();
    let info = q.job(&id).await.unwrap();
    assert_eq!(info.state, JobState::Active);
    assert_eq!(
        info.attempts, 1,
        "the running attempt counts, as Job::attempt says"
    );
    assert_eq!(
        info.progress::<(String, u32)>().unwrap().unwrap(),
        ("halfway".into(), 50)
    );
    gate.add_permits(1);
    eventually(T, "done", || async { w.stats.snapshot().completed == 1 }).await;
    w.stop().await;
    let result = q.result::<Email>(&id).await.unwrap().unwrap();
    assert_eq!(result.n, 99, "the retry received the updated data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lifecycle() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    assert!(!client.is_connected().await, "lazy: nothing opened yet");
    client.connect().await.unwrap();
    client.connect().await.unwrap();
    assert!(client.is_connected().await);
    client.close();
    client.close();
    assert!(!client.is_connected().await);
    let q = client.queue::<Email>("emails").unwrap();
    assert!(matches!(
        q.enqueue(&email(1)).await,
        Err(rill::Error::Closed)
    ));
    // Nothing listening: a clear, retryable error.
    let nowhere = rill::Client::new("redis://127.0.0.1:1").unwrap();
    let err = nowhere.connect().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Oversized payloads are refused before touching Redis.
    let small = rill::Client::with_config(
        &redis.client_url(),
        rill::ClientConfig {
            max_payload_bytes: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let err = small
        .queue::<Email>("emails")
        .unwrap()
        .enqueue(&email(1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        rill::Error::PayloadTooLarge { limit: 10, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_stays_bounded() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("nums").unwrap();
    q.enqueue_many(&(0..1500).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut cfg = rill::WorkerConfig::default();
    cfg.events_maxlen = 50;
    // One completion per ack call, so one event per job whatever the timing (a batch writes one event).
    cfg.concurrency = 1;
    cfg.prefetch = 0;
    cfg.ack_batch = 1;
    let w = spawn_worker(
        Worker::new(client.clone(), "nums").unwrap().config(cfg),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    eventually(T, "1500 done", || async {
        w.stats.snapshot().completed == 1500
    })
    .await;
    w.stop().await;
    let mut c = redis.aconn().await;
    let len: u64 = c.xlen(&q.keys().events).await.unwrap();
    let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&q.keys().events)
        .query_async(&mut c)
        .await
        .unwrap();
    let added = match &info["entries-added"] {
        redis::Value::Int(n) => *n as u64,
        other => panic!("{other:?}"),
    };
    // MAXLEN ~ trims whole nodes (100 entries by default): allow one node of slack.
    assert!((50..=150).contains(&len), "events length {len}");
    assert!(added > 200, "only {added} events written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_queues_retry_and_purge_dead_letters_and_follow_events() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("ops").unwrap();
    assert!(client.queues().await.unwrap().is_empty());
    let before = rill::Recent::default();
    assert_eq!(q.counts().await.unwrap().oldest_waiting_ms, None);
    let ids = q
        .enqueue_many(&(0..4).map(email).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(client.queues().await.unwrap(), vec!["ops".to_owned()]);
    let oldest = q.counts().await.unwrap().oldest_waiting_ms.unwrap();
    let first_ms: u64 = ids[0].split('-').next().unwrap().parse().unwrap();
    assert_eq!(oldest, first_ms);
    let mut feed = q.follow_events(None).await.unwrap();

    // Jobs 0 and 1 die; then they succeed once requeued.
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f2 = fail.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "ops").unwrap()),
        move |job: Job<Email>| {
            let fail = f2.clone();
            async move {
                if job.data().n < 2 && fail.load(Ordering::SeqCst) {
                    Err(JobError::permanent("bad address"))
                } else {
                    Ok(())
                }
            }
        },
    );
    eventually(T, "two dead, two done", || async {
        let s = w.stats.snapshot();
        s.dead == 2 && s.completed == 2
    })
    .await;
    let mut kinds = Vec::new();
    while kinds.iter().filter(|k| *k == "dead").count() < 2 {
        kinds.extend(feed.next(100).await.unwrap().into_iter().map(|e| e.kind));
    }
    let recent = q.recent(Duration::from_secs(60)).await.unwrap();
    assert_ne!(recent, before);
    assert_eq!((recent.completed, recent.dead), (2, 2));
    assert!(recent.complete);

    fail.store(false, Ordering::SeqCst);
    let out = q.retry_dead(&[&ids[0], "no-such-job"]).await.unwrap();
    assert_eq!(out.requeued, vec![ids[0].clone()]);
    assert_eq!(out.missing, vec!["no-such-job".to_owned()]);
    eventually(T, "the requeued job completes", || async {
        w.stats.snapshot().completed == 3
    })
    .await;
    let rest = q.retry_all_dead().await.unwrap();
    assert_eq!(rest.requeued, vec![ids[1].clone()]);
    eventually(T, "every job completes", || async {
        w.stats.snapshot().completed == 4
    })
    .await;
    assert_eq!(q.counts().await.unwrap().dead, 0);
    let mut kinds = Vec::new();
    while kinds.iter().filter(|k| *k == "requeued").count() < 2 {
        kinds.extend(feed.next(100).await.unwrap().into_iter().map(|e| e.kind));
    }

    // Purge: only dead letters older than the cutoff go.
    fail.store(true, Ordering::SeqCst);
    q.enqueue_with(&email(0), Enqueue::new().id("again"))
        .await
        .unwrap();
    eventually(T, "dead again", || async {
        q.counts().await.unwrap().dead == 1
    })
    .await;
    assert_eq!(
        q.purge_dead(Some(Duration::from_secs(3600))).await.unwrap(),
        0
    );
    assert_eq!(q.purge_dead(None).await.unwrap(), 1);
    assert_eq!(q.state("again").await.unwrap(), JobState::Unknown);
    let none = q.retry_dead(&[]).await.unwrap();
    assert!(none.requeued.is_empty() && none.missing.is_empty() && none.live.is_empty());
    assert!(format!("{q:?}").contains("ops"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_just_completed_reads_as_completed_by_default() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<Email>("done").unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "done")
            .unwrap()
            .block(Duration::from_millis(200)),
        |_job: Job<Email>| async { Ok::<_, JobError>(()) },
    );
    let unnamed = q.enqueue(&email(1)).await.unwrap();
    let named = q
        .enqueue_with(&email(2), Enqueue::new().id("welcome-7"))
        .await
        .unwrap();
    eventually(T, "both completed", || async {
        q.state(&unnamed).await.unwrap() == JobState::Completed
            && q.state(&named).await.unwrap() == JobState::Completed
    })
    .await;
    // The named job keeps a compact record (the attempt that succeeded); the unnamed one is known from its
    // `completed` event, with its finish time but no attempt count.
    let info = q.job(&named).await.unwrap();
    assert_eq!(info.attempts, 1);
    assert!(info.finished_ms.is_some());
    let info = q.job(&unnamed).await.unwrap();
    assert_eq!(info.attempts, 0);
    assert!(info.finished_ms.is_some());
    w.stop().await;
}

#[tokio::test]
async fn a_bulk_enqueue_keeps_the_order_of_its_jobs_across_chunks() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("bulk").unwrap();
    // 2,500 jobs: three pipelines, the next built while the one before is on the wire.
    let jobs: Vec<u32> = (0..2_500).collect();
    let ids = q.enqueue_many(&jobs).await.unwrap();
    assert_eq!(ids.len(), jobs.len());
    let mut c = redis.aconn().await;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(&q.keys().ready)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let entries = rill::wire::parse_entries(v).unwrap();
    let stored: Vec<(String, u32)> = entries
        .into_iter()
        .map(|e| {
            let fields = e.fields.unwrap();
            let payload = rill::wire::field(&fields, "payload").unwrap();
            (e.id, rill::wire::decode(payload).unwrap())
        })
        .collect();
    let expected: Vec<(String, u32)> = ids.into_iter().zip(jobs).collect();
    assert_eq!(
        stored, expected,
        "stream order = job order, and each id names its job"
    );
    // A payload over the limit anywhere refuses the whole batch before anything is sent.
    let small = rill::Client::with_config(
        &redis.client_url(),
        rill::ClientConfig {
            namespace: support::namespace(),
            max_payload_bytes: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let q2 = small.queue::<String>("bulk").unwrap();
    let mut batch = vec!["ok".to_string(); 1_500];
    batch[1_200] = "x".repeat(100);
    assert!(matches!(
        q2.enqueue_many(&batch).await,
        Err(rill::Error::PayloadTooLarge { .. })
    ));
    assert_eq!(q2.counts().await.unwrap().waiting, 0);
}

/// (attempt, `x-traceparent`, `x-tenant`) as a handler saw them.
type Seen = (u32, Option<Vec<u8>>, Option<Vec<u8>>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_travel_with_a_job_and_its_retries() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("headers").unwrap();
    let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    let w = spawn_worker(
        Worker::new(client.clone(), "headers")
            .unwrap()
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .block(Duration::from_millis(200)),
        move |job: Job<u32>| {
            let s = s.clone();
            async move {
                let tp = job.header("x-traceparent").map(<[u8]>::to_vec);
                let tenant = job.header("x-tenant").map(<[u8]>::to_vec);
                s.lock().unwrap().push((job.attempt(), tp, tenant));
                if job.attempt() == 1 {
                    return Err(JobError::retry("again"));
                }
                Ok(())
            }
        },
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // A plain job (one XADD) and a named one (enqueue.lua) both carry them.
    q.enqueue_with(&1, Enqueue::new().header("x-traceparent", tp))
        .await
        .unwrap();
    q.enqueue_with(
        &2,
        Enqueue::new()
            .id("named")
            .header("x-tenant", "acme")
            .header("x-tenant", "globex"),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "both completed after a retry",
        || async { w.stats.snapshot().completed == 2 },
    )
    .await;
    w.stop().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let with_tp = seen
        .iter()
        .filter(|(_, t, _)| t.as_deref() == Some(tp.as_bytes()))
        .count();
    let with_tenant = seen
        .iter()
        .filter(|(_, _, t)| t.as_deref() == Some(&b"globex"[..]))
        .count();
    assert_eq!(
        (with_tp, with_tenant),
        (2, 2),
        "both attempts of each saw its header: {seen:?}"
    );
    for bad in ["tenant", "x-", "x-has space"] {
        assert!(
            matches!(
                q.enqueue_with(&3, Enqueue::new().header(bad, "v")).await,
                Err(rill::Error::InvalidOption {
                    option: "header",
                    ..
                })
            ),
            "{bad}"
        );
    }
}
