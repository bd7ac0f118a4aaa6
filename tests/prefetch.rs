//! Prefetch: deliveries taken beyond `concurrency` wait in the worker for a slot. They are held like running ones
//! (renewed, reached by signals), never run twice, and go back to the queue at shutdown without costing an attempt;
//! long jobs get no prefetch.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{CancelOutcome, Job, JobError, JobState, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(20);

/// (payload, attempt) of every handler run, in start order.
type Runs = Arc<Mutex<Vec<(u32, u32)>>>;

/// Runs job payloads as: `0` returns at once, anything else waits for `gate` to open. Records (payload, attempt).
fn gated(worker: Worker, gate: Arc<tokio::sync::Semaphore>) -> (support::Running, Runs) {
    let runs: Runs = Arc::default();
    let r = runs.clone();
    let running = spawn_worker(worker, move |job: Job<u32>| {
        let (gate, r) = (gate.clone(), r.clone());
        async move {
            r.lock().unwrap().push((*job.data(), job.attempt()));
            if *job.data() != 0 {
                tokio::select! {
                    p = gate.acquire() => p.unwrap().forget(),
                    _ = job.stopping().cancelled() => return Err(JobError::interrupted("stopping")),
                }
            }
            Ok::<_, JobError>(())
        }
    });
    (running, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_jobs_wait_their_turn_and_go_back_at_shutdown_without_an_attempt() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("pf").unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = Worker::new(client.clone(), "pf")
        .unwrap()
        .concurrency(1)
        .prefetch(8)
        .lease(Duration::from_millis(600))
        .shutdown_timeout(Duration::from_millis(300));
    let (running, runs) = gated(worker, gate.clone());
    // Quick jobs first: the worker learns that jobs are short, so it prefetches.
    q.enqueue_many(&[0, 0, 0]).await.unwrap();
    eventually(T, "quick jobs", || async {
        running.stats.snapshot().completed == 3
    })
    .await;
    let ids = q.enqueue_many(&[1, 2, 3, 4, 5]).await.unwrap();
    // One runs; the others are taken by this worker and wait for its one slot.
    eventually(T, "all five taken", || async {
        let c = q.counts().await.unwrap();
        c.waiting == 0 && c.active == 5
    })
    .await;
    assert_eq!(runs.lock().unwrap().len(), 4, "only one of them runs");
    // A waiting one, cancelled, ends without running.
    assert_eq!(q.cancel(&ids[4]).await.unwrap(), CancelOutcome::Signalled);
    eventually(T, "cancelled", || async {
        q.state(&ids[4]).await.unwrap() == JobState::Cancelled
    })
    .await;
    // Held past several leases: renewed, never taken over, never started twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(running.stats.snapshot().reclaimed, 0);
    gate.add_permits(1);
    eventually(T, "the next one runs", || async {
        runs.lock().unwrap().len() == 5
    })
    .await;
    let report = running.stop().await;
    // The running one yielded and the two still waiting went back: none cost an attempt.
    assert_eq!(report.released, 3, "{report:?}");
    assert_eq!(report.cancelled, 1);
    let runs_before = runs.lock().unwrap().clone();
    assert_eq!(&runs_before[3..], &[(1, 1), (2, 1)]);

    let (running, runs) = gated(
        Worker::new(client.clone(), "pf").unwrap().concurrency(4),
        gate.clone(),
    );
    gate.add_permits(10);
    eventually(T, "the rest completed", || async {
        running.stats.snapshot().completed == 3
    })
    .await;
    running.stop().await;
    let mut after = runs.lock().unwrap().clone();
    after.sort();
    assert_eq!(
        after,
        vec![(2, 1), (3, 1), (4, 1)],
        "each at its first attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_are_not_prefetched() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("long").unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (running, runs) = gated(
        Worker::new(client.clone(), "long")
            .unwrap()
            .concurrency(1)
            .prefetch(64),
        gate.clone(),
    );
    // Nothing is known of job length before one finishes: no prefetch.
    q.enqueue_many(&[1, 2, 3]).await.unwrap();
    eventually(T, "one running", || async {
        runs.lock().unwrap().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = q.counts().await.unwrap();
    assert_eq!((c.active, c.waiting), (1, 2), "{c:?}");
    // A job that ran for 300 ms: 100 ms of them is less than one, so still none beyond the one running.
    gate.add_permits(1);
    eventually(T, "second running", || async {
        runs.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = q.counts().await.unwrap();
    assert_eq!((c.active, c.waiting), (1, 1), "{c:?}");
    gate.add_permits(10);
    eventually(T, "all done", || async {
        running.stats.snapshot().completed == 3
    })
    .await;
    running.stop().await;
}
