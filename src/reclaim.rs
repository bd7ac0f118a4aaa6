//! Stalled-job recovery. Every worker runs a reclaimer: each interval it takes, through `reclaim.lua`, up to as
//! many expired deliveries as it has free slots, following the XAUTOCLAIM cursor across calls so a long pending
//! list is covered in bounded pages. Jobs out of attempts are dead-lettered by the script.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::producer::now_ms;
use crate::scripts;
use crate::worker::Dispatch;

/// Pages read per interval at most, so one pass over a huge pending list is spread over time.
const PAGES_PER_TICK: usize = 8;

/// Most entries taken per page.
const PAGE: usize = 100;

pub(crate) async fn reclaim_loop<D: Dispatch>(runner: Arc<D>, stop: CancellationToken) {
    let shared = runner.shared().clone();
    let mut cursor = "0-0".to_owned();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.config.reclaim_interval) => {}
        }
        for _ in 0..PAGES_PER_TICK {
            let mut slots = Vec::new();
            while slots.len() < PAGE {
                match shared.slots.clone().try_acquire_owned() {
                    Ok(p) => slots.push(p),
                    Err(_) => break,
                }
            }
            if slots.is_empty() {
                break;
            }
            let _guard = shared.claim_lock.lock().await;
            if stop.is_cancelled() {
                return;
            }
            let page = async {
                let mut c = shared.client.conn().await?;
                scripts::reclaim(
                    &mut c,
                    &shared.keys,
                    &shared.consumer,
                    shared.config.lease.as_millis() as u64,
                    &cursor,
                    slots.len(),
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
                    break;
                }
            };
            if !page.taken.is_empty() || page.dead_lettered > 0 {
                tracing::info!(queue = %shared.keys.queue, taken = page.taken.len(), dead = page.dead_lettered, "recovered stalled jobs");
            }
            for (raw, token) in page.taken {
                let Some(slot) = slots.pop() else { break };
                shared.stats.add_reclaimed();
                runner.dispatch(raw, token, slot);
            }
            cursor = page.cursor;
            if cursor == "0-0" {
                break;
            }
        }
    }
}
