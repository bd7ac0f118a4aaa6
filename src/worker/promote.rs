//! The promoter: moves due delayed jobs and retries from the delayed set to the ready stream through
//! `promote.lua`, in bounded batches, and fires due schedules through `fire.lua` ([`crate::schedule`]). It
//! sleeps until the next due time of either (at most `promote_interval`, since another process may add an
//! earlier job or schedule; a retry this worker schedules wakes it at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::scripts::{self, Call, Fire, Fired};

/// Jobs moved per call.
const BATCH: usize = 500;

/// Due schedules looked at per wake.
const SCHEDULES_PER_WAKE: usize = 16;

/// Promotes due jobs and fires due schedules until `stop` fires.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    // A schedule fire.lua found early by the server's clock (this host's clock runs ahead) is not tried again
    // before this.
    let mut hold_fires_until = Instant::now();
    loop {
        let now = shared.now_ms();
        let r = async {
            let mut c = shared.client.conn().await?;
            let maxlen = shared.caller().events_maxlen;
            // Due by the server's clock: a host whose clock runs ahead must not start delayed jobs early.
            shared
                .stats
                .timed(
                    Call::Promote,
                    scripts::promote(&mut c, &shared.keys, 0, BATCH, maxlen),
                )
                .await
        }
        .await;
        let wait = match r {
            Ok(p) => {
                shared.control.set_limits(p.limits);
                if let Some(problem) = &p.levels_problem {
                    warn_throttled!(problem = %problem, "the queue's priority levels cannot be read; reading level 0 only");
                }
                shared.control.set_priorities(p.priorities.clone());
                let fire_now = p.next_fire.is_some_and(|f| f <= now);
                if fire_now
                    && Instant::now() >= hold_fires_until
                    && let Some(hold) = fire_due(&shared, now).await
                {
                    hold_fires_until = Instant::now() + hold;
                }
                if p.moved as usize >= BATCH {
                    Duration::ZERO
                } else {
                    // Delayed jobs are due by the server's clock; schedules are worked out on this host's.
                    let until = |t: Option<u64>, now: u64| {
                        t.map(|t| Duration::from_millis(t.saturating_sub(now)))
                    };
                    let fire = if fire_now {
                        // Fired (look again for more at once) or held back.
                        Some(hold_fires_until.saturating_duration_since(Instant::now()))
                    } else {
                        until(p.next_fire, now)
                    };
                    [until(p.next_due, p.now_ms), fire]
                        .into_iter()
                        .flatten()
                        .fold(shared.config.promote_interval, Duration::min)
                }
            }
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

/// Fires the schedules due at `now` (this worker's clock). Returns how long to hold off when the server's clock
/// says one is not due yet.
async fn fire_due(shared: &Shared, now: u64) -> Option<Duration> {
    let r = async {
        let mut c = shared.client.conn().await?;
        let due: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&shared.keys.schedules)
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(SCHEDULES_PER_WAKE)
            .query_async(&mut c)
            .await?;
        for (name, t) in due {
            let t = t as u64;
            // A member without a definition: fire.lua drops it (no fire times asked).
            let schedule = crate::schedule::definition(&mut c, &shared.keys, &name).await?;
            if schedule.is_none() {
                // Written by something that does not follow SPEC §6e: it is moved to "never" rather than retried.
                tracing::warn!(queue = %shared.keys.queue, schedule = %name, "schedule definition unreadable: it will not fire");
            }
            let mut clock = now;
            // At most twice: on this host's clock, then (if that runs ahead) on the server's.
            for _ in 0..2 {
                let (fires, next) = schedule
                    .as_ref()
                    .map_or((Vec::new(), u64::MAX), |s| {
                        let p = s.plan(t, clock);
                        (p.fires, p.next)
                    });
                let call = Fire {
                    name: &name,
                    expected_ms: t,
                    fires_ms: &fires,
                    next_ms: next,
                    events_maxlen: shared.caller().events_maxlen,
                };
                let fired = shared
                    .stats
                    .timed(Call::Fire, scripts::fire(&mut c, &shared.keys, call))
                    .await?;
                match fired {
                    Fired::Fired(n) if n > 0 => {
                        tracing::info!(queue = %shared.keys.queue, schedule = %name, jobs = n, "schedule fired");
                    }
                    Fired::Fired(_) => {
                        tracing::info!(queue = %shared.keys.queue, schedule = %name, missed_from = t, "missed fire times skipped");
                    }
                    // Another worker fired it, or it changed meanwhile.
                    Fired::Moved => {}
                    // Due by the server's clock, but this host's asked for later times too: plan on the server's.
                    Fired::Early(server_now) if t <= server_now && clock != server_now => {
                        clock = server_now;
                        continue;
                    }
                    Fired::Early(server_now) => {
                        let ahead = t.saturating_sub(server_now);
                        return Ok(Some(Duration::from_millis(ahead.clamp(10, 1000))));
                    }
                }
                break;
            }
        }
        Ok::<_, crate::Error>(None)
    }
    .await;
    r.unwrap_or_else(|e| {
        warn_throttled!(error = %e, "firing schedules failed");
        Some(Duration::from_millis(500))
    })
}
