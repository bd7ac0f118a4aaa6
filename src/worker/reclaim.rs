//! Stalled-job recovery. The fetch loop calls [`reclaim`] once per `reclaim_interval`, before reading new
//! entries, with the number of slots it has free: the deliveries of workers the registry judges crashed are
//! adopted at once (`adopt.lua`), then deliveries idle past their lease are taken (`reclaim.lua`), following the
//! XAUTOCLAIM cursor across calls so a long pending list is covered in bounded pages. Jobs out of attempts are
//! dead-lettered by the scripts. What is taken goes back to the fetch loop, which starts it.

use super::shared::Shared;
use crate::error::Result;
use crate::identity::now_ms;
use crate::scripts::Call;
use crate::scripts::{self, Adopt, Reclaim};
use crate::wire::RawEntry;

/// Pages read per call at most, so one pass over a huge pending list is spread over time.
const PAGES_PER_CALL: usize = 8;

/// Most entries taken per page.
const PAGE: usize = 100;

/// What one [`reclaim`] call took.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// Deliveries now owned by this worker, with their tokens (at most the free slots).
    pub(super) taken: Vec<(RawEntry, u64)>,
    /// The free slots ran out before the pass ended: more stalled deliveries may be waiting, and they come
    /// before new work.
    pub(super) more: bool,
}

/// Takes stalled deliveries for up to `free` slots. `cursor` carries the XAUTOCLAIM position between calls
/// (`0-0` = start a new pass). The caller holds the deliveries' claim lock until it has tracked what was taken.
pub(super) async fn reclaim(shared: &Shared, free: usize, cursor: &mut String) -> Recovered {
    let mut out = Recovered::default();
    if let Err(e) = adopt_crashed(shared, free, &mut out.taken).await {
        warn_throttled!(error = %e, "adopting crashed workers' jobs failed");
    }
    for _ in 0..PAGES_PER_CALL {
        let room = free - out.taken.len();
        if room == 0 {
            out.more = true;
            return out;
        }
        let page = async {
            let mut c = shared.client.conn().await?;
            let call = Reclaim {
                min_idle_ms: shared.config.lease.as_millis() as u64,
                cursor,
                count: room.min(PAGE),
                now_ms: now_ms(),
            };
            shared
                .stats
                .timed(
                    Call::Reclaim,
                    scripts::reclaim(&mut c, &shared.caller(), call),
                )
                .await
        }
        .await;
        let mut page = match page {
            Ok(p) => p,
            Err(e) => {
                warn_throttled!(error = %e, "reclaim failed");
                return out;
            }
        };
        if !page.taken.is_empty() || page.dead_lettered > 0 {
            tracing::info!(queue = %shared.keys.queue, taken = page.taken.len(), dead = page.dead_lettered, "recovered stalled jobs");
        }
        page.taken.truncate(room);
        for _ in &page.taken {
            shared.stats.add_reclaimed();
        }
        out.taken.append(&mut page.taken);
        *cursor = page.cursor;
        if cursor == "0-0" {
            // The pass has looked at every pending entry: what is still stalled is for the next pass.
            return out;
        }
    }
    out
}

/// Takes over, for up to `free - taken.len()` slots, the deliveries of workers the last heartbeat found crashed
/// (no beat for `crash_after`; at most 8 per beat), without waiting for their leases to expire.
async fn adopt_crashed(
    shared: &Shared,
    free: usize,
    taken: &mut Vec<(RawEntry, u64)>,
) -> Result<()> {
    // The heartbeat found them (on the server's clock, in the beat's own round trip).
    let crashed = shared.control.take_crashed();
    if crashed.is_empty() {
        return Ok(());
    }
    let crash_after = shared.config.health.crash_after.as_millis() as u64;
    let mut c = shared.client.conn().await?;
    for worker in crashed.iter().filter(|w| **w != shared.consumer) {
        let room = free - taken.len();
        if room == 0 {
            break;
        }
        let call = Adopt {
            crashed: worker,
            now_ms: 0,
            crash_after_ms: crash_after,
            count: room,
        };
        let mut adopted = shared
            .stats
            .timed(Call::Adopt, scripts::adopt(&mut c, &shared.caller(), call))
            .await?;
        if !adopted.taken.is_empty() || adopted.removed {
            tracing::info!(queue = %shared.keys.queue, crashed = %worker, taken = adopted.taken.len(), removed = adopted.removed, "adopted a crashed worker's jobs");
        }
        adopted.taken.truncate(room);
        for _ in &adopted.taken {
            shared.stats.add_reclaimed();
        }
        taken.append(&mut adopted.taken);
    }
    Ok(())
}
