//! A worker process for the fault tests (tests/faults.rs): every run of a job is recorded in Redis, so the
//! test can count effects after killing this process with -9. Per run it appends `job pid start_ms` to
//! `<ready key>:runs` and sets `<ready key>:started[job] = pid`; when the job's work is done it appends `job pid`
//! to `<ready key>:effects` (the side effect a duplicate run would repeat), then returns its pid as the result.
//!
//! Environment: `RILL_URL`, `RILL_NAMESPACE`, `RILL_QUEUE`, `RILL_LEASE_MS`, `RILL_CONCURRENCY`, `RILL_MODE`.
//! A job's data is how long it takes, in ms. Prints `ready <consumer>` once it has joined the group.
//!
//! With `RILL_MODE=steps` a job's data is a number of steps instead: it resumes from its newest checkpoint,
//! runs the remaining steps (2 ms each, each appended as `pid step` to `<ready key>:steps`), checkpoints
//! `(step, sum)` every 50 steps and whenever it is asked to stop (then it yields), and returns the sum of the
//! step numbers.

use std::time::Duration;

use redis::AsyncCommands;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let url = env("RILL_URL", "redis://127.0.0.1:6379");
    let ns = env("RILL_NAMESPACE", "rill");
    let queue = env("RILL_QUEUE", "fault");
    let lease = Duration::from_millis(env("RILL_LEASE_MS", "1000").parse()?);
    let concurrency: usize = env("RILL_CONCURRENCY", "4").parse()?;
    let client = rill::Client::with_config(
        &url,
        rill::ClientConfig {
            namespace: ns,
            ..Default::default()
        },
    )?;
    let ready = client.keys(&queue)?.ready;
    // The records share the queue's hash tag, so on a Redis Cluster they sit on the master that owns the queue.
    let recorder = client.connection().await?;
    let worker = rill::Worker::new(client, &queue)?
        .concurrency(concurrency)
        .lease(lease)
        .reclaim_interval(lease / 4);
    let effects_key = format!("{ready}:effects");
    let started_key = format!("{ready}:started");
    let runs_key = format!("{ready}:runs");
    println!("ready {}", worker.consumer());
    if env("RILL_MODE", "") == "steps" {
        let steps_key = format!("{ready}:steps");
        worker
            .run(
                move |job: rill::Job<u64>| {
                    let mut r = recorder.clone();
                    let steps_key = steps_key.clone();
                    async move {
                        let (mut step, mut sum) = match job.resume::<(u64, u64)>().await? {
                            Some(resumed) => resumed.state,
                            None => (0, 0),
                        };
                        let mut policy = rill::CheckpointPolicy::every_steps(50).from_step(step);
                        while step < *job.data() {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            sum += step;
                            step += 1;
                            let _: () = r
                                .rpush(&steps_key, format!("{} {step}", std::process::id()))
                                .await?;
                            if policy.due(step, &job) {
                                job.checkpoint(&(step, sum)).await?;
                                policy.saved(step);
                            }
                            // Paused, quieted or shutting down: the checkpoint above is saved, so yield.
                            if job.stopping().is_cancelled() && step < *job.data() {
                                return Err(rill::JobError::interrupted("asked to stop"));
                            }
                        }
                        Ok(sum)
                    }
                },
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await?;
        return Ok(());
    }
    worker
        .run(
            move |job: rill::Job<u64>| {
                let mut r = recorder.clone();
                let effects_key = effects_key.clone();
                let started_key = started_key.clone();
                let runs_key = runs_key.clone();
                async move {
                    let pid = std::process::id();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis();
                    let _: () = r
                        .rpush(&runs_key, format!("{} {pid} {now}", job.id()))
                        .await?;
                    let _: () = r.hset(&started_key, job.id(), pid).await?;
                    tokio::time::sleep(Duration::from_millis(*job.data())).await;
                    let _: () = r.rpush(&effects_key, format!("{} {pid}", job.id())).await?;
                    Ok(pid)
                }
            },
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
