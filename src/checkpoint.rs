//! Checkpoints, in one place: when to save ([`CheckpointPolicy`]), a worker's limits ([`CheckpointSettings`]),
//! what a resumed delivery sees ([`Resume`], [`PreviousEnd`]), and the operator's view ([`CheckpointInfo`],
//! `Queue::checkpoints`, `restore_checkpoint`, `clear_checkpoints`). The fenced write itself is
//! [`crate::Job::checkpoint`] (`checkpoint.lua`) and the read is [`crate::Job::resume`].
//!
//! A long job calls [`CheckpointPolicy::due`] at each step and saves when it says so: every N steps, every T,
//! and at once when the worker is stopping or the delivery is cancelled.
//!
//! ```no_run
//! # async fn f(job: rill::Job<u64>) -> rill::JobResult<u64> {
//! use std::time::Duration;
//! let mut policy = rill::CheckpointPolicy::every_steps(50).or_every(Duration::from_secs(10));
//! let (mut step, mut sum) = match job.resume::<(u64, u64)>().await? {
//!     Some(r) => r.state,
//!     None => (0, 0),
//! };
//! while step < *job.data() {
//!     sum += step;
//!     step += 1;
//!     if policy.due(step, &job) {
//!         job.checkpoint(&(step, sum)).await?;
//!         policy.saved(step);
//!     }
//!     if job.stopping().is_cancelled() {
//!         return Err(rill::JobError::interrupted("worker stopping"));
//!     }
//! }
//! Ok(sum)
//! # }
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use crate::client::Client;
use crate::error::Result;
use crate::keys::QueueKeys;
use crate::queue::Queue;
use crate::wire;

/// Decides when a step should be followed by a checkpoint.
#[derive(Debug, Clone)]
#[must_use]
pub struct CheckpointPolicy {
    every_steps: Option<u64>,
    every: Option<Duration>,
    last_step: u64,
    last_at: Instant,
}

impl CheckpointPolicy {
    /// Due every `n` steps (at least 1).
    pub fn every_steps(n: u64) -> Self {
        CheckpointPolicy {
            every_steps: Some(n.max(1)),
            every: None,
            last_step: 0,
            last_at: Instant::now(),
        }
    }

    /// Due once `period` has passed since the last save.
    pub fn every(period: Duration) -> Self {
        CheckpointPolicy {
            every_steps: None,
            every: Some(period),
            last_step: 0,
            last_at: Instant::now(),
        }
    }

    /// Only when asked: on demand through [`CheckpointPolicy::due`] returning true when stopping or cancelled.
    pub fn on_demand() -> Self {
        CheckpointPolicy {
            every_steps: None,
            every: None,
            last_step: 0,
            last_at: Instant::now(),
        }
    }

    /// Also due once `period` has passed.
    pub fn or_every(mut self, period: Duration) -> Self {
        self.every = Some(period);
        self
    }

    /// Starts counting from `step` (a resumed job's checkpointed step).
    pub fn from_step(mut self, step: u64) -> Self {
        self.last_step = step;
        self
    }

    // `due(step, &job)`, which asks the job whether it is stopping, is in `job.rs`: the job knows checkpoints,
    // not the other way round.

    /// Whether a checkpoint is due after `step` at `now`, given whether the delivery is `stopping`.
    pub(crate) fn due_at(&self, step: u64, now: Instant, stopping: bool) -> bool {
        if step <= self.last_step && !stopping {
            return false;
        }
        stopping
            || self.every_steps.is_some_and(|n| step - self.last_step >= n)
            || self
                .every
                .is_some_and(|p| now.duration_since(self.last_at) >= p)
    }

    /// Records a save after `step`.
    pub fn saved(&mut self, step: u64) {
        self.last_step = step;
        self.last_at = Instant::now();
    }
}

/// Checkpoint limits of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Most checkpoints kept per job (default 10).
    pub keep: u32,
    /// How long a job's checkpoints live after the last write (default 7 days); once the job completes they
    /// expire after the worker's retention.
    pub ttl: Duration,
    /// Largest encoded state, bytes (default 1 MiB).
    pub max_bytes: usize,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            keep: 10,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 20,
        }
    }
}

/// How the previous delivery of a resumed job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreviousEnd {
    /// Its worker crashed, froze or lost the lease; this delivery took over.
    Stalled,
    /// It failed with this error and was retried.
    Failed(String),
    /// It was handed back (worker shutdown, queue paused, job paused and resumed, [`JobError::interrupted`](crate::JobError::interrupted)) or
    /// the job was enqueued again.
    HandedBack,
}

/// The newest checkpoint of a job, as seen by a delivery that resumes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resume<S> {
    /// The saved state.
    pub state: S,
    /// Its version.
    pub version: u64,
    /// The consumer (worker) that wrote it.
    pub written_by: String,
    /// Its label, if any.
    pub label: Option<String>,
    /// When it was written, ms since the Unix epoch.
    pub written_ms: u64,
    /// Why the previous delivery ended.
    pub previous_end: PreviousEnd,
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
    /// [`Error::Decode`](crate::Error::Decode).
    pub fn state<S: DeserializeOwned>(&self) -> Result<S> {
        wire::decode(&self.state)
    }
}

/// Up to `count` checkpoints of a job, newest first.
pub(crate) async fn read_checkpoints(
    client: &Client,
    keys: &QueueKeys,
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

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Up to `count` checkpoints of job `id`, newest first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn checkpoints(&self, id: &str, count: usize) -> Result<Vec<CheckpointInfo>> {
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.checkpoints(id, count)).await;
        }
        read_checkpoints(&self.client, &self.keys, id, count).await
    }

    /// Makes checkpoint `version` the newest by deleting every newer one, so the job's next delivery resumes
    /// from it (enqueue the job again with the same id if it is finished). Returns how many were deleted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn restore_checkpoint(&self, id: &str, version: u64) -> Result<usize> {
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.restore_checkpoint(id, version)).await;
        }
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
        if let Some(q) = self.holder(id).await? {
            return Box::pin(q.clear_checkpoints(id)).await;
        }
        let mut conn = self.client.conn().await?;
        let _: () = redis::cmd("DEL")
            .arg(self.keys.checkpoints(id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_time_and_stopping() {
        let t0 = Instant::now();
        let mut p = CheckpointPolicy::every_steps(50);
        assert!(!p.due_at(49, t0, false));
        assert!(p.due_at(50, t0, false));
        p.saved(50);
        assert!(!p.due_at(99, t0, false));
        assert!(p.due_at(100, t0, false));
        assert!(p.due_at(51, t0, true), "stopping forces a save");
        let p = CheckpointPolicy::every(Duration::from_secs(10)).from_step(7);
        assert!(!p.due_at(8, p.last_at + Duration::from_secs(9), false));
        assert!(p.due_at(8, p.last_at + Duration::from_secs(10), false));
        assert!(
            !p.due_at(7, p.last_at + Duration::from_secs(99), false),
            "nothing new since the save"
        );
        let p = CheckpointPolicy::on_demand();
        assert!(!p.due_at(1_000, t0 + Duration::from_secs(3600), false));
        assert!(p.due_at(1, t0, true));
        let p = CheckpointPolicy::every_steps(0).or_every(Duration::from_secs(1));
        assert!(p.due_at(1, t0, false), "at least every step");
    }
}
