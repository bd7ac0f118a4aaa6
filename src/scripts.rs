//! The Lua scripts of `lua/` and typed calls to them. Scripts return codes; this module turns codes into
//! enums, never parsing error text. Each call passes every key in KEYS (all under the queue's hash tag) and
//! the clock as ARGV, so tests control time.

use std::sync::LazyLock;

use redis::{Script, Value, aio::ConnectionLike};

use crate::error::{Error, Result};
use crate::keys::{GROUP, QueueKeys};
use crate::wire::{self, RawEntry};

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../lua/", $file))));
    };
}
script!(ACK, "ack.lua");
script!(EXTEND, "extend.lua");
script!(FAIL, "fail.lua");
script!(RECLAIM, "reclaim.lua");
script!(RELEASE, "release.lua");
script!(PROMOTE, "promote.lua");
script!(ENQUEUE, "enqueue.lua");
script!(UPDATE, "update.lua");
script!(RETIRE, "retire.lua");
script!(STATE, "state.lua");
script!(CHECKPOINT, "checkpoint.lua");
script!(SIGNAL, "signal.lua");
script!(PARK, "park.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(ADOPT, "adopt.lua");
script!(REQUEUE, "requeue.lua");
script!(PURGE, "purge.lua");

/// The source of every script, by file name (for tests and for tools that load them elsewhere).
pub const SOURCES: &[(&str, &str)] = &[
    ("ack.lua", include_str!("../lua/ack.lua")),
    ("extend.lua", include_str!("../lua/extend.lua")),
    ("fail.lua", include_str!("../lua/fail.lua")),
    ("reclaim.lua", include_str!("../lua/reclaim.lua")),
    ("release.lua", include_str!("../lua/release.lua")),
    ("promote.lua", include_str!("../lua/promote.lua")),
    ("enqueue.lua", include_str!("../lua/enqueue.lua")),
    ("update.lua", include_str!("../lua/update.lua")),
    ("retire.lua", include_str!("../lua/retire.lua")),
    ("state.lua", include_str!("../lua/state.lua")),
    ("checkpoint.lua", include_str!("../lua/checkpoint.lua")),
    ("signal.lua", include_str!("../lua/signal.lua")),
    ("park.lua", include_str!("../lua/park.lua")),
    ("heartbeat.lua", include_str!("../lua/heartbeat.lua")),
    ("adopt.lua", include_str!("../lua/adopt.lua")),
    ("requeue.lua", include_str!("../lua/requeue.lua")),
    ("purge.lua", include_str!("../lua/purge.lua")),
];

fn protocol(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        what,
        detail: detail.into(),
    }
}

fn int(v: &Value, what: &'static str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => wire::bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol(what, format!("expected an integer, got {other:?}"))),
    }
}

fn string(v: &Value, what: &'static str) -> Result<String> {
    wire::bytes(v)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| protocol(what, format!("expected a string, got {v:?}")))
}

fn array<'a>(v: &'a Value, what: &'static str) -> Result<&'a [Value]> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(protocol(what, format!("expected an array, got {other:?}"))),
    }
}

fn codes(v: &Value, what: &'static str, n: usize) -> Result<Vec<i64>> {
    let a = array(v, what)?;
    if a.len() != n {
        return Err(protocol(what, format!("{} codes for {n} items", a.len())));
    }
    a.iter().map(|c| int(c, what)).collect()
}

/// One delivery as the scripts see it: the entry it came from and the delivery count it was handed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef<'a> {
    /// Stream entry id.
    pub entry_id: &'a str,
    /// Delivery count when this delivery began (the fencing token).
    pub token: u64,
}

/// One completion for [`ack`].
#[derive(Debug, Clone, Copy)]
pub struct AckItem<'a> {
    /// The delivery being completed.
    pub delivery: DeliveryRef<'a>,
    /// Job id.
    pub job_id: &'a str,
    /// Attempt number of this delivery.
    pub attempt: u32,
    /// CBOR result; empty = none.
    pub result: &'a [u8],
    /// Whether this delivery wrote the job record (progress, data) or checkpoints, which must go (after the
    /// retention, for checkpoints) once the job is done.
    pub touched: bool,
}

/// Default lazy window of [`ack`]: finished entries may linger until the oldest unfinished entry ahead of them
/// finishes, as long as it is no more than this far behind (entry-id time); past it they are deleted at once.
pub const LAZY_WINDOW_MS: u64 = 1000;

/// Record policy for [`ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a completed record lives, ms; 0 = write none.
    pub ms: u64,
    /// Write a record for every completed job, not only those with a result.
    pub keep_all: bool,
}

/// Orders stream ids numerically (`ms-seq`); unparsable ids sort last, by text.
fn id_key(id: &str) -> (u64, u64, &str) {
    match id.split_once('-') {
        Some((a, b)) => (
            a.parse().unwrap_or(u64::MAX),
            b.parse().unwrap_or(u64::MAX),
            id,
        ),
        None => (u64::MAX, u64::MAX, id),
    }
}

/// Completes deliveries: one flag per item, in the caller's order; `true` = completed, `false` = stale (no
/// effect). Writes one `completed` event for the batch when `events_maxlen > 0`.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn ack<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    retention: Retention,
    events_maxlen: u64,
    items: &[AckItem<'_>],
) -> Result<Vec<bool>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // The script checks ownership over the batch's id range, so it wants ascending ids.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_cached_key(|&i| id_key(items[i].delivery.entry_id));
    let mut inv = ACK.key(&keys.ready);
    inv.key(&keys.index).key(&keys.events);
    inv.arg(GROUP)
        .arg(consumer)
        .arg(now_ms)
        .arg(retention.ms)
        .arg(events_maxlen)
        .arg(if retention.keep_all { "1" } else { "0" })
        .arg(items.len())
        .arg(LAZY_WINDOW_MS);
    for &i in &order {
        inv.arg(items[i].delivery.entry_id)
            .arg(items[i].delivery.token);
    }
    // Only deliveries with something beyond the ack itself pass their job id, result and record key.
    for (pos, &i) in order.iter().enumerate() {
        let it = &items[i];
        let needs_record = retention.ms > 0 && (retention.keep_all || !it.result.is_empty());
        if it.job_id != it.delivery.entry_id || needs_record || it.touched {
            inv.key(keys.job(it.job_id))
                .key(keys.checkpoints(it.job_id));
            inv.arg(pos + 1)
                .arg(it.job_id)
                .arg(it.attempt)
                .arg(it.result)
                .arg(if it.touched { "1" } else { "0" });
        }
    }
    let v: Value = inv.invoke_async(con).await?;
    let sorted = codes(&v, "ack.lua", items.len())?;
    let mut out = vec![false; items.len()];
    for (pos, &i) in order.iter().enumerate() {
        out[i] = sorted[pos] == 1;
    }
    Ok(out)
}

/// Extends leases: one flag per delivery, `true` = extended, `false` = lost.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn extend<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    deliveries: &[DeliveryRef<'_>],
) -> Result<Vec<bool>> {
    let mut inv = EXTEND.key(&keys.ready);
    inv.arg(GROUP).arg(consumer);
    for d in deliveries {
        inv.arg(d.entry_id).arg(d.token);
    }
    let v: Value = inv.invoke_async(con).await?;
    Ok(codes(&v, "extend.lua", deliveries.len())?
        .into_iter()
        .map(|c| c == 1)
        .collect())
}

/// What to do with a delivery that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Retry after this many ms if attempts remain, otherwise dead-letter as `exhausted`.
    Retry {
        /// Delay before the retry, ms.
        delay_ms: u64,
    },
    /// Dead-letter now with this reason.
    Dead(wire::DeadReason),
    /// End it as cancelled; its record is kept this long, ms.
    Cancel {
        /// Record retention, ms.
        retention_ms: u64,
    },
}

/// Result of [`fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The retry waits in the delayed set.
    RetryScheduled {
        /// Attempts made so far.
        attempts: u32,
    },
    /// The retry is on the ready stream already.
    Requeued {
        /// Attempts made so far.
        attempts: u32,
    },
    /// Moved to the dead-letter stream.
    Dead {
        /// Attempts made.
        attempts: u32,
    },
    /// Ended as cancelled.
    Cancelled,
    /// The delivery was superseded; nothing changed.
    Stale,
    /// The entry had been deleted; its pending entry was acked.
    Gone,
}

/// Ends a failed delivery.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn fail<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    delivery: DeliveryRef<'_>,
    job_id: &str,
    now_ms: u64,
    mode: FailMode,
    error: &str,
    default_max_attempts: u32,
    events_maxlen: u64,
) -> Result<FailOutcome> {
    let (mode_s, delay, reason, retention) = match mode {
        FailMode::Retry { delay_ms } => ("retry", delay_ms, wire::DeadReason::Exhausted, 1),
        FailMode::Dead(r) => ("dead", 0, r, 1),
        FailMode::Cancel { retention_ms } => ("cancel", 0, wire::DeadReason::Failed, retention_ms),
    };
    let mut inv = FAIL.key(&keys.ready);
    inv.key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events)
        .key(keys.job(job_id));
    inv.arg(GROUP)
        .arg(consumer)
        .arg(delivery.entry_id)
        .arg(delivery.token)
        .arg(job_id)
        .arg(now_ms)
        .arg(mode_s)
        .arg(delay)
        .arg(error)
        .arg(reason.as_str())
        .arg(default_max_attempts)
        .arg(events_maxlen.max(1))
        .arg(retention.max(1));
    let v: Value = inv.invoke_async(con).await?;
    let a = array(&v, "fail.lua")?;
    if a.len() != 2 {
        return Err(protocol("fail.lua", "expected {code, attempts}"));
    }
    let attempts = int(&a[1], "fail.lua")?.clamp(0, i64::from(u32::MAX)) as u32;
    Ok(match int(&a[0], "fail.lua")? {
        1 => FailOutcome::RetryScheduled { attempts },
        2 => FailOutcome::Requeued { attempts },
        3 => FailOutcome::Dead { attempts },
        4 => FailOutcome::Cancelled,
        0 => FailOutcome::Stale,
        -1 => FailOutcome::Gone,
        c => return Err(protocol("fail.lua", format!("unknown code {c}"))),
    })
}

/// Parses `{entry id, token, fields}` items (reclaim.lua, adopt.lua).
fn parse_taken(v: &Value, what: &'static str) -> Result<Vec<(RawEntry, u64)>> {
    let mut taken = Vec::new();
    for t in array(v, what)? {
        let t = array(t, what)?;
        if t.len() != 3 {
            return Err(protocol(what, "taken item is not {id, token, fields}"));
        }
        let token = int(&t[1], what)?.max(0) as u64;
        let pair = Value::Array(vec![Value::Array(vec![t[0].clone(), t[2].clone()])]);
        let mut e = wire::parse_entries(pair)?;
        taken.push((e.remove(0), token));
    }
    Ok(taken)
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
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn reclaim<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    min_idle_ms: u64,
    cursor: &str,
    count: usize,
    now_ms: u64,
    default_max_attempts: u32,
    events_maxlen: u64,
) -> Result<ReclaimPage> {
    let mut inv = RECLAIM.key(&keys.ready);
    inv.key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events);
    inv.arg(GROUP)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(cursor)
        .arg(count.max(1))
        .arg(now_ms)
        .arg(default_max_attempts)
        .arg(events_maxlen.max(1));
    let v: Value = inv.invoke_async(con).await?;
    let what = "reclaim.lua";
    let a = array(&v, what)?;
    if a.len() != 4 {
        return Err(protocol(what, "expected {cursor, taken, dead, gone}"));
    }
    let taken = parse_taken(&a[1], what)?;
    Ok(ReclaimPage {
        cursor: string(&a[0], what)?,
        taken,
        dead_lettered: int(&a[2], what)?.max(0) as u64,
        gone: int(&a[3], what)?.max(0) as u64,
    })
}

/// Result of [`release`] for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Back on the ready stream.
    Released,
    /// Not owned by this delivery; nothing changed.
    Stale,
    /// The entry was gone; its pending entry was acked.
    Gone,
}

/// Hands deliveries back for immediate redelivery.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn release<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    events_maxlen: u64,
    deliveries: &[DeliveryRef<'_>],
) -> Result<Vec<Released>> {
    let mut inv = RELEASE.key(&keys.ready);
    inv.key(&keys.index).key(&keys.events);
    inv.arg(GROUP)
        .arg(consumer)
        .arg(now_ms)
        .arg(events_maxlen.max(1));
    for d in deliveries {
        inv.arg(d.entry_id).arg(d.token);
    }
    let v: Value = inv.invoke_async(con).await?;
    codes(&v, "release.lua", deliveries.len())?
        .into_iter()
        .map(|c| match c {
            1 => Ok(Released::Released),
            0 => Ok(Released::Stale),
            -1 => Ok(Released::Gone),
            c => Err(protocol("release.lua", format!("unknown code {c}"))),
        })
        .collect()
}

/// Moves up to `count` due delayed jobs to the ready stream. Returns how many moved and the earliest due
/// time (ms) still waiting.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn promote<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    now_ms: u64,
    count: usize,
    events_maxlen: u64,
) -> Result<(u64, Option<u64>)> {
    let v: Value = PROMOTE
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events)
        .arg(now_ms)
        .arg(count.max(1))
        .arg(events_maxlen.max(1))
        .invoke_async(con)
        .await?;
    let a = array(&v, "promote.lua")?;
    if a.len() != 2 {
        return Err(protocol("promote.lua", "expected {promoted, next_due}"));
    }
    let next = int(&a[1], "promote.lua")?;
    Ok((
        int(&a[0], "promote.lua")?.max(0) as u64,
        (next >= 0).then_some(next as u64),
    ))
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
}

impl Enqueued {
    /// The job id, in every case.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::Ready(s) | Enqueued::Delayed(s) | Enqueued::Duplicate(s) => s,
        }
    }
}

/// Adds one job with an id, a dedup record and/or a due time.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn enqueue<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job_id: &str,
    dedup_key: &str,
    dedup_ttl_ms: u64,
    due_ms: u64,
    now_ms: u64,
    fields: &[(&str, &[u8])],
) -> Result<Enqueued> {
    let mut inv = ENQUEUE.key(&keys.ready);
    inv.key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(keys.dedup(dedup_key));
    inv.arg(job_id).arg(dedup_ttl_ms).arg(due_ms).arg(now_ms);
    for (k, v) in fields {
        inv.arg(*k).arg(*v);
    }
    let v: Value = inv.invoke_async(con).await?;
    let a = array(&v, "enqueue.lua")?;
    if a.len() != 2 {
        return Err(protocol("enqueue.lua", "expected {code, id}"));
    }
    let id = string(&a[1], "enqueue.lua")?;
    Ok(match int(&a[0], "enqueue.lua")? {
        1 => Enqueued::Ready(id),
        2 => Enqueued::Delayed(id),
        0 => Enqueued::Duplicate(id),
        c => return Err(protocol("enqueue.lua", format!("unknown code {c}"))),
    })
}

/// Which field of a job record [`update`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordField {
    /// Progress reported by the handler.
    Progress,
    /// New job data for the next retry.
    Data,
}

/// Writes a fenced field of a running job's record. `true` = written, `false` = stale.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn update<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    delivery: DeliveryRef<'_>,
    job_id: &str,
    field: RecordField,
    value: &[u8],
    ttl_ms: u64,
) -> Result<bool> {
    let f = match field {
        RecordField::Progress => "progress",
        RecordField::Data => "data",
    };
    let v: Value = UPDATE
        .key(&keys.ready)
        .key(keys.job(job_id))
        .arg(GROUP)
        .arg(consumer)
        .arg(delivery.entry_id)
        .arg(delivery.token)
        .arg(f)
        .arg(value)
        .arg(ttl_ms.max(1))
        .invoke_async(con)
        .await?;
    Ok(int(&v, "update.lua")? == 1)
}

/// Removes a consumer from the group if it has nothing pending. `true` = removed.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn retire<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
) -> Result<bool> {
    let v: Value = RETIRE
        .key(&keys.ready)
        .arg(GROUP)
        .arg(consumer)
        .invoke_async(con)
        .await?;
    Ok(int(&v, "retire.lua")? == 1)
}

/// Reads where a job is (`state.lua`): state name, entry id, attempts made, owner, delivery count. See
/// [`crate::Queue::job`] for the typed form.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn state<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    job_id: &str,
) -> Result<(String, String, u64, String, u64)> {
    let v: Value = STATE
        .key(&keys.index)
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.ready)
        .key(keys.job(job_id))
        .key(&keys.dead_index)
        .key(&keys.parked)
        .arg(GROUP)
        .arg(job_id)
        .invoke_async(con)
        .await?;
    let what = "state.lua";
    let a = array(&v, what)?;
    if a.len() != 5 {
        return Err(protocol(what, "expected 5 items"));
    }
    Ok((
        string(&a[0], what)?,
        string(&a[1], what)?,
        int(&a[2], what)?.max(0) as u64,
        string(&a[3], what)?,
        int(&a[4], what)?.max(0) as u64,
    ))
}

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

/// Saves a checkpoint for a running job (fenced, versioned).
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn checkpoint<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    delivery: DeliveryRef<'_>,
    job_id: &str,
    now_ms: u64,
    write: CheckpointWrite<'_>,
) -> Result<Checkpointed> {
    let v: Value = CHECKPOINT
        .key(&keys.ready)
        .key(keys.checkpoints(job_id))
        .arg(GROUP)
        .arg(consumer)
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
    let what = "checkpoint.lua";
    let a = array(&v, what)?;
    if a.len() != 2 {
        return Err(protocol(what, "expected {code, version}"));
    }
    let newest = int(&a[1], what)?.max(0) as u64;
    Ok(match int(&a[0], what)? {
        1 => Checkpointed::Written(newest),
        0 => Checkpointed::Stale,
        -1 => Checkpointed::NotNewer(newest),
        -2 => Checkpointed::TooLarge,
        c => return Err(protocol(what, format!("unknown code {c}"))),
    })
}

/// What [`signal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSent {
    /// The signal's id (its entry in the signals stream).
    pub id: String,
    /// `1` applied by the queue itself, `2` left for workers, `0` ignored.
    pub code: i64,
}

/// Records a signal and applies what the queue can apply at once (SPEC.md, "Signals").
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
#[allow(clippy::too_many_arguments)]
pub async fn signal<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    kind: &str,
    target: &str,
    sender: &str,
    now_ms: u64,
    payload: &[u8],
    maxlen: u64,
    retention_ms: u64,
) -> Result<SignalSent> {
    let job_key = match target.strip_prefix("job:") {
        Some(id) => keys.job(id),
        None => keys.paused.clone(),
    };
    let v: Value = SIGNAL
        .key(&keys.signals)
        .key(&keys.outcomes)
        .key(&keys.paused)
        .key(&keys.ready)
        .key(&keys.delayed)
        .key(&keys.scheduled)
        .key(&keys.index)
        .key(job_key)
        .key(&keys.parked)
        .arg(kind)
        .arg(target)
        .arg(sender)
        .arg(now_ms)
        .arg(payload)
        .arg(maxlen.max(1))
        .arg(GROUP)
        .arg(retention_ms.max(1))
        .invoke_async(con)
        .await?;
    let a = array(&v, "signal.lua")?;
    if a.len() != 2 {
        return Err(protocol("signal.lua", "expected {id, code}"));
    }
    Ok(SignalSent {
        id: string(&a[0], "signal.lua")?,
        code: int(&a[1], "signal.lua")?,
    })
}

/// Parks a running delivery (a paused session). `Released::Released` = parked.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn park<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    delivery: DeliveryRef<'_>,
    now_ms: u64,
    events_maxlen: u64,
) -> Result<Released> {
    let v: Value = PARK
        .key(&keys.ready)
        .key(&keys.scheduled)
        .key(&keys.parked)
        .key(&keys.index)
        .key(&keys.events)
        .arg(GROUP)
        .arg(consumer)
        .arg(delivery.entry_id)
        .arg(delivery.token)
        .arg(now_ms)
        .arg(events_maxlen.max(1))
        .invoke_async(con)
        .await?;
    Ok(match int(&v, "park.lua")? {
        1 => Released::Released,
        0 => Released::Stale,
        -1 => Released::Gone,
        c => return Err(protocol("park.lua", format!("unknown code {c}"))),
    })
}

/// Registers or refreshes a worker and appends its beat. Returns the beat's entry id.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn heartbeat<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    maxlen: u64,
    record_ttl_ms: u64,
    fields: &[(String, String)],
) -> Result<String> {
    let mut inv = HEARTBEAT.key(&keys.workers);
    inv.key(keys.worker(consumer)).key(&keys.heartbeats);
    inv.arg(consumer)
        .arg(now_ms)
        .arg(maxlen.max(1))
        .arg(record_ttl_ms.max(1));
    for (k, v) in fields {
        inv.arg(k).arg(v);
    }
    let v: Value = inv.invoke_async(con).await?;
    string(&v, "heartbeat.lua")
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

/// Takes over a crashed worker's pending deliveries at once.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
#[allow(clippy::too_many_arguments)]
pub async fn adopt<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    adopter: &str,
    crashed: &str,
    now_ms: u64,
    crash_after_ms: u64,
    count: usize,
    default_max_attempts: u32,
    events_maxlen: u64,
) -> Result<Adopted> {
    let v: Value = ADOPT
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.dead)
        .key(&keys.dead_index)
        .key(&keys.events)
        .key(&keys.workers)
        .key(keys.worker(crashed))
        .arg(GROUP)
        .arg(adopter)
        .arg(crashed)
        .arg(now_ms)
        .arg(crash_after_ms)
        .arg(count.max(1))
        .arg(default_max_attempts)
        .arg(events_maxlen.max(1))
        .invoke_async(con)
        .await?;
    let what = "adopt.lua";
    let a = array(&v, what)?;
    if a.len() != 3 {
        return Err(protocol(what, "expected {code, taken, dead}"));
    }
    let code = int(&a[0], what)?;
    let taken = parse_taken(&a[1], what)?;
    Ok(Adopted {
        crashed: code != 0,
        removed: code == 2,
        taken,
        dead_lettered: int(&a[2], what)?.max(0) as u64,
    })
}

/// What [`requeue`] did with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requeued {
    /// Back on the ready stream with a full set of attempts.
    Requeued,
    /// No such dead letter (already requeued or purged).
    Missing,
    /// Left dead: its job id is live again (re-enqueued since it died).
    Live,
}

/// Puts dead letters (by dead-letter entry id) back on the ready stream.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn requeue<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    now_ms: u64,
    events_maxlen: u64,
    dead_entry_ids: &[&str],
) -> Result<Vec<Requeued>> {
    let mut inv = REQUEUE.key(&keys.dead);
    inv.key(&keys.dead_index)
        .key(&keys.ready)
        .key(&keys.index)
        .key(&keys.events);
    inv.arg(now_ms).arg(events_maxlen.max(1));
    for id in dead_entry_ids {
        inv.arg(*id);
    }
    let v: Value = inv.invoke_async(con).await?;
    codes(&v, "requeue.lua", dead_entry_ids.len())?
        .into_iter()
        .map(|c| match c {
            1 => Ok(Requeued::Requeued),
            0 => Ok(Requeued::Missing),
            -1 => Ok(Requeued::Live),
            c => Err(protocol("requeue.lua", format!("unknown code {c}"))),
        })
        .collect()
}

/// Deletes up to `count` dead letters, oldest first: those that died before `cutoff_ms` (0 = any). Returns how
/// many went.
///
/// # Errors
/// [`Error::Redis`] or [`Error::Protocol`].
pub async fn purge<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    cutoff_ms: u64,
    count: usize,
) -> Result<u64> {
    let v: Value = PURGE
        .key(&keys.dead)
        .key(&keys.dead_index)
        .arg(cutoff_ms)
        .arg(count.max(1))
        .invoke_async(con)
        .await?;
    Ok(int(&v, "purge.lua")?.max(0) as u64)
}
