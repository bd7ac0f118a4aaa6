//! A worker's counters ([`WorkerStats`], live) and their snapshot ([`WorkerReport`]).

use std::sync::atomic::{AtomicU64, Ordering};

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
    fenced: AtomicU64,
    /// Prometheus series the counts also go to ([`crate::Worker::metrics`]).
    #[cfg(feature = "metrics")]
    sink: std::sync::OnceLock<crate::metrics::QueueMetrics>,
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
    /// Leases this worker could not keep: renewal calls that failed (Redis unreachable), plus each delivery whose
    /// lease was found taken by another worker (also in `lease_lost`) or that it gave up because its lease or its
    /// heartbeats could not be renewed in time.
    pub lease_failures: u64,
    /// Stalled deliveries this worker took over.
    pub reclaimed: u64,
    /// Deliveries handed back at shutdown (or never seen, after a connection error).
    pub released: u64,
    /// Running jobs ended as cancelled by a signal.
    pub cancelled: u64,
    /// Deliveries this worker gave up without ending them (it lost contact with Redis, or its lease, long enough
    /// that another worker may take them over): their handlers were stopped, and nothing was written for them.
    pub fenced: u64,
}

macro_rules! counters {
    ($($add:ident => $field:ident $(/ $series:ident)?),*) => {
        impl WorkerStats {
            $(pub(crate) fn $add(&self) {
                self.$field.fetch_add(1, Ordering::Relaxed);
                $(
                    #[cfg(feature = "metrics")]
                    if let Some(m) = self.sink.get() {
                        m.$series.inc();
                    }
                )?
            })*
            /// Current values.
            pub fn snapshot(&self) -> WorkerReport {
                WorkerReport { $($field: self.$field.load(Ordering::Relaxed)),* }
            }
        }
    };
}
counters!(add_completed => completed / completed, add_retried => retried / retried, add_dead => dead / dead,
    add_malformed => malformed, add_stale => stale / stale, add_lease_lost => lease_lost,
    add_lease_failure => lease_failures / lease_failures, add_reclaimed => reclaimed,
    add_released => released / handed_back, add_cancelled => cancelled / cancelled, add_fenced => fenced / fenced);

use crate::scripts::Call;

impl WorkerStats {
    /// Runs `call`'s future, timing it into `rill_redis_call_seconds` when metrics are exported.
    pub(crate) async fn timed<T>(&self, call: Call, f: impl std::future::Future<Output = T>) -> T {
        #[cfg(feature = "metrics")]
        {
            let started = std::time::Instant::now();
            let out = f.await;
            if let Some(m) = self.sink.get() {
                m.observe_call(call, started.elapsed());
            }
            out
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = call;
            f.await
        }
    }
}

#[cfg(feature = "metrics")]
impl WorkerStats {
    /// Sends the counts to `series` as well, from now on (once; a second call is ignored).
    pub(crate) fn export_to(&self, series: crate::metrics::QueueMetrics) {
        let _ = self.sink.set(series);
    }

    /// A handler ran for `took`, `waited` after its entry was added.
    pub(crate) fn observe_run(&self, took: std::time::Duration, waited: std::time::Duration) {
        if let Some(m) = self.sink.get() {
            m.observe_run(took, waited);
        }
    }
}
