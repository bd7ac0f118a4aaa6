//! Faults with real processes: a worker process killed with -9 mid-job, and a Redis restart mid-run.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rill::{Job, JobError, JobState, Worker};
use support::{TestRedis, eventually, now_ms, spawn_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_has_its_jobs_completed_elsewhere_within_the_lease() {
    support::trace();
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("fault").unwrap();
    let lease = Duration::from_millis(1000);
    let ids = q.enqueue_many(&[60_000u64; 6]).await.unwrap();

    let mut child = spawn_fault_worker(&redis, &ns, "fault", lease, 8);
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
    child.kill();
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

fn spawn_fault_worker(
    redis: &TestRedis,
    ns: &str,
    queue: &str,
    lease: Duration,
    concurrency: usize,
) -> support::ChildGuard {
    let env = [
        ("RILL_LEASE_MS", lease.as_millis().to_string()),
        ("RILL_CONCURRENCY", concurrency.to_string()),
    ];
    support::fault_worker(redis, ns, queue, &env).0
}

/// Kills worker processes with SIGKILL again and again while jobs flow. `RILL_FAULT_CRASHES` sets how many
/// (default 12; a soak run uses 1000 or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_lose_nothing_and_duplicate_only_killed_runs() {
    let crashes: usize = std::env::var("RILL_FAULT_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("flow").unwrap();
    let lease = Duration::from_millis(500);
    let reclaim = lease / 4;
    let mut workers: Vec<support::ChildGuard> = (0..3)
        .map(|_| spawn_fault_worker(&redis, &ns, "flow", lease, 4))
        .collect();
    let mut kills: Vec<(u32, u64)> = Vec::new();
    let mut ids = Vec::new();
    let started = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // Steady flow below capacity (3 workers x 4 slots, jobs of 50-300 ms: ~70 jobs/s), 8 jobs and one kill every
    // ~150 ms, so most kills land on running jobs.
    while kills.len() < crashes {
        // Workers live ~450 ms here, so a long job can be interrupted many times in a row: give every job
        // enough attempts that the test is about loss and duplicates, not about running out of attempts.
        let opts = || rill::Enqueue::new().max_attempts(1000);
        for _ in 0..8 {
            ids.push(
                q.enqueue_with(
                    &(50 + rand(250)),
                    opts().dedup_key(format!("j{}", ids.len())),
                )
                .await
                .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let victim = rand(workers.len() as u64) as usize;
        let mut child = workers.swap_remove(victim);
        kills.push((child.0.id(), now_ms()));
        child.kill();
        workers.push(spawn_fault_worker(&redis, &ns, "flow", lease, 4));
    }
    eventually(Duration::from_secs(120), "every job completed", || async {
        let c = q.counts().await.unwrap();
        c.waiting == 0 && c.active == 0 && c.delayed == 0
    })
    .await;
    drop(workers);
    let mut c = redis.aconn().await;
    let runs: Vec<String> = c
        .lrange(format!("{}:runs", q.keys().ready), 0, -1)
        .await
        .unwrap();
    let effects: Vec<String> = c
        .lrange(format!("{}:effects", q.keys().ready), 0, -1)
        .await
        .unwrap();
    let killed: HashMap<u32, u64> = kills.iter().copied().collect();
    // No job lost: every one completed.
    let mut lost = 0;
    for id in &ids {
        if q.state(id).await.unwrap() != JobState::Completed {
            lost += 1;
        }
    }
    assert_eq!(q.counts().await.unwrap().dead, 0);
    // Effects: at most one per job from a process that was never killed; extra ones only from killed processes.
    let mut per_job: HashMap<&str, Vec<u32>> = HashMap::new();
    for e in &effects {
        let (job, pid) = e.split_once(' ').unwrap();
        per_job.entry(job).or_default().push(pid.parse().unwrap());
    }
    let mut duplicates = 0;
    for id in &ids {
        let pids = per_job.get(id.as_str()).cloned().unwrap_or_default();
        assert!(!pids.is_empty(), "{id}: completed without its effect");
        let survivors = pids.iter().filter(|p| !killed.contains_key(p)).count();
        assert!(
            survivors <= 1,
            "{id}: {survivors} effects from processes that were never killed"
        );
        duplicates += pids.len() - 1;
    }
    // Recovery: a job a killed process was running starts again elsewhere within lease + reclaim interval.
    let mut run_list: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    for r in &runs {
        let mut it = r.split(' ');
        let (job, pid, at) = (
            it.next().unwrap(),
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        );
        run_list.entry(job).or_default().push((pid, at));
    }
    let mut worst = 0u64;
    let mut worst_case = String::new();
    let mut recoveries: Vec<u64> = Vec::new();
    let mut interrupted = 0;
    for (job, list) in &run_list {
        for (i, (pid, _)) in list.iter().enumerate() {
            let Some(&killed_at) = killed.get(pid) else {
                continue;
            };
            let finished_there = per_job.get(job).is_some_and(|p| p.contains(pid));
            if finished_there {
                continue;
            }
            interrupted += 1;
            let next = list[i + 1..]
                .iter()
                .map(|(_, at)| *at)
                .find(|at| *at >= killed_at);
            let next =
                next.unwrap_or_else(|| panic!("{job}: interrupted by a kill and never run again"));
            recoveries.push(next - killed_at);
            if next - killed_at > worst {
                worst = next - killed_at;
                worst_case = format!("{job}: runs {list:?}, killed pid {pid} at {killed_at}");
            }
        }
    }
    let bound = lease + reclaim + Duration::from_millis(1500);
    println!(
        "sigkill soak: {} jobs, {} crashes injected, {} runs interrupted, {lost} lost, {duplicates} duplicate effects, worst recovery {worst} ms (bound {} ms), {:.1}s",
        ids.len(),
        kills.len(),
        interrupted,
        bound.as_millis(),
        started.elapsed().as_secs_f64()
    );
    recoveries.sort_unstable();
    let pct = |p: f64| {
        recoveries
            .get(((recoveries.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "recovery p50 {} ms, p99 {} ms; worst: {worst_case}; kills {kills:?}",
        pct(0.5),
        pct(0.99)
    );
    assert_eq!(lost, 0);
    assert!(
        u128::from(worst) <= bound.as_millis(),
        "worst recovery {worst} ms"
    );
}

/// Redis frozen (SIGSTOP) for longer than a lease: leases lapse and jobs may be taken over, but no job ever
/// gets two accepted completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_never_yields_two_accepted_completions() {
    let redis = TestRedis::start_single(); // One server to freeze.
    let client = support::client(&redis);
    let q = client.queue::<u64>("pause").unwrap();
    let ids = q.enqueue_many(&vec![150u64; 60]).await.unwrap();
    let lease = Duration::from_millis(400);
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(spawn_worker(
            Worker::new(client.clone(), "pause")
                .unwrap()
                .concurrency(4)
                .keep_completed(true)
                .lease(lease)
                .reclaim_interval(Duration::from_millis(100)),
            |job: Job<u64>| async move {
                tokio::time::sleep(Duration::from_millis(*job.data())).await;
                Ok::<_, JobError>(())
            },
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    tokio::time::sleep(lease * 3).await;
    redis.resume();
    eventually(Duration::from_secs(60), "all completed", || async {
        running
            .iter()
            .map(|w| w.stats.snapshot().completed)
            .sum::<u64>()
            >= ids.len() as u64
    })
    .await;
    tokio::time::sleep(lease * 2).await;
    let mut reports = Vec::new();
    for w in running {
        reports.push(w.stop().await);
    }
    let accepted: u64 = reports.iter().map(|r| r.completed).sum();
    let stale: u64 = reports.iter().map(|r| r.stale).sum();
    let lost: u64 = reports.iter().map(|r| r.lease_lost).sum();
    println!(
        "redis pause: {} jobs, {accepted} accepted completions, {stale} rejected as stale, {lost} leases lost",
        ids.len()
    );
    assert_eq!(
        accepted,
        ids.len() as u64,
        "exactly one accepted completion per job"
    );
    for id in &ids {
        assert_eq!(q.state(id).await.unwrap(), JobState::Completed);
    }
}

/// Workers configured with different leases use the queue's one (the first worker's): a worker with a short
/// lease would otherwise take a long-lease worker's job between its renewals and run it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_the_queues_lease_so_a_short_one_steals_nothing() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("lease").unwrap();
    assert_eq!(q.lease().await.unwrap(), None);
    let runs = Arc::new(AtomicU32::new(0));
    let handler = |runs: Arc<AtomicU32>| {
        move |_job: Job<u32>| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok::<_, JobError>(())
            }
        }
    };
    // The first worker: a 3 s lease, renewed every second.
    let slow = spawn_worker(
        Worker::new(client.clone(), "lease")
            .unwrap()
            .lease(Duration::from_secs(3)),
        handler(runs.clone()),
    );
    eventually(Duration::from_secs(30), "the queue's lease set", || async {
        q.lease().await.unwrap() == Some(Duration::from_secs(3))
    })
    .await;
    let id = q.enqueue(&1).await.unwrap();
    eventually(Duration::from_secs(30), "running", || async {
        q.state(&id).await.unwrap() == JobState::Active
    })
    .await;
    // A worker configured for 600 ms, reclaiming every 100 ms: with its own lease it would take the job after
    // ~600 ms of idle time between renewals.
    let quick = spawn_worker(
        support::fast(Worker::new(client.clone(), "lease").unwrap()),
        handler(runs.clone()),
    );
    eventually(Duration::from_secs(30), "completed", || async {
        q.state(&id).await.unwrap() == JobState::Completed
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "ran once");
    assert_eq!(quick.stop().await.reclaimed, 0);
    assert_eq!(slow.stop().await.lease_lost, 0);
    // An operator's change applies to workers started afterwards.
    q.set_lease(Duration::from_secs(10)).await.unwrap();
    assert_eq!(q.lease().await.unwrap(), Some(Duration::from_secs(10)));
}
