//! When to checkpoint. A long job calls [`CheckpointPolicy::due`] at each step and saves with
//! [`crate::Job::checkpoint`] when it says so: every N steps, every T, and at once when the worker is stopping
//! or the delivery is cancelled.
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

use std::time::{Duration, Instant};

use crate::Job;

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

    /// Whether the job should checkpoint after `step`: the step or time interval has passed, or the worker is
    /// stopping, or this delivery was cancelled (its lease is in doubt; the write is fenced anyway).
    pub fn due<T>(&self, step: u64, job: &Job<T>) -> bool {
        self.due_at(
            step,
            Instant::now(),
            job.stopping().is_cancelled() || job.cancelled().is_cancelled(),
        )
    }

    fn due_at(&self, step: u64, now: Instant, stopping: bool) -> bool {
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
