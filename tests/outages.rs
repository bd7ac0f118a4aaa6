//! Faults a healthy Redis can bring to a worker: network faults injected by a TCP fault proxy
//! (tests/support/proxy.rs: connections that stop forwarding without closing, one-way black holes, resets) and
//! memory pressure (`maxmemory` with `noeviction`). A proxy fronts one server and `maxmemory` is one server's, so
//! those tests run on one also when the suite runs on clusters.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::proxy::FaultProxy;
use support::{TestRedis, eventually, spawn_worker};

/// A client through `proxy` in `namespace`, with a short response timeout so faults show quickly.
fn client_via(proxy: &FaultProxy, namespace: &str) -> rill::Client {
    rill::Client::with_config(
        &proxy.url(),
        rill::ClientConfig {
            namespace: namespace.to_owned(),
            response_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Runs `worker` with a handler that counts the runs of each job (its payload is its number).
fn counting(worker: rill::Worker) -> (support::Running, Arc<Mutex<HashMap<u64, u32>>>) {
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let r = runs.clone();
    let running = spawn_worker(worker, move |job: rill::Job<u64>| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(*job.data()).or_default() += 1;
            Ok(())
        }
    });
    (running, runs)
}

/// A client straight to `redis` in `namespace` (the producer side, unaffected by the proxy).
fn client_direct(redis: &TestRedis, namespace: &str) -> rill::Client {
    rill::Client::with_config(
        &redis.client_url(),
        rill::ClientConfig {
            namespace: namespace.to_owned(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_replaced_and_jobs_complete_once() {
    let redis = TestRedis::start_single();
    let proxy = FaultProxy::start(redis.port()).await;
    let ns = support::namespace();
    let worker = rill::Worker::new(client_via(&proxy, &ns), "q")
        .unwrap()
        .concurrency(8)
        .lease(Duration::from_secs(3));
    let (running, runs) = counting(worker);
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&0).await.unwrap();
    eventually(Duration::from_secs(10), "the first job", || async {
        running.stats.snapshot().completed == 1
    })
    .await;

    // Every connection the worker has open now stops forwarding, both ways, without closing.
    assert!(proxy.connections() >= 3, "{}", proxy.connections());
    proxy.freeze_existing();
    for i in 1..=50u64 {
        queue.enqueue(&i).await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "50 jobs enqueued after the freeze",
        || async { running.stats.snapshot().completed == 51 },
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 51);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 0), "{counts:?}");
    proxy.heal();
    running.stop().await;
}

/// Fills Redis past `maxmemory` (a script without the shebang may write past the limit) and sets the limit, so
/// every denied-under-OOM command fails until the filler is deleted.
async fn fill_memory(c: &mut support::AConn) {
    let _: () = redis::cmd("EVAL")
        .arg("for i = 1, 8000 do redis.call('SET', 'filler:' .. i, string.rep('x', 256)) end")
        .arg(0)
        .query_async(c)
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    // The filler holds about 2.7 MB: the limit sits 1.5 MB under what is used now, so Redis is full until the
    // filler goes, and has room again after.
    let limit = (used - 1536 * 1024).to_string();
    for (k, v) in [
        ("maxmemory-policy", "noeviction"),
        ("maxmemory", limit.as_str()),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(c)
            .await
            .unwrap();
    }
    let r: redis::RedisResult<()> = redis::cmd("SET").arg("probe").arg("1").query_async(c).await;
    assert_eq!(r.unwrap_err().code(), Some("OOM"), "Redis must be full now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_maxmemory_a_worker_starts_completes_every_job_once_and_producers_get_a_retryable_error()
{
    let redis = TestRedis::start_single();
    let ns = support::namespace();
    let client = client_direct(&redis, &ns);
    let queue = client.queue::<u64>("q").unwrap();
    let ids = queue
        .enqueue_many(&(0..300).collect::<Vec<u64>>())
        .await
        .unwrap();
    let mut c = redis.aconn().await;
    support::create_group(&mut c, queue.keys()).await;
    fill_memory(&mut c).await;

    let refused = queue.enqueue(&999).await.unwrap_err();
    assert!(
        refused.is_out_of_memory() && refused.is_retryable(),
        "{refused}"
    );

    // Started while Redis is full: it must run, and its completions (which free memory) must land.
    let worker = rill::Worker::new(client_direct(&redis, &ns), "q")
        .unwrap()
        .concurrency(16);
    let (running, runs) = counting(worker);
    eventually(
        Duration::from_secs(20),
        "300 jobs completed at maxmemory",
        || async { running.stats.snapshot().completed == 300 },
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 300);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice");
    assert_eq!(running.stats.snapshot().stale, 0);
    let counts = queue.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.dead),
        (0, 0, 0),
        "{counts:?}"
    );
    assert!(matches!(
        queue.state(&ids[0]).await.unwrap(),
        rill::JobState::Completed | rill::JobState::Unknown
    ));

    // Memory freed: producers go on, and the same worker takes the new job.
    let _: () = redis::cmd("EVAL")
        .arg("for i = 1, 8000 do redis.call('DEL', 'filler:' .. i) end")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    queue.enqueue(&1000).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "a job enqueued after memory was freed",
        || async { running.stats.snapshot().completed == 301 },
    )
    .await;
    running.stop().await;
}

/// Creates ACL user `w` with every permission (tests take some away later) and returns a client logged in as it.
async fn as_acl_user(
    admin: &mut support::AConn,
    redis: &TestRedis,
    namespace: &str,
) -> rill::Client {
    acl(admin, "w", &["on", ">pw", "~*", "&*", "+@all"]).await;
    let url = redis.client_url_as("w", "pw");
    rill::Client::with_config(
        &url,
        rill::ClientConfig {
            namespace: namespace.to_owned(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Sets `rules` on ACL user `user`.
async fn acl(c: &mut support::AConn, user: &str, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rules)
        .query_async(c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_completions_are_refused_holds_them_takes_nothing_and_says_degraded() {
    support::trace();
    let redis = TestRedis::start();
    let ns = support::namespace();
    let mut admin = redis.aconn().await;
    let client = as_acl_user(&mut admin, &redis, &ns).await;
    // No prefetch: with room for 2 only, the jobs it cannot complete stay visibly in Redis (a prefetch could take
    // every one of them before the first refused ack, and "it took nothing more" would prove nothing).
    let worker = rill::Worker::new(client, "q")
        .unwrap()
        .concurrency(2)
        .prefetch(0);
    let (running, runs) = counting(worker);
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&0).await.unwrap();
    eventually(Duration::from_secs(10), "the first job", || async {
        running.stats.snapshot().completed == 1
    })
    .await;

    // ack.lua's XACK is refused from now on (reads, leases and beats still work): the next job's completion is
    // refused, and the worker says so.
    acl(&mut admin, "w", &["-xack"]).await;
    queue.enqueue(&1).await.unwrap();
    let rule = rill::HealthRule::default();
    eventually(
        Duration::from_secs(10),
        "the worker reports itself degraded",
        || async {
            queue.workers(&rule).await.unwrap().iter().any(|(w, h)| {
                w.id == running.consumer
                    && matches!(h, rill::Health::Degraded(r) if r.contains("ack.lua"))
            })
        },
    )
    .await;
    // Jobs that come now stay waiting: a worker that cannot complete takes nothing more.
    for i in 2..=11u64 {
        queue.enqueue(&i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = queue.counts().await.unwrap();
    assert_eq!(
        counts.waiting, 10,
        "it took jobs it cannot complete: {counts:?}"
    );
    assert_eq!(running.stats.snapshot().completed, 1);

    // Completions allowed again: the held one lands, the rest run, each once.
    acl(&mut admin, "w", &["+xack"]).await;
    eventually(Duration::from_secs(20), "all 12 jobs completed", || async {
        running.stats.snapshot().completed >= 12
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 12);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    eventually(Duration::from_secs(5), "healthy again", || async {
        queue
            .workers(&rule)
            .await
            .unwrap()
            .iter()
            .any(|(w, h)| w.id == running.consumer && *h == rill::Health::Healthy)
    })
    .await;
    running.stop().await;
}

/// One handler run: which worker, when it started, when it ended (returned or was dropped).
#[derive(Debug, Clone)]
struct Run {
    worker: &'static str,
    start: std::time::Instant,
    end: Option<std::time::Instant>,
}

/// Records the end of a run when the handler's future finishes or is dropped.
struct EndOfRun(Arc<Mutex<Vec<Run>>>, usize);

impl Drop for EndOfRun {
    fn drop(&mut self) {
        self.0.lock().unwrap()[self.1].end = Some(std::time::Instant::now());
    }
}

/// A handler that ignores cancellation for `work` (the worst case for fencing) and logs its runs.
fn logging_handler(
    worker: &'static str,
    runs: Arc<Mutex<Vec<Run>>>,
    work: Duration,
) -> impl Fn(rill::Job<u64>) -> futures::future::BoxFuture<'static, rill::JobResult<()>>
+ Send
+ Sync
+ 'static {
    move |_job: rill::Job<u64>| {
        let runs = runs.clone();
        Box::pin(async move {
            let i = {
                let mut r = runs.lock().unwrap();
                r.push(Run {
                    worker,
                    start: std::time::Instant::now(),
                    end: None,
                });
                r.len() - 1
            };
            let _end = EndOfRun(runs, i);
            tokio::time::sleep(work).await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_longer_than_crash_after_never_runs_a_job_twice_at_once_even_with_a_long_lease() {
    let redis = TestRedis::start_single();
    let proxy = FaultProxy::start(redis.port()).await;
    let ns = support::namespace();
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    // A: behind the proxy, a 30 s lease; registry-driven takeover after crash_after (3 s) applies all the same.
    let a = spawn_worker(
        rill::Worker::new(client_via(&proxy, &ns), "q")
            .unwrap()
            .concurrency(1)
            .lease(Duration::from_secs(30)),
        logging_handler("a", runs.clone(), Duration::from_secs(8)),
    );
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&1).await.unwrap();
    eventually(Duration::from_secs(10), "a runs the job", || async {
        !runs.lock().unwrap().is_empty()
    })
    .await;
    let b = spawn_worker(
        rill::Worker::new(client_direct(&redis, &ns), "q")
            .unwrap()
            .concurrency(1)
            .lease(Duration::from_secs(30)),
        logging_handler("b", runs.clone(), Duration::from_millis(200)),
    );
    // Every connection of A, open or new, black-holed both ways for 6 s.
    let blocked = support::proxy::Flow {
        blocked: true,
        ..Default::default()
    };
    proxy.set_all(support::proxy::Faults {
        up: blocked,
        down: blocked,
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();
    eventually(Duration::from_secs(20), "the job completed", || async {
        a.stats.snapshot().completed + b.stats.snapshot().completed == 1
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    let first = &runs[0];
    assert_eq!(first.worker, "a");
    let a_end = first.end.expect("a's run was stopped");
    for later in &runs[1..] {
        assert!(
            later.start >= a_end,
            "two runs at once: a ran until {:?} after its start, {} started {:?} after it",
            a_end - first.start,
            later.worker,
            later.start - first.start
        );
    }
    assert!(
        a_end - first.start < Duration::from_secs(5),
        "a's handler was not stopped: {runs:?}"
    );
    println!(
        "blip: a's run stopped {:?} after it started; the next run started {:?} after it",
        a_end - first.start,
        runs.get(1).map(|r| (r.worker, r.start - first.start))
    );
    assert_eq!(a.stats.snapshot().fenced, 1);
    assert_eq!(a.stats.snapshot().completed, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_assigned_by_a_read_the_worker_never_saw_cost_no_attempt() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    let attempts: Arc<Mutex<HashMap<u64, Vec<u32>>>> = Arc::default();
    let a = attempts.clone();
    let worker = rill::Worker::new(client_direct(&redis, &ns), "q")
        .unwrap()
        .lease(Duration::from_secs(1))
        .reclaim_interval(Duration::from_millis(200));
    let consumer = worker.consumer().to_owned();
    let running = spawn_worker(worker, move |job: rill::Job<u64>| {
        let a = a.clone();
        async move {
            a.lock()
                .unwrap()
                .entry(*job.data())
                .or_default()
                .push(job.attempt());
            Ok(())
        }
    });
    // Held back by a paused queue, the worker reads nothing while a "late" read, issued in its name and
    // executed by Redis after the worker gave up on it, assigns three jobs to it. The pause comes while the
    // worker is blocked in a read, which it then gives up on: the read the late one stands for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue.pause().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5u64 {
        queue
            .enqueue_with(&i, rill::Enqueue::new().max_attempts(1))
            .await
            .unwrap();
    }
    let mut c = redis.aconn().await;
    let phantom: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(rill::keys::GROUP)
        .arg(&consumer)
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(&queue.keys().ready)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(rill::wire::parse_read_reply(phantom).unwrap().len(), 3);
    // Past the lease: a reclaim would now count those deliveries as stalled attempts (and, with one attempt
    // allowed, dead-letter jobs that never ran).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    queue.resume().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "all five jobs completed",
        || async { running.stats.snapshot().completed == 5 },
    )
    .await;
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 5);
    assert!(
        attempts.values().all(|a| a == &vec![1]),
        "every job ran once, as its first attempt: {attempts:?}"
    );
    assert_eq!(queue.counts().await.unwrap().dead, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopping_while_completions_are_refused_gives_up_a_lease_later() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let mut admin = redis.aconn().await;
    let client = as_acl_user(&mut admin, &redis, &ns).await;
    let worker = rill::Worker::new(client, "q")
        .unwrap()
        .lease(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_millis(200));
    // Job 1 completes, job 2 fails, job 3 yields: none of those endings can be written.
    let running = spawn_worker(worker.concurrency(3), |job: rill::Job<u64>| async move {
        match *job.data() {
            2 => Err(rill::JobError::retry("boom")),
            3 => Err(rill::JobError::interrupted("yield")),
            _ => Ok(()),
        }
    });
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    let rule = rill::HealthRule::default();
    eventually(Duration::from_secs(10), "started", || async {
        !queue.workers(&rule).await.unwrap().is_empty()
    })
    .await;
    acl(&mut admin, "w", &["-xack"]).await;
    queue.enqueue_many(&[1, 2, 3]).await.unwrap();
    eventually(Duration::from_secs(10), "degraded", || async {
        queue
            .workers(&rule)
            .await
            .unwrap()
            .iter()
            .any(|(_, h)| matches!(h, rill::Health::Degraded(_)))
    })
    .await;
    let t = std::time::Instant::now();
    let report = running.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown gave up a lease after it began: {:?}",
        t.elapsed()
    );
    assert_eq!(
        (report.completed, report.retried, report.released),
        (0, 0, 0)
    );
    // The jobs were not lost: still pending, reclaimed by the next worker once its lease lapses.
    acl(&mut admin, "w", &["+xack"]).await;
    let next = spawn_worker(
        rill::Worker::new(client_direct(&redis, &ns), "q")
            .unwrap()
            .lease(Duration::from_secs(1))
            .reclaim_interval(Duration::from_millis(200)),
        |_job: rill::Job<u64>| async { Ok(()) },
    );
    eventually(
        Duration::from_secs(10),
        "the jobs completed by the next worker",
        || async { next.stats.snapshot().completed == 3 },
    )
    .await;
    next.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_reset_and_redis_unreachable_for_a_while_loses_nothing() {
    let redis = TestRedis::start_single();
    let proxy = FaultProxy::start(redis.port()).await;
    let ns = support::namespace();
    let worker = rill::Worker::new(client_via(&proxy, &ns), "q")
        .unwrap()
        .concurrency(4);
    let (running, runs) = counting(worker);
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&0).await.unwrap();
    eventually(Duration::from_secs(10), "the first job", || async {
        running.stats.snapshot().completed == 1
    })
    .await;
    // Every connection reset, and none accepted for 1.5 s (shorter than crash_after: nothing is taken over).
    proxy.refuse_new(true);
    proxy.reset();
    for i in 1..=20u64 {
        queue.enqueue(&i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.refuse_new(false);
    eventually(Duration::from_secs(20), "21 jobs completed", || async {
        running.stats.snapshot().completed == 21
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 21);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_outlives_failed_renewals_and_completes_once() {
    let redis = TestRedis::start_single();
    let proxy = FaultProxy::start(redis.port()).await;
    let ns = support::namespace();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let worker = rill::Worker::new(client_via(&proxy, &ns), "q")
        .unwrap()
        .lease(Duration::from_millis(1500));
    let running = spawn_worker(worker, move |_job: rill::Job<u64>| {
        let r = r.clone();
        async move {
            r.notified().await;
            Ok(())
        }
    });
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&1).await.unwrap();
    // A renewal lands (the keeper has its connection), then every connection drops and none is accepted
    // for most of a renewal period and beyond: renewals fail, then cannot connect.
    eventually(Duration::from_secs(10), "a renewal", || async {
        queue.counts().await.unwrap().active == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.refuse_new(true);
    proxy.reset();
    // At least one renewal fails. A second (cannot connect) falls due at two thirds of the lease, the very moment
    // the watcher gives an unrenewed job up, so whether it is attempted is a coin toss the test does not rely on.
    eventually(Duration::from_secs(10), "failed renewals", || async {
        running.stats.snapshot().lease_failures >= 1
    })
    .await;
    proxy.refuse_new(false);
    // However the outage ended for it (renewed in time, or fenced and handed back), the job completes once.
    eventually(Duration::from_secs(20), "completed", || async {
        release.notify_waiters();
        running.stats.snapshot().completed == 1
    })
    .await;
    running.stop().await;
    assert_eq!(queue.counts().await.unwrap().active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_under_a_running_worker_is_recreated_and_runs_new_jobs() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let worker = rill::Worker::new(client_direct(&redis, &ns), "q")
        .unwrap()
        .block(Duration::from_millis(100));
    let (running, runs) = counting(worker);
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&1).await.unwrap();
    eventually(Duration::from_secs(10), "first", || async {
        running.stats.snapshot().completed == 1
    })
    .await;
    // An operator deletes the stream (and its group) while the worker blocks on it.
    let mut conn = redis.aconn().await;
    let _: () = redis::cmd("DEL")
        .arg(&queue.keys().ready)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue.enqueue(&2).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the job enqueued after the deletion",
        || async { running.stats.snapshot().completed == 2 },
    )
    .await;
    assert_eq!(runs.lock().unwrap().get(&2), Some(&1));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upkeep_calls_cost_recovery_not_jobs() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let mut admin = redis.aconn().await;
    let client = as_acl_user(&mut admin, &redis, &ns).await;
    let worker = rill::Worker::new(client, "q")
        .unwrap()
        .reclaim_interval(Duration::from_millis(50))
        .health(rill::HealthRule::default());
    let (running, runs) = counting(worker);
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&0).await.unwrap();
    eventually(Duration::from_secs(10), "started", || async {
        running.stats.snapshot().completed == 1
    })
    .await;
    // Stalled-job recovery and crashed-worker adoption are refused: new jobs still run, once each.
    acl(&mut admin, "w", &["-xautoclaim", "-zrangebyscore"]).await;
    for i in 1..5u64 {
        queue.enqueue(&i).await.unwrap();
    }
    eventually(Duration::from_secs(10), "5 jobs", || async {
        running.stats.snapshot().completed == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running.stats.snapshot().reclaimed, 0);
    // Leaving is refused too: the worker stops all the same, and stays listed until judged crashed.
    acl(&mut admin, "w", &["-xgroup", "-zrem"]).await;
    let consumer = running.consumer.clone();
    running.stop().await;
    let listed: Option<f64> = redis::cmd("ZSCORE")
        .arg(&queue.keys().workers)
        .arg(&consumer)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(listed.is_some(), "its registry entry could not be removed");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 5);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endings_sent_into_a_reset_connection_are_retried_and_land_once() {
    let redis = TestRedis::start_single();
    let proxy = Arc::new(FaultProxy::start(redis.port()).await);
    let ns = support::namespace();
    let p = proxy.clone();
    let runs: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let r = runs.clone();
    let worker = rill::Worker::new(client_via(&proxy, &ns), "q")
        .unwrap()
        .backoff(Duration::from_millis(10), Duration::from_millis(20));
    let running = spawn_worker(worker, move |job: rill::Job<u64>| {
        let (p, r) = (p.clone(), r.clone());
        async move {
            r.lock().unwrap().push((*job.data(), job.attempt()));
            // Every connection drops just as the job ends: its failure or completion meets a reset.
            p.reset();
            if *job.data() == 1 && job.attempt() == 1 {
                return Err(rill::JobError::retry("first attempt fails"));
            }
            Ok(())
        }
    });
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&1).await.unwrap();
    eventually(Duration::from_secs(20), "completed", || async {
        running.stats.snapshot().completed == 1
    })
    .await;
    queue.enqueue(&2).await.unwrap();
    eventually(Duration::from_secs(20), "both completed", || async {
        running.stats.snapshot().completed == 2
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.retried, 1);
    assert_eq!(*runs.lock().unwrap(), vec![(1, 1), (1, 2), (2, 1)]);
}
