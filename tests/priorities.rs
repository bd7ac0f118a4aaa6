//! Priority levels across workers: level 0 is taken first, then 1, and so on (strict), or each level gets reads in
//! proportion to its weight (weighted); retries, recovery after a crash and operator calls keep a job on its level.
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Enqueue, Job, JobError, JobState, Priorities, Worker};
use support::{TestRedis, eventually, fast, spawn_worker};

const T: Duration = Duration::from_secs(30);

/// A private Redis, a client on it and queue `work` with `levels` strict priority levels.
async fn strict_queue(levels: u8) -> (TestRedis, rill::Client, rill::Queue<u8>) {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u8>("work").unwrap();
    q.set_priorities(&Priorities::strict(levels).unwrap())
        .await
        .unwrap();
    (redis, client, q)
}

/// Enqueues `per_level` jobs on each of `levels` levels, interleaved (level 0, 1, 2, 0, 1, 2, ...); the payload is
/// the level.
async fn fill(q: &rill::Queue<u8>, levels: u8, per_level: usize) {
    for _ in 0..per_level {
        for level in (0..levels).rev() {
            q.enqueue_with(&level, Enqueue::new().priority(level))
                .await
                .unwrap();
        }
    }
}

/// Starts `n` workers of `concurrency` each (no prefetch) that note each job's level as its handler starts.
fn recorders(
    client: &rill::Client,
    n: usize,
    concurrency: usize,
    started: &Arc<Mutex<Vec<u8>>>,
) -> Vec<support::Running> {
    (0..n)
        .map(|_| {
            let started = started.clone();
            spawn_worker(
                fast(Worker::new(client.clone(), "work").unwrap())
                    .concurrency(concurrency)
                    .prefetch(0),
                move |job: Job<u8>| {
                    let started = started.clone();
                    async move {
                        assert_eq!(job.delivery().level, *job.data());
                        started.lock().unwrap().push(*job.data());
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok(())
                    }
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_takes_the_levels_strictly_in_order() {
    let (_redis, client, q) = strict_queue(3).await;
    fill(&q, 3, 10).await;
    let started: Arc<Mutex<Vec<u8>>> = Arc::default();
    let workers = recorders(&client, 1, 1, &started);
    eventually(T, "all 30 ran", || async {
        started.lock().unwrap().len() == 30
    })
    .await;
    let order = started.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "by level, not by enqueue order");
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_start_lower_levels_only_once_higher_ones_are_taken() {
    let (_redis, client, q) = strict_queue(3).await;
    fill(&q, 3, 60).await;
    let started: Arc<Mutex<Vec<u8>>> = Arc::default();
    let workers = recorders(&client, 4, 4, &started);
    eventually(T, "all 180 ran", || async {
        started.lock().unwrap().len() == 180
    })
    .await;
    let order = started.lock().unwrap().clone();
    // A level is read only once the levels before it are empty, so at most what the 16 slots held when that
    // happened can start after it (in enqueue order, about 40 level-0 jobs would start after the first level-2).
    for (high, low) in [(0u8, 1u8), (1, 2), (0, 2)] {
        let first_low = order.iter().position(|l| *l == low).unwrap();
        let late = order[first_low..].iter().filter(|l| **l == high).count();
        assert!(
            late <= 16,
            "{late} level-{high} jobs started after the first level-{low}: {order:?}"
        );
    }
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_levels_share_the_reads_and_strict_ones_do_not() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u8>("work").unwrap();
    for (priorities, low_share) in [
        (Priorities::weighted(&[3, 1]).unwrap(), 15..=35),
        (Priorities::strict(2).unwrap(), 0..=0),
    ] {
        q.set_priorities(&priorities).await.unwrap();
        fill(&q, 2, 150).await;
        let started: Arc<Mutex<Vec<u8>>> = Arc::default();
        let workers = recorders(&client, 1, 1, &started);
        eventually(T, "100 ran", || async {
            started.lock().unwrap().len() >= 100
        })
        .await;
        let low = started.lock().unwrap()[..100]
            .iter()
            .filter(|l| **l == 1)
            .count();
        assert!(
            low_share.contains(&low),
            "{priorities:?}: level 1 got {low} of the first 100 starts"
        );
        for w in workers {
            w.stop().await;
        }
        q.drain().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_and_recovery_keep_a_job_on_its_level() {
    let (_redis, client, q) = strict_queue(3).await;
    let retried = q
        .enqueue_with(&0, Enqueue::new().priority(2).id("retried"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(String, u8, u32)>>> = Arc::default();
    // A worker that fails each job's first attempt and hangs on "stuck" until it is crashed.
    let record = |seen: Arc<Mutex<Vec<(String, u8, u32)>>>, hang: bool| {
        move |job: Job<u8>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((
                    job.id().to_owned(),
                    job.delivery().level,
                    job.attempt(),
                ));
                if job.id() == "stuck" && hang {
                    std::future::pending::<()>().await;
                }
                if job.id() == "retried" && job.attempt() == 1 {
                    return Err(JobError::retry_after(
                        "once more",
                        Duration::from_millis(10),
                    ));
                }
                Ok(())
            }
        }
    };
    let a = spawn_worker(
        fast(Worker::new(client.clone(), "work").unwrap()),
        record(seen.clone(), true),
    );
    eventually(T, "retried completed", || async {
        q.state(&retried).await.unwrap() == JobState::Completed
    })
    .await;
    q.enqueue_with(&0, Enqueue::new().priority(1).id("stuck"))
        .await
        .unwrap();
    eventually(T, "stuck running", || async {
        q.state("stuck").await.unwrap() == JobState::Active
    })
    .await;
    a.crash();
    let b = spawn_worker(
        fast(Worker::new(client.clone(), "work").unwrap()),
        record(seen.clone(), false),
    );
    eventually(T, "stuck completed elsewhere", || async {
        q.state("stuck").await.unwrap() == JobState::Completed
    })
    .await;
    b.stop().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("retried".to_owned(), 2, 1),
            ("retried".to_owned(), 2, 2),
            ("stuck".to_owned(), 1, 1),
            ("stuck".to_owned(), 1, 2),
        ]
    );
}

#[tokio::test]
async fn operators_see_and_steer_every_level() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u8>("work").unwrap();
    assert!(matches!(
        q.enqueue_with(&0, Enqueue::new().priority(1)).await,
        Err(rill::Error::NoSuchPriority {
            priority: 1,
            levels: 1,
            ..
        })
    ));
    q.set_priorities(&Priorities::strict(3).unwrap())
        .await
        .unwrap();
    assert_eq!(
        q.priorities().await.unwrap(),
        Priorities::strict(3).unwrap()
    );
    let mut ids = Vec::new();
    for level in 0..3u8 {
        for _ in 0..2 {
            ids.push(
                q.enqueue_with(&level, Enqueue::new().priority(level))
                    .await
                    .unwrap(),
            );
        }
    }
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.waiting, 6);
    assert!(counts.oldest_waiting_ms.is_some());
    // Listed level by level, three at a time.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = q
            .jobs(JobState::Waiting, after.as_deref(), 3)
            .await
            .unwrap();
        listed.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, ids);
    // A level-2 job: its state, its details, deleting it.
    let info = q.job(&ids[5]).await.unwrap();
    assert_eq!(info.state, JobState::Waiting);
    assert_eq!(info.priority, 2);
    assert_eq!(info.payload, Some(vec![2]));
    assert!(matches!(
        q.delete(&ids[5]).await.unwrap(),
        rill::Deleted::Removed(JobState::Waiting)
    ));
    assert_eq!(q.state(&ids[5]).await.unwrap(), JobState::Unknown);
    // A level still holding jobs cannot go.
    assert!(matches!(
        q.set_priorities(&Priorities::strict(2).unwrap()).await,
        Err(rill::Error::LevelInUse { level: 2, .. })
    ));
    // Drained on every level, then it can.
    let drained = q.drain().await.unwrap();
    assert_eq!(drained.waiting, 5);
    assert_eq!(q.counts().await.unwrap().waiting, 0);
    q.set_priorities(&Priorities::strict(2).unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_added_to_two_levels_at_once_while_a_worker_waits_each_run_once() {
    let (redis, client, q) = strict_queue(2).await;
    let seen: Arc<Mutex<Vec<(u8, u32)>>> = Arc::default();
    let w = {
        let seen = seen.clone();
        spawn_worker(
            fast(Worker::new(client.clone(), "work").unwrap())
                .concurrency(1)
                .prefetch(0)
                .block(Duration::from_secs(5)),
            move |job: Job<u8>| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push((job.delivery().level, job.attempt()));
                    Ok(())
                }
            },
        )
    };
    // Let the worker block on both levels, then add one job to each at once (MULTI). Redis (7.0 and 8.2 alike)
    // serves the blocked read from the stream that got an entry first, here level 1; a server that served both
    // would bring one more than the worker has room for, which it hands back at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = rill::keys::QueueKeys::new(&client.config().namespace, "work").unwrap();
    let payload = rill::wire::encode(&0u8).unwrap();
    let mut conn = redis.aconn().await;
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(keys.level(1))
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&payload)
        .arg("priority")
        .arg("1")
        .cmd("XADD")
        .arg(keys.level(0))
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&payload)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(T, "both ran", || async { seen.lock().unwrap().len() == 2 }).await;
    let report = w.stop().await;
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![(0, 1), (1, 1)],
        "each once, at its first attempt"
    );
    assert!(report.released <= 1, "{report:?}");
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_workers_follow_a_change_of_levels() {
    let (redis, client, q) = strict_queue(3).await;
    let started: Arc<Mutex<Vec<u8>>> = Arc::default();
    let workers = recorders(&client, 2, 2, &started);
    q.enqueue_with(&2, Enqueue::new().priority(2))
        .await
        .unwrap();
    eventually(T, "the level-2 job done", || async {
        let c = q.counts().await.unwrap();
        started.lock().unwrap().len() == 1 && c.active == 0 && c.waiting == 0
    })
    .await;
    // Fewer levels while the workers wait on all three: level 2's stream goes, and stays gone.
    q.set_priorities(&Priorities::strict(2).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for level in [1u8, 0] {
        q.enqueue_with(&level, Enqueue::new().priority(level))
            .await
            .unwrap();
    }
    eventually(T, "the new jobs ran", || async {
        started.lock().unwrap().len() == 3
    })
    .await;
    let keys = rill::keys::QueueKeys::new(&client.config().namespace, "work").unwrap();
    let mut conn = redis.aconn().await;
    let exists: bool = redis::AsyncCommands::exists(&mut conn, keys.level(2))
        .await
        .unwrap();
    assert!(!exists, "no worker recreated the dropped level's stream");
    // More levels again: the workers read the new one within a second or so.
    q.set_priorities(&Priorities::strict(4).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    q.enqueue_with(&3, Enqueue::new().priority(3))
        .await
        .unwrap();
    eventually(T, "the level-3 job ran", || async {
        started.lock().unwrap().len() == 4
    })
    .await;
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_enqueues_on_its_level() {
    let (_redis, client, q) = strict_queue(3).await;
    let every = rill::Schedule::every(Duration::from_secs(1)).priority(2);
    let info = q.schedule("tick", every, &2).await.unwrap();
    assert_eq!(info.schedule.level(), 2);
    let seen: Arc<Mutex<Vec<(String, u8)>>> = Arc::default();
    let w = {
        let seen = seen.clone();
        spawn_worker(
            fast(Worker::new(client.clone(), "work").unwrap()),
            move |job: Job<u8>| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push((job.id().to_owned(), job.delivery().level));
                    Ok(())
                }
            },
        )
    };
    eventually(T, "a fire ran", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    w.stop().await;
    let (id, level) = seen.lock().unwrap()[0].clone();
    assert_eq!(level, 2);
    assert!(id.ends_with("@2"), "an unnamed level-2 job: {id}");
    assert!(
        q.schedule(
            "bad",
            rill::Schedule::every(Duration::from_secs(1)).priority(16),
            &0
        )
        .await
        .is_err()
    );
}

/// A level found drained is read in the same round trip as the next one: jobs added to it later still start first
/// (at most what the slots and that one read held start after them), and the entries the shared round trip brought
/// beyond the room are kept, not handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_level_that_fills_again_still_goes_first_and_nothing_is_handed_back() {
    let (_redis, client, q) = strict_queue(3).await;
    for _ in 0..60 {
        q.enqueue_with(&2, Enqueue::new().priority(2))
            .await
            .unwrap();
    }
    let started: Arc<Mutex<Vec<u8>>> = Arc::default();
    let workers = recorders(&client, 1, 4, &started);
    eventually(T, "ten level-2 jobs ran", || async {
        started.lock().unwrap().len() >= 10
    })
    .await;
    for _ in 0..8 {
        q.enqueue_with(&0, Enqueue::new().priority(0))
            .await
            .unwrap();
    }
    let added_at = started.lock().unwrap().len();
    eventually(T, "all 68 ran", || async {
        started.lock().unwrap().len() == 68
    })
    .await;
    let order = started.lock().unwrap().clone();
    let last_high = order.iter().rposition(|l| *l == 0).unwrap();
    let low_between = order[added_at..last_high]
        .iter()
        .filter(|l| **l == 2)
        .count();
    // The 4 slots' jobs, and at most 4 more read with the level-0 ones (kept, started after them).
    assert!(
        low_between <= 8,
        "{low_between} level-2 jobs started between the level-0 ones: {order:?}"
    );
    let report = workers.into_iter().next().unwrap().stop().await;
    assert_eq!(report.released, 0, "nothing read was handed back");
}
