//! A typed handle on one queue ([`Queue`]), by subject: producing jobs (`enqueue`), where a job is (`jobs`),
//! how many are where (`stats`), dead letters (`dead`), lifecycle events (`events`), jobs by state a page at a
//! time (`list`), priority levels (`priorities`), per-key limits (`keyed`) and an operator's changes (`admin`:
//! promote, delete, drain, remove, the queue's rate and concurrency limits). Signals
//! ([`crate::signals`]), the worker registry ([`crate::registry`]) and checkpoints ([`crate::checkpoint`]) add
//! their own `Queue` methods beside their concepts.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde::{Serialize, de::DeserializeOwned};

use crate::client::Client;
use crate::error::Result;
use crate::keys::QueueKeys;
use crate::wire::{self, RawEntry};

mod admin;
mod dead;
mod enqueue;
mod events;
mod jobs;
mod keyed;
mod list;
mod partitioned;
mod priorities;
mod stats;
mod wait;

pub use admin::{Deleted, Drained};
pub use dead::{DeadLetter, Requeue};
pub use enqueue::{DEFAULT_DEDUP_TTL, Enqueue, EnqueueOutcome};
pub(crate) use events::newest_entry_id;
pub use events::{DEFAULT_EVENTS_MAXLEN, Event, EventFeed};
pub use jobs::{JobInfo, JobState};
pub use keyed::KeyLimit;
pub use list::{JobPage, JobSummary};
pub(crate) use priorities::read_priorities;
pub use stats::{Counts, Recent};
pub use wait::JobOutcome;

/// Typed handle on one queue: enqueue jobs, look them up.
pub struct Queue<T> {
    pub(crate) client: Client,
    pub(crate) keys: QueueKeys,
    /// This handle is one partition's of a partitioned queue (SPEC §2a): calls that span partitions end here.
    one_partition: bool,
    /// The partition the next job without an id goes to.
    turn: Arc<AtomicUsize>,
    _job: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            client: self.client.clone(),
            keys: self.keys.clone(),
            one_partition: self.one_partition,
            turn: self.turn.clone(),
            _job: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.keys.queue)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(crate) fn new(client: Client, keys: QueueKeys) -> Self {
        Queue {
            client,
            keys,
            one_partition: false,
            turn: Arc::new(AtomicUsize::new(rand::random::<u16>().into())),
            _job: PhantomData,
        }
    }

    /// Queue name.
    pub fn name(&self) -> &str {
        &self.keys.queue
    }

    /// This queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// Up to `count` entries of `stream`, oldest first, after entry id `after` (`None` = from the start): one
    /// page of a listing.
    async fn entries_after(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<RawEntry>> {
        let mut conn = self.client.conn().await?;
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        wire::parse_entries(v)
    }

    /// The workers' consumer group as `XINFO GROUPS` describes it (`lag`, `pending`, `last-delivered-id`, ...);
    /// `None` without the stream or the group (or when the reply cannot be read: callers then assume nothing
    /// was delivered).
    async fn group_info(
        &self,
        conn: &mut crate::client::Connection,
        stream: &str,
    ) -> Option<HashMap<String, redis::Value>> {
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(conn)
            .await
            .ok()?;
        groups.into_iter().find(|g| {
            g.get("name")
                .and_then(wire::bytes)
                .is_some_and(|n| n == crate::keys::GROUP.as_bytes())
        })
    }

    /// `job` encoded, within the client's payload limit.
    fn payload(&self, job: &T) -> Result<Vec<u8>> {
        wire::encode_within(job, self.client.config().max_payload_bytes)
    }
}

impl Client {
    /// A typed handle on queue `name`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] if the name is not allowed (checked before any I/O).
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Queue<T>> {
        Ok(Queue::new(self.clone(), self.keys(name)?))
    }
}

/// An entry's fields as text (events, dead letters).
fn text_fields(raw: &RawEntry) -> HashMap<String, String> {
    raw.fields
        .iter()
        .flatten()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}
