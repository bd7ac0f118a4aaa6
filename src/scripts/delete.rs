//! `delete.lua`: removes one job for good, in any state but running.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{Reply, unknown_code};
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("delete.lua");

/// What [`delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted; it was in this state (`waiting`, `delayed`, `failed`, `parked`, `dead`, `completed`,
    /// `cancelled`).
    Deleted(String),
    /// Running: nothing done (a worker owns it; cancel it instead).
    Running,
    /// No such job.
    NotFound,
}

/// Deletes job `job_id` unless it is running.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn delete<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job_id: &str,
    now_ms: u64,
    events_maxlen: u64,
) -> Result<Deleted> {
    let v: Value = SCRIPT
        .key(&keys.ready)
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(&keys.parked)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(keys.job(job_id))
        .key(keys.checkpoints(job_id))
        .key(keys.dedup(job_id))
        .key(&keys.events)
        .level_keys(keys)
        .arg(GROUP)
        .arg(job_id)
        .arg(now_ms)
        .arg(events_maxlen)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "delete.lua", 2)?;
    let code = r.int()?;
    let state = r.string()?;
    match code {
        1 => Ok(Deleted::Deleted(state)),
        2 => Ok(Deleted::Running),
        0 => Ok(Deleted::NotFound),
        code => Err(unknown_code("delete.lua", code)),
    }
}
