//! `checkpoint.lua`: saves a running job's checkpoint (fenced, versioned, bounded).

use redis::{Value, aio::ConnectionLike};

use super::reply::{Reply, unknown_code};
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;

script!("checkpoint.lua");

/// Result of [`checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpointed {
    /// Written, with this version.
    Written(u64),
    /// The delivery no longer owns the job; nothing written.
    Stale,
    /// The version is not newer than the newest checkpoint's (given); nothing written.
    NotNewer(u64),
    /// The state exceeds the limit; nothing written.
    TooLarge,
}

/// What a checkpoint write carries, besides the delivery.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointWrite<'a> {
    /// Version, greater than every earlier checkpoint's.
    pub version: u64,
    /// Optional label ('' = none).
    pub label: &'a str,
    /// CBOR state.
    pub state: &'a [u8],
    /// Most checkpoints kept per job.
    pub keep: u32,
    /// Lifetime of the checkpoint stream after this write, ms.
    pub ttl_ms: u64,
    /// Largest state accepted, bytes.
    pub max_bytes: usize,
}

/// Saves a checkpoint for a running job.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn checkpoint<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    delivery: DeliveryRef<'_>,
    job_id: &str,
    now_ms: u64,
    write: CheckpointWrite<'_>,
) -> Result<Checkpointed> {
    let v: Value = SCRIPT
        .key(caller.stream())
        .key(caller.keys.checkpoints(job_id))
        .arg(GROUP)
        .arg(caller.consumer)
        .arg(delivery.entry_id)
        .arg(delivery.token)
        .arg(write.version)
        .arg(now_ms)
        .arg(write.label)
        .arg(write.state)
        .arg(write.keep.max(1))
        .arg(write.ttl_ms.max(1))
        .arg(write.max_bytes)
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "checkpoint.lua", 2)?;
    let code = r.int()?;
    let newest = r.count()?;
    Ok(match code {
        1 => Checkpointed::Written(newest),
        0 => Checkpointed::Stale,
        -1 => Checkpointed::NotNewer(newest),
        -2 => Checkpointed::TooLarge,
        c => return Err(unknown_code("checkpoint.lua", c)),
    })
}
