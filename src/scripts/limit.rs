//! `limit.lua`: grants starts under the queue's rate limit, and takes back grants a reader did not use.

use std::time::Duration;

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("limit.lua");

/// A grant of starts from [`take_starts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The queue has a rate limit (if not, nothing was granted or recorded: read as usual).
    pub limited: bool,
    /// Starts allowed now: read at most this many new entries.
    pub granted: usize,
    /// With none granted: how long until a start is allowed again.
    pub wait: Duration,
    /// The grant's name, to [`return_starts`] what goes unused.
    pub member: String,
}

/// Takes up to `want` starts under the queue's rate limit.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn take_starts<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    want: usize,
) -> Result<Grant> {
    let v: Value = SCRIPT
        .key(&keys.limit)
        .key(&keys.limit_starts)
        .arg("take")
        .arg(want.max(1))
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "limit.lua", 4)?;
    let granted = r.count()? as usize;
    let wait = r.count()?;
    let member = r.string()?;
    let limited = r.int()? == 1;
    Ok(Grant {
        limited,
        granted,
        wait: Duration::from_millis(wait),
        member,
    })
}

/// Gives back `unused` starts of grant `member` (entries that were not there to read).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn return_starts<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    member: &str,
    unused: usize,
) -> Result<()> {
    let v: Value = SCRIPT
        .key(&keys.limit)
        .key(&keys.limit_starts)
        .arg("return")
        .arg(member)
        .arg(unused)
        .invoke_async(con)
        .await?;
    Reply::new(&v, "limit.lua", 4)?;
    Ok(())
}
