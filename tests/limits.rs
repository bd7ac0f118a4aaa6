//! A queue's limits hold across all its workers: never more starts in any window than the rate limit, measured
//! from when handlers started, and never more jobs running at once than the concurrency limit, measured from
//! when handlers started and ended; idle workers hold no share; clearing a limit lets jobs flow freely again.
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill::{Job, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_stay_within_the_rate_limit() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("api").unwrap();
    // At most 10 starts in any 500 ms.
    q.set_rate_limit(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(
        q.rate_limit().await.unwrap(),
        Some((10, Duration::from_millis(500)))
    );
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    // Workers wait idle first (they must not hold the limit's share while idle), with room for far more.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let started = started.clone();
            spawn_worker(
                Worker::new(client.clone(), "api")
                    .unwrap()
                    .concurrency(16)
                    .block(Duration::from_millis(200)),
                move |_job: Job<u32>| {
                    let started = started.clone();
                    async move {
                        started.lock().unwrap().push(Instant::now());
                        Ok(())
                    }
                },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t0 = Instant::now();
    let jobs: Vec<u32> = (0..50).collect();
    q.enqueue_many(&jobs).await.unwrap();
    eventually(T, "all 50 started", || async {
        started.lock().unwrap().len() == 50
    })
    .await;
    // 50 jobs at 10 per 500 ms: the last batch starts no earlier than 4 windows in.
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    let mut times = started.lock().unwrap().clone();
    times.sort();
    // Any 10 apart from each other by a full window (a little less: the handlers note their start a moment
    // after Redis counted it).
    for w in times.windows(11) {
        let span = w[10] - w[0];
        assert!(
            span >= Duration::from_millis(470),
            "11 starts within {span:?}"
        );
    }
    // The first 10 went at once (a burst up to the rate is allowed), spread over the idle workers.
    assert!(
        times[9] - times[0] < Duration::from_millis(300),
        "{:?}",
        times[9] - times[0]
    );

    // Cleared: the rest run as fast as they can (workers notice within about a second).
    assert!(q.clear_rate_limit().await.unwrap());
    assert_eq!(q.rate_limit().await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let more: Vec<u32> = (0..200).collect();
    let t1 = Instant::now();
    q.enqueue_many(&more).await.unwrap();
    eventually(T, "all 250 started", || async {
        started.lock().unwrap().len() == 250
    })
    .await;
    assert!(t1.elapsed() < Duration::from_secs(5), "{:?}", t1.elapsed());
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_never_run_more_jobs_at_once_than_the_concurrency_limit() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("api").unwrap();
    q.set_concurrency_limit(5).await.unwrap();
    assert_eq!(q.concurrency_limit().await.unwrap(), Some(5));
    // (start, end) of every handler run.
    let runs: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let runs = runs.clone();
            spawn_worker(
                Worker::new(client.clone(), "api")
                    .unwrap()
                    .concurrency(8)
                    .block(Duration::from_millis(200)),
                move |_job: Job<u32>| {
                    let runs = runs.clone();
                    async move {
                        let start = Instant::now();
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        runs.lock().unwrap().push((start, Instant::now()));
                        Ok(())
                    }
                },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs: Vec<u32> = (0..120).collect();
    q.enqueue_many(&jobs).await.unwrap();
    eventually(T, "all 120 ran", || async {
        runs.lock().unwrap().len() == 120
    })
    .await;
    let most = most_at_once(&runs.lock().unwrap());
    assert!(most <= 5, "{most} jobs ran at once under a limit of 5");
    // The limit is a ceiling the fleet reaches, not a trickle: jobs ending wake the others at once.
    assert_eq!(most, 5, "never 5 at once");

    // Cleared: 32 slots across the four workers run up to 32 at once (workers notice within about a second).
    assert!(q.clear_concurrency_limit().await.unwrap());
    assert_eq!(q.concurrency_limit().await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    runs.lock().unwrap().clear();
    q.enqueue_many(&jobs).await.unwrap();
    eventually(T, "all 120 ran again", || async {
        runs.lock().unwrap().len() == 120
    })
    .await;
    let most = most_at_once(&runs.lock().unwrap());
    assert!(
        most > 5,
        "still at most {most} at once after clearing the limit"
    );
    for w in workers {
        w.stop().await;
    }
}

/// The most runs that overlapped at any moment.
fn most_at_once(runs: &[(Instant, Instant)]) -> usize {
    let mut edges: Vec<(Instant, i32)> =
        runs.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // At the same instant, an end before a start: touching runs do not overlap.
    edges.sort_by_key(|(t, d)| (*t, *d));
    let mut now = 0;
    let mut most = 0;
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}
