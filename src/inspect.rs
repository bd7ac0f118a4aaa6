//! Looking at a queue: where a job is ([`JobState`], [`JobInfo`]), how many jobs are in each place
//! ([`Counts`]), the dead letters ([`DeadLetter`]) and the lifecycle events ([`Event`]).

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::keys::GROUP;
use crate::producer::Queue;
use crate::scripts;
use crate::wire::{self, RawEntry};

/// Where a job is in its lifecycle (SPEC.md, "Job states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// On the ready stream, not yet delivered.
    Waiting,
    /// Waiting for its first run time.
    Delayed,
    /// Delivered to a worker that holds its lease.
    Active,
    /// Finished; its record is within retention.
    Completed,
    /// An attempt failed; waiting for its retry.
    Failed,
    /// In the dead-letter stream.
    Dead,
    /// Cancelled by a signal (its record is within retention).
    Cancelled,
    /// Paused by a signal; waits, holding no worker, until resumed.
    Parked,
    /// Not found (never existed, or finished and its record expired).
    Unknown,
}

impl JobState {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "waiting" => JobState::Waiting,
            "delayed" => JobState::Delayed,
            "active" => JobState::Active,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            "parked" => JobState::Parked,
            "unknown" => JobState::Unknown,
            other => {
                return Err(Error::Protocol {
                    what: "state.lua",
                    detail: format!("unknown state {other:?}"),
                });
            }
        })
    }

    /// The SPEC.md name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Parked => "parked",
            JobState::Unknown => "unknown",
        }
    }
}

/// A job's state and record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts made (for `completed`: the attempt that succeeded).
    pub attempts: u64,
    /// The entry holding it (ready, scheduled or dead-letter stream), if any.
    pub entry_id: Option<String>,
    /// For `active`: the consumer running it and the delivery count.
    pub owner: Option<(String, u64)>,
    /// Raw CBOR progress, if reported.
    pub progress: Option<Vec<u8>>,
    /// Raw CBOR result, if completed with one.
    pub result: Option<Vec<u8>>,
    /// Completion time, ms since the Unix epoch.
    pub finished_ms: Option<u64>,
    /// Raw CBOR payload of the entry holding it (waiting, active, delayed, failed, parked or dead).
    pub payload: Option<Vec<u8>>,
    /// The last attempt's error (for a dead job: the error it died with).
    pub last_error: Option<String>,
}

impl JobInfo {
    /// The result decoded as `R`, if there is one.
    ///
    /// # Errors
    /// [`Error::Decode`].
    pub fn result<R: DeserializeOwned>(&self) -> Result<Option<R>> {
        self.result.as_deref().map(wire::decode).transpose()
    }

    /// The progress decoded as `P`, if reported.
    ///
    /// # Errors
    /// [`Error::Decode`].
    pub fn progress<P: DeserializeOwned>(&self) -> Result<Option<P>> {
        self.progress.as_deref().map(wire::decode).transpose()
    }
}

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

/// What [`Queue::retry_dead`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Requeue {
    /// Job ids put back on the ready stream.
    pub requeued: Vec<String>,
    /// Job ids not found among the dead letters.
    pub missing: Vec<String>,
    /// Job ids left dead because the job id is live again (re-enqueued since it died).
    pub live: Vec<String>,
}

impl Requeue {
    fn record(&mut self, code: scripts::Requeued, job_id: &str) {
        let list = match code {
            scripts::Requeued::Requeued => &mut self.requeued,
            scripts::Requeued::Missing => &mut self.missing,
            scripts::Requeued::Live => &mut self.live,
        };
        list.push(job_id.to_owned());
    }
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Dead-letter stream entry id.
    pub entry_id: String,
    /// Job id.
    pub job_id: String,
    /// `failed`, `exhausted`, `malformed` or `too_large`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u64,
    /// When it died, ms since the Unix epoch.
    pub dead_ms: u64,
    /// The job's original fields (payload and all), as they were.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

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
    pub fields: HashMap<String, String>,
}

/// One stored checkpoint of a job (SPEC.md, "Checkpoints").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// Version (grows with every write).
    pub version: u64,
    /// Raw CBOR state.
    pub state: Vec<u8>,
    /// Consumer (worker) that wrote it.
    pub written_by: String,
    /// Entry id and token of the delivery that wrote it.
    pub delivery: (String, u64),
    /// When, ms since the Unix epoch.
    pub written_ms: u64,
    /// Label, if one was given.
    pub label: Option<String>,
}

impl CheckpointInfo {
    /// The state decoded as `S`.
    ///
    /// # Errors
    /// [`Error::Decode`].
    pub fn state<S: DeserializeOwned>(&self) -> Result<S> {
        wire::decode(&self.state)
    }
}

/// Up to `count` checkpoints of a job, newest first.
pub(crate) async fn read_checkpoints(
    client: &crate::Client,
    keys: &crate::keys::QueueKeys,
    job_id: &str,
    count: usize,
) -> Result<Vec<CheckpointInfo>> {
    let mut conn = client.conn().await?;
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(keys.checkpoints(job_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?;
    let mut out = Vec::new();
    for raw in wire::parse_entries(v)? {
        let mut f: HashMap<Vec<u8>, Vec<u8>> = raw.fields.unwrap_or_default().into_iter().collect();
        let text = |f: &mut HashMap<Vec<u8>, Vec<u8>>, k: &str| {
            f.remove(k.as_bytes())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        };
        let num = |s: String| s.parse::<u64>().unwrap_or(0);
        let label = text(&mut f, "label");
        out.push(CheckpointInfo {
            version: num(text(&mut f, "version")),
            state: f.remove("state".as_bytes()).unwrap_or_default(),
            written_by: text(&mut f, "consumer"),
            delivery: (text(&mut f, "entry"), num(text(&mut f, "token"))),
            written_ms: num(text(&mut f, "ms")),
            label: (!label.is_empty()).then_some(label),
        });
    }
    Ok(out)
}

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

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Where job `id` is now (one atomic read).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn state(&self, id: &str) -> Result<JobState> {
        Ok(self.job(id).await?.state)
    }

    /// Job `id`'s state and record.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn job(&self, id: &str) -> Result<JobInfo> {
        let mut conn = self.client.conn().await?;
        let (state, entry, attempts, owner, deliveries) =
            scripts::state(&mut conn, &self.keys, id).await?;
        let state = JobState::parse(&state)?;
        let record: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut conn)
            .await?;
        let finished_ms = record
            .get("finished_ms")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        let stream = match state {
            JobState::Waiting | JobState::Active => Some(&self.keys.ready),
            JobState::Delayed | JobState::Failed | JobState::Parked => Some(&self.keys.scheduled),
            JobState::Dead => Some(&self.keys.dead),
            _ => None,
        };
        let mut fields = HashMap::new();
        if let (Some(stream), false) = (stream, entry.is_empty()) {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&entry)
                .arg(&entry)
                .query_async(&mut conn)
                .await?;
            if let Some(e) = wire::parse_entries(v)?.pop() {
                fields = e.fields.into_iter().flatten().collect();
            }
        }
        let text = |name: &[u8]| {
            fields
                .get(name)
                .map(|v: &Vec<u8>| String::from_utf8_lossy(v).into_owned())
        };
        let last_error = if state == JobState::Dead {
            text(b"dead_error")
        } else {
            text(b"last_error")
        };
        let payload = fields.get(&b"payload"[..]).cloned();
        // state.lua reports attempts of live entries; a dead letter records its own.
        let attempts = match text(b"dead_attempts").and_then(|a| a.parse().ok()) {
            Some(a) if state == JobState::Dead => a,
            _ => attempts,
        };
        Ok(JobInfo {
            payload,
            last_error,
            id: id.to_owned(),
            state,
            attempts,
            entry_id: (!entry.is_empty()).then_some(entry),
            owner: (!owner.is_empty()).then_some((owner, deliveries)),
            progress: record.get("progress").cloned(),
            result: if state == JobState::Completed {
                record.get("result").cloned()
            } else {
                None
            },
            finished_ms,
        })
    }

    /// The result of a completed job, decoded as `R` (`None` if not completed, expired, or no result).
    ///
    /// # Errors
    /// Redis or decode errors.
    pub async fn result<R: DeserializeOwned>(&self, id: &str) -> Result<Option<R>> {
        self.job(id).await?.result()
    }

    /// How many jobs are waiting, active, delayed and dead.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn counts(&self) -> Result<Counts> {
        let mut conn = self.client.conn().await?;
        let (len, delayed, dead, parked): (u64, u64, u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.ready)
            .cmd("ZCARD")
            .arg(&self.keys.delayed)
            .cmd("XLEN")
            .arg(&self.keys.dead)
            .cmd("ZCARD")
            .arg(&self.keys.parked)
            .query_async(&mut conn)
            .await?;
        let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.keys.ready)
            .query_async(&mut conn)
            .await;
        // No stream or no group yet: every entry is waiting.
        let group = groups.ok().and_then(|gs| {
            gs.into_iter().find(|g| {
                g.get("name")
                    .and_then(wire::bytes)
                    .is_some_and(|n| n == GROUP.as_bytes())
            })
        });
        let Some(group) = group else {
            let oldest = self.first_entry_ms(&mut conn, "-").await?;
            return Ok(Counts {
                waiting: len,
                active: 0,
                delayed,
                dead,
                parked,
                oldest_waiting_ms: oldest,
            });
        };
        let int = |k: &str| match group.get(k) {
            Some(redis::Value::Int(n)) => Some((*n).max(0) as u64),
            _ => None,
        };
        let active = int("pending").unwrap_or(0);
        // `lag` (entries not yet delivered) is exact; Redis reports nil when it cannot tell, and then finished
        // entries not yet trimmed (SPEC.md, ack.lua) make this an upper bound.
        let waiting = int("lag").unwrap_or_else(|| len.saturating_sub(active));
        let last = group
            .get("last-delivered-id")
            .and_then(wire::bytes)
            .map(|b| format!("({}", String::from_utf8_lossy(b)))
            .unwrap_or_else(|| "-".to_owned());
        let oldest_waiting_ms = if waiting > 0 {
            self.first_entry_ms(&mut conn, &last).await?
        } else {
            None
        };
        Ok(Counts {
            waiting,
            active,
            delayed,
            dead,
            parked,
            oldest_waiting_ms,
        })
    }

    /// The time part of the first ready entry from `start` on.
    async fn first_entry_ms(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        start: &str,
    ) -> Result<Option<u64>> {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&self.keys.ready)
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
        const PAGE: usize = 1000;
        let since = crate::producer::now_ms().saturating_sub(window.as_millis() as u64);
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

    /// Puts dead letters back on the ready stream by job id, each as a fresh job (full attempts, the error it
    /// died with as `last_error`), like a BullMQ `retry` or Sidekiq's "retry now" (`requeue.lua`).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn retry_dead(&self, job_ids: &[&str]) -> Result<Requeue> {
        let mut out = Requeue::default();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let mut conn = self.client.conn().await?;
        let entries: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.keys.dead_index)
            .arg(job_ids)
            .query_async(&mut conn)
            .await?;
        let mut found = Vec::new();
        for (jid, entry) in job_ids.iter().zip(entries) {
            match entry {
                Some(e) => found.push((*jid, e)),
                None => out.missing.push((*jid).to_owned()),
            }
        }
        let ids: Vec<&str> = found.iter().map(|(_, e)| e.as_str()).collect();
        let codes = self.requeue_entries(&ids).await?;
        for ((jid, _), code) in found.into_iter().zip(codes) {
            out.record(code, jid);
        }
        Ok(out)
    }

    async fn requeue_entries(&self, dead_entry_ids: &[&str]) -> Result<Vec<scripts::Requeued>> {
        let mut conn = self.client.conn().await?;
        let maxlen = crate::WorkerConfig::default().events_maxlen;
        scripts::requeue(
            &mut conn,
            &self.keys,
            crate::producer::now_ms(),
            maxlen,
            dead_entry_ids,
        )
        .await
    }

    /// Puts every dead letter back on the ready stream (see [`Queue::retry_dead`]), oldest first, in batches.
    ///
    /// # Errors
    /// Redis errors; dead letters already requeued stay requeued.
    pub async fn retry_all_dead(&self) -> Result<Requeue> {
        const BATCH: usize = 500;
        let mut out = Requeue::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.dead_letters(after.as_deref(), BATCH).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = Some(last.entry_id.clone());
            let ids: Vec<&str> = page.iter().map(|d| d.entry_id.as_str()).collect();
            let codes = self.requeue_entries(&ids).await?;
            for (d, code) in page.iter().zip(codes) {
                out.record(code, &d.job_id);
            }
        }
    }

    /// Deletes dead letters for good (`purge.lua`): those that died more than `older_than` ago, or every one.
    /// Returns how many went.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn purge_dead(&self, older_than: Option<std::time::Duration>) -> Result<u64> {
        const BATCH: usize = 1000;
        let cutoff = older_than.map_or(0, |d| {
            crate::producer::now_ms()
                .saturating_sub(d.as_millis() as u64)
                .max(1)
        });
        let mut conn = self.client.conn().await?;
        let mut total = 0;
        loop {
            let n = scripts::purge(&mut conn, &self.keys, cutoff, BATCH).await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Up to `count` dead letters, oldest first, starting after entry id `after` (`None` = from the start).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dead_letters(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.client.conn().await?;
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(wire::parse_entries(v)?
            .into_iter()
            .map(|raw| {
                let mut meta: HashMap<&str, String> = HashMap::new();
                let mut fields = Vec::new();
                for (k, v) in raw.fields.iter().flatten() {
                    match k.strip_prefix(b"dead_") {
                        Some(name) => {
                            let name = match name {
                                b"reason" => "reason",
                                b"error" => "error",
                                b"attempts" => "attempts",
                                b"ms" => "ms",
                                b"job" => "job",
                                _ => continue,
                            };
                            meta.insert(name, String::from_utf8_lossy(v).into_owned());
                        }
                        None => fields.push((k.clone(), v.clone())),
                    }
                }
                let num = |m: &HashMap<&str, String>, k: &str| {
                    m.get(k).and_then(|s| s.parse().ok()).unwrap_or(0)
                };
                DeadLetter {
                    job_id: meta.get("job").cloned().unwrap_or_else(|| raw.id.clone()),
                    reason: meta.get("reason").cloned().unwrap_or_default(),
                    error: meta.get("error").cloned().unwrap_or_default(),
                    attempts: num(&meta, "attempts"),
                    dead_ms: num(&meta, "ms"),
                    entry_id: raw.id,
                    fields,
                }
            })
            .collect())
    }

    /// Up to `count` checkpoints of job `id`, newest first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn checkpoints(&self, id: &str, count: usize) -> Result<Vec<CheckpointInfo>> {
        read_checkpoints(&self.client, &self.keys, id, count).await
    }

    /// Makes checkpoint `version` the newest by deleting every newer one, so the job's next delivery resumes
    /// from it (enqueue the job again with the same id if it is finished). Returns how many were deleted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn restore_checkpoint(&self, id: &str, version: u64) -> Result<usize> {
        let key = self.keys.checkpoints(id);
        let mut conn = self.client.conn().await?;
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let newer: Vec<String> = wire::parse_entries(v)?
            .into_iter()
            .filter(|e| {
                e.fields.iter().flatten().any(|(k, v)| {
                    k == b"version"
                        && std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                            .is_some_and(|v| v > version)
                })
            })
            .map(|e| e.id)
            .collect();
        if newer.is_empty() {
            return Ok(0);
        }
        let n: usize = redis::cmd("XDEL")
            .arg(&key)
            .arg(&newer)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// Deletes every checkpoint of job `id`, so its next delivery starts fresh.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_checkpoints(&self, id: &str) -> Result<()> {
        let mut conn = self.client.conn().await?;
        let _: () = redis::cmd("DEL")
            .arg(self.keys.checkpoints(id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Up to `count` lifecycle events after entry id `after` (`None` = the oldest kept), without a consumer
    /// group. To process events at least once across restarts, read the events stream with your own consumer
    /// group instead (SPEC.md, "Events").
    ///
    /// # Errors
    /// Redis errors.
    pub async fn events(&self, after: Option<&str>, count: usize) -> Result<Vec<Event>> {
        let mut conn = self.client.conn().await?;
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&self.keys.events)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(to_events(wire::parse_entries(v)?))
    }

    /// A reader that waits for new lifecycle events (for `tail -f`-style views), starting after entry id
    /// `after` (`None` = only events added from now on). It owns a connection for its blocking reads.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn follow_events(&self, after: Option<&str>) -> Result<EventFeed> {
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
    conn: redis::aio::MultiplexedConnection,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in [
            JobState::Waiting,
            JobState::Delayed,
            JobState::Active,
            JobState::Completed,
            JobState::Failed,
            JobState::Dead,
            JobState::Cancelled,
            JobState::Parked,
            JobState::Unknown,
        ] {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        assert!(JobState::parse("zombie").is_err());
    }
}
