//! `rill bench`: throughput against the given Redis, each rill figure next to the raw Redis ceiling measured in
//! the same run (pipelined `XADD`; `XREADGROUP` + `XACK` with no job logic). Uses a private namespace and
//! removes its keys afterwards. `cargo bench` has the fuller suite (latency, checkpoints, recovery).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use crate::context::Context;
use crate::output;
use crate::raw::{self, Cpu};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Jobs per case.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    jobs: u64,
    /// Worker concurrency for the drain case.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Worker prefetch for the drain case (deliveries beyond concurrency waiting for a slot, the library's
    /// default; 0 = off).
    #[arg(long, default_value_t = rill::DEFAULT_PREFETCH as u64, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    prefetch: u64,
    /// Run the drain's worker on a thread of its own (`Worker::dedicated_thread`).
    #[arg(long)]
    dedicated_thread: bool,
}

struct Case {
    name: &'static str,
    jobs: u64,
    took: Duration,
    baseline: Option<usize>,
    /// Worker concurrency (drain cases).
    concurrency: Option<u64>,
    /// CPU seconds the case cost Redis and this process (`None` where they cannot be read).
    cpu: Cpu,
}

impl Case {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.took.as_secs_f64().max(1e-9)
    }

    fn per_job_us(&self, secs: Option<f64>) -> Option<f64> {
        secs.map(|s| (s * 1e6 / self.jobs as f64 * 100.0).round() / 100.0)
    }
}

const PAYLOAD: &[u8] = b"\xa1\x61n\x18\x2a"; // CBOR {"n": 42}

/// Entries per raw read, as a worker at concurrency 256 would ask for.
const RAW_READ: usize = 256;

async fn rill_drain(
    client: &rill::Client,
    n: u64,
    concurrency: u64,
    prefetch: u64,
    dedicated_thread: bool,
) -> anyhow::Result<Duration> {
    let worker = rill::Worker::new(client.clone(), "drain")?
        .concurrency(concurrency as usize)
        .prefetch(prefetch as usize)
        .dedicated_thread(dedicated_thread);
    let stats = worker.stats();
    let done = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(
        |_job: rill::Job<serde_json::Value>| async { rill::JobResult::Ok(()) },
        async {
            let _ = stop_rx.await;
        },
    ));
    let watcher = {
        let done = done.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            while stats.snapshot().completed < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            done.notify_one();
        })
    };
    if tokio::time::timeout(Duration::from_secs(600), done.notified())
        .await
        .is_err()
    {
        watcher.abort();
        bail!("drain did not finish in 10 minutes");
    }
    let took = t.elapsed();
    let _ = stop_tx.send(());
    run.await??;
    Ok(took)
}

pub async fn run(ctx: &Context, a: BenchArgs) -> anyhow::Result<ExitCode> {
    ctx.connect().await?;
    let server = ctx.client.server_version().await?;
    let ns = format!("rill-bench-{}", std::process::id());
    let result = bench(ctx, &ns, &a).await;
    ctx.client_in(&ns)?.remove_namespace().await?;
    let cases = result?;
    if ctx.json {
        let items: Vec<_> = cases
            .iter()
            .map(|c| {
                json!({
                    "case": c.name, "jobs": c.jobs, "seconds": c.took.as_secs_f64(), "jobs_per_s": c.rate(),
                    "vs_raw": c.baseline.map(|b| c.rate() / cases[b].rate()),
                    "concurrency": c.concurrency,
                    "redis_cpu_us_per_job": c.per_job_us(c.cpu.redis),
                    "client_cpu_us_per_job": c.per_job_us(c.cpu.own),
                })
            })
            .collect();
        output::print_json(
            &json!({ "redis": ctx.url, "server": server.to_string(), "concurrency": a.concurrency, "prefetch": a.prefetch, "dedicated_thread": a.dedicated_thread, "cases": items }),
        );
    } else {
        let rows: Vec<Vec<String>> = cases
            .iter()
            .map(|c| {
                vec![
                    c.name.to_owned(),
                    c.jobs.to_string(),
                    format!("{:.3}", c.took.as_secs_f64()),
                    format!("{:.0}", c.rate()),
                    c.baseline.map_or_else(
                        || "-".into(),
                        |b| format!("{:.2}", c.rate() / cases[b].rate()),
                    ),
                    c.per_job_us(c.cpu.redis)
                        .map_or_else(|| "-".into(), |us| format!("{us:.1}")),
                    c.per_job_us(c.cpu.own)
                        .map_or_else(|| "-".into(), |us| format!("{us:.1}")),
                ]
            })
            .collect();
        println!(
            "rill bench on {} (Redis {server}; {} jobs, concurrency {})",
            ctx.url, a.jobs, a.concurrency
        );
        print!(
            "{}",
            output::table(
                &[
                    "CASE",
                    "JOBS",
                    "SECONDS",
                    "JOBS/s",
                    "VS RAW",
                    "REDIS µs/JOB",
                    "CLIENT µs/JOB"
                ],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(ctx: &Context, ns: &str, a: &BenchArgs) -> anyhow::Result<Vec<Case>> {
    let mut conn = ctx
        .client
        .redis()
        .await?
        .get_multiplexed_async_connection()
        .await?;
    let raw_key = format!("{ns}:raw");
    let client = ctx.client_in(ns)?;
    let queue = client.queue::<serde_json::Value>("drain")?;
    let jobs: Vec<serde_json::Value> = (0..a.jobs).map(|n| json!({ "n": n })).collect();
    // A concurrency-1 worker is compared with a one-at-a-time raw loop, a wider one with batched reads.
    let raw_read = if a.concurrency == 1 { 1 } else { RAW_READ };
    eprintln!("measuring: raw XADD, rill enqueue, raw XREADGROUP+XACK, rill drain ...");
    let mut cases = Vec::new();
    let cpu = Cpu::now(&mut conn).await;
    let took = raw::enqueue(&mut conn, &raw_key, a.jobs, |_| PAYLOAD.to_vec()).await?;
    cases.push(Case {
        name: "raw XADD (pipelined)",
        jobs: a.jobs,
        took,
        baseline: None,
        concurrency: None,
        cpu: Cpu::now(&mut conn).await.since(cpu),
    });
    let cpu = Cpu::now(&mut conn).await;
    let t = Instant::now();
    for chunk in jobs.chunks(raw::PIPELINE as usize) {
        queue.enqueue_many(chunk).await?;
    }
    cases.push(Case {
        name: "rill enqueue_many",
        jobs: a.jobs,
        took: t.elapsed(),
        baseline: Some(0),
        concurrency: None,
        cpu: Cpu::now(&mut conn).await.since(cpu),
    });
    let cpu = Cpu::now(&mut conn).await;
    let took = raw::drain(&mut conn, &raw_key, a.jobs, raw_read, false).await?;
    cases.push(Case {
        name: if raw_read == 1 {
            "raw XREADGROUP COUNT 1+XACK"
        } else {
            "raw XREADGROUP+XACK"
        },
        jobs: a.jobs,
        took,
        baseline: None,
        concurrency: Some(a.concurrency),
        cpu: Cpu::now(&mut conn).await.since(cpu),
    });
    let cpu = Cpu::now(&mut conn).await;
    let took = rill_drain(
        &client,
        a.jobs,
        a.concurrency,
        a.prefetch,
        a.dedicated_thread,
    )
    .await?;
    cases.push(Case {
        name: "rill worker drain",
        jobs: a.jobs,
        took,
        baseline: Some(2),
        concurrency: Some(a.concurrency),
        cpu: Cpu::now(&mut conn).await.since(cpu),
    });
    Ok(cases)
}
