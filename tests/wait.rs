//! Waiting for a job's outcome: completed (with its result), dead, cancelled, unknown, still pending at the
//! timeout; many waiters share one blocking read of the events; workers that write no `completed` events are
//! still seen (by the waiters' occasional state checks).

mod support;

use std::time::{Duration, Instant};

use rill::{Enqueue, Job, JobError, JobOutcome, JobState, Worker};
use support::{TestRedis, fast, spawn_worker};

const T: Duration = Duration::from_secs(20);

/// Redis's count of `XREAD` calls so far (every master's, on a cluster).
fn xreads(redis: &TestRedis) -> u64 {
    redis
        .every_node(redis::cmd("INFO").arg("commandstats"))
        .iter()
        .flat_map(|info| info.lines())
        .filter_map(|l| l.strip_prefix("cmdstat_xread:calls="))
        .filter_map(|rest| rest.split(',').next())
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_share_one_read_and_get_their_results() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let mut ids = Vec::new();
    for i in 0..50u32 {
        // Half named (records kept by id), half plain (found by their `completed` event).
        let id = if i % 2 == 0 {
            q.enqueue_with(&i, Enqueue::new().id(format!("job-{i}")))
                .await
                .unwrap()
        } else {
            q.enqueue(&i).await.unwrap()
        };
        ids.push((i, id));
    }
    let before = xreads(&redis);
    let waits: Vec<_> = ids
        .iter()
        .map(|(i, id)| {
            let (q, i, id) = (q.clone(), *i, id.clone());
            tokio::spawn(async move { (i, q.wait(&id, T).await.unwrap()) })
        })
        .collect();
    // The waiters are all listening before any job runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        |job: Job<u32>| async move { Ok(*job.data() * 10) },
    );
    for h in waits {
        let (i, outcome) = h.await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::Completed { .. }),
            "{i}: {outcome:?}"
        );
        assert_eq!(outcome.result::<u32>().unwrap(), Some(i * 10), "{i}");
    }
    // Told by the events, not by the state checks every 5 s that catch a missed event (which would take longer;
    // the jobs themselves take well under a second).
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    // One follower's blocking reads (each up to 1 s) and the worker's signal reads, not one read per waiter.
    let reads = xreads(&redis) - before;
    assert!(reads < 15, "{reads} XREAD calls for 50 waiters");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cancelled_unknown_pending_and_already_done() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    // Nothing runs yet: still waiting when the wait runs out.
    let waiting = q.enqueue(&1).await.unwrap();
    let t = Instant::now();
    assert_eq!(
        q.wait(&waiting, Duration::from_millis(300)).await.unwrap(),
        JobOutcome::Pending(JobState::Waiting)
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(q.wait("no-such-job", T).await.unwrap(), JobOutcome::Unknown);
    // Cancelled while delayed.
    let delayed = q
        .enqueue_with(&2, Enqueue::new().delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let wait = {
        let (q, id) = (q.clone(), delayed.clone());
        tokio::spawn(async move { q.wait(&id, T).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.cancel(&delayed).await.unwrap();
    assert_eq!(wait.await.unwrap(), JobOutcome::Cancelled);
    // Fails for good.
    let doomed = q
        .enqueue_with(&3, Enqueue::new().max_attempts(1))
        .await
        .unwrap();
    let wait = {
        let (q, id) = (q.clone(), doomed.clone());
        tokio::spawn(async move { q.wait(&id, T).await.unwrap() })
    };
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        |job: Job<u32>| async move {
            if *job.data() == 3 {
                return Err(JobError::permanent("no such mailbox"));
            }
            Ok(())
        },
    );
    assert_eq!(
        wait.await.unwrap(),
        JobOutcome::Dead {
            error: "no such mailbox".into()
        }
    );
    // Already over before the wait begins: at once.
    let t = Instant::now();
    assert!(matches!(
        q.wait(&waiting, T).await.unwrap(),
        JobOutcome::Completed { result: None }
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_completed_events_is_still_seen() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let id = q
        .enqueue_with(&7, Enqueue::new().id("quiet"))
        .await
        .unwrap();
    let wait = {
        let (q, id) = (q.clone(), id.clone());
        tokio::spawn(async move { q.wait(&id, T).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()).completed_events(false),
        |job: Job<u32>| async move { Ok(*job.data() + 1) },
    );
    let outcome = wait.await.unwrap();
    assert_eq!(outcome.result::<u32>().unwrap(), Some(8));
    w.stop().await;
}
