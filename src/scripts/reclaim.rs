//! `reclaim.lua`: one page of stalled-job recovery (deliveries idle past their lease change owner).

use redis::{Value, aio::ConnectionLike};

use super::Caller;
use super::reply::Reply;
use crate::error::Result;
use crate::keys::GROUP;
use crate::wire::RawEntry;

script!("reclaim.lua");

/// One [`reclaim`] call.
#[derive(Debug, Clone, Copy)]
pub struct Reclaim<'a> {
    /// Take deliveries idle at least this long, ms (the lease).
    pub min_idle_ms: u64,
    /// Where the page starts (`0-0` = a new pass).
    pub cursor: &'a str,
    /// Most deliveries to take.
    pub count: usize,
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
}

/// One page of stalled-job recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimPage {
    /// Where the next page starts; `0-0` when the pass is complete.
    pub cursor: String,
    /// Entries now owned by the caller, with their new tokens.
    pub taken: Vec<(RawEntry, u64)>,
    /// Exhausted jobs moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Pending ids whose entries were gone (dropped from the pending list).
    pub gone: u64,
}

/// Takes up to `count` deliveries idle for at least `min_idle_ms`, starting at `cursor`.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn reclaim<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    call: Reclaim<'_>,
) -> Result<ReclaimPage> {
    let keys = caller.keys;
    let mut inv = SCRIPT.key(caller.stream());
    inv.key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events);
    inv.arg(GROUP)
        .arg(caller.consumer)
        .arg(call.min_idle_ms)
        .arg(call.cursor)
        .arg(call.count.max(1))
        .arg(call.now_ms)
        .arg(caller.max_attempts)
        .arg(caller.events_maxlen);
    let v: Value = inv.invoke_async(con).await?;
    let mut r = Reply::new(&v, "reclaim.lua", 4)?;
    Ok(ReclaimPage {
        cursor: r.string()?,
        taken: r.taken()?,
        dead_lettered: r.count()?,
        gone: r.count()?,
    })
}
