//! `rill enqueue`: one job from the command line, or one per line of a file or stdin.

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
    /// Job id. Enqueueing an id again adds nothing (it prints the id and says "duplicate" on stderr) while that
    /// job is live and, after it ended, until --dedup-ttl since its first enqueue. One job only.
    #[arg(long)]
    id: Option<String>,
    /// Deduplication key (like --id, but the job id is generated). One job only.
    #[arg(long, conflicts_with = "id")]
    dedup_key: Option<String>,
    /// How long an --id or --dedup-key keeps refusing duplicates after the first enqueue (default 24h).
    #[arg(long, value_parser = crate::parse_duration)]
    dedup_ttl: Option<Duration>,
    /// Run no earlier than this from now (30s, 5m, 1h 30m).
    #[arg(long, value_parser = crate::parse_duration)]
    delay: Option<Duration>,
    /// Most attempts before the job is dead-lettered (default: the worker's, 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: Option<u32>,
    /// Longest one attempt may run (300ms, 30s, 5m): past it the handler is stopped and the attempt fails
    /// (default: the worker's).
    #[arg(long, value_parser = crate::parse_duration)]
    job_timeout: Option<Duration>,
    /// Priority level: 0 (the default) is taken first, then 1 and so on, up to the queue's levels (set with
    /// `rill queue priorities`).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u8).range(0..16))]
    priority: Option<u8>,
    /// A header carried with the job, NAME=VALUE (repeatable); NAME starts with `x-`, as `x-tenant=acme`, which
    /// per-key limits (`rill queue limit QUEUE --per-key x-tenant ...`) read.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Wait until the job ends and print how: its result when it completes (exit 0); exit 1 if it is
    /// dead-lettered, cancelled or unknown, 2 if it has not ended within --timeout. One job only.
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait (default 1m).
    #[arg(long, requires = "wait", value_parser = crate::parse_duration, default_value = "1m")]
    timeout: Duration,
}

/// `x-tenant=acme`: a header's name and value.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE, like x-tenant=acme"))?;
    if !name.starts_with("x-") || name.len() < 3 {
        return Err(format!("{name:?}: a header name starts with x- (x-tenant)"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Jobs sent per pipelined round trip (and read ahead of sending).
const CHUNK: usize = 1000;

/// A pause in the input this long sends what has been read so far.
const PAUSE: Duration = Duration::from_millis(50);

pub async fn run(ctx: &Context, a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let queue = ctx.queue(&a.queue)?;
    if a.wait && a.payload.is_none() {
        bail!("--wait waits for one job: pass it as PAYLOAD_JSON, not with --file or --stdin");
    }
    let mut opts = rill::Enqueue::new();
    if let Some(id) = &a.id {
        opts = opts.id(id);
    }
    if let Some(k) = &a.dedup_key {
        opts = opts.dedup_key(k);
    }
    if let Some(t) = a.dedup_ttl {
        if a.id.is_none() && a.dedup_key.is_none() {
            bail!("--dedup-ttl applies to --id or --dedup-key");
        }
        opts = opts.dedup_ttl(t);
    }
    if let Some(d) = a.delay {
        opts = opts.delay(d);
    }
    if let Some(n) = a.attempts {
        opts = opts.max_attempts(n);
    }
    if let Some(t) = a.job_timeout {
        opts = opts.timeout(t);
    }
    if let Some(p) = a.priority {
        opts = opts.priority(p);
    }
    for (name, value) in &a.headers {
        opts = opts.header(name, value.as_bytes());
    }
    let plain = a.priority.unwrap_or(0) == 0
        && a.headers.is_empty()
        && a.id.is_none()
        && a.dedup_key.is_none()
        && a.delay.is_none()
        && a.attempts.is_none()
        && a.job_timeout.is_none();
    let mut out = Output::new(ctx.json, &a.queue);
    if let Some(p) = &a.payload {
        let job: Json = serde_json::from_str(p)
            .with_context(|| format!("PAYLOAD_JSON is not valid JSON: {p}"))?;
        ctx.connect().await?;
        let outcome = queue.enqueue_outcome(&job, opts).await?;
        let duplicate = matches!(outcome, rill::EnqueueOutcome::Duplicate(_));
        let id = outcome.id().to_owned();
        if duplicate {
            eprintln!(
                "duplicate: job {id} was enqueued already (an id or dedup key refuses repeats while its job is live \
                 and until --dedup-ttl, 24h by default, after its first enqueue); nothing added"
            );
        }
        if a.wait {
            return wait(ctx, &queue, &id, a.timeout).await;
        }
        out.duplicate = duplicate;
        out.landed(&[id]);
        out.finish();
        return Ok(ExitCode::SUCCESS);
    }
    let (name, input): (String, Box<dyn tokio::io::AsyncRead + Unpin + Send>) =
        if let Some(path) = &a.file {
            let f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            (path.display().to_string(), Box::new(f))
        } else if a.stdin {
            ("stdin".into(), Box::new(tokio::io::stdin()))
        } else {
            bail!("no job given: pass PAYLOAD_JSON, --file F or --stdin (see rill enqueue --help)");
        };
    let mut lines = Lines::new(input, &name);
    ctx.connect().await?;
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{pos} jobs enqueued  {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut first = true;
    loop {
        // Read a chunk (stopping at the first bad line, after sending what came before it), send it, print its
        // ids: memory stays bounded and ids appear as jobs land, however long the input.
        let chunk = lines.next_chunk(CHUNK).await;
        let (jobs, bad) = match chunk {
            Ok(jobs) => (jobs, None),
            Err(Partial { jobs, error }) => (jobs, Some(error)),
        };
        if first {
            if jobs.is_empty() && bad.is_none() {
                bail!("{name} holds no jobs (one JSON value per line)");
            }
            if jobs.len() > 1 && !(a.id.is_none() && a.dedup_key.is_none()) {
                bail!("--id and --dedup-key apply to one job; {name} holds more");
            }
            first = false;
        }
        if jobs.is_empty() && bad.is_none() {
            break;
        }
        let from_line = jobs.first().map_or(0, |(n, _)| *n);
        let payloads: Vec<Json> = jobs.into_iter().map(|(_, j)| j).collect();
        match send(&queue, &payloads, (!plain).then_some(&opts)).await {
            Ok(ids) => {
                out.landed(&ids);
                if out.count >= CHUNK as u64 && bar.is_hidden() {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
                bar.set_position(out.count);
            }
            Err(e) => {
                bar.finish_and_clear();
                out.finish();
                bail!(
                    "enqueue failed: {e}; {} jobs landed before the batch starting at {name} line {from_line} (some of \
                     that batch may have landed too); to go on from there: tail -n +{from_line} FILE | rill enqueue {} --stdin",
                    out.count,
                    a.queue
                );
            }
        }
        if let Some(error) = bad {
            bar.finish_and_clear();
            out.finish();
            return Err(error.context(format!(
                "{} jobs landed (every line before this one); fix the line and go on from it",
                out.count
            )));
        }
    }
    bar.finish_and_clear();
    out.finish();
    Ok(ExitCode::SUCCESS)
}

/// `--wait`: prints the job's id, then how it ended (or where it is when the wait runs out).
async fn wait(
    ctx: &Context,
    queue: &rill::Queue<Json>,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    if !ctx.json {
        println!("{id}");
    }
    let outcome = queue.wait(id, timeout).await?;
    let (name, code, detail) = match &outcome {
        rill::JobOutcome::Completed { .. } => {
            let result = outcome.result::<ciborium::Value>()?.map(output::from_cbor);
            ("completed", 0, result.unwrap_or(Json::Null))
        }
        rill::JobOutcome::Dead { error } => ("dead", 1, json!(error)),
        rill::JobOutcome::Cancelled => ("cancelled", 1, Json::Null),
        rill::JobOutcome::Pending(state) => ("pending", 2, json!(state.as_str())),
        _ => ("unknown", 1, Json::Null),
    };
    if ctx.json {
        let key = match name {
            "completed" => "result",
            "dead" => "error",
            _ => "state",
        };
        output::print_json(
            &json!({ "queue": queue.name(), "id": id, "outcome": name, key: detail }),
        );
    } else {
        match name {
            "completed" if detail.is_null() => println!("completed"),
            "completed" => println!("completed: {detail}"),
            "dead" => println!("dead: {}", detail.as_str().unwrap_or_default()),
            "pending" => println!(
                "not ended after {}: {}",
                output::age(timeout),
                detail.as_str().unwrap_or_default()
            ),
            other => println!("{other}"),
        }
    }
    Ok(ExitCode::from(code))
}

/// Sends a chunk of jobs: pipelined plain `XADD`s, or (`opts`: options that need `enqueue.lua`) 64 calls at a
/// time. Returns their ids in order.
async fn send(
    queue: &rill::Queue<Json>,
    jobs: &[Json],
    opts: Option<&rill::Enqueue>,
) -> rill::Result<Vec<String>> {
    match opts {
        None => queue.enqueue_many(jobs).await,
        Some(opts) => {
            futures::stream::iter(jobs.iter())
                .map(|job| queue.enqueue_with(job, opts.clone()))
                .buffered(64)
                .try_collect()
                .await
        }
    }
}

/// The ids of jobs that landed: printed one per line as they land, or gathered into one JSON document.
struct Output {
    json: bool,
    queue: String,
    ids: Vec<String>,
    count: u64,
    /// The one job given was a duplicate (nothing added).
    duplicate: bool,
}

impl Output {
    fn new(json: bool, queue: &str) -> Self {
        Output {
            json,
            queue: queue.to_owned(),
            ids: Vec::new(),
            count: 0,
            duplicate: false,
        }
    }

    fn landed(&mut self, ids: &[String]) {
        self.count += ids.len() as u64;
        if self.json {
            self.ids.extend_from_slice(ids);
            return;
        }
        let mut text = String::with_capacity(ids.len() * 20);
        for id in ids {
            text.push_str(id);
            text.push('\n');
        }
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    fn finish(&mut self) {
        if self.json {
            output::print_json(&json!({
                "queue": self.queue,
                "ids": std::mem::take(&mut self.ids),
                "duplicate": self.duplicate,
            }));
        }
    }
}

/// What a chunk read before a bad line: the good jobs before it, and the error naming the line.
struct Partial {
    jobs: Vec<(usize, Json)>,
    error: anyhow::Error,
}

/// JSON lines read a chunk at a time, numbered from 1 (blank lines skipped).
struct Lines {
    lines: tokio::io::Lines<tokio::io::BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>>,
    name: String,
    number: usize,
}

impl Lines {
    fn new(input: Box<dyn tokio::io::AsyncRead + Unpin + Send>, name: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        Lines {
            lines: tokio::io::BufReader::new(input).lines(),
            name: name.to_owned(),
            number: 0,
        }
    }

    /// Up to `n` jobs with their line numbers; fewer at the end of the input (none: it has ended).
    async fn next_chunk(&mut self, n: usize) -> Result<Vec<(usize, Json)>, Partial> {
        let mut jobs = Vec::new();
        while jobs.len() < n {
            // Once a chunk has a job, a pause in the input ends it: a slow producer's jobs go out as they come.
            let next = if jobs.is_empty() {
                self.lines.next_line().await
            } else {
                match tokio::time::timeout(PAUSE, self.lines.next_line()).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            let line = match next {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    let error = anyhow::Error::new(e).context(format!("cannot read {}", self.name));
                    return Err(Partial { jobs, error });
                }
            };
            self.number += 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(job) => jobs.push((self.number, job)),
                Err(e) => {
                    let error = anyhow::Error::new(e).context(format!(
                        "{}, line {}: not valid JSON",
                        self.name, self.number
                    ));
                    return Err(Partial { jobs, error });
                }
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &'static [u8]) -> Lines {
        Lines::new(Box::new(text), "f")
    }

    #[tokio::test]
    async fn lines_come_in_chunks_skip_blanks_and_name_the_bad_one() {
        let mut l = lines(b"{\"a\":1}\n\n2\n3\n");
        assert_eq!(
            l.next_chunk(2).await.ok().unwrap(),
            vec![(1, json!({"a": 1})), (3, json!(2))]
        );
        assert_eq!(l.next_chunk(2).await.ok().unwrap(), vec![(4, json!(3))]);
        assert!(l.next_chunk(2).await.ok().unwrap().is_empty());
        let mut l = lines(b"1\n{oops\n3\n");
        let Err(p) = l.next_chunk(10).await else {
            panic!("a bad line")
        };
        assert_eq!(p.jobs, vec![(1, json!(1))], "what came before it is kept");
        assert!(format!("{:#}", p.error).contains("f, line 2: not valid JSON"));
    }
}
