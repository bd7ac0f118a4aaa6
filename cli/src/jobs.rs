//! `rill jobs list QUEUE --state S`, and `rill jobs show|cancel|promote|delete ID`. Without `--queue`, every queue of
//! the namespace is searched for ID, and an id found in several queues is refused with their names (ids are per
//! queue).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use crate::context::{self, Context};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// State, attempts, payload, progress, result or last error, and checkpoints of a job.
    #[command(
        after_help = "Examples:\n  rill jobs show order-42\n  rill jobs show 1732871234567-0 --queue emails --json\n\nA completed job shows as completed while its record is kept (24 h: jobs with a result or an id of\ntheir own) or, without one, while its completion is among the queue's newest 200 events."
    )]
    Show(JobArgs),
    /// Cancel a job: a waiting or delayed one never runs; a running one's process or handler is stopped.
    #[command(
        after_help = "Examples:\n  rill jobs cancel order-42\n  rill jobs cancel order-42 --queue emails"
    )]
    Cancel(JobArgs),
    /// Jobs in one state, a page at a time: id, attempts, age (or when due), and the worker of active ones.
    #[command(
        after_help = "Examples:\n  rill jobs list emails --state waiting\n  rill jobs list emails --state failed --limit 100\n  rill jobs list emails --state completed --json\n\nStates: waiting, active, delayed, failed (waiting for a retry), parked, dead, completed (as long as\nthe events stream keeps their completion). A full page ends with the --after to pass for the next one."
    )]
    List(ListArgs),
    /// Run a delayed job, or a failed one waiting for its retry, now (its attempts stay as they are).
    #[command(
        after_help = "Examples:\n  rill jobs promote order-42\n  rill jobs promote order-42 --queue emails"
    )]
    Promote(JobArgs),
    /// Delete a job in any state for good (record and checkpoints too); a running one is cancelled instead.
    #[command(
        after_help = "Examples:\n  rill jobs delete order-42\n  rill jobs delete order-42 --queue emails"
    )]
    Delete(JobArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The queue.
    queue: String,
    /// waiting, active, delayed, failed, parked, dead or completed.
    #[arg(long, short, default_value = "waiting", value_parser = parse_state)]
    state: rill::JobState,
    /// Most jobs on the page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long)]
    after: Option<String>,
}

fn parse_state(s: &str) -> Result<rill::JobState, String> {
    use rill::JobState as S;
    Ok(match s {
        "waiting" => S::Waiting,
        "active" => S::Active,
        "delayed" => S::Delayed,
        "failed" => S::Failed,
        "parked" => S::Parked,
        "dead" => S::Dead,
        "completed" => S::Completed,
        _ => return Err("one of waiting, active, delayed, failed, parked, dead, completed".into()),
    })
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// Job id.
    id: String,
    /// The job's queue (default: search every queue; an id found in several is refused, naming them).
    #[arg(long, short)]
    queue: Option<String>,
}

/// The queue that knows job `id`, with what it knows. Job ids are per queue: when several queues know `id`,
/// this refuses (naming them) rather than act on one of them.
async fn find(
    ctx: &Context,
    id: &str,
    queue: Option<&str>,
) -> anyhow::Result<(rill::Queue<context::Json>, rill::JobInfo)> {
    let mut queues = ctx.queues_or_all(queue).await?;
    let mut found = Vec::new();
    for q in &queues {
        let info = q.job(id).await?;
        if info.state != rill::JobState::Unknown {
            found.push((q.clone(), info));
        }
    }
    if found.is_empty() && queue.is_none() {
        // Queues a foreign producer fed without listing them (`<ns>:queues`): found by a key scan.
        let listed: Vec<String> = queues.iter().map(|q| q.name().to_owned()).collect();
        for name in ctx.client.discover_queues().await? {
            if listed.contains(&name) {
                continue;
            }
            let q = ctx.queue(&name)?;
            let info = q.job(id).await?;
            if info.state != rill::JobState::Unknown {
                found.push((q.clone(), info));
            }
            queues.push(q);
        }
    }
    if found.len() > 1 {
        let listed: Vec<String> = found
            .iter()
            .map(|(q, info)| format!("{} ({})", q.name(), info.state.as_str()))
            .collect();
        bail!(
            "job {id:?} is in {} queues: {}; say which with --queue",
            found.len(),
            listed.join(", ")
        );
    }
    if let Some(hit) = found.pop() {
        return Ok(hit);
    }
    match queue {
        Some(q) => bail!(
            "job {id:?} not found in queue {q:?} (never existed, or finished and its record expired)"
        ),
        None => bail!(
            "job {id:?} not found in any queue of namespace {:?} (searched: {})",
            ctx.namespace,
            if queues.is_empty() {
                "none".to_owned()
            } else {
                queues
                    .iter()
                    .map(|q| q.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    }
}

/// The events that name job `id`, oldest first (the events stream keeps about the last 10,000).
async fn history(q: &rill::Queue<context::Json>, id: &str) -> anyhow::Result<Vec<rill::Event>> {
    let events = q.events(None, 100_000).await?;
    Ok(events
        .into_iter()
        .filter(|e| {
            e.job_id == id
                || (e.kind == "completed"
                    && e.fields
                        .get("ids")
                        .is_some_and(|ids| ids.split(' ').any(|j| j == id)))
        })
        .collect())
}

pub async fn run(ctx: &Context, c: JobsCommand) -> anyhow::Result<ExitCode> {
    match c {
        JobsCommand::Show(a) => show(ctx, a).await,
        JobsCommand::Cancel(a) => cancel(ctx, a).await,
        JobsCommand::List(a) => list(ctx, a).await,
        JobsCommand::Promote(a) => promote(ctx, a).await,
        JobsCommand::Delete(a) => delete(ctx, a).await,
    }
}

/// Attempts as `jobs show` prints them: the number, with what it means where it could be misread.
fn attempts_text(info: &rill::JobInfo) -> String {
    match info.state {
        rill::JobState::Active => format!("{} (the running one included)", info.attempts),
        rill::JobState::Waiting if info.attempts == 0 && info.last_error.is_some() => {
            "0 (requeued from the dead letters with a full set of attempts)".into()
        }
        rill::JobState::Completed if info.attempts == 0 => {
            "- (not recorded: known from its completed event)".into()
        }
        _ => info.attempts.to_string(),
    }
}

/// Everything known of job `info` on `q` as one JSON document: what `jobs show --json` prints and the dashboard's
/// job page shows. Reads its checkpoints (newest 10) and the events naming it.
pub async fn detail(q: &rill::Queue<context::Json>, info: &rill::JobInfo) -> anyhow::Result<Json> {
    let checkpoints = q.checkpoints(&info.id, 10).await?;
    let history = history(q, &info.id).await?;
    let decode = |b: &Option<Vec<u8>>| b.as_deref().map(output::cbor_to_json);
    Ok(json!({
        "id": info.id,
        "queue": q.name(),
        "state": info.state.as_str(),
        "attempts": info.attempts,
        "attempts_text": attempts_text(info),
        "priority": info.priority,
        "entry_id": info.entry_id,
        "owner": info.owner.as_ref().map(|(c, t)| json!({"worker": c, "token": t})),
        "payload": decode(&info.payload),
        "progress": decode(&info.progress),
        "result": decode(&info.result),
        "last_error": info.last_error,
        "finished_ms": info.finished_ms,
        "history": history.iter().map(|e| {
            let mut doc = output::event_json(e);
            // A batch's other job ids say nothing about this job.
            if let Some(fields) = doc.as_object_mut() {
                fields.remove("ids");
            }
            doc
        }).collect::<Vec<_>>(),
        "checkpoints": checkpoints.iter().map(|c| json!({
            "version": c.version,
            "written_ms": c.written_ms,
            "written_by": c.written_by,
            "label": c.label,
            "bytes": c.state.len(),
            "state": output::cbor_to_json(&c.state),
        })).collect::<Vec<_>>(),
    }))
}

/// One job of a listing as JSON (`jobs list --json`, the dashboard's API).
pub fn summary_json(j: &rill::JobSummary) -> Json {
    json!({
        "id": j.id,
        "attempts": j.attempts,
        "at_ms": j.at_ms,
        "owner": j.owner,
        "error": j.error,
    })
}

async fn show(ctx: &Context, a: JobArgs) -> anyhow::Result<ExitCode> {
    let (q, info) = find(ctx, &a.id, a.queue.as_deref()).await?;
    let doc = detail(&q, &info).await?;
    if ctx.json {
        output::print_json(&doc);
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        ("job", info.id.clone()),
        ("queue", q.name().to_owned()),
        ("state", info.state.as_str().to_owned()),
        ("attempts", attempts_text(&info)),
    ];
    if info.priority > 0 {
        lines.push(("priority", format!("level {}", info.priority)));
    }
    if let Some((worker, token)) = &info.owner {
        lines.push(("running on", format!("{worker} (delivery {token})")));
    }
    let mut field = |name: &'static str, v: &Json| {
        if !v.is_null() {
            lines.push((name, output::compact(v, 200)));
        }
    };
    field("payload", &doc["payload"]);
    field("progress", &doc["progress"]);
    field("result", &doc["result"]);
    if let Some(e) = &info.last_error {
        lines.push(("last error", e.clone()));
    }
    if let Some(ms) = info.finished_ms {
        lines.push(("finished", output::time(ms)));
    }
    for (k, v) in lines {
        println!("{:<11} {v}", format!("{k}:"));
    }
    let none = Vec::new();
    let history = doc["history"].as_array().unwrap_or(&none);
    let checkpoints = doc["checkpoints"].as_array().unwrap_or(&none);
    if !history.is_empty() {
        println!("history (from the events stream):");
        for e in history {
            let kind = e["event"].as_str().unwrap_or("?");
            let mut line = format!(
                "  {}  {kind:<9}",
                output::time(e["ms"].as_u64().unwrap_or(0))
            );
            if let Some(n) = e["attempt"].as_u64().filter(|n| *n > 0) {
                line.push_str(&format!(" attempts {n}"));
            }
            for k in ["reason", "error"] {
                if let Some(v) = e[k].as_str() {
                    line.push_str(&format!("  {k}={}", output::one_line(v, 120)));
                }
            }
            println!("{line}");
        }
    }
    if !checkpoints.is_empty() {
        println!("checkpoints (newest first):");
        let rows: Vec<Vec<String>> = checkpoints
            .iter()
            .map(|c| {
                vec![
                    c["version"].to_string(),
                    output::time(c["written_ms"].as_u64().unwrap_or(0)),
                    c["written_by"].as_str().unwrap_or("").to_owned(),
                    c["label"].as_str().unwrap_or("-").to_owned(),
                    c["bytes"].to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["  VERSION", "WRITTEN", "BY", "LABEL", "BYTES"], &rows)
        );
        println!(
            "newest checkpoint state: {}",
            output::compact(&doc["checkpoints"][0]["state"], 200)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(ctx: &Context, a: JobArgs) -> anyhow::Result<ExitCode> {
    let (q, info) = find(ctx, &a.id, a.queue.as_deref()).await?;
    let outcome = q.cancel(&a.id).await?;
    let (word, text) = match outcome {
        rill::CancelOutcome::Removed => (
            "removed",
            "cancelled: it had not started and will never run",
        ),
        rill::CancelOutcome::Signalled => (
            "signalled",
            "cancel sent: the worker running it stops it and records it as cancelled",
        ),
        _ => (
            "not_found",
            "nothing to cancel: the job is not waiting, delayed or running",
        ),
    };
    if ctx.json {
        output::print_json(&json!({
            "id": a.id, "queue": q.name(), "state_before": info.state.as_str(), "outcome": word,
        }));
    } else {
        println!(
            "job {} ({}, was {}): {text}",
            a.id,
            q.name(),
            info.state.as_str()
        );
    }
    Ok(if word == "not_found" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn list(ctx: &Context, a: ListArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let page = q
        .jobs(a.state, a.after.as_deref(), a.limit as usize)
        .await?;
    let now = output::now_ms();
    if ctx.json {
        output::print_json(&json!({
            "queue": q.name(),
            "state": a.state.as_str(),
            "jobs": page.jobs.iter().map(summary_json).collect::<Vec<_>>(),
            "next": page.next,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if page.jobs.is_empty() {
        println!("no {} jobs on {}", a.state.as_str(), q.name());
        return Ok(ExitCode::SUCCESS);
    }
    // The time column says what the time is in this state.
    let (when, future) = match a.state {
        rill::JobState::Waiting => ("WAITING", false),
        rill::JobState::Active => ("RUNNING", false),
        rill::JobState::Delayed | rill::JobState::Failed => ("DUE IN", true),
        rill::JobState::Parked => ("PARKED", false),
        rill::JobState::Dead => ("DIED", false),
        _ => ("FINISHED", false),
    };
    let mut headers = vec!["JOB", "ATTEMPTS", when];
    let active = a.state == rill::JobState::Active;
    let with_error = page.jobs.iter().any(|j| j.error.is_some());
    if active {
        headers.push("WORKER");
    }
    if with_error {
        headers.push("ERROR");
    }
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|j| {
            let time = match j.at_ms {
                None => "-".to_owned(),
                Some(ms) if future && ms > now => output::age(Duration::from_millis(ms - now)),
                Some(_) if future => "now".to_owned(),
                Some(ms) => format!("{} ago", output::ago(ms, now)),
            };
            let mut row = vec![
                j.id.clone(),
                j.attempts.map_or("-".to_owned(), |n| n.to_string()),
                time,
            ];
            if active {
                row.push(j.owner.clone().unwrap_or_default());
            }
            if with_error {
                row.push(output::one_line(j.error.as_deref().unwrap_or(""), 60));
            }
            row
        })
        .collect();
    print!("{}", output::table(&headers, &rows));
    if let Some(next) = page.next {
        println!(
            "more: rill jobs list {} --state {} --after {next}",
            q.name(),
            a.state.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn promote(ctx: &Context, a: JobArgs) -> anyhow::Result<ExitCode> {
    let (q, info) = find(ctx, &a.id, a.queue.as_deref()).await?;
    let moved = q.promote(&a.id).await?;
    if ctx.json {
        output::print_json(&json!({
            "id": a.id, "queue": q.name(), "state_before": info.state.as_str(), "promoted": moved,
        }));
    } else if moved {
        println!(
            "job {} ({}, was {}): on the queue now",
            a.id,
            q.name(),
            info.state.as_str()
        );
    } else {
        println!(
            "job {} ({}) is {}: only delayed jobs and failed ones waiting for their retry can be promoted",
            a.id,
            q.name(),
            info.state.as_str()
        );
    }
    Ok(if moved {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn delete(ctx: &Context, a: JobArgs) -> anyhow::Result<ExitCode> {
    let (q, info) = find(ctx, &a.id, a.queue.as_deref()).await?;
    let (word, text) = match q.delete(&a.id).await? {
        rill::Deleted::Removed(from) => ("deleted", format!("deleted (it was {})", from.as_str())),
        rill::Deleted::CancelSent => (
            "cancel_sent",
            "running: cancel sent; its worker stops it and records it as cancelled (delete it then to drop the record)"
                .to_owned(),
        ),
        _ => ("not_found", "already gone".to_owned()),
    };
    if ctx.json {
        output::print_json(&json!({
            "id": a.id, "queue": q.name(), "state_before": info.state.as_str(), "outcome": word,
        }));
    } else {
        println!("job {} ({}): {text}", a.id, q.name());
    }
    Ok(if word == "not_found" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
