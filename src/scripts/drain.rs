//! `drain.lua`: deletes waiting and delayed jobs, a bounded number per call.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::Reply;
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("drain.lua");

/// What one [`drain`] call deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Waiting jobs deleted.
    pub waiting: u64,
    /// Delayed jobs deleted (failed ones waiting for their retry included).
    pub delayed: u64,
    /// Either kind may have jobs left: call again.
    pub more: bool,
}

/// Deletes up to `count` waiting jobs of priority level `level` and up to `count` delayed jobs, oldest first;
/// with level 0, also up to `count` jobs held back by per-key limits (on any level).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn drain<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    level: u8,
    count: usize,
    now_ms: u64,
    events_maxlen: u64,
) -> Result<Drained> {
    let v: Value = SCRIPT
        .key(keys.level(level))
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(&keys.events)
        .level_keys(keys)
        .arg(GROUP)
        .arg(count.max(1))
        .arg(now_ms)
        .arg(events_maxlen)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "drain.lua", 3)?;
    Ok(Drained {
        waiting: r.count()?,
        delayed: r.count()?,
        more: r.int()? == 1,
    })
}
