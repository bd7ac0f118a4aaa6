//! What the dashboard reads, as the JSON documents `/api` serves; the pages are rendered from the same documents.
//! Every read is bounded: counts are a few O(1) reads per queue, listings are pages, and the charts come from
//! memory ([`super::rates`]); nothing scans a queue or the keyspace, and nothing is written.

use std::sync::Arc;

use serde_json::json;

use super::App;
use crate::context::Json;
use crate::output::now_ms;
use crate::{dead, jobs, schedule, signal, workers};

/// Why a read found nothing to show.
#[derive(Debug)]
pub enum Failure {
    NotFound(String),
    BadRequest(String),
    Redis(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Redis(e)
    }
}

impl From<rill::Error> for Failure {
    fn from(e: rill::Error) -> Self {
        match e {
            rill::Error::InvalidName { .. }
            | rill::Error::InvalidJobId { .. }
            | rill::Error::InvalidOption { .. } => Failure::BadRequest(e.to_string()),
            e => Failure::Redis(e.into()),
        }
    }
}

pub type Read<T> = Result<T, Failure>;

/// Most jobs on one page of a listing.
pub const MAX_PAGE: usize = 500;

impl App {
    /// A queue of the namespace, or not found.
    pub async fn queue(&self, name: &str) -> Read<rill::Queue<Json>> {
        let q = self.client.queue::<Json>(name)?;
        if self.client.queues().await?.iter().any(|n| n == name) {
            Ok(q)
        } else {
            Err(Failure::NotFound(format!(
                "no queue {name:?} in namespace {:?}",
                self.namespace
            )))
        }
    }
}

/// `GET /api/queues`: every queue with its counts, whether paused, its workers, and its last hour.
pub async fn queues(app: &Arc<App>) -> Read<Json> {
    let now = now_ms();
    let rule = rill::HealthRule::default();
    let mut out = Vec::new();
    for name in app.client.queues().await? {
        let q = app.client.queue::<Json>(&name)?;
        let c = q.counts().await?;
        let ws = q.workers(&rule).await?;
        let healthy = ws
            .iter()
            .filter(|(_, h)| matches!(h, rill::Health::Healthy))
            .count();
        let hour = app.rates.hour(&name, now);
        out.push(json!({
            "queue": name,
            "paused": q.is_paused().await?,
            "waiting": c.waiting,
            "active": c.active,
            "delayed": c.delayed,
            "parked": c.parked,
            "dead": c.dead,
            "oldest_waiting_age_ms": c.oldest_waiting_ms.map(|ms| now.saturating_sub(ms)),
            "completed_per_s": hour.completed_per_s,
            "failed_per_s": hour.failed_per_s,
            "workers": ws.len(),
            "healthy_workers": healthy,
            "last_hour": hour.to_json(),
        }));
    }
    Ok(json!({ "namespace": app.namespace, "now_ms": now, "queues": out }))
}

/// The state named in a query (default: waiting).
pub fn state(name: Option<&str>) -> Read<rill::JobState> {
    use rill::JobState::*;
    Ok(match name.unwrap_or("waiting") {
        "waiting" => Waiting,
        "active" => Active,
        "delayed" => Delayed,
        "failed" => Failed,
        "parked" => Parked,
        "dead" => Dead,
        "completed" => Completed,
        other => {
            return Err(Failure::BadRequest(format!(
                "unknown state {other:?}: waiting, active, delayed, failed, parked, dead or completed"
            )));
        }
    })
}

/// `GET /api/queues/{queue}/jobs?state=&after=&limit=`: one page of jobs in a state.
pub async fn jobs(
    app: &Arc<App>,
    queue: &str,
    state_name: Option<&str>,
    after: Option<&str>,
    limit: Option<usize>,
) -> Read<Json> {
    let q = app.queue(queue).await?;
    let state = state(state_name)?;
    let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = q.jobs(state, after, limit).await?;
    let rate = q.rate_limit().await?;
    let priorities = q.priorities().await?;
    Ok(json!({
        "queue": queue,
        "state": state.as_str(),
        "limits": {
            "rate": rate.map(|(n, per)| json!({"max": n, "per_ms": per.as_millis() as u64})),
            "concurrency": q.concurrency_limit().await?,
            "priority_levels": priorities.levels(),
            "priority_weights": priorities.weights(),
            "lease_ms": q.lease().await?.map(|d| d.as_millis() as u64),
            "per_key": q.key_limit().await?.map(|k| json!({
                "field": k.field(),
                "rate": k.max_rate().map(|(n, per)| json!({"max": n, "per_ms": per.as_millis() as u64})),
                "concurrency": k.max_concurrency(),
            })),
        },
        "counts": counts_json(&q.counts().await?),
        "paused": q.is_paused().await?,
        "jobs": page.jobs.iter().map(jobs::summary_json).collect::<Vec<_>>(),
        "next": page.next,
        "last_hour": app.rates.hour(queue, now_ms()).to_json(),
    }))
}

fn counts_json(c: &rill::Counts) -> Json {
    json!({
        "waiting": c.waiting, "active": c.active, "delayed": c.delayed, "parked": c.parked, "dead": c.dead,
    })
}

/// `GET /api/jobs/{queue}/{id}`: everything known of one job (as `rill jobs show --json`), with the worker running
/// it from the registry.
pub async fn job(app: &Arc<App>, queue: &str, id: &str) -> Read<Json> {
    let q = app.queue(queue).await?;
    let info = q.job(id).await?;
    if info.state == rill::JobState::Unknown {
        return Err(Failure::NotFound(format!(
            "no job {id:?} in queue {queue:?} (never existed, or finished and its record expired)"
        )));
    }
    let mut doc = jobs::detail(&q, &info).await?;
    if let Some((worker, _)) = &info.owner {
        let found = q
            .workers(&rill::HealthRule::default())
            .await?
            .into_iter()
            .find(|(w, _)| &w.id == worker);
        doc["worker"] = found.map_or(Json::Null, |(w, h)| workers::to_json(&w, &h, now_ms()));
    }
    Ok(doc)
}

/// `GET /api/workers`: every registered worker of every queue, with its health and running jobs.
pub async fn all_workers(app: &Arc<App>) -> Read<Json> {
    let mut queues = Vec::new();
    for name in app.client.queues().await? {
        queues.push(app.client.queue::<Json>(&name)?);
    }
    let now = now_ms();
    let list = workers::gather(&queues).await?;
    Ok(json!({
        "workers": list.iter().map(|(w, h)| workers::to_json(w, h, now)).collect::<Vec<_>>(),
    }))
}

/// `GET /api/queues/{queue}/dead?after=&limit=`: dead letters, oldest first.
pub async fn dead_letters(
    app: &Arc<App>,
    queue: &str,
    after: Option<&str>,
    limit: Option<usize>,
) -> Read<Json> {
    let q = app.queue(queue).await?;
    let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let list = q.dead_letters(after, limit).await?;
    let next = (list.len() == limit)
        .then(|| list.last().map(|d| d.entry_id.clone()))
        .flatten();
    Ok(json!({
        "queue": queue,
        "total": q.counts().await?.dead,
        "dead": list.iter().map(dead::dead_json).collect::<Vec<_>>(),
        "next": next,
    }))
}

/// `GET /api/queues/{queue}/signals`: the newest signals sent to the queue, its jobs and workers.
pub async fn signals(app: &Arc<App>, queue: &str, limit: Option<usize>) -> Read<Json> {
    let q = app.queue(queue).await?;
    let list = q
        .signal_history(
            rill::SignalFilter::new(),
            limit.unwrap_or(50).clamp(1, MAX_PAGE),
        )
        .await?;
    Ok(json!({
        "queue": queue,
        "signals": list.iter().map(signal::signal_json).collect::<Vec<_>>(),
    }))
}

/// `GET /api/queues/{queue}/schedules`: the queue's cron and interval schedules.
pub async fn schedules(app: &Arc<App>, queue: &str) -> Read<Json> {
    let q = app.queue(queue).await?;
    let list = q.schedules().await?;
    Ok(json!({
        "queue": queue,
        "schedules": list.iter().map(schedule::info_json).collect::<Vec<_>>(),
    }))
}
