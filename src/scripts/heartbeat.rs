//! `heartbeat.lua`: registers or refreshes a worker's record and appends its beat.

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("heartbeat.lua");

/// What [`heartbeat`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The beat's entry id on the heartbeats stream (empty: it sent no per-beat fields, so it added none).
    pub id: String,
    /// Whether the record holds the static fields (`host`, `pid`, `queue`, ...); if not, send them again.
    pub registered: bool,
    /// Other workers silent past the crash threshold (at most 8, oldest beat first): candidates for
    /// [`adopt()`](super::adopt()), which checks again.
    pub crashed: Vec<String>,
}

/// One [`heartbeat`] call.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    /// The beating worker's consumer name.
    pub consumer: &'a str,
    /// The clock, ms since the Unix epoch; 0 = the Redis server's clock.
    pub now_ms: u64,
    /// Approximate length the heartbeats stream is trimmed to.
    pub maxlen: u64,
    /// How long the record outlives its last beat, ms; 0 = leave the record's expiry as it is.
    pub record_ttl_ms: u64,
    /// List workers whose last beat is older than this, ms (0 = list none).
    pub crash_after_ms: u64,
    /// What the beat writes.
    pub fields: BeatFields<'a>,
}

/// The record fields a beat writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BeatFields<'a> {
    /// Written to the record and to the heartbeats stream: status and counters (empty: none changed, and the
    /// beat adds no entry to the stream).
    pub per_beat: &'a [(String, String)],
    /// Written to the record only: what it runs (`running`; left out when it did not change).
    pub record: &'a [(String, String)],
    /// Written to the record only, on registration (empty on an ordinary beat): host, pid, queue, ...
    pub registration: &'a [(String, String)],
}

/// Registers or refreshes a worker, appends its beat to the heartbeats stream if it sends per-beat fields, and
/// lists the workers that look crashed.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn heartbeat<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    call: Heartbeat<'_>,
) -> Result<Beat> {
    let fields = call.fields;
    let mut inv = SCRIPT.key(&keys.workers);
    inv.key(keys.worker(call.consumer)).key(&keys.heartbeats);
    inv.arg(call.consumer)
        .arg(call.now_ms)
        .arg(call.maxlen.max(1))
        .arg(call.record_ttl_ms)
        .arg(call.crash_after_ms)
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
    let mut r = Reply::new(&v, "heartbeat.lua", 3)?;
    let id = r.string()?;
    let new = r.int()?;
    let crashed = r.strings()?;
    Ok(Beat {
        crashed,
        id,
        // A beat without the static fields that created record fields found no record (every per-beat and
        // record field exists after the first beat).
        registered: !fields.registration.is_empty() || new == 0,
    })
}

/// Refreshes a registered worker's registry score with plain commands, no script: all a beat needs when none
/// of the record's fields changed and its expiry need not be set (SPEC.md, section 6c). One round trip of
/// `EXISTS` of the record, `ZADD XX CH` of the score (which never adds: a worker missing from the registry must
/// register again) and the crash check of [`heartbeat`], judged by `now_ms` (the caller's reading of the
/// server's clock, which a plain command cannot read). Above a round trip's own cost it costs Redis about a
/// third of an unchanged [`heartbeat`] call, which converts its arguments and each command's reply in Lua.
///
/// `registered` in the answer is false when the worker was not in the registry or its record is gone (Redis
/// lost its data, it was judged crashed and removed, or someone deleted the record); `id` is always empty.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn refresh<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    crash_after_ms: u64,
) -> Result<Beat> {
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS").arg(keys.worker(consumer));
    pipe.cmd("ZADD")
        .arg(&keys.workers)
        .arg("XX")
        .arg("CH")
        .arg(now_ms)
        .arg(consumer);
    if crash_after_ms > 0 {
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&keys.workers)
            .arg("-inf")
            .arg(format!("({}", now_ms.saturating_sub(crash_after_ms)))
            .arg("LIMIT")
            .arg(0)
            .arg(8);
    }
    let (exists, changed, crashed): (i64, i64, Option<Vec<String>>) = if crash_after_ms > 0 {
        let (exists, changed, crashed) = pipe.query_async(con).await?;
        (exists, changed, Some(crashed))
    } else {
        let (exists, changed) = pipe.query_async(con).await?;
        (exists, changed, None)
    };
    Ok(Beat {
        id: String::new(),
        // `ZADD XX CH` answers 0 when the member is missing (or its score is unchanged, which would need two
        // beats in one millisecond).
        registered: exists == 1 && changed == 1,
        crashed: crashed.unwrap_or_default(),
    })
}
