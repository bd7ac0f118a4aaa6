//! Lifecycle events ([`Event`]): read a range, or follow new ones with a blocking read ([`EventFeed`]).

use serde::{Serialize, de::DeserializeOwned};

use super::{Queue, text_fields};
use crate::error::Result;
use crate::wire::{self, RawEntry};

/// Approximate length the events stream is trimmed to, unless a worker says otherwise
/// ([`crate::WorkerConfig::events_maxlen`]); operator calls that write events use it.
pub const DEFAULT_EVENTS_MAXLEN: u64 = 10_000;

/// One lifecycle event (SPEC.md, "Events").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Events stream entry id (use it to read on from here).
    pub entry_id: String,
    /// `completed`, `retrying`, `dead`, `stalled` or `released`.
    pub kind: String,
    /// Job id.
    pub job_id: String,
    /// Attempt number it refers to.
    pub attempt: u64,
    /// Every field, including the ones above.
    pub fields: std::collections::HashMap<String, String>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Up to `count` lifecycle events after entry id `after` (`None` = the oldest kept), without a consumer
    /// group. To process events at least once across restarts, read the events stream with your own consumer
    /// group instead (SPEC.md, "Events").
    ///
    /// # Errors
    /// Redis errors.
    pub async fn events(&self, after: Option<&str>, count: usize) -> Result<Vec<Event>> {
        if let Some(parts) = self.partition_queues().await? {
            let pages = futures::future::try_join_all(
                parts.iter().map(|q| Box::pin(q.events(after, count))),
            )
            .await?;
            return Ok(Self::merge_pages(pages, count, |x| &x.entry_id));
        }
        Ok(to_events(
            self.entries_after(&self.keys.events, after, count).await?,
        ))
    }

    /// A reader that waits for new lifecycle events (for `tail -f`-style views), starting after entry id
    /// `after` (`None` = only events added from now on). It owns a connection for its blocking reads.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn follow_events(&self, after: Option<&str>) -> Result<EventFeed> {
        self.refuse_partitioned("following events").await?;
        let last = match after {
            Some(a) => a.to_owned(),
            // The newest id now, not `$`: `$` on every call would miss events added between two calls.
            None => {
                let mut conn = self.client.conn().await?;
                newest_entry_id(&mut conn, &self.keys.events).await?
            }
        };
        Ok(EventFeed {
            conn: self.client.blocking_conn(EventFeed::BLOCK).await?,
            key: self.keys.events.clone(),
            last,
        })
    }
}

/// Waits for lifecycle events as they are added; see [`Queue::follow_events`].
pub struct EventFeed {
    conn: crate::client::BlockingConn,
    key: String,
    last: String,
}

impl EventFeed {
    /// Longest wait of one [`EventFeed::next`] call.
    pub const BLOCK: std::time::Duration = std::time::Duration::from_secs(1);

    /// The next events (up to `count`), waiting up to [`EventFeed::BLOCK`]; empty if none came.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn next(&mut self, count: usize) -> Result<Vec<Event>> {
        let v: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(Self::BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last)
            .query_async(&mut self.conn)
            .await?;
        let events = to_events(wire::parse_read_reply(v)?);
        if let Some(e) = events.last() {
            self.last = e.entry_id.clone();
        }
        Ok(events)
    }
}

/// The id of the newest entry of a stream (`0-0` if it is empty or missing): where a reader that wants only
/// what comes next starts.
pub(crate) async fn newest_entry_id<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
) -> Result<String> {
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(wire::parse_entries(v)?
        .pop()
        .map_or_else(|| "0-0".to_owned(), |e| e.id))
}

fn to_events(raw: Vec<RawEntry>) -> Vec<Event> {
    raw.into_iter()
        .map(|raw| {
            let fields = text_fields(&raw);
            Event {
                entry_id: raw.id,
                kind: fields.get("event").cloned().unwrap_or_default(),
                job_id: fields.get("id").cloned().unwrap_or_default(),
                attempt: fields
                    .get("attempt")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                fields,
            }
        })
        .collect()
}
