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

/// A registered worker's beat in plain commands, no script (SPEC.md, section 6c): what every beat but the
/// registering ones and those that set the record's expiry can be. One round trip of `HSET` of `last_beat_ms` and
/// the changed fields on the record (`EXISTS` of it when none changed), `ZADD XX CH` of the registry score (which
/// never adds: a worker missing from the registry must register again), the crash check of [`heartbeat`], and,
/// when per-beat fields changed, their `XADD` to the heartbeats stream. The same writes as [`heartbeat`], judged
/// by `call.now_ms`: the caller's reading of the server's clock, which a plain command cannot read. Redis spends
/// less on it than on the script, which converts its arguments and each command's reply in Lua.
///
/// A call that needs the script (`now_ms` 0, the record's expiry to set, registration fields) goes through
/// [`heartbeat`]. `registered` in the answer is false when the worker was not in the registry or its record was
/// gone (Redis lost its data, it was judged crashed and removed, or someone deleted the record).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn refresh<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    call: Heartbeat<'_>,
) -> Result<Beat> {
    let fields = call.fields;
    if call.now_ms == 0 || call.record_ttl_ms > 0 || !fields.registration.is_empty() {
        return heartbeat(con, keys, call).await;
    }
    let (consumer, now) = (call.consumer, call.now_ms);
    let writes = !fields.per_beat.is_empty() || !fields.record.is_empty();
    let mut pipe = redis::pipe();
    if writes {
        let hset = pipe
            .cmd("HSET")
            .arg(keys.worker(consumer))
            .arg("last_beat_ms")
            .arg(now);
        for (k, v) in fields.per_beat.iter().chain(fields.record) {
            hset.arg(k).arg(v);
        }
    } else {
        pipe.cmd("EXISTS").arg(keys.worker(consumer));
    }
    pipe.cmd("ZADD")
        .arg(&keys.workers)
        .arg("XX")
        .arg("CH")
        .arg(now)
        .arg(consumer);
    if call.crash_after_ms > 0 {
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&keys.workers)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(call.crash_after_ms)))
            .arg("LIMIT")
            .arg(0)
            .arg(8);
    }
    if !fields.per_beat.is_empty() {
        let xadd = pipe
            .cmd("XADD")
            .arg(&keys.heartbeats)
            .arg("MAXLEN")
            .arg("~")
            .arg(call.maxlen.max(1))
            .arg("*")
            .arg("worker")
            .arg(consumer)
            .arg("ms")
            .arg(now);
        for (k, v) in fields.per_beat {
            xadd.arg(k).arg(v);
        }
    }
    let n = 2 + usize::from(call.crash_after_ms > 0) + usize::from(!fields.per_beat.is_empty());
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let v = Value::Array(replies);
    let mut r = Reply::new(&v, "heartbeat (plain commands)", n)?;
    let record = r.int()?;
    let scored = r.int()?;
    let crashed = if call.crash_after_ms > 0 {
        r.strings()?
    } else {
        Vec::new()
    };
    let id = if fields.per_beat.is_empty() {
        String::new()
    } else {
        r.string()?
    };
    Ok(Beat {
        id,
        // The record was there: `EXISTS` answers 1, `HSET` creates no field (every field exists after the first
        // beat). `ZADD XX CH` answers 0 when the member is missing (or its score is unchanged, which would need
        // two beats in one millisecond).
        registered: (if writes { record == 0 } else { record == 1 }) && scored == 1,
        crashed,
    })
}
