//! Enqueues jobs onto the `emails` queue: `cargo run --example producer -- [COUNT]`.
//! Redis address from `REDIS_URL` (default `redis://127.0.0.1:6379`).

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let count: usize = std::env::args().nth(1).map_or(Ok(1000), |a| a.parse())?;
    let client = rill::Client::new(&url)?;
    let queue = client.queue::<SendEmail>("emails")?;
    let jobs: Vec<SendEmail> = (0..count)
        .map(|i| SendEmail {
            to: format!("user{i}@example.com"),
            subject: "Welcome".into(),
        })
        .collect();
    let ids = queue.enqueue_many(&jobs).await?;
    // One with a caller-chosen id: enqueueing it twice adds it once.
    let receipt = SendEmail {
        to: "ops@example.com".into(),
        subject: "Receipt 42".into(),
    };
    queue
        .enqueue_with(&receipt, rill::Enqueue::new().id("receipt-42"))
        .await?;
    queue
        .enqueue_with(&receipt, rill::Enqueue::new().id("receipt-42"))
        .await?;
    println!(
        "enqueued {} jobs on {url} (first {:?}, last {:?})",
        ids.len() + 1,
        ids.first(),
        ids.last()
    );
    Ok(())
}
