//! What an operator does to a queue and its jobs beyond looking: run a delayed job now, delete one job, drain
//! the waiting and delayed ones, remove the whole queue, limit its rate. Every change of a job is one fenced
//! script; a running job is never yanked from its worker, it is cancelled through a signal.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use super::events::DEFAULT_EVENTS_MAXLEN;
use super::jobs::JobState;
use crate::error::{Error, Result};
use crate::identity::now_ms;
use crate::registry::{Health, HealthRule};
use crate::scripts;
use crate::signals::CancelOutcome;

/// Jobs deleted per `drain.lua` call: each call stays short.
const BATCH: usize = 1_000;

/// What [`Queue::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deleted {
    /// Gone for good, from this state (with its record, checkpoints and the dedup record of its id).
    Removed(JobState),
    /// It is running: a cancel signal went to its worker, which stops it and records it as cancelled.
    CancelSent,
    /// No job has this id.
    NotFound,
}

/// What [`Queue::drain`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Drained {
    /// Waiting jobs.
    pub waiting: u64,
    /// Delayed jobs, failed ones waiting for their retry included.
    pub delayed: u64,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Runs a delayed job, or a failed one waiting for its retry, now: it goes onto the ready stream with its
    /// attempts and last error (BullMQ's `promote`, asynq's `task run`). Returns false if the job is not delayed
    /// or failed-waiting.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn promote(&self, id: &str) -> Result<bool> {
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.promote(id)).await;
        }
        let mut conn = self.client.conn().await?;
        let out =
            scripts::run_now(&mut conn, &self.keys, id, now_ms(), DEFAULT_EVENTS_MAXLEN).await?;
        Ok(out == scripts::RunNow::Moved)
    }

    /// Deletes job `id` in whatever state it is: waiting, delayed, failed, parked, dead, completed or cancelled
    /// ones go for good, with their record and checkpoints, and the id can be enqueued again; a running one is
    /// cancelled instead (fenced: its worker stops it and records it as cancelled).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn delete(&self, id: &str) -> Result<Deleted> {
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.delete(id)).await;
        }
        let mut conn = self.client.conn().await?;
        match scripts::delete(&mut conn, &self.keys, id, now_ms(), DEFAULT_EVENTS_MAXLEN).await? {
            scripts::Deleted::Deleted(state) => Ok(Deleted::Removed(JobState::parse(&state)?)),
            scripts::Deleted::NotFound => Ok(Deleted::NotFound),
            // It ended between the two calls: delete what it left.
            scripts::Deleted::Running => match self.cancel(id).await? {
                CancelOutcome::Signalled => Ok(Deleted::CancelSent),
                _ => Box::pin(self.delete(id)).await,
            },
        }
    }

    /// Deletes every waiting and delayed job (failed ones waiting for their retry included), a bounded batch per
    /// script call; running and parked jobs stay. Jobs enqueued meanwhile may be deleted too.
    ///
    /// # Errors
    /// Redis errors; what was deleted before one stays deleted.
    pub async fn drain(&self) -> Result<Drained> {
        if let Some(parts) = self.partition_queues().await? {
            let all =
                futures::future::try_join_all(parts.iter().map(|q| Box::pin(q.drain()))).await?;
            return Ok(all.into_iter().fold(Drained::default(), |a, b| Drained {
                waiting: a.waiting + b.waiting,
                delayed: a.delayed + b.delayed,
            }));
        }
        let levels = self.priorities().await?.levels();
        let mut conn = self.client.conn().await?;
        let mut total = Drained::default();
        for level in 0..levels {
            loop {
                let d = scripts::drain(
                    &mut conn,
                    &self.keys,
                    level,
                    BATCH,
                    now_ms(),
                    DEFAULT_EVENTS_MAXLEN,
                )
                .await?;
                total.waiting += d.waiting;
                total.delayed += d.delayed;
                if !d.more {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Deletes every key of this queue (jobs in every state, dead letters, records, checkpoints, events,
    /// signals, the registry) and drops it from the namespace's queue list, by `SCAN` and `UNLINK` in batches.
    /// Refused with [`Error::QueueInUse`] while a worker that is not judged crashed is registered, unless
    /// `force`: workers left running would recreate the queue's keys.
    ///
    /// # Errors
    /// [`Error::QueueInUse`], Redis errors.
    pub async fn remove(&self, force: bool) -> Result<u64> {
        if !force {
            let live: Vec<String> = self
                .workers(&HealthRule::default())
                .await?
                .into_iter()
                .filter(|(_, h)| !matches!(h, Health::Crashed | Health::Unknown))
                .map(|(w, _)| w.id)
                .collect();
            if !live.is_empty() {
                return Err(Error::QueueInUse {
                    queue: self.keys.queue.clone(),
                    workers: live,
                });
            }
        }
        // A partitioned queue's other partitions first: its settings (which name them) go last, with partition 0.
        let mut removed = 0;
        for q in self
            .partition_queues()
            .await?
            .unwrap_or_default()
            .iter()
            .skip(1)
        {
            removed += self.client.unlink_matching(&q.keys.pattern()).await?;
        }
        removed += self.client.unlink_matching(&self.keys.pattern()).await?;
        self.client.remember_partitions(&self.keys, None);
        let mut conn = self.client.conn().await?;
        let _: () = redis::cmd("SREM")
            .arg(&self.keys.queues)
            .arg(&self.keys.queue)
            .query_async(&mut conn)
            .await?;
        Ok(removed)
    }

    /// Limits the queue to at most `max` job starts in any window of `per`, across all its workers (counted on
    /// the Redis server's clock as jobs are handed out). Workers follow a new limit within about a second (jobs
    /// they prefetched before then still start). Replaces any earlier limit.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for `max` 0 or `per` under 1 ms; Redis errors.
    pub async fn set_rate_limit(&self, max: u32, per: Duration) -> Result<()> {
        self.refuse_partitioned("rate and concurrency limits")
            .await?;
        if max == 0 || per < Duration::from_millis(1) {
            return Err(Error::InvalidOption {
                option: "rate limit",
                reason: "needs at least 1 job per at least 1 ms",
            });
        }
        let mut conn = self.client.conn().await?;
        let () = redis::cmd("HSET")
            .arg(&self.keys.limit)
            .arg("rate")
            .arg(max)
            .arg("period_ms")
            .arg(per.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes the queue's rate limit (a concurrency limit stays). Returns whether it had one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_rate_limit(&self) -> Result<bool> {
        self.refuse_partitioned("rate and concurrency limits")
            .await?;
        let mut conn = self.client.conn().await?;
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(&self.keys.limit)
            .arg("rate")
            .arg("period_ms")
            .arg("used")
            .cmd("DEL")
            .arg(&self.keys.limit_starts)
            .query_async(&mut conn)
            .await?;
        Ok(removed > 0)
    }

    /// Limits the queue to at most `max` jobs running at once across all its workers: jobs handed out and not
    /// yet finished (the consumer group's pending entries), checked on the server as jobs are handed out.
    /// Workers follow a new limit within about a second; jobs they hold beyond it then finish, and no new ones
    /// start until the count is under `max`. Replaces any earlier concurrency limit; a rate limit stays.
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// // An API that allows 20 calls in flight and 100 a second, whatever the number of workers.
    /// queue.set_concurrency_limit(20).await?;
    /// queue.set_rate_limit(100, std::time::Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for `max` 0; Redis errors.
    pub async fn set_concurrency_limit(&self, max: u32) -> Result<()> {
        self.refuse_partitioned("rate and concurrency limits")
            .await?;
        if max == 0 {
            return Err(Error::InvalidOption {
                option: "concurrency limit",
                reason: "needs at least 1 job at once (pause the queue to run none)",
            });
        }
        let mut conn = self.client.conn().await?;
        let () = redis::cmd("HSET")
            .arg(&self.keys.limit)
            .arg("concurrency")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes the queue's concurrency limit (a rate limit stays). Returns whether it had one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_concurrency_limit(&self) -> Result<bool> {
        self.refuse_partitioned("rate and concurrency limits")
            .await?;
        let mut conn = self.client.conn().await?;
        let removed: u64 = redis::cmd("HDEL")
            .arg(&self.keys.limit)
            .arg("concurrency")
            .query_async(&mut conn)
            .await?;
        Ok(removed > 0)
    }

    /// The queue's concurrency limit, if it has one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn concurrency_limit(&self) -> Result<Option<u32>> {
        let mut conn = self.client.conn().await?;
        Ok(redis::cmd("HGET")
            .arg(&self.keys.limit)
            .arg("concurrency")
            .query_async(&mut conn)
            .await?)
    }

    /// The queue's rate limit: most starts and the window, if it has one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn rate_limit(&self) -> Result<Option<(u32, Duration)>> {
        let mut conn = self.client.conn().await?;
        let (rate, period): (Option<u32>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.keys.limit)
            .arg("rate")
            .arg("period_ms")
            .query_async(&mut conn)
            .await?;
        Ok(rate.zip(period).map(|(r, p)| (r, Duration::from_millis(p))))
    }

    /// Sets the lease every worker of the queue uses (at least 30 ms): how long a delivery is held without a
    /// renewal before another worker may take it over. The first worker to start sets it to its own when none
    /// is set; workers started later follow the queue's, and workers already running keep theirs until they
    /// restart (restart them after a change: a worker with a shorter lease takes others' jobs between renewals).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_lease(&self, lease: Duration) -> Result<()> {
        let ms = lease.max(Duration::from_millis(30)).as_millis() as u64;
        let mut conn = self.client.conn().await?;
        let () = redis::cmd("HSET")
            .arg(&self.keys.config)
            .arg("lease_ms")
            .arg(ms)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The lease the queue's workers use, once one has started (or [`Queue::set_lease`] set it).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn lease(&self) -> Result<Option<Duration>> {
        let mut conn = self.client.conn().await?;
        let ms: Option<u64> = redis::cmd("HGET")
            .arg(&self.keys.config)
            .arg("lease_ms")
            .query_async(&mut conn)
            .await?;
        Ok(ms.map(Duration::from_millis))
    }

    /// Sets the queue's default time limit for one attempt of a job that carries none of its own
    /// ([`crate::Enqueue::timeout`]); `None` removes it. Workers read it when they start; a worker given a limit
    /// of its own ([`crate::Worker::timeout`], `rill work --timeout`) uses that instead. Zero removes it too.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_default_timeout(&self, limit: Option<Duration>) -> Result<()> {
        let mut conn = self.client.conn().await?;
        match limit.filter(|d| !d.is_zero()) {
            Some(d) => {
                let () = redis::cmd("HSET")
                    .arg(&self.keys.config)
                    .arg("timeout_ms")
                    .arg(d.as_millis().max(1) as u64)
                    .query_async(&mut conn)
                    .await?;
            }
            None => {
                let () = redis::cmd("HDEL")
                    .arg(&self.keys.config)
                    .arg("timeout_ms")
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// The queue's default attempt time limit ([`Queue::set_default_timeout`]), if it has one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn default_timeout(&self) -> Result<Option<Duration>> {
        let mut conn = self.client.conn().await?;
        let ms: Option<u64> = redis::cmd("HGET")
            .arg(&self.keys.config)
            .arg("timeout_ms")
            .query_async(&mut conn)
            .await?;
        Ok(ms.filter(|ms| *ms > 0).map(Duration::from_millis))
    }
}
