//! rill: a job queue for Rust services that lives natively on Redis Streams.
//!
//! Producers append jobs to a stream; workers join its consumer group and run them at least once. Every state
//! change is one Lua script that checks the caller still owns the delivery, so a worker whose lease was taken
//! over can never complete, fail or extend a job someone else now holds. A crashed worker's jobs run elsewhere
//! within seconds, long jobs resume from their last checkpoint, and the wire format (`SPEC.md` in the
//! repository) lets any language produce, work and inspect the same queues.
//!
//! The package is `rill-queue` on crates.io; the library is `rill`:
//!
//! ```toml
//! [dependencies]
//! rill = { package = "rill-queue", version = "0.1" }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "signal"] }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! # A producer and a worker
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! #[tokio::main]
//! async fn main() -> rill::Result<()> {
//!     let client = rill::Client::new("redis://127.0.0.1:6379")?;
//!     let queue = client.queue::<SendEmail>("emails")?;
//!     let id = queue.enqueue(&SendEmail { to: "a@example.com".into() }).await?;
//!     println!("enqueued {id}");
//!
//!     rill::Worker::new(client, "emails")?
//!         .concurrency(64)
//!         .run(
//!             |job: rill::Job<SendEmail>| async move {
//!                 println!("sending to {}", job.data().to);
//!                 rill::JobResult::Ok(())    // or Err(..) / `?`: retried with backoff, then dead-lettered
//!             },
//!             async { tokio::signal::ctrl_c().await.ok(); },   // graceful shutdown on Ctrl-C
//!         )
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! # Where to go next
//! - [`Queue`]: enqueue (ids, dedup, delays, timeouts, bulk), wait for a job's outcome, its state and result,
//!   stats, dead letters, events, rate and concurrency limits across all workers (per key too, with fair turns:
//!   [`KeyLimit`]), priority levels ([`Priorities`]).
//! - [`Worker`]: concurrency, leases, retries and backoff, timeouts, prefetch, shutdown; [`Job`] is what a
//!   handler gets (payload, attempt, progress, checkpoints, cancellation) and [`JobError`] how it fails.
//! - [`checkpoint`]: long jobs that resume where they stopped after a crash or a deploy.
//! - [`signals`]: cancel a job, pause or resume a queue, quiet or stop workers, custom signals.
//! - [`registry`]: which workers are alive, what they run, and their health.
//! - [`schedule`]: cron and interval schedules the queue's workers fire, each fire time once.
//! - [`bus`]: typed topics fanned out to consumer groups, with replay.
//! - [`Error`]: every infrastructure error, with [`Error::is_retryable`].
//! - `metrics` (feature `metrics`): Prometheus series of workers and queues.
//! - Feature `otel`: a job carries its producer's trace context, and the worker's job span continues that
//!   trace (OpenTelemetry messaging conventions; README, "Traces").
//! - The `rill` command (package `rill-cli`: `cargo install rill-cli`) does all of this from a shell, and runs
//!   any program as a worker.
//!
//! # Logging
//! rill reports through [`tracing`]: worker start and stop, recovered and adopted jobs, signals at `info`;
//! lost leases, rejected completions and quarantined entries at `warn`; infrastructure failures at `error`
//! (repeated warnings are throttled, with a `suppressed` count). Each handler runs in a `rill.job` span
//! (`queue`, `job`, `attempt`, `entry`), so what it logs names its job. Nothing is printed unless the application
//! installs a subscriber, for example `tracing_subscriber::fmt().with_env_filter(EnvFilter::from_default_env())
//! .init()` and `RUST_LOG=rill=info`. The `rill` command honours `RUST_LOG` (default `warn`).
//!
//! # The layout, for contributors
//! - Foundation (no worker knowledge): [`keys`] (the one place that builds Redis keys, hash tag `{queue}`),
//!   [`wire`] (entry fields, CBOR, strict parsing of foreign entries), [`error`] ([`Error`]), `identity` (clock,
//!   host name, ids), [`client`] ([`Client`]: one shared command connection, a dedicated one per blocking loop; TLS, and Sentinel
//!   URLs whose connections find the current primary), [`priority`] (levels, the order a worker reads them in, a
//!   delivery's address across levels), [`partition`] (partitioned queues: tags spread over the slot space, routing
//!   by dedup key or id).
//! - [`scripts`]: one file per Lua script of `lua/` (`lua/X.lua` is called from `scripts/X.rs`), with typed
//!   arguments and outcomes.
//! - [`queue`]: [`Queue`], by subject: `enqueue`, `jobs` (state, record, result), `list` (jobs by state, paged),
//!   `stats` (counts, recent), `dead` (dead letters), `events`, `wait` (a job's outcome, one shared events read per
//!   process), `admin` (promote, delete, drain, remove).
//! - [`worker`]: [`Worker`], one file per role: `fetch`, `runner`, `settle`, `acker`, `lease`, `heartbeat`,
//!   `listener`, `reclaim`, `promote`, `dedicated` (a thread of its own), over shared state owned by `deliveries`,
//!   `control` and `slots`.
//! - [`job`]: what a handler gets ([`Job`]) and returns ([`JobResult`], [`JobError`]).
//! - [`checkpoint`], [`signals`], [`registry`], [`schedule`] (the worker's sides are `worker::listener`,
//!   `worker::heartbeat` and `worker::promote`), [`bus`].
//! - The `rill` command lives in `cli/` (package `rill-cli`), built on this public API alone.
//!
//! The life of a job, file by file:
//! 1. `queue/enqueue.rs` adds it: a plain `XADD`, or `lua/enqueue.lua` for ids, dedup and delays
//!    (`worker/promote.rs` moves due ones to the ready stream).
//! 2. `worker/fetch.rs` reads it (`XREADGROUP`) into free room; `worker/reclaim.rs` takes stalled ones back.
//! 3. `worker/runner.rs` tracks the delivery in `worker/deliveries.rs` and runs the handler once
//!    `worker/slots.rs` gives it a handler slot.
//! 4. `worker/lease.rs` renews its lease meanwhile; `worker/listener.rs` delivers cancel and pause signals.
//! 5. `worker/settle.rs` decides how it ends: retry, dead letter, cancel, hand back (`lua/fail.lua`, ...).
//! 6. `worker/acker.rs` completes it in a batch through `lua/ack.lua`, fenced by the delivery's token.

#[macro_use]
mod throttle;

pub mod bus;
pub mod checkpoint;
pub mod client;
pub mod error;
mod identity;
pub mod job;
pub mod keys;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "otel")]
mod otel;
pub mod partition;
pub mod priority;
pub mod queue;
pub mod registry;
pub mod schedule;
pub mod scripts;
pub mod signals;
pub mod wire;
pub mod worker;

/// The producer side of [`Queue`], under its earlier path.
pub mod producer {
    pub use crate::queue::{DEFAULT_DEDUP_TTL, Enqueue, Queue};
}

/// The inspection side of [`Queue`], under its earlier path.
pub mod inspect {
    pub use crate::checkpoint::CheckpointInfo;
    pub use crate::queue::{
        Counts, DeadLetter, Event, EventFeed, JobInfo, JobState, Recent, Requeue,
    };
}

pub use checkpoint::{CheckpointInfo, CheckpointPolicy, CheckpointSettings, PreviousEnd, Resume};
pub use client::{Client, ClientConfig, Connection, ServerVersion, Tls};
pub use error::{Error, Result};
pub use job::{Delivery, Job, JobError, JobResult};
pub use priority::Priorities;
pub use queue::{
    Counts, DeadLetter, Deleted, Drained, Enqueue, EnqueueOutcome, Event, EventFeed, JobInfo,
    JobOutcome, JobPage, JobState, JobSummary, KeyLimit, Queue, Recent, Requeue,
};
pub use registry::{Health, HealthRule, RunningJob, WorkerInfo};
pub use schedule::{Missed, Schedule, ScheduleInfo};
pub use signals::{
    CancelOutcome, PauseOutcome, Signal, SignalCollector, SignalFilter, SignalKind, Target,
};
pub use worker::{DEFAULT_PREFETCH, Worker, WorkerConfig, WorkerReport, WorkerStats};

/// README.md's Rust blocks, compiled as doctests so the README stays true to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
