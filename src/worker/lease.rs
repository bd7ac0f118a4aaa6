//! The lease keeper: renews the leases of every delivery a worker holds, in batches, through `extend.lua`, and
//! watches this worker's contact with Redis. A delivery whose lease is lost (taken by another worker) is given up;
//! so is one not renewed for two thirds of a lease, and every delivery once no heartbeat has landed for two thirds
//! of `crash_after`: this worker lets go before others may take over (the timeline is on [`WorkerConfig`]).
//!
//! It runs on its own OS thread, runtime and connection, so handlers that hog the worker's runtime cannot
//! starve it; the heartbeat ([`super::heartbeat`]) rides on the same thread for the same reason.
//!
//! [`WorkerConfig`]: super::WorkerConfig

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::heartbeat;
use super::shared::{Crew, Shared};
use crate::priority::split_address;
use crate::scripts::Call;
use crate::scripts::{self, DeliveryRef};

/// Deliveries renewed per script call.
const EXTEND_BATCH: usize = 500;

/// Starts the keeper thread (lease renewal and heartbeats). It stops when `stop` fires.
pub(super) fn spawn(
    crew: Crew,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rill-lease-{}", crew[0].keys.queue))
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
            rt.block_on(async {
                let keepers = crew.iter().map(|m| {
                    let stop = stop.clone();
                    async move {
                        tokio::join!(
                            renew(m.clone(), stop.clone()),
                            watch_contact(m.clone(), stop)
                        )
                    }
                });
                tokio::join!(
                    futures::future::join_all(keepers),
                    heartbeat::run(crew.clone(), stop.clone())
                )
            });
        })
}

/// Renews every held delivery every third of a lease until `stop` fires.
async fn renew(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.lease / 3;
    let mut conn = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut held = shared.deliveries.snapshot();
        // One call per priority level (a script runs on one level's stream).
        held.sort_by_key(|(e, _)| split_address(e).0);
        if held.is_empty() {
            continue;
        }
        if conn.is_none() {
            match shared.client.blocking_conn(Duration::ZERO).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn_throttled!(error = %e, "lease keeper: cannot connect");
                    shared.stats.add_lease_failure();
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connection set above");
        let chunks = held
            .chunk_by(|(a, _), (b, _)| split_address(a).0 == split_address(b).0)
            .flat_map(|same_level| same_level.chunks(EXTEND_BATCH));
        for chunk in chunks {
            let level = split_address(&chunk[0].0).0;
            let refs: Vec<DeliveryRef<'_>> = chunk
                .iter()
                .map(|(e, t)| DeliveryRef {
                    entry_id: split_address(e).1,
                    token: *t,
                })
                .collect();
            let sent = Instant::now();
            let caller = shared.caller().at(level);
            let extend = scripts::extend(c, &caller, &refs);
            match shared.stats.timed(Call::Extend, extend).await {
                Ok(renewed) => {
                    for entry in shared.deliveries.renewals(chunk, &renewed, sent) {
                        tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease lost: another worker owns this job now");
                        shared.stats.add_lease_lost();
                        shared.stats.add_lease_failure();
                    }
                }
                Err(e) => {
                    warn_throttled!(error = %e, "lease keeper: renewal failed");
                    shared.stats.add_lease_failure();
                    conn = None;
                    break;
                }
            }
        }
    }
}

/// How often contact is checked.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Gives up deliveries at risk of a takeover, until `stop` fires: those whose lease was not renewed for two
/// thirds of a lease, and all of them once no heartbeat has landed for two thirds of `crash_after`.
async fn watch_contact(shared: Arc<Shared>, stop: CancellationToken) {
    let (after_beat, after_renewal) = (
        shared.config.fence_after_beat(),
        shared.config.fence_after_renewal(),
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let silent = shared.control.since_last_beat();
        if silent >= after_beat {
            let n = shared.deliveries.fence_all();
            for _ in 0..n {
                shared.stats.add_lease_failure();
            }
            if n > 0 {
                tracing::warn!(queue = %shared.keys.queue, jobs = n, silent_ms = silent.as_millis() as u64, "no heartbeat landed: giving up the running jobs before others may take them over");
            }
        }
        let overdue = shared.deliveries.fence_overdue(after_renewal);
        for entry in &overdue {
            shared.stats.add_lease_failure();
            tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease not renewed in time: giving the job up before it may be reclaimed");
        }
    }
}
