//! rill: a job queue that lives natively on Redis Streams.
//!
//! Producers append jobs to a stream; workers join its consumer group and run them at least once. Every state
//! change is one Lua script (in `lua/`) that checks the caller still owns the delivery, so a stale worker can
//! never complete, fail or extend a job someone else now holds. SPEC.md is the wire contract for other
//! languages.
//!
//! The layout, by role:
//! - Foundation (no worker knowledge): [`keys`] (the one place that builds Redis keys, hash tag `{queue}`),
//!   [`wire`] (entry fields, CBOR, strict parsing of foreign entries), [`error`] ([`Error`]), `identity` (clock,
//!   host name, ids), [`client`] ([`Client`]: one shared command connection, a dedicated one per blocking loop).
//! - [`scripts`]: one file per Lua script of `lua/` (`lua/X.lua` is called from `scripts/X.rs`), with typed
//!   arguments and outcomes.
//! - [`queue`]: [`Queue`], by subject: `enqueue`, `jobs` (state, record, result), `stats` (counts, recent),
//!   `dead` (dead letters), `events`.
//! - [`worker`]: [`Worker`], one file per role: `fetch`, `runner`, `settle`, `acker`, `lease`, `heartbeat`,
//!   `listener`, `reclaim`, `promote`, over shared state owned by `deliveries`, `control` and `slots`.
//! - [`job`]: what a handler gets ([`Job`]) and returns ([`JobResult`], [`JobError`]).
//! - [`checkpoint`]: when to save a long job's state ([`CheckpointPolicy`]), limits, resuming, the operator's
//!   view of checkpoints.
//! - [`signals`]: cancel, pause/resume, quiet/stop, custom signals, their history and a collector (the
//!   worker's side is `worker::listener`).
//! - [`registry`]: the worker registry and the health rule (the worker's side is `worker::heartbeat`).
//! - [`bus`]: the message bus: typed topics, fan-out to consumer groups, replay, retention.
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

#[macro_use]
mod throttle;

pub mod bus;
pub mod checkpoint;
pub mod client;
pub mod error;
mod identity;
pub mod job;
pub mod keys;
pub mod queue;
pub mod registry;
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
pub use client::{Client, ClientConfig, ServerVersion};
pub use error::{Error, Result};
pub use job::{Delivery, Job, JobError, JobResult};
pub use queue::{
    Counts, DeadLetter, Enqueue, Event, EventFeed, JobInfo, JobState, Queue, Recent, Requeue,
};
pub use registry::{Health, HealthRule, WorkerInfo};
pub use signals::{
    CancelOutcome, PauseOutcome, Signal, SignalCollector, SignalFilter, SignalKind, Target,
};
pub use worker::{Worker, WorkerConfig, WorkerReport, WorkerStats};

/// README.md's Rust blocks, compiled as doctests so the README stays true to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
