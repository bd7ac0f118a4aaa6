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
    /// group (on a partitioned queue a few more when partitions share the page's last entry id, SPEC §2a). To
    /// process events at least once across restarts, read the events stream with your own consumer group instead
    /// (SPEC.md, "Events").
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
        // A partitioned queue's events are each partition's (SPEC §2a): the feed reads them all.
        let keys: Vec<String> = match self.partition_queues().await? {
            Some(parts) => parts.iter().map(|q| q.keys.events.clone()).collect(),
            None => vec![self.keys.events.clone()],
        };
        let mut streams = Vec::with_capacity(keys.len());
        for key in keys {
            let last = match after {
                Some(a) => a.to_owned(),
                // The newest id now, not `$`: `$` on every call would miss events added between two calls.
                None => {
                    let mut conn = self.client.conn().await?;
                    newest_entry_id(&mut conn, &key).await?
                }
            };
            streams.push((key, last));
        }
        Ok(EventFeed {
            conn: self.client.blocking_conn(EventFeed::BLOCK).await?,
            streams,
            turn: 0,
        })
    }
}

/// Waits for lifecycle events as they are added; see [`Queue::follow_events`].
pub struct EventFeed {
    conn: crate::client::BlockingConn,
    /// Each events stream followed (one, or one per partition) and the last id read from it.
    streams: Vec<(String, String)>,
    /// On a partitioned queue, the partition whose stream the next wait blocks on.
    turn: usize,
}

impl EventFeed {
    /// Longest wait of one [`EventFeed::next`] call.
    pub const BLOCK: std::time::Duration = std::time::Duration::from_secs(1);

    /// The next events (up to `count` per events stream), waiting up to [`EventFeed::BLOCK`]; empty if none came.
    /// On a partitioned queue the partitions' streams are read in turn without blocking, and when none has
    /// anything the wait blocks on one of them (in turn) for its share of the block, so a new event anywhere is
    /// seen within about a block (a blocking read cannot span a cluster's slots).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn next(&mut self, count: usize) -> Result<Vec<Event>> {
        let n = self.streams.len();
        if n == 1 {
            return self.read(0, count, Some(Self::BLOCK)).await;
        }
        let mut events = Vec::new();
        for i in 0..n {
            events.extend(self.read(i, count, None).await?);
        }
        if events.is_empty() {
            let share = (Self::BLOCK / n as u32).max(std::time::Duration::from_millis(50));
            self.turn = (self.turn + 1) % n;
            events = self.read(self.turn, count, Some(share)).await?;
        }
        events.sort_by(|a, b| wire::entry_id_order(&a.entry_id, &b.entry_id));
        Ok(events)
    }

    /// Up to `count` events of stream `i` after the last read, blocking up to `block` (`None`: not at all).
    async fn read(
        &mut self,
        i: usize,
        count: usize,
        block: Option<std::time::Duration>,
    ) -> Result<Vec<Event>> {
        let (key, last) = &mut self.streams[i];
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        let v: redis::Value = cmd
            .arg("STREAMS")
            .arg(&*key)
            .arg(&*last)
            .query_async(&mut self.conn)
            .await?;
        let events = to_events(wire::parse_read_reply(v)?);
        if let Some(e) = events.last() {
            *last = e.entry_id.clone();
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
