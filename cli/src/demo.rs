//! `rill demo`: the README's first command. Enqueues sample jobs (some delayed, some that fail once, one that
//! fails for good), runs a worker on them with a live progress bar, prints a summary and removes its keys. With
//! no `--redis` and nothing answering on the default address, it starts a throwaway `redis-server` in a temp dir.

use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::Global;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(200..))]
    jobs: u32,
    /// Jobs run at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Serialize, Deserialize)]
struct Resize {
    image: String,
    width: u32,
}

/// A redis-server in a temp dir, killed on drop.
struct Throwaway {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn reachable(url: &str) -> bool {
    let Ok(c) = rill::Client::new(url) else {
        return false;
    };
    tokio::time::timeout(Duration::from_secs(2), c.connect())
        .await
        .is_ok_and(|r| r.is_ok())
}

async fn throwaway(default: &str) -> anyhow::Result<(String, Throwaway)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "nothing answers at {default} and redis-server cannot be started; install Redis \
                 (apt-get install redis-server) or pass --redis URL"
            )
        })?;
    let guard = Throwaway { child, _dir: dir };
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if reachable(&url).await {
            eprintln!(
                "nothing answers at {default}: started a throwaway redis-server on port {port}"
            );
            return Ok((url, guard));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the throwaway redis-server did not start")
}

pub async fn run(g: &Global, redis_named: bool, a: DemoArgs) -> anyhow::Result<ExitCode> {
    let (url, server) = if redis_named || reachable(&g.redis).await {
        (g.redis.clone(), None)
    } else {
        let (url, s) = throwaway(&g.redis).await?;
        (url, Some(s))
    };
    let namespace = format!("rill-demo-{}", std::process::id());
    // The throwaway server speaks plain TCP; a named rediss:// one gets the --tls-* settings.
    let tls = match server {
        Some(_) => rill::Tls::default(),
        None => crate::context::tls(g)?,
    };
    let client = crate::context::client(&url, &namespace, g.allow_eviction, &tls)?;
    // Ctrl-C stops the demo but not its clean-up: the keys go either way.
    let outcome = tokio::select! {
        r = demo(&client, &url, &a) => r.map(|()| ExitCode::SUCCESS),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: removing the demo's keys");
            Ok(ExitCode::from(130))
        }
    };
    let cleanup = client.remove_namespace().await;
    // A demo that failed says why; its clean-up failing too (Redis unreachable, say) would only repeat it.
    let code = outcome?;
    cleanup?;
    Ok(code)
}

/// Enqueues the demo's jobs: `total - 101` plain ones, 100 delayed ones with ids, and one that always fails.
async fn enqueue_jobs(queue: &rill::Queue<Resize>, total: u32) -> anyhow::Result<()> {
    let delayed = 100;
    let jobs: Vec<Resize> = (0..total - delayed - 1)
        .map(|i| Resize {
            image: format!("img-{i}.png"),
            width: 64 + i % 512,
        })
        .collect();
    queue.enqueue_many(&jobs).await?;
    for i in 0..delayed {
        let opts = rill::Enqueue::new()
            .id(format!("later-{i}"))
            .delay(Duration::from_millis(500 + 10 * u64::from(i)));
        let job = Resize {
            image: format!("later-{i}.png"),
            width: 0,
        };
        queue.enqueue_with(&job, opts).await?;
    }
    let corrupt = Resize {
        image: "corrupt.png".into(),
        width: 1,
    };
    queue
        .enqueue_with(&corrupt, rill::Enqueue::new().id("corrupt").max_attempts(2))
        .await?;
    Ok(())
}

async fn demo(client: &rill::Client, url: &str, a: &DemoArgs) -> anyhow::Result<()> {
    client.connect().await.with_context(|| {
        format!("cannot connect to Redis at {url}; pass --redis URL or set REDIS_URL")
    })?;
    let queue = client.queue::<Resize>("images")?;
    let total = a.jobs;
    let t0 = Instant::now();
    enqueue_jobs(&queue, total).await?;
    println!("enqueued {total} jobs on {url} in {:.0?}", t0.elapsed());

    let worker = rill::Worker::new(client.clone(), "images")?
        .concurrency(a.concurrency)
        .backoff(Duration::from_millis(50), Duration::from_secs(1));
    let stats = worker.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t1 = Instant::now();
    let run = tokio::spawn(worker.run(
        |job: rill::Job<Resize>| async move {
            let r = job.data();
            if r.image == "corrupt.png" {
                return Err(rill::JobError::retry("cannot decode PNG"));
            }
            if r.width > 0 && r.width.is_multiple_of(97) && job.attempt() == 1 {
                return Err(rill::JobError::retry_after(
                    "thumbnail service busy",
                    Duration::from_millis(100),
                ));
            }
            Ok(r.width * 2)
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let bar = ProgressBar::new(u64::from(total));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} done  {per_sec}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let s = stats.snapshot();
        let c = queue.counts().await?;
        bar.set_position(s.completed + s.dead);
        bar.set_message(format!(
            "retried {}  dead {}  waiting {}  delayed {}  active {}",
            s.retried, s.dead, c.waiting, c.delayed, c.active
        ));
        if s.completed + s.dead >= u64::from(total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let elapsed = t1.elapsed();
    let _ = stop_tx.send(());
    let report = run.await??;
    println!(
        "processed {} jobs in {elapsed:.2?} ({:.0} jobs/s, the wait for the delayed ones included: `rill bench` \
         measures throughput); {} retried, {} dead-lettered",
        report.completed + report.dead,
        (report.completed + report.dead) as f64 / elapsed.as_secs_f64(),
        report.retried,
        report.dead
    );
    for d in queue.dead_letters(None, 10).await? {
        println!(
            "dead letter: job {} ({}, {} attempts): {}",
            d.job_id, d.reason, d.attempts, d.error
        );
    }
    let info = queue.job("later-7").await?;
    let result = match info.result::<u32>()? {
        Some(r) => format!("result {r}"),
        None => "no result".to_owned(),
    };
    println!("job later-7 (delayed): {}, {result}", info.state.as_str());
    Ok(())
}
