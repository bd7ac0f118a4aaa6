//! Runs the `emails` queue until Ctrl-C: `cargo run --example worker`.
//! Redis address from `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = rill::Client::new(&url)?;
    client.connect().await?;
    let report = rill::Worker::new(client, "emails")?
        .concurrency(32)
        .run(
            |job: rill::Job<SendEmail>| async move {
                // Stand-in for an SMTP call; honour cancellation (lease lost, shutdown deadline).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = job.cancelled().cancelled() => return Err(rill::JobError::retry("cancelled")),
                }
                Ok(format!("sent {:?} to {}", job.data().subject, job.data().to))
            },
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    println!("{report:?}");
    Ok(())
}
