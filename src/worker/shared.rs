//! What a running worker's parts share: fixed settings read by all, and two owners of the state that changes
//! ([`Deliveries`] and [`Control`]), each behind its own methods. It imports nothing from its sibling roles.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::config::WorkerConfig;
use super::control::Control;
use super::deliveries::Deliveries;
use super::slots::Slots;
use super::stats::WorkerStats;
use crate::client::Client;
use crate::keys::QueueKeys;
use crate::scripts::Caller;

/// State shared by a running worker's parts.
pub(super) struct Shared {
    /// The process's client (shared command connection; blocking loops open their own).
    pub(super) client: Client,
    pub(super) keys: QueueKeys,
    /// This worker's consumer name in the group.
    pub(super) consumer: String,
    pub(super) config: WorkerConfig,
    /// Counters: each role adds its own; the heartbeat and the caller of `run` read them.
    pub(super) stats: Arc<WorkerStats>,
    /// Handler slots (`concurrency`): a delivery takes its place in line when dispatched, its handler runs once
    /// it has a slot, and frees it when it returns.
    pub(super) slots: Arc<Slots>,
    /// Room for deliveries (`concurrency` plus the prefetch in effect, which the fetch loop adjusts): the fetch
    /// loop takes one per delivery it reads, the job task frees it when the delivery ends.
    pub(super) room: Arc<Semaphore>,
    /// Held deliveries: tracked by the runner, renewed by the lease keeper, ended by the settler and the acker,
    /// reached by signals through the listener.
    pub(super) deliveries: Deliveries,
    /// Gate, stop request, draining flag, running count: changed by the listener and shutdown, read by the fetch
    /// loop and the heartbeat.
    pub(super) control: Control,
    /// When this worker started, ms since the Unix epoch.
    pub(super) started_ms: u64,
    /// On a queue with more partitions than a worker blocks reads on at once: the turns at a blocking read.
    pub(super) reads: Option<Arc<ReadPool>>,
    /// Whether this member's fetch loop sets the prefetch room (one per worker: the room is shared).
    pub(super) prefetch_adjuster: bool,
}

/// A worker's members: one per partition of a partitioned queue (SPEC §2a), partition 0's first; a queue that is
/// not partitioned has one. They share handler slots, room, counters and the consumer name; the first keeps the
/// registry record and follows the signals.
pub(super) type Crew = Arc<[Arc<Shared>]>;

/// Turns at a blocking read, for a worker whose queue has more partitions than it keeps blocking connections:
/// each read holds a turn (and its connection) for a block shortened so every partition is read about once per
/// configured block.
pub(super) struct ReadPool {
    turns: Arc<Semaphore>,
    idle: std::sync::Mutex<Vec<crate::client::BlockingConn>>,
    /// Blocking connections per partition (`turns / partitions`, below 1).
    share: f64,
}

impl ReadPool {
    pub(super) fn new(turns: usize, partitions: usize) -> Self {
        ReadPool {
            turns: Arc::new(Semaphore::new(turns)),
            idle: Default::default(),
            share: turns as f64 / partitions.max(1) as f64,
        }
    }

    /// Waits for a turn; it comes with an idle connection when there is one.
    pub(super) async fn turn(
        &self,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        Option<crate::client::BlockingConn>,
    )> {
        let permit = self.turns.clone().acquire_owned().await.ok()?;
        let conn = self.idle.lock().expect("pool lock").pop();
        Some((permit, conn))
    }

    /// Gives a healthy connection back at the end of a turn.
    pub(super) fn put_back(&self, conn: crate::client::BlockingConn) {
        self.idle.lock().expect("pool lock").push(conn);
    }

    /// The block of one read with a turn: `block` scaled by this worker's share of blocking connections (at
    /// least 10 ms).
    pub(super) fn block(&self, block: std::time::Duration) -> std::time::Duration {
        block
            .mul_f64(self.share)
            .max(std::time::Duration::from_millis(10))
    }
}

impl Shared {
    /// This worker's clock, ms since the Unix epoch (shifted by [`WorkerConfig::clock_skew_ms`] in tests).
    pub(super) fn now_ms(&self) -> u64 {
        crate::identity::now_ms().saturating_add_signed(self.config.clock_skew_ms)
    }

    /// How the worker's script calls identify it: keys, consumer, limits.
    pub(super) fn caller(&self) -> Caller<'_> {
        Caller {
            keys: &self.keys,
            consumer: &self.consumer,
            events_maxlen: self.config.events_maxlen.max(1),
            max_attempts: self.config.max_attempts,
            level: 0,
        }
    }
}
