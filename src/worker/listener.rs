//! The signal listener: follows the queue's signals stream (its own connection, blocking reads) and applies
//! what is for this worker: cancel or park a job it runs, pause / resume, quiet, stop. Each applied signal (and
//! each one addressed to this worker that it does not act on) gets an outcome entry. Sending signals and reading
//! their history is [`crate::signals`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::shared::{Crew, Shared};
use crate::error::{Error, Result};
use crate::signals::{Signal, SignalKind, Target, parse_signal, record_outcome};
use crate::wire;

/// Longest block of one read.
const BLOCK: Duration = Duration::from_secs(2);

/// Catches up before the fetch loop begins (the newest signal, and whether the queue is paused, so a pause sent
/// before this worker started holds it back before it takes anything), then follows the stream until `stop`
/// fires.
///
/// # Errors
/// Redis errors of the catch-up.
pub(super) async fn start(crew: Crew, stop: CancellationToken) -> Result<AbortOnDropHandle<()>> {
    let mut conn = crew[0].client.blocking_conn(BLOCK).await?;
    let last = catch_up(&crew, &mut conn).await?;
    Ok(AbortOnDropHandle::new(tokio::spawn(follow(
        crew, stop, conn, last,
    ))))
}

/// Applies the paused flag and returns the id of the newest signal (signals sent earlier are history: a pause
/// among them is in the flag).
async fn catch_up(crew: &[Arc<Shared>], conn: &mut crate::client::BlockingConn) -> Result<String> {
    let shared = &crew[0];
    let last = crate::queue::newest_entry_id(conn, &shared.keys.signals).await?;
    let paused: bool = redis::cmd("EXISTS")
        .arg(&shared.keys.paused)
        .query_async(conn)
        .await?;
    for m in crew {
        m.control.set_paused(paused);
    }
    Ok(last)
}

async fn follow(
    crew: Crew,
    stop: CancellationToken,
    conn: crate::client::BlockingConn,
    mut last: String,
) {
    let shared = crew[0].clone();
    let mut conn = Some(conn);
    loop {
        if stop.is_cancelled() {
            return;
        }
        if conn.is_none() {
            match shared.client.blocking_conn(BLOCK).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "signals: cannot connect");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(BLOCK) => {}
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connection set above");
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&shared.keys.signals)
            .arg(&last);
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            r = read.query_async::<redis::Value>(c) => r,
        };
        let entries = match reply.map_err(Error::from).and_then(wire::parse_read_reply) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "signals: read failed");
                conn = None;
                continue;
            }
        };
        for raw in entries {
            last = raw.id.clone();
            let Some(signal) = parse_signal(raw) else {
                continue;
            };
            // Partitions' members share the consumer name: the first outcome each signal has is recorded.
            let outcome = crew.iter().fold(None, |first, m| {
                let applied = apply(m, &signal);
                first.or(applied)
            });
            if let Some((result, reason)) = outcome {
                record(&shared, c, &signal, result, &reason).await;
            }
        }
    }
}

/// Applies one signal. Returns the outcome to record, if this worker has one to report.
fn apply(shared: &Shared, signal: &Signal) -> Option<(&'static str, String)> {
    let mine = match &signal.target {
        Target::Queue => true,
        Target::Worker(w) => *w == shared.consumer,
        Target::Job(_) => false,
    };
    let applied: Option<&str> = match (&signal.kind, &signal.target) {
        (SignalKind::Pause, Target::Job(job)) => shared
            .deliveries
            .park_job(job)
            .then_some("asked the running job to checkpoint and park"),
        (SignalKind::Cancel, Target::Job(job)) => shared
            .deliveries
            .cancel_job(job)
            .then_some("cancelled the running job"),
        (SignalKind::Pause, Target::Queue) => {
            shared.control.set_paused(true);
            shared.deliveries.stop_all();
            Some("paused: taking no new jobs, running ones asked to checkpoint")
        }
        (SignalKind::Resume, Target::Queue) => {
            shared.control.set_paused(false);
            Some("resumed")
        }
        (SignalKind::Quiet, _) if mine => {
            shared.control.quiet();
            shared.deliveries.stop_all();
            Some("quiet: taking no new jobs, running ones asked to checkpoint")
        }
        (SignalKind::Stop, _) if mine => {
            shared.control.request_stop();
            Some("stopping gracefully")
        }
        _ => None,
    };
    match (applied, &signal.target) {
        (Some(r), _) => Some(("applied", r.to_owned())),
        (None, Target::Worker(w)) if *w == shared.consumer => Some((
            "ignored",
            format!("a worker does not act on {}", signal.kind.to_wire()),
        )),
        _ => None,
    }
}

/// Logs an outcome and appends it to the outcomes stream.
async fn record(
    shared: &Shared,
    conn: &mut crate::client::BlockingConn,
    signal: &Signal,
    result: &str,
    reason: &str,
) {
    tracing::info!(queue = %shared.keys.queue, signal = %signal.id, kind = %signal.kind.to_wire(), result, %reason, "signal");
    if let Err(e) = record_outcome(
        conn,
        &shared.keys,
        &signal.id,
        &shared.consumer,
        result,
        reason,
    )
    .await
    {
        warn_throttled!(error = %e, "could not record a signal outcome");
    }
}
