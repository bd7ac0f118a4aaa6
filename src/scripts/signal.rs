//! `signal.lua`: records a signal and applies what the queue can apply at once (SPEC.md, "Signals").

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{Reply, unknown_code};
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("signal.lua");

/// One [`signal`] call.
#[derive(Debug, Clone, Copy)]
pub struct SignalSend<'a> {
    /// Wire kind (`cancel`, `pause`, ..., `custom:<name>`).
    pub kind: &'a str,
    /// Wire target (`queue`, `worker:<consumer>`, `job:<id>`).
    pub target: &'a str,
    /// Who sends it.
    pub sender: &'a str,
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// CBOR payload ('' = none).
    pub payload: &'a [u8],
    /// Approximate length the signals and outcomes streams are trimmed to.
    pub maxlen: u64,
    /// Lifetime of a cancelled job's record, ms.
    pub retention_ms: u64,
}

/// What the queue itself did with a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalApplied {
    /// Applied by the script (a waiting job cancelled or parked, a parked job resumed, the queue paused ...).
    Applied,
    /// Left for the workers (a running job's cancel or pause, worker signals).
    ForWorkers,
    /// Nothing to apply it to.
    Ignored,
}

/// What [`signal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSent {
    /// The signal's id (its entry in the signals stream).
    pub id: String,
    /// What the queue did with it.
    pub applied: SignalApplied,
}

/// Records a signal and applies what the queue can apply at once.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn signal<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    call: SignalSend<'_>,
) -> Result<SignalSent> {
    let job_key = match call.target.strip_prefix("job:") {
        Some(id) => keys.job(id),
        None => keys.paused.clone(),
    };
    let v: Value = SCRIPT
        .key(&keys.signals)
        .key(&keys.outcomes)
        .key(&keys.paused)
        .key(&keys.ready)
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(job_key)
        .key(&keys.parked)
        .level_keys(keys)
        .arg(call.kind)
        .arg(call.target)
        .arg(call.sender)
        .arg(call.now_ms)
        .arg(call.payload)
        .arg(call.maxlen.max(1))
        .arg(GROUP)
        .arg(call.retention_ms.max(1))
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "signal.lua", 2)?;
    let id = r.string()?;
    let applied = match r.int()? {
        1 => SignalApplied::Applied,
        2 => SignalApplied::ForWorkers,
        0 => SignalApplied::Ignored,
        c => return Err(unknown_code("signal.lua", c)),
    };
    Ok(SignalSent { id, applied })
}
