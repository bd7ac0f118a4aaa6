//! `promote.lua`: moves due delayed jobs and retries to the ready stream.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::Reply;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("promote.lua");

/// What [`promote`] did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// Jobs moved to the ready stream.
    pub moved: u64,
    /// Due time (ms) of the earliest job still delayed.
    pub next_due: Option<u64>,
    /// The earliest fire time (ms) of a schedule that is not paused.
    pub next_fire: Option<u64>,
    /// The queue's limits (a worker reads through [`read_limited`](super::read_limited) under any).
    pub limits: super::Limits,
    /// The time the call went by, ms since the Unix epoch: the server's when `now_ms` was 0.
    pub now_ms: u64,
    /// The queue's priority levels (one when the stored ones cannot be read: see [`Promoted::levels_problem`]).
    pub priorities: crate::Priorities,
    /// Why the stored priority levels could not be read, if they could not.
    pub levels_problem: Option<String>,
}

/// Moves up to `count` jobs due by `now_ms` (0: by the Redis server's clock) from the delayed set to the ready
/// stream, and says when the next delayed job and the next schedule are due.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn promote<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    now_ms: u64,
    count: usize,
    events_maxlen: u64,
) -> Result<Promoted> {
    let v: Value = SCRIPT
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events)
        .key(&keys.schedules)
        .key(&keys.limit)
        .level_keys(keys)
        .arg(now_ms)
        .arg(count.max(1))
        .arg(events_maxlen)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "promote.lua", 7)?;
    let moved = r.count()?;
    let next_due = r.int()?;
    let next_fire = r.int()?;
    let limits = super::Limits::from_code(r.int()?);
    let now_ms = r.count()?;
    let (levels, weights) = (r.string()?, r.string()?);
    let (priorities, levels_problem) = match crate::Priorities::from_fields(&levels, &weights) {
        Ok(p) => (p, None),
        Err(e) => (crate::Priorities::default(), Some(e.to_string())),
    };
    Ok(Promoted {
        priorities,
        levels_problem,
        moved,
        next_due: (next_due >= 0).then_some(next_due as u64),
        next_fire: (next_fire >= 0).then_some(next_fire as u64),
        limits,
        now_ms,
    })
}
