//! How a call that ends deliveries (`ack.lua`, `fail.lua`) is retried. Failures that may pass (Redis
//! unreachable, loading, a timeout) are retried quickly for up to one lease. Past that, or at once for any other
//! error, the worker is impaired: it takes no more jobs and reports itself degraded, and the call goes on being
//! retried with a growing pause while its deliveries stay held (their leases renewed), so a refused ending is late,
//! not lost, and never makes a job run twice. Only once shutdown has begun does it give up, one lease later,
//! leaving the deliveries to be reclaimed.

use std::time::{Duration, Instant};

use super::control::Impairment;
use super::shared::Shared;
use crate::error::Error;

/// Longest pause between attempts while impaired.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The retry state of one call.
pub(super) struct Retries<'a> {
    shared: &'a Shared,
    what: Impairment,
    script: &'static str,
    quick_until: Instant,
    pause: Duration,
    impaired: bool,
    give_up_at: Option<Instant>,
}

impl<'a> Retries<'a> {
    /// Retries of a call of `script`, which impairs `what` when it keeps failing.
    pub(super) fn new(shared: &'a Shared, what: Impairment, script: &'static str) -> Self {
        Retries {
            shared,
            what,
            script,
            quick_until: Instant::now() + shared.config.lease,
            pause: Duration::from_millis(20),
            impaired: false,
            give_up_at: None,
        }
    }

    /// After a failed call: waits, and returns true if the call should be made again (false: give up).
    pub(super) async fn again(&mut self, e: &Error) -> bool {
        let quick = !self.impaired && e.is_retryable() && Instant::now() < self.quick_until;
        if quick {
            tracing::debug!(error = %e, script = self.script, "retrying");
        } else {
            if !self.impaired {
                tracing::error!(error = %e, script = self.script, "cannot end deliveries: holding them and taking no more jobs until this works again");
                self.shared
                    .control
                    .impair(self.what, format!("{} refused: {e}", self.script));
                self.impaired = true;
            }
            if self.shared.control.is_draining() {
                let at = *self
                    .give_up_at
                    .get_or_insert_with(|| Instant::now() + self.shared.config.lease);
                if Instant::now() >= at {
                    return false;
                }
            }
        }
        tokio::time::sleep(self.pause).await;
        let cap = if self.impaired {
            MAX_PAUSE
        } else {
            Duration::from_millis(500)
        };
        self.pause = (self.pause * 2).min(cap);
        true
    }

    /// The call went through.
    pub(super) fn landed(&mut self) {
        if self.impaired {
            tracing::info!(script = self.script, "deliveries end again");
            self.shared.control.restore(self.what);
            self.impaired = false;
        }
    }
}
