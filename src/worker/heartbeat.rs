//! The heartbeat: registers the worker on start through `heartbeat.lua`, beats every `health.beat_interval`
//! (the record hash, the sorted set of last beats, an entry on the heartbeats stream when status or counters
//! changed; a beat sends only the fields that changed since the last one, in plain commands,
//! [`scripts::refresh`], unless it registers or sets the record's expiry) and deregisters on a graceful exit.
//! It runs on the lease keeper's thread ([`super::lease`]) with its own connection. What a beat says is built
//! here; how others read it is [`crate::registry`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::shared::{Crew, Shared};
use crate::registry::{HEARTBEATS_MAXLEN, RECORD_TTL, RUNNING_LISTED};
use crate::scripts;
use crate::scripts::{BeatFields, Call};

/// Beats until `stop` fires (the first one registers).
pub(super) async fn run(crew: Crew, stop: CancellationToken) {
    let shared = crew[0].clone();
    let mut conn = None;
    let mut beats = Beats::default();
    let mut clock = None;
    loop {
        beat(&crew, &mut conn, &mut beats, &mut clock).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.config.health.beat_interval) => {}
        }
    }
}

/// Record fields, in order.
type Fields = Vec<(String, String)>;

/// How often a beat sets the record's expiry again ([`RECORD_TTL`], a day, outlasts a silent worker's record by
/// that much less at most): every beat doing it would be a command per worker per second for nothing.
const TTL_REFRESH: Duration = Duration::from_secs(3600);

/// How often a worker reads the server's clock again for the beats in plain commands (between readings it adds
/// the monotonic clock's elapsed time, which drifts from the server's by well under a millisecond a minute,
/// against a crash threshold of seconds).
const CLOCK_READ: Duration = Duration::from_secs(60);

/// The Redis server's clock as the worker tracks it: a `TIME` reading and the instant it stands for (the middle
/// of its round trip). Beats are judged by the server's clock, so hosts whose clocks disagree agree on them;
/// [`scripts::heartbeat`] reads it itself, a plain `ZADD` cannot.
#[derive(Debug, Clone, Copy)]
struct ServerClock {
    ms: u64,
    at: Instant,
}

impl ServerClock {
    async fn read(conn: &mut crate::client::BlockingConn) -> crate::Result<Self> {
        let sent = Instant::now();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
        let rtt = sent.elapsed();
        Ok(Self {
            ms: secs * 1000 + micros / 1000,
            at: sent + rtt / 2,
        })
    }

    fn now_ms(&self) -> u64 {
        self.ms + self.at.elapsed().as_millis() as u64
    }

    fn fresh(&self) -> bool {
        self.at.elapsed() < CLOCK_READ
    }
}

/// What the record has been told, so a beat sends only what changed.
#[derive(Debug, Default)]
struct Beats {
    registered: bool,
    lease_failures_at_last_beat: u64,
    /// The per-beat fields (status and counters) and the record-only ones (`running`) of the last beat that
    /// landed (what the record holds, when `registered`).
    per_beat: Fields,
    record: Fields,
    /// When a beat that landed last set the record's expiry.
    ttl_set: Option<Instant>,
}

/// The fields of one beat.
#[derive(Debug, Default)]
struct Beat {
    /// Status and counters: to the record and the heartbeats stream.
    per_beat: Fields,
    /// To the record only, every beat: what runs now.
    record: Fields,
    /// To the record only, on registration: the static fields.
    registration: Fields,
    /// Lease failures counted so far (`lease_failures` is those since the previous beat).
    lease_failures: u64,
}

impl Beats {
    /// Everything the record says of this worker now: status and counters, the jobs running now, and the
    /// static fields until one beat is in (empty after).
    fn now(&self, crew: &[Arc<Shared>]) -> Beat {
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
        let mut registration = Vec::new();
        if !self.registered {
            registration.extend([
                ("host".into(), crate::identity::hostname()),
                ("pid".into(), std::process::id().to_string()),
                ("queue".into(), shared.keys.queue.clone()),
                ("concurrency".into(), shared.config.concurrency.to_string()),
                ("version".into(), env!("CARGO_PKG_VERSION").to_owned()),
                ("started_ms".into(), shared.started_ms.to_string()),
                ("capabilities".into(), shared.config.capabilities.join(",")),
            ]);
            for (k, v) in &shared.config.metadata {
                registration.push((format!("meta:{k}"), v.clone()));
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
        Beat {
            per_beat,
            record,
            registration,
            lease_failures: stats.lease_failures,
        }
    }

    /// What of `now` the next beat sends, and whether it sets the record's expiry: all of it until a beat
    /// registered the worker; after that the per-beat fields only when one changed (all of them then, since each
    /// stream entry carries them all: an unchanged beat adds no entry), `running` only when it changed.
    fn changes<'a>(&self, now: &'a Beat) -> (BeatFields<'a>, bool) {
        if !self.registered {
            let all = BeatFields {
                per_beat: &now.per_beat,
                record: &now.record,
                registration: &now.registration,
            };
            return (all, true);
        }
        let changed = |then: &Fields, now: &'a Fields| -> &'a [(String, String)] {
            if *then == *now { &[] } else { now }
        };
        let fields = BeatFields {
            per_beat: changed(&self.per_beat, &now.per_beat),
            record: changed(&self.record, &now.record),
            registration: &[],
        };
        let ttl = self.ttl_set.is_none_or(|t| t.elapsed() >= TTL_REFRESH);
        (fields, ttl)
    }

    /// Whether the next beat can be plain commands: the worker is registered (the beat sends no static fields)
    /// and the record's expiry is not due.
    fn plain(&self, set_ttl: bool) -> bool {
        self.registered && !set_ttl
    }

    /// A beat carrying `now` landed; `registered`: the record holds the static fields (false after Redis lost
    /// its data, the worker was judged crashed and its record removed, or the record expired: everything goes out
    /// again with the next beat).
    fn sent(&mut self, registered: bool, now: Beat, ttl_set: bool) {
        self.registered = registered;
        self.lease_failures_at_last_beat = now.lease_failures;
        // Unregistered, the next beat sends everything whatever these say.
        self.per_beat = now.per_beat;
        self.record = now.record;
        if ttl_set {
            self.ttl_set = Some(Instant::now());
        }
    }
}

/// One heartbeat. Failures are logged: a worker that cannot beat is judged crashed by the others, which then
/// adopt its jobs (its own acks are then refused as stale).
async fn beat(
    crew: &[Arc<Shared>],
    conn: &mut Option<crate::client::BlockingConn>,
    beats: &mut Beats,
    clock: &mut Option<ServerClock>,
) {
    let shared = &crew[0];
    if conn.is_none() {
        match shared.client.blocking_conn(Duration::ZERO).await {
            Ok(c) => {
                *conn = Some(c);
                // Perhaps another server now (a failover), whose clock may differ: read it again.
                *clock = None;
            }
            Err(e) => {
                warn_throttled!(error = %e, "heartbeat: cannot connect");
                return;
            }
        }
    }
    let now = beats.now(crew);
    let (fields, set_ttl) = beats.changes(&now);
    let c = conn.as_mut().expect("connection set above");
    let crash_after_ms = shared.config.health.crash_after.as_millis() as u64;
    let plain = beats.plain(set_ttl);
    if plain && !clock.is_some_and(|k| k.fresh()) {
        match ServerClock::read(c).await {
            Ok(k) => *clock = Some(k),
            Err(e) => {
                warn_throttled!(error = %e, "heartbeat: cannot read the server's clock");
                *conn = None;
                return;
            }
        }
    }
    let sent = std::time::Instant::now();
    let call = scripts::Heartbeat {
        consumer: &shared.consumer,
        // The server's clock: every host judges beats by the same clock (0: the script reads it).
        now_ms: clock.filter(|_| plain).map_or(0, |k| k.now_ms()),
        maxlen: HEARTBEATS_MAXLEN,
        record_ttl_ms: if set_ttl {
            RECORD_TTL.as_millis() as u64
        } else {
            0
        },
        crash_after_ms,
        fields,
    };
    // Registered, with the expiry not due (and the clock read): plain commands, which cost Redis less than the
    // script (its arguments and each command's reply converted in Lua); otherwise `heartbeat.lua`.
    let beat = scripts::refresh(c, &shared.keys, call);
    let r = shared.stats.timed(Call::Heartbeat, beat).await;
    match r {
        Ok(beat) => {
            beats.sent(beat.registered, now, set_ttl);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(processed: &str, running: &str, registration: bool) -> Beat {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        Beat {
            per_beat: vec![pair("status", "busy"), pair("processed", processed)],
            record: vec![pair("running", running)],
            registration: if registration {
                vec![pair("host", "h")]
            } else {
                Vec::new()
            },
            lease_failures: 0,
        }
    }

    #[test]
    fn a_beat_sends_what_changed_and_everything_after_the_record_was_lost() {
        let mut beats = Beats::default();
        let first = beat("0", "", true);
        let (f, ttl) = beats.changes(&first);
        assert_eq!(
            (f.per_beat.len(), f.record.len(), f.registration.len(), ttl),
            (2, 1, 1, true),
            "registration: everything, and the expiry"
        );
        beats.sent(true, first, ttl);
        let idle = beat("0", "", false);
        let (f, ttl) = beats.changes(&idle);
        assert_eq!(
            (f.per_beat.len(), f.record.len(), f.registration.len(), ttl),
            (0, 0, 0, false),
            "nothing changed: no fields (and no stream entry), the expiry left alone"
        );
        beats.sent(true, idle, ttl);
        let busy = beat("5", "", false);
        let (f, _) = beats.changes(&busy);
        assert_eq!(
            (f.per_beat.len(), f.record.len()),
            (2, 0),
            "a counter changed: every per-beat field (the stream entry carries them all)"
        );
        beats.sent(true, busy, false);
        let running = beat("5", "1:j", false);
        let (f, _) = beats.changes(&running);
        assert_eq!((f.per_beat.len(), f.record.len()), (0, 1));
        // The beat found no record: the next one sends everything again, with the expiry.
        beats.sent(false, running, false);
        let again = beat("5", "1:j", true);
        let (f, ttl) = beats.changes(&again);
        assert_eq!(
            (f.per_beat.len(), f.record.len(), f.registration.len(), ttl),
            (2, 1, 1, true)
        );
        // The expiry is set again once TTL_REFRESH has passed.
        beats.sent(true, again, true);
        beats.ttl_set = Instant::now().checked_sub(TTL_REFRESH);
        let later = beat("5", "1:j", false);
        assert!(beats.changes(&later).1);
    }
}
