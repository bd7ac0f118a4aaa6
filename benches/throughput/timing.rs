//! The timing cases of `throughput`: enqueue → handler start at a steady rate, a checkpoint write from a
//! handler, and a crashed worker's job resumed elsewhere from its checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rill::{Job, JobError, Worker};
use serde_json::json;

use super::support::{self, TestRedis};
use super::{emit, now_ns, percentile, serde_bytes_like};

/// Enqueue -> handler start latency at a steady `rate` for `secs`, for rill and for a raw blocked XREADGROUP.
pub async fn latency(redis: &TestRedis, rate: u64, secs: u64) {
    let n = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    // Raw: one blocked reader, one producer.
    let raw_p99 = {
        let key = "raw:{lat}:ready";
        let mut c = redis.node_aconn().await;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut reader = redis.node_aconn().await;
        let got = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            while (lat.len() as u64) < n {
                let v: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(">")
                    .query_async(&mut reader)
                    .await
                    .unwrap();
                for e in rill::wire::parse_read_reply(v).unwrap() {
                    let sent: u64 = String::from_utf8(e.fields.unwrap()[0].1.clone())
                        .unwrap()
                        .parse()
                        .unwrap();
                    lat.push((now_ns() - sent) as f64 / 1e6);
                }
            }
            lat
        });
        let mut tick = tokio::time::interval(interval);
        for _ in 0..n {
            tick.tick().await;
            let _: String = redis::cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("t")
                .arg(now_ns().to_string())
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let mut lat = got.await.unwrap();
        lat.sort_by(f64::total_cmp);
        percentile(&lat, 0.99)
    };
    let client = support::client(redis);
    let q = client.queue::<u64>("latency").unwrap();
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n as usize)));
    let l2 = lat.clone();
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    let w = Worker::new(client.clone(), "latency")
        .unwrap()
        .concurrency(64);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(w.run(
        move |job: Job<u64>| {
            let ms = (now_ns() - *job.data()) as f64 / 1e6;
            l2.lock().unwrap().push(ms);
            c2.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, JobError>(()) }
        },
        async {
            let _ = rx.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tick = tokio::time::interval(interval);
    for _ in 0..n {
        tick.tick().await;
        q.enqueue(&now_ns()).await.unwrap();
    }
    while count.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.send(());
    h.await.unwrap().unwrap();
    let mut lat = lat.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    emit(
        json!({"bench": "latency", "rate": rate, "jobs": n, "p50_ms": r(percentile(&lat, 0.5)), "p99_ms": r(percentile(&lat, 0.99)), "raw_p99_ms": r(raw_p99)}),
    );
}

/// Checkpoint write latency from inside a handler, against a plain XADD of the same size.
pub async fn checkpoint_latency(redis: &TestRedis) {
    let client = support::client(redis);
    let q = client.queue::<u64>("ckpt").unwrap();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r2 = results.clone();
    let mut w = Worker::new(client.clone(), "ckpt").unwrap();
    let mut cfg = rill::WorkerConfig::default();
    cfg.checkpoints.max_bytes = 1 << 20;
    w = w.config(cfg);
    let stats = w.stats();
    q.enqueue(&1024).await.unwrap();
    q.enqueue(&65536).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(w.run(
        move |job: Job<u64>| {
            let r2 = r2.clone();
            async move {
                let state = serde_bytes_like::Bytes(vec![7u8; *job.data() as usize]);
                let mut lat = Vec::new();
                for _ in 0..300 {
                    let t = Instant::now();
                    job.checkpoint(&state).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                r2.lock().unwrap().push((*job.data(), lat));
                Ok::<_, JobError>(())
            }
        },
        async {
            let _ = rx.await;
        },
    ));
    while stats.snapshot().completed < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.send(());
    h.await.unwrap().unwrap();
    let mut c = redis.node_aconn().await;
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let measured = results.lock().unwrap().clone();
    for (size, mut lat) in measured {
        let mut raw = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            let _: String = redis::cmd("XADD")
                .arg("raw:{ckpt}")
                .arg("MAXLEN")
                .arg(10)
                .arg("*")
                .arg("state")
                .arg(vec![7u8; size as usize])
                .query_async(&mut c)
                .await
                .unwrap();
            raw.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        raw.sort_by(f64::total_cmp);
        emit(
            json!({"bench": "checkpoint_write", "bytes": size, "writes": lat.len(), "p50_ms": r(percentile(&lat, 0.5)), "p99_ms": r(percentile(&lat, 0.99)),
                   "raw_xadd_p50_ms": r(percentile(&raw, 0.5)), "raw_xadd_p99_ms": r(percentile(&raw, 0.99))}),
        );
    }
}

/// Time from a worker's crash to its checkpointed job running again, from its checkpoint, on another worker.
pub async fn crash_to_resume(redis: &TestRedis) {
    let client = support::client(redis);
    let q = client.queue::<u64>("resume").unwrap();
    q.enqueue(&0).await.unwrap();
    let lease = Duration::from_millis(1000);
    let reclaim = Duration::from_millis(250);
    let mk = || {
        Worker::new(client.clone(), "resume")
            .unwrap()
            .lease(lease)
            .reclaim_interval(reclaim)
    };
    let (saved_tx, saved_rx) = tokio::sync::oneshot::channel::<()>();
    let saved_tx = Arc::new(std::sync::Mutex::new(Some(saved_tx)));
    let first = tokio::spawn(mk().run(
        move |job: Job<u64>| {
            let saved = saved_tx.clone();
            async move {
                job.checkpoint(&42u64).await?;
                if let Some(tx) = saved.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                std::future::pending::<()>().await;
                Ok::<_, JobError>(())
            }
        },
        std::future::pending::<()>(),
    ));
    saved_rx.await.unwrap();
    first.abort();
    let crashed = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel::<Duration>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(mk().run(
        move |job: Job<u64>| {
            let tx = tx.clone();
            async move {
                let r = job.resume::<u64>().await?.expect("checkpoint");
                assert_eq!(r.state, 42);
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(crashed.elapsed());
                }
                Ok::<_, JobError>(())
            }
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let took = rx.await.unwrap();
    let _ = stop_tx.send(());
    second.await.unwrap().unwrap();
    emit(
        json!({"bench": "crash_to_resume", "lease_ms": lease.as_millis() as u64, "reclaim_interval_ms": reclaim.as_millis() as u64,
               "resume_ms": (took.as_secs_f64() * 1e4).round() / 10.0}),
    );
}
