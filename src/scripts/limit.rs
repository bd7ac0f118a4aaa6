//! `limit.lua`: grants starts under the queue's rate and concurrency limits, and takes back grants a reader did
//! not use.

use std::time::Duration;

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("limit.lua");

/// A grant of starts from [`take_starts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The queue has a limit (if not, nothing was granted or recorded: read as usual).
    pub limited: bool,
    /// Starts allowed now: read at most this many new entries.
    pub granted: usize,
    /// With none granted because of the rate: how long until a start is allowed again.
    pub wait: Duration,
    /// The grant's name, to [`return_starts`] what goes unused.
    pub member: String,
    /// The queue has a concurrency limit: the grant holds room until it is returned, so return it always.
    pub capped: bool,
    /// With none granted because of the concurrency limit: the events stream's newest id; a job ending adds an
    /// event after it, and then room may be free.
    pub after_event: Option<String>,
}

fn call(keys: &QueueKeys) -> redis::ScriptInvocation<'static> {
    let mut inv = SCRIPT.prepare_invoke();
    inv.key(&keys.limit)
        .key(&keys.limit_starts)
        .key(&keys.limit_holds)
        .key(&keys.ready)
        .key(&keys.events);
    inv
}

/// Takes up to `want` starts under the queue's limits.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn take_starts<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    want: usize,
) -> Result<Grant> {
    let v: Value = call(keys)
        .arg("take")
        .arg(want.max(1))
        .arg(GROUP)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "limit.lua", 6)?;
    let granted = r.count()? as usize;
    let wait = r.count()?;
    let member = r.string()?;
    let limited = r.int()? == 1;
    let capped = r.int()? == 1;
    let after = r.string()?;
    Ok(Grant {
        limited,
        granted,
        wait: Duration::from_millis(wait),
        member,
        capped,
        after_event: (!after.is_empty()).then_some(after),
    })
}

/// Returns grant `member`: `unused` of its starts were not read (entries that were not there), and its hold on
/// the concurrency limit ends (the entries read are pending now, and count there).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn return_starts<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    member: &str,
    unused: usize,
) -> Result<()> {
    let v: Value = call(keys)
        .arg("return")
        .arg(member)
        .arg(unused)
        .invoke_async(con)
        .await?;
    Reply::new(&v, "limit.lua", 6)?;
    Ok(())
}
