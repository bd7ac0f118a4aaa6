//! `rill events tail QUEUE`: the newest lifecycle events, then new ones as they happen (SPEC.md, "Events").

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::context::Context;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print the newest events, then follow new ones until Ctrl-C (--json: one object per line).
    #[command(
        after_help = "Examples:\n  rill events tail emails\n  rill events tail emails -n 100 --no-follow\n  \
                            rill events tail emails --json | jq 'select(.event == \"dead\")'"
    )]
    Tail(TailArgs),
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Queue name.
    queue: String,
    /// How many past events to print first.
    #[arg(long, short = 'n', default_value_t = 10)]
    lines: usize,
    /// Print the past events and exit.
    #[arg(long)]
    no_follow: bool,
}

pub async fn run(ctx: &Context, c: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Tail(a) = c;
    let q = ctx.existing_queue(&a.queue).await?;
    // The events stream is trimmed to about 10,000 entries, so this reads all of it.
    let mut past = q.events(None, 100_000).await?;
    // Follow on from the newest event read, so nothing between this read and the feed is lost.
    let after = past
        .last()
        .map_or_else(|| "0-0".to_owned(), |e| e.entry_id.clone());
    let past = past.split_off(past.len().saturating_sub(a.lines));
    let mut stdout = std::io::stdout();
    for e in &past {
        print_event(ctx.json, e, &mut stdout)?;
    }
    if a.no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut feed = q.follow_events(Some(&after)).await?;
    // One listener for the whole loop: a Ctrl-C that arrives while a batch is being printed is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            batch = feed.next(100) => {
                for e in &batch? {
                    print_event(ctx.json, e, &mut stdout)?;
                }
            }
        }
    }
}

fn print_event(as_json: bool, e: &rill::Event, out: &mut impl Write) -> anyhow::Result<()> {
    let ms: u64 = e
        .fields
        .get("ms")
        .and_then(|m| m.parse().ok())
        .or_else(|| e.entry_id.split('-').next()?.parse().ok())
        .unwrap_or(0);
    if as_json {
        writeln!(out, "{}", output::event_json(e))?;
    } else {
        let detail = match e.kind.as_str() {
            "completed" => format!(
                "{} job(s): {}",
                e.fields.get("count").map_or("?", String::as_str),
                e.fields.get("ids").map_or("", String::as_str)
            ),
            _ => {
                let mut d = format!("{} attempts {}", e.job_id, e.attempt);
                for k in ["reason", "delay_ms", "error"] {
                    if let Some(v) = e.fields.get(k) {
                        d.push_str(&format!("  {k}={}", output::one_line(v, 200)));
                    }
                }
                d
            }
        };
        writeln!(out, "{}  {:<9}  {detail}", output::time(ms), e.kind)?;
    }
    out.flush()?;
    Ok(())
}
