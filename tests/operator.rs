//! What an operator does to a live queue through the library: list jobs by state a page at a time, promote a
//! delayed job, delete jobs in every state (a running one is cancelled, not yanked), drain, retry every dead letter
//! while workers run, and remove a queue.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rill::{Deleted, Enqueue, Error, Job, JobError, JobState, Queue, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(15);

/// What the handler does with a job, by payload.
const COMPLETE: u32 = 0;
const RETRY_LATER: u32 = 1;
const DIE: u32 = 2;
const HOLD: u32 = 3;

/// Every id listed under `state`, walking pages of `limit`.
async fn all(q: &Queue<u32>, state: JobState, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = q.jobs(state, after.as_deref(), limit).await.unwrap();
        assert!(page.jobs.len() <= limit);
        assert!(page.jobs.iter().all(|j| j.state == state));
        ids.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next {
            Some(n) => after = Some(n),
            None => return ids,
        }
    }
}

fn set(ids: &[String]) -> BTreeSet<&str> {
    ids.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_by_state_promoted_and_deleted() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("ops").unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let w = spawn_worker(
        Worker::new(client.clone(), "ops")
            .unwrap()
            .concurrency(4)
            .keep_completed(true)
            .block(Duration::from_millis(200)),
        move |job: Job<u32>| {
            let g = g.clone();
            async move {
                match *job.data() {
                    RETRY_LATER => Err(JobError::retry_after("not yet", Duration::from_secs(3600))),
                    DIE => Err(JobError::permanent("broken")),
                    HOLD => {
                        tokio::select! {
                            p = g.acquire() => p.unwrap().forget(),
                            _ = job.cancelled().cancelled() => return Err(JobError::permanent("cancelled")),
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        },
    );
    for i in 0..5 {
        q.enqueue_with(&COMPLETE, Enqueue::new().id(format!("done-{i}")))
            .await
            .unwrap();
    }
    q.enqueue_with(&RETRY_LATER, Enqueue::new().id("failing"))
        .await
        .unwrap();
    q.enqueue_with(&DIE, Enqueue::new().id("dead-1"))
        .await
        .unwrap();
    q.enqueue_with(&HOLD, Enqueue::new().id("held"))
        .await
        .unwrap();
    eventually(
        T,
        "held running, failing retry-waiting, dead-1 dead",
        || async {
            q.state("held").await.unwrap() == JobState::Active
                && q.state("failing").await.unwrap() == JobState::Failed
                && q.state("dead-1").await.unwrap() == JobState::Dead
                && q.state("done-4").await.unwrap() == JobState::Completed
        },
    )
    .await;
    // Waiting and delayed jobs the (busy) worker will not reach: pause the queue first.
    q.pause().await.unwrap();
    for i in 0..7 {
        let later = Enqueue::new()
            .id(format!("later-{i}"))
            .delay(Duration::from_secs(3600));
        q.enqueue_with(&COMPLETE, later).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the pause reaches the worker
    for i in 0..5 {
        q.enqueue_with(&COMPLETE, Enqueue::new().id(format!("wait-{i}")))
            .await
            .unwrap();
    }
    q.enqueue_with(&COMPLETE, Enqueue::new().id("parked-1"))
        .await
        .unwrap();
    q.pause_job("parked-1").await.unwrap();

    // Every state, walked in pages of 2 and of 50: each job once, in its state only.
    for limit in [2, 50] {
        assert_eq!(set(&all(&q, JobState::Waiting, limit).await).len(), 5);
        assert!(
            set(&all(&q, JobState::Waiting, limit).await)
                .iter()
                .all(|id| id.starts_with("wait-"))
        );
        assert_eq!(all(&q, JobState::Active, limit).await, vec!["held"]);
        assert_eq!(set(&all(&q, JobState::Delayed, limit).await).len(), 7);
        assert_eq!(all(&q, JobState::Failed, limit).await, vec!["failing"]);
        assert_eq!(all(&q, JobState::Parked, limit).await, vec!["parked-1"]);
        assert_eq!(all(&q, JobState::Dead, limit).await, vec!["dead-1"]);
        let done = all(&q, JobState::Completed, limit).await;
        assert_eq!(
            set(&done),
            (0..5)
                .map(|i| format!("done-{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect()
        );
        assert_eq!(done.len(), 5, "each completed job once: {done:?}");
    }
    // What a page says about each job.
    let active = q
        .jobs(JobState::Active, None, 10)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(active.owner.as_deref(), Some(w.consumer.as_str()));
    assert_eq!(active.attempts, Some(1));
    eventually(T, "the start time, from the registry", || async {
        q.jobs(JobState::Active, None, 10).await.unwrap().jobs[0]
            .at_ms
            .is_some()
    })
    .await;
    let failed = q
        .jobs(JobState::Failed, None, 10)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(
        (failed.attempts, failed.error.as_deref()),
        (Some(1), Some("not yet"))
    );
    let dead = q
        .jobs(JobState::Dead, None, 10)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(dead.error.as_deref(), Some("failed: broken"));
    let done = q
        .jobs(JobState::Completed, None, 1)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(
        done.attempts,
        Some(1),
        "kept records tell the attempt that succeeded"
    );
    assert!(matches!(
        q.jobs(JobState::Waiting, Some("nonsense"), 10).await,
        Err(Error::InvalidOption {
            option: "after",
            ..
        })
    ));
    assert!(q.jobs(JobState::Unknown, None, 10).await.is_err());

    // Promote: a delayed job and the failed one go to the ready stream now; a waiting one is not delayed.
    assert!(q.promote("later-0").await.unwrap());
    assert!(q.promote("failing").await.unwrap());
    assert!(!q.promote("wait-0").await.unwrap());
    assert_eq!(q.state("later-0").await.unwrap(), JobState::Waiting);
    assert_eq!(q.job("failing").await.unwrap().attempts, 1, "attempts kept");

    // Delete in every state; the running one is cancelled by its worker instead.
    for (id, from) in [
        ("wait-1", JobState::Waiting),
        ("later-1", JobState::Delayed),
        ("parked-1", JobState::Parked),
        ("dead-1", JobState::Dead),
        ("done-0", JobState::Completed),
    ] {
        assert_eq!(q.delete(id).await.unwrap(), Deleted::Removed(from), "{id}");
        assert_eq!(q.state(id).await.unwrap(), JobState::Unknown, "{id}");
    }
    assert_eq!(q.delete("nope").await.unwrap(), Deleted::NotFound);
    // A waiting job deleted from the middle leaves Redis unable to tell the group's lag: counts still agree.
    let waiting = all(&q, JobState::Waiting, 50).await.len() as u64;
    assert_eq!(q.counts().await.unwrap().waiting, waiting);
    assert_eq!(q.delete("held").await.unwrap(), Deleted::CancelSent);
    eventually(T, "the running job ends as cancelled", || async {
        q.state("held").await.unwrap() == JobState::Cancelled
    })
    .await;
    // A deleted id can be used again at once (its dedup record went with it).
    let again = q
        .enqueue_with(&COMPLETE, Enqueue::new().id("done-0"))
        .await
        .unwrap();
    assert_eq!(again, "done-0");
    assert_eq!(q.state("done-0").await.unwrap(), JobState::Waiting);

    // Drain: waiting and delayed go; the dead letters stay.
    let drained = q.drain().await.unwrap();
    assert_eq!(
        (drained.waiting, drained.delayed),
        (4 + 2 + 1, 5),
        "{drained:?}"
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed), (0, 0));
    gate.add_permits(10);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_removed_whole_but_not_from_under_live_workers() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("gone").unwrap();
    let keep = client.queue::<u32>("kept").unwrap();
    keep.enqueue(&1).await.unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "gone")
            .unwrap()
            .block(Duration::from_millis(200)),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    for i in 0..20 {
        q.enqueue_with(&i, Enqueue::new().id(format!("j{i}")))
            .await
            .unwrap();
    }
    q.enqueue_with(&99, Enqueue::new().delay(Duration::from_secs(60)))
        .await
        .unwrap();
    eventually(T, "registered", || async {
        !q.workers(&rill::HealthRule::default())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    match q.remove(false).await {
        Err(Error::QueueInUse { queue, workers }) => {
            assert_eq!(queue, "gone");
            assert_eq!(workers, vec![w.consumer.clone()]);
        }
        other => panic!("expected QueueInUse, got {other:?}"),
    }
    w.stop().await;
    let removed = q.remove(false).await.unwrap();
    assert!(
        removed >= 4,
        "ready, delayed, scheduled, index, events...: {removed}"
    );
    let mut c = redis.aconn().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(q.keys().pattern())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(client.queues().await.unwrap(), vec!["kept"]);
    assert_eq!(
        keep.counts().await.unwrap().waiting,
        1,
        "other queues untouched"
    );
    // force: even with a registered worker.
    let w2 = spawn_worker(
        Worker::new(client.clone(), "kept")
            .unwrap()
            .block(Duration::from_millis(200)),
        |_job: Job<u32>| async { Ok::<_, JobError>(()) },
    );
    eventually(T, "registered", || async {
        !keep
            .workers(&rill::HealthRule::default())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(keep.remove(false).await.is_err());
    keep.remove(true).await.unwrap();
    w2.stop().await;
}

/// Retrying every dead letter while a worker fails the requeued jobs again at once: the call requeues the dead
/// letters there were when it started, each once, and leaves the ones written meanwhile for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_every_dead_letter_never_chases_the_ones_it_causes() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("doomed").unwrap();
    // More than one page of the call's batches (500).
    const N: usize = 700;
    let jobs: Vec<u32> = vec![DIE; N];
    q.enqueue_many(&jobs).await.unwrap();
    let worker = spawn_worker(
        support::fast(Worker::new(client.clone(), "doomed").unwrap()).concurrency(64),
        |_job: Job<u32>| async { Err::<(), _>(JobError::permanent("always")) },
    );
    eventually(T, "every job dead", || async {
        q.counts().await.unwrap().dead == N as u64
    })
    .await;
    let out = q.retry_all_dead().await.unwrap();
    assert_eq!(out.requeued.len(), N, "each dead letter there was, once");
    assert_eq!(out.requeued.iter().collect::<BTreeSet<_>>().len(), N);
    // They die again, and the next call finds them.
    eventually(T, "every job dead again", || async {
        q.counts().await.unwrap().dead == N as u64
    })
    .await;
    worker.stop().await;
    assert_eq!(q.retry_all_dead().await.unwrap().requeued.len(), N);
}
