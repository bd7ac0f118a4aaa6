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
    /// Deliveries now owned by this worker, with their priority levels and tokens (at most the free slots).
    pub(super) taken: Vec<(u8, RawEntry, u64)>,
    /// The free slots ran out before the pass ended: more stalled deliveries may be waiting, and they come
    /// before new work.
    pub(super) more: bool,
}

/// Takes stalled deliveries for up to `free` slots, level by level. `cursors` carries each priority level's
/// XAUTOCLAIM position between calls (`0-0` = start a new pass). The caller holds the deliveries' claim lock until
/// it has tracked what was taken.
pub(super) async fn reclaim(shared: &Shared, free: usize, cursors: &mut [String]) -> Recovered {
    let mut out = Recovered::default();
    if let Err(e) = adopt_crashed(shared, free, &mut out.taken).await {
        warn_throttled!(error = %e, "adopting crashed workers' jobs failed");
    }
    let levels = usize::from(shared.control.levels()).min(cursors.len());
    for (level, cursor) in cursors.iter_mut().enumerate().take(levels) {
        reclaim_level(shared, level as u8, free, cursor, &mut out).await;
        if out.more {
            break;
        }
    }
    out
}

/// [`reclaim`] on one priority level's stream.
async fn reclaim_level(
    shared: &Shared,
    level: u8,
    free: usize,
    cursor: &mut String,
    out: &mut Recovered,
) {
    for _ in 0..PAGES_PER_CALL {
        let room = free.saturating_sub(out.taken.len());
        if room == 0 {
            out.more = true;
            return;
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
                    scripts::reclaim(&mut c, &shared.caller().at(level), call),
                )
                .await
        }
        .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn_throttled!(error = %e, "reclaim failed");
                return;
            }
        };
        if !page.taken.is_empty() || page.dead_lettered > 0 {
            tracing::info!(queue = %shared.keys.queue, level, taken = page.taken.len(), dead = page.dead_lettered, "recovered stalled jobs");
        }
        for (raw, token) in page.taken.into_iter().take(room) {
            shared.stats.add_reclaimed();
            out.taken.push((level, raw, token));
        }
        *cursor = page.cursor;
        if cursor == "0-0" {
            // The pass has looked at every pending entry: what is still stalled is for the next pass.
            return;
        }
    }
}

/// Takes over, for up to `free - taken.len()` slots, the deliveries of workers the last heartbeat found crashed
/// (no beat for `crash_after`; at most 8 per beat), without waiting for their leases to expire.
async fn adopt_crashed(
    shared: &Shared,
    free: usize,
    taken: &mut Vec<(u8, RawEntry, u64)>,
) -> Result<()> {
    // The heartbeat found them (on the server's clock, in the beat's own round trip).
    let crashed = shared.control.take_crashed();
    if crashed.is_empty() {
        return Ok(());
    }
    let crash_after = shared.config.health.crash_after.as_millis() as u64;
    let mut c = shared.client.conn().await?;
    let levels = shared.control.levels();
    for worker in crashed.iter().filter(|w| **w != shared.consumer) {
        for level in 0..levels {
            let room = free.saturating_sub(taken.len());
            if room == 0 {
                return Ok(());
            }
            let call = Adopt {
                crashed: worker,
                now_ms: 0,
                crash_after_ms: crash_after,
                count: room,
                levels,
            };
            let adopted = shared
                .stats
                .timed(
                    Call::Adopt,
                    scripts::adopt(&mut c, &shared.caller().at(level), call),
                )
                .await?;
            if !adopted.taken.is_empty() || adopted.removed {
                tracing::info!(queue = %shared.keys.queue, crashed = %worker, level, taken = adopted.taken.len(), removed = adopted.removed, "adopted a crashed worker's jobs");
            }
            for (raw, token) in adopted.taken.into_iter().take(room) {
                shared.stats.add_reclaimed();
                taken.push((level, raw, token));
            }
            if !adopted.crashed {
                break;
            }
        }
    }
    Ok(())
}
