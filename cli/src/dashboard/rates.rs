//! The last hour of completions and failures per queue, a minute a bucket, for the charts. The dashboard learns
//! them from each queue's events stream (SPEC.md, "Events"): at start it reads back what the stream still holds
//! of the last hour, then every few seconds only the events added since. Nothing is written to Redis, and a
//! page view costs no read: pages take the buckets from memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::App;
use crate::context::Json;
use crate::output::now_ms;

/// Width of one bucket.
pub const BUCKET_MS: u64 = 60_000;
/// Buckets kept: an hour.
pub const BUCKETS: usize = 60;
/// How often new events are read.
const EVERY: Duration = Duration::from_secs(5);
/// Events read per call, and at most per queue and pass (a backlog is read on over the next passes).
const PAGE: usize = 1_000;
const PAGES_PER_PASS: usize = 10;

/// Completions and failures (retries and dead letters) in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start_ms: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Series {
    /// The newest event read.
    cursor: Option<String>,
    buckets: VecDeque<Bucket>,
}

impl Series {
    fn add(&mut self, at_ms: u64, completed: u64, failed: u64) {
        let start_ms = at_ms - at_ms % BUCKET_MS;
        match self
            .buckets
            .iter_mut()
            .rev()
            .find(|b| b.start_ms == start_ms)
        {
            Some(b) => {
                b.completed += completed;
                b.failed += failed;
            }
            None => {
                let at = self
                    .buckets
                    .iter()
                    .position(|b| b.start_ms > start_ms)
                    .unwrap_or(self.buckets.len());
                self.buckets.insert(
                    at,
                    Bucket {
                        start_ms,
                        completed,
                        failed,
                    },
                );
            }
        }
    }

    fn forget_before(&mut self, ms: u64) {
        while self.buckets.front().is_some_and(|b| b.start_ms < ms) {
            self.buckets.pop_front();
        }
    }
}

/// Per queue, the buckets of the last hour.
#[derive(Debug, Default)]
pub struct Rates {
    queues: Mutex<HashMap<String, Series>>,
}

/// What a page shows of one queue: the hour as [`BUCKETS`] buckets (oldest first, empty minutes as zeros), and
/// the rates over the last full minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    pub buckets: Vec<Bucket>,
    pub completed_per_s: f64,
    pub failed_per_s: f64,
}

impl Hour {
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "bucket_s": BUCKET_MS / 1000,
            "start_ms": self.buckets.first().map(|b| b.start_ms),
            "completed": self.buckets.iter().map(|b| b.completed).collect::<Vec<_>>(),
            "failed": self.buckets.iter().map(|b| b.failed).collect::<Vec<_>>(),
        })
    }
}

impl Rates {
    fn series(&self) -> std::sync::MutexGuard<'_, HashMap<String, Series>> {
        self.queues.lock().expect("rates lock")
    }

    /// The hour ending now for `queue` (zeros until the first pass has read it).
    pub fn hour(&self, queue: &str, now: u64) -> Hour {
        let current = now - now % BUCKET_MS;
        let first = current - (BUCKETS as u64 - 1) * BUCKET_MS;
        let queues = self.series();
        let kept = queues.get(queue);
        let buckets: Vec<Bucket> = (0..BUCKETS as u64)
            .map(|i| {
                let start_ms = first + i * BUCKET_MS;
                kept.and_then(|s| s.buckets.iter().find(|b| b.start_ms == start_ms))
                    .copied()
                    .unwrap_or(Bucket {
                        start_ms,
                        ..Bucket::default()
                    })
            })
            .collect();
        // The last full minute: the current one has only just begun.
        let last = buckets[BUCKETS - 2];
        Hour {
            completed_per_s: last.completed as f64 / 60.0,
            failed_per_s: last.failed as f64 / 60.0,
            buckets,
        }
    }

    /// Reads the events added to `queue` since the last pass (the last hour's, on the first).
    async fn read(&self, client: &rill::Client, queue: &str) -> anyhow::Result<()> {
        let q = client.queue::<Json>(queue)?;
        let now = now_ms();
        let hour_ago = now.saturating_sub(BUCKET_MS * BUCKETS as u64);
        let mut cursor = self
            .series()
            .get(queue)
            .and_then(|s| s.cursor.clone())
            .unwrap_or_else(|| format!("{hour_ago}-0"));
        for _ in 0..PAGES_PER_PASS {
            let events = q.events(Some(&cursor), PAGE).await?;
            let mut queues = self.series();
            let series = queues.entry(queue.to_owned()).or_default();
            for e in &events {
                let at_ms = e
                    .entry_id
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(now);
                let (completed, failed) = match e.kind.as_str() {
                    "completed" => (
                        e.fields
                            .get("count")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(1),
                        0,
                    ),
                    "retrying" | "dead" => (0, 1),
                    _ => (0, 0),
                };
                if at_ms >= hour_ago && completed + failed > 0 {
                    series.add(at_ms, completed, failed);
                }
            }
            series.forget_before(hour_ago - hour_ago % BUCKET_MS);
            if let Some(last) = events.last() {
                cursor = last.entry_id.clone();
            }
            series.cursor = Some(cursor.clone());
            if events.len() < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// One pass over every queue of the namespace.
    async fn pass(&self, client: &rill::Client) -> anyhow::Result<()> {
        let names = client.queues().await?;
        for name in &names {
            self.read(client, name).await?;
        }
        // Queues removed since: their series go too.
        self.series().retain(|q, _| names.contains(q));
        Ok(())
    }
}

/// Reads new events every few seconds for as long as the dashboard runs.
pub async fn run(app: Arc<App>) {
    loop {
        if let Err(e) = app.rates.pass(&app.client).await {
            tracing::warn!(error = %e, "dashboard: could not read the queues' events for the charts");
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fall_into_their_minute_and_an_hour_is_kept() {
        let rates = Rates::default();
        let now = 10 * 3_600_000 + 30_000;
        {
            let mut q = rates.series();
            let s = q.entry("a".into()).or_default();
            s.add(now - 61_000, 120, 0);
            s.add(now - 65_000, 0, 3);
            s.add(now - 2_000, 5, 0);
            s.add(now - 3 * 3_600_000, 9, 9);
            s.forget_before(now - 3_600_000);
        }
        let hour = rates.hour("a", now);
        assert_eq!(hour.buckets.len(), BUCKETS);
        let last = hour.buckets[BUCKETS - 1];
        assert_eq!((last.completed, last.failed), (5, 0));
        let before = hour.buckets[BUCKETS - 2];
        assert_eq!((before.completed, before.failed), (120, 3));
        assert_eq!(hour.completed_per_s, 2.0);
        assert_eq!(hour.failed_per_s, 0.05);
        assert_eq!(hour.buckets.iter().map(|b| b.completed).sum::<u64>(), 125);
        assert!(
            hour.buckets
                .windows(2)
                .all(|w| w[1].start_ms == w[0].start_ms + BUCKET_MS)
        );
        assert_eq!(rates.hour("unknown", now).completed_per_s, 0.0);
    }
}
