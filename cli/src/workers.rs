//! `rill workers [QUEUE]`: the registry, with each worker's health (SPEC.md, "Worker registry and health") and the
//! jobs it runs now.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value as Json, json};

use crate::context::{self, Context};
use crate::output;

#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// Only this queue's workers (default: every queue's).
    queue: Option<String>,
}

pub async fn gather(
    queues: &[rill::Queue<context::Json>],
) -> anyhow::Result<Vec<(rill::WorkerInfo, rill::Health)>> {
    let rule = rill::HealthRule::default();
    let mut out = Vec::new();
    for q in queues {
        out.extend(q.workers(&rule).await?);
    }
    Ok(out)
}

pub fn health_text(h: &rill::Health) -> String {
    match h {
        rill::Health::Healthy => "healthy".into(),
        rill::Health::Degraded(why) => format!("degraded: {why}"),
        rill::Health::Crashed => "crashed".into(),
        _ => "unknown".into(),
    }
}

pub const HEADERS: [&str; 9] = [
    "WORKER",
    "QUEUE",
    "HOST",
    "PID",
    "STATUS",
    "HEALTH",
    "IN-FLIGHT",
    "DONE",
    "FAILED",
];

pub fn row(w: &rill::WorkerInfo, h: &rill::Health) -> Vec<String> {
    vec![
        w.id.clone(),
        w.queue.clone(),
        w.host.clone(),
        w.pid.to_string(),
        w.status.clone(),
        health_text(h),
        format!("{}/{}", w.in_flight, w.concurrency),
        w.processed.to_string(),
        w.failed.to_string(),
    ]
}

pub fn to_json(w: &rill::WorkerInfo, h: &rill::Health, now: u64) -> Json {
    json!({
        "id": w.id,
        "queue": w.queue,
        "host": w.host,
        "pid": w.pid,
        "version": w.version,
        "status": w.status,
        "health": match h {
            rill::Health::Healthy => "healthy",
            rill::Health::Degraded(_) => "degraded",
            rill::Health::Crashed => "crashed",
            _ => "unknown",
        },
        "health_reason": match h {
            rill::Health::Degraded(why) => Some(why.as_str()),
            _ => None,
        },
        "concurrency": w.concurrency,
        "in_flight": w.in_flight,
        "processed": w.processed,
        "failed": w.failed,
        "lease_failures": w.lease_failures,
        "started_ms": w.started_ms,
        "last_beat_ms": w.last_beat_ms,
        "last_beat_age_ms": now.saturating_sub(w.last_beat_ms),
        "metadata": w.metadata,
        "capabilities": w.capabilities,
        "running": w.running.iter().map(|r| json!({
            "job": r.job_id,
            "started_ms": r.started_ms,
            "running_ms": now.saturating_sub(r.started_ms),
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(ctx: &Context, a: WorkersArgs) -> anyhow::Result<ExitCode> {
    let queues = ctx.queues_or_all(a.queue.as_deref()).await?;
    let workers = gather(&queues).await?;
    let now = output::now_ms();
    if ctx.json {
        output::print_json(&Json::Array(
            workers.iter().map(|(w, h)| to_json(w, h, now)).collect(),
        ));
    } else if workers.is_empty() {
        println!("no workers registered");
    } else {
        let rows: Vec<Vec<String>> = workers.iter().map(|(w, h)| row(w, h)).collect();
        print!("{}", output::table(&HEADERS, &rows));
        for (w, _) in workers.iter().filter(|(w, _)| !w.running.is_empty()) {
            println!("{} runs: {}", w.id, running_text(w, now));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `order-7 (12s), order-9 (3s)`, and how many more a worker runs than its record lists.
fn running_text(w: &rill::WorkerInfo, now: u64) -> String {
    let mut jobs: Vec<String> = w
        .running
        .iter()
        .map(|r| format!("{} ({})", r.job_id, output::ago(r.started_ms, now)))
        .collect();
    let unlisted = w.in_flight.saturating_sub(w.running.len() as u64);
    if unlisted > 0 {
        jobs.push(format!("and {unlisted} more"));
    }
    jobs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_as_words() {
        assert_eq!(health_text(&rill::Health::Healthy), "healthy");
        assert_eq!(health_text(&rill::Health::Crashed), "crashed");
        assert_eq!(
            health_text(&rill::Health::Degraded("cannot end deliveries".into())),
            "degraded: cannot end deliveries"
        );
    }
}
