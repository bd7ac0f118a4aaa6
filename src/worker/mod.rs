//! Running jobs: [`Worker`] joins a queue's consumer group and runs a handler on each delivery.
//!
//! One file per role, started by [`Worker::run`] and stopped in order at shutdown:
//! - `fetch`: takes free room (slots, plus an optional prefetch), reads new entries (`XREADGROUP ... BLOCK`, own
//!   connection; the order of priority levels in `levels`), and every `reclaim_interval` recovers stalled ones first
//!   (`reclaim`). On a partitioned queue a worker has a member per partition (`Crew`), sharing slots and room.
//! - `runner`: one task per delivery (per read on a current-thread runtime), which waits in line for a handler
//!   slot (`slots`: read order, stalled jobs first); the handler's outcome becomes an ending (`settle`), and completions go to
//!   the `acker`, which acks them in batches.
//! - `lease` (its own thread): renews held deliveries' leases; `heartbeat` beats on the same thread.
//! - `listener`: applies signals (cancel, pause, quiet, stop); `promote`: moves due delayed jobs.
//! - `dedicated`: all of the above but `lease` on a thread of its own, when configured.
//! - Shared state: `shared` (settings), `deliveries` (the held deliveries, one owner), `control` (gate, status),
//!   `stats`; settings in `config`.

mod acker;
mod config;
mod control;
mod dedicated;
mod deliveries;
mod fetch;
mod heartbeat;
mod lease;
mod levels;
mod listener;
mod promote;
mod reclaim;
mod retries;
mod runner;
mod settle;
mod shared;
mod slots;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use config::{DEFAULT_PREFETCH, WorkerConfig, backoff};
pub use stats::{WorkerReport, WorkerStats};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::identity::{consumer_name, now_ms};
use crate::job::{Job, JobContext, JobError};
use crate::keys::{GROUP, QueueKeys};
use crate::scripts;
use runner::Runner;
use settle::Settler;
use shared::{Crew, ReadPool, Shared};

/// A worker process's membership in one queue.
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
/// # async fn f() -> rill::Result<()> {
/// let client = rill::Client::new("redis://127.0.0.1:6379")?;
/// rill::Worker::new(client, "emails")?
///     .concurrency(64)
///     .run(
///         |job: rill::Job<SendEmail>| async move {
///             println!("to {}", job.data().to);
///             Ok(())
///         },
///         async { tokio::signal::ctrl_c().await.ok(); },
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker {
    client: Client,
    keys: QueueKeys,
    consumer: String,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker for queue `queue` with default settings.
    ///
    /// # Errors
    /// [`Error::InvalidName`].
    pub fn new(client: Client, queue: &str) -> Result<Self> {
        let keys = client.keys(queue)?;
        Ok(Worker {
            client,
            keys,
            consumer: consumer_name(),
            config: WorkerConfig::default(),
            stats: Arc::default(),
        })
    }

    /// Replaces every setting.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Jobs run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// Runs the worker on a thread of its own with a single-threaded runtime; see
    /// [`WorkerConfig::dedicated_thread`].
    pub fn dedicated_thread(mut self, on: bool) -> Self {
        self.config.dedicated_thread = on;
        self
    }

    /// Most deliveries taken beyond `concurrency` to wait for a free slot (0 disables); see
    /// [`WorkerConfig::prefetch`].
    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = n;
        self
    }

    /// Lease of a delivery (at least 30 ms); also the stalled-job threshold. Every worker of a queue uses the
    /// queue's lease once one is stored ([`crate::Queue::set_lease`]; the first worker to start stores its own),
    /// so this is what the queue gets if this worker is the first.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often to look for stalled jobs.
    pub fn reclaim_interval(mut self, every: Duration) -> Self {
        self.config.reclaim_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Longest one attempt may run, for jobs that do not set their own timeout (`Duration::ZERO`: no limit, the
    /// default); see [`WorkerConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Runs this worker's promoter on a clock `ms` off the host's (tests of hosts whose clocks disagree).
    #[doc(hidden)]
    pub fn clock_skew(mut self, ms: i64) -> Self {
        self.config.clock_skew_ms = ms;
        self
    }

    /// Default attempts for jobs that do not set their own.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n.max(1);
        self
    }

    /// Retry backoff: first delay and cap.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max.max(base);
        self
    }

    /// Retention of completed job records (zero: none).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// Publishes `key = value` in this worker's registry record.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.metadata.push((key.into(), value.into()));
        self
    }

    /// Declares a capability in this worker's registry record.
    pub fn capability(mut self, name: impl Into<String>) -> Self {
        self.config.capabilities.push(name.into());
        self
    }

    /// Heartbeat interval and crash threshold.
    pub fn health(mut self, rule: crate::registry::HealthRule) -> Self {
        self.config.health = rule;
        self
    }

    /// Keep a record of every completed job, not only those with a result.
    pub fn keep_completed(mut self, on: bool) -> Self {
        self.config.keep_completed = on;
        self
    }

    /// Whether to write `completed` events.
    pub fn completed_events(mut self, on: bool) -> Self {
        self.config.completed_events = on;
        self
    }

    /// How long shutdown waits for running jobs.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Longest `XREADGROUP` block.
    pub fn block(mut self, block: Duration) -> Self {
        self.config.block = block.max(Duration::from_millis(1));
        self
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Counts this worker's jobs into `metrics` too (feature `metrics`), under this queue's `queue` label.
    #[cfg(feature = "metrics")]
    pub fn metrics(self, metrics: &crate::metrics::Metrics) -> Self {
        self.stats.export_to(metrics.for_queue(&self.keys.queue));
        self
    }

    /// Counters, live while the worker runs.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs `handler` on each job until `shutdown` resolves, then shuts down gracefully: stops taking jobs,
    /// waits up to `shutdown_timeout` for running ones, cancels the rest (their cancellation tokens fire, and
    /// they are dropped one second later), hands unfinished deliveries back for immediate redelivery, and
    /// leaves the consumer group.
    ///
    /// # Errors
    /// Only start-up errors (the consumer group cannot be created, the lease thread cannot start, the signals
    /// cannot be read). Redis trouble while running is logged and retried.
    pub async fn run<T, R, F, Fut>(
        self,
        handler: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
    {
        if self.config.dedicated_thread {
            return dedicated::run(self, handler, shutdown).await;
        }
        self.run_here(handler, shutdown).await
    }

    /// [`Worker::run`] on the runtime that polls it.
    async fn run_here<T, R, F, Fut>(
        mut self,
        handler: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
    {
        // A partitioned queue (SPEC §2a) is worked as one: a member per partition, all sharing this worker's
        // handler slots, room, counters and consumer name; partition 0's member keeps the registry and signals.
        let logical = self.client.queue::<()>(&self.keys.queue)?;
        let keysets: Vec<QueueKeys> = match logical.partitions().await? {
            None => vec![self.keys.clone()],
            Some(p) => p.tags().iter().map(|t| self.keys.partition(t)).collect(),
        };
        for keys in &keysets {
            check_permissions(&self.client, keys, &self.consumer, &self.config).await?;
            ensure_group(&self.client, keys).await?;
        }
        // One lease for every worker of the queue: a worker with a shorter one would take the others' jobs
        // between their renewals.
        let lease = queue_lease(&self.client, &self.keys, self.config.lease).await?;
        if lease != self.config.lease {
            tracing::warn!(queue = %self.keys.queue, configured = ?self.config.lease, queue_lease = ?lease, "this queue's workers share one lease: using the queue's (change it with Queue::set_lease, `rill queue lease`)");
            self.config.lease = lease;
        }
        // Jobs without a time limit of their own get the queue's default, unless this worker was given one.
        if self.config.timeout.is_none() {
            self.config.timeout = logical.default_timeout().await?;
        }
        let slots = slots::Slots::new(self.config.concurrency);
        // Prefetch starts at none; the fetch loop widens it once handlers have run.
        let room = Arc::new(Semaphore::new(self.config.concurrency));
        let reads = (keysets.len() > MAX_BLOCKED_READS)
            .then(|| Arc::new(ReadPool::new(MAX_BLOCKED_READS, keysets.len())));
        let mut crew = Vec::with_capacity(keysets.len());
        for keys in keysets {
            let member = Shared {
                client: self.client.clone(),
                keys,
                consumer: self.consumer.clone(),
                slots: slots.clone(),
                room: room.clone(),
                config: self.config.clone(),
                stats: self.stats.clone(),
                deliveries: Default::default(),
                control: Default::default(),
                started_ms: now_ms(),
                reads: reads.clone(),
                prefetch_adjuster: crew.is_empty(),
            };
            read_settings(&member).await?;
            crew.push(Arc::new(member));
        }
        let crew: Crew = crew.into();
        let home = crew[0].clone();
        let handler = Arc::new(handler);
        let stopping = CancellationToken::new();
        let stop_acker = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let mut runners = Vec::with_capacity(crew.len());
        let mut background = Vec::new();
        for shared in crew.iter() {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            let ctx = Arc::new(JobContext {
                client: shared.client.clone(),
                keys: shared.keys.clone(),
                // Progress and data written by a running job must outlive the job (ack deletes them when no
                // record is kept).
                record_ttl_ms: shared
                    .config
                    .retention
                    .max(Duration::from_secs(24 * 3600))
                    .as_millis() as u64,
                checkpoints: shared.config.checkpoints,
                stopping: stopping.clone(),
            });
            let settler = Settler::new(shared.clone(), ack_tx);
            let h = handler.clone();
            let each = move |job: Job<T>| h(job);
            runners.push(Arc::new(Runner::new(shared.clone(), each, ctx, settler)));
            background.push(AbortOnDropHandle::new(tokio::spawn(acker::run(
                shared.clone(),
                ack_rx,
                stop_acker.clone(),
            ))));
        }
        tracing::info!(queue = %home.keys.queue, consumer = %home.consumer, partitions = crew.len(), "worker started");

        let stop_lease = CancellationToken::new();
        let lease_thread = lease::spawn(crew.clone(), stop_lease.clone()).map_err(Error::Thread)?;
        // If this future is dropped mid-run, the lease thread must stop too, or leases would never expire.
        let _lease_guard = stop_lease.clone().drop_guard();
        // Dropping `run` (instead of resolving `shutdown`) is a crash: the background tasks end with it and
        // unfinished deliveries are reclaimed after their lease.
        let promoters: Vec<_> = crew
            .iter()
            .map(|m| {
                AbortOnDropHandle::new(tokio::spawn(promote::run(
                    m.clone(),
                    stop_background.clone(),
                )))
            })
            .collect();
        let listener = listener::start(crew.clone(), stop_background.clone()).await?;
        let stop_all = CancellationToken::new();
        let requested: Vec<_> = crew.iter().map(|m| m.control.stop_requested()).collect();
        let fetching = futures::future::join_all(runners.iter().map(|r| {
            let stop = stop_all.clone();
            fetch::run(r, async move { stop.cancelled().await })
        }));
        tokio::select! {
            _ = fetching => {}
            _ = async {
                tokio::select! {
                    _ = shutdown => {}
                    _ = futures::future::select_all(requested.iter().map(|t| Box::pin(t.cancelled()))) => {}
                }
                stop_all.cancel();
                std::future::pending::<()>().await
            } => {}
        }

        // Graceful shutdown.
        for m in crew.iter() {
            m.control.begin_draining();
        }
        stopping.cancel();
        for m in crew.iter() {
            m.deliveries.stop_all();
        }
        stop_background.cancel();
        for p in promoters {
            let _ = p.await;
        }
        let _ = listener.await;
        for r in &runners {
            r.finish(home.config.shutdown_timeout).await;
        }
        // Every job task has ended, so every completion has been sent: let the ackers drain and stop.
        stop_acker.cancel();
        for a in background {
            let _ = a.await;
        }
        for m in crew.iter() {
            settle::hand_back_pending(m, false).await;
            leave_group(m).await;
        }
        stop_lease.cancel();
        let _ = tokio::task::spawn_blocking(move || lease_thread.join()).await;
        heartbeat::deregister(&home).await;
        let report = home.stats.snapshot();
        tracing::info!(queue = %home.keys.queue, consumer = %home.consumer, ?report, "worker stopped");
        Ok(report)
    }
}

/// Most blocking reads a worker of a partitioned queue has in flight at once (each its own connection): with more
/// partitions, the partitions' fetch loops take turns at them.
const MAX_BLOCKED_READS: usize = 8;

/// Reads the queue's limits and priority levels into `shared` before its first read (a limited queue is read
/// through limit.lua from the start; one with levels level by level).
async fn read_settings(shared: &Shared) -> Result<()> {
    let (rate, cap, keyed): (Option<String>, Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(&shared.keys.limit)
        .arg("rate")
        .arg("concurrency")
        .arg("key_field")
        .query_async(&mut shared.client.conn().await?)
        .await?;
    let limits = scripts::Limits::from_fields(rate.is_some() || keyed.is_some(), cap.is_some());
    let priorities =
        crate::queue::read_priorities(&mut shared.client.conn().await?, &shared.keys).await?;
    ensure_level_groups(&shared.client, &shared.keys, priorities.levels()).await?;
    shared.control.set_limits(limits);
    shared.control.set_priorities(priorities);
    Ok(())
}

/// Fails with [`Error::Permission`] when the Redis user may not run a command the worker needs, so a
/// misconfigured ACL is one error at start, not a worker refused over and over.
async fn check_permissions(
    client: &Client,
    keys: &QueueKeys,
    consumer: &str,
    config: &WorkerConfig,
) -> Result<()> {
    let caller = scripts::Caller {
        keys,
        consumer,
        events_maxlen: config.events_maxlen,
        max_attempts: config.max_attempts,
        level: 0,
    };
    let mut conn = client.conn().await?;
    match scripts::permissions(&mut conn, &caller).await {
        Ok(None) => Ok(()),
        Ok(Some(command)) => Err(Error::Permission { command }),
        // The script call itself was refused: no scripting commands, or not the queue's keys.
        Err(Error::Redis(e)) if e.code() == Some("NOPERM") => Err(Error::Permission {
            command:
                "EVALSHA / EVAL / SCRIPT LOAD on the queue's keys (rill runs Lua scripts on them)"
                    .into(),
        }),
        Err(e) => Err(e),
    }
}

/// Creates the queue's consumer group at `0` (so it sees every entry ever added) and the stream if needed, and
/// lists the queue in the namespace's queue set.
///
/// At `maxmemory` neither can be written: the listing is then skipped (it is advisory), and an existing group is
/// enough to start, so a worker started on a full Redis drains the queue (its completions are allowed under OOM).
async fn ensure_group(client: &Client, keys: &QueueKeys) -> Result<()> {
    let mut conn = client.conn().await?;
    match client.list_queue(&mut conn, keys).await {
        Err(e) if e.is_out_of_memory() => {
            tracing::warn!(queue = %keys.queue, "Redis is out of memory: the queue is not listed in the queue set")
        }
        r => r?,
    }
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) if e.code() == Some("OOM") && group_exists(&mut conn, keys).await? => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The queue's lease (SPEC §9, step 0): the one in its settings hash, which the first worker to start sets to its
/// own (`HSETNX`). On a full Redis (`OOM`), what is stored, or `own` if nothing is.
async fn queue_lease(client: &Client, keys: &QueueKeys, own: Duration) -> Result<Duration> {
    let mut conn = client.conn().await?;
    let set: redis::RedisResult<bool> = redis::cmd("HSETNX")
        .arg(&keys.config)
        .arg("lease_ms")
        .arg(own.as_millis() as u64)
        .query_async(&mut conn)
        .await;
    match set {
        Ok(true) => return Ok(own),
        Ok(false) => {}
        Err(e) if e.code() == Some("OOM") => {}
        Err(e) => return Err(e.into()),
    }
    let stored: Option<String> = redis::cmd("HGET")
        .arg(&keys.config)
        .arg("lease_ms")
        .query_async(&mut conn)
        .await?;
    Ok(match stored.map(|s| s.parse::<u64>()) {
        Some(Ok(ms)) => Duration::from_millis(ms.max(30)),
        Some(Err(_)) => {
            tracing::warn!(queue = %keys.queue, "the queue's lease_ms is not a number: using this worker's lease");
            own
        }
        None => own,
    })
}

/// Creates the consumer group on the streams of priority levels 1 to `levels - 1` where it is missing
/// (`Queue::set_priorities` creates them; a Redis that lost its data has not).
async fn ensure_level_groups(client: &Client, keys: &QueueKeys, levels: u8) -> Result<()> {
    if levels <= 1 {
        return Ok(());
    }
    let mut conn = client.conn().await?;
    for level in 1..levels {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.level(level))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            // A full Redis refuses the write; a level without its group is created once memory frees (its reads
            // answer NOGROUP meanwhile, and the fetch loop tries again).
            Err(e) if e.code() == Some("OOM") => {
                tracing::warn!(queue = %keys.queue, level, "Redis is out of memory: the level's consumer group waits")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether the queue's consumer group exists (a read, possible at `maxmemory`).
async fn group_exists(conn: &mut crate::client::Connection, keys: &QueueKeys) -> Result<bool> {
    let groups: redis::RedisResult<Vec<std::collections::HashMap<String, redis::Value>>> =
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.ready)
            .query_async(conn)
            .await;
    Ok(groups.is_ok_and(|gs| {
        gs.iter().any(|g| {
            g.get("name")
                .and_then(crate::wire::bytes)
                .is_some_and(|n| n == GROUP.as_bytes())
        })
    }))
}

/// Leaves the consumer group, unless entries are still pending to this consumer (then others reclaim them).
async fn leave_group(shared: &Shared) {
    let r = async {
        let mut c = shared.client.conn().await?;
        let mut all = true;
        for level in 0..shared.control.levels() {
            all &= scripts::retire(&mut c, &shared.keys, level, &shared.consumer).await?;
        }
        Ok::<_, Error>(all)
    }
    .await;
    match r {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(consumer = %shared.consumer, "consumer kept: it still has pending entries")
        }
        Err(e) => tracing::warn!(error = %e, "could not leave the consumer group"),
    }
}
