//! Prometheus metrics (feature `metrics`): what workers do, per queue and outcome, and how deep queues are.
//!
//! One [`Metrics`] is registered once in a [`prometheus_client`] registry; workers given it with
//! [`Worker::metrics`](crate::Worker::metrics) count their jobs into it, and [`Metrics::observe_queues`] reads
//! queue depths (a few Redis reads per queue, nothing written) when the registry is about to be scraped, so a
//! process without a worker can export them too. Labels are bounded: `queue` and `outcome` (or `state`), never
//! a job id.
//!
//! ```no_run
//! # async fn f() -> rill::Result<()> {
//! let client = rill::Client::new("redis://127.0.0.1:6379")?;
//! let metrics = rill::metrics::Metrics::new();
//! let mut registry = prometheus_client::registry::Registry::default();
//! metrics.register(&mut registry);
//! let worker = rill::Worker::new(client.clone(), "emails")?.metrics(&metrics);
//! // On each scrape: refresh the depths, then encode.
//! metrics.observe_queues(&[client.queue::<serde_json::Value>("emails")?]).await?;
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
//! # let _ = worker; Ok(()) }
//! ```

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::Result;
use crate::queue::Queue;
use crate::scripts::Call;

/// How a delivery ended, as `rill_jobs_total` counts it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are Prometheus's snake_case
pub(crate) enum Outcome {
    completed,
    retried,
    dead,
    cancelled,
    /// A completion or failure refused because another delivery owned the job.
    stale,
    /// Handed back unstarted or unfinished (shutdown, pause): no attempt counted.
    handed_back,
    /// Given up without a write (the worker lost contact or its lease).
    fenced,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    queue: String,
    call: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    queue: String,
    state: &'static str,
}

/// Seconds, from 1 ms to about 8.7 minutes.
fn seconds() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 20,
    ))
}

/// Seconds, from 100 µs to about 3.3 s: a Redis call.
fn call_seconds() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

/// The metric families rill records into. Cheap to clone (clones share the counters).
#[derive(Debug, Clone)]
pub struct Metrics {
    jobs: Family<JobLabels, Counter>,
    duration: Family<QueueLabel, Histogram, fn() -> Histogram>,
    wait: Family<QueueLabel, Histogram, fn() -> Histogram>,
    lease_failures: Family<QueueLabel, Counter>,
    redis_calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    depth: Family<StateLabels, Gauge>,
    oldest: Family<QueueLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty families, to be [registered](Metrics::register) and given to workers.
    pub fn new() -> Self {
        Metrics {
            jobs: Family::default(),
            duration: Family::new_with_constructor(seconds),
            wait: Family::new_with_constructor(seconds),
            lease_failures: Family::default(),
            redis_calls: Family::new_with_constructor(call_seconds),
            depth: Family::default(),
            oldest: Family::default(),
        }
    }

    /// Adds every family to `registry`, named `rill_*`:
    /// - `rill_jobs_total{queue, outcome}`: deliveries ended by this process's workers; outcome `completed`,
    ///   `retried`, `dead`, `cancelled`, `stale` (refused: another delivery owned the job), `handed_back`,
    ///   `fenced` (given up without a write).
    /// - `rill_job_duration_seconds{queue}`: how long handlers ran.
    /// - `rill_job_wait_seconds{queue}`: from the job's entry on the ready stream to its handler's start.
    /// - `rill_lease_renewal_failures_total{queue}`: renewal calls that failed (Redis unreachable).
    /// - `rill_redis_call_seconds{queue, call}`: how long the worker's script calls took, round trip included;
    ///   call `ack`, `fail`, `extend`, `reclaim`, `adopt`, `heartbeat`, `promote`, `release`, `park`.
    /// - `rill_queue_jobs{queue, state}`: jobs waiting, active, delayed, parked and dead, as of the last
    ///   [`Metrics::observe_queues`].
    /// - `rill_queue_oldest_waiting_seconds{queue}`: age of the oldest waiting job (0 when none waits).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rill");
        r.register("jobs", "Deliveries ended, by outcome", self.jobs.clone());
        r.register_with_unit(
            "job_duration",
            "How long handlers ran",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "job_wait",
            "From a job's entry on the ready stream to its handler's start",
            Unit::Seconds,
            self.wait.clone(),
        );
        r.register(
            "lease_renewal_failures",
            "Lease renewal calls that failed",
            self.lease_failures.clone(),
        );
        r.register_with_unit(
            "redis_call",
            "How long the worker's Redis script calls took, round trip included",
            Unit::Seconds,
            self.redis_calls.clone(),
        );
        r.register(
            "queue_jobs",
            "Jobs in the queue, by state",
            self.depth.clone(),
        );
        r.register_with_unit(
            "queue_oldest_waiting",
            "Age of the oldest waiting job",
            Unit::Seconds,
            self.oldest.clone(),
        );
    }

    /// Reads each queue's counts (a few bounded reads per queue) into `rill_queue_jobs` and
    /// `rill_queue_oldest_waiting_seconds`. Call it before each scrape.
    ///
    /// # Errors
    /// Redis errors (gauges of queues read before the error keep their new values).
    pub async fn observe_queues<T: Serialize + DeserializeOwned>(
        &self,
        queues: &[Queue<T>],
    ) -> Result<()> {
        for q in queues {
            let c = q.counts().await?;
            let queue = q.name().to_owned();
            for (state, n) in [
                ("waiting", c.waiting),
                ("active", c.active),
                ("delayed", c.delayed),
                ("parked", c.parked),
                ("dead", c.dead),
            ] {
                let labels = StateLabels {
                    queue: queue.clone(),
                    state,
                };
                self.depth.get_or_create(&labels).set(n as i64);
            }
            let age = c.oldest_waiting_ms.map_or(0.0, |ms| {
                crate::identity::now_ms().saturating_sub(ms) as f64 / 1e3
            });
            self.oldest.get_or_create(&QueueLabel { queue }).set(age);
        }
        Ok(())
    }

    /// The series of one queue, resolved once so a worker counts without a label lookup per job.
    pub(crate) fn for_queue(&self, queue: &str) -> QueueMetrics {
        let outcome = |outcome| {
            self.jobs
                .get_or_create(&JobLabels {
                    queue: queue.to_owned(),
                    outcome,
                })
                .clone()
        };
        let label = QueueLabel {
            queue: queue.to_owned(),
        };
        QueueMetrics {
            completed: outcome(Outcome::completed),
            retried: outcome(Outcome::retried),
            dead: outcome(Outcome::dead),
            cancelled: outcome(Outcome::cancelled),
            stale: outcome(Outcome::stale),
            handed_back: outcome(Outcome::handed_back),
            fenced: outcome(Outcome::fenced),
            calls: Call::ALL.map(|call| {
                self.redis_calls
                    .get_or_create(&CallLabels {
                        queue: queue.to_owned(),
                        call: call.name(),
                    })
                    .clone()
            }),
            duration: self.duration.get_or_create(&label).clone(),
            wait: self.wait.get_or_create(&label).clone(),
            lease_failures: self.lease_failures.get_or_create(&label).clone(),
        }
    }
}

/// One queue's series, as a worker records into them.
#[derive(Debug, Clone)]
pub(crate) struct QueueMetrics {
    pub(crate) completed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) stale: Counter,
    pub(crate) handed_back: Counter,
    pub(crate) fenced: Counter,
    pub(crate) lease_failures: Counter,
    /// One per [`Call`], in the order of [`Call::ALL`].
    calls: [Histogram; Call::ALL.len()],
    duration: Histogram,
    wait: Histogram,
}

impl QueueMetrics {
    /// A Redis call of the worker took `took`.
    pub(crate) fn observe_call(&self, call: Call, took: Duration) {
        let i = Call::ALL.iter().position(|c| *c == call).unwrap_or(0);
        self.calls[i].observe(took.as_secs_f64());
    }

    /// A handler ran for `took`, starting `waited` after its entry was added.
    pub(crate) fn observe_run(&self, took: Duration, waited: Duration) {
        self.duration.observe(took.as_secs_f64());
        self.wait.observe(waited.as_secs_f64());
    }
}
