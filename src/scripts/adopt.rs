//! `adopt.lua`: takes over a crashed worker's pending deliveries at once, without waiting out their leases.

use redis::{Value, aio::ConnectionLike};

use super::Caller;
use super::reply::Reply;
use crate::error::Result;
use crate::keys::GROUP;
use crate::wire::RawEntry;

script!("adopt.lua");

/// One [`adopt`] call.
#[derive(Debug, Clone, Copy)]
pub struct Adopt<'a> {
    /// The worker judged crashed (its consumer name).
    pub crashed: &'a str,
    /// The clock, ms since the Unix epoch (0 = the server's clock).
    pub now_ms: u64,
    /// No beat for this long, ms: crashed.
    pub crash_after_ms: u64,
    /// Most deliveries to take.
    pub count: usize,
    /// The queue's priority levels: deliveries are taken from the caller's level, but the worker is removed
    /// only once it holds none on any level.
    pub levels: u8,
}

/// Result of [`adopt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Whether the worker was judged crashed (false: it beat recently; nothing done).
    pub crashed: bool,
    /// Whether it had nothing pending left and was removed from the group and the registry.
    pub removed: bool,
    /// Deliveries now owned by the adopter, with their tokens.
    pub taken: Vec<(RawEntry, u64)>,
    /// Exhausted jobs dead-lettered.
    pub dead_lettered: u64,
}

/// Takes over a crashed worker's pending deliveries.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn adopt<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    call: Adopt<'_>,
) -> Result<Adopted> {
    let keys = caller.keys;
    let mut inv = SCRIPT.key(caller.stream());
    inv.key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events)
        .key(&keys.workers)
        .key(keys.worker(call.crashed));
    for level in (0..call.levels).filter(|&l| l != caller.level) {
        inv.key(keys.level(level));
    }
    let v: Value = inv
        .arg(GROUP)
        .arg(caller.consumer)
        .arg(call.crashed)
        .arg(call.now_ms)
        .arg(call.crash_after_ms)
        .arg(call.count.max(1))
        .arg(caller.max_attempts)
        .arg(caller.events_maxlen)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "adopt.lua", 3)?;
    let code = r.int()?;
    Ok(Adopted {
        crashed: code != 0,
        removed: code == 2,
        taken: r.taken()?,
        dead_lettered: r.count()?,
    })
}
