//! The Prometheus endpoint: `rill work --metrics ADDR` (the worker's jobs and its queue's depth) and
//! `rill metrics --listen ADDR [QUEUE...]` (queue depths, without a worker). Each scrape reads the queues' counts
//! (a few bounded reads per queue, nothing written) and encodes the registry as OpenMetrics text.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use prometheus_client::registry::Registry;
use rill::metrics::Metrics;

use crate::context::{self, Context};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Where to serve `/metrics`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Queues to export (default: every queue of the namespace, as found at each scrape).
    queues: Vec<String>,
}

/// What a scrape reads: fixed queues, or every queue of the namespace at that moment.
#[derive(Clone)]
pub enum Scope {
    Queues(Vec<rill::Queue<context::Json>>),
    All(rill::Client),
}

struct Endpoint {
    metrics: Metrics,
    registry: Registry,
    scope: Scope,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(endpoint: Arc<Endpoint>) -> impl axum::response::IntoResponse {
    use axum::http::{StatusCode, header};
    let queues = match &endpoint.scope {
        Scope::Queues(q) => Ok(q.clone()),
        Scope::All(client) => match client.queues().await {
            Ok(names) => names.iter().map(|n| client.queue(n)).collect(),
            Err(e) => Err(e),
        },
    };
    let observed = match queues {
        Ok(q) => endpoint.metrics.observe_queues(&q).await,
        Err(e) => Err(e),
    };
    if let Err(e) = observed {
        // The worker's own counters are still worth a scrape; say why the depths are stale.
        tracing::warn!(error = %e, "metrics: could not read queue depths");
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &endpoint.registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], text)
}

/// A router serving `/metrics` from `metrics`, with the depths of the queues in `scope` read at each scrape.
pub fn router<S: Clone + Send + Sync + 'static>(metrics: Metrics, scope: Scope) -> axum::Router<S> {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let endpoint = Arc::new(Endpoint {
        metrics,
        registry,
        scope,
    });
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || scrape(endpoint.clone())),
    )
}

/// Binds `addr` and serves `/metrics` from `metrics` until the task is dropped. Binding errors come back at once.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    scope: Scope,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app: axum::Router = router(metrics, scope);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics / --listen {addr}: cannot listen there"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}

pub async fn run(ctx: &Context, a: MetricsArgs) -> anyhow::Result<ExitCode> {
    ctx.connect().await?;
    let scope = if a.queues.is_empty() {
        Scope::All(ctx.client.clone())
    } else {
        let mut queues = Vec::new();
        for name in &a.queues {
            queues.push(ctx.existing_queue(name).await?);
        }
        Scope::Queues(queues)
    };
    let server = serve(a.listen, Metrics::new(), scope).await?;
    eprintln!(
        "rill metrics: serving http://{}/metrics (queue depths{}); Ctrl-C to stop",
        a.listen,
        if a.queues.is_empty() {
            " of every queue".to_owned()
        } else {
            format!(" of {}", a.queues.join(", "))
        }
    );
    tokio::signal::ctrl_c().await?;
    server.abort();
    Ok(ExitCode::SUCCESS)
}
