//! The message bus: typed topics on streams, for broadcasting domain events between processes in any language.
//! Every consumer group of a topic receives every message (fan-out); the members of one group share them
//! (load-balancing); a message is redelivered until acked (at least once); history can be replayed from an id
//! or a time; retention is bounded by length or age, per topic (SPEC.md, "Message bus").
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced { order: u64 }
//!
//! # async fn f() -> rill::Result<()> {
//! let client = rill::Client::new("redis://127.0.0.1:6379")?;
//! let orders = client.topic::<OrderPlaced>("orders")?;
//! // Each consumer group gets every message; its members share them.
//! let mut billing = orders.subscribe("billing", "billing-1", rill::bus::Start::New).await?;
//! orders.publish(&OrderPlaced { order: 42 }).await?;
//! for (id, message) in billing.next(10, Duration::from_secs(1)).await? {
//!     if let Ok(m) = message {
//!         println!("bill order {}", m.value.order);
//!     }
//!     billing.ack(&[id]).await?; // unacked messages are delivered again
//! }
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::identity::now_ms;
use crate::keys;
use crate::wire::{self, RawEntry};

/// How much history a topic keeps (applied, approximately, on every publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// About this many newest messages.
    MaxLen(u64),
    /// Messages younger than this.
    MaxAge(Duration),
}

/// Where a new consumer group, or a replay, starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Only messages published from now on.
    New,
    /// Every message still kept.
    Beginning,
    /// Messages after this id.
    AfterId(String),
    /// Messages published at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// A typed topic.
pub struct Topic<T> {
    client: Client,
    key: String,
    retention: Retention,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("key", &self.key)
            .field("retention", &self.retention)
            .finish()
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message<T> {
    /// Message id (its entry id; ids grow with time).
    pub id: String,
    /// The value.
    pub value: T,
    /// Publish time, ms since the Unix epoch.
    pub published_ms: u64,
}

fn decode_message<T: DeserializeOwned>(raw: RawEntry) -> Result<Message<T>> {
    let fields = raw.fields.unwrap_or_default();
    if wire::field(&fields, "v") != Some(wire::FORMAT_VERSION.as_bytes()) {
        return Err(Error::Decode(format!(
            "message {} has no `v` = 1 field",
            raw.id
        )));
    }
    let payload = wire::field(&fields, "payload")
        .ok_or_else(|| Error::Decode(format!("message {} has no payload", raw.id)))?;
    Ok(Message {
        value: wire::decode(payload)?,
        published_ms: wire::entry_id_ms(&raw.id).unwrap_or(0),
        id: raw.id,
    })
}

impl Client {
    /// A typed topic of the message bus (retention: about the newest 100,000 messages).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad topic name.
    pub fn topic<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Topic<T>> {
        Ok(Topic {
            client: self.clone(),
            key: keys::topic_key(&self.config().namespace, name)?,
            retention: Retention::MaxLen(100_000),
            _t: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Topic<T> {
    /// Sets the retention (every publisher of a topic should use the same).
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The topic's stream key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Publishes a message; returns its id.
    ///
    /// # Errors
    /// Encode, size or Redis errors.
    pub async fn publish(&self, value: &T) -> Result<String> {
        let payload = wire::encode_within(value, self.client.config().max_payload_bytes)?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.key);
        match self.retention {
            Retention::MaxLen(n) => cmd.arg("MAXLEN").arg("~").arg(n),
            Retention::MaxAge(age) => cmd.arg("MINID").arg("~").arg(format!(
                "{}-0",
                now_ms().saturating_sub(age.as_millis() as u64)
            )),
        };
        cmd.arg("*")
            .arg("v")
            .arg(wire::FORMAT_VERSION)
            .arg("payload")
            .arg(payload);
        let mut conn = self.client.conn().await?;
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Up to `count` kept messages from `start` (a replay without a consumer group).
    ///
    /// # Errors
    /// Redis or decode errors.
    pub async fn replay(&self, start: Start, count: usize) -> Result<Vec<Message<T>>> {
        let from = match start {
            Start::New => return Ok(Vec::new()),
            Start::Beginning => "-".to_owned(),
            Start::AfterId(id) => format!("({id}"),
            Start::Time(ms) => format!("{ms}-0"),
        };
        let mut conn = self.client.conn().await?;
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        wire::parse_entries(v)?
            .into_iter()
            .map(decode_message)
            .collect()
    }

    /// A member `consumer` of consumer group `group` (created at `start` if it does not exist yet).
    ///
    /// # Errors
    /// Redis errors, or [`Error::InvalidName`].
    pub async fn subscribe(
        &self,
        group: &str,
        consumer: &str,
        start: Start,
    ) -> Result<Subscriber<T>> {
        keys::validate_name(group)?;
        keys::validate_name(consumer)?;
        let at = match &start {
            Start::New => "$".to_owned(),
            Start::Beginning => "0".to_owned(),
            Start::AfterId(id) => id.clone(),
            Start::Time(ms) => format!("{}-0", ms.saturating_sub(1)),
        };
        let block = Duration::from_secs(1);
        let mut conn = self.client.blocking_conn(block).await?;
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(group)
            .arg(&at)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Subscriber {
            conn,
            key: self.key.clone(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            block,
            // Its own pending messages first (after a restart), then new ones.
            own_pending: true,
            claim_idle: Duration::from_secs(30),
            _t: PhantomData,
        })
    }
}

/// A member of a consumer group of a topic. It receives, first, the messages it was given but never acked
/// (after a restart), then its share of new ones, and takes over messages another member left unacked for
/// `claim_idle`.
pub struct Subscriber<T> {
    conn: crate::client::BlockingConn,
    key: String,
    group: String,
    consumer: String,
    block: Duration,
    own_pending: bool,
    claim_idle: Duration,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("key", &self.key)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl<T: DeserializeOwned> Subscriber<T> {
    /// How long a message may stay unacked by another member before this one takes it over (default 30 s).
    #[must_use]
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// Up to `count` messages, waiting up to `timeout` (at most 1 s a call) for new ones. A message that cannot
    /// be decoded as `T` is
    /// returned as an error entry, to be acked (or inspected) by the caller.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn next(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<(String, Result<Message<T>>)>> {
        let wrap = |raw: RawEntry| (raw.id.clone(), decode_message(raw));
        if self.own_pending {
            let v: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.key)
                .arg("0")
                .query_async(&mut self.conn)
                .await?;
            let mine: Vec<RawEntry> = wire::parse_read_reply(v)?
                .into_iter()
                .filter(|e| e.fields.is_some())
                .collect();
            if !mine.is_empty() {
                return Ok(mine.into_iter().map(wrap).collect());
            }
            self.own_pending = false;
        }
        let v: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await?;
        if let redis::Value::Array(parts) = v
            && let Some(entries) = parts.into_iter().nth(1)
        {
            let claimed: Vec<RawEntry> = wire::parse_entries(entries)?
                .into_iter()
                .filter(|e| e.fields.is_some())
                .collect();
            if !claimed.is_empty() {
                return Ok(claimed.into_iter().map(wrap).collect());
            }
        }
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(timeout.min(self.block).as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await?;
        Ok(wire::parse_read_reply(v)?.into_iter().map(wrap).collect())
    }

    /// Acknowledges messages: they will not be delivered to this group again.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn ack(&mut self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: u64 = redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(ids)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}
