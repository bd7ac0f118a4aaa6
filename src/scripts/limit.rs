//! `limit.lua`: reads new entries for a worker under the queue's rate and concurrency limits, in one atomic step.

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
    /// A rate limit (with or without a concurrency limit): read through [`read_limited`] only for handlers free
    /// now (a start is counted when read).
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
    /// Entries read for the consumer, each counted as a start.
    Entries(Vec<RawEntry>),
    /// No start is allowed by the rate for this long.
    Rate(Duration),
    /// The concurrency limit is used up: a job ending writes an event after this events stream id.
    Room {
        /// The events stream's newest id (`0-0` if empty).
        after_event: String,
    },
    /// Nothing is waiting: new entries come after this ready stream id.
    Empty {
        /// The ready stream's newest id (`0-0` if empty).
        after: String,
    },
}

/// Reads up to `want` new entries for `consumer` under the queue's limits.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn read_limited<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    want: usize,
) -> Result<LimitedRead> {
    let v: Value = SCRIPT
        .key(&keys.limit)
        .key(&keys.limit_starts)
        .key(&keys.ready)
        .key(&keys.events)
        .arg(GROUP)
        .arg(consumer)
        .arg(want.max(1))
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "limit.lua", 4)?;
    let limited = r.int()? == 1;
    let entries = r.entries()?;
    let wait = r.string()?;
    let after = r.string()?;
    if !limited {
        return Ok(LimitedRead::Unlimited);
    }
    Ok(match wait.as_str() {
        "" => LimitedRead::Entries(entries),
        "rate" => LimitedRead::Rate(Duration::from_millis(after.parse().map_err(|_| {
            protocol("limit.lua", format!("wait {after:?} is not a number of ms"))
        })?)),
        "room" => LimitedRead::Room { after_event: after },
        "entries" => LimitedRead::Empty { after },
        other => return Err(protocol("limit.lua", format!("unknown wait {other:?}"))),
    })
}
