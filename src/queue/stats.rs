//! How many jobs are where ([`Counts`]) and what happened lately ([`Recent`], from the events stream).

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};

use super::{Queue, text_fields};
use crate::error::Result;
use crate::identity::now_ms;
use crate::wire;

/// Jobs in each place of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Counts {
    /// On the ready stream, not delivered.
    pub waiting: u64,
    /// Delivered, not finished.
    pub active: u64,
    /// Delayed or waiting for a retry.
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
    /// Parked (paused) jobs.
    pub parked: u64,
    /// When the oldest waiting job was added to the ready stream (ms since the Unix epoch, from its entry id).
    pub oldest_waiting_ms: Option<u64>,
}

/// What happened on a queue over a recent window, from its events stream (SPEC.md, "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Recent {
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed and were scheduled for a retry.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Leases that expired (jobs taken over from a stalled worker).
    pub stalled: u64,
    /// Whether the events stream reaches back over the whole window (if not, the counts cover less).
    pub complete: bool,
}

impl Counts {
    /// Two partitions' counts as one queue's.
    pub(super) fn plus(self, o: Counts) -> Counts {
        Counts {
            waiting: self.waiting + o.waiting,
            active: self.active + o.active,
            delayed: self.delayed + o.delayed,
            dead: self.dead + o.dead,
            parked: self.parked + o.parked,
            oldest_waiting_ms: match (self.oldest_waiting_ms, o.oldest_waiting_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

impl Recent {
    /// Two partitions' counts as one queue's (complete only if both are).
    pub(super) fn plus(self, o: Recent) -> Recent {
        Recent {
            completed: self.completed + o.completed,
            retried: self.retried + o.retried,
            dead: self.dead + o.dead,
            stalled: self.stalled + o.stalled,
            complete: self.complete && o.complete,
        }
    }
}

/// When Redis cannot tell a group's lag, waiting entries up to this many are counted one by one.
const EXACT_WAITING_UP_TO: u64 = 1_000;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// How many jobs are waiting, active, delayed and dead (waiting and active summed over the priority levels).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn counts(&self) -> Result<Counts> {
        if let Some(parts) = self.partition_queues().await? {
            let all =
                futures::future::try_join_all(parts.iter().map(|q| Box::pin(q.counts()))).await?;
            return Ok(all.into_iter().fold(Counts::default(), Counts::plus));
        }
        let mut conn = self.client.conn().await?;
        type Sizes = (u64, u64, u64, u64, Option<String>, Vec<(String, u64)>, u64);
        let (ready_len, delayed, dead, parked, levels, held, held_count): Sizes = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.ready)
            .cmd("ZCARD")
            .arg(&self.keys.delayed)
            .cmd("XLEN")
            .arg(&self.keys.dead)
            .cmd("ZCARD")
            .arg(&self.keys.parked)
            .cmd("HGET")
            .arg(&self.keys.priorities)
            .arg("levels")
            .cmd("ZRANGE")
            .arg(&self.keys.held)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .cmd("ZCARD")
            .arg(&self.keys.held)
            .query_async(&mut conn)
            .await?;
        let levels = levels
            .and_then(|l| l.parse::<u8>().ok())
            .unwrap_or(1)
            .clamp(1, crate::priority::MAX_LEVELS);
        let mut counts = Counts {
            waiting: 0,
            active: 0,
            delayed,
            dead,
            parked,
            oldest_waiting_ms: None,
        };
        for level in 0..levels {
            let known_len = (level == 0).then_some(ready_len);
            let (waiting, active, oldest) = self.level_counts(&mut conn, level, known_len).await?;
            counts.waiting += waiting;
            counts.active += active;
            counts.oldest_waiting_ms = match (counts.oldest_waiting_ms, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // Jobs held back by per-key limits wait too (SPEC §6h); the oldest's score is its entry's time.
        counts.waiting += held_count;
        if let Some((_, ms)) = held.first() {
            counts.oldest_waiting_ms = Some(counts.oldest_waiting_ms.map_or(*ms, |a| a.min(*ms)));
        }
        Ok(counts)
    }

    /// Waiting and active jobs of one priority level, and when its oldest waiting job was added (`len`: its
    /// stream's length, when already read).
    pub(crate) async fn level_counts(
        &self,
        conn: &mut crate::client::Connection,
        level: u8,
        len: Option<u64>,
    ) -> Result<(u64, u64, Option<u64>)> {
        let stream = self.keys.level(level);
        let len: u64 = match len {
            Some(n) => n,
            None => redis::cmd("XLEN").arg(stream).query_async(conn).await?,
        };
        // No stream or no group yet: every entry is waiting.
        let Some(group) = self.group_info(conn, stream).await else {
            let oldest = self.first_entry_ms(conn, stream, "-").await?;
            return Ok((len, 0, oldest));
        };
        let int = |k: &str| match group.get(k) {
            Some(redis::Value::Int(n)) => Some((*n).max(0) as u64),
            _ => None,
        };
        let active = int("pending").unwrap_or(0);
        let last = group
            .get("last-delivered-id")
            .and_then(wire::bytes)
            .map(|b| format!("({}", String::from_utf8_lossy(b)))
            .unwrap_or_else(|| "-".to_owned());
        // `lag` (entries not yet delivered) is exact. Redis reports nil while an entry deleted before delivery
        // (a cancelled or deleted waiting job) lies ahead of the group: then count what is ahead, up to a bound,
        // and past it use the stream's length less what is pending (an upper bound: finished entries not yet
        // trimmed, SPEC.md ack.lua, count too).
        let waiting = match int("lag") {
            Some(lag) => lag,
            None => {
                let ahead: Vec<redis::Value> = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&last)
                    .arg("+")
                    .arg("COUNT")
                    .arg(EXACT_WAITING_UP_TO + 1)
                    .query_async(conn)
                    .await?;
                if ahead.len() as u64 <= EXACT_WAITING_UP_TO {
                    ahead.len() as u64
                } else {
                    len.saturating_sub(active)
                }
            }
        };
        let oldest = if waiting > 0 {
            self.first_entry_ms(conn, stream, &last).await?
        } else {
            None
        };
        Ok((waiting, active, oldest))
    }

    /// The time part of the first entry of `stream` from `start` on.
    async fn first_entry_ms(
        &self,
        conn: &mut crate::client::Connection,
        stream: &str,
        start: &str,
    ) -> Result<Option<u64>> {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(wire::parse_entries(v)?
            .first()
            .and_then(|e| e.id.split('-').next()?.parse().ok()))
    }

    /// Counts of completions, retries, dead letters and stalls over the last `window`, from the events stream
    /// (which keeps about `events_maxlen` entries; see [`Recent::complete`]).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn recent(&self, window: std::time::Duration) -> Result<Recent> {
        if let Some(parts) = self.partition_queues().await? {
            let all =
                futures::future::try_join_all(parts.iter().map(|q| Box::pin(q.recent(window))))
                    .await?;
            return Ok(all.into_iter().reduce(Recent::plus).unwrap_or_default());
        }
        const PAGE: usize = 1000;
        let since = now_ms().saturating_sub(window.as_millis() as u64);
        let mut conn = self.client.conn().await?;
        // Complete if nothing was ever trimmed (entries-added = length), or the oldest kept entry is older than
        // the window. No stream yet: nothing happened.
        let info: redis::RedisResult<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.keys.events)
            .query_async(&mut conn)
            .await;
        let reaches_back = match info {
            Err(_) => true,
            Ok(info) => {
                let num = |k: &str| match info.get(k) {
                    Some(redis::Value::Int(n)) => Some(*n),
                    _ => None,
                };
                let first_ms = match info.get("first-entry") {
                    Some(redis::Value::Array(e)) => {
                        e.first().and_then(wire::bytes).and_then(|id| {
                            std::str::from_utf8(id)
                                .ok()?
                                .split('-')
                                .next()?
                                .parse()
                                .ok()
                        })
                    }
                    _ => None,
                };
                num("entries-added") == num("length") || first_ms.is_none_or(|ms: u64| ms <= since)
            }
        };
        let mut out = Recent {
            complete: reaches_back,
            ..Recent::default()
        };
        let mut start = format!("{since}-0");
        loop {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(&self.keys.events)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            let page = wire::parse_entries(v)?;
            for e in &page {
                let f = text_fields(e);
                match f.get("event").map(String::as_str) {
                    Some("completed") => {
                        out.completed += f.get("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                    }
                    Some("retrying") => out.retried += 1,
                    Some("dead") => out.dead += 1,
                    Some("stalled") => out.stalled += 1,
                    _ => {}
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => start = format!("({}", last.id),
                _ => return Ok(out),
            }
        }
    }
}
