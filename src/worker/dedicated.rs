//! A worker on a thread of its own ([`WorkerConfig::dedicated_thread`](super::WorkerConfig::dedicated_thread)):
//! its loops, its connections and its handlers on one single-threaded runtime, so no step of a job waits for a
//! wake-up from another thread. The caller's runtime only waits for the shutdown signal and the report.

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};

use super::{Worker, WorkerReport};
use crate::error::{Error, Result};
use crate::job::{Job, JobError};

/// Runs `worker` on a new thread until `shutdown` resolves (or this future is dropped: the worker then shuts
/// down gracefully on its own), and returns its report.
pub(super) async fn run<T, R, F, Fut>(
    mut worker: Worker,
    handler: F,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerReport>
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
{
    // Connections of its own: the shared one of the caller's client is driven by the caller's runtime.
    worker.client = worker.client.split()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, report) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("rill-worker-{}", worker.keys.queue))
        .spawn(move || {
            let out = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // Stops when told to, or when the caller's future is dropped (the sender with it).
                Ok(rt) => rt.block_on(worker.run_here(handler, async {
                    let _ = stopped.await;
                })),
                Err(e) => Err(Error::Thread(e)),
            };
            let _ = done.send(out);
        })
        .map_err(Error::Thread)?;
    let ended = |r: std::result::Result<Result<WorkerReport>, _>| {
        r.unwrap_or_else(|_| {
            Err(Error::Thread(std::io::Error::other(
                "the worker thread ended without a report (it panicked)",
            )))
        })
    };
    tokio::pin!(shutdown, report);
    tokio::select! {
        r = &mut report => return ended(r),
        () = &mut shutdown => {}
    }
    let _ = stop.send(());
    ended(report.await)
}
