//! `promote.lua`: moves due delayed jobs and retries to the ready stream.

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("promote.lua");

/// Moves up to `count` due delayed jobs to the ready stream. Returns how many moved and the earliest due
/// time (ms) still waiting.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn promote<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    now_ms: u64,
    count: usize,
    events_maxlen: u64,
) -> Result<(u64, Option<u64>)> {
    let v: Value = SCRIPT
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events)
        .arg(now_ms)
        .arg(count.max(1))
        .arg(events_maxlen.max(1))
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "promote.lua", 2)?;
    let moved = r.count()?;
    let next = r.int()?;
    Ok((moved, (next >= 0).then_some(next as u64)))
}
