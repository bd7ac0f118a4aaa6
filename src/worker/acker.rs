//! The acker: completes finished jobs in batches through `ack.lua`. Whatever has queued up while the previous
//! call ran goes in the next, so under load one call completes many jobs; idle, a completion goes at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::control::Impairment;
use super::retries::Retries;
use super::shared::Shared;
use crate::identity::now_ms;
use crate::priority::split_address;
use crate::scripts::Call;
use crate::scripts::{self, Ack, AckItem, DeliveryRef};

/// Longest wait for more completions while under load (see [`run`]).
const COALESCE: Duration = Duration::from_millis(1);

/// A completion on its way to `ack.lua`.
pub(super) struct Completion {
    pub(super) entry_id: Arc<str>,
    pub(super) token: u64,
    pub(super) job_id: Arc<str>,
    pub(super) attempt: u32,
    /// CBOR result; empty = none.
    pub(super) result: Vec<u8>,
    /// Whether the delivery wrote the job record or checkpoints.
    pub(super) touched: bool,
}

/// Completes what arrives on `rx` until `stop` fires and everything sent before has been completed.
pub(super) async fn run(
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
        let flags = complete(&shared, &batch).await;
        shared
            .deliveries
            .forget_many(batch.iter().map(|c| (&*c.entry_id, c.token)));
        for (i, c) in batch.drain(..).enumerate() {
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

/// Completes `batch` through `ack.lua` (a call per priority level it spans), retried as [`Retries`] says. `None`:
/// it gave up (at shutdown).
async fn complete(shared: &Shared, batch: &[Completion]) -> Option<Vec<bool>> {
    let first = split_address(&batch.first()?.entry_id).0;
    if batch.iter().all(|c| split_address(&c.entry_id).0 == first) {
        return complete_level(shared, first, batch.iter()).await;
    }
    let mut flags = vec![false; batch.len()];
    let mut levels: Vec<u8> = batch.iter().map(|c| split_address(&c.entry_id).0).collect();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        let at: Vec<usize> = (0..batch.len())
            .filter(|&i| split_address(&batch[i].entry_id).0 == level)
            .collect();
        let done = complete_level(shared, level, at.iter().map(|&i| &batch[i])).await?;
        for (i, ok) in at.into_iter().zip(done) {
            flags[i] = ok;
        }
    }
    Some(flags)
}

/// Completes deliveries of one priority level in one `ack.lua` call.
async fn complete_level<'a>(
    shared: &Shared,
    level: u8,
    batch: impl Iterator<Item = &'a Completion>,
) -> Option<Vec<bool>> {
    let items: Vec<AckItem<'_>> = batch
        .map(|c| AckItem {
            delivery: DeliveryRef {
                entry_id: split_address(&c.entry_id).1,
                token: c.token,
            },
            job_id: &c.job_id,
            attempt: c.attempt,
            result: &c.result,
            touched: c.touched,
        })
        .collect();
    let retention = scripts::Retention {
        ms: shared.config.retention.as_millis() as u64,
        keep_all: shared.config.keep_completed,
    };
    let mut retries = Retries::new(shared, Impairment::Acks, "ack.lua");
    loop {
        let r = async {
            let mut conn = shared.client.conn().await?;
            let call = Ack {
                now_ms: now_ms(),
                retention,
                completed_event: shared.config.completed_events,
                items: &items,
                xackdel: conn.server().has_xackdel(),
            };
            shared
                .stats
                .timed(
                    Call::Ack,
                    scripts::ack(&mut conn, &shared.caller().at(level), call),
                )
                .await
        }
        .await;
        match r {
            Ok(flags) => {
                retries.landed();
                return Some(flags);
            }
            Err(e) if retries.again(&e).await => {}
            Err(e) => {
                tracing::error!(error = %e, jobs = items.len(), "shutting down with jobs not completed; they will be reclaimed and run again");
                return None;
            }
        }
    }
}
