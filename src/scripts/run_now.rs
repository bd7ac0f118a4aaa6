//! `run_now.lua`: an operator's "promote": a delayed or failed-waiting job goes onto the ready stream now.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{int, unknown_code};
use crate::error::Result;
use crate::keys::QueueKeys;

script!("run_now.lua");

/// What [`run_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNow {
    /// On the ready stream now.
    Moved,
    /// Not delayed or failed-waiting: nothing done.
    NotDelayed,
    /// Its body was gone; the stray id was dropped.
    Gone,
}

/// Moves job `job_id` from the delayed set onto the ready stream now.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn run_now<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job_id: &str,
    now_ms: u64,
    events_maxlen: u64,
) -> Result<RunNow> {
    let v: Value = SCRIPT
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events)
        .level_keys(keys)
        .arg(job_id)
        .arg(now_ms)
        .arg(events_maxlen)
        .invoke_async(con)
        .await?;
    match int(&v, "run_now.lua")? {
        1 => Ok(RunNow::Moved),
        0 => Ok(RunNow::NotDelayed),
        -1 => Ok(RunNow::Gone),
        code => Err(unknown_code("run_now.lua", code)),
    }
}
