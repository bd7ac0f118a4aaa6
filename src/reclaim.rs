//! Stalled-job recovery. The fetch loop of every worker calls [`reclaim`] once per `reclaim_interval`, before
//! reading new entries, with the slots it has free: expired deliveries are taken first, through `reclaim.lua`,
//! following the XAUTOCLAIM cursor across calls so a long pending list is covered in bounded pages. Jobs out
//! of attempts are dead-lettered by the script.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::producer::now_ms;
use crate::scripts;
use crate::worker::Dispatch;

/// Pages read per call at most, so one pass over a huge pending list is spread over time.
const PAGES_PER_CALL: usize = 8;

/// Most entries taken per page.
const PAGE: usize = 100;

/// Takes expired deliveries into free `slots` (each taken delivery consumes one). `cursor` carries the
/// XAUTOCLAIM position between calls (`0-0` = start a new pass). Returns true if it ran out of slots before the
/// pass ended: more stalled deliveries may be waiting, and they come before new work.
pub(crate) async fn reclaim<D: Dispatch>(
    runner: &Arc<D>,
    slots: &mut Vec<OwnedSemaphorePermit>,
    cursor: &mut String,
) -> bool {
    let shared = runner.shared().clone();
    let _guard = shared.claim_lock.lock().await;
    adopt_crashed(runner, &shared, slots).await;
    for _ in 0..PAGES_PER_CALL {
        if slots.is_empty() {
            return true;
        }
        let page = async {
            let mut c = shared.client.conn().await?;
            scripts::reclaim(
                &mut c,
                &shared.keys,
                &shared.consumer,
                shared.config.lease.as_millis() as u64,
                cursor,
                slots.len().min(PAGE),
                now_ms(),
                shared.config.max_attempts,
                shared.config.events_maxlen.max(1),
            )
            .await
        }
        .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reclaim failed");
                return false;
            }
        };
        if !page.taken.is_empty() || page.dead_lettered > 0 {
            tracing::info!(queue = %shared.keys.queue, taken = page.taken.len(), dead = page.dead_lettered, "recovered stalled jobs");
        }
        for (raw, token) in page.taken {
            let Some(slot) = slots.pop() else {
                tracing::error!("reclaim: more entries than requested");
                break;
            };
            shared.stats.add_reclaimed();
            runner.dispatch(raw, token, slot);
        }
        *cursor = page.cursor;
        if cursor == "0-0" {
            return slots.is_empty();
        }
    }
    false
}

/// Takes over, into free `slots`, the deliveries of workers the registry judges crashed (no beat for
/// `crash_after`), without waiting for their leases to expire.
async fn adopt_crashed<D: Dispatch>(
    runner: &Arc<D>,
    shared: &crate::worker::Shared,
    slots: &mut Vec<OwnedSemaphorePermit>,
) {
    let crash_after = shared.config.health.crash_after.as_millis() as u64;
    let r = async {
        let mut c = shared.client.conn().await?;
        // Beats carry the server's clock; judge them by it too.
        let now = crate::registry::server_ms(&mut c).await?;
        let crashed: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&shared.keys.workers)
            .arg("-inf")
            .arg(now.saturating_sub(crash_after + 1))
            .arg("LIMIT")
            .arg(0)
            .arg(8)
            .query_async(&mut c)
            .await
            .map_err(crate::Error::from)?;
        for worker in crashed.iter().filter(|w| **w != shared.consumer) {
            if slots.is_empty() {
                break;
            }
            let adopted = scripts::adopt(
                &mut c,
                &shared.keys,
                &shared.consumer,
                worker,
                0,
                crash_after,
                slots.len(),
                shared.config.max_attempts,
                shared.config.events_maxlen.max(1),
            )
            .await?;
            if !adopted.taken.is_empty() || adopted.removed {
                tracing::info!(queue = %shared.keys.queue, crashed = %worker, taken = adopted.taken.len(), removed = adopted.removed, "adopted a crashed worker's jobs");
            }
            for (raw, token) in adopted.taken {
                let Some(slot) = slots.pop() else { break };
                shared.stats.add_reclaimed();
                runner.dispatch(raw, token, slot);
            }
        }
        Ok::<(), crate::Error>(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "adopting crashed workers' jobs failed");
    }
}
