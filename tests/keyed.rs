//! Per-key limits (SPEC §6h) across four workers: no key ever runs more jobs at once than its concurrency, nor
//! starts more in a window than its rate (both measured from when handlers ran), and a key with a backlog cannot
//! starve the others: held keys take turns. Held jobs are waiting jobs to every operator view, and flow out once
//! the limits are cleared.
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill::{Enqueue, Job, JobState, KeyLimit, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(60);

/// (tenant, start, end) of every handler run.
type Runs = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

fn workers(
    client: &rill::Client,
    queue: &str,
    runs: &Runs,
    each: Duration,
) -> Vec<support::Running> {
    (0..4)
        .map(|_| {
            let runs = runs.clone();
            spawn_worker(
                Worker::new(client.clone(), queue)
                    .unwrap()
                    .concurrency(4)
                    .block(Duration::from_millis(200)),
                move |job: Job<u32>| {
                    let runs = runs.clone();
                    async move {
                        let start = Instant::now();
                        let tenant =
                            String::from_utf8_lossy(job.header("x-tenant").unwrap_or(b"-"))
                                .into_owned();
                        tokio::time::sleep(each).await;
                        runs.lock().unwrap().push((tenant, start, Instant::now()));
                        Ok(())
                    }
                },
            )
        })
        .collect()
}

async fn enqueue(q: &rill::Queue<u32>, tenant: &str, n: u32) {
    for i in 0..n {
        q.enqueue_with(&i, Enqueue::new().header("x-tenant", tenant))
            .await
            .unwrap();
    }
}

/// The most runs of `tenant` that overlapped at any moment.
fn most_at_once(runs: &[(String, Instant, Instant)], tenant: &str) -> usize {
    let mut edges: Vec<(Instant, i32)> = runs
        .iter()
        .filter(|r| r.0 == tenant)
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // Ends before starts at the same instant: a slot handed on is not an overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlogged_key_cannot_starve_the_others_and_no_key_exceeds_its_concurrency() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("reports").unwrap();
    q.set_key_limit(&KeyLimit::new("x-tenant").concurrency(2))
        .await
        .unwrap();
    assert_eq!(
        q.key_limit().await.unwrap(),
        Some(KeyLimit::new("x-tenant").concurrency(2))
    );
    // Tenant "big" enqueues 120 jobs first; then "b" and "c" 10 each, and 10 jobs without a tenant.
    enqueue(&q, "big", 120).await;
    enqueue(&q, "b", 10).await;
    enqueue(&q, "c", 10).await;
    for i in 0..10 {
        q.enqueue(&i).await.unwrap();
    }
    let runs: Runs = Arc::default();
    let ws = workers(&client, "reports", &runs, Duration::from_millis(30));
    // Held jobs are waiting jobs: counted, listed and found.
    eventually(T, "jobs held back", || async {
        q.counts().await.unwrap().waiting > 0 && runs.lock().unwrap().len() > 4
    })
    .await;
    eventually(T, "b, c and the untenanted jobs ran", || async {
        let r = runs.lock().unwrap();
        ["b", "c", "-"]
            .iter()
            .all(|t| r.iter().filter(|x| x.0 == *t).count() == 10)
    })
    .await;
    let big_so_far = runs.lock().unwrap().iter().filter(|x| x.0 == "big").count();
    // With at most 2 of "big" at once, b and c (2 at once each, always with a backlog) finish their 10 while
    // "big" runs about as many: far from the 120 ahead of them in the stream.
    assert!(
        big_so_far <= 40,
        "{big_so_far} of big's jobs ran before b's and c's 10"
    );
    eventually(T, "all 150 ran", || async {
        runs.lock().unwrap().len() == 150
    })
    .await;
    let r = runs.lock().unwrap().clone();
    for t in ["big", "b", "c"] {
        let most = most_at_once(&r, t);
        assert!(most <= 2, "{t}: {most} at once under a per-key limit of 2");
    }
    // A ceiling that is reached, not a trickle.
    assert_eq!(most_at_once(&r, "big"), 2);
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active), (0, 0), "{c:?}");
    for w in ws {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_key_starts_more_than_its_rate_in_any_window() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("api").unwrap();
    // Each tenant: at most 5 starts in any 400 ms.
    q.set_key_limit(&KeyLimit::new("x-tenant").rate(5, Duration::from_millis(400)))
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    let ws = workers(&client, "api", &runs, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    enqueue(&q, "a", 20).await;
    enqueue(&q, "b", 20).await;
    eventually(T, "all 40 ran", || async {
        runs.lock().unwrap().len() == 40
    })
    .await;
    // 20 at 5 per 400 ms: the last start comes three windows in, for each tenant.
    assert!(
        t0.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        t0.elapsed()
    );
    let r = runs.lock().unwrap().clone();
    let mut by: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (t, s, _) in &r {
        by.entry(t.as_str()).or_default().push(*s);
    }
    for (t, mut times) in by {
        times.sort();
        // Any 6 starts of one tenant span a full window (a little less: handlers note their start a moment
        // after Redis counted it).
        for w in times.windows(6) {
            let span = w[5] - w[0];
            assert!(
                span >= Duration::from_millis(360),
                "{t}: 6 starts within {span:?}"
            );
        }
    }
    for w in ws {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_jobs_are_waiting_jobs_to_operators_and_flow_out_when_the_limit_goes() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("ops").unwrap();
    q.set_key_limit(&KeyLimit::new("x-tenant").concurrency(1))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = format!("job-{i}");
        q.enqueue_with(&i, Enqueue::new().id(&id).header("x-tenant", "a"))
            .await
            .unwrap();
        ids.push(id);
    }
    // One worker whose handler blocks until released: the first job runs, the rest are held once read.
    let release = Arc::new(tokio::sync::Notify::new());
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let w = {
        let (release, ran) = (release.clone(), ran.clone());
        spawn_worker(
            Worker::new(client.clone(), "ops")
                .unwrap()
                .concurrency(4)
                .block(Duration::from_millis(200)),
            move |job: Job<u32>| {
                let (release, ran) = (release.clone(), ran.clone());
                async move {
                    ran.lock().unwrap().push(job.id().to_owned());
                    release.notified().await;
                    Ok(())
                }
            },
        )
    };
    let conn = redis.aconn().await;
    eventually(T, "job-0 running, the others held", || async {
        let held: u64 = redis::cmd("ZCARD")
            .arg(q.keys().held.as_str())
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        ran.lock().unwrap().len() == 1 && held == 5
    })
    .await;
    assert_eq!(ran.lock().unwrap()[0], "job-0");
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active), (5, 1), "{c:?}");
    assert_eq!(q.job("job-3").await.unwrap().state, JobState::Waiting);
    let page = q.jobs(JobState::Waiting, None, 10).await.unwrap();
    let listed: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(listed, ["job-1", "job-2", "job-3", "job-4", "job-5"]);
    // A held job can be deleted and cancelled like any waiting one.
    assert!(matches!(
        q.delete("job-2").await.unwrap(),
        rill::Deleted::Removed(JobState::Waiting)
    ));
    // Removing the limits lets the held jobs go, with job-0 still running (their order is limit.lua's, tested
    // in tests/scripts/limit.rs: handlers started together here record their starts in any order).
    assert!(q.clear_key_limit().await.unwrap());
    assert_eq!(q.key_limit().await.unwrap(), None);
    eventually(T, "the held jobs run", || async {
        release.notify_waiters();
        ran.lock().unwrap().len() == 5
    })
    .await;
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["job-0", "job-1", "job-3", "job-4", "job-5"]);
    eventually(T, "all done", || async {
        release.notify_waiters();
        let c = q.counts().await.unwrap();
        c.waiting == 0 && c.active == 0
    })
    .await;
    w.stop().await;
}
