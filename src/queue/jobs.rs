//! Where a job is: [`JobState`] and [`JobInfo`], read atomically through `state.lua` (`Queue::state`,
//! `Queue::job`, `Queue::result`).

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use crate::error::{Error, Result};
use crate::scripts;
use crate::wire;

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
    pub(crate) fn parse(s: &str) -> Result<Self> {
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
    /// Attempts counted so far, in one meaning everywhere (this field, `rill jobs show|list`, dead letters,
    /// events): 0 for a job that never ran; while active, the running attempt's number (what the handler's
    /// [`crate::Job::attempt`] says); for completed, the attempt that succeeded (0 when no record kept it: see
    /// [`Queue::job`]); for failed, parked and dead, the attempts made. A hand-back at shutdown or a pause does
    /// not count; a stall does.
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
    /// Its priority level (from the entry holding it; 0 when none does).
    pub priority: u8,
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
    /// A completed job reads as [`JobState::Completed`] while its record is kept (the worker's `retention`, 24 h
    /// by default): jobs with a result or with an id of their own (named, or retried) get one, every job with
    /// `keep_completed`. Without a record (a job enqueued without an id of its own), it still reads as completed
    /// while its `completed` event is among the newest 200 events of the queue (finish time known, attempts 0);
    /// after that, [`JobState::Unknown`].
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// let id = queue.enqueue_with(&"hello".to_string(), rill::Enqueue::new().id("greet-1")).await?;
    /// let info = queue.job(&id).await?;
    /// match info.state {
    ///     rill::JobState::Completed => println!("done: {:?}", info.result::<String>()?),
    ///     rill::JobState::Failed | rill::JobState::Dead => println!("failing: {:?}", info.last_error),
    ///     other => println!("{} after {} attempts", other.as_str(), info.attempts),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Redis errors.
    pub async fn job(&self, id: &str) -> Result<JobInfo> {
        if let Some(info) = self.find_job(id).await? {
            return Ok(info);
        }
        let mut conn = self.client.conn().await?;
        let scripts::StateRow {
            state,
            entry_id: entry,
            attempts,
            owner,
            deliveries,
            finished_ms: finished,
            level,
        } = scripts::state(&mut conn, &self.keys, id).await?;
        let state = JobState::parse(&state)?;
        let record: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut conn)
            .await?;
        let finished_ms = (finished > 0).then_some(finished);
        let stream = match state {
            JobState::Waiting | JobState::Active => Some(self.keys.level(level).to_owned()),
            JobState::Delayed | JobState::Failed | JobState::Parked => {
                Some(self.keys.scheduled.clone())
            }
            JobState::Dead => Some(self.keys.dead.clone()),
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
        // state.lua reports attempts made before the entry's deliveries; a running one counts (SPEC: attempt
        // number = attempts + delivery count), and a dead letter records its own.
        let attempts = match (state, text(b"dead_attempts").and_then(|a| a.parse().ok())) {
            (JobState::Dead, Some(a)) => a,
            (JobState::Active, _) => attempts + deliveries,
            _ => attempts,
        };
        let priority = text(b"priority").and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok(JobInfo {
            payload,
            last_error,
            priority,
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
