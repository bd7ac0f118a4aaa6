//! Waiting for a job to end ([`Queue::wait`]): one blocking read of the queue's events stream per process and
//! queue, shared by every waiter ([`Follower`]), so a thousand waiters cost one read, not a thousand polls.
//! Each waiter checks the job's state once after it is registered (a job that ends in between is seen either
//! way), then waits for its event, looking at the state again every few seconds in case the event never comes
//! (workers that write no `completed` events, or an events stream trimmed past an event before it was read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{JobState, Queue};
use crate::error::Result;

/// How often a waiter looks at its job's state when no event has come.
const RECHECK: Duration = Duration::from_secs(5);

/// How a job ended, or where it was when [`Queue::wait`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// It completed; with its CBOR result if it returned one and its record is kept.
    Completed {
        /// Raw CBOR result; decode with [`JobOutcome::result`].
        result: Option<Vec<u8>>,
    },
    /// It was dead-lettered (out of attempts, failed for good, or refused as malformed).
    Dead {
        /// Its last error.
        error: String,
    },
    /// A signal cancelled it.
    Cancelled,
    /// No such job: never enqueued, deleted, or finished so long ago that nothing about it is kept.
    Unknown,
    /// Still not ended when the wait ran out; where it is now.
    Pending(JobState),
}

impl JobOutcome {
    /// The result of a completed job, decoded as `R` (`None` for any other outcome or no result).
    ///
    /// # Errors
    /// [`crate::Error::Decode`] if the result is not an `R`.
    pub fn result<R: DeserializeOwned>(&self) -> Result<Option<R>> {
        match self {
            JobOutcome::Completed {
                result: Some(bytes),
            } => Ok(Some(crate::wire::decode(bytes)?)),
            _ => Ok(None),
        }
    }

    /// Whether the job ended (completed, dead or cancelled).
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            JobOutcome::Completed { .. } | JobOutcome::Dead { .. } | JobOutcome::Cancelled
        )
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Waits until job `id` completes, is dead-lettered or is cancelled, for at most `timeout`. Waiters in one
    /// process share one blocking read of the queue's events; no waiter polls Redis per event.
    ///
    /// # Errors
    /// Redis errors.
    ///
    /// ```no_run
    /// # async fn demo(q: rill::Queue<String>) -> rill::Result<()> {
    /// use std::time::Duration;
    /// let id = q.enqueue(&"hello".to_owned()).await?;
    /// match q.wait(&id, Duration::from_secs(30)).await? {
    ///     rill::JobOutcome::Completed { .. } => println!("done"),
    ///     other => println!("not done: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<JobOutcome> {
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.wait(id, timeout)).await;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let follower = Follower::of(self).await?;
            let mut note = follower.expect(id);
            loop {
                // After registering: an end between the follower's start and now shows here; one after, there.
                let now = self.outcome_now(id).await?;
                if now.is_ended() || now == JobOutcome::Unknown || Instant::now() >= deadline {
                    return Ok(now);
                }
                let next = (Instant::now() + RECHECK).min(deadline);
                tokio::select! {
                    heard = &mut note => match heard {
                        Ok(Note::Completed) => {
                            return Ok(match self.outcome_now(id).await? {
                                o @ JobOutcome::Completed { .. } => o,
                                // No record kept (no result, no retention): completed all the same.
                                _ => JobOutcome::Completed { result: None },
                            });
                        }
                        Ok(Note::Dead(error)) => return Ok(JobOutcome::Dead { error }),
                        Ok(Note::Cancelled) => return Ok(JobOutcome::Cancelled),
                        // The follower stopped (a Redis error): look again with a new one.
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep_until(next) => {}
                }
            }
        }
    }

    /// Where job `id` is now, as an outcome.
    async fn outcome_now(&self, id: &str) -> Result<JobOutcome> {
        let info = self.job(id).await?;
        Ok(match info.state {
            JobState::Completed => JobOutcome::Completed {
                result: info.result,
            },
            JobState::Dead => JobOutcome::Dead {
                error: info.last_error.unwrap_or_default(),
            },
            JobState::Cancelled => JobOutcome::Cancelled,
            JobState::Unknown => JobOutcome::Unknown,
            s => JobOutcome::Pending(s),
        })
    }
}

/// What the events said about a job.
enum Note {
    Completed,
    Dead(String),
    Cancelled,
}

type Waiting = HashMap<String, Vec<oneshot::Sender<Note>>>;

/// The one reader of a queue's events in this process while anyone waits on it.
struct Follower {
    waiting: Mutex<Waiting>,
    /// Its read failed and it ended: new waiters start another.
    stopped: std::sync::atomic::AtomicBool,
}

/// Followers by Redis URL and events stream.
fn followers() -> &'static Mutex<HashMap<String, Weak<Follower>>> {
    static FOLLOWERS: OnceLock<Mutex<HashMap<String, Weak<Follower>>>> = OnceLock::new();
    FOLLOWERS.get_or_init(Mutex::default)
}

impl Follower {
    /// The running follower of `queue`'s events, started (reading from the newest event now) if none runs.
    async fn of<T: Serialize + DeserializeOwned>(queue: &Queue<T>) -> Result<Arc<Follower>> {
        let name = format!("{}\n{}", queue.client.url(), queue.keys.events);
        let running = |all: &HashMap<String, Weak<Follower>>| {
            all.get(&name)
                .and_then(Weak::upgrade)
                .filter(|f| !f.stopped.load(std::sync::atomic::Ordering::Relaxed))
        };
        if let Some(f) = running(&followers().lock().expect("followers lock")) {
            return Ok(f);
        }
        // Opened before it is shared: its start (the newest event now) precedes every waiter's state check.
        let feed = queue.follow_events(None).await?;
        let mut all = followers().lock().expect("followers lock");
        if let Some(f) = running(&all) {
            // Another waiter started one meanwhile.
            return Ok(f);
        }
        let f = Arc::new(Follower {
            waiting: Mutex::default(),
            stopped: Default::default(),
        });
        all.insert(name, Arc::downgrade(&f));
        tokio::spawn(follow(Arc::downgrade(&f), feed));
        Ok(f)
    }

    /// A note when job `id`'s event comes (never, from a stopped follower: the sender is dropped at once).
    fn expect(&self, id: &str) -> oneshot::Receiver<Note> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting.lock().expect("waiting lock");
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return rx;
        }
        // Waiters that gave up leave closed senders behind: drop them as the map is touched.
        waiting.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        waiting.entry(id.to_owned()).or_default().push(tx);
        rx
    }

    fn tell(&self, id: &str, note: impl Fn() -> Note) {
        if let Some(senders) = self.waiting.lock().expect("waiting lock").remove(id) {
            for s in senders {
                let _ = s.send(note());
            }
        }
    }
}

/// Reads the events while any waiter holds the follower; a read error ends it (its waiters then look at the
/// state and start a new one).
async fn follow(me: Weak<Follower>, mut feed: super::EventFeed) {
    loop {
        let events = feed.next(500).await;
        let Some(f) = me.upgrade() else { return };
        let events = match events {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "waiting for jobs: events read failed");
                f.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                f.waiting.lock().expect("waiting lock").clear();
                return;
            }
        };
        for e in events {
            match e.kind.as_str() {
                "completed" => {
                    let ids = e.fields.get("ids").map(String::as_str).unwrap_or_default();
                    for id in ids.split(' ').filter(|i| !i.is_empty()) {
                        f.tell(id, || Note::Completed);
                    }
                }
                "dead" => {
                    let error = e.fields.get("error").cloned().unwrap_or_default();
                    f.tell(&e.job_id, || Note::Dead(error.clone()));
                }
                "cancelled" => f.tell(&e.job_id, || Note::Cancelled),
                _ => {}
            }
        }
    }
}
