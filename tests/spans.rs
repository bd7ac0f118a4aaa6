//! Each handler runs in a `rill.job` tracing span (queue, job, attempt, the producer's trace context). Alone in
//! its test binary: the subscriber it installs is thread-local, and tracing caches which callsites are enabled
//! across threads, so another test running beside it could hide the span.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Enqueue, Job, JobError, Worker};
use support::{TestRedis, eventually, spawn_worker};

/// Log output gathered in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The default, current-thread runtime: the handler runs on this thread, under this thread's subscriber.
#[tokio::test]
async fn what_a_handler_logs_names_its_job_and_attempt() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("spans").unwrap();
    let w = spawn_worker(
        Worker::new(client.clone(), "spans")
            .unwrap()
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .block(Duration::from_millis(200)),
        |job: Job<u32>| async move {
            tracing::info!("resizing");
            if job.attempt() == 1 {
                return Err(JobError::retry("busy"));
            }
            Ok(())
        },
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    q.enqueue_with(&7, Enqueue::new().id("img-7").header("x-traceparent", tp))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "completed on its second attempt",
        || async { w.stats.snapshot().completed == 1 },
    )
    .await;
    w.stop().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("resizing")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, attempt) in lines.iter().zip([1, 2]) {
        assert!(
            line.contains("rill.job{")
                && line.contains("queue=spans")
                && line.contains("job=img-7")
                && line.contains(&format!("attempt={attempt}"))
                && line.contains(&format!("traceparent={tp}")),
            "{line}"
        );
    }
}
