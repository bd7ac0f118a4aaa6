//! `rill stats [QUEUE]`: how many jobs are where, how fast they finish, how old the oldest waiting one is.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value as Json, json};

use crate::context::{self, Context};
use crate::output;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only this queue (default: every queue of the namespace).
    queue: Option<String>,
    /// Window the rates are measured over, from the events stream.
    #[arg(long, default_value = "1m", value_parser = crate::parse_duration)]
    window: Duration,
}

/// One queue's numbers.
pub struct QueueStats {
    pub name: String,
    pub counts: rill::Counts,
    pub recent: rill::Recent,
    pub window: Duration,
    pub paused: bool,
}

impl QueueStats {
    pub fn completed_per_sec(&self) -> f64 {
        self.recent.completed as f64 / self.window.as_secs_f64().max(0.001)
    }

    pub fn failed_per_sec(&self) -> f64 {
        (self.recent.retried + self.recent.dead) as f64 / self.window.as_secs_f64().max(0.001)
    }

    pub fn oldest_age(&self, now: u64) -> Option<String> {
        self.counts.oldest_waiting_ms.map(|ms| output::ago(ms, now))
    }

    pub fn to_json(&self, now: u64) -> Json {
        let c = &self.counts;
        json!({
            "queue": self.name,
            "paused": self.paused,
            "waiting": c.waiting,
            "delayed": c.delayed,
            "active": c.active,
            "parked": c.parked,
            "dead": c.dead,
            "consumer_lag": c.waiting,
            "oldest_waiting_age_ms": c.oldest_waiting_ms.map(|ms| now.saturating_sub(ms)),
            "window_s": self.window.as_secs_f64(),
            "completed": self.recent.completed,
            "retried": self.recent.retried,
            "dead_lettered": self.recent.dead,
            "stalled": self.recent.stalled,
            "completed_per_s": self.completed_per_sec(),
            "failed_per_s": self.failed_per_sec(),
            "rates_cover_window": self.recent.complete,
        })
    }
}

pub async fn gather(
    queues: &[rill::Queue<context::Json>],
    window: Duration,
) -> anyhow::Result<Vec<QueueStats>> {
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        out.push(QueueStats {
            name: q.name().to_owned(),
            counts: q.counts().await?,
            recent: q.recent(window).await?,
            window,
            paused: q.is_paused().await?,
        });
    }
    Ok(out)
}

pub const HEADERS: [&str; 10] = [
    "QUEUE", "WAITING", "DELAYED", "ACTIVE", "PARKED", "DEAD", "DONE/s", "FAILED/s", "OLDEST",
    "LAG",
];

pub fn row(s: &QueueStats, now: u64) -> Vec<String> {
    let c = &s.counts;
    let name = if s.paused {
        format!("{} (paused)", s.name)
    } else {
        s.name.clone()
    };
    vec![
        name,
        c.waiting.to_string(),
        c.delayed.to_string(),
        c.active.to_string(),
        c.parked.to_string(),
        c.dead.to_string(),
        format!("{:.1}", s.completed_per_sec()),
        format!("{:.1}", s.failed_per_sec()),
        s.oldest_age(now).unwrap_or_else(|| "-".into()),
        c.waiting.to_string(),
    ]
}

pub async fn run(ctx: &Context, a: StatsArgs) -> anyhow::Result<ExitCode> {
    let queues = ctx.queues_or_all(a.queue.as_deref()).await?;
    let stats = gather(&queues, a.window).await?;
    let now = output::now_ms();
    if ctx.json {
        output::print_json(&Json::Array(stats.iter().map(|s| s.to_json(now)).collect()));
    } else if stats.is_empty() {
        println!("no queues in namespace {:?} on {}", ctx.namespace, ctx.url);
    } else {
        let rows: Vec<Vec<String>> = stats.iter().map(|s| row(s, now)).collect();
        print!("{}", output::table(&HEADERS, &rows));
        println!(
            "DONE/s, FAILED/s: per second over the last {} (--window)",
            output::age(a.window)
        );
        if stats.iter().any(|s| !s.recent.complete) {
            println!("(rates cover less than the window where the events stream was trimmed)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
