//! rill on a Redis Cluster (`redis+cluster://` URLs): queues whose hash tags land on different masters are
//! produced to, worked and inspected through one client; every script runs on the node that owns its queue's
//! slot.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use rill::{Enqueue, Job, JobError, JobState, Worker};
use support::cluster::TestCluster;
use support::{eventually, fast, spawn_worker};

const T: Duration = Duration::from_secs(30);

fn cluster_client(cluster: &TestCluster) -> rill::Client {
    rill::Client::with_config(
        &cluster.url(),
        rill::ClientConfig {
            namespace: support::namespace(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_on_every_master_of_a_three_master_cluster_run_their_jobs() {
    let cluster = TestCluster::start(3);
    let client = cluster_client(&cluster);
    // Queue names whose hash tags land on each of the three masters.
    let mut names = Vec::new();
    let mut masters = HashSet::new();
    for i in 0.. {
        let name = format!("q{i}");
        let keys = rill::keys::QueueKeys::new(&client.config().namespace, &name).unwrap();
        if masters.insert(cluster.owner(&keys.ready)) {
            names.push(name);
        }
        if masters.len() == 3 {
            break;
        }
    }
    let mut ids = Vec::new();
    for name in &names {
        let q = client.queue::<u32>(name).unwrap();
        for n in 0..50 {
            ids.push((name.clone(), q.enqueue(&n).await.unwrap()));
        }
        let named = q
            .enqueue_with(&7, Enqueue::new().id("named").max_attempts(3))
            .await
            .unwrap();
        let later = q
            .enqueue_with(&8, Enqueue::new().delay(Duration::from_millis(300)))
            .await
            .unwrap();
        ids.push((name.clone(), named));
        ids.push((name.clone(), later));
    }
    // One worker per queue; the named job fails once, then completes.
    let workers: Vec<_> = names
        .iter()
        .map(|name| {
            spawn_worker(
                fast(Worker::new(client.clone(), name).unwrap()).concurrency(8),
                |job: Job<u32>| async move {
                    if job.id() == "named" && job.attempt() == 1 {
                        return Err(JobError::retry_after("once", Duration::from_millis(50)));
                    }
                    Ok(job.data() * 2)
                },
            )
        })
        .collect();
    for (name, id) in &ids {
        let q = client.queue::<u32>(name).unwrap();
        eventually(T, "every job completed", || async {
            q.state(id).await.unwrap() == JobState::Completed
        })
        .await;
    }
    for name in &names {
        let q = client.queue::<u32>(name).unwrap();
        assert_eq!(q.result::<u32>("named").await.unwrap(), Some(14));
        let c = q.counts().await.unwrap();
        assert_eq!(
            (c.waiting, c.active, c.delayed, c.dead),
            (0, 0, 0, 0),
            "{name}: {c:?}"
        );
    }
    let listed = client.queues().await.unwrap();
    for name in &names {
        assert!(listed.contains(name), "{listed:?}");
    }
    for w in workers {
        w.stop().await;
    }
}

/// Operator calls on a cluster queue: schedules (transactions and a `WATCH`ed change on the queue's node),
/// limits, waiting for a result, signals, dead letters, the registry, finding queues and removing them (`SCAN` on
/// every master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_calls_work_on_a_cluster() {
    let cluster = TestCluster::start(3);
    let client = cluster_client(&cluster);
    let q = client.queue::<u32>("ops").unwrap();
    let other = client.queue::<u32>("other").unwrap();
    other.enqueue(&1).await.unwrap();
    q.set_rate_limit(1000, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        q.rate_limit().await.unwrap(),
        Some((1000, Duration::from_secs(1)))
    );
    assert!(q.clear_rate_limit().await.unwrap());
    q.schedule("tick", rill::Schedule::every(Duration::from_secs(1)), &5)
        .await
        .unwrap();
    assert!(q.pause_schedule("tick").await.unwrap());
    assert!(q.schedule_info("tick").await.unwrap().unwrap().paused);
    assert!(q.resume_schedule("tick").await.unwrap());
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "ops").unwrap()),
        |job: Job<u32>| async move {
            if *job.data() == 13 {
                return Err(JobError::permanent("unlucky"));
            }
            Ok(*job.data())
        },
    );
    let id = q.enqueue(&21).await.unwrap();
    assert!(matches!(
        q.wait(&id, T).await.unwrap(),
        rill::JobOutcome::Completed { .. }
    ));
    let bad = q.enqueue(&13).await.unwrap();
    eventually(T, "dead-lettered", || async {
        q.state(&bad).await.unwrap() == JobState::Dead
    })
    .await;
    assert_eq!(q.dead_letters(None, 10).await.unwrap().len(), 1);
    eventually(T, "the schedule fired", || async {
        q.schedule_info("tick").await.unwrap().unwrap().fired >= 1
    })
    .await;
    assert!(q.remove_schedule("tick").await.unwrap());
    let workers = q.workers(&rill::HealthRule::default()).await.unwrap();
    assert_eq!(workers.len(), 1);
    q.pause().await.unwrap();
    w.stop().await;
    let mut found = client.discover_queues().await.unwrap();
    found.sort();
    assert_eq!(found, ["ops", "other"]);
    assert!(q.remove(true).await.unwrap() > 0);
    assert_eq!(client.discover_queues().await.unwrap(), ["other"]);
    assert!(client.remove_namespace().await.unwrap() > 0);
    assert!(client.discover_queues().await.unwrap().is_empty());
}

type Runs = std::sync::Arc<std::sync::Mutex<Vec<u32>>>;

/// `n` workers of `queue` that note each job's number as it runs (5 ms each).
fn recording_workers(
    client: &rill::Client,
    queue: &str,
    n: usize,
    runs: &Runs,
) -> Vec<support::Running> {
    (0..n)
        .map(|_| {
            let runs = runs.clone();
            spawn_worker(
                fast(Worker::new(client.clone(), queue).unwrap()).concurrency(4),
                move |job: Job<u32>| {
                    let runs = runs.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        runs.lock().unwrap().push(*job.data());
                        Ok(())
                    }
                },
            )
        })
        .collect()
}

/// A producer enqueueing jobs `0..jobs` to `queue`, one every few ms; a call that meets a move or a failover may
/// fail, and is tried again, as an application would. Returns the numbers accepted.
fn producing(client: &rill::Client, queue: &str, jobs: u32) -> tokio::task::JoinHandle<Vec<u32>> {
    let q = client.queue::<u32>(queue).unwrap();
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        for n in 0..jobs {
            for _ in 0..100 {
                if q.enqueue(&n).await.is_ok() {
                    accepted.push(n);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        accepted
    })
}

/// Waits until every accepted job ran, then stops the workers; prints how many runs there were (at least once: a
/// completion lost with a move may run a job again) and what the workers saw.
async fn all_ran(accepted: &[u32], runs: &Runs, workers: Vec<support::Running>) {
    eventually(T, "every accepted job ran", || async {
        let seen: HashSet<u32> = runs.lock().unwrap().iter().copied().collect();
        accepted.iter().all(|n| seen.contains(n))
    })
    .await;
    eprintln!(
        "{} runs of {} jobs",
        runs.lock().unwrap().len(),
        accepted.len()
    );
    for w in workers {
        let report = w.stop().await;
        eprintln!("worker: {report:?}");
    }
}

/// A live queue's slot moves to another master while a producer enqueues and two workers run (keys migrated two at
/// a time, so scripts meet `ASK` and `TRYAGAIN` for a while, then `MOVED`): every job accepted runs, and the
/// workers go on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_keeps_running_while_its_slot_moves_to_another_master() {
    let cluster = std::sync::Arc::new(TestCluster::start(3));
    let client = cluster_client(&cluster);
    let q = client.queue::<u32>("moving").unwrap();
    let ready = q.keys().ready.clone();
    let from = cluster.owner(&ready);
    let to = (from + 1) % 3;
    let runs = Runs::default();
    let workers = recording_workers(&client, "moving", 2, &runs);
    let producer = producing(&client, "moving", 600);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c2 = cluster.clone();
    let key = ready.clone();
    tokio::task::spawn_blocking(move || {
        c2.migrate_slot_of(&key, from, to, Duration::from_millis(20))
    })
    .await
    .unwrap();
    assert_eq!(cluster.owner(&ready), to, "the slot moved");
    let accepted = producer.await.unwrap();
    assert_eq!(accepted.len(), 600, "every enqueue landed in the end");
    all_ran(&accepted, &runs, workers).await;
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.waiting, c.active, c.delayed, c.dead),
        (0, 0, 0, 0),
        "{c:?}"
    );
}

/// The master of a live queue fails over to its replica (`CLUSTER FAILOVER` on the replica) while a producer
/// enqueues and a worker runs: every job accepted runs, and the worker goes on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_keeps_running_when_its_master_fails_over_to_its_replica() {
    let cluster = std::sync::Arc::new(TestCluster::start_with_replicas(3, true));
    let client = cluster_client(&cluster);
    let q = client.queue::<u32>("failing").unwrap();
    let master = cluster.owner(&q.keys().ready.clone());
    let runs = Runs::default();
    let workers = recording_workers(&client, "failing", 1, &runs);
    let producer = producing(&client, "failing", 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || c2.fail_over_to(master + 3))
        .await
        .unwrap();
    let accepted = producer.await.unwrap();
    assert_eq!(accepted.len(), 400, "every enqueue landed in the end");
    all_ran(&accepted, &runs, workers).await;
}
