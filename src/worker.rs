//! Running jobs: [`Worker`] joins a queue's consumer group and runs a handler on each delivery.
//!
//! Inside `run`: a fetch loop (own connection, `XREADGROUP ... BLOCK`, never more deliveries than free slots),
//! one task per job, an acker that completes finished jobs in batches through `ack.lua`, the lease keeper
//! thread ([`crate::lease`]), the reclaimer ([`crate::reclaim`]) and the promoter ([`crate::schedule`]).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::job::{FailAction, Job, JobContext, JobError};
use crate::keys::{GROUP, QueueKeys};
use crate::lease::{self, Held, HeldMap};
use crate::producer::now_ms;
use crate::scripts::{self, AckItem, DeliveryRef, FailMode, FailOutcome, Released};
use crate::wire::{self, DeadReason, RawEntry};

/// Worker settings. Every field has a production default; see [`Worker`]'s builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Jobs run at once (default 16).
    pub concurrency: usize,
    /// Lease of a delivery (default 5 s): renewed every third of it; a delivery not renewed for this long is
    /// reclaimed by another worker. Crash recovery takes at most `lease + reclaim_interval`.
    pub lease: Duration,
    /// How often stalled deliveries are looked for (default 1 s).
    pub reclaim_interval: Duration,
    /// Longest `XREADGROUP` block (default 2 s; a read never blocks past the next reclaim, so in effect at
    /// most `reclaim_interval`).
    pub block: Duration,
    /// Attempts for jobs that do not set `max_attempts` (default 5).
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter (default 1 s).
    pub backoff_base: Duration,
    /// Longest retry delay (default 1 h).
    pub backoff_max: Duration,
    /// How long a completed job's record (state, result) is kept (default 24 h; zero keeps none). Without
    /// `keep_completed`, only jobs whose handler returned a result get a record.
    pub retention: Duration,
    /// Keep a record of every completed job, with or without a result, so `state(id)` answers `completed`
    /// for all of them within `retention` (default false: one write per job fewer).
    pub keep_completed: bool,
    /// Approximate length the events stream is trimmed to (default 10,000).
    pub events_maxlen: u64,
    /// Whether `completed` events are written (default true; one event entry per ack batch lists its jobs).
    pub completed_events: bool,
    /// How long shutdown waits for running jobs before cancelling them (default 10 s).
    pub shutdown_timeout: Duration,
    /// Most completions per `ack.lua` call (default 256).
    pub ack_batch: usize,
    /// Longest sleep of the promoter between due-job checks (default 250 ms).
    pub promote_interval: Duration,
    /// Checkpoint limits.
    pub checkpoints: crate::job::CheckpointSettings,
    /// Heartbeat interval and crash threshold (also used to judge other workers crashed and adopt their jobs).
    pub health: crate::registry::HealthRule,
    /// Free metadata published in the registry record (`meta:<key>` fields).
    pub metadata: Vec<(String, String)>,
    /// Declared capabilities published in the registry record.
    pub capabilities: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            lease: Duration::from_secs(5),
            reclaim_interval: Duration::from_secs(1),
            block: Duration::from_secs(2),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            retention: Duration::from_secs(24 * 3600),
            keep_completed: false,
            events_maxlen: 10_000,
            completed_events: true,
            shutdown_timeout: Duration::from_secs(10),
            ack_batch: 256,
            promote_interval: Duration::from_millis(250),
            checkpoints: crate::job::CheckpointSettings::default(),
            health: crate::registry::HealthRule::default(),
            metadata: Vec::new(),
            capabilities: Vec::new(),
        }
    }
}

/// Retry delay before attempt `attempts_made + 1`: `base * 2^(attempts_made-1)`, capped, then scaled by a
/// random factor in [0.5, 1.0) so that jobs failing together do not retry together.
pub fn backoff(attempts_made: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts_made.saturating_sub(1).min(40);
    let raw = base.saturating_mul(1u32 << exp.min(31)).min(max);
    raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Counters of one worker, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    malformed: AtomicU64,
    stale: AtomicU64,
    lease_lost: AtomicU64,
    lease_failures: AtomicU64,
    reclaimed: AtomicU64,
    released: AtomicU64,
    cancelled: AtomicU64,
}

/// A snapshot of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs completed (acks accepted).
    pub completed: u64,
    /// Failed attempts scheduled for retry.
    pub retried: u64,
    /// Jobs dead-lettered by this worker (failed, exhausted or malformed).
    pub dead: u64,
    /// Of those, entries refused as malformed or too large.
    pub malformed: u64,
    /// Completions, failures or updates rejected because another delivery owned the job.
    pub stale: u64,
    /// Leases found taken by another worker.
    pub lease_lost: u64,
    /// Lease renewal calls that failed (Redis unreachable).
    pub lease_failures: u64,
    /// Stalled deliveries this worker took over.
    pub reclaimed: u64,
    /// Deliveries handed back at shutdown (or never seen, after a connection error).
    pub released: u64,
    /// Running jobs ended as cancelled by a signal.
    pub cancelled: u64,
}

macro_rules! counters {
    ($($add:ident => $field:ident),*) => {
        impl WorkerStats {
            $(pub(crate) fn $add(&self) { self.$field.fetch_add(1, Ordering::Relaxed); })*
            /// Current values.
            pub fn snapshot(&self) -> WorkerReport {
                WorkerReport { $($field: self.$field.load(Ordering::Relaxed)),* }
            }
        }
    };
}
counters!(add_completed => completed, add_retried => retried, add_dead => dead, add_malformed => malformed,
    add_stale => stale, add_lease_lost => lease_lost, add_lease_failure => lease_failures,
    add_reclaimed => reclaimed, add_released => released, add_cancelled => cancelled);

/// State shared by a running worker's parts.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) keys: QueueKeys,
    pub(crate) consumer: String,
    pub(crate) config: WorkerConfig,
    pub(crate) held: HeldMap,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) slots: Arc<Semaphore>,
    /// Held while taking entries and registering them, and while sweeping this consumer's pending list, so a
    /// sweep never hands back an entry that is about to run here.
    pub(crate) claim_lock: tokio::sync::Mutex<()>,
    /// Deliveries (entry id, token) whose job a signal cancelled.
    pub(crate) cancel_requested: Mutex<std::collections::HashSet<(String, u64)>>,
    /// Deliveries whose job a signal paused: parked instead of handed back when they yield.
    pub(crate) park_requested: Mutex<std::collections::HashSet<(String, u64)>>,
    /// Whether the worker takes new jobs (paused queue, quiet worker).
    pub(crate) gate: tokio::sync::watch::Sender<Gate>,
    /// Fires when a `stop` signal asks this worker to shut down.
    pub(crate) stop_requested: CancellationToken,
    /// Set once shutdown has begun (registry status `draining`).
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Handlers running now (registry `in_flight`): not the held deliveries, which include finished jobs whose
    /// ack is on its way.
    pub(crate) running: std::sync::atomic::AtomicU64,
    /// When this worker started, ms since the Unix epoch.
    pub(crate) started_ms: u64,
}

/// What holds the fetch loop back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gate {
    pub(crate) paused: bool,
    pub(crate) quiet: bool,
}

impl Shared {
    /// Whether a signal cancelled this delivery's job (and forgets the request).
    fn take_cancel(&self, entry_id: &str, token: u64) -> bool {
        let mut requested = self.cancel_requested.lock().expect("cancel lock");
        // Almost always empty: no allocation per job on the hot path.
        !requested.is_empty() && requested.remove(&(entry_id.to_owned(), token))
    }

    /// Stops renewing a delivery's lease. Only that delivery's: if this worker reclaimed the same entry under a
    /// newer token meanwhile, that one stays.
    fn forget(&self, entry_id: &str, token: u64) {
        let mut held = self.held.lock().expect("held lock");
        if held.get(entry_id).is_some_and(|h| h.token == token) {
            held.remove(entry_id);
        }
    }

    fn events_maxlen(&self) -> u64 {
        self.config.events_maxlen.max(1)
    }
}

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

/// A consumer name unique to this process: host, pid and a random suffix.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
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

    /// Lease of a delivery (at least 30 ms); also the stalled-job threshold.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often to look for stalled jobs.
    pub fn reclaim_interval(mut self, every: Duration) -> Self {
        self.config.reclaim_interval = every.max(Duration::from_millis(10));
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
    /// Only start-up errors (the consumer group cannot be created, the lease thread cannot start). Redis
    /// trouble while running is logged and retried.
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
        ensure_group(&self.client, &self.keys).await?;
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            keys: self.keys.clone(),
            consumer: self.consumer.clone(),
            slots: Arc::new(Semaphore::new(self.config.concurrency)),
            config: self.config,
            held: Arc::new(Mutex::new(HashMap::new())),
            stats: self.stats.clone(),
            claim_lock: tokio::sync::Mutex::new(()),
            cancel_requested: Mutex::default(),
            park_requested: Mutex::default(),
            gate: tokio::sync::watch::Sender::new(Gate::default()),
            stop_requested: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            running: std::sync::atomic::AtomicU64::new(0),
            started_ms: now_ms(),
        });
        let stopping = CancellationToken::new();
        let ctx = Arc::new(JobContext {
            client: shared.client.clone(),
            keys: shared.keys.clone(),
            // Progress and data written by a running job must outlive the job (ack deletes them when no record
            // is kept).
            record_ttl_ms: shared
                .config
                .retention
                .max(Duration::from_secs(24 * 3600))
                .as_millis() as u64,
            checkpoints: shared.config.checkpoints,
            stopping: stopping.clone(),
        });
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let runner = Arc::new(Runner {
            shared: shared.clone(),
            handler,
            _job: std::marker::PhantomData,
            ctx,
            acks: ack_tx,
            tasks: TaskTracker::new(),
            abort: CancellationToken::new(),
        });
        tracing::info!(queue = %shared.keys.queue, consumer = %shared.consumer, "worker started");

        let stop_lease = CancellationToken::new();
        let lease_thread =
            lease::spawn(shared.clone(), stop_lease.clone()).map_err(Error::Thread)?;
        let stop_acker = CancellationToken::new();
        // If this future is dropped mid-run, the lease thread must stop too, or leases would never expire.
        let _lease_guard = stop_lease.clone().drop_guard();
        let acker = AbortOnDropHandle::new(tokio::spawn(ack_loop(
            shared.clone(),
            ack_rx,
            stop_acker.clone(),
        )));
        let stop_background = CancellationToken::new();
        // Dropping `run` (instead of resolving `shutdown`) is a crash: the background tasks end with it and
        // unfinished deliveries are reclaimed after their lease.
        let promoter = AbortOnDropHandle::new(tokio::spawn(crate::schedule::promote_loop(
            shared.clone(),
            stop_background.clone(),
        )));

        let signals = AbortOnDropHandle::new(tokio::spawn(crate::signals::listen(
            shared.clone(),
            stop_background.clone(),
        )));
        // Obey a pause sent before this worker started, before taking anything.
        let paused: bool = redis::cmd("EXISTS")
            .arg(&shared.keys.paused)
            .query_async(&mut shared.client.conn().await?)
            .await?;
        crate::signals::set_gate(&shared, |g| g.paused = paused);
        let stop_requested = shared.stop_requested.clone();
        fetch_loop(&runner, async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_requested.cancelled() => {}
            }
        })
        .await;

        // Graceful shutdown.
        shared.draining.store(true, Ordering::Relaxed);
        stopping.cancel();
        crate::signals::stop_running(&shared);
        stop_background.cancel();
        let _ = promoter.await;
        let _ = signals.await;
        runner.tasks.close();
        let timeout = shared.config.shutdown_timeout;
        if tokio::time::timeout(timeout, runner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(queue = %shared.keys.queue, running = runner.tasks.len(), "shutdown timeout: cancelling running jobs");
            for h in shared.held.lock().expect("held lock").values() {
                h.cancel.cancel();
            }
            if tokio::time::timeout(Duration::from_secs(1), runner.tasks.wait())
                .await
                .is_err()
            {
                runner.abort.cancel();
                runner.tasks.wait().await;
            }
        }
        // Every job task has ended, so every completion has been sent: let the acker drain and stop.
        stop_acker.cancel();
        let _ = acker.await;
        sweep_own_pending(&shared, false).await;
        match shared.client.conn().await {
            Ok(mut c) => match scripts::retire(&mut c, &shared.keys, &shared.consumer).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(consumer = %shared.consumer, "consumer kept: it still has pending entries")
                }
                Err(e) => tracing::warn!(error = %e, "could not leave the consumer group"),
            },
            Err(e) => tracing::warn!(error = %e, "could not leave the consumer group"),
        }
        stop_lease.cancel();
        let _ = tokio::task::spawn_blocking(move || lease_thread.join()).await;
        // Leave the registry (after the lease thread, which beats, has stopped).
        if let Ok(mut c) = shared.client.conn().await {
            let r: redis::RedisResult<()> = redis::pipe()
                .cmd("DEL")
                .arg(shared.keys.worker(&shared.consumer))
                .ignore()
                .cmd("ZREM")
                .arg(&shared.keys.workers)
                .arg(&shared.consumer)
                .ignore()
                .query_async(&mut c)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not leave the worker registry");
            }
        }
        let report = shared.stats.snapshot();
        tracing::info!(queue = %shared.keys.queue, consumer = %shared.consumer, ?report, "worker stopped");
        Ok(report)
    }
}

/// Creates the queue's consumer group at `0` (so it sees every entry ever added) and the stream if needed, and
/// lists the queue in the namespace's queue set.
pub(crate) async fn ensure_group(client: &Client, keys: &QueueKeys) -> Result<()> {
    let mut conn = client.conn().await?;
    let _: () = redis::cmd("SADD")
        .arg(&keys.queues)
        .arg(&keys.queue)
        .query_async(&mut conn)
        .await?;
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
        Err(e) => Err(e.into()),
    }
}

/// A job handler: any `Fn(Job<T>) -> impl Future<Output = Result<R, JobError>>` where `R` (the result) is
/// serializable; a result that encodes to CBOR `null` (such as `()`) stores none.
pub(crate) trait Handler<T>: Send + Sync + 'static {
    /// The result type.
    type Output: Serialize + Send + 'static;
    /// Runs the handler on one job.
    fn call(
        &self,
        job: Job<T>,
    ) -> futures::future::BoxFuture<'static, std::result::Result<Self::Output, JobError>>;
}

impl<T, R, F, Fut> Handler<T> for F
where
    T: Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
{
    type Output = R;
    fn call(
        &self,
        job: Job<T>,
    ) -> futures::future::BoxFuture<'static, std::result::Result<R, JobError>> {
        Box::pin(self(job))
    }
}

/// A completion on its way to `ack.lua`.
pub(crate) struct Completion {
    entry_id: String,
    token: u64,
    job_id: String,
    attempt: u32,
    result: Vec<u8>,
    touched: bool,
}

/// Everything a job task needs.
pub(crate) struct Runner<T, H> {
    pub(crate) shared: Arc<Shared>,
    handler: H,
    _job: std::marker::PhantomData<fn(T)>,
    ctx: Arc<JobContext>,
    acks: mpsc::UnboundedSender<Completion>,
    tasks: TaskTracker,
    abort: CancellationToken,
}

/// The dispatch side of a [`Runner`], without its type parameters (used by the reclaimer).
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn shared(&self) -> &Arc<Shared>;
    /// Starts one delivery (or quarantines it). Consumes one slot.
    fn dispatch(self: &Arc<Self>, raw: RawEntry, token: u64, slot: OwnedSemaphorePermit);
}

impl<T, H> Dispatch for Runner<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn dispatch(self: &Arc<Self>, raw: RawEntry, token: u64, slot: OwnedSemaphorePermit) {
        let shared = &self.shared;
        let limit = shared.client.config().max_payload_bytes;
        let entry_id = raw.id.clone();
        let decoded =
            wire::parse_entry(raw, limit).and_then(|env| match wire::decode::<T>(&env.payload) {
                Ok(data) => Ok((env, data)),
                Err(e) => Err(wire::Malformed {
                    reason: DeadReason::Malformed,
                    detail: format!(
                        "payload does not decode as {}: {e}",
                        std::any::type_name::<T>()
                    ),
                }),
            });
        let (env, data) = match decoded {
            Ok(ok) => ok,
            Err(m) => {
                let shared = shared.clone();
                self.tasks.spawn(async move {
                    tracing::warn!(queue = %shared.keys.queue, entry = %entry_id, reason = m.reason.as_str(), detail = %m.detail, "quarantining entry");
                    let d = DeliveryRef { entry_id: &entry_id, token };
                    let out = fail_with_retries(&shared, d, &entry_id, FailMode::Dead(m.reason), &m.detail).await;
                    if let Some(FailOutcome::Dead { .. }) = out {
                        shared.stats.add_malformed();
                        shared.stats.add_dead();
                    }
                    drop(slot);
                });
                return;
            }
        };
        let cancel = CancellationToken::new();
        // Not a child of the worker's token (children share one lock across every running job): shutdown fires
        // each held job's token instead, and a job started after that fires at once (below).
        let stopping = CancellationToken::new();
        let previous = shared.held.lock().expect("held lock").insert(
            env.entry_id.clone(),
            Held {
                token,
                job_id: env.job_id.clone(),
                stopping: stopping.clone(),
                cancel: cancel.clone(),
                renewed: Instant::now(),
            },
        );
        // This worker took back an entry it was still running (its lease had expired): the older delivery is
        // stale now.
        if let Some(old) = previous {
            old.cancel.cancel();
        }
        if self.ctx.stopping.is_cancelled() {
            stopping.cancel();
        }
        let max_attempts = env.max_attempts.unwrap_or(shared.config.max_attempts);
        let touched = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let job = Job::new(
            data,
            env,
            token,
            shared.consumer.clone(),
            max_attempts,
            cancel,
            self.ctx.clone(),
            touched.clone(),
            stopping,
        );
        let me = self.clone();
        self.tasks
            .spawn(async move { me.run_one(job, touched, slot).await });
    }
}

impl<T, H> Runner<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    async fn run_one(
        self: Arc<Self>,
        job: Job<T>,
        touched: Arc<std::sync::atomic::AtomicBool>,
        slot: OwnedSemaphorePermit,
    ) {
        let shared = &self.shared;
        let entry_id = job.delivery().entry_id.clone();
        let token = job.delivery().token;
        let job_id = job.id().to_owned();
        let attempt = job.attempt();
        let run = AssertUnwindSafe(self.handler.call(job)).catch_unwind();
        shared.running.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::select! {
            r = run => Some(r),
            _ = self.abort.cancelled() => None,
        };
        shared.running.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
        let failure = match outcome {
            // Dropped at the shutdown deadline: the delivery stays pending and the final sweep hands it back.
            None => {
                shared.forget(&entry_id, token);
                return;
            }
            Some(Ok(Ok(value))) => match wire::encode(&{
                // It finished before the cancellation reached it: it completes.
                shared.take_cancel(&entry_id, token);
                value
            }) {
                Ok(bytes) => {
                    let result = if bytes == [0xf6] { Vec::new() } else { bytes };
                    let _ = self.acks.send(Completion {
                        entry_id,
                        token,
                        job_id,
                        attempt,
                        result,
                        touched: touched.load(Ordering::Relaxed),
                    });
                    return;
                }
                Err(e) => JobError::permanent(format!("result cannot be encoded: {e}")),
            },
            Some(Ok(Err(e))) if shared.take_cancel(&entry_id, token) => {
                JobError::cancelled_by_signal(e.message)
            }
            Some(Ok(Err(e))) => e,
            Some(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                JobError::retry(format!("handler panicked: {msg}"))
            }
        };
        let mode = match failure.action {
            FailAction::Cancelled => FailMode::Cancel {
                retention_ms: shared.config.retention.as_millis().max(1) as u64,
            },
            FailAction::Interrupt => {
                let park = shared
                    .park_requested
                    .lock()
                    .expect("park lock")
                    .remove(&(entry_id.clone(), token));
                self.hand_back(&entry_id, token, &job_id, &failure.message, park)
                    .await;
                return;
            }
            FailAction::Permanent => FailMode::Dead(DeadReason::Failed),
            FailAction::Retry(Some(d)) => FailMode::Retry {
                delay_ms: d.as_millis() as u64,
            },
            FailAction::Retry(None) => {
                let d = backoff(
                    attempt,
                    shared.config.backoff_base,
                    shared.config.backoff_max,
                    rand::random::<f64>(),
                );
                FailMode::Retry {
                    delay_ms: d.as_millis() as u64,
                }
            }
        };
        let d = DeliveryRef {
            entry_id: &entry_id,
            token,
        };
        match fail_with_retries(shared, d, &job_id, mode, &failure.message).await {
            Some(FailOutcome::RetryScheduled { .. } | FailOutcome::Requeued { .. }) => {
                shared.stats.add_retried()
            }
            Some(FailOutcome::Dead { .. }) => shared.stats.add_dead(),
            Some(FailOutcome::Cancelled) => shared.stats.add_cancelled(),
            Some(FailOutcome::Stale) => {
                shared.stats.add_stale();
                tracing::warn!(queue = %shared.keys.queue, job = %job_id, "failure not recorded: delivery is stale");
            }
            Some(FailOutcome::Gone) | None => {}
        }
        shared.forget(&entry_id, token);
    }
}

impl<T, H> Runner<T, H> {
    /// Releases one delivery for immediate redelivery, or parks it (`park`: its job was paused), without counting
    /// the attempt.
    async fn hand_back(&self, entry_id: &str, token: u64, job_id: &str, why: &str, park: bool) {
        let shared = &self.shared;
        let d = DeliveryRef { entry_id, token };
        let r = async {
            let mut c = shared.client.conn().await?;
            let now = now_ms();
            let maxlen = shared.events_maxlen();
            if park {
                scripts::park(&mut c, &shared.keys, &shared.consumer, d, now, maxlen).await
            } else {
                let codes =
                    scripts::release(&mut c, &shared.keys, &shared.consumer, now, maxlen, &[d])
                        .await?;
                Ok(codes.first().copied().unwrap_or(Released::Stale))
            }
        }
        .await;
        match r {
            Ok(Released::Released) => {
                shared.stats.add_released();
                tracing::info!(queue = %shared.keys.queue, job = %job_id, reason = %why, parked = park, "job handed back");
            }
            Ok(_) => shared.stats.add_stale(),
            // Still pending to us: the final sweep (or the lease expiry) hands it back.
            Err(e) => tracing::warn!(error = %e, job = %job_id, "could not hand the job back"),
        }
        shared.forget(entry_id, token);
    }
}

/// Calls `fail.lua`, retrying connection errors for up to one lease (after that the lease is gone anyway and
/// the job will be reclaimed).
async fn fail_with_retries(
    shared: &Shared,
    d: DeliveryRef<'_>,
    job_id: &str,
    mode: FailMode,
    error: &str,
) -> Option<FailOutcome> {
    let deadline = Instant::now() + shared.config.lease;
    let mut pause = Duration::from_millis(50);
    loop {
        let r = async {
            let mut c = shared.client.conn().await?;
            scripts::fail(
                &mut c,
                &shared.keys,
                &shared.consumer,
                d,
                job_id,
                now_ms(),
                mode,
                error,
                shared.config.max_attempts,
                shared.events_maxlen(),
            )
            .await
        }
        .await;
        match r {
            Ok(out) => return Some(out),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::debug!(error = %e, "fail.lua: retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::error!(error = %e, job = %job_id, "could not record a failure; the job will be reclaimed");
                return None;
            }
        }
    }
}

/// Completes finished jobs in batches: whatever has queued up while the previous call ran goes in the next.
async fn ack_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    stop: CancellationToken,
) {
    let max = shared.config.ack_batch.max(1);
    let mut batch = Vec::with_capacity(max);
    let mut busy = false;
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, max) => {
                if n == 0 {
                    return;
                }
                // Under load (the last call was a real batch), let up to a quarter batch gather for a moment:
                // a call's fixed cost in Redis is then spread over more jobs. Idle, acks go at once.
                if busy && batch.len() < max / 4 {
                    let _ = tokio::time::timeout(COALESCE, async {
                        while batch.len() < max / 4 {
                            let room = max - batch.len();
                            if rx.recv_many(&mut batch, room).await == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                }
                busy = batch.len() >= 8;
            },
            _ = stop.cancelled() => {
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        let retention = scripts::Retention {
            ms: shared.config.retention.as_millis() as u64,
            keep_all: shared.config.keep_completed,
        };
        let events = if shared.config.completed_events {
            shared.events_maxlen()
        } else {
            0
        };
        let deadline = Instant::now() + shared.config.lease;
        let mut pause = Duration::from_millis(20);
        let flags = loop {
            let items: Vec<AckItem<'_>> = batch
                .iter()
                .map(|c| AckItem {
                    delivery: DeliveryRef {
                        entry_id: &c.entry_id,
                        token: c.token,
                    },
                    job_id: &c.job_id,
                    attempt: c.attempt,
                    result: &c.result,
                    touched: c.touched,
                })
                .collect();
            let r = async {
                let mut conn = shared.client.conn().await?;
                scripts::ack(
                    &mut conn,
                    &shared.keys,
                    &shared.consumer,
                    now_ms(),
                    retention,
                    events,
                    &items,
                )
                .await
            }
            .await;
            match r {
                Ok(flags) => break Some(flags),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "ack.lua: retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "could not complete jobs; they will be reclaimed and run again");
                    break None;
                }
            }
        };
        let mut held = shared.held.lock().expect("held lock");
        for (i, c) in batch.drain(..).enumerate() {
            if held.get(&c.entry_id).is_some_and(|h| h.token == c.token) {
                held.remove(&c.entry_id);
            }
            match flags.as_ref().map(|f| f[i]) {
                Some(true) => shared.stats.add_completed(),
                Some(false) => {
                    shared.stats.add_stale();
                    tracing::warn!(queue = %shared.keys.queue, job = %c.job_id, entry = %c.entry_id, "completion rejected: another delivery owns this job");
                }
                None => {}
            }
        }
    }
}

/// Longest wait for free slots before a read while there is a backlog (see `fetch_loop`).
const COALESCE: Duration = Duration::from_millis(1);

/// Reads new entries while there are free slots, until `shutdown`.
async fn fetch_loop<D: Dispatch>(runner: &Arc<D>, shutdown: impl Future<Output = ()>) {
    let shared = runner.shared().clone();
    // Stalled jobs are looked for between reads, so a read never blocks past the next reclaim.
    let block = shared.config.block.min(shared.config.reclaim_interval);
    let block_ms = block.as_millis().max(1) as u64;
    let max_batch = shared.config.concurrency.min(512);
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut pause = Duration::from_millis(50);
    let mut cursor = "0-0".to_owned();
    let mut next_reclaim = Instant::now() + shared.config.reclaim_interval;
    let mut backlog = false;
    tokio::pin!(shutdown);
    let mut gate = shared.gate.subscribe();
    loop {
        // A paused queue or a quiet worker takes nothing new (running jobs go on).
        while *gate.borrow_and_update() != Gate::default() {
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = gate.changed() => if r.is_err() { return },
            }
        }
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            p = shared.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut slots = vec![first];
        while slots.len() < max_batch {
            match shared.slots.clone().try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        // With a backlog (the last read was full), wait briefly for half the slots so reads (and the acks that
        // follow) come in batches: per-call costs in Redis and in the client are paid once per batch, not per
        // job. Without one, read at once with whatever is free, so latency stays low.
        let half = max_batch / 2;
        if backlog && slots.len() < half {
            let want = (half - slots.len()) as u32;
            if let Ok(Ok(mut more)) =
                tokio::time::timeout(COALESCE, shared.slots.clone().acquire_many_owned(want)).await
            {
                // One permit per entry, as dispatch expects.
                while more.num_permits() > 1 {
                    slots.extend(more.split(1));
                }
                slots.push(more);
            }
        }
        if shared.client.is_closed() {
            return;
        }
        if Instant::now() >= next_reclaim {
            let more = crate::reclaim::reclaim(runner, &mut slots, &mut cursor).await;
            // Stalled jobs come before new ones: while a pass keeps filling every free slot, look again as soon
            // as the next slot frees.
            next_reclaim = if more {
                Instant::now()
            } else {
                Instant::now() + shared.config.reclaim_interval
            };
            if slots.is_empty() {
                continue;
            }
        }
        if conn.is_none() {
            match shared.client.blocking_conn(block).await {
                Ok(c) => {
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetch: cannot connect; retrying");
                    drop(slots);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connection set above");
        let requested = slots.len();
        let mut read_cmd = redis::cmd("XREADGROUP");
        read_cmd
            .arg("GROUP")
            .arg(GROUP)
            .arg(&shared.consumer)
            .arg("COUNT")
            .arg(requested)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&shared.keys.ready)
            .arg(">");
        let read = read_cmd.query_async::<redis::Value>(c);
        let reply = tokio::select! {
            biased;
            // Dropping the connection (below) makes the server unblock this client, so nothing is assigned to
            // us after we stop; anything assigned meanwhile is handed back by the final sweep.
            _ = &mut shutdown => return,
            // Paused or quieted mid-read: drop the blocked read and hand back anything it was assigned.
            _ = gate.changed() => {
                conn = None;
                drop(slots);
                sweep_own_pending(&shared, true).await;
                continue;
            }
            r = read => r,
        };
        let entries = match reply {
            Ok(v) => match wire::parse_read_reply(v) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "fetch: unreadable reply");
                    Vec::new()
                }
            },
            Err(e) => {
                conn = None;
                drop(slots);
                if e.code() == Some("NOGROUP") {
                    tracing::info!(queue = %shared.keys.queue, "consumer group missing (Redis restarted or stream deleted): creating it");
                    if let Err(e) = ensure_group(&shared.client, &shared.keys).await {
                        tracing::warn!(error = %e, "cannot create consumer group");
                    }
                } else {
                    tracing::warn!(error = %e, "fetch: read failed; reconnecting");
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    // A read the client gave up on may still have assigned entries to us: hand them back.
                    sweep_own_pending(&shared, true).await;
                }
                continue;
            }
        };
        pause = Duration::from_millis(50);
        backlog = entries.len() == requested;
        for raw in entries {
            let Some(slot) = slots.pop() else {
                tracing::error!("fetch: more entries than requested");
                break;
            };
            // A new entry's delivery count is 1.
            runner.dispatch(raw, 1, slot);
        }
    }
}

/// Hands back every entry pending to this consumer that is not running here (`only_orphans`), or all of them
/// (at shutdown, after every job task ended).
pub(crate) async fn sweep_own_pending(shared: &Shared, only_orphans: bool) {
    let _guard = shared.claim_lock.lock().await;
    let mut conn = match shared.client.conn().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "sweep: cannot connect");
            return;
        }
    };
    let mut start = "-".to_owned();
    // Bounded: at most 100 pages of 500.
    for _ in 0..100 {
        let page: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
            .arg(&shared.keys.ready)
            .arg(GROUP)
            .arg(&start)
            .arg("+")
            .arg(500)
            .arg(&shared.consumer)
            .query_async(&mut conn)
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: XPENDING failed");
                return;
            }
        };
        let Some(last) = page.last() else { return };
        start = format!("({}", last.0);
        let mine: Vec<(String, u64)> = {
            let held = shared.held.lock().expect("held lock");
            page.iter()
                .filter(|(id, ..)| !(only_orphans && held.contains_key(id)))
                .map(|(id, _, _, count)| (id.clone(), *count))
                .collect()
        };
        if !mine.is_empty() {
            let refs: Vec<DeliveryRef<'_>> = mine
                .iter()
                .map(|(e, t)| DeliveryRef {
                    entry_id: e,
                    token: *t,
                })
                .collect();
            match scripts::release(
                &mut conn,
                &shared.keys,
                &shared.consumer,
                now_ms(),
                shared.events_maxlen(),
                &refs,
            )
            .await
            {
                Ok(codes) => {
                    let n = codes.iter().filter(|c| **c == Released::Released).count();
                    for _ in 0..n {
                        shared.stats.add_released();
                    }
                    if n > 0 {
                        tracing::info!(queue = %shared.keys.queue, released = n, "handed deliveries back for redelivery");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sweep: release failed");
                    return;
                }
            }
        }
        if page.len() < 500 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(1, b, m, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, b, m, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, b, m, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(3, b, m, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(30, b, m, 1.0), m);
        assert_eq!(backoff(u32::MAX, b, m, 1.0), m);
        assert_eq!(backoff(0, b, m, 1.0), b);
        for j in [0.0, 0.3, 0.99] {
            let d = backoff(4, b, m, j);
            assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8));
        }
    }

    #[test]
    fn consumer_names_are_unique_and_key_safe() {
        let a = consumer_name();
        assert_ne!(a, consumer_name());
        assert!(!a.contains(char::is_whitespace));
    }
}
