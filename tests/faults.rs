//! Faults with real processes: a worker process killed with -9 mid-job, and a Redis restart mid-run.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rill::{Job, JobError, JobState, Worker};
use support::{TestRedis, eventually, spawn_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_has_its_jobs_completed_elsewhere_within_the_lease() {
    support::trace();
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("fault").unwrap();
    let lease = Duration::from_millis(1000);
    let ids = q.enqueue_many(&[60_000u64; 6]).await.unwrap();

    let mut child = Command::new(support::example_bin("fault_worker"))
        .env("RILL_URL", redis.url())
        .env("RILL_NAMESPACE", &ns)
        .env("RILL_QUEUE", "fault")
        .env("RILL_LEASE_MS", lease.as_millis().to_string())
        .env("RILL_CONCURRENCY", "8")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "{line}");
    let mut c = redis.aconn().await;
    let started_key = format!("{}:started", q.keys().ready);
    eventually(
        Duration::from_secs(20),
        "all 6 jobs running in the child",
        || {
            let mut c = c.clone();
            let k = started_key.clone();
            async move { c.hlen::<_, u64>(&k).await.unwrap() == 6 }
        },
    )
    .await;
    // Let the child renew its leases at least once, then kill it mid-job.
    tokio::time::sleep(lease / 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();

    let recovered = Arc::new(Mutex::new(HashMap::new()));
    let r2 = recovered.clone();
    let rescuer = spawn_worker(
        Worker::new(client.clone(), "fault")
            .unwrap()
            .lease(lease)
            .reclaim_interval(Duration::from_millis(250)),
        move |job: Job<u64>| {
            let r = r2.clone();
            async move {
                r.lock()
                    .unwrap()
                    .insert(job.id().to_owned(), (job.attempt(), killed_at.elapsed()));
                Ok::<_, JobError>(0u32)
            }
        },
    );
    eventually(Duration::from_secs(20), "6 recovered", || async {
        rescuer.stats.snapshot().completed == 6
    })
    .await;
    let report = rescuer.stop().await;
    assert_eq!(report.reclaimed, 6);
    let recovered = recovered.lock().unwrap().clone();
    let worst = recovered.values().map(|(_, t)| *t).max().unwrap();
    println!("sigkill recovery: 6 jobs, lease {lease:?}, worst recovery {worst:?}");
    // The bound: lease + reclaim interval, plus slack for a shared, noisy machine.
    assert!(
        worst < lease + Duration::from_millis(250) + Duration::from_secs(2),
        "worst recovery {worst:?}"
    );
    for id in &ids {
        assert_eq!(
            recovered[id].0, 2,
            "the killed delivery counts as attempt 1"
        );
        assert_eq!(
            q.result::<u32>(id).await.unwrap(),
            Some(0),
            "completed by the rescuer"
        );
    }
    let effects: HashMap<String, u64> = c
        .hgetall(format!("{}:effects", q.keys().ready))
        .await
        .unwrap();
    assert!(
        effects.is_empty(),
        "the killed process completed nothing: {effects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_no_acknowledged_job() {
    support::trace();
    let mut redis = TestRedis::start_aof();
    let client = support::client(&redis);
    let q = client.queue::<u32>("restart").unwrap();
    let done = Arc::new(Mutex::new(HashSet::new()));
    let d2 = done.clone();
    let worker = spawn_worker(
        Worker::new(client.clone(), "restart")
            .unwrap()
            .concurrency(16)
            .keep_completed(true)
            .lease(Duration::from_secs(2))
            .reclaim_interval(Duration::from_millis(200)),
        move |job: Job<u32>| {
            let done = d2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                done.lock().unwrap().insert(job.id().to_owned());
                Ok::<_, JobError>(())
            }
        },
    );
    let producer_q = q.clone();
    let producer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut errors = 0u32;
        for n in 0..1500u32 {
            loop {
                match producer_q.enqueue(&n).await {
                    Ok(id) => {
                        acked.push(id);
                        break;
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "{e}");
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            if n % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        (acked, errors)
    });
    eventually(
        Duration::from_secs(30),
        "some progress before the restart",
        || async { done.lock().unwrap().len() >= 300 },
    )
    .await;
    let restarted_at = Instant::now();
    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let (acked, errors) = producer.await.unwrap();
    eventually(
        Duration::from_secs(60),
        "every acknowledged job completed",
        || async {
            let d = done.lock().unwrap();
            acked.iter().all(|id| d.contains(id))
        },
    )
    .await;
    let report = worker.stop().await;
    println!(
        "redis restart: {} jobs acknowledged, {} enqueue errors retried, {} completed, recovered within {:?}, report {report:?}",
        acked.len(),
        errors,
        done.lock().unwrap().len(),
        restarted_at.elapsed()
    );
    for id in acked.iter().step_by(97) {
        let s = q.state(id).await.unwrap();
        assert!(matches!(s, JobState::Completed), "{id}: {s:?}");
    }
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    drop(redis);
}
