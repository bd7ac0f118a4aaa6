//! `limit.lua`: reads new jobs under the queue's rate limit, recording a start for each.

use std::time::Duration;

use redis::{Value, aio::ConnectionLike};

use super::reply::Reply;
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};
use crate::wire::{self, RawEntry};

script!("limit.lua");

/// What [`limit`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The queue has a rate limit (if not, nothing was read: read as usual).
    pub limited: bool,
    /// Entries now delivered to the caller, each with a start recorded.
    pub entries: Vec<RawEntry>,
    /// With nothing read because of the limit: how long until a start is allowed again.
    pub wait: Duration,
    /// The group's last-delivered id: with nothing read and no wait, block for entries after it.
    pub last_delivered: String,
}

/// Reads up to `want` new entries for `consumer` as the queue's rate limit allows now.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn limit<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    want: usize,
) -> Result<Limited> {
    let v: Value = SCRIPT
        .key(&keys.limit)
        .key(&keys.limit_starts)
        .key(&keys.ready)
        .arg(GROUP)
        .arg(consumer)
        .arg(want.max(1))
        .invoke_async(con)
        .await?;
    let Value::Array(items) = &v else {
        return Err(super::reply::protocol("limit.lua", "expected an array"));
    };
    let entries = match items.first() {
        Some(e @ Value::Array(_)) => wire::parse_entries(e.clone())?,
        _ => {
            return Err(super::reply::protocol(
                "limit.lua",
                "expected entries first",
            ));
        }
    };
    let rest = Value::Array(items.iter().skip(1).cloned().collect());
    let mut r = Reply::new(&rest, "limit.lua", 3)?;
    let wait = r.count()?;
    let last_delivered = r.string()?;
    let limited = r.int()? == 1;
    Ok(Limited {
        limited,
        entries,
        wait: Duration::from_millis(wait),
        last_delivered,
    })
}
