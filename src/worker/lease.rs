//! The lease keeper: renews the leases of every delivery a worker holds, in batches, through `extend.lua`. A
//! delivery whose lease is lost (taken by another worker) or could not be renewed for a whole lease period has
//! its cancellation token fired.
//!
//! It runs on its own OS thread, runtime and connection, so handlers that hog the worker's runtime cannot
//! starve it; the heartbeat ([`super::heartbeat`]) rides on the same thread for the same reason.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::heartbeat;
use super::shared::Shared;
use crate::scripts::{self, DeliveryRef};

/// Deliveries renewed per script call.
const EXTEND_BATCH: usize = 500;

/// Starts the keeper thread (lease renewal and heartbeats). It stops when `stop` fires.
pub(super) fn spawn(
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
            rt.block_on(async {
                tokio::join!(
                    renew(shared.clone(), stop.clone()),
                    heartbeat::run(shared, stop)
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
        let held = shared.deliveries.snapshot();
        if held.is_empty() {
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
        for chunk in held.chunks(EXTEND_BATCH) {
            let refs: Vec<DeliveryRef<'_>> = chunk
                .iter()
                .map(|(e, t)| DeliveryRef {
                    entry_id: e,
                    token: *t,
                })
                .collect();
            match scripts::extend(c, &shared.caller(), &refs).await {
                Ok(renewed) => {
                    for entry in shared.deliveries.renewals(chunk, &renewed) {
                        tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease lost: another worker owns this job now");
                        shared.stats.add_lease_lost();
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

/// Fires the cancellation of deliveries not renewed for a whole lease: others may have taken them.
fn expire_overdue(shared: &Shared) {
    for entry in shared.deliveries.expire_overdue(shared.config.lease) {
        tracing::warn!(queue = %shared.keys.queue, entry = %entry, "lease not renewed for a whole lease period");
    }
}
