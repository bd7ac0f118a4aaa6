//! Timeouts: a worker default and a per-job limit on how long one attempt runs. At the deadline the job's token
//! fires; a handler that ignores it is dropped shortly after, freeing its slot and its lease; the attempt fails
//! with a `timeout:` error and is retried like any failure.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rill::{Enqueue, Job, JobError, JobState, Worker};
use support::{TestRedis, eventually, fast, spawn_worker};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_honours_its_token_fails_the_attempt_as_a_timeout_and_is_retried() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let id = q.enqueue(&1).await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()).timeout(Duration::from_millis(200)),
        move |job: Job<u32>| {
            let seen = seen.clone();
            async move {
                assert_eq!(job.timeout(), Some(Duration::from_millis(200)));
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first attempt would run for a minute; it stops when its token fires.
                    tokio::select! {
                        _ = job.cancelled().cancelled() => return Err(JobError::retry("stopped")),
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
                Ok(job.attempt())
            }
        },
    );
    eventually(T, "completed on the second attempt", || async {
        q.state(&id).await.unwrap() == JobState::Completed
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let stats = w.stop().await;
    assert_eq!((stats.retried, stats.completed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_its_token_is_dropped_and_frees_its_slot() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    // Hangs on every attempt, ignoring its token; one attempt allowed.
    let hung = q
        .enqueue_with(&0, Enqueue::new().max_attempts(1))
        .await
        .unwrap();
    let next = q.enqueue(&1).await.unwrap();
    let t0 = Instant::now();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap())
            .concurrency(1)
            .prefetch(0)
            .timeout(Duration::from_millis(300)),
        move |job: Job<u32>| async move {
            if *job.data() == 0 {
                // Deaf to cancellation: only dropping the future stops it.
                std::future::pending::<()>().await;
            }
            Ok(())
        },
    );
    eventually(T, "the hung job dead-lettered", || async {
        q.state(&hung).await.unwrap() == JobState::Dead
    })
    .await;
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "exhausted");
    assert!(dead[0].error.starts_with("timeout:"), "{}", dead[0].error);
    // Its only slot went to the next job.
    eventually(T, "the next job completed", || async {
        q.state(&next).await.unwrap() == JobState::Completed
    })
    .await;
    // Deadline (300 ms) plus a grace of min(lease, crash_after) / 6 = 100 ms, well before any lease expiry
    // could have freed it (the lease kept being renewed while it hung).
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let stats = w.stop().await;
    assert_eq!((stats.dead, stats.completed, stats.reclaimed), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_timeout_overrides_the_worker_default_and_a_finished_handler_still_completes() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u64>("jobs").unwrap();
    // Runs 400 ms: too long for its own 100 ms limit, well within the worker's 10 s.
    let short = q
        .enqueue_with(
            &400,
            Enqueue::new()
                .timeout(Duration::from_millis(100))
                .max_attempts(1),
        )
        .await
        .unwrap();
    let plain = q.enqueue(&400).await.unwrap();
    // Returns Ok when its token fires: finished work completes even past the deadline.
    let finisher = q
        .enqueue_with(&1, Enqueue::new().timeout(Duration::from_millis(100)))
        .await
        .unwrap();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()).timeout(Duration::from_secs(10)),
        move |job: Job<u64>| async move {
            if *job.data() == 1 {
                job.cancelled().cancelled().await;
                return Ok(());
            }
            // Ignores the token.
            tokio::time::sleep(Duration::from_millis(*job.data())).await;
            Ok(())
        },
    );
    eventually(T, "all three ended", || async {
        q.state(&short).await.unwrap() == JobState::Dead
            && q.state(&plain).await.unwrap() == JobState::Completed
            && q.state(&finisher).await.unwrap() == JobState::Completed
    })
    .await;
    let info = q.job(&short).await.unwrap();
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or("")
            .starts_with("timeout:"),
        "{info:?}"
    );
    w.stop().await;
}

/// The queue's default limit (stored with the queue) applies to the jobs of a worker given none of its own; a
/// worker given its own keeps it; removing the default leaves jobs unlimited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_default_limit_applies_unless_the_worker_has_its_own() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    assert_eq!(q.default_timeout().await.unwrap(), None);
    q.set_default_timeout(Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(
        q.default_timeout().await.unwrap(),
        Some(Duration::from_millis(300))
    );
    let limits: Arc<std::sync::Mutex<Vec<Option<Duration>>>> = Arc::default();
    for own in [None, Some(Duration::from_secs(7))] {
        let seen = limits.clone();
        let mut worker = fast(Worker::new(client.clone(), "jobs").unwrap());
        if let Some(d) = own {
            worker = worker.timeout(d);
        }
        let w = spawn_worker(worker, move |job: Job<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.timeout());
                Ok(())
            }
        });
        let id = q.enqueue(&1).await.unwrap();
        eventually(T, "completed", || async {
            q.state(&id).await.unwrap() == JobState::Completed
        })
        .await;
        w.stop().await;
    }
    q.set_default_timeout(None).await.unwrap();
    assert_eq!(q.default_timeout().await.unwrap(), None);
    assert_eq!(
        *limits.lock().unwrap(),
        [
            Some(Duration::from_millis(300)),
            Some(Duration::from_secs(7))
        ]
    );
}
