//! Jobs by state, a page at a time: what an operator scans first (asynq's `task ls`, bull-board's tabs,
//! Sidekiq's Scheduled / Retries / Dead). Each page is a few bounded reads; none walks a whole queue.

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use super::jobs::JobState;
use crate::error::{Error, Result};
use crate::keys::GROUP;
use crate::wire::{self, RawEntry};

/// Entries looked at per page at most, as a multiple of the page size, when a listing filters (delayed
/// against failed, completed events against others): a page may come back short, with a cursor to go on.
const SCAN_FACTOR: usize = 10;

/// One job of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobSummary {
    /// Job id.
    pub id: String,
    /// The state it was listed under.
    pub state: JobState,
    /// Attempts counted so far, as [`crate::JobInfo::attempts`]; `None` for a completed job that kept no record.
    pub attempts: Option<u64>,
    /// The time that matters in this state, ms since the Unix epoch: waiting: enqueued (or put back on the
    /// ready stream); active: its handler started (from its worker's registry record; `None` if not listed
    /// there yet); delayed and failed: due; parked: parked; dead: died; completed: finished.
    pub at_ms: Option<u64>,
    /// For an active job, the worker running it.
    pub owner: Option<String>,
    /// Failed: the last error; dead: its reason and error.
    pub error: Option<String>,
}

/// One page of [`Queue::jobs`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JobPage {
    /// The jobs, in the order of their state (oldest first; completed: newest first).
    pub jobs: Vec<JobSummary>,
    /// Pass it as `after` for the next page; `None` at the end.
    pub next: Option<String>,
}

fn text(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    wire::field(fields, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

fn number(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> u64 {
    text(fields, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The cursor prefix of a page of held jobs (a position in the held set).
const HELD_CURSOR: &str = "held:";

fn bad_cursor(after: &str) -> Error {
    Error::InvalidOption {
        option: "after",
        reason: if after.is_empty() {
            "empty cursor"
        } else {
            "not a cursor this listing returned"
        },
    }
}

/// A page of a partitioned queue's jobs in `state` (SPEC §2a): partition after partition, each in its own order.
/// A cursor is `<partition>/<that partition's cursor>` (empty after the `/`: the partition's start).
async fn list_partitions<T: Serialize + DeserializeOwned>(
    parts: &[Queue<T>],
    state: JobState,
    after: Option<&str>,
    limit: usize,
) -> Result<JobPage> {
    let (mut at, mut inner) = match after {
        None => (0, None),
        Some(a) => {
            let (p, c) = a.split_once('/').ok_or_else(|| bad_cursor(a))?;
            let p: usize = p.parse().map_err(|_| bad_cursor(a))?;
            if p >= parts.len() {
                return Err(bad_cursor(a));
            }
            (p, (!c.is_empty()).then(|| c.to_owned()))
        }
    };
    let mut jobs = Vec::new();
    while at < parts.len() && jobs.len() < limit {
        let page = Box::pin(parts[at].jobs(state, inner.as_deref(), limit - jobs.len())).await?;
        jobs.extend(page.jobs);
        inner = page.next;
        if inner.is_none() {
            at += 1;
        }
    }
    let next = (at < parts.len()).then(|| format!("{at}/{}", inner.unwrap_or_default()));
    Ok(JobPage { jobs, next })
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Up to `limit` jobs in `state` (waiting, active, delayed, failed, parked, dead or completed), starting
    /// after the cursor `after` of the previous page. Completed jobs come from the events stream, so they are
    /// listed as long as their `completed` event is kept (the events stream's length).
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// let mut after = None;
    /// loop {
    ///     let page = queue.jobs(rill::JobState::Failed, after.as_deref(), 100).await?;
    ///     for job in &page.jobs {
    ///         println!("{} attempts={:?} error={:?}", job.id, job.attempts, job.error);
    ///     }
    ///     match page.next {
    ///         Some(cursor) => after = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for another state or a cursor this listing did not return; Redis errors.
    pub async fn jobs(
        &self,
        state: JobState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let limit = limit.max(1);
        if let Some(parts) = self.partition_queues().await? {
            return list_partitions(&parts, state, after, limit).await;
        }
        match state {
            JobState::Waiting | JobState::Active => self.list_levels(state, after, limit).await,
            JobState::Delayed | JobState::Failed | JobState::Parked => {
                self.list_scheduled(state, after, limit).await
            }
            JobState::Dead => self.list_dead(after, limit).await,
            JobState::Completed => self.list_completed(after, limit).await,
            _ => Err(Error::InvalidOption {
                option: "state",
                reason: "listable states: waiting, active, delayed, failed, parked, dead, completed",
            }),
        }
    }

    /// Waiting or active jobs, priority level by level; a cursor is an entry id, suffixed `@<level>` above
    /// level 0.
    async fn list_levels(
        &self,
        state: JobState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        if let Some(offset) = after.and_then(|a| a.strip_prefix(HELD_CURSOR)) {
            let offset = offset
                .parse()
                .map_err(|_| bad_cursor(after.unwrap_or("")))?;
            return self.list_held(offset, limit).await;
        }
        let levels = self.priorities().await?.levels();
        let (mut level, mut cursor) = match after {
            Some(a) => {
                let (level, id) = crate::priority::split_address(a);
                (level, Some(id.to_owned()))
            }
            None => (0, None),
        };
        let mut page = JobPage {
            jobs: Vec::new(),
            next: None,
        };
        while level < levels {
            let want = limit - page.jobs.len();
            let p = if state == JobState::Waiting {
                self.list_waiting(level, cursor.as_deref(), want).await?
            } else {
                self.list_active(level, cursor.as_deref(), want).await?
            };
            page.jobs.extend(p.jobs);
            if let Some(n) = p.next {
                page.next = Some(crate::priority::address(level, &n).into_owned());
                return Ok(page);
            }
            level += 1;
            cursor = None;
        }
        if state == JobState::Waiting && page.jobs.len() < limit {
            let held = self.list_held(0, limit - page.jobs.len()).await?;
            page.jobs.extend(held.jobs);
            page.next = held.next;
        }
        Ok(page)
    }

    /// Waiting jobs held back by per-key limits (SPEC §6h), oldest first, from position `offset` of the held set;
    /// the cursor is `held:<position>`.
    async fn list_held(&self, offset: usize, limit: usize) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let held: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.keys.held)
            .arg(offset)
            .arg(offset + limit.max(1) - 1)
            .query_async(&mut conn)
            .await?;
        let next = (held.len() == limit).then(|| format!("{HELD_CURSOR}{}", offset + limit));
        let mut jobs = Vec::with_capacity(held.len());
        for address in held {
            let (level, eid) = crate::priority::split_address(&address);
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(self.keys.level(level))
                .arg(eid)
                .arg(eid)
                .query_async(&mut conn)
                .await?;
            let Some(fields) = wire::parse_entries(v)?
                .into_iter()
                .next()
                .and_then(|e| e.fields)
            else {
                continue; // deleted since it was held: no longer a job
            };
            jobs.push(JobSummary {
                id: text(&fields, "id").unwrap_or_else(|| address.clone()),
                state: JobState::Waiting,
                attempts: Some(number(&fields, "attempts")),
                at_ms: wire::entry_id_ms(eid),
                owner: None,
                error: text(&fields, "last_error"),
            });
        }
        Ok(JobPage { jobs, next })
    }

    async fn list_waiting(&self, level: u8, after: Option<&str>, limit: usize) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let stream = self.keys.level(level);
        // Waiting = after the group's last-delivered id (missing group: nothing delivered yet).
        let delivered = self
            .group_info(&mut conn, stream)
            .await
            .and_then(|g| {
                g.get("last-delivered-id")
                    .and_then(wire::bytes)
                    .map(<[u8]>::to_vec)
            })
            .and_then(|id| String::from_utf8(id).ok())
            .unwrap_or_else(|| "0-0".into());
        let from = match after {
            Some(a) if wire::entry_id_ms(a).is_none() => return Err(bad_cursor(a)),
            Some(a) if later(a, &delivered) => a.to_owned(),
            _ => delivered,
        };
        let entries = self.entries_after(stream, Some(&from), limit).await?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        let jobs = entries
            .into_iter()
            .filter_map(|e| {
                let fields = e.fields?;
                Some(JobSummary {
                    id: text(&fields, "id")
                        .unwrap_or_else(|| crate::priority::address(level, &e.id).into_owned()),
                    state: JobState::Waiting,
                    attempts: Some(number(&fields, "attempts")),
                    at_ms: wire::entry_id_ms(&e.id),
                    owner: None,
                    error: text(&fields, "last_error"),
                })
            })
            .collect();
        Ok(JobPage { jobs, next })
    }

    async fn list_active(&self, level: u8, after: Option<&str>, limit: usize) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let stream = self.keys.level(level);
        let start = match after {
            Some(a) if wire::entry_id_ms(a).is_none() => return Err(bad_cursor(a)),
            Some(a) => format!("({a}"),
            None => "-".into(),
        };
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg(&start)
            .arg("+")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .or_else(|e| {
                if e.code() == Some("NOGROUP") {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?;
        let next = (pending.len() == limit)
            .then(|| pending.last().map(|p| p.0.clone()))
            .flatten();
        let mut pipe = redis::pipe();
        for (id, ..) in &pending {
            pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
        }
        let owners: Vec<&str> = {
            let mut o: Vec<&str> = pending.iter().map(|p| p.1.as_str()).collect();
            o.sort_unstable();
            o.dedup();
            o
        };
        for owner in &owners {
            pipe.cmd("HGET").arg(self.keys.worker(owner)).arg("running");
        }
        let replies: Vec<redis::Value> = if pending.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let (entries, running) = replies.split_at(pending.len());
        let mut started: HashMap<String, u64> = HashMap::new();
        for field in running {
            if let redis::Value::BulkString(b) = field {
                for r in crate::registry::parse_running(&String::from_utf8_lossy(b)) {
                    started.insert(r.job_id, r.started_ms);
                }
            }
        }
        let mut jobs = Vec::with_capacity(pending.len());
        for ((entry_id, owner, _idle, deliveries), v) in pending.iter().zip(entries) {
            let Some(RawEntry {
                fields: Some(fields),
                ..
            }) = wire::parse_entries(v.clone())?.pop()
            else {
                continue; // acked and deleted since XPENDING
            };
            let id = text(&fields, "id")
                .unwrap_or_else(|| crate::priority::address(level, entry_id).into_owned());
            jobs.push(JobSummary {
                attempts: Some(number(&fields, "attempts") + deliveries),
                at_ms: started.get(id.as_str()).copied(),
                id,
                state: JobState::Active,
                owner: Some(owner.clone()),
                error: None,
            });
        }
        Ok(JobPage { jobs, next })
    }

    /// Delayed and failed jobs share the delayed set (told apart by their attempts), parked ones have their own;
    /// all keep their bodies on the scheduled stream. The cursor is an offset into the set.
    async fn list_scheduled(
        &self,
        state: JobState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let set = if state == JobState::Parked {
            &self.keys.parked
        } else {
            &self.keys.delayed
        };
        let mut offset: usize = match after {
            Some(a) => a.parse().map_err(|_| bad_cursor(a))?,
            None => 0,
        };
        let mut jobs = Vec::new();
        let budget = offset + limit * SCAN_FACTOR;
        loop {
            let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(set)
                .arg(offset)
                .arg(offset + limit - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            if members.is_empty() {
                return Ok(JobPage { jobs, next: None });
            }
            let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
            let locations: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&self.keys.index)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            let mut pipe = redis::pipe();
            for loc in &locations {
                let loc = loc.as_deref().unwrap_or("0-0");
                pipe.cmd("XRANGE")
                    .arg(&self.keys.scheduled)
                    .arg(loc)
                    .arg(loc);
            }
            let bodies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            for (i, ((id, score), body)) in members.iter().zip(bodies).enumerate() {
                let fields = wire::parse_entries(body)?
                    .pop()
                    .and_then(|e| e.fields)
                    .unwrap_or_default();
                let attempts = number(&fields, "attempts");
                let is = match state {
                    JobState::Parked => JobState::Parked,
                    _ if attempts > 0 => JobState::Failed,
                    _ => JobState::Delayed,
                };
                if is != state {
                    continue;
                }
                jobs.push(JobSummary {
                    id: id.clone(),
                    state,
                    attempts: Some(attempts),
                    at_ms: Some(*score as u64),
                    owner: None,
                    error: text(&fields, "last_error"),
                });
                if jobs.len() == limit {
                    return Ok(JobPage {
                        jobs,
                        next: Some((offset + i + 1).to_string()),
                    });
                }
            }
            offset += members.len();
            if members.len() < limit {
                return Ok(JobPage { jobs, next: None });
            }
            if offset >= budget {
                return Ok(JobPage {
                    jobs,
                    next: Some(offset.to_string()),
                });
            }
        }
    }

    async fn list_dead(&self, after: Option<&str>, limit: usize) -> Result<JobPage> {
        if let Some(a) = after.filter(|a| wire::entry_id_ms(a).is_none()) {
            return Err(bad_cursor(a));
        }
        let dead = self.dead_letters(after, limit).await?;
        let next = (dead.len() == limit)
            .then(|| dead.last().map(|d| d.entry_id.clone()))
            .flatten();
        let jobs = dead
            .into_iter()
            .map(|d| JobSummary {
                id: d.job_id,
                state: JobState::Dead,
                attempts: Some(d.attempts),
                at_ms: Some(d.dead_ms),
                owner: None,
                error: Some(if d.error.is_empty() {
                    d.reason
                } else {
                    format!("{}: {}", d.reason, d.error)
                }),
            })
            .collect();
        Ok(JobPage { jobs, next })
    }

    /// Newest first, from the `completed` events (one event per ack call, naming its jobs). The cursor is
    /// `<event id>/<jobs of that event already listed>`.
    async fn list_completed(&self, after: Option<&str>, limit: usize) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let (mut end, skip) = match after {
            None => ("+".to_owned(), 0usize),
            Some(a) => {
                let (id, n) = a.split_once('/').ok_or_else(|| bad_cursor(a))?;
                if wire::entry_id_ms(id).is_none() {
                    return Err(bad_cursor(a));
                }
                (id.to_owned(), n.parse().map_err(|_| bad_cursor(a))?)
            }
        };
        // The jobs of the cursor's event already listed (only if that event is still there: trimmed, it is gone).
        let cursor = end.clone();
        let mut found: Vec<(String, u64)> = Vec::new();
        let mut scanned = 0;
        let mut first = true;
        loop {
            // The cursor's own event is read again (its remaining jobs); later pages start below it.
            let to = if first || end == "+" {
                end.clone()
            } else {
                format!("({end}")
            };
            first = false;
            let v: redis::Value = redis::cmd("XREVRANGE")
                .arg(&self.keys.events)
                .arg(&to)
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut conn)
                .await?;
            let events = wire::parse_entries(v)?;
            if events.is_empty() {
                break;
            }
            scanned += events.len();
            for e in &events {
                end = e.id.clone();
                let fields = e.fields.clone().unwrap_or_default();
                if text(&fields, "event").as_deref() != Some("completed") {
                    continue;
                }
                let ms = number(&fields, "ms");
                let ids = text(&fields, "ids").unwrap_or_default();
                let ids: Vec<&str> = ids.split_ascii_whitespace().collect();
                let listed = if e.id == cursor { skip } else { 0 };
                for (n, id) in ids.iter().enumerate().skip(listed) {
                    found.push(((*id).to_owned(), ms));
                    if found.len() == limit {
                        let next = format!("{}/{}", e.id, n + 1);
                        return self.completed_page(found, Some(next)).await;
                    }
                }
            }
            if events.len() < limit {
                break;
            }
            if scanned >= limit * SCAN_FACTOR {
                let next = format!("{end}/{}", usize::MAX);
                return self.completed_page(found, Some(next)).await;
            }
        }
        self.completed_page(found, None).await
    }

    /// Completed jobs with the attempt that succeeded, where a record kept it.
    async fn completed_page(
        &self,
        found: Vec<(String, u64)>,
        next: Option<String>,
    ) -> Result<JobPage> {
        let mut conn = self.client.conn().await?;
        let mut pipe = redis::pipe();
        for (id, _) in &found {
            pipe.cmd("HGET").arg(self.keys.job(id)).arg("attempt");
        }
        let attempts: Vec<Option<u64>> = if found.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let jobs = found
            .into_iter()
            .zip(attempts)
            .map(|((id, ms), attempts)| JobSummary {
                id,
                state: JobState::Completed,
                attempts,
                at_ms: Some(ms),
                owner: None,
                error: None,
            })
            .collect();
        Ok(JobPage { jobs, next })
    }
}

/// Whether entry id `a` comes after `b` (both `ms-seq`; an unreadable id counts as `0-0`).
fn later(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}
