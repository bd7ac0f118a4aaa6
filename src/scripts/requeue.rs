//! `requeue.lua`: puts dead letters back on the ready stream with a full set of attempts.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{codes, unknown_code};
use crate::error::Result;
use crate::keys::QueueKeys;

script!("requeue.lua");

/// What [`requeue`] did with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requeued {
    /// Back on the ready stream with a full set of attempts.
    Ready,
    /// No such dead letter (already requeued or purged).
    Missing,
    /// Left dead: its job id is live again (re-enqueued since it died).
    Live,
}

/// Puts dead letters (by dead-letter entry id) back on the ready stream: one outcome per id.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn requeue<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    now_ms: u64,
    events_maxlen: u64,
    dead_entry_ids: &[&str],
) -> Result<Vec<Requeued>> {
    let mut inv = SCRIPT.key(&keys.dead);
    inv.key(&keys.dead_index)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events)
        .level_keys(keys);
    inv.arg(now_ms).arg(events_maxlen);
    for id in dead_entry_ids {
        inv.arg(*id);
    }
    let v: Value = inv.invoke_async(con).await?;
    codes(&v, "requeue.lua", dead_entry_ids.len())?
        .into_iter()
        .map(|c| match c {
            1 => Ok(Requeued::Ready),
            0 => Ok(Requeued::Missing),
            -1 => Ok(Requeued::Live),
            c => Err(unknown_code("requeue.lua", c)),
        })
        .collect()
}
