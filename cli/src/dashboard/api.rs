//! `/api`: the documents of [`super::data`] as JSON (GET), and the actions (POST): pause/resume a queue,
//! cancel/retry/delete a job, retry/purge a queue's dead letters. A form post from a page is answered with a
//! redirect back to the page (its `back` field) carrying what was done; any other caller gets JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::App;
use super::access;
use super::data::{self, Failure, Read};
use super::pages::enc;
use crate::context::Json;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Failure::Redis(e) => (StatusCode::BAD_GATEWAY, format!("{e:#}")),
        };
        (status, axum::Json(json!({ "error": msg }))).into_response()
    }
}

fn reply(r: Read<Json>) -> Response {
    match r {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(f) => f.into_response(),
    }
}

pub async fn queues(State(app): State<Arc<App>>) -> Response {
    reply(data::queues(&app).await)
}

pub async fn jobs(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    reply(
        data::jobs(
            &app,
            &queue,
            p.state.as_deref(),
            p.after.as_deref(),
            p.limit,
        )
        .await,
    )
}

pub async fn job(
    State(app): State<Arc<App>>,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    reply(data::job(&app, &queue, &id).await)
}

pub async fn workers(State(app): State<Arc<App>>) -> Response {
    reply(data::all_workers(&app).await)
}

pub async fn dead(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    reply(data::dead_letters(&app, &queue, p.after.as_deref(), p.limit).await)
}

pub async fn signals(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    reply(data::signals(&app, &queue, p.limit).await)
}

pub async fn schedules(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    reply(data::schedules(&app, &queue).await)
}

/// The fields a page's action form sends.
#[derive(Debug, Default, Deserialize)]
struct Form {
    back: Option<String>,
}

/// What an action did: a JSON document, and a line for the page it came from.
struct Done {
    doc: Json,
    said: String,
}

/// Answers an action: JSON, or for a page's form a redirect back with what was done.
fn answer(headers: &HeaderMap, body: &Bytes, done: Read<Done>) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return match done {
            Ok(d) => axum::Json(d.doc).into_response(),
            Err(f) => f.into_response(),
        };
    }
    let back = serde_urlencoded::from_bytes::<Form>(body)
        .ok()
        .and_then(|f| f.back);
    let back = access::local(back.as_deref());
    let said = match done {
        Ok(d) => d.said,
        Err(Failure::NotFound(m) | Failure::BadRequest(m)) => m,
        Err(Failure::Redis(e)) => format!("failed: {e:#}"),
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{back}{sep}done={}", enc(&said))).into_response()
}

/// `POST /api/queues/{queue}/pause|resume`.
pub async fn queue_action(
    State(app): State<Arc<App>>,
    Path((queue, what)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let done = async {
        let q = app.queue(&queue).await?;
        let signal = match what.as_str() {
            "pause" => q.pause().await?,
            "resume" => q.resume().await?,
            _ => {
                return Err(Failure::NotFound(format!(
                    "no action {what:?} (pause or resume)"
                )));
            }
        };
        Ok(Done {
            said: format!("{queue}: {what} sent (signal {signal})"),
            doc: json!({ "queue": queue, "action": what, "signal": signal }),
        })
    };
    answer(&headers, &body, done.await)
}

/// `POST /api/jobs/{queue}/{id}/cancel|retry|delete`. Retry means: a dead job back on the queue with a full set of
/// attempts; a delayed job, or a failed one waiting for its retry, run now.
pub async fn job_action(
    State(app): State<Arc<App>>,
    Path((queue, id, what)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let done = async {
        let q = app.queue(&queue).await?;
        let (outcome, said) = match what.as_str() {
            "cancel" => match q.cancel(&id).await? {
                rill::CancelOutcome::Removed => {
                    ("removed", "cancelled: it will never run".to_owned())
                }
                rill::CancelOutcome::Signalled => (
                    "signalled",
                    "cancel sent to the worker running it".to_owned(),
                ),
                _ => (
                    "not_found",
                    "nothing to cancel: not waiting, delayed or running".into(),
                ),
            },
            "retry" => {
                let state = q.state(&id).await?;
                match state {
                    rill::JobState::Dead => {
                        let r = q.retry_dead(&[id.as_str()]).await?;
                        if r.requeued.is_empty() {
                            ("not_requeued", "left dead: its id is live again".to_owned())
                        } else {
                            (
                                "requeued",
                                "back on the queue with a full set of attempts".to_owned(),
                            )
                        }
                    }
                    rill::JobState::Delayed | rill::JobState::Failed if q.promote(&id).await? => {
                        ("promoted", "on the queue now".to_owned())
                    }
                    other => (
                        "not_retried",
                        format!(
                            "it is {}: only dead, delayed and failed jobs can be retried",
                            other.as_str()
                        ),
                    ),
                }
            }
            "delete" => match q.delete(&id).await? {
                rill::Deleted::Removed(from) => {
                    ("deleted", format!("deleted (it was {})", from.as_str()))
                }
                rill::Deleted::CancelSent => {
                    ("cancel_sent", "running: cancel sent instead".to_owned())
                }
                _ => ("not_found", "already gone".to_owned()),
            },
            _ => {
                return Err(Failure::NotFound(format!(
                    "no action {what:?} (cancel, retry or delete)"
                )));
            }
        };
        Ok(Done {
            said: format!("job {id}: {said}"),
            doc: json!({ "queue": queue, "id": id, "action": what, "outcome": outcome }),
        })
    };
    answer(&headers, &body, done.await)
}

/// `POST /api/queues/{queue}/dead/retry|purge`: every dead letter of the queue.
pub async fn dead_action(
    State(app): State<Arc<App>>,
    Path((queue, what)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let done = async {
        let q = app.queue(&queue).await?;
        match what.as_str() {
            "retry" => {
                let r = q.retry_all_dead().await?;
                Ok(Done {
                    said: format!("{} dead letters back on {queue}", r.requeued.len()),
                    doc: json!({ "queue": queue, "action": what, "requeued": r.requeued.len(), "live": r.live }),
                })
            }
            "purge" => {
                let n = q.purge_dead(None).await?;
                Ok(Done {
                    said: format!("{n} dead letters of {queue} purged"),
                    doc: json!({ "queue": queue, "action": what, "purged": n }),
                })
            }
            _ => Err(Failure::NotFound(format!(
                "no action {what:?} (retry or purge)"
            ))),
        }
    };
    answer(&headers, &body, done.await)
}
