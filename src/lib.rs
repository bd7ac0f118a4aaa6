//! rill: a job queue that lives natively on Redis Streams.
//!
//! Producers append jobs to a stream; workers join its consumer group and run them at least once. Every state
//! change is one Lua script (in `lua/`) that checks the caller still owns the delivery, so a stale worker can
//! never complete, fail or extend a job someone else now holds. SPEC.md is the wire contract for other
//! languages.
//!
//! The layout, by role:
//! - [`client`]: the shared [`Client`] (one command connection per process, lazily opened).
//! - [`keys`]: the one place that builds Redis keys (hash tag `{queue}`).
//! - [`wire`]: stream entry fields, CBOR payloads, strict parsing of foreign entries.
//! - [`scripts`]: the Lua scripts and typed calls to them.
//! - [`producer`]: [`Queue`] and [`Enqueue`] options.
//! - [`worker`]: [`Worker`]: fetch loop, job tasks, batched acks, graceful shutdown.
//! - [`job`]: what a handler gets ([`Job`]) and returns ([`JobResult`], [`JobError`]).
//! - `lease`: the lease keeper thread that renews leases in batches.
//! - `reclaim`: stalled-job recovery; `schedule`: delayed-job promotion.
//! - [`checkpoint`]: when to save a long job's state ([`CheckpointPolicy`]); the writes are [`Job::checkpoint`]
//!   and resuming is [`Job::resume`].
//! - [`registry`]: worker registry, heartbeats, the health rule; crashed workers' jobs adopted at once.
//! - [`signals`]: cancel, pause/resume, quiet/stop, custom signals, their history and a collector.
//! - [`inspect`]: job state, counts, dead letters, events, checkpoint history.
//! - [`bus`]: the message bus: typed topics, fan-out to consumer groups, replay, retention.
//! - [`error`]: the library's [`Error`].
//!
//! The `rill` command (`src/bin/rill/`, feature `cli`, on by default) is built on this API alone: enqueue, a
//! worker that runs any command per job, stats, a live view, jobs, dead letters, workers, signals, events,
//! bench and demo.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! # async fn f() -> rill::Result<()> {
//! let client = rill::Client::new("redis://127.0.0.1:6379")?;
//! let queue = client.queue::<SendEmail>("emails")?;
//! queue.enqueue(&SendEmail { to: "a@example.com".into() }).await?;
//! rill::Worker::new(client, "emails")?
//!     .concurrency(64)
//!     .run(
//!         |job: rill::Job<SendEmail>| async move {
//!             println!("sending to {}", job.data().to);
//!             rill::JobResult::Ok(())
//!         },
//!         async { tokio::signal::ctrl_c().await.ok(); },
//!     )
//!     .await?;
//! # Ok(()) }
//! ```

pub mod bus;
pub mod checkpoint;
pub mod client;
pub mod error;
pub mod inspect;
pub mod job;
pub mod keys;
mod lease;
pub mod producer;
mod reclaim;
pub mod registry;
mod schedule;
pub mod scripts;
pub mod signals;
pub mod wire;
pub mod worker;

pub use checkpoint::CheckpointPolicy;
pub use client::{Client, ClientConfig};
pub use error::{Error, Result};
pub use inspect::{
    CheckpointInfo, Counts, DeadLetter, Event, EventFeed, JobInfo, JobState, Recent, Requeue,
};
pub use job::{CheckpointSettings, Delivery, Job, JobError, JobResult, PreviousEnd, Resume};
pub use producer::{Enqueue, Queue};
pub use registry::{Health, HealthRule, WorkerInfo};
pub use signals::{
    CancelOutcome, PauseOutcome, Signal, SignalCollector, SignalFilter, SignalKind, Target,
};
pub use worker::{Worker, WorkerConfig, WorkerReport, WorkerStats};
