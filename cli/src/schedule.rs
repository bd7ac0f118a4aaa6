//! `rill schedule add|list|pause|resume|remove`: cron and interval schedules that a queue's workers fire.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::context::{Context, Json};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule, or replace one of the same name (a paused one stays paused).
    #[command(
        after_help = "Examples:\n  rill schedule add nightly-report reports --cron '0 3 * * *' --tz Europe/Berlin --payload '{\"kind\":\"full\"}'\n  rill schedule add heartbeat-check monitors --every 30s --missed skip"
    )]
    Add(AddArgs),
    /// The queue's schedules: when each fires next, when it last fired, how many jobs it enqueued.
    #[command(
        after_help = "Examples:\n  rill schedule list reports\n  rill schedule list reports --json"
    )]
    List(QueueArg),
    /// Stop a schedule from firing until it is resumed.
    #[command(after_help = "Examples:\n  rill schedule pause nightly-report reports")]
    Pause(NameArgs),
    /// Resume a paused schedule from its next fire time after now.
    #[command(after_help = "Examples:\n  rill schedule resume nightly-report reports")]
    Resume(NameArgs),
    /// Delete a schedule (the jobs it enqueued stay).
    #[command(after_help = "Examples:\n  rill schedule remove nightly-report reports")]
    Remove(NameArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Schedule name (unique within the queue).
    name: String,
    /// The queue its jobs go to.
    queue: String,
    /// A cron expression: five fields (minute hour day month weekday), six with seconds first, or @daily etc.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    cron: Option<String>,
    /// The time zone the cron expression is read in (IANA name; default UTC).
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// A fixed interval instead (30s, 5m, 1h); the first fire is one interval from now.
    #[arg(long, value_parser = crate::parse_duration)]
    every: Option<Duration>,
    /// The job's payload as JSON (default null).
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Fire times missed while no worker ran: skip, once (default) or all:N (each, at most N).
    #[arg(long, default_value = "once", value_parser = parse_missed)]
    missed: rill::Missed,
    /// Priority level of the jobs it enqueues (see `rill queue priorities`; default 0).
    #[arg(long, short = 'p', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..16))]
    priority: u8,
}

#[derive(Args, Debug)]
pub struct QueueArg {
    /// The queue.
    queue: String,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// Schedule name.
    name: String,
    /// The queue.
    queue: String,
}

fn parse_missed(s: &str) -> Result<rill::Missed, String> {
    match s {
        "skip" => Ok(rill::Missed::Skip),
        "once" => Ok(rill::Missed::Once),
        _ => s
            .strip_prefix("all:")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .map(rill::Missed::All)
            .ok_or_else(|| format!("{s:?}: expected skip, once or all:N (N >= 1)")),
    }
}

pub async fn run(ctx: &Context, c: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match c {
        ScheduleCommand::Add(a) => add(ctx, a).await,
        ScheduleCommand::List(a) => list(ctx, &a.queue).await,
        ScheduleCommand::Pause(a) => change(ctx, a, "paused").await,
        ScheduleCommand::Resume(a) => change(ctx, a, "resumed").await,
        ScheduleCommand::Remove(a) => change(ctx, a, "removed").await,
    }
}

async fn add(ctx: &Context, a: AddArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    let payload: Json = match &a.payload {
        Some(p) => {
            serde_json::from_str(p).with_context(|| format!("--payload is not valid JSON: {p}"))?
        }
        None => Json::Null,
    };
    let schedule = match (&a.cron, a.every) {
        (Some(expr), _) => rill::Schedule::cron(expr).tz(a.tz.as_deref().unwrap_or("UTC")),
        (None, Some(every)) => rill::Schedule::every(every),
        (None, None) => bail!("give --cron EXPR or --every DURATION"),
    }
    .missed(a.missed)
    .priority(a.priority);
    ctx.connect().await?;
    let info = q.schedule(&a.name, schedule, &payload).await?;
    if ctx.json {
        output::print_json(&info_json(&info));
    } else {
        let next = info.next_ms.map_or("paused".into(), output::time);
        println!(
            "schedule {} on {}: {}; next {next}",
            info.name,
            a.queue,
            info.schedule.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Context, queue: &str) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(queue)?;
    ctx.connect().await?;
    let all = q.schedules().await?;
    if ctx.json {
        output::print_json(
            &json!({ "queue": queue, "schedules": all.iter().map(info_json).collect::<Vec<_>>() }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no schedules on {queue}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.schedule.describe(),
                s.next_ms.map_or_else(
                    || {
                        if s.paused {
                            "paused".into()
                        } else {
                            "never".into()
                        }
                    },
                    output::time,
                ),
                s.last_fire_ms.map_or("-".into(), output::time),
                s.fired.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["NAME", "WHEN", "NEXT", "LAST", "FIRED"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

async fn change(ctx: &Context, a: NameArgs, done: &str) -> anyhow::Result<ExitCode> {
    let q = ctx.queue(&a.queue)?;
    ctx.connect().await?;
    let found = match done {
        "paused" => q.pause_schedule(&a.name).await?,
        "resumed" => q.resume_schedule(&a.name).await?,
        _ => q.remove_schedule(&a.name).await?,
    };
    if ctx.json {
        output::print_json(
            &json!({ "queue": a.queue, "schedule": a.name, "found": found, "done": found.then_some(done) }),
        );
    } else if found {
        println!("schedule {} on {}: {done}", a.name, a.queue);
    } else {
        println!("no schedule {} on {}", a.name, a.queue);
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn info_json(s: &rill::ScheduleInfo) -> Json {
    let (missed, max) = match s.schedule.missed_policy() {
        rill::Missed::Skip => ("skip", None),
        rill::Missed::Once => ("once", None),
        rill::Missed::All(n) => ("all", Some(n)),
    };
    let payload = ciborium::from_reader::<ciborium::Value, _>(s.payload.as_slice())
        .map(output::from_cbor)
        .unwrap_or(Json::Null);
    json!({
        "name": s.name,
        "when": s.schedule.describe(),
        "missed": missed,
        "missed_max": max,
        "priority": s.schedule.level(),
        "paused": s.paused,
        "next_ms": s.next_ms,
        "last_fire_ms": s.last_fire_ms,
        "fired": s.fired,
        "payload": payload,
    })
}
