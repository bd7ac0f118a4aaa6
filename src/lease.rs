//! The lease keeper: renews the leases of every delivery a worker holds, in batches, from its own OS thread,
//! runtime and connection, so handlers that hog the worker's runtime cannot starve it. A delivery whose lease
//! is lost (taken by another worker) or could not be renewed for a whole lease period has its cancellation
//! token fired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::scripts::{self, DeliveryRef};
use crate::worker::Shared;

/// Deliveries renewed per script call.
const EXTEND_BATCH: usize = 500;

/// A delivery the worker is running or completing: what the lease keeper renews.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) token: u64,
    pub(crate) job_id: String,
    /// The job's `stopping()` token: asked to checkpoint and yield (shutdown, pause, quiet).
    pub(crate) stopping: CancellationToken,
    pub(crate) cancel: CancellationToken,
    pub(crate) renewed: Instant,
}

/// Entry id -> held delivery.
pub(crate) type HeldMap = Arc<Mutex<HashMap<String, Held>>>;

/// Starts the lease keeper thread. It stops when `stop` fires.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rill-lease-{}", shared.keys.queue))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "lease keeper: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(run(shared, stop));
        })
}

async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.lease / 3;
    let beat_every = shared.config.health.beat_interval;
    let tick = every.min(beat_every);
    let mut conn = None;
    let mut next_extend = Instant::now() + every;
    let mut beats = crate::registry::Beats::default();
    // Register at once, then beat on time.
    beat(&shared, &mut conn, &mut beats).await;
    let mut next_beat = Instant::now() + beat_every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if Instant::now() >= next_beat {
            beat(&shared, &mut conn, &mut beats).await;
            next_beat = Instant::now() + beat_every;
        }
        if Instant::now() < next_extend {
            continue;
        }
        next_extend = Instant::now() + every;
        let snapshot: Vec<(String, u64)> = {
            let held = shared.held.lock().expect("held lock");
            held.iter().map(|(e, h)| (e.clone(), h.token)).collect()
        };
        if snapshot.is_empty() {
            continue;
        }
        if conn.is_none() {
            match shared.client.blocking_conn(Duration::ZERO).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "lease keeper: cannot connect");
                    shared.stats.add_lease_failure();
                    expire_overdue(&shared);
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connection set above");
        for chunk in snapshot.chunks(EXTEND_BATCH) {
            let refs: Vec<DeliveryRef<'_>> = chunk
                .iter()
                .map(|(e, t)| DeliveryRef {
                    entry_id: e,
                    token: *t,
                })
                .collect();
            match scripts::extend(c, &shared.keys, &shared.consumer, &refs).await {
                Ok(flags) => {
                    let now = Instant::now();
                    let mut held = shared.held.lock().expect("held lock");
                    for ((entry, token), ok) in chunk.iter().zip(flags) {
                        let Some(h) = held.get_mut(entry) else {
                            continue;
                        };
                        if h.token != *token {
                            continue;
                        }
                        if ok {
                            h.renewed = now;
                        } else if let Some(h) = held.remove(entry) {
                            tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease lost: another worker owns this job now");
                            shared.stats.add_lease_lost();
                            h.cancel.cancel();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease keeper: renewal failed");
                    shared.stats.add_lease_failure();
                    conn = None;
                    break;
                }
            }
        }
        expire_overdue(&shared);
    }
}

/// One heartbeat (the first one registers). Failures are logged: a worker that cannot beat is judged crashed by
/// the others, which then adopt its jobs (its own acks are then refused as stale).
async fn beat(
    shared: &Shared,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    beats: &mut crate::registry::Beats,
) {
    if conn.is_none() {
        match shared.client.blocking_conn(Duration::ZERO).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat: cannot connect");
                return;
            }
        }
    }
    let fields = beats.fields(shared);
    let c = conn.as_mut().expect("connection set above");
    let r = scripts::heartbeat(
        c,
        &shared.keys,
        &shared.consumer,
        // The server's clock: every host judges beats by the same clock.
        0,
        crate::registry::HEARTBEATS_MAXLEN,
        crate::registry::RECORD_TTL.as_millis() as u64,
        &fields,
    )
    .await;
    match r {
        Ok(_) => beats.sent(shared),
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat failed");
            *conn = None;
        }
    }
}

/// Fires the cancellation of deliveries not renewed for a whole lease: others may have taken them.
fn expire_overdue(shared: &Shared) {
    let lease = shared.config.lease;
    let held = shared.held.lock().expect("held lock");
    for (entry, h) in held.iter() {
        if h.renewed.elapsed() > lease && !h.cancel.is_cancelled() {
            tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease not renewed for a whole lease period");
            h.cancel.cancel();
        }
    }
}
