//! `permissions.lua`: whether the caller may run every command a worker needs.

use redis::{Value, aio::ConnectionLike};

use super::Caller;
use super::reply::string;
use crate::error::Result;
use crate::keys::GROUP;

script!("permissions.lua");

/// The first command (with its key) the caller may not run, or `None` when a worker may run all it needs.
///
/// # Errors
/// [`crate::Error::Redis`] (a user refused scripts altogether gets `NOPERM` here) or [`crate::Error::Protocol`].
pub async fn permissions<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
) -> Result<Option<String>> {
    let k = caller.keys;
    let v: Value = SCRIPT
        .key(&k.ready)
        .key(&k.index)
        .key(&k.delayed)
        .key(&k.scheduled)
        .key(&k.dead)
        .key(&k.dead_index)
        .key(&k.events)
        .key(k.job("permission-check"))
        .key(k.checkpoints("permission-check"))
        .key(&k.workers)
        .key(k.worker(caller.consumer))
        .key(&k.heartbeats)
        .key(&k.signals)
        .key(&k.outcomes)
        .key(&k.paused)
        .key(&k.parked)
        .key(&k.schedules)
        .key(k.schedule("permission-check"))
        .key(&k.limit)
        .key(&k.limit_starts)
        .key(&k.config)
        .arg(GROUP)
        .arg(caller.consumer)
        .invoke_async(con)
        .await?;
    let refused = string(&v, "permissions.lua")?;
    Ok((!refused.is_empty()).then_some(refused))
}
