//! The worker registry, read side: each worker registers on start, beats every `beat_interval` (a record hash,
//! a sorted set of last beats, and an entry on the heartbeats stream; the writing side is the worker's
//! heartbeat) and deregisters on a graceful exit. Health is derived from the record by one rule ([`health`],
//! also in SPEC.md), and a worker judged crashed has its deliveries adopted by the others at once (`adopt.lua`,
//! in the reclaim pass).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Result;
use crate::identity::server_ms;
use crate::queue::Queue;

/// Approximate length the heartbeats stream is trimmed to.
pub const HEARTBEATS_MAXLEN: u64 = 10_000;

/// How long a registry record outlives its last beat.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most running jobs a worker lists in its record (`running`); `in_flight` counts them all.
pub const RUNNING_LISTED: usize = 100;

/// A job a worker is running, from its registry record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    /// Job id.
    pub job_id: String,
    /// When its handler started, ms since the Unix epoch (the worker's clock).
    pub started_ms: u64,
}

/// The record's `running` field (SPEC.md): `<started ms>:<job id>` pairs, space-separated, longest-running
/// first. Job ids hold no whitespace, and the start time comes first so an id may contain ':'.
pub(crate) fn running_field(running: &[(u64, String)]) -> String {
    let mut out = String::new();
    for (started, id) in running {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{started}:{id}"));
    }
    out
}

/// Reads a `running` field; malformed pairs (another client's) are skipped.
pub(crate) fn parse_running(field: &str) -> Vec<RunningJob> {
    field
        .split_ascii_whitespace()
        .filter_map(|pair| {
            let (started, id) = pair.split_once(':')?;
            Some(RunningJob {
                job_id: id.to_owned(),
                started_ms: started.parse().ok()?,
            })
        })
        .filter(|r| !r.job_id.is_empty())
        .collect()
}

/// Thresholds of the health rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthRule {
    /// Expected time between beats (default 1 s).
    pub beat_interval: Duration,
    /// No beat for this long: crashed (default 3 s).
    pub crash_after: Duration,
    /// Failed / (processed + failed) above this: degraded (default 0.5) ...
    pub max_error_rate: f64,
    /// ... once at least this many jobs ended (default 20).
    pub min_jobs_for_rate: u64,
}

impl Default for HealthRule {
    fn default() -> Self {
        HealthRule {
            beat_interval: Duration::from_secs(1),
            crash_after: Duration::from_secs(3),
            max_error_rate: 0.5,
            min_jobs_for_rate: 20,
        }
    }
}

/// A worker's health.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Beating on time, renewing leases, failing few jobs.
    Healthy,
    /// Alive but late, failing lease renewals, or failing many jobs (the reason says which).
    Degraded(String),
    /// No beat for longer than `crash_after`.
    Crashed,
    /// No record.
    Unknown,
}

/// One worker's registry record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Consumer name (the worker's id).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queue it works.
    pub queue: String,
    /// Jobs it runs at once.
    pub concurrency: u64,
    /// rill version.
    pub version: String,
    /// Start time, ms since the Unix epoch.
    pub started_ms: u64,
    /// Last beat, ms since the Unix epoch (the registry score).
    pub last_beat_ms: u64,
    /// `idle`, `busy`, `paused`, `draining` or `degraded` (it cannot end deliveries, so it takes no jobs).
    pub status: String,
    /// Why it is `degraded` (empty otherwise).
    pub reason: String,
    /// Jobs running now.
    pub in_flight: u64,
    /// Which jobs run now and since when, longest-running first (at most [`RUNNING_LISTED`]; empty from a
    /// worker that does not report them).
    pub running: Vec<RunningJob>,
    /// Jobs completed.
    pub processed: u64,
    /// Jobs failed (retried or dead-lettered).
    pub failed: u64,
    /// Lease renewals that failed since the previous beat.
    pub lease_failures: u64,
    /// Free metadata (`meta:<key>` fields).
    pub metadata: HashMap<String, String>,
    /// Declared capabilities.
    pub capabilities: Vec<String>,
}

/// The health rule (SPEC.md, "Worker registry"): unknown without a record; crashed when the last beat is older
/// than `crash_after`; degraded when it is older than two beat intervals, or it failed to keep a lease since the
/// previous beat, or the error rate is over the threshold; healthy otherwise.
pub fn health(info: Option<&WorkerInfo>, now_ms: u64, rule: &HealthRule) -> Health {
    let Some(w) = info else {
        return Health::Unknown;
    };
    let age = now_ms.saturating_sub(w.last_beat_ms);
    if age > rule.crash_after.as_millis() as u64 {
        return Health::Crashed;
    }
    if age > 2 * rule.beat_interval.as_millis() as u64 {
        return Health::Degraded(format!("last beat {age} ms ago"));
    }
    if w.status == "degraded" {
        return Health::Degraded(if w.reason.is_empty() {
            "cannot end deliveries".into()
        } else {
            w.reason.clone()
        });
    }
    if w.lease_failures > 0 {
        return Health::Degraded(format!(
            "{} lease failures (renewals that failed, leases lost or given up)",
            w.lease_failures
        ));
    }
    let ended = w.processed + w.failed;
    if ended >= rule.min_jobs_for_rate && w.failed as f64 > rule.max_error_rate * ended as f64 {
        return Health::Degraded(format!("{} of {ended} jobs failed", w.failed));
    }
    Health::Healthy
}

/// `score`: the worker's registry score, its last beat (the record's `last_beat_ms` is the last beat that wrote
/// the record, which may be older).
fn parse_record(id: &str, fields: HashMap<String, String>, score: Option<f64>) -> WorkerInfo {
    let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    WorkerInfo {
        id: id.to_owned(),
        host: fields.get("host").cloned().unwrap_or_default(),
        pid: num("pid") as u32,
        queue: fields.get("queue").cloned().unwrap_or_default(),
        concurrency: num("concurrency"),
        version: fields.get("version").cloned().unwrap_or_default(),
        started_ms: num("started_ms"),
        last_beat_ms: num("last_beat_ms").max(score.map_or(0, |s| s as u64)),
        status: fields.get("status").cloned().unwrap_or_default(),
        reason: fields.get("reason").cloned().unwrap_or_default(),
        in_flight: num("in_flight"),
        running: fields
            .get("running")
            .map(|r| parse_running(r))
            .unwrap_or_default(),
        processed: num("processed"),
        failed: num("failed"),
        lease_failures: num("lease_failures"),
        metadata: fields
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("meta:").map(|k| (k.to_owned(), v.clone())))
            .collect(),
        capabilities: fields
            .get("capabilities")
            .map(|c| {
                c.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Every registered worker of this queue with its health under `rule`.
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// for (w, health) in queue.workers(&rill::HealthRule::default()).await? {
    ///     println!("{} on {} pid {}: {health:?}, {}/{} busy", w.id, w.host, w.pid, w.in_flight, w.concurrency);
    ///     for job in &w.running {
    ///         println!("  runs {} since {}", job.job_id, job.started_ms);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Redis errors.
    pub async fn workers(&self, rule: &HealthRule) -> Result<Vec<(WorkerInfo, Health)>> {
        let mut conn = self.client.conn().await?;
        // The registry score is the last beat (a beat that changed nothing writes only the score).
        let beats: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys.workers)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let now = server_ms(&mut conn).await?;
        // Every record in one round trip.
        let mut pipe = redis::pipe();
        for (id, _) in &beats {
            pipe.cmd("HGETALL").arg(self.keys.worker(id));
        }
        let records: Vec<HashMap<String, String>> = if beats.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let mut out = Vec::with_capacity(beats.len());
        for ((id, score), fields) in beats.into_iter().zip(records) {
            let info = (!fields.is_empty()).then(|| parse_record(&id, fields, Some(score)));
            let h = health(info.as_ref(), now, rule);
            out.push((
                info.unwrap_or_else(|| WorkerInfo {
                    id,
                    ..WorkerInfo::default()
                }),
                h,
            ));
        }
        Ok(out)
    }

    /// One worker's record and health (`None` record: unknown).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn worker(
        &self,
        id: &str,
        rule: &HealthRule,
    ) -> Result<(Option<WorkerInfo>, Health)> {
        let mut conn = self.client.conn().await?;
        let (fields, score): (HashMap<String, String>, Option<f64>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.worker(id))
            .cmd("ZSCORE")
            .arg(&self.keys.workers)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        let info = (!fields.is_empty()).then(|| parse_record(id, fields, score));
        let h = health(info.as_ref(), server_ms(&mut conn).await?, rule);
        Ok((info, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_field_round_trips_and_skips_what_it_cannot_read() {
        let running = vec![(1_000, "a".to_string()), (2_000, "ns:job:7".to_string())];
        let field = running_field(&running);
        assert_eq!(field, "1000:a 2000:ns:job:7");
        assert_eq!(
            parse_running(&field),
            vec![
                RunningJob {
                    job_id: "a".into(),
                    started_ms: 1_000
                },
                RunningJob {
                    job_id: "ns:job:7".into(),
                    started_ms: 2_000
                },
            ]
        );
        assert_eq!(running_field(&[]), "");
        assert!(parse_running("").is_empty());
        assert_eq!(
            parse_running("x:a 5 :b 6:  7:c"),
            vec![RunningJob {
                job_id: "c".into(),
                started_ms: 7
            }]
        );
    }

    #[test]
    fn the_health_rule() {
        let rule = HealthRule::default();
        let w = WorkerInfo {
            last_beat_ms: 10_000,
            processed: 10,
            ..WorkerInfo::default()
        };
        assert_eq!(health(None, 10_000, &rule), Health::Unknown);
        assert_eq!(health(Some(&w), 10_500, &rule), Health::Healthy);
        assert!(matches!(
            health(Some(&w), 12_500, &rule),
            Health::Degraded(_)
        ));
        assert_eq!(health(Some(&w), 13_001, &rule), Health::Crashed);
        let failing = WorkerInfo {
            lease_failures: 2,
            ..w.clone()
        };
        assert!(
            matches!(health(Some(&failing), 10_000, &rule), Health::Degraded(r) if r.contains("lease"))
        );
        let erring = WorkerInfo {
            processed: 5,
            failed: 20,
            ..w.clone()
        };
        assert!(
            matches!(health(Some(&erring), 10_000, &rule), Health::Degraded(r) if r.contains("failed"))
        );
        let stuck = WorkerInfo {
            status: "degraded".into(),
            reason: "ack.lua refused: OOM".into(),
            ..w.clone()
        };
        assert_eq!(
            health(Some(&stuck), 10_000, &rule),
            Health::Degraded("ack.lua refused: OOM".into())
        );
        let few = WorkerInfo {
            processed: 1,
            failed: 5,
            ..w
        };
        assert_eq!(
            health(Some(&few), 10_000, &rule),
            Health::Healthy,
            "too few jobs to judge a rate"
        );
    }
}
