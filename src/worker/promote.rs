//! The promoter: moves due delayed jobs and retries from the delayed set to the ready stream through
//! `promote.lua`, in bounded batches, sleeping until the next due time (at most `promote_interval`, since
//! another process may add an earlier job; a retry this worker schedules wakes it at once).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::identity::now_ms;
use crate::scripts;
use crate::scripts::Call;

/// Jobs moved per call.
const BATCH: usize = 500;

/// Promotes due jobs until `stop` fires.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let now = now_ms();
        let r = async {
            let mut c = shared.client.conn().await?;
            let maxlen = shared.caller().events_maxlen;
            shared
                .stats
                .timed(
                    Call::Promote,
                    scripts::promote(&mut c, &shared.keys, now, BATCH, maxlen),
                )
                .await
        }
        .await;
        let wait = match r {
            Ok((moved, _)) if moved as usize >= BATCH => Duration::ZERO,
            Ok((_, Some(next))) => {
                Duration::from_millis(next.saturating_sub(now)).min(shared.config.promote_interval)
            }
            Ok((_, None)) => shared.config.promote_interval,
            Err(e) => {
                warn_throttled!(error = %e, "promote failed");
                shared
                    .config
                    .promote_interval
                    .max(Duration::from_millis(500))
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A retry of ours may be due before the wake-up planned.
            _ = shared.control.delayed_added_wait() => {}
        }
    }
}
