//! `rill dead list|retry|purge QUEUE`: the dead-letter stream (SPEC.md, "Dead letters").

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum DeadCommand {
    /// Dead letters, oldest first: job id, reason, error, attempts, when.
    #[command(
        after_help = "Examples:\n  rill dead list emails\n  rill dead list emails --limit 1000 --json"
    )]
    List(ListArgs),
    /// Put dead letters back on the queue as fresh jobs (a full set of attempts).
    #[command(
        after_help = "Examples:\n  rill dead retry emails order-42 order-43\n  rill dead retry emails --all"
    )]
    Retry(RetryArgs),
    /// Delete dead letters for good: all of them, or those older than a duration.
    #[command(
        after_help = "Examples:\n  rill dead purge emails --older-than 7d\n  rill dead purge emails"
    )]
    Purge(PurgeArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Queue name.
    queue: String,
    /// Most dead letters shown.
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: usize,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// Queue name.
    queue: String,
    /// Job ids to retry.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<String>,
    /// Retry every dead letter of the queue.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Queue name.
    queue: String,
    /// Only dead letters that died longer ago than this (7d, 12h); default: every one.
    #[arg(long, value_parser = crate::parse_duration)]
    older_than: Option<Duration>,
    /// Purge without asking (for scripts; without a terminal, rill refuses rather than ask).
    #[arg(long, short)]
    yes: bool,
}

pub async fn run(ctx: &Context, c: DeadCommand) -> anyhow::Result<ExitCode> {
    match c {
        DeadCommand::List(a) => list(ctx, a).await,
        DeadCommand::Retry(a) => retry(ctx, a).await,
        DeadCommand::Purge(a) => purge(ctx, a).await,
    }
}

/// A dead letter as JSON (`dead list --json`, the dashboard's API).
pub fn dead_json(d: &rill::DeadLetter) -> Json {
    let payload = d
        .fields
        .iter()
        .find(|(k, _)| k == b"payload")
        .map(|(_, v)| output::cbor_to_json(v));
    json!({
        "job_id": d.job_id, "entry_id": d.entry_id, "reason": d.reason, "error": d.error,
        "attempts": d.attempts, "dead_ms": d.dead_ms, "payload": payload,
    })
}

async fn list(ctx: &Context, a: ListArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let dead = q.dead_letters(None, a.limit).await?;
    let total = q.counts().await?.dead;
    if ctx.json {
        let items: Vec<Json> = dead.iter().map(dead_json).collect();
        output::print_json(&json!({ "queue": a.queue, "total": total, "dead": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if dead.is_empty() {
        println!("no dead letters in {}", a.queue);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.job_id.clone(),
                d.reason.clone(),
                d.attempts.to_string(),
                output::time(d.dead_ms),
                one_line(&d.error, 80),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["JOB", "REASON", "ATTEMPTS", "DIED", "ERROR"], &rows)
    );
    if total > dead.len() as u64 {
        println!("({} of {total} shown; --limit N for more)", dead.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn one_line(s: &str, max: usize) -> String {
    output::one_line(s, max)
}

async fn retry(ctx: &Context, a: RetryArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let out = if a.all {
        q.retry_all_dead().await?
    } else {
        let ids: Vec<&str> = a.ids.iter().map(String::as_str).collect();
        q.retry_dead(&ids).await?
    };
    if ctx.json {
        output::print_json(&json!({
            "queue": a.queue, "requeued": out.requeued, "missing": out.missing, "live": out.live,
        }));
    } else {
        println!("requeued {} job(s) on {}", out.requeued.len(), a.queue);
        for id in &out.missing {
            println!("  {id}: not a dead letter of {}", a.queue);
        }
        for id in &out.live {
            println!("  {id}: left dead, the job id is live again (enqueued since it died)");
        }
    }
    if !a.all && out.requeued.len() < a.ids.len() {
        bail!(
            "{} of {} job(s) could not be requeued",
            a.ids.len() - out.requeued.len(),
            a.ids.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(ctx: &Context, a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let which = match a.older_than {
        Some(d) => format!(
            "the dead letters of {} older than {}",
            a.queue,
            output::age(d)
        ),
        None => format!("all {} dead letters of {}", q.counts().await?.dead, a.queue),
    };
    if !crate::context::confirm(&format!("delete {which} for good?"), a.yes)? {
        if !ctx.json {
            println!("nothing done");
        }
        return Ok(ExitCode::FAILURE);
    }
    let n = q.purge_dead(a.older_than).await?;
    let left = q.counts().await?.dead;
    if ctx.json {
        output::print_json(&json!({ "queue": a.queue, "purged": n, "left": left }));
    } else {
        println!("purged {n} dead letter(s) from {}; {left} left", a.queue);
    }
    Ok(ExitCode::SUCCESS)
}
