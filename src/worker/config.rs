//! Worker settings ([`WorkerConfig`]) and the retry backoff.

use std::time::Duration;

/// The default [`WorkerConfig::prefetch`]: at most 64 deliveries beyond `concurrency`, fewer when handlers run
/// long (what they are expected to start within 100 ms).
pub const DEFAULT_PREFETCH: usize = 64;

/// Worker settings. Every field has a production default; see [`Worker`](super::Worker)'s builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Jobs run at once (default 16).
    pub concurrency: usize,
    /// Most deliveries taken beyond `concurrency`, to wait here for a free slot (default [`DEFAULT_PREFETCH`],
    /// 64; 0 = off). They are held like running ones (leases renewed, reached by signals, handed back at
    /// shutdown without costing an attempt). The bound in effect is what `concurrency` handlers are expected to
    /// start within 100 ms, from how long recent handlers ran: none until one has finished, and none for jobs of
    /// a second or more. One read then serves many jobs and acks batch (at concurrency 1, ~19× the throughput of
    /// reading one job at a time). The cost, bounded by that 100 ms of work: those jobs wait in this worker while
    /// another may be idle, and a crash delays them like the running ones (until the worker is judged crashed).
    pub prefetch: usize,
    /// Lease of a delivery (default 5 s): renewed every third of it; a delivery not renewed for this long is
    /// reclaimed by another worker. Crash recovery takes at most `lease + reclaim_interval`. The queue's stored
    /// lease wins over this one ([`crate::Queue::set_lease`]): the first worker to start stores its own.
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
    /// Longest one attempt may run unless its job sets its own ([`crate::Enqueue::timeout`]); default none. At
    /// the deadline the job's [`cancelled`](crate::Job::cancelled) token fires; a handler still running a sixth of
    /// min(lease, crash_after) later is dropped. The attempt fails (`timeout: ...`) and is retried.
    pub timeout: Option<Duration>,
    /// Shifts the clock the promoter reads (ms): tests use it to run workers whose hosts disagree on the time.
    #[doc(hidden)]
    pub clock_skew_ms: i64,
    /// Most completions per `ack.lua` call (default 256).
    pub ack_batch: usize,
    /// Longest sleep of the promoter between due-job checks (default 1 s): it wakes when the earliest delayed
    /// job it knows of is due, so this bounds only how late a job added since, due earlier, can start.
    pub promote_interval: Duration,
    /// Checkpoint limits.
    pub checkpoints: crate::checkpoint::CheckpointSettings,
    /// Heartbeat interval and crash threshold (also used to judge other workers crashed and adopt their jobs).
    pub health: crate::registry::HealthRule,
    /// Free metadata published in the registry record (`meta:<key>` fields).
    pub metadata: Vec<(String, String)>,
    /// Declared capabilities published in the registry record.
    pub capabilities: Vec<String>,
    /// Run this worker on a thread of its own, on a single-threaded tokio runtime: its loops, its Redis
    /// connections (from a client split off the one it was given; closing that one still stops it) and its
    /// handlers (default false: on the runtime that runs [`Worker::run`](super::Worker::run)). No step of a job
    /// then waits for a wake-up from another thread, which at high throughput costs more than the work itself
    /// (README, Benchmarks: 0.8× the raw Streams loop against 0.55× on a multi-threaded runtime). The handlers
    /// share that one thread: for CPU-heavy ones use `tokio::task::spawn_blocking`, or leave this off
    /// (`block_in_place` is not available on such a runtime). Leases and heartbeats keep their own thread either
    /// way.
    pub dedicated_thread: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            prefetch: DEFAULT_PREFETCH,
            lease: Duration::from_secs(5),
            reclaim_interval: Duration::from_secs(1),
            block: Duration::from_secs(2),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            retention: Duration::from_secs(24 * 3600),
            keep_completed: false,
            events_maxlen: crate::queue::DEFAULT_EVENTS_MAXLEN,
            completed_events: true,
            shutdown_timeout: Duration::from_secs(10),
            timeout: None,
            clock_skew_ms: 0,
            ack_batch: 256,
            promote_interval: Duration::from_secs(1),
            checkpoints: crate::checkpoint::CheckpointSettings::default(),
            health: crate::registry::HealthRule::default(),
            metadata: Vec::new(),
            capabilities: Vec::new(),
            dedicated_thread: false,
        }
    }
}

/// The self-fencing timeline. Others may take a delivery over when its lease expires (`lease` after its last
/// renewal) or when the registry judges this worker crashed (`crash_after` after its last heartbeat). A worker
/// that cannot renew or beat lets go first: at two thirds of either span it fences the deliveries at risk (their
/// `cancelled()` fires and nothing more is written for them), and a handler still running a sixth of the shorter
/// span later is dropped. So a blip shorter than two thirds of `crash_after` (2 s by default) costs nothing, a
/// longer one stops the running jobs here before any other worker may start them, and no job runs twice at once.
impl WorkerConfig {
    /// No heartbeat landed for this long: fence every held delivery.
    pub(crate) fn fence_after_beat(&self) -> Duration {
        self.health.crash_after * 2 / 3
    }

    /// A delivery's lease not renewed for this long: fence it.
    pub(crate) fn fence_after_renewal(&self) -> Duration {
        self.lease * 2 / 3
    }

    /// How long a fenced handler may run on before it is dropped.
    pub(crate) fn fence_grace(&self) -> Duration {
        self.health.crash_after.min(self.lease) / 6
    }
}

/// Retry delay before attempt `attempts_made + 1`: `base * 2^(attempts_made-1)`, capped, then scaled by a
/// random factor in [0.5, 1.0) so that jobs failing together do not retry together.
pub fn backoff(attempts_made: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts_made.saturating_sub(1).min(40);
    let raw = base.saturating_mul(1u32 << exp.min(31)).min(max);
    raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
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
}
