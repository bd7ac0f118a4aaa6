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
