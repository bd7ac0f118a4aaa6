//! `rill dashboard`: a web view of the namespace's queues, jobs and workers, with a JSON API under `/api` that the
//! pages are rendered from. `data` reads (the API's documents), `pages` renders them as HTML, `chart` draws the
//! last hour as SVG, `api` serves the documents and runs the actions, `access` guards both (token, CSRF,
//! read-only), and `rates` keeps each queue's last hour in memory from its events stream. `/metrics` serves the
//! queues' depths to Prometheus from the same process.

mod access;
mod api;
mod chart;
mod data;
mod pages;
mod rates;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use clap::Args;

use crate::context::Context;

pub const AFTER_HELP: &str = "Examples:
  rill dashboard                                   # http://127.0.0.1:8080/
  rill dashboard --listen 0.0.0.0:8080 --token \"$(openssl rand -hex 16)\"
  rill dashboard --read-only

Pages: queues (counts, rates, the last hour), a queue's jobs by state, a job (payload, result, history,
checkpoints), dead letters, workers, signals, schedules. JSON under /api (see README), Prometheus text at
/metrics. A listener other hosts can reach needs --token (or RILL_DASHBOARD_TOKEN): API callers send
`Authorization: Bearer TOKEN`, browsers sign in once.";

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Address to serve on. Any address but a loopback one needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Token every request must carry (bearer header, or the sign-in form's cookie).
    #[arg(long, env = "RILL_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Show, never act: no buttons, and every POST refused.
    #[arg(long)]
    read_only: bool,
    /// How often open pages update themselves (0 = never).
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    refresh: Duration,
}

/// What every request handler shares.
pub struct App {
    client: rill::Client,
    namespace: String,
    /// The Redis URL as shown on the pages (without a password).
    redis: String,
    access: access::Access,
    rates: rates::Rates,
    refresh: Duration,
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/workers", get(pages::workers))
        .route("/queues/{queue}", get(pages::queue))
        .route("/queues/{queue}/find", get(pages::find))
        .route("/queues/{queue}/dead", get(pages::dead))
        .route("/queues/{queue}/signals", get(pages::signals))
        .route("/queues/{queue}/schedules", get(pages::schedules))
        .route("/jobs/{queue}/{id}", get(pages::job))
        .route("/login", get(pages::login).post(access::login))
        .route("/api/queues", get(api::queues))
        .route("/api/workers", get(api::workers))
        .route("/api/queues/{queue}/jobs", get(api::jobs))
        .route("/api/queues/{queue}/dead", get(api::dead))
        .route("/api/queues/{queue}/signals", get(api::signals))
        .route("/api/queues/{queue}/schedules", get(api::schedules))
        .route("/api/queues/{queue}/{action}", post(api::queue_action))
        .route("/api/queues/{queue}/dead/{action}", post(api::dead_action))
        .route("/api/jobs/{queue}/{id}", get(api::job))
        .route("/api/jobs/{queue}/{id}/{action}", post(api::job_action))
        .merge(crate::metrics::router(
            rill::metrics::Metrics::new(),
            crate::metrics::Scope::All(app.client.clone()),
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            access::guard,
        ))
        .with_state(app)
}

/// The URL without its password, for the page header.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub async fn run(ctx: &Context, a: DashboardArgs) -> anyhow::Result<ExitCode> {
    let access = access::Access::new(a.token, a.read_only, a.listen)?;
    ctx.connect().await?;
    let app = Arc::new(App {
        client: ctx.client.clone(),
        namespace: ctx.namespace.clone(),
        redis: shown(&ctx.url),
        access,
        rates: rates::Rates::default(),
        refresh: a.refresh,
    });
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen there", a.listen))?;
    let sampler = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(rates::run(app.clone())));
    eprintln!(
        "rill dashboard: http://{}/ (namespace {}{}{}); Ctrl-C to stop",
        listener.local_addr()?,
        ctx.namespace,
        if app.access.read_only {
            ", read-only"
        } else {
            ""
        },
        if app.access.needs_login() {
            ", token required"
        } else {
            ""
        },
    );
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(sampler);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_never_shows_a_password() {
        assert_eq!(
            super::shown("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            super::shown("redis://user:pw@10.0.0.5:6379/0"),
            "redis://…@10.0.0.5:6379/0"
        );
    }
}
