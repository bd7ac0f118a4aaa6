//! `state.lua`: where a job is, read atomically across the queue's keys.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::Reply;
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("state.lua");

/// One job's place as `state.lua` reports it. See [`crate::Queue::job`] for the typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// State name (`waiting`, `active`, `delayed`, `completed`, `dead`, `cancelled`, `parked`, `unknown`).
    pub state: String,
    /// The job's stream entry id ('' if none).
    pub entry_id: String,
    /// Attempts made.
    pub attempts: u64,
    /// The consumer holding it ('' if none).
    pub owner: String,
    /// Its delivery count (0 if not pending).
    pub deliveries: u64,
    /// For completed and cancelled: when it finished, ms since the Unix epoch (0 if unknown).
    pub finished_ms: u64,
    /// For waiting and active: the priority level whose stream holds the entry (0 otherwise).
    pub level: u8,
}

/// Events `state.lua` reads, newest first, looking for the `completed` event of a job nothing else knows (a
/// job enqueued by a plain `XADD`; each event can list 64 job ids, so this bounds the call to well under a
/// millisecond of Redis time).
pub const STATE_EVENT_SCAN: u64 = 200;

/// Reads where a job is.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn state<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job_id: &str,
) -> Result<StateRow> {
    let v: Value = SCRIPT
        .key(&keys.index)
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(keys.job(job_id))
        .key(&keys.dead_index)
        .key(&keys.parked)
        .key(&keys.events)
        .key(&keys.dead)
        .level_keys(keys)
        .arg(GROUP)
        .arg(job_id)
        .arg(STATE_EVENT_SCAN)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "state.lua", 7)?;
    Ok(StateRow {
        state: r.string()?,
        entry_id: r.string()?,
        attempts: r.count()?,
        owner: r.string()?,
        deliveries: r.count()?,
        finished_ms: r.count()?,
        level: u8::try_from(r.count()?).unwrap_or(0),
    })
}
