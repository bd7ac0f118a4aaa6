//! `limit.lua`: reads new entries for a worker under the queue's rate, concurrency and per-key limits, in one
//! atomic step.

use std::time::Duration;

use redis::{Value, aio::ConnectionLike};

use super::reply::{Reply, protocol};
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};
use crate::wire::RawEntry;

script!("limit.lua");

/// Which limits a queue has, as they change how its workers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Limits {
    /// None: read as usual.
    #[default]
    None = 0,
    /// Only a concurrency limit: read through [`read_limited`]; prefetched jobs count as handed out, so prefetch
    /// stays.
    Concurrency = 1,
    /// A rate limit (with or without a concurrency limit), or per-key limits: read through [`read_limited`] only
    /// for handlers free now (a start is counted when read).
    Rate = 2,
}

impl Limits {
    /// From a script's code (`promote.lua`): 0, 1 or 2; anything else reads as a rate limit (the safe side).
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Limits::None,
            1 => Limits::Concurrency,
            _ => Limits::Rate,
        }
    }

    /// From the limit hash's `rate` and `concurrency` fields, as read.
    pub fn from_fields(rate: bool, concurrency: bool) -> Self {
        match (rate, concurrency) {
            (true, _) => Limits::Rate,
            (false, true) => Limits::Concurrency,
            (false, false) => Limits::None,
        }
    }
}

/// What a read under the queue's limits found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitedRead {
    /// The queue has no limit: nothing was read (read as usual).
    Unlimited,
    /// Entries read for the consumer, each counted as a start, with the position of the stream they came from
    /// among those given.
    Entries(Vec<(usize, RawEntry)>),
    /// No start is allowed by the rate for this long.
    Rate(Duration),
    /// The concurrency limit is used up: a job ending writes an event after this events stream id.
    Room {
        /// The events stream's newest id (`0-0` if empty).
        after_event: String,
    },
    /// Nothing is waiting: new entries come after these ids, one per stream read (in the order given).
    Empty {
        /// Each stream's newest id (`0-0` if empty).
        after: Vec<String>,
    },
    /// Per-key limits: every key with held jobs is out of room and no new entry could start. A job ending writes
    /// an event after `after_event`, a new entry comes after `after`; a key's rate allows a start in `wake`.
    Keys {
        /// The events stream's newest id (`0-0` if empty).
        after_event: String,
        /// Each stream's newest id (`0-0` if empty), in the order given.
        after: Vec<String>,
        /// When the first key held back by its rate may start again, if one is.
        wake: Option<Duration>,
    },
    /// Per-key limits: the call's scan budget went on holding entries back; call again at once.
    Again,
}

/// Reads up to `want` new entries for `consumer` under the queue's limits, from the streams `streams` (the
/// ready stream, or the priority levels' streams in the order to read them; at least one).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn read_limited<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    streams: &[&str],
    consumer: &str,
    want: usize,
) -> Result<LimitedRead> {
    let mut inv = SCRIPT.key(&keys.limit);
    inv.key(&keys.limit_starts)
        .key(streams.first().copied().unwrap_or(&keys.ready))
        .key(&keys.events)
        .key(&keys.held)
        .key(&keys.key_ring)
        .key(&keys.key_queued)
        .key(&keys.key_running)
        .key(&keys.key_starts);
    for s in streams.iter().skip(1) {
        inv.key(*s);
    }
    let v: Value = inv
        .arg(GROUP)
        .arg(consumer)
        .arg(want.max(1))
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "limit.lua", 4)?;
    let limited = r.int()? == 1;
    let read = r.value()?;
    let wait = r.string()?;
    if !limited {
        return Ok(LimitedRead::Unlimited);
    }
    if wait == "entries" {
        return Ok(LimitedRead::Empty {
            after: r.strings()?,
        });
    }
    if wait == "keys" {
        let mut after = r.strings()?;
        let wake = after.pop().unwrap_or_default();
        let wake: u64 = wake
            .parse()
            .map_err(|_| protocol("limit.lua", format!("wake {wake:?} is not a number of ms")))?;
        if after.len() != streams.len() + 1 {
            return Err(protocol(
                "limit.lua",
                format!("{} ids for {} streams", after.len(), streams.len()),
            ));
        }
        let after_event = after.remove(0);
        return Ok(LimitedRead::Keys {
            after_event,
            after,
            wake: (wake > 0).then(|| Duration::from_millis(wake)),
        });
    }
    let after = r.string()?;
    Ok(match wait.as_str() {
        "" => {
            let mut entries = Vec::new();
            for (stream, e) in crate::wire::parse_read_reply_by_stream(read.clone())? {
                let at = streams.iter().position(|s| *s == stream).ok_or_else(|| {
                    protocol(
                        "limit.lua",
                        format!("entries from a stream not asked for: {stream:?}"),
                    )
                })?;
                entries.extend(e.into_iter().map(|e| (at, e)));
            }
            LimitedRead::Entries(entries)
        }
        "rate" => LimitedRead::Rate(Duration::from_millis(after.parse().map_err(|_| {
            protocol("limit.lua", format!("wait {after:?} is not a number of ms"))
        })?)),
        "room" => LimitedRead::Room { after_event: after },
        "again" => LimitedRead::Again,
        other => return Err(protocol("limit.lua", format!("unknown wait {other:?}"))),
    })
}
