//! `purge.lua`: deletes dead letters, oldest first.

use redis::{Value, aio::ConnectionLike};

use super::reply::int;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("purge.lua");

/// Deletes up to `count` dead letters, oldest first: those that died before `cutoff_ms` (0 = any). Returns how
/// many went.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn purge<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    cutoff_ms: u64,
    count: usize,
) -> Result<u64> {
    let v: Value = SCRIPT
        .key(&keys.dead)
        .key(&keys.dead_index)
        .arg(cutoff_ms)
        .arg(count.max(1))
        .invoke_async(con)
        .await?;
    Ok(int(&v, "purge.lua")?.max(0) as u64)
}
