//! The costs a worker adds while it waits for work: one heartbeat (and a registration), and everything an idle
//! worker sends Redis in a second (beat, stalled-job recovery, promotion of due jobs, blocked reads).

use std::time::{Duration, Instant};

use rill::{Job, JobError, Worker};
use serde_json::json;

use super::support::{self, TestRedis};
use super::{commandstats, emit, fresh_server, percentile, redis_cpu};

/// Redis CPU per second with no worker (its timers, freeing what earlier cases left), over `secs`.
async fn baseline(c: &mut redis::aio::MultiplexedConnection, secs: u64) -> f64 {
    let cpu0 = redis_cpu(c).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    (redis_cpu(c).await - cpu0) / t.elapsed().as_secs_f64()
}

/// Redis CPU per idle worker per second: `WORKERS` workers with nothing to do, over `secs`, less what the
/// server spends on its own (the mean of as long with no worker before and after).
pub async fn idle_workers(redis: &TestRedis, secs: u64) {
    const WORKERS: usize = 64;
    let client = support::client(redis);
    let mut c = redis.node_aconn().await;
    let before = baseline(&mut c, secs).await;
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut running = Vec::new();
    for _ in 0..WORKERS {
        let mut stop = tx.subscribe();
        let w = Worker::new(client.clone(), "idle").unwrap();
        running.push(tokio::spawn(w.run(
            |_job: Job<serde_json::Value>| async { Ok::<_, JobError>(()) },
            async move {
                let _ = stop.recv().await;
            },
        )));
    }
    // Past registration and the first reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .unwrap();
    let cpu0 = redis_cpu(&mut c).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let secs_taken = t.elapsed().as_secs_f64();
    let cpu = redis_cpu(&mut c).await - cpu0;
    commandstats(&mut c, "idle workers").await;
    let _ = tx.send(());
    for h in running {
        h.await.unwrap().unwrap();
    }
    let baseline_per_s = (before + baseline(&mut c, secs).await) / 2.0;
    let per_worker_s = (cpu - baseline_per_s * secs_taken) * 1e6 / (WORKERS as f64 * secs_taken);
    emit(json!({"bench": "idle", "workers": WORKERS, "secs": secs,
                "redis_cpu_us_per_worker_per_s": (per_worker_s * 10.0).round() / 10.0,
                "redis_idle_cpu_us_per_s": (baseline_per_s * 1e6).round()}));
    fresh_server(&mut c).await;
}

/// Registration and heartbeat round trips, and the Redis CPU of a beat as a worker sends it, in plain commands: a
/// busy worker's (its counters and running jobs changed: every per-beat field and `running`, a stream entry) and
/// an idle one's (nothing changed: the refresh of its registry score); and, for comparison in the same run, the
/// same two beats through the script (as the Python and TypeScript workers send them) and a beat that sends
/// everything and sets the record's expiry (what every beat did before beats sent only what changed). Each is
/// measured over 2,000 beats of 500 workers in four interleaved rounds, against as many `PING` round trips (what
/// any one-call beat costs Redis in network handling on this machine), back to back and again paced 1 ms apart.
pub async fn heartbeats(redis: &TestRedis) {
    let client = support::client(redis);
    let keys = client.keys("beats").unwrap();
    let mut c = redis.node_aconn().await;
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let static_fields: Vec<(String, String)> = [
        ("host", "bench-host"),
        ("pid", "4242"),
        ("queue", "beats"),
        ("concurrency", "64"),
        ("version", "0.1.0"),
        ("started_ms", "1"),
        ("capabilities", "gpu,pdf"),
        ("status", "busy"),
        ("reason", ""),
        ("in_flight", "4"),
        ("processed", "1200"),
        ("failed", "0"),
        ("lease_failures", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (registration, per_beat) = static_fields.split_at(7);
    // A busy worker's `running` field: four jobs.
    let running = vec![(
        "running".to_string(),
        "1796223540005:order-1 1796223540105:order-2 1796223540205:order-3 1796223540305:order-4"
            .to_string(),
    )];
    let mut reg = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        rill::scripts::heartbeat(
            &mut c,
            &keys,
            rill::scripts::Heartbeat {
                consumer: &format!("w{i}"),
                now_ms: 1,
                maxlen: 10_000,
                record_ttl_ms: 60_000,
                crash_after_ms: 0,
                fields: rill::scripts::BeatFields {
                    per_beat,
                    record: &running,
                    registration,
                },
            },
        )
        .await
        .unwrap();
        reg.push(t.elapsed().as_secs_f64() * 1e3);
    }
    const ROUNDS: usize = 4;
    let n = 500;
    let mut beat = Vec::new();
    // One beat of each kind; `pace`: beats that far apart (a fleet's beats reach Redis spread out, each on its
    // own wake-up), else back to back.
    #[derive(Clone, Copy)]
    enum Kind<'a> {
        Script(rill::scripts::BeatFields<'a>, u64),
        Plain(rill::scripts::BeatFields<'a>),
        Ping,
    }
    let mut beats = async |kind: Kind<'_>, pace: Option<Duration>, times: &mut Vec<f64>| {
        let mut tick = pace.map(|p| {
            let mut t = tokio::time::interval(p);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let cpu0 = redis_cpu(&mut c).await;
        for i in 0..n {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let consumer = format!("w{}", i % 500);
            let t = Instant::now();
            match kind {
                Kind::Script(fields, ttl_ms) => {
                    rill::scripts::heartbeat(
                        &mut c,
                        &keys,
                        rill::scripts::Heartbeat {
                            consumer: &consumer,
                            now_ms: 2,
                            maxlen: 10_000,
                            // As a worker beats: it also looks for crashed workers.
                            crash_after_ms: 3_000,
                            record_ttl_ms: ttl_ms,
                            fields,
                        },
                    )
                    .await
                    .unwrap();
                }
                Kind::Plain(fields) => {
                    let call = rill::scripts::Heartbeat {
                        consumer: &consumer,
                        now_ms: 2,
                        maxlen: 10_000,
                        record_ttl_ms: 0,
                        crash_after_ms: 3_000,
                        fields,
                    };
                    rill::scripts::refresh(&mut c, &keys, call).await.unwrap();
                }
                Kind::Ping => {
                    let _: () = redis::cmd("PING").query_async(&mut c).await.unwrap();
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (redis_cpu(&mut c).await - cpu0) * 1e6 / n as f64
    };
    let changed = rill::scripts::BeatFields {
        per_beat,
        record: &running,
        registration: &[],
    };
    let kinds = [
        ("beat", Kind::Plain(changed)),
        ("refresh", Kind::Plain(rill::scripts::BeatFields::default())),
        (
            "idle_script",
            Kind::Script(rill::scripts::BeatFields::default(), 0),
        ),
        ("full", Kind::Script(changed, 86_400_000)),
        ("ping", Kind::Ping),
        ("script", Kind::Script(changed, 0)),
    ];
    // Interleaved rounds, so no kind is measured only first (or last) in the run; back to back, then paced at
    // 1 ms (a fleet of a thousand workers).
    let mut us = [[0.0f64; 6]; 2];
    for _ in 0..ROUNDS {
        for (p, pace) in [None, Some(Duration::from_millis(1))]
            .into_iter()
            .enumerate()
        {
            for (k, (name, kind)) in kinds.iter().enumerate() {
                let times = if *name == "beat" && pace.is_none() {
                    &mut beat
                } else {
                    &mut Vec::new()
                };
                us[p][k] += beats(*kind, pace, times).await / ROUNDS as f64;
            }
        }
    }
    commandstats(&mut c, "heartbeats").await;
    reg.sort_by(f64::total_cmp);
    beat.sort_by(f64::total_cmp);
    emit(
        json!({"bench": "registry", "register_p50_ms": r(percentile(&reg, 0.5)), "register_p99_ms": r(percentile(&reg, 0.99)),
               "heartbeat_p50_ms": r(percentile(&beat, 0.5)), "heartbeat_p99_ms": r(percentile(&beat, 0.99)),
               "redis_cpu_us_per_beat": r2(us[0][0]),
               "redis_cpu_us_per_idle_beat": r2(us[0][1]),
               "redis_cpu_us_per_idle_script_beat": r2(us[0][2]),
               "redis_cpu_us_per_full_beat": r2(us[0][3]),
               "redis_cpu_us_per_ping": r2(us[0][4]),
               "redis_cpu_us_per_script_beat": r2(us[0][5]),
               "paced_1ms": {"redis_cpu_us_per_beat": r2(us[1][0]),
                             "redis_cpu_us_per_idle_beat": r2(us[1][1]),
                             "redis_cpu_us_per_idle_script_beat": r2(us[1][2]),
                             "redis_cpu_us_per_full_beat": r2(us[1][3]),
                             "redis_cpu_us_per_ping": r2(us[1][4]),
                             "redis_cpu_us_per_script_beat": r2(us[1][5])}}),
    );
}
