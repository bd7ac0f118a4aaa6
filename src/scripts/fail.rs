//! `fail.lua`: ends a delivery that did not succeed (fenced): retry, dead letter or cancelled.

use redis::{Value, aio::ConnectionLike};

use super::reply::{Reply, unknown_code};
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;
use crate::wire::DeadReason;

script!("fail.lua");

/// What to do with a delivery that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Retry after this many ms if attempts remain, otherwise dead-letter as `exhausted`.
    Retry {
        /// Delay before the retry, ms.
        delay_ms: u64,
    },
    /// Dead-letter now with this reason.
    Dead(DeadReason),
    /// End it as cancelled; its record is kept this long, ms.
    Cancel {
        /// Record retention, ms.
        retention_ms: u64,
    },
}

/// One [`fail`] call.
#[derive(Debug, Clone, Copy)]
pub struct Fail<'a> {
    /// The delivery that failed.
    pub delivery: DeliveryRef<'a>,
    /// Its job id.
    pub job_id: &'a str,
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// What to do.
    pub mode: FailMode,
    /// The error text to store.
    pub error: &'a str,
}

/// Result of [`fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The retry waits in the delayed set.
    RetryScheduled {
        /// Attempts made so far.
        attempts: u32,
    },
    /// The retry is on the ready stream already.
    Requeued {
        /// Attempts made so far.
        attempts: u32,
    },
    /// Moved to the dead-letter stream.
    Dead {
        /// Attempts made.
        attempts: u32,
    },
    /// Ended as cancelled.
    Cancelled,
    /// The delivery was superseded; nothing changed.
    Stale,
    /// The entry had been deleted; its pending entry was acked.
    Gone,
}

/// Ends a failed delivery.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn fail<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    call: Fail<'_>,
) -> Result<FailOutcome> {
    let (mode, delay, reason, retention) = match call.mode {
        FailMode::Retry { delay_ms } => ("retry", delay_ms, DeadReason::Exhausted, 1),
        FailMode::Dead(r) => ("dead", 0, r, 1),
        FailMode::Cancel { retention_ms } => ("cancel", 0, DeadReason::Failed, retention_ms),
    };
    let keys = caller.keys;
    let mut inv = SCRIPT.key(caller.stream());
    inv.key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events)
        .key(keys.job(call.job_id));
    inv.arg(GROUP)
        .arg(caller.consumer)
        .arg(call.delivery.entry_id)
        .arg(call.delivery.token)
        .arg(call.job_id)
        .arg(call.now_ms)
        .arg(mode)
        .arg(delay)
        .arg(call.error)
        .arg(reason.as_str())
        .arg(caller.max_attempts)
        .arg(caller.events_maxlen)
        .arg(retention.max(1));
    let v: Value = inv.invoke_async(con).await?;
    let mut r = Reply::new(&v, "fail.lua", 2)?;
    let code = r.int()?;
    let attempts = r.count()?.min(u64::from(u32::MAX)) as u32;
    Ok(match code {
        1 => FailOutcome::RetryScheduled { attempts },
        2 => FailOutcome::Requeued { attempts },
        3 => FailOutcome::Dead { attempts },
        4 => FailOutcome::Cancelled,
        0 => FailOutcome::Stale,
        -1 => FailOutcome::Gone,
        c => return Err(unknown_code("fail.lua", c)),
    })
}
