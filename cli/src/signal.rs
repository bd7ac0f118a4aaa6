//! `rill signal send|history QUEUE`: control signals (SPEC.md, "Signals").

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum SignalCommand {
    /// Send a signal to the queue (every worker), one worker, or one job.
    #[command(
        after_help = "cancel takes --job; pause and resume act on the queue, or with --job on one job; quiet, stop\nand custom:NAME go to every worker of the queue, or with --worker to one.\n\nExamples:\n  rill signal \
                            send emails pause\n  rill signal send emails resume\n  rill signal send emails cancel \
                            --job order-42\n  rill signal send emails pause --job report-7   # park a long job at \
                            its checkpoint\n  rill signal send emails quiet --worker host-123-ab12cd34\n  rill \
                            signal send emails custom:reload --payload '{\"config\":\"v2\"}'"
    )]
    Send(SendArgs),
    /// Signals sent, newest last, with what each receiver did with them.
    #[command(
        after_help = "Examples:\n  rill signal history emails\n  rill signal history emails --kind cancel \
                            --since 1h --json"
    )]
    History(HistoryArgs),
}

#[derive(Args, Debug)]
pub struct Target {
    /// For one job (cancel, pause, resume).
    #[arg(long, conflicts_with = "worker")]
    job: Option<String>,
    /// For one worker, by its id (quiet, stop, custom).
    #[arg(long)]
    worker: Option<String>,
}

impl Target {
    fn get(&self) -> Option<rill::Target> {
        match (&self.job, &self.worker) {
            (Some(j), _) => Some(rill::Target::Job(j.clone())),
            (_, Some(w)) => Some(rill::Target::Worker(w.clone())),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Queue name.
    queue: String,
    /// cancel, pause, resume, quiet, stop, or custom:NAME.
    #[arg(value_parser = parse_kind)]
    kind: rill::SignalKind,
    #[command(flatten)]
    target: Target,
    /// JSON payload (for custom signals).
    #[arg(long)]
    payload: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Queue name.
    queue: String,
    /// Only this kind.
    #[arg(long, value_parser = parse_kind)]
    kind: Option<rill::SignalKind>,
    #[command(flatten)]
    target: Target,
    /// Only signals sent within this long (1h, 30m).
    #[arg(long, value_parser = crate::parse_duration)]
    since: Option<Duration>,
    /// Most signals shown (the newest).
    #[arg(long, short = 'n', default_value_t = 50)]
    limit: usize,
}

fn parse_kind(s: &str) -> Result<rill::SignalKind, String> {
    rill::SignalKind::parse(s)
        .filter(|k| !matches!(k, rill::SignalKind::Custom(n) if n.is_empty()))
        .ok_or_else(|| "expected cancel, pause, resume, quiet, stop or custom:NAME".to_owned())
}

pub async fn run(ctx: &Context, c: SignalCommand) -> anyhow::Result<ExitCode> {
    match c {
        SignalCommand::Send(a) => send(ctx, a).await,
        SignalCommand::History(a) => history(ctx, a).await,
    }
}

async fn send(ctx: &Context, a: SendArgs) -> anyhow::Result<ExitCode> {
    let target = a.target.get().unwrap_or(rill::Target::Queue);
    if a.kind == rill::SignalKind::Cancel && !matches!(target, rill::Target::Job(_)) {
        bail!(
            "cancel needs a job: rill signal send {} cancel --job ID",
            a.queue
        );
    }
    let payload: Option<Json> = a
        .payload
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--payload is not valid JSON")?;
    let q = ctx.existing_queue(&a.queue).await?;
    // A signal to a worker that is not registered would be recorded and never answered.
    if let rill::Target::Worker(w) = &target {
        let rule = rill::HealthRule::default();
        if q.worker(w, &rule).await?.0.is_none() {
            let known: Vec<String> = q
                .workers(&rule)
                .await?
                .into_iter()
                .map(|(w, _)| w.id)
                .collect();
            bail!(
                "no worker {w:?} is registered on {} (registered: {}); `rill workers {0}` lists them",
                a.queue,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let id = q
        .send_signal(a.kind.clone(), target.clone(), payload.as_ref())
        .await?;
    // What the queue itself did is recorded by the same script; workers answer within a second or so.
    let sent = q
        .signal_history(rill::SignalFilter::new().target(target.clone()), 20)
        .await?
        .into_iter()
        .find(|s| s.id == id);
    let outcomes = sent.map(|s| s.outcomes).unwrap_or_default();
    if ctx.json {
        output::print_json(&json!({
            "id": id, "queue": a.queue, "kind": a.kind.to_wire(), "target": target.to_wire(),
            "outcomes": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
        }));
    } else {
        let to = match &target {
            rill::Target::Queue => format!("queue {}", a.queue),
            rill::Target::Job(job) => format!("job {job} on {}", a.queue),
            rill::Target::Worker(w) => format!("worker {w} on {}", a.queue),
            _ => format!("{} on {}", target.to_wire(), a.queue),
        };
        println!("sent {} to {to} (signal {id})", a.kind.to_wire());
        for o in &outcomes {
            println!("  {}: {} ({})", o.receiver, o.result, o.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A signal with its outcomes as JSON (`signal history --json`, the dashboard's API).
pub fn signal_json(s: &rill::Signal) -> Json {
    json!({
        "id": s.id, "kind": s.kind.to_wire(), "target": s.target.to_wire(), "sender": s.sender,
        "ms": s.ms, "payload": s.payload.as_deref().map(output::cbor_to_json),
        "outcomes": s.outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    })
}

fn outcome_json(o: &rill::signals::Outcome) -> Json {
    json!({ "receiver": o.receiver, "result": o.result, "reason": o.reason, "ms": o.ms })
}

async fn history(ctx: &Context, a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let q = ctx.existing_queue(&a.queue).await?;
    let mut filter = rill::SignalFilter::new();
    if let Some(k) = a.kind {
        filter = filter.kind(k);
    }
    if let Some(t) = a.target.get() {
        filter = filter.target(t);
    }
    if let Some(d) = a.since {
        filter = filter.since_ms(output::now_ms().saturating_sub(d.as_millis() as u64));
    }
    let signals = q.signal_history(filter, a.limit).await?;
    if ctx.json {
        let items: Vec<Json> = signals.iter().map(signal_json).collect();
        output::print_json(&Json::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    if signals.is_empty() {
        println!("no signals");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = signals
        .iter()
        .map(|s| {
            let outcomes = s
                .outcomes
                .iter()
                .map(|o| format!("{}: {} ({})", o.receiver, o.result, o.reason))
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                output::time(s.ms),
                s.kind.to_wire(),
                s.target.to_wire(),
                s.sender.clone(),
                if outcomes.is_empty() {
                    "-".into()
                } else {
                    outcomes
                },
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["SENT", "KIND", "TARGET", "SENDER", "OUTCOMES"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
