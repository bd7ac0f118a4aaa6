//! `rill queue create|pause|resume|drain|remove|limit|priorities|lease|timeout QUEUE`: what an operator does to a whole queue. The
//! destructive ones ask first on a terminal; scripts say `--yes`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::context::{Context, confirm};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Create the queue, optionally spread over N partitions (hash tags) so it uses every master of a Redis
    /// Cluster; every other command takes the queue's name unchanged. Do it before workers start.
    #[command(
        after_help = "Examples:\n  rill queue create orders --partitions 6\n  rill queue create orders --json"
    )]
    Create(CreateArgs),
    /// Stop every worker of the queue from taking jobs (running ones finish); kept across worker restarts.
    #[command(after_help = "Examples:\n  rill queue pause emails\n  rill queue pause emails --yes")]
    Pause(QueueArgs),
    /// Let a paused queue's workers take jobs again.
    #[command(
        after_help = "Examples:\n  rill queue resume emails\n  rill queue resume emails --yes"
    )]
    Resume(QueueArgs),
    /// Delete every waiting and delayed job (failed ones waiting for a retry too); running, parked and dead
    /// ones stay.
    #[command(
        after_help = "Examples:\n  rill queue drain emails\n  rill queue drain emails --yes --json"
    )]
    Drain(QueueArgs),
    /// Delete every key of the queue: jobs in every state, dead letters, records, checkpoints, events,
    /// signals. Refused while live workers are registered, unless --force.
    #[command(
        after_help = "Examples:\n  rill queue remove emails\n  rill queue remove emails --yes --force"
    )]
    Remove(RemoveArgs),
    /// Show, set or clear the queue's limits, across all its workers: at most N job starts in any window
    /// (--rate), at most K jobs running at once (--concurrency); with --per-key FIELD, those limits apply to
    /// each value of the job header FIELD (a tenant, an account), and keys with a backlog take turns.
    #[command(
        after_help = "Examples:\n  rill queue limit emails --rate 100/s\n  rill queue limit emails --rate 10/500ms --concurrency 20\n  rill queue limit emails --per-key x-tenant --concurrency 2 --rate 10/s\n  rill enqueue emails '{\"to\": \"a@b.c\"}' --header x-tenant=acme\n  rill queue limit emails\n  rill queue limit emails --clear\n  rill queue limit emails --clear-per-key"
    )]
    Limit(LimitArgs),
    /// Show or set the queue's priority levels: jobs on level 0 are taken first, then level 1, and so on
    /// (--levels, strict), or each level starts a share of reads in proportion to its weight (--weights).
    #[command(
        after_help = "Examples:\n  rill queue priorities emails --levels 3\n  rill queue priorities emails --weights 6,3,1\n  rill queue priorities emails\n  rill queue priorities emails --levels 1    (no priorities)\n  rill enqueue emails '{\"to\": \"a@b.c\"}' --priority 2"
    )]
    Priorities(PrioritiesArgs),
    /// Show or set the lease every worker of the queue uses: how long a job may go without a renewal before
    /// another worker takes it over. The first worker to start sets it; restart workers after changing it.
    #[command(after_help = "Examples:\n  rill queue lease emails\n  rill queue lease emails 2m")]
    Lease(LeaseArgs),
    /// Show or set the queue's default time limit for one attempt of a job without a limit of its own (workers
    /// given --timeout keep theirs). Workers read it when they start.
    #[command(
        after_help = "Examples:\n  rill queue timeout emails\n  rill queue timeout emails 5m\n  rill queue timeout emails --clear"
    )]
    Timeout(TimeoutArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The queue.
    pub queue: String,
    /// Partitions, 2 to 256 (none: one key set, one hash slot).
    #[arg(long)]
    pub partitions: Option<usize>,
}

#[derive(Args, Debug)]
pub struct TimeoutArgs {
    /// The queue.
    queue: String,
    /// The new default limit (30s, 5m); without it, shows the current one.
    #[arg(value_parser = crate::parse_duration, conflicts_with = "clear")]
    limit: Option<std::time::Duration>,
    /// Remove the default: jobs without a limit of their own run as long as they take.
    #[arg(long)]
    clear: bool,
}

#[derive(Args, Debug)]
pub struct LeaseArgs {
    /// The queue.
    queue: String,
    /// The new lease (30s, 2m); without it, shows the current one.
    #[arg(value_parser = crate::parse_duration)]
    lease: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct PrioritiesArgs {
    /// The queue.
    queue: String,
    /// Number of levels, 1 to 16, read strictly in order (1: no priorities).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=16), conflicts_with = "weights")]
    levels: Option<u8>,
    /// One weight per level (2 to 16 of them), comma-separated: weighted reads, so no level starves.
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<u32>>,
}

#[derive(Args, Debug)]
pub struct LimitArgs {
    /// The queue.
    queue: String,
    /// Most starts per window: N/s, N/m, N/h or N/<duration> (10/500ms).
    #[arg(long, value_parser = parse_rate, conflicts_with = "clear")]
    rate: Option<(u32, std::time::Duration)>,
    /// Most jobs running at once (handed out and not yet finished).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "clear")]
    concurrency: Option<u32>,
    /// Apply --rate and --concurrency to each key: the value of this job header (x-tenant; `tenant` means
    /// x-tenant). Replaces earlier per-key limits; the queue's own stay.
    #[arg(long, value_name = "FIELD", conflicts_with_all = ["clear", "clear_per_key"])]
    per_key: Option<String>,
    /// Remove the queue's rate and concurrency limits (per-key limits stay).
    #[arg(long)]
    clear: bool,
    /// Remove the per-key limits (jobs they hold back are then handed out in turn).
    #[arg(long)]
    clear_per_key: bool,
}

/// `100/s`, `10/500ms`, `5/1m`: starts and the window.
fn parse_rate(s: &str) -> Result<(u32, std::time::Duration), String> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected N/PERIOD, like 100/s or 10/500ms"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{n:?}: the number of starts must be at least 1"))?;
    let per = match per.trim() {
        "s" => std::time::Duration::from_secs(1),
        "m" => std::time::Duration::from_secs(60),
        "h" => std::time::Duration::from_secs(3600),
        other => crate::parse_duration(other)?,
    };
    Ok((n, per))
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    /// The queue.
    queue: String,
    /// Do it without asking (for scripts; without a terminal, rill refuses rather than ask).
    #[arg(long, short)]
    yes: bool,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[command(flatten)]
    target: QueueArgs,
    /// Remove it even while workers are registered (they would recreate some of its keys: stop them too).
    #[arg(long)]
    force: bool,
}

pub async fn run(ctx: &Context, c: QueueCommand) -> anyhow::Result<ExitCode> {
    match c {
        QueueCommand::Create(a) => create(ctx, a).await,
        QueueCommand::Pause(a) => pause_or_resume(ctx, a, true).await,
        QueueCommand::Resume(a) => pause_or_resume(ctx, a, false).await,
        QueueCommand::Drain(a) => drain(ctx, a).await,
        QueueCommand::Remove(a) => remove(ctx, a).await,
        QueueCommand::Limit(a) => limit(ctx, a).await,
        QueueCommand::Priorities(a) => priorities(ctx, a).await,
        QueueCommand::Lease(a) => lease(ctx, a).await,
        QueueCommand::Timeout(a) => timeout(ctx, a).await,
    }
}

fn declined(ctx: &Context) -> ExitCode {
    if !ctx.json {
        println!("nothing done");
    }
    ExitCode::FAILURE
}

async fn pause_or_resume(ctx: &Context, a: QueueArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let verb = if pause { "pause" } else { "resume" };
    if !confirm(&format!("{verb} queue {}?", q.name()), a.yes)? {
        return Ok(declined(ctx));
    }
    let signal = if pause {
        q.pause().await?
    } else {
        q.resume().await?
    };
    if ctx.json {
        output::print_json(&json!({"queue": q.name(), "paused": pause, "signal": signal}));
    } else if pause {
        println!(
            "queue {} paused: its workers take no new jobs until `rill queue resume {0}`",
            q.name()
        );
    } else {
        println!("queue {} resumed", q.name());
    }
    Ok(ExitCode::SUCCESS)
}

async fn drain(ctx: &Context, a: QueueArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let c = q.counts().await?;
    let question = format!(
        "delete the {} waiting and {} delayed jobs of {}?",
        c.waiting,
        c.delayed,
        q.name()
    );
    if !confirm(&question, a.yes)? {
        return Ok(declined(ctx));
    }
    let d = q.drain().await?;
    if ctx.json {
        output::print_json(&json!({"queue": q.name(), "waiting": d.waiting, "delayed": d.delayed}));
    } else {
        println!(
            "drained {}: {} waiting and {} delayed jobs deleted",
            q.name(),
            d.waiting,
            d.delayed
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(ctx: &Context, a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.target.queue).await?;
    let c = q.counts().await?;
    let question = format!(
        "remove queue {} and everything in it ({} waiting, {} active, {} delayed, {} dead)?",
        q.name(),
        c.waiting,
        c.active,
        c.delayed,
        c.dead
    );
    if !confirm(&question, a.target.yes)? {
        return Ok(declined(ctx));
    }
    let keys = match q.remove(a.force).await {
        Ok(n) => n,
        Err(rill::Error::QueueInUse { queue, workers }) => anyhow::bail!(
            "queue {queue:?} has {} live worker(s) ({}): stop them first (rill signal send {queue} stop), or \
             pass --force",
            workers.len(),
            workers.join(", ")
        ),
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        output::print_json(&json!({"queue": q.name(), "keys_removed": keys}));
    } else {
        println!("removed queue {} ({keys} keys)", q.name());
    }
    Ok(ExitCode::SUCCESS)
}

async fn limit(ctx: &Context, a: LimitArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    if let Some(field) = &a.per_key {
        if a.rate.is_none() && a.concurrency.is_none() {
            anyhow::bail!(
                "--per-key needs --rate, --concurrency or both: the limits each key gets"
            );
        }
        let field = if field.starts_with("x-") {
            field.clone()
        } else {
            format!("x-{field}")
        };
        let mut limit = rill::KeyLimit::new(field);
        if let Some((n, per)) = a.rate {
            limit = limit.rate(n, per);
        }
        if let Some(k) = a.concurrency {
            limit = limit.concurrency(k);
        }
        q.set_key_limit(&limit).await?;
    } else {
        if let Some((n, per)) = a.rate {
            q.set_rate_limit(n, per).await?;
        }
        if let Some(k) = a.concurrency {
            q.set_concurrency_limit(k).await?;
        }
    }
    if a.clear {
        q.clear_rate_limit().await?;
        q.clear_concurrency_limit().await?;
    }
    if a.clear_per_key {
        q.clear_key_limit().await?;
    }
    let rate = q.rate_limit().await?;
    let cap = q.concurrency_limit().await?;
    let keyed = q.key_limit().await?;
    let per_ms =
        |(n, per): (u32, std::time::Duration)| json!({"max": n, "per_ms": per.as_millis() as u64});
    if ctx.json {
        output::print_json(&json!({
            "queue": a.queue,
            "rate_limit": rate.map(per_ms),
            "concurrency_limit": cap,
            "per_key": keyed.as_ref().map(|k| json!({
                "field": k.field(),
                "rate_limit": k.max_rate().map(per_ms),
                "concurrency_limit": k.max_concurrency(),
            })),
        }));
    } else {
        match rate {
            Some((n, per)) => println!("{}: at most {n} starts per {}", a.queue, output::age(per)),
            None => println!("{}: no rate limit", a.queue),
        }
        match cap {
            Some(k) => println!("{}: at most {k} jobs running at once", a.queue),
            None => println!("{}: no concurrency limit", a.queue),
        }
        match keyed {
            Some(k) => {
                let mut each = Vec::new();
                if let Some((n, per)) = k.max_rate() {
                    each.push(format!("at most {n} starts per {}", output::age(per)));
                }
                if let Some(c) = k.max_concurrency() {
                    each.push(format!("at most {c} running at once"));
                }
                println!(
                    "{}: per key ({}): {}; keys with a backlog take turns",
                    a.queue,
                    k.field(),
                    each.join(", ")
                );
            }
            None => println!("{}: no per-key limits", a.queue),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn priorities(ctx: &Context, a: PrioritiesArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    let wanted = match (a.levels, &a.weights) {
        (Some(n), _) => Some(rill::Priorities::strict(n)?),
        (None, Some(w)) => Some(rill::Priorities::weighted(w)?),
        (None, None) => None,
    };
    if let Some(p) = wanted {
        q.set_priorities(&p).await?;
    }
    let p = q.priorities().await?;
    if ctx.json {
        output::print_json(&json!({
            "queue": a.queue,
            "levels": p.levels(),
            "weights": p.weights(),
        }));
    } else if p.levels() == 1 {
        println!("{}: no priority levels (one level)", a.queue);
    } else {
        match p.weights() {
            None => println!(
                "{}: {} priority levels, 0 to {}, taken strictly in order",
                a.queue,
                p.levels(),
                p.levels() - 1
            ),
            Some(w) => println!(
                "{}: {} priority levels, 0 to {}, weighted {}",
                a.queue,
                p.levels(),
                p.levels() - 1,
                w.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(ctx: &Context, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    let parts = match a.partitions {
        Some(n) => q.set_partitions(n).await?.tags().to_vec(),
        None => {
            q.create().await?;
            q.partitions()
                .await?
                .map(|p| p.tags().to_vec())
                .unwrap_or_default()
        }
    };
    if ctx.json {
        output::print_json(
            &json!({"queue": a.queue, "partitions": parts.len().max(1), "tags": parts}),
        );
    } else if parts.is_empty() {
        println!("{}: created", a.queue);
    } else {
        println!(
            "{}: {} partitions ({})",
            a.queue,
            parts.len(),
            parts.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn lease(ctx: &Context, a: LeaseArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    if let Some(d) = a.lease {
        q.set_lease(d).await?;
    }
    let lease = q.lease().await?;
    if ctx.json {
        output::print_json(&json!({
            "queue": a.queue,
            "lease_ms": lease.map(|d| d.as_millis() as u64),
        }));
    } else {
        match lease {
            Some(d) => println!(
                "{}: lease {} for every worker{}",
                a.queue,
                humantime::format_duration(d),
                if a.lease.is_some() {
                    " (workers already running keep theirs until they restart)"
                } else {
                    ""
                }
            ),
            None => println!(
                "{}: no lease set yet (the first worker to start sets its own)",
                a.queue
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn timeout(ctx: &Context, a: TimeoutArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    if a.clear || a.limit.is_some() {
        q.set_default_timeout(a.limit).await?;
    }
    let limit = q.default_timeout().await?;
    if ctx.json {
        output::print_json(&json!({
            "queue": a.queue,
            "timeout_ms": limit.map(|d| d.as_millis() as u64),
        }));
    } else {
        match limit {
            Some(d) => println!(
                "{}: jobs without a limit of their own stop after {} (workers read it when they start)",
                a.queue,
                humantime::format_duration(d)
            ),
            None => println!("{}: no default time limit", a.queue),
        }
    }
    Ok(ExitCode::SUCCESS)
}
