//! `fire.lua`: runs a schedule's due fire times, exactly once across workers.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{Reply, unknown_code};
use crate::error::Result;
use crate::keys::QueueKeys;

script!("fire.lua");

/// One [`fire`] call.
#[derive(Debug, Clone, Copy)]
pub struct Fire<'a> {
    /// Schedule name.
    pub name: &'a str,
    /// The next fire time the caller read from the schedules set, ms (the fence).
    pub expected_ms: u64,
    /// The fire times to enqueue now, ms, ascending (empty: missed fires skipped by the policy).
    pub fires_ms: &'a [u64],
    /// The schedule's next fire time after this call, ms.
    pub next_ms: u64,
    /// Approximate length of the events stream.
    pub events_maxlen: u64,
}

/// What [`fire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The jobs were enqueued (this many) and the schedule moved on.
    Fired(u64),
    /// The schedule no longer waits for that time: another worker fired it, or it was updated, paused or
    /// removed.
    Moved,
    /// Not yet due by the Redis server's clock, whose time (ms) is given.
    Early(u64),
}

/// Enqueues a schedule's due fire times if it still waits for `expected_ms` and that time has come.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn fire<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    call: Fire<'_>,
) -> Result<Fired> {
    let mut inv = SCRIPT.key(&keys.schedules);
    inv.key(keys.schedule(call.name))
        .key(&keys.ready)
        .key(&keys.events)
        .level_keys(keys);
    inv.arg(call.name)
        .arg(call.expected_ms)
        .arg(call.next_ms)
        .arg(call.events_maxlen);
    for f in call.fires_ms {
        inv.arg(*f);
    }
    let v: Value = inv.invoke_async(con).await?;
    let mut r = Reply::new(&v, "fire.lua", 3)?;
    let code = r.int()?;
    let fired = r.count()?;
    let now = r.string()?.parse::<u64>().unwrap_or(0);
    match code {
        1 => Ok(Fired::Fired(fired)),
        0 => Ok(Fired::Moved),
        -1 => Ok(Fired::Early(now)),
        c => Err(unknown_code("fire.lua", c)),
    }
}
