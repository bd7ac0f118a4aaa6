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
        Ok(JobInfo {
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
            return Ok(Counts {
                waiting: len,
                active: 0,
                delayed,
                dead,
                parked,
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
        Ok(Counts {
            waiting,
            active,
            delayed,
            dead,
            parked,
        })
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
        Ok(wire::parse_entries(v)?
            .into_iter()
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
            .collect())
    }
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
