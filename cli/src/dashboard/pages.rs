//! The HTML pages, rendered on the server from the documents of [`super::data`] (the same ones `/api` serves).
//! Each page's `<main id="live">` is fetched again every `--refresh` and swapped in place by a few lines of inline
//! script, so counts move without a reload and without a JavaScript build step.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::App;
use super::chart;
use super::data::{self, Failure};
use crate::context::Json;
use crate::output::{self, now_ms};

const CSS: &str = include_str!("style.css");
const LIVE_JS: &str = include_str!("live.js");

/// What stays as it is in a path segment or query value.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` percent-encoded for a path segment or a query value (job ids may hold `/`, `?`, `#`, `&`).
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, KEEP).to_string()
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    /// A message from the action just taken.
    done: Option<String>,
    id: Option<String>,
    next: Option<String>,
    failed: Option<String>,
}

fn page(app: &App, title: &str, flash: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(app.access.csrf);
                title { (title) " · rill" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a.brand href="/" { "rill" }
                    nav {
                        a href="/" { "Queues" }
                        a href="/workers" { "Workers" }
                    }
                    span.where { "namespace " b { (app.namespace) } " on " (app.redis) }
                    @if app.access.read_only { span.badge { "read-only" } }
                }
                @if let Some(msg) = flash { p.flash role="status" { (msg) } }
                main #live data-refresh-ms=(app.refresh.as_millis()) { (body) }
                script { (PreEscaped(LIVE_JS)) }
            }
        }
    }
}

/// A button that POSTs `url` (with the CSRF token) and comes back to `back`; nothing on a read-only dashboard.
fn action(app: &App, url: &str, label: &str, back: &str, confirm: Option<&str>) -> Markup {
    if app.access.read_only {
        return html! {};
    }
    html! {
        form.inline method="post" action=(url)
            onsubmit=[confirm.map(|c| format!("return confirm({})", serde_json::to_string(c).unwrap_or_default()))] {
            input type="hidden" name="csrf" value=(app.access.csrf);
            input type="hidden" name="back" value=(back);
            button type="submit" data-action=(label.to_lowercase()) { (label) }
        }
    }
}

fn failure_page(app: &App, f: Failure) -> Response {
    let (status, msg) = match f {
        Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        Failure::Redis(e) => (StatusCode::BAD_GATEWAY, format!("{e:#}")),
    };
    let body = html! { h1 { (status.canonical_reason().unwrap_or("Error")) } p.error { (msg) } };
    (status, page(app, "error", None, body)).into_response()
}

fn ago(ms: Option<u64>, now: u64) -> String {
    ms.map_or("-".into(), |ms| format!("{} ago", output::ago(ms, now)))
}

fn age_ms(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| {
        output::age(std::time::Duration::from_millis(ms))
    })
}

fn n(v: &Json) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Json) -> &str {
    v.as_str().unwrap_or("")
}

fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `/`: every queue with its counts, rates, workers and the last hour.
pub async fn overview(State(app): State<Arc<App>>, Query(p): Query<Params>) -> Response {
    let doc = match data::queues(&app).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let queues = doc["queues"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Queues" }
        @if queues.is_empty() {
            p { "No queues in this namespace yet: enqueue a job (" code { "rill enqueue QUEUE '{}'" } ")." }
        } @else {
            table.queues {
                thead { tr {
                    th { "Queue" } th.num { "Waiting" } th.num { "Active" } th.num { "Delayed" }
                    th.num { "Parked" } th.num { "Dead" } th { "Oldest waiting" } th.num { "Done/s" }
                    th.num { "Failed/s" } th { "Workers" } th { "Last hour" } th {}
                } }
                tbody {
                    @for q in &queues {
                        @let name = s(&q["queue"]);
                        tr data-queue=(name) {
                            td { a href={"/queues/" (name)} { (name) }
                                 @if q["paused"] == true { " " span.badge.paused { "paused" } } }
                            td.num { (n(&q["waiting"])) } td.num { (n(&q["active"])) }
                            td.num { (n(&q["delayed"])) } td.num { (n(&q["parked"])) }
                            td.num { a href={"/queues/" (name) "/dead"} { (n(&q["dead"])) } }
                            td { (age_ms(q["oldest_waiting_age_ms"].as_u64())) }
                            td.num { (format!("{:.1}", q["completed_per_s"].as_f64().unwrap_or(0.0))) }
                            td.num { (format!("{:.1}", q["failed_per_s"].as_f64().unwrap_or(0.0))) }
                            td { (n(&q["healthy_workers"])) " healthy of " (n(&q["workers"])) }
                            td { (chart::sparkline(&q["last_hour"])) }
                            td { (pause_button(&app, name, q["paused"] == true, "/")) }
                        }
                    }
                }
            }
            p.note { "Done/s and Failed/s: the last full minute, from the events streams. Charts: the last hour, a bar a minute." }
        }
    };
    page(&app, "Queues", p.done.as_deref(), body).into_response()
}

fn pause_button(app: &App, queue: &str, paused: bool, back: &str) -> Markup {
    if paused {
        action(
            app,
            &format!("/api/queues/{queue}/resume"),
            "Resume",
            back,
            None,
        )
    } else {
        action(
            app,
            &format!("/api/queues/{queue}/pause"),
            "Pause",
            back,
            None,
        )
    }
}

fn queue_nav(queue: &str, here: &str) -> Markup {
    let links = [
        ("Jobs", format!("/queues/{queue}")),
        ("Dead letters", format!("/queues/{queue}/dead")),
        ("Signals", format!("/queues/{queue}/signals")),
        ("Schedules", format!("/queues/{queue}/schedules")),
    ];
    html! {
        nav.sub { @for (label, href) in &links {
            @if *label == here { b { (label) } } @else { a href=(href) { (label) } }
        } }
    }
}

/// `/queues/{queue}?state=&after=`: jobs by state, a page at a time, with the queue's last hour.
pub async fn queue(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let doc = match data::jobs(
        &app,
        &queue,
        p.state.as_deref(),
        p.after.as_deref(),
        p.limit,
    )
    .await
    {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let now = now_ms();
    let state = s(&doc["state"]).to_owned();
    let here = format!("/queues/{queue}?state={state}");
    let counts = &doc["counts"];
    let paused = doc["paused"] == true;
    let tabs = [
        "waiting",
        "active",
        "delayed",
        "failed",
        "parked",
        "dead",
        "completed",
    ];
    let jobs = doc["jobs"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Queue " (queue) @if paused { " " span.badge.paused { "paused" } } " " (pause_button(&app, &queue, paused, &here)) }
        (queue_nav(&queue, "Jobs"))
        (limits(&doc["limits"]))
        section.chart { h2 { "Last hour" } (chart::hour(&doc["last_hour"])) }
        form.search method="get" action={"/queues/" (queue) "/find"} {
            input type="search" name="id" placeholder="job id" aria-label="job id";
            button type="submit" { "Find" }
        }
        nav.tabs { @for t in tabs {
            // Redis counts delayed jobs and failed ones waiting for their retry together: shown apart below.
            @let count = counts.get(t).filter(|_| t != "delayed").map(n);
            a.tab.current[t == state] href={"/queues/" (queue) "?state=" (t)} {
                (t) @if let Some(c) = count { " " span.count { (c) } }
            }
        } }
        p.note { (n(&counts["delayed"])) " delayed or failed and waiting for a retry." }
        @if jobs.is_empty() {
            p { "No " (state) " jobs." }
        } @else {
            table.jobs {
                thead { tr { th { "Job" } th.num { "Attempts" } th { "When" } th { "Worker / error" } } }
                tbody { @for j in &jobs {
                    @let id = s(&j["id"]);
                    tr {
                        td { a href={"/jobs/" (queue) "/" (enc(id))} { (id) } }
                        td.num { (j["attempts"].as_u64().map_or("-".into(), |a| a.to_string())) }
                        td { (when(&state, j["at_ms"].as_u64(), now)) }
                        td { (j["owner"].as_str().or(j["error"].as_str()).map(|t| output::one_line(t, 100)).unwrap_or_default()) }
                    }
                } }
            }
            @if let Some(next) = doc["next"].as_str() {
                p { a.next href={"/queues/" (queue) "?state=" (state) "&after=" (enc(next))} { "Next page →" } }
            }
        }
    };
    page(&app, &queue, p.done.as_deref(), body).into_response()
}

/// The queue's limits across all workers, if it has any.
fn limits(l: &Json) -> Markup {
    let said = rate_and_cap(l);
    let per_key = l["per_key"]["field"]
        .as_str()
        .map(|f| format!("{}, for each {f}", rate_and_cap(&l["per_key"]).join("; ")));
    let levels = l["priority_levels"].as_u64().unwrap_or(1);
    let order = match l["priority_weights"].as_array() {
        Some(w) => format!(
            "weighted {}",
            w.iter()
                .map(|x| n(x).to_string())
                .collect::<Vec<_>>()
                .join(":")
        ),
        None => "strict".to_owned(),
    };
    let lease = l["lease_ms"]
        .as_u64()
        .map(|ms| output::age(std::time::Duration::from_millis(ms)));
    html! {
        @if !said.is_empty() { p.limits { "Limits: " (said.join("; ")) " (across all workers)" } }
        @if let Some(k) = per_key { p.limits { "Per-key limits: " (k) " (keys with a backlog take turns)" } }
        @if levels > 1 { p.limits { "Priority levels: 0 to " (levels - 1) ", " (order) } }
        @if let Some(lease) = lease { p.limits { "Lease: " (lease) " (every worker)" } }
    }
}

/// "at most N starts per D", "at most K running at once": what `l`'s `rate` and `concurrency` say.
fn rate_and_cap(l: &Json) -> Vec<String> {
    let rate = l["rate"].as_object().map(|r| {
        let per = std::time::Duration::from_millis(r.get("per_ms").map(n).unwrap_or(0));
        format!(
            "at most {} starts per {}",
            r.get("max").map(n).unwrap_or(0),
            output::age(per)
        )
    });
    let cap = l["concurrency"]
        .as_u64()
        .map(|k| format!("at most {k} running at once"));
    rate.into_iter().chain(cap).collect()
}

fn when(state: &str, at_ms: Option<u64>, now: u64) -> String {
    match (state, at_ms) {
        (_, None) => "-".into(),
        ("delayed" | "failed", Some(ms)) if ms > now => {
            format!(
                "due in {}",
                output::age(std::time::Duration::from_millis(ms - now))
            )
        }
        ("delayed" | "failed", Some(_)) => "due now".into(),
        (_, ms) => ago(ms, now),
    }
}

/// `/queues/{queue}/find?id=`: the job's page.
pub async fn find(Path(queue): Path<String>, Query(p): Query<Params>) -> Response {
    let id = p.id.unwrap_or_default();
    let id = id.trim();
    if id.is_empty() {
        return Redirect::to(&format!("/queues/{queue}")).into_response();
    }
    Redirect::to(&format!("/jobs/{queue}/{}", enc(id))).into_response()
}

/// `/jobs/{queue}/{id}`: payload, result, attempts, history, checkpoints, the worker running it, and actions.
pub async fn job(
    State(app): State<Arc<App>>,
    Path((queue, id)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> Response {
    let doc = match data::job(&app, &queue, &id).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let state = s(&doc["state"]);
    let here = format!("/jobs/{queue}/{}", enc(&id));
    let url = |a: &str| format!("/api/jobs/{queue}/{}/{a}", enc(&id));
    let cancellable = matches!(state, "waiting" | "delayed" | "failed" | "active");
    let retry = match state {
        "dead" => Some("Retry"),
        "delayed" | "failed" => Some("Run now"),
        _ => None,
    };
    let none = Vec::new();
    let history = doc["history"].as_array().unwrap_or(&none);
    let checkpoints = doc["checkpoints"].as_array().unwrap_or(&none);
    let body = html! {
        h1 { "Job " (id) }
        p { a href={"/queues/" (queue)} { "← " (queue) } }
        div.actions {
            @if let Some(label) = retry { (action(&app, &url("retry"), label, &here, None)) }
            @if cancellable { (action(&app, &url("cancel"), "Cancel", &here, None)) }
            (action(&app, &url("delete"), "Delete", &format!("/queues/{queue}"), Some("Delete this job for good?")))
        }
        dl.fields {
            dt { "State" } dd { span.state.(state) { (state) } }
            dt { "Attempts" } dd { (s(&doc["attempts_text"])) }
            @if let Some(owner) = doc["owner"].as_object() {
                dt { "Running on" } dd { (owner.get("worker").map(s).unwrap_or("")) " (delivery " (owner.get("token").map(n).unwrap_or(0)) ")" }
            }
            @if let Some(w) = doc["worker"].as_object() {
                dt { "Worker" } dd { (w.get("host").map(s).unwrap_or("")) " pid " (w.get("pid").map(n).unwrap_or(0)) ", " (w.get("health").map(s).unwrap_or("")) }
            }
            @if let Some(e) = doc["last_error"].as_str() { dt { "Last error" } dd { pre.error { (e) } } }
            @if let Some(ms) = doc["finished_ms"].as_u64() { dt { "Finished" } dd { (output::time(ms)) } }
            @if let Some(e) = doc["entry_id"].as_str() { dt { "Entry" } dd { code { (e) } } }
        }
        @for (label, key) in [("Payload", "payload"), ("Progress", "progress"), ("Result", "result")] {
            @if !doc[key].is_null() { h2 { (label) } pre.json data-field=(key) { (pretty(&doc[key])) } }
        }
        h2 { "History" }
        @if history.is_empty() { p.note { "No events name this job (the events stream keeps the newest ~10,000)." } }
        @else {
            table { thead { tr { th { "When" } th { "Event" } th.num { "Attempts" } th { "Detail" } } }
                tbody { @for e in history { tr {
                    td { (output::time(n(&e["ms"]))) } td { (s(&e["event"])) }
                    td.num { (n(&e["attempt"])) }
                    td { (e["reason"].as_str().or(e["error"].as_str()).map(|t| output::one_line(t, 120)).unwrap_or_default()) }
                } } } }
        }
        @if !checkpoints.is_empty() {
            h2 { "Checkpoints" }
            table { thead { tr { th.num { "Version" } th { "Written" } th { "By" } th { "Label" } th.num { "Bytes" } } }
                tbody { @for c in checkpoints { tr {
                    td.num { (n(&c["version"])) } td { (output::time(n(&c["written_ms"]))) }
                    td { (s(&c["written_by"])) } td { (c["label"].as_str().unwrap_or("-")) } td.num { (n(&c["bytes"])) }
                } } } }
            h3 { "Newest state" } pre.json { (pretty(&checkpoints[0]["state"])) }
        }
    };
    page(&app, &format!("Job {id}"), p.done.as_deref(), body).into_response()
}

/// `/queues/{queue}/dead`: dead letters with retry, retry all and purge.
pub async fn dead(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let doc = match data::dead_letters(&app, &queue, p.after.as_deref(), p.limit).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let here = format!("/queues/{queue}/dead");
    let now = now_ms();
    let list = doc["dead"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Dead letters of " (queue) " " span.count { (n(&doc["total"])) } }
        (queue_nav(&queue, "Dead letters"))
        @if list.is_empty() { p { "No dead letters." } } @else {
            div.actions {
                (action(&app, &format!("/api/queues/{queue}/dead/retry"), "Retry all", &here, None))
                (action(&app, &format!("/api/queues/{queue}/dead/purge"), "Purge", &here, Some("Delete every dead letter of this queue for good?")))
            }
            table.dead {
                thead { tr { th { "Job" } th { "Reason" } th.num { "Attempts" } th { "Died" } th { "Error" } th { "Payload" } th {} } }
                tbody { @for d in &list {
                    @let id = s(&d["job_id"]);
                    tr data-job=(id) {
                        td { a href={"/jobs/" (queue) "/" (enc(id))} { (id) } }
                        td { (s(&d["reason"])) } td.num { (n(&d["attempts"])) }
                        td { (ago(d["dead_ms"].as_u64(), now)) }
                        td { (output::one_line(s(&d["error"]), 100)) }
                        td { code { (output::compact(&d["payload"], 80)) } }
                        td { (action(&app, &format!("/api/jobs/{queue}/{}/retry", enc(id)), "Retry", &here, None)) }
                    }
                } }
            }
            @if let Some(next) = doc["next"].as_str() {
                p { a.next href={(here) "?after=" (enc(next))} { "Next page →" } }
            }
        }
    };
    page(
        &app,
        &format!("Dead letters of {queue}"),
        p.done.as_deref(),
        body,
    )
    .into_response()
}

/// `/workers`: every worker, its health, status and the jobs it runs.
pub async fn workers(State(app): State<Arc<App>>, Query(p): Query<Params>) -> Response {
    let doc = match data::all_workers(&app).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let list = doc["workers"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Workers" }
        @if list.is_empty() { p { "No workers registered." } } @else {
            table.workers {
                thead { tr { th { "Worker" } th { "Queue" } th { "Host / pid" } th { "Status" } th { "Health" }
                    th.num { "In flight" } th.num { "Done" } th.num { "Failed" } th { "Last beat" } th { "Running" } } }
                tbody { @for w in &list {
                    @let queue = s(&w["queue"]);
                    tr {
                        td { code { (s(&w["id"])) } } td { a href={"/queues/" (queue)} { (queue) } }
                        td { (s(&w["host"])) " / " (n(&w["pid"])) } td { (s(&w["status"])) }
                        td { span.health.(s(&w["health"])) { (s(&w["health"])) }
                             @if let Some(why) = w["health_reason"].as_str() { ": " (why) } }
                        td.num { (n(&w["in_flight"])) "/" (n(&w["concurrency"])) }
                        td.num { (n(&w["processed"])) } td.num { (n(&w["failed"])) }
                        td { (age_ms(w["last_beat_age_ms"].as_u64())) " ago" }
                        td { @for r in w["running"].as_array().into_iter().flatten() {
                            @let id = s(&r["job"]);
                            a href={"/jobs/" (queue) "/" (enc(id))} { (id) } " (" (age_ms(r["running_ms"].as_u64())) ") "
                        } }
                    }
                } }
            }
        }
    };
    page(&app, "Workers", p.done.as_deref(), body).into_response()
}

/// `/queues/{queue}/signals`: the newest signals and what their receivers did.
pub async fn signals(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let doc = match data::signals(&app, &queue, p.limit).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let now = now_ms();
    let list = doc["signals"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Signals of " (queue) }
        (queue_nav(&queue, "Signals"))
        @if list.is_empty() { p { "No signals sent." } } @else {
            table.signals {
                thead { tr { th { "Sent" } th { "Kind" } th { "Target" } th { "Sender" } th { "Outcomes" } } }
                tbody { @for sig in list.iter().rev() { tr {
                    td { (ago(sig["ms"].as_u64(), now)) } td { (s(&sig["kind"])) } td { (s(&sig["target"])) }
                    td { (s(&sig["sender"])) }
                    td { @for o in sig["outcomes"].as_array().into_iter().flatten() {
                        (s(&o["receiver"])) ": " (s(&o["result"])) @if !s(&o["reason"]).is_empty() { " (" (s(&o["reason"])) ")" } br;
                    } }
                } } }
            }
        }
    };
    page(
        &app,
        &format!("Signals of {queue}"),
        p.done.as_deref(),
        body,
    )
    .into_response()
}

/// `/queues/{queue}/schedules`: cron and interval schedules with their next and last fire.
pub async fn schedules(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let doc = match data::schedules(&app, &queue).await {
        Ok(d) => d,
        Err(f) => return failure_page(&app, f),
    };
    let list = doc["schedules"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Schedules of " (queue) }
        (queue_nav(&queue, "Schedules"))
        @if list.is_empty() { p { "No schedules (" code { "rill schedule add NAME " (queue) " --every 1h" } ")." } } @else {
            table.schedules {
                thead { tr { th { "Name" } th { "When" } th { "Next" } th { "Last fire" } th.num { "Fired" } th { "Payload" } } }
                tbody { @for sch in &list { tr {
                    td { (s(&sch["name"])) @if sch["paused"] == true { " " span.badge.paused { "paused" } } }
                    td { (s(&sch["when"])) }
                    td { (sch["next_ms"].as_u64().filter(|_| sch["paused"] != true).map_or("-".into(), output::time)) }
                    td { (sch["last_fire_ms"].as_u64().map_or("-".into(), output::time)) }
                    td.num { (n(&sch["fired"])) }
                    td { code { (output::compact(&sch["payload"], 80)) } }
                } } }
            }
        }
    };
    page(
        &app,
        &format!("Schedules of {queue}"),
        p.done.as_deref(),
        body,
    )
    .into_response()
}

/// `/login`: the token form (only when the dashboard has a token).
pub async fn login(State(app): State<Arc<App>>, Query(p): Query<Params>) -> Response {
    let next = super::access::local(p.next.as_deref());
    let body = html! {
        h1 { "Sign in" }
        @if p.failed.is_some() { p.error { "That token is not this dashboard's." } }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label { "Token " input type="password" name="token" autofocus; }
            button type="submit" { "Sign in" }
        }
    };
    page(&app, "Sign in", None, body).into_response()
}
