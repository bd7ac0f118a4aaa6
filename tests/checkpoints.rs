//! Checkpoints and resume: a long job survives failures, hand-backs and a SIGKILL of its worker process and
//! continues from its newest checkpoint.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use rill::scripts::{self, CheckpointWrite, Checkpointed, DeliveryRef};
use rill::{CheckpointPolicy, Job, JobError, PreviousEnd, Worker};
use support::{TestRedis, caller, eventually, spawn_worker};

fn fast(w: Worker) -> Worker {
    w.lease(Duration::from_millis(500))
        .reclaim_interval(Duration::from_millis(100))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .shutdown_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_after_a_failure_and_a_hand_back() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u64>("long").unwrap();
    let id = q.enqueue(&30).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "long").unwrap()),
        move |job: Job<u64>| {
            let seen = s2.clone();
            async move {
                let resumed = job.resume::<u64>().await?;
                let start = resumed.as_ref().map_or(0, |r| r.state);
                seen.lock().unwrap().push((
                    job.attempt(),
                    resumed.map(|r| (r.state, r.version, r.previous_end)),
                ));
                let mut policy = CheckpointPolicy::every_steps(10).from_step(start);
                for step in start + 1..=*job.data() {
                    if policy.due(step, &job) {
                        job.checkpoint(&step).await?;
                        policy.saved(step);
                        if step == 10 && job.attempt() == 1 {
                            return Err(JobError::retry("disk full"));
                        }
                        if step == 20 && seen.lock().unwrap().len() == 2 {
                            return Err(JobError::interrupted("maintenance"));
                        }
                    }
                }
                Ok::<_, JobError>(*job.data())
            }
        },
    );
    eventually(Duration::from_secs(20), "completed", || async {
        w.stats.snapshot().completed == 1
    })
    .await;
    let report = w.stop().await;
    assert_eq!(report.released, 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (1, None));
    assert_eq!(
        seen[1],
        (2, Some((10, 1, PreviousEnd::Failed("disk full".into()))))
    );
    // The hand-back does not count as an attempt.
    assert_eq!(seen[2], (2, Some((20, 2, PreviousEnd::HandedBack))));
    let history = q.checkpoints(&id, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(history[0].state::<u64>().unwrap(), 30);
    // Operators can roll back to a version, or clear them all.
    assert_eq!(q.restore_checkpoint(&id, 1).await.unwrap(), 2);
    assert_eq!(q.checkpoints(&id, 10).await.unwrap()[0].version, 1);
    q.clear_checkpoints(&id).await.unwrap();
    assert!(q.checkpoints(&id, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_long_job_resumes_elsewhere_from_its_last_checkpoint() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("steps").unwrap();
    let id = q.enqueue(&1000).await.unwrap();
    let env = [
        ("RILL_LEASE_MS", "500".to_owned()),
        ("RILL_MODE", "steps".to_owned()),
    ];
    let (mut child, consumer) = support::fault_worker(&redis, &ns, "steps", &env);
    // Kill it at a pseudo-random step past the first checkpoint.
    let kill_after = 120 + (std::process::id() as u64 % 600);
    let mut c = redis.aconn().await;
    let steps_key = format!("{}:steps", q.keys().ready);
    eventually(Duration::from_secs(30), "the child ran some steps", || {
        let mut c = c.clone();
        let k = steps_key.clone();
        async move { c.llen::<_, u64>(&k).await.unwrap() >= kill_after }
    })
    .await;
    child.kill();
    let killed_steps: Vec<String> = c.lrange(&steps_key, 0, -1).await.unwrap();
    let last_killed_step: u64 = killed_steps
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let checkpoint = q.checkpoints(&id, 1).await.unwrap().remove(0);
    let (ck_step, _) = checkpoint.state::<(u64, u64)>().unwrap();
    assert_eq!(checkpoint.written_by, consumer);

    // Another worker takes the job over and continues from the checkpoint.
    let resumed_from = Arc::new(Mutex::new(None));
    let r2 = resumed_from.clone();
    let rescuer = spawn_worker(
        fast(Worker::new(client.clone(), "steps").unwrap()),
        move |job: Job<u64>| {
            let r2 = r2.clone();
            async move {
                let resumed = job.resume::<(u64, u64)>().await?.expect("a checkpoint");
                *r2.lock().unwrap() = Some((
                    resumed.state.0,
                    resumed.previous_end.clone(),
                    resumed.written_by.clone(),
                ));
                let (mut step, mut sum) = resumed.state;
                let mut policy = CheckpointPolicy::every_steps(50).from_step(step);
                while step < *job.data() {
                    sum += step;
                    step += 1;
                    if policy.due(step, &job) {
                        job.checkpoint(&(step, sum)).await?;
                        policy.saved(step);
                    }
                }
                Ok::<_, JobError>(sum)
            }
        },
    );
    eventually(Duration::from_secs(30), "resumed and completed", || async {
        rescuer.stats.snapshot().completed == 1
    })
    .await;
    rescuer.stop().await;
    let (from, why, writer) = resumed_from.lock().unwrap().clone().unwrap();
    assert_eq!(from, ck_step);
    assert_eq!(why, PreviousEnd::Stalled);
    assert_eq!(writer, consumer);
    let redone = last_killed_step - ck_step;
    println!(
        "killed at step {last_killed_step}, resumed from checkpoint at step {ck_step}: {redone} steps redone"
    );
    assert!(
        redone <= 50,
        "at most one checkpoint interval is redone, got {redone}"
    );
    assert_eq!(
        q.result::<u64>(&id).await.unwrap(),
        Some((0..1000).sum::<u64>())
    );
    // The killed worker's late checkpoint write is refused.
    let late = scripts::checkpoint(
        &mut c,
        &caller(q.keys(), &consumer),
        DeliveryRef {
            entry_id: &id,
            token: 1,
        },
        &id,
        1,
        CheckpointWrite {
            version: 0,
            label: "late",
            state: b"\xf6",
            keep: 10,
            ttl_ms: 60_000,
            max_bytes: 1024,
        },
    )
    .await
    .unwrap();
    assert_eq!(late, Checkpointed::Stale);
}

fn steps_worker(redis: &TestRedis, ns: &str) -> (support::ChildGuard, String) {
    let env = [
        ("RILL_LEASE_MS", "1000".to_owned()),
        ("RILL_MODE", "steps".to_owned()),
    ];
    support::fault_worker(redis, ns, "sessions", &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_session_parks_without_a_worker_and_resumes_on_another_process() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<u64>("sessions").unwrap();
    let session = q
        .enqueue_with(&1000, rill::Enqueue::new().id("session-1"))
        .await
        .unwrap();
    let (mut a, a_name) = steps_worker(&redis, &ns);
    let mut c = redis.aconn().await;
    let steps_key = format!("{}:steps", q.keys().ready);
    eventually(Duration::from_secs(30), "the session ran a while", || {
        let mut c = c.clone();
        let k = steps_key.clone();
        async move { c.llen::<_, u64>(&k).await.unwrap() >= 120 }
    })
    .await;
    assert_eq!(
        q.pause_job(&session).await.unwrap(),
        rill::PauseOutcome::Signalled
    );
    eventually(Duration::from_secs(10), "parked", || async {
        q.state(&session).await.unwrap() == rill::JobState::Parked
    })
    .await;
    let steps: Vec<String> = c.lrange(&steps_key, 0, -1).await.unwrap();
    let paused_at: u64 = steps
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let ck = q.checkpoints(&session, 1).await.unwrap().remove(0);
    assert_eq!(
        ck.state::<(u64, u64)>().unwrap().0,
        paused_at,
        "it checkpointed where it stopped"
    );
    assert_eq!(ck.written_by, a_name);
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.active, counts.parked),
        (0, 1),
        "a parked session holds no worker"
    );
    // The worker it left is free for other work meanwhile.
    let other = q.enqueue(&5).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the other job ran on A",
        || async { q.result::<u64>(&other).await.unwrap() == Some(10) },
    )
    .await;
    a.kill();
    // Resume it on another process: it continues from the checkpoint.
    let (mut b, _b_name) = steps_worker(&redis, &ns);
    assert!(q.resume_job(&session).await.unwrap());
    eventually(
        Duration::from_secs(30),
        "the session finished on B",
        || async { q.result::<u64>(&session).await.unwrap().is_some() },
    )
    .await;
    b.kill();
    assert_eq!(
        q.result::<u64>(&session).await.unwrap(),
        Some((0..1000).sum::<u64>())
    );
    let steps: Vec<String> = c.lrange(&steps_key, 0, -1).await.unwrap();
    let session_steps: Vec<u64> = steps
        .iter()
        .map(|s| s.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    // Steps 1..=paused_at ran once on A, then the 5-step job, then B went on from paused_at + 1: nothing redone.
    let mut want: Vec<u64> = (1..=paused_at).collect();
    want.extend(1..=5);
    want.extend(paused_at + 1..=1000);
    assert_eq!(session_steps, want, "nothing redone after a pause");
    let history = q
        .signal_history(
            rill::SignalFilter::new().target(rill::Target::Job(session.clone())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|s| s.kind.clone()).collect::<Vec<_>>(),
        vec![rill::SignalKind::Pause, rill::SignalKind::Resume]
    );
    assert!(
        history[0]
            .outcomes
            .iter()
            .any(|o| o.receiver == a_name && o.result == "applied")
    );
}

/// Takes the delivery of `job` away from its worker (as a reclaim by another worker would).
async fn steal(conn: &mut support::AConn, ready: &str, entry: &str) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(ready)
        .arg(rill::keys::GROUP)
        .arg("thief")
        .arg(0)
        .arg(entry)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_cannot_land_say_why_and_a_stolen_delivery_ends_nothing() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("why").unwrap();
    let ready = q.keys().ready.clone();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e2 = errors.clone();
    let conn = redis.aconn().await;
    let w = spawn_worker(
        fast(Worker::new(client.clone(), "why").unwrap()),
        move |job: Job<String>| {
            let errors = e2.clone();
            let mut conn = conn.clone();
            let ready = ready.clone();
            async move {
                if job.delivery().token > 1 {
                    // The thief's delivery, reclaimed later: nothing more to see.
                    return Ok(());
                }
                let mut seen = Vec::new();
                assert_eq!(job.checkpoint_as("text", 5, "first").await.unwrap(), 5);
                seen.push(job.checkpoint_as("again", 5, "").await.unwrap_err());
                seen.push(job.resume::<u64>().await.unwrap_err());
                steal(&mut conn, &ready, &job.delivery().entry_id).await;
                seen.push(job.checkpoint(&"late").await.unwrap_err());
                errors.lock().unwrap().push(seen);
                let shown = format!("{job:?}");
                assert!(
                    shown.contains(job.id()) && shown.contains("attempt"),
                    "{shown}"
                );
                // Ending a delivery that was taken away changes nothing: a completion, a failure or a hand-back.
                match job.into_data().as_str() {
                    "fail" => Err(JobError::retry("too late")),
                    "hand back" => Err(JobError::interrupted("too late")),
                    _ => Ok(()),
                }
            }
        },
    );
    q.enqueue(&"complete".to_owned()).await.unwrap();
    q.enqueue(&"fail".to_owned()).await.unwrap();
    q.enqueue(&"hand back".to_owned()).await.unwrap();
    eventually(Duration::from_secs(20), "all three stale", || async {
        w.stats.snapshot().stale == 3
    })
    .await;
    for seen in errors.lock().unwrap().iter() {
        assert!(
            matches!(
                seen[0],
                rill::Error::CheckpointNotNewer {
                    version: 5,
                    newest: 5,
                    ..
                }
            ),
            "{:?}",
            seen[0]
        );
        assert!(matches!(seen[1], rill::Error::Decode(_)), "{:?}", seen[1]);
        assert!(
            matches!(seen[2], rill::Error::Stale { .. }),
            "{:?}",
            seen[2]
        );
    }
    let report = w.stop().await;
    assert_eq!(
        (report.completed, report.retried, report.released),
        (0, 0, 0)
    );
}
