//! Feature `otel`: the producer's trace context travels in the job, and the worker's job span continues that
//! trace as an OpenTelemetry messaging `process` span. Spans go to an in-memory exporter. Alone in its binary:
//! it installs the global tracing subscriber.

mod support;

use std::time::Duration;

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rill::{Job, Worker};
use support::{TestRedis, eventually, spawn_worker};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_span_continues_the_producers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rill-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("orders").unwrap();
    // Enqueued inside the producer's own span: the job carries that span's context.
    let traced = async { q.enqueue(&1).await.unwrap() }
        .instrument(tracing::info_span!("checkout"))
        .await;
    // Enqueued outside any span: no context to carry.
    let untraced = q.enqueue(&2).await.unwrap();
    // In bulk, inside a span: each job carries it.
    let bulk = async { q.enqueue_many(&[1, 1]).await.unwrap() }
        .instrument(tracing::info_span!("import"))
        .await;
    let w = spawn_worker(
        Worker::new(client.clone(), "orders").unwrap(),
        |job: Job<u32>| async move {
            let has = job.header("x-traceparent").is_some();
            assert_eq!(
                has,
                *job.data() == 1,
                "only the traced job carries a context"
            );
            Ok(())
        },
    );
    eventually(Duration::from_secs(20), "all four ran", || async {
        w.stats.snapshot().completed == 4
    })
    .await;
    w.stop().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("producer span");
    let jobs: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "process orders")
        .collect();
    assert_eq!(
        jobs.len(),
        4,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let attr = |s: &opentelemetry_sdk::trace::SpanData, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    let of = |id: &str| {
        *jobs
            .iter()
            .find(|s| attr(s, "messaging.message.id").as_deref() == Some(id))
            .unwrap()
    };
    let job = of(&traced);
    assert_eq!(
        job.span_context.trace_id(),
        checkout.span_context.trace_id(),
        "the job's span is in the producer's trace"
    );
    assert_eq!(job.parent_span_id, checkout.span_context.span_id());
    assert!(job.parent_span_is_remote);
    assert_eq!(job.span_kind, SpanKind::Consumer);
    assert_eq!(attr(job, "messaging.system").as_deref(), Some("rill"));
    assert_eq!(
        attr(job, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr(job, "messaging.destination.name").as_deref(),
        Some("orders")
    );
    let import = spans
        .iter()
        .find(|s| s.name == "import")
        .expect("bulk producer span");
    for id in &bulk {
        let job = of(id);
        assert_eq!(job.span_context.trace_id(), import.span_context.trace_id());
        assert_eq!(job.parent_span_id, import.span_context.span_id());
    }
    // The untraced job starts a trace of its own.
    let alone = of(&untraced);
    assert_ne!(
        alone.span_context.trace_id(),
        checkout.span_context.trace_id()
    );
    assert!(!alone.parent_span_is_remote);
}
