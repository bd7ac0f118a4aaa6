//! The heartbeat: registers the worker on start, beats every `health.beat_interval` through `heartbeat.lua`
//! (the record hash, the sorted set of last beats, an entry on the heartbeats stream) and deregisters on a
//! graceful exit. It runs on the lease keeper's thread ([`super::lease`]) with its own connection. What a beat
//! says is built here; how others read it is [`crate::registry`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::shared::{Crew, Shared};
use crate::registry::{HEARTBEATS_MAXLEN, RECORD_TTL, RUNNING_LISTED};
use crate::scripts;
use crate::scripts::Call;

/// Beats until `stop` fires (the first one registers).
pub(super) async fn run(crew: Crew, stop: CancellationToken) {
    let shared = crew[0].clone();
    let mut conn = None;
    let mut beats = Beats::default();
    loop {
        beat(&crew, &mut conn, &mut beats).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.config.health.beat_interval) => {}
        }
    }
}

/// Record fields, in order.
type Fields = Vec<(String, String)>;

/// What the next beat must say beyond the counters.
#[derive(Debug, Default)]
struct Beats {
    registered: bool,
    lease_failures_at_last_beat: u64,
}

impl Beats {
    /// The record fields of the next beat: status and counters (record and stream), the jobs running now
    /// (record only), and the static fields until one beat is in (empty after).
    fn fields(&self, crew: &[Arc<Shared>]) -> (Fields, Fields, Fields) {
        let shared = &crew[0];
        let stats = shared.stats.snapshot();
        let in_flight: u64 = crew.iter().map(|m| m.control.running()).sum();
        let per_beat: Fields = vec![
            ("status".into(), shared.control.status().to_owned()),
            (
                "reason".into(),
                shared.control.impairment().unwrap_or_default(),
            ),
            ("in_flight".into(), in_flight.to_string()),
            ("processed".into(), stats.completed.to_string()),
            ("failed".into(), (stats.retried + stats.dead).to_string()),
            (
                "lease_failures".into(),
                stats
                    .lease_failures
                    .saturating_sub(self.lease_failures_at_last_beat)
                    .to_string(),
            ),
        ];
        let mut f = Vec::new();
        if !self.registered {
            f.extend([
                ("host".into(), crate::identity::hostname()),
                ("pid".into(), std::process::id().to_string()),
                ("queue".into(), shared.keys.queue.clone()),
                ("concurrency".into(), shared.config.concurrency.to_string()),
                ("version".into(), env!("CARGO_PKG_VERSION").to_owned()),
                ("started_ms".into(), shared.started_ms.to_string()),
                ("capabilities".into(), shared.config.capabilities.join(",")),
            ]);
            for (k, v) in &shared.config.metadata {
                f.push((format!("meta:{k}"), v.clone()));
            }
        }
        let record: Fields = vec![(
            "running".into(),
            crate::registry::running_field(
                &crew
                    .iter()
                    .flat_map(|m| m.deliveries.running(RUNNING_LISTED))
                    .take(RUNNING_LISTED)
                    .collect::<Vec<_>>(),
            ),
        )];
        (per_beat, record, f)
    }

    /// A beat landed; `registered`: the record holds the static fields (false after Redis lost its data or the
    /// worker was judged crashed and its record removed: they go out again with the next beat).
    fn sent(&mut self, shared: &Shared, registered: bool) {
        self.registered = registered;
        self.lease_failures_at_last_beat = shared.stats.snapshot().lease_failures;
    }
}

/// One heartbeat. Failures are logged: a worker that cannot beat is judged crashed by the others, which then
/// adopt its jobs (its own acks are then refused as stale).
async fn beat(
    crew: &[Arc<Shared>],
    conn: &mut Option<crate::client::BlockingConn>,
    beats: &mut Beats,
) {
    let shared = &crew[0];
    if conn.is_none() {
        match shared.client.blocking_conn(Duration::ZERO).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                warn_throttled!(error = %e, "heartbeat: cannot connect");
                return;
            }
        }
    }
    let (per_beat, record, registration) = beats.fields(crew);
    let c = conn.as_mut().expect("connection set above");
    let sent = std::time::Instant::now();
    let beat = scripts::heartbeat(
        c,
        &shared.keys,
        scripts::Heartbeat {
            consumer: &shared.consumer,
            // The server's clock: every host judges beats by the same clock.
            now_ms: 0,
            maxlen: HEARTBEATS_MAXLEN,
            record_ttl_ms: RECORD_TTL.as_millis() as u64,
            crash_after_ms: shared.config.health.crash_after.as_millis() as u64,
            fields: scripts::BeatFields {
                per_beat: &per_beat,
                record: &record,
                registration: &registration,
            },
        },
    );
    let r = shared.stats.timed(Call::Heartbeat, beat).await;
    match r {
        Ok(beat) => {
            beats.sent(shared, beat.registered);
            // Every member learns of the beat (its contact watch) and of crashed workers (whose deliveries on
            // its partition it adopts).
            for m in crew {
                m.control.beat_landed(sent, beat.crashed.clone());
            }
        }
        Err(e) => {
            warn_throttled!(error = %e, "heartbeat failed");
            *conn = None;
        }
    }
}

/// Leaves the registry (after the keeper thread, which beats, has stopped).
pub(super) async fn deregister(shared: &Shared) {
    let Ok(mut c) = shared.client.conn().await else {
        return;
    };
    let r: redis::RedisResult<()> = redis::pipe()
        .cmd("DEL")
        .arg(shared.keys.worker(&shared.consumer))
        .ignore()
        .cmd("ZREM")
        .arg(&shared.keys.workers)
        .arg(&shared.consumer)
        .ignore()
        .query_async(&mut c)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not leave the worker registry");
    }
}
