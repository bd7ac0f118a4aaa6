//! `rill enqueue`: one job from the command line, or one per line of a file or stdin.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::context::{Context, Json};
use crate::output;

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// Queue name.
    queue: String,
    /// The job's payload as JSON.
    #[arg(value_name = "PAYLOAD_JSON", conflicts_with_all = ["file", "stdin"])]
    payload: Option<String>,
    /// One job per line of this file (JSON lines; empty lines skipped).
    #[arg(long, short, conflicts_with = "stdin")]
    file: Option<PathBuf>,
    /// One job per line of standard input.
    #[arg(long)]
    stdin: bool,
    /// Job id (a second enqueue with a live id adds nothing and prints the existing id). One job only.
    #[arg(long)]
    id: Option<String>,
    /// Deduplication key (like --id, but the job id is generated). One job only.
    #[arg(long, conflicts_with = "id")]
    dedup_key: Option<String>,
    /// Run no earlier than this from now (30s, 5m, 1h 30m).
    #[arg(long, value_parser = crate::parse_duration)]
    delay: Option<Duration>,
    /// Most attempts before the job is dead-lettered (default: the worker's, 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: Option<u32>,
}

/// Jobs sent per pipelined round trip, and the size above which a progress bar is drawn.
const CHUNK: usize = 1000;

pub async fn run(ctx: &Context, a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let queue = ctx.queue(&a.queue)?;
    let jobs: Vec<Json> = if let Some(p) = &a.payload {
        vec![
            serde_json::from_str(p)
                .with_context(|| format!("PAYLOAD_JSON is not valid JSON: {p}"))?,
        ]
    } else if let Some(path) = &a.file {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        parse_lines(BufReader::new(f), &path.display().to_string())?
    } else if a.stdin {
        parse_lines(BufReader::new(std::io::stdin().lock()), "stdin")?
    } else {
        bail!("no job given: pass PAYLOAD_JSON, --file F or --stdin (see rill enqueue --help)");
    };
    if jobs.len() != 1 && (a.id.is_some() || a.dedup_key.is_some()) {
        bail!(
            "--id and --dedup-key apply to one job; {} were given",
            jobs.len()
        );
    }
    ctx.connect().await?;
    let bar = if jobs.len() >= CHUNK {
        let bar = ProgressBar::new(jobs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut opts = rill::Enqueue::new();
    if let Some(id) = &a.id {
        opts = opts.id(id);
    }
    if let Some(k) = &a.dedup_key {
        opts = opts.dedup_key(k);
    }
    if let Some(d) = a.delay {
        opts = opts.delay(d);
    }
    if let Some(n) = a.attempts {
        opts = opts.max_attempts(n);
    }
    let plain =
        a.id.is_none() && a.dedup_key.is_none() && a.delay.is_none() && a.attempts.is_none();
    let mut ids = Vec::with_capacity(jobs.len());
    if plain {
        for chunk in jobs.chunks(CHUNK) {
            ids.extend(queue.enqueue_many(chunk).await?);
            bar.inc(chunk.len() as u64);
        }
    } else {
        ids = futures::stream::iter(jobs.iter())
            .map(|job| {
                let (queue, opts, bar) = (&queue, opts.clone(), &bar);
                async move {
                    let id = queue.enqueue_with(job, opts).await;
                    bar.inc(1);
                    id
                }
            })
            .buffered(64)
            .try_collect()
            .await?;
    }
    bar.finish_and_clear();
    if ctx.json {
        output::print_json(&json!({ "queue": a.queue, "ids": ids }));
    } else {
        let mut out = String::with_capacity(ids.len() * 20);
        for id in &ids {
            out.push_str(id);
            out.push('\n');
        }
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every non-empty line as JSON; the first bad line is reported with its number, before anything is sent.
fn parse_lines(r: impl BufRead, name: &str) -> anyhow::Result<Vec<Json>> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{name}, line {}: not valid JSON", i + 1))?,
        );
    }
    if out.is_empty() {
        bail!("{name} holds no jobs (one JSON value per line)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_skipping_blanks_and_name_the_bad_one() {
        let ok = parse_lines(&b"{\"a\":1}\n\n2\n"[..], "f").unwrap();
        assert_eq!(ok, vec![json!({"a": 1}), json!(2)]);
        let err = parse_lines(&b"1\n{oops\n"[..], "f").unwrap_err();
        assert!(format!("{err:#}").contains("f, line 2: not valid JSON"));
        assert!(parse_lines(&b"\n"[..], "f").is_err());
    }
}
