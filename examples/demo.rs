//! The README's first command: `cargo run --release --example demo`.
//!
//! Uses the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`); if nothing answers there and `REDIS_URL`
//! is unset, starts a throwaway `redis-server` in a temp dir. Enqueues 20,000 jobs (some delayed, some that
//! fail once, one that fails for good), runs a worker on them with a live progress line, prints a summary and
//! removes its keys.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Resize {
    image: String,
    width: u32,
}

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

async fn redis_url() -> anyhow::Result<(String, Option<Throwaway>)> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok((url, None));
    }
    let default = "redis://127.0.0.1:6379".to_owned();
    if reachable(&default).await {
        return Ok((default, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("no Redis at {default} and cannot start redis-server ({e}); install it or set REDIS_URL"))?;
    let guard = Throwaway { child, _dir: dir };
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if reachable(&url).await {
            println!("started a throwaway redis-server on port {port}");
            return Ok((url, Some(guard)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("throwaway redis-server did not start")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (url, _server) = redis_url().await?;
    let namespace = format!("rill-demo-{}", std::process::id());
    let client = rill::Client::with_config(
        &url,
        rill::ClientConfig {
            namespace,
            ..Default::default()
        },
    )?;
    let queue = client.queue::<Resize>("images")?;
    let total = 20_000u32;
    let jobs: Vec<Resize> = (0..total - 101)
        .map(|i| Resize {
            image: format!("img-{i}.png"),
            width: 64 + i % 512,
        })
        .collect();
    let t0 = Instant::now();
    queue.enqueue_many(&jobs).await?;
    for i in 0..100 {
        let opts = rill::Enqueue::new()
            .id(format!("later-{i}"))
            .delay(Duration::from_millis(500 + 10 * i));
        queue
            .enqueue_with(
                &Resize {
                    image: format!("later-{i}.png"),
                    width: 0,
                },
                opts,
            )
            .await?;
    }
    queue
        .enqueue_with(
            &Resize {
                image: "corrupt.png".into(),
                width: 1,
            },
            rill::Enqueue::new().id("corrupt").max_attempts(2),
        )
        .await?;
    println!("enqueued {total} jobs on {url} in {:?}", t0.elapsed());

    let worker = rill::Worker::new(client.clone(), "images")?
        .concurrency(64)
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
            if r.width.is_multiple_of(997) && job.attempt() == 1 {
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
    loop {
        let s = stats.snapshot();
        let c = queue.counts().await?;
        print!(
            "\rcompleted {:>6}  retried {:>3}  dead {}  waiting {:>6}  delayed {:>3}  active {:>3}   ",
            s.completed, s.retried, s.dead, c.waiting, c.delayed, c.active
        );
        std::io::stdout().flush()?;
        if s.completed + s.dead >= u64::from(total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = t1.elapsed();
    let _ = stop_tx.send(());
    let report = run.await??;
    println!();
    println!(
        "processed {} jobs in {elapsed:.2?} ({:.0} jobs/s); retried {}, dead {}",
        report.completed + report.dead,
        (report.completed + report.dead) as f64 / elapsed.as_secs_f64(),
        report.retried,
        report.dead
    );
    let dead = queue.dead_letters(None, 10).await?;
    for d in &dead {
        println!(
            "dead letter: job {} ({}, {} attempts): {}",
            d.job_id, d.reason, d.attempts, d.error
        );
    }
    let info = queue.job("later-7").await?;
    println!(
        "job later-7: {:?}, result {:?}",
        info.state,
        info.result::<u32>()?
    );
    // Clean up the demo's keys.
    let keys = queue.keys();
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor = 0u64;
    let pattern = format!("{}*", keys.ready.trim_end_matches("ready"));
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !found.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&found)
                .query_async(&mut conn)
                .await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}
