//! Signals: cancel running, waiting and delayed jobs; pause / resume a queue (persisting across restarts);
//! quiet and stop a worker; history with outcomes; a collector.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rill::{
    CancelOutcome, Enqueue, Job, JobError, JobState, PauseOutcome, SignalFilter, SignalKind,
    Target, Worker,
};
use support::{TestRedis, eventually, now_ms, spawn_worker};

const T: Duration = Duration::from_secs(20);

fn fast(w: Worker) -> Worker {
    w.lease(Duration::from_millis(600))
        .reclaim_interval(Duration::from_millis(100))
        .block(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_fires_its_token_within_a_second() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let id = q.enqueue(&1).await.unwrap();
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        move |job: Job<u32>| {
            let started = s2.clone();
            let tx = tx.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                job.cancelled().cancelled().await;
                let _ = tx.send(Instant::now());
                Err::<(), _>(JobError::retry("stopped by request"))
            }
        },
    );
    eventually(T, "running", || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let sent = Instant::now();
    assert_eq!(q.cancel(&id).await.unwrap(), CancelOutcome::Signalled);
    let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let took = seen.duration_since(sent);
    println!("cancel of a running job observed after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eventually(T, "recorded as cancelled", || async {
        w.stats.snapshot().cancelled == 1
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.retried, 0, "a cancelled job is not retried");
    assert_eq!(q.state(&id).await.unwrap(), JobState::Cancelled);
    let history = q
        .signal_history(SignalFilter::new().target(Target::Job(id.clone())), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].kind, SignalKind::Cancel);
    let outcome = &history[0].outcomes[0];
    assert_eq!(
        (outcome.receiver.as_str(), outcome.result.as_str()),
        (w_consumer(&report, &history), "applied")
    );
}

fn w_consumer<'a>(_: &rill::WorkerReport, history: &'a [rill::Signal]) -> &'a str {
    &history[0].outcomes[0].receiver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiting_and_delayed_jobs_never_run() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let waiting = q.enqueue(&1).await.unwrap();
    let delayed = q
        .enqueue_with(&2, Enqueue::new().delay(Duration::from_millis(300)))
        .await
        .unwrap();
    let keep = q.enqueue(&3).await.unwrap();
    assert_eq!(q.cancel(&waiting).await.unwrap(), CancelOutcome::Removed);
    assert_eq!(q.cancel(&delayed).await.unwrap(), CancelOutcome::Removed);
    assert_eq!(
        q.cancel("no-such-job").await.unwrap(),
        CancelOutcome::NotFound
    );
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r2 = ran.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        move |job: Job<u32>| {
            let ran = r2.clone();
            async move {
                ran.lock().unwrap().push(*job.data());
                Ok::<_, JobError>(())
            }
        },
    );
    eventually(T, "the kept job ran", || async {
        w.stats.snapshot().completed == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    w.stop().await;
    assert_eq!(*ran.lock().unwrap(), vec![3]);
    assert_eq!(q.state(&waiting).await.unwrap(), JobState::Cancelled);
    assert_eq!(q.state(&delayed).await.unwrap(), JobState::Cancelled);
    let _ = keep;
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.active), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_takes_no_jobs_even_after_a_restart() {
    support::trace();
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let ran = Arc::new(AtomicU32::new(0));
    let handler = {
        let ran = ran.clone();
        move |_job: Job<u32>| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(())
            }
        }
    };
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        handler.clone(),
    );
    q.enqueue(&1).await.unwrap();
    eventually(T, "first job", || async { ran.load(Ordering::SeqCst) == 1 }).await;
    q.pause().await.unwrap();
    assert!(q.is_paused().await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.enqueue_many(&[2, 3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1, "paused: nothing new taken");
    w.stop().await;
    // A worker started while the queue is paused obeys the pause too.
    let w = spawn_worker(fast(Worker::new(client.clone(), "jobs").unwrap()), handler);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    q.resume().await.unwrap();
    eventually(T, "resumed", || async { ran.load(Ordering::SeqCst) == 3 }).await;
    w.stop().await;
    let history = q
        .signal_history(SignalFilter::new().target(Target::Queue), 10)
        .await
        .unwrap();
    let kinds: Vec<SignalKind> = history.iter().map(|s| s.kind.clone()).collect();
    assert_eq!(kinds, vec![SignalKind::Pause, SignalKind::Resume]);
    assert!(
        history[0]
            .outcomes
            .iter()
            .any(|o| o.receiver == "queue" && o.result == "applied")
    );
    assert!(
        history[0].outcomes.iter().any(|o| o.receiver != "queue"),
        "the running worker acknowledged it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_and_stop_a_worker_and_collect_signals() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("jobs").unwrap();
    let mut collector = q.collect_signals(None).await.unwrap();
    let ran = Arc::new(AtomicU32::new(0));
    let r2 = ran.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "jobs").unwrap()),
        move |_job: Job<u32>| {
            let ran = r2.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(())
            }
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let me = Target::Worker(w.consumer.clone());
    q.send_signal::<()>(SignalKind::Quiet, me.clone(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.enqueue(&1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "quiet: nothing new taken");
    q.send_signal(
        SignalKind::Custom("reload".into()),
        me.clone(),
        Some(&"config-v2"),
    )
    .await
    .unwrap();
    q.send_signal::<()>(SignalKind::Stop, me.clone(), None)
        .await
        .unwrap();
    // The stop signal ends run() by itself.
    let report = tokio::time::timeout(Duration::from_secs(5), w.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.completed, 0);
    let mut got = Vec::new();
    while let Some(s) = collector.next(Duration::from_millis(500)).await.unwrap() {
        got.push(s);
    }
    assert_eq!(
        got.iter().map(|s| s.kind.clone()).collect::<Vec<_>>(),
        vec![
            SignalKind::Quiet,
            SignalKind::Custom("reload".into()),
            SignalKind::Stop
        ]
    );
    assert_eq!(
        got[1].payload::<String>().unwrap().as_deref(),
        Some("config-v2")
    );
    let history = q
        .signal_history(
            SignalFilter::new()
                .target(me)
                .kind(SignalKind::Custom("reload".into())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(history[0].outcomes[0].result, "ignored");
    let since = history[0].ms;
    assert_eq!(
        q.signal_history(SignalFilter::new().since_ms(since + 60_000), 10)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn history_windows_and_pausing_jobs_that_are_not_running() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("hist").unwrap();
    let waiting = q.enqueue(&1).await.unwrap();
    assert_eq!(q.pause_job(&waiting).await.unwrap(), PauseOutcome::Parked);
    assert_eq!(
        q.pause_job(&waiting).await.unwrap(),
        PauseOutcome::NotFound,
        "parked already"
    );
    assert_eq!(q.pause_job("nope").await.unwrap(), PauseOutcome::NotFound);
    let collector = q.collect_signals(None).await.unwrap();
    assert!(format!("{collector:?}").contains("signals"));
    // Signal ids are millisecond times: keep the pauses out of the window below.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = now_ms();
    for name in ["a", "b", "c"] {
        q.send_signal::<()>(SignalKind::Custom(name.into()), Target::Queue, None)
            .await
            .unwrap();
    }
    // An outcome written by another client without a `signal` field is skipped, not fatal.
    let mut conn = redis.aconn().await;
    let _: String = redis::cmd("XADD")
        .arg(&q.keys().outcomes)
        .arg("*")
        .arg("receiver")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let custom = |s: &rill::Signal| match &s.kind {
        SignalKind::Custom(n) => n.clone(),
        other => other.to_wire(),
    };
    let newest_two = q.signal_history(SignalFilter::new(), 2).await.unwrap();
    assert_eq!(
        newest_two.iter().map(custom).collect::<Vec<_>>(),
        ["b", "c"]
    );
    let window = SignalFilter::new().since_ms(before).until_ms(now_ms());
    let all = q.signal_history(window, 10).await.unwrap();
    assert_eq!(all.iter().map(custom).collect::<Vec<_>>(), ["a", "b", "c"]);
    let old = SignalFilter::new().until_ms(before.saturating_sub(60_000));
    assert!(q.signal_history(old, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_paused_parks_when_it_yields_and_resumes_where_asked() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("sessions").unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "sessions").unwrap()),
        move |job: Job<u32>| {
            let runs = r.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) > 0 {
                    return Ok(());
                }
                // The first run yields when asked to stop (after its checkpoint, in a real session).
                job.stopping().cancelled().await;
                Err(JobError::interrupted("pausing at a checkpoint"))
            }
        },
    );
    let id = q.enqueue(&1).await.unwrap();
    eventually(T, "running", || async { runs.load(Ordering::SeqCst) == 1 }).await;
    assert_eq!(q.pause_job(&id).await.unwrap(), PauseOutcome::Signalled);
    eventually(T, "parked", || async {
        q.state(&id).await.unwrap() == JobState::Parked
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a parked job does not run");
    assert!(q.resume_job(&id).await.unwrap());
    eventually(T, "completed after resuming", || async {
        w.stats.snapshot().completed == 1
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    w.stop().await;
}
