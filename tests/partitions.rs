//! Partitioned queues (SPEC §2a): one logical queue over N hash tags. Producers route by dedup key or id (and
//! spread id-less jobs), workers run every partition's jobs, and the operator calls see one queue; on a cluster
//! the partitions land on every master.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Enqueue, EnqueueOutcome, Job, JobError, JobState, Worker};
use support::cluster::TestCluster;
use support::{TestRedis, client, eventually, fast, spawn_worker};

const T: Duration = Duration::from_secs(30);

/// A worker that records every run of every job id.
fn recording(
    client: &rill::Client,
    queue: &str,
    runs: &Arc<Mutex<HashMap<String, u32>>>,
) -> support::Running {
    let runs = runs.clone();
    spawn_worker(
        fast(Worker::new(client.clone(), queue).unwrap()).concurrency(16),
        move |job: Job<u32>| {
            let runs = runs.clone();
            async move {
                if *job.data() == 666 {
                    return Err(JobError::permanent("the devil's job"));
                }
                *runs.lock().unwrap().entry(job.id().to_owned()).or_default() += 1;
                Ok(job.data() + 1)
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_runs_every_job_once_and_looks_like_one_queue() {
    let redis = TestRedis::start();
    let client = client(&redis);
    let q = client.queue::<u32>("orders").unwrap();
    let parts = q.set_partitions(4).await.unwrap();
    assert_eq!(parts.len(), 4);
    // Same again: no change; another number: refused.
    assert_eq!(q.set_partitions(4).await.unwrap(), parts);
    assert!(matches!(
        q.set_partitions(5).await,
        Err(rill::Error::InvalidOption { .. })
    ));
    // A new handle reads the partitions from the queue's settings.
    let q = client.queue::<u32>("orders").unwrap();
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(q.enqueue(&n).await.unwrap());
    }
    ids.extend(q.enqueue_many(&(0..100).collect::<Vec<_>>()).await.unwrap());
    let named = q
        .enqueue_with(&1, Enqueue::new().id("invoice-7"))
        .await
        .unwrap();
    assert_eq!(named, "invoice-7");
    assert!(matches!(
        q.enqueue_outcome(&1, Enqueue::new().id("invoice-7"))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate(_)
    ));
    let deduped = q
        .enqueue_with(&2, Enqueue::new().dedup_key("user-1"))
        .await
        .unwrap();
    assert_eq!(
        q.enqueue_with(&3, Enqueue::new().dedup_key("user-1"))
            .await
            .unwrap(),
        deduped,
        "the dedup key routes to one partition, where the check is atomic"
    );
    let later = q
        .enqueue_with(&4, Enqueue::new().delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    let doomed = q.enqueue(&666).await.unwrap();
    ids.extend([named.clone(), deduped.clone()]);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "job ids are unique across partitions"
    );

    // Id-less jobs are spread evenly: 300 over 4 partitions, in turn.
    let raw = redis.aconn().await;
    let mut per_partition = Vec::new();
    for tag in parts.tags() {
        let key = format!("{}:{{{tag}}}:ready", client.config().namespace);
        let len: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut raw.clone())
            .await
            .unwrap();
        per_partition.push(len);
    }
    assert!(
        per_partition.iter().all(|&n| (74..=79).contains(&n)),
        "{per_partition:?}"
    );
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.waiting, ids.len() as u64 + 1);
    assert_eq!(counts.delayed, 1);
    assert_eq!(q.state(&later).await.unwrap(), JobState::Delayed);
    assert_eq!(q.state(&named).await.unwrap(), JobState::Waiting);

    let runs = Arc::new(Mutex::new(HashMap::new()));
    let worker = recording(&client, "orders", &runs);
    for id in &ids {
        let outcome = q.wait(id, T).await.unwrap();
        assert!(outcome.is_ended(), "{id}: {outcome:?}");
    }
    eventually(T, "the failing job is dead", || async {
        q.state(&doomed).await.unwrap() == JobState::Dead
    })
    .await;
    assert_eq!(q.result::<u32>(&named).await.unwrap(), Some(2));
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, doomed);
    // Cancelling the delayed job finds its partition.
    assert_eq!(
        q.cancel(&later).await.unwrap(),
        rill::CancelOutcome::Removed
    );
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.delayed, counts.dead),
        (0, 0, 0, 1)
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), ids.len());
    assert!(runs.values().all(|&n| n == 1), "every job ran once");
    let report = worker.stop().await;
    assert_eq!(report.completed, ids.len() as u64);
    // Retried dead letters go back to their partition (with the worker stopped: a running one would fail the job
    // again at once, and the retry, paging on, would find it dead again).
    let requeued = q.retry_all_dead().await.unwrap();
    assert_eq!(requeued.requeued, vec![doomed.clone()]);
    assert_eq!(q.state(&doomed).await.unwrap(), JobState::Waiting);
    // The queue is listed once, by its name; calls partitions do not offer say so.
    let listed = client.queues().await.unwrap();
    assert_eq!(listed, vec!["orders".to_owned()]);
    assert!(matches!(
        q.set_rate_limit(10, Duration::from_secs(1)).await,
        Err(rill::Error::Partitioned { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_jobs_in_every_partition_and_pause_the_whole_queue() {
    let redis = TestRedis::start();
    let client = client(&redis);
    let q = client.queue::<u32>("sessions").unwrap();
    q.set_partitions(3).await.unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    let seen = started.clone();
    let worker = spawn_worker(
        fast(Worker::new(client.clone(), "sessions").unwrap()).concurrency(8),
        move |job: Job<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.id().to_owned());
                job.cancelled().cancelled().await;
                Err::<(), _>(JobError::permanent("cancelled"))
            }
        },
    );
    // Three long jobs, one per partition (ids routed to each).
    let ids = q.enqueue_many(&[0, 1, 2]).await.unwrap();
    eventually(T, "all three running", || async {
        started.lock().unwrap().len() == 3
    })
    .await;
    for id in &ids {
        assert_eq!(q.cancel(id).await.unwrap(), rill::CancelOutcome::Signalled);
    }
    for id in &ids {
        eventually(T, "cancelled", || async {
            q.state(id).await.unwrap() == JobState::Cancelled
        })
        .await;
    }
    // A paused queue holds every partition's jobs back.
    q.pause().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = q.enqueue_many(&[0, 1, 2, 3, 4, 5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        started.lock().unwrap().len(),
        3,
        "nothing starts while paused"
    );
    q.resume().await.unwrap();
    eventually(T, "all six started after resume", || async {
        started.lock().unwrap().len() == 9
    })
    .await;
    for id in &held {
        q.cancel(id).await.unwrap();
    }
    // The worker is registered once, on the queue.
    let workers = q.workers(&rill::HealthRule::default()).await.unwrap();
    assert_eq!(workers.len(), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_master_cluster_partitions_use_every_master() {
    let cluster = TestCluster::start(3);
    let client = rill::Client::with_config(
        &cluster.url(),
        rill::ClientConfig {
            namespace: support::namespace(),
            ..Default::default()
        },
    )
    .unwrap();
    let q = client.queue::<u32>("spread").unwrap();
    let parts = q.set_partitions(6).await.unwrap();
    let ns = &client.config().namespace;
    let owners: Vec<_> = parts
        .tags()
        .iter()
        .map(|t| cluster.owner(&format!("{ns}:{{{t}}}:ready")))
        .collect();
    let masters: HashSet<_> = owners.iter().collect();
    assert_eq!(masters.len(), 3, "{owners:?}");
    for m in &masters {
        assert_eq!(
            owners.iter().filter(|o| o == m).count(),
            2,
            "two partitions each: {owners:?}"
        );
    }
    let ids = q.enqueue_many(&(0..600).collect::<Vec<_>>()).await.unwrap();
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let a = recording(&client, "spread", &runs);
    let b = recording(&client, "spread", &runs);
    for id in &ids {
        assert!(q.wait(id, T).await.unwrap().is_ended());
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 600);
    assert!(runs.values().all(|&n| n == 1));
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_many_partitions_takes_turns_at_a_few_blocking_reads() {
    let redis = TestRedis::start();
    let client = client(&redis);
    let q = client.queue::<u32>("wide").unwrap();
    q.set_partitions(32).await.unwrap();
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let worker = recording(&client, "wide", &runs);
    // Let the worker settle into idle reads, then count its connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nodes = redis.every_node(redis::cmd("CLIENT").arg("LIST"));
    let list = nodes.concat();
    let reads: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("cmd=xreadgroup"))
        .collect();
    let reading = reads.len();
    let blocked = reads.iter().filter(|l| l.contains(" flags=b ")).count();
    // At most 8 read connections; on a cluster each one reaches every master.
    assert!(
        reading <= 8 * nodes.len() && blocked <= 8,
        "{reading} connections read, {blocked} blocked: {list}"
    );
    // Jobs in every partition still start promptly, idle or not.
    for round in 0..3 {
        let jobs: Vec<u32> = (0..32).map(|n| round * 100 + n).collect();
        for id in q.enqueue_many(&jobs).await.unwrap() {
            assert!(q.wait(&id, T).await.unwrap().is_ended());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(runs.lock().unwrap().len(), 96);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_the_event_feed_cover_every_partition() {
    let redis = TestRedis::start();
    let client = client(&redis);
    let q = client.queue::<u32>("listed").unwrap();
    q.set_partitions(3).await.unwrap();
    let ids = q.enqueue_many(&(0..10).collect::<Vec<_>>()).await.unwrap();
    // Pages of 4, partition after partition: every waiting job once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = q
            .jobs(JobState::Waiting, after.as_deref(), 4)
            .await
            .unwrap();
        assert!(page.jobs.len() <= 4);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
    assert!(matches!(
        q.jobs(JobState::Waiting, Some("7/"), 4).await,
        Err(rill::Error::InvalidOption { .. })
    ));
    // The feed follows every partition's events: one completion in each.
    let mut feed = q.follow_events(None).await.unwrap();
    let worker = recording(&client, "listed", &Arc::new(Mutex::new(HashMap::new())));
    let mut completed = HashSet::new();
    let deadline = std::time::Instant::now() + T;
    while completed.len() < ids.len() {
        assert!(std::time::Instant::now() < deadline, "{completed:?}");
        for e in feed.next(100).await.unwrap() {
            if e.kind == "completed" {
                for id in e.fields["ids"].split(' ') {
                    completed.insert(id.to_owned());
                }
            }
        }
    }
    assert_eq!(completed, ids.iter().cloned().collect());
    worker.stop().await;
}
