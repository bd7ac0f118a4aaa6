//! `enqueue.lua`: adds one job with an id, a dedup record and/or a due time.

use redis::{Value, aio::ConnectionLike};

use super::reply::{Reply, unknown_code};
use crate::error::Result;
use crate::keys::QueueKeys;

script!("enqueue.lua");

/// One [`enqueue`] call.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// The job id; empty for an unnamed job of a level above 0 (its id is then `<entry id>@<level>`).
    pub job_id: &'a str,
    /// The dedup key (the job id when none was given).
    pub dedup_key: &'a str,
    /// Lifetime of the dedup record, ms (0 = no dedup record).
    pub dedup_ttl_ms: u64,
    /// Due time, ms since the Unix epoch (0 = now).
    pub due_ms: u64,
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// The entry's fields (with `priority` when `priority` > 0).
    pub fields: &'a [(&'a str, &'a [u8])],
    /// The job's priority level (0 = the ready stream).
    pub priority: u8,
}

/// Result of [`enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// On the ready stream.
    Ready(String),
    /// In the delayed set.
    Delayed(String),
    /// Nothing added: an earlier job with this id or dedup key exists.
    Duplicate(String),
    /// Nothing added: the queue has no such priority level; it has this many.
    NoSuchLevel(u8),
}

impl Enqueued {
    /// The job id (empty for [`Enqueued::NoSuchLevel`]).
    pub fn id(&self) -> &str {
        match self {
            Enqueued::Ready(s) | Enqueued::Delayed(s) | Enqueued::Duplicate(s) => s,
            Enqueued::NoSuchLevel(_) => "",
        }
    }
}

/// Adds one job.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn enqueue<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job: NewJob<'_>,
) -> Result<Enqueued> {
    let mut inv = SCRIPT.key(keys.level(job.priority));
    inv.key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(keys.dedup(job.dedup_key));
    if job.priority > 0 {
        inv.key(&keys.priorities);
    }
    inv.arg(job.job_id)
        .arg(job.dedup_ttl_ms)
        .arg(job.due_ms)
        .arg(job.now_ms);
    for (k, v) in job.fields {
        inv.arg(*k).arg(*v);
    }
    let v: Value = inv.invoke_async(con).await?;
    let mut r = Reply::new(&v, "enqueue.lua", 2)?;
    let code = r.int()?;
    if code == -1 {
        let levels = r.int()?;
        return Ok(Enqueued::NoSuchLevel(
            u8::try_from(levels).unwrap_or(u8::MAX),
        ));
    }
    let id = r.string()?;
    Ok(match code {
        1 => Enqueued::Ready(id),
        2 => Enqueued::Delayed(id),
        0 => Enqueued::Duplicate(id),
        c => return Err(unknown_code("enqueue.lua", c)),
    })
}
