//! `heartbeat.lua`: registers or refreshes a worker's record and appends its beat.

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("heartbeat.lua");

/// What [`heartbeat`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The beat's entry id on the heartbeats stream.
    pub id: String,
    /// Whether the record holds the static fields (`host`, `pid`, `queue`, ...); if not, send them again.
    pub registered: bool,
}

/// The record fields a beat writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BeatFields<'a> {
    /// Written to the record and to the heartbeats stream every beat: status and counters.
    pub per_beat: &'a [(String, String)],
    /// Written to the record only, every beat: what it runs (`running`).
    pub record: &'a [(String, String)],
    /// Written to the record only, on registration (empty on an ordinary beat): host, pid, queue, ...
    pub registration: &'a [(String, String)],
}

/// Registers or refreshes a worker and appends its beat (`now_ms` 0 = the server's clock).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn heartbeat<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    maxlen: u64,
    record_ttl_ms: u64,
    fields: BeatFields<'_>,
) -> Result<Beat> {
    let mut inv = SCRIPT.key(&keys.workers);
    inv.key(keys.worker(consumer)).key(&keys.heartbeats);
    inv.arg(consumer)
        .arg(now_ms)
        .arg(maxlen.max(1))
        .arg(record_ttl_ms.max(1))
        .arg(fields.per_beat.len());
    for (k, v) in fields
        .per_beat
        .iter()
        .chain(fields.record)
        .chain(fields.registration)
    {
        inv.arg(k).arg(v);
    }
    let v: Value = inv.invoke_async(con).await?;
    let mut r = Reply::new(&v, "heartbeat.lua", 2)?;
    let id = r.string()?;
    let new = r.int()?;
    Ok(Beat {
        id,
        // A beat without the static fields that created record fields found no record (every per-beat and
        // record field exists after the first beat).
        registered: !fields.registration.is_empty() || new == 0,
    })
}
