//! The Python (`clients/python`) and TypeScript (`clients/typescript`) packages beside the Rust library: each
//! package's own suite (conformance vectors, shipped scripts identical to `lua/`, producing, working), and across
//! languages: their producers feed Rust workers, their workers run Rust jobs and show in the registry, and a stale
//! worker of theirs is refused once a Rust worker took its job over. The packages speak to one server (they have
//! no cluster client), so these tests run on one also when the suite runs on clusters.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use rill::{Job, JobError, JobState, Worker};
use serde::{Deserialize, Serialize};
use support::foreign::{python, typescript_package};
use support::{TestRedis, eventually, spawn_worker};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Email {
    to: String,
    n: u32,
}

/// Python package producer → Rust worker → Python reads the outcome: a plain job, a named one (whose repeat is a
/// duplicate), one with a dedup key and a header, and a delayed one with a timeout; the Rust worker sees the
/// header and the options, and Python decodes the results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_produces_for_a_rust_worker_and_reads_the_results() {
    python_produces_for_a_rust_worker(None).await;
}

/// The same on a queue of 3 partitions (SPEC §2a): the Python producer routes each job as the Rust client does,
/// the Rust worker runs every partition, and Python finds each job in its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_routes_jobs_of_a_partitioned_queue_as_rust_does() {
    python_produces_for_a_rust_worker(Some(3)).await;
}

async fn python_produces_for_a_rust_worker(partitions: Option<usize>) {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    let parts = match partitions {
        Some(n) => Some(q.set_partitions(n).await.unwrap()),
        None => None,
    };
    let ids: Vec<String> = Lang::Python
        .run(&redis, &ns, &["produce"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[1], "py-named");
    assert_eq!(q.state(&ids[3]).await.unwrap(), JobState::Delayed);
    let w = spawn_worker(
        Worker::new(client.clone(), "emails").unwrap(),
        |job: Job<Email>| async move {
            let tenant = job
                .header("x-tenant")
                .map(|t| String::from_utf8_lossy(t).into_owned());
            Ok::<_, JobError>(serde_json::json!({
                "sent": job.data().to, "n": job.data().n, "tenant": tenant, "max": job.max_attempts(),
            }))
        },
    );
    eventually(Duration::from_secs(20), "the 4 Python jobs", || async {
        w.stats.snapshot().completed == 4
    })
    .await;
    assert_eq!(w.stop().await.malformed, 0);
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let seen: Vec<serde_json::Value> = Lang::Python
        .run(&redis, &ns, &args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (n, r) in seen.iter().enumerate() {
        assert_eq!(r["state"], "completed", "{r}");
        assert_eq!(r["result"]["n"], n, "{r}");
    }
    assert_eq!(seen[1]["result"]["max"], 2);
    assert_eq!(seen[2]["result"]["tenant"], "acme");
    assert_eq!(seen[0]["result"]["tenant"], serde_json::Value::Null);
    if let Some(parts) = parts {
        // Each job's record is in the partition Rust routes its id (or dedup key) to.
        for (id, key) in [(&ids[1], "py-named"), (&ids[2], "py-dedup")] {
            let record = format!("{ns}:{{{}}}:job:{id}", parts.tags()[parts.of_key(key)]);
            let there: bool = redis::cmd("EXISTS")
                .arg(&record)
                .query_async(&mut redis.aconn().await)
                .await
                .unwrap();
            assert!(there, "{record}");
        }
    }
}

/// The Python package's own suite (`python3 -m unittest discover -s clients/python/tests`): conformance vectors,
/// shipped scripts identical to `lua/`, producing and inspecting against its private redis-server.
#[test]
fn the_python_package_passes_its_own_tests() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/tests"))
        .output()
        .expect("the Python found above runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python package's tests failed:\n{report}"
    );
    // Skipped tests (no redis-server, no vectors) would pass silently: none may be.
    assert!(
        report.contains("\nOK") && !report.contains("skipped"),
        "{report}"
    );
}

/// The language of a package's driver script (`clients/<lang>/tests/interop_driver.*`).
#[derive(Clone, Copy)]
enum Lang {
    Python,
    TypeScript,
}

impl Lang {
    /// The name its handlers put in their results (`by`).
    fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::TypeScript => "typescript",
        }
    }

    /// `ms` in the driver's unit: seconds for Python, ms for TypeScript.
    fn millis(self, ms: u32) -> String {
        match self {
            Lang::Python => format!("{}", f64::from(ms) / 1000.0),
            Lang::TypeScript => ms.to_string(),
        }
    }

    /// The driver, on queue `emails` of `redis` under namespace `ns`, with `args`.
    fn driver(self, redis: &TestRedis, ns: &str, args: &[&str]) -> Command {
        let mut c = match self {
            Lang::Python => {
                let mut c = Command::new(python());
                c.arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/clients/python/tests/interop_driver.py"
                ));
                c
            }
            Lang::TypeScript => {
                let mut c = Command::new("node");
                c.arg(format!("{}/test/interop_driver.mjs", typescript_package()));
                c
            }
        };
        c.arg(redis.url()).arg(ns).arg("emails").args(args);
        c
    }

    /// Runs the driver to its end, which must be a success; its output.
    fn run(self, redis: &TestRedis, ns: &str, args: &[&str]) -> String {
        let out = self.driver(redis, ns, args).output().unwrap();
        assert!(
            out.status.success(),
            "the {} package failed: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_packages_worker_runs_rust_jobs_and_registers_itself() {
    a_foreign_worker_runs_rust_jobs_and_registers_itself(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_packages_worker_runs_rust_jobs_and_registers_itself() {
    a_foreign_worker_runs_rust_jobs_and_registers_itself(Lang::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_python_worker_is_refused_after_a_rust_worker_took_its_job() {
    a_stale_foreign_worker_is_refused_after_a_rust_worker_took_its_job(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_typescript_worker_is_refused_after_a_rust_worker_took_its_job() {
    a_stale_foreign_worker_is_refused_after_a_rust_worker_took_its_job(Lang::TypeScript).await;
}

/// Rust producer → a package's worker → Rust reads the results; while it runs, the Rust operator API sees the
/// worker in the registry, healthy.
async fn a_foreign_worker_runs_rust_jobs_and_registers_itself(lang: Lang) {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    let ids = q
        .enqueue_many(
            &(0..30)
                .map(|n| Email {
                    to: format!("rs{n}"),
                    n,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    // Each job takes 100 ms on 4 threads: long enough to see the worker registered.
    let child = lang
        .driver(&redis, &ns, &["work", "30", &lang.millis(100)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the Python worker registered",
        || async {
            q.workers(&rill::HealthRule::default())
                .await
                .unwrap()
                .iter()
                .any(|(w, h)| w.id.contains('-') && *h == rill::Health::Healthy)
        },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed 30"));
    #[derive(Deserialize)]
    struct Done {
        by: String,
        n: u32,
        attempt: u32,
    }
    for (n, id) in ids.iter().enumerate() {
        let done: Done = q.result(id).await.unwrap().unwrap();
        assert_eq!(
            (done.by.as_str(), done.n, done.attempt),
            (lang.name(), n as u32, 1)
        );
    }
    // A graceful exit leaves the registry.
    assert!(
        q.workers(&rill::HealthRule::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A Python or TypeScript worker frozen mid-job (SIGSTOP) loses its lease; a Rust worker takes the job over and
/// completes it; thawed, the frozen worker finishes its handler but writes nothing: the result is the Rust worker's.
async fn a_stale_foreign_worker_is_refused_after_a_rust_worker_took_its_job(lang: Lang) {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    q.set_lease(Duration::from_millis(1000)).await.unwrap();
    let id = q
        .enqueue_with(
            &Email {
                to: "contested".into(),
                n: 7,
            },
            rill::Enqueue::new().id("contested"),
        )
        .await
        .unwrap();
    let child = lang
        .driver(&redis, &ns, &["hold", &lang.millis(1000)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the Python worker holds the job",
        || async { q.state(&id).await.unwrap() == JobState::Active },
    )
    .await;
    let pid = child.id().to_string();
    let signal = |s: &str| {
        assert!(
            Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let w = spawn_worker(
        Worker::new(client.clone(), "emails")
            .unwrap()
            .reclaim_interval(Duration::from_millis(100)),
        |job: Job<Email>| async move {
            Ok::<_, JobError>(
                serde_json::json!({"by": "rust", "n": job.data().n, "attempt": job.attempt()}),
            )
        },
    );
    eventually(
        Duration::from_secs(20),
        "the Rust worker completed it",
        || async { q.state(&id).await.unwrap() == JobState::Completed },
    )
    .await;
    signal("-CONT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["returned"][0], "contested", "{stdout}");
    assert_eq!(
        report["completed"], 0,
        "the stale worker recorded a completion: {stdout}"
    );
    assert!(report["lease_failures"].as_u64().unwrap() >= 1, "{stdout}");
    let done: serde_json::Value = q.result(&id).await.unwrap().unwrap();
    assert_eq!(
        (done["by"].as_str(), done["attempt"].as_u64()),
        (Some("rust"), Some(2))
    );
    w.stop().await;
}

/// The TypeScript package's own suite (`node --test`): conformance vectors, shipped scripts identical to `lua/`,
/// producing and inspecting against its private redis-server.
#[test]
fn the_typescript_package_passes_its_own_tests() {
    let dir = typescript_package();
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "dist/test/"])
        .current_dir(dir)
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the TypeScript package's tests failed:\n{report}"
    );
    assert!(
        report.contains("# fail 0") && report.contains("# skipped 0"),
        "{report}"
    );
}

/// TypeScript producer → Rust worker → TypeScript reads the outcome: the same four kinds of job as the Python
/// producer test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_package_produces_for_a_rust_worker_and_reads_the_results() {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
    let ids: Vec<String> = Lang::TypeScript
        .run(&redis, &ns, &["produce"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[1], "ts-named");
    assert_eq!(q.state(&ids[3]).await.unwrap(), JobState::Delayed);
    let w = spawn_worker(
        Worker::new(client.clone(), "emails").unwrap(),
        |job: Job<Email>| async move {
            let tenant = job
                .header("x-tenant")
                .map(|t| String::from_utf8_lossy(t).into_owned());
            Ok::<_, JobError>(serde_json::json!({
                "sent": job.data().to, "n": job.data().n, "tenant": tenant, "max": job.max_attempts(),
            }))
        },
    );
    eventually(Duration::from_secs(20), "the 4 TypeScript jobs", || async {
        w.stats.snapshot().completed == 4
    })
    .await;
    assert_eq!(w.stop().await.malformed, 0);
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let seen: Vec<serde_json::Value> = Lang::TypeScript
        .run(&redis, &ns, &args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (n, r) in seen.iter().enumerate() {
        assert_eq!(r["state"], "completed", "{r}");
        assert_eq!(r["result"]["n"], n, "{r}");
    }
    assert_eq!(seen[1]["result"]["max"], 2);
    assert_eq!(seen[2]["result"]["tenant"], "acme");
}

/// Python producer → TypeScript worker → Python reads the results, and the reverse: the packages speak to each
/// other through SPEC.md alone, no Rust in the loop (the delayed job included: the workers promote it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_typescript_packages_feed_each_others_workers() {
    for (producer, worker) in [
        (Lang::Python, Lang::TypeScript),
        (Lang::TypeScript, Lang::Python),
    ] {
        let redis = TestRedis::start_single();
        let ns = support::namespace();
        let ids: Vec<String> = producer
            .run(&redis, &ns, &["produce"])
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids.len(), 4);
        assert!(
            worker
                .run(&redis, &ns, &["work", "4", "0"])
                .contains("completed 4")
        );
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        for (n, line) in producer.run(&redis, &ns, &args).lines().enumerate() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["state"], "completed", "{r}");
            assert_eq!(
                (r["result"]["by"].as_str(), r["result"]["n"].as_u64()),
                (Some(worker.name()), Some(n as u64)),
                "{r}"
            );
        }
    }
}

/// Every client computes the same fire times from the same definition (croner in Rust and TypeScript, croniter in
/// Python): across daylight-saving changes in both hemispheres (from before them, and from inside a repeated
/// hour), a half-hour shift, fixed times of day in a gap, croner's `L`, `#`, `W`, seconds and names.
#[test]
fn every_client_computes_the_same_fire_times() {
    let redis = TestRedis::start_single();
    let ms = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as u64
    };
    let exprs = [
        "30 2 * * *",
        "0 * * * *",
        "*/30 * * * *",
        "*/7 * * * *",
        "15 1,2,3 * * *",
        "0 0 * * 5L",
        "0 0 L * *",
        "0 0 15W * *",
        "0 12 * * 1#1",
        "0 0 13 * 5",
        "*/20 * * * * *",
        "@weekly",
        "0 9-17/2 * * MON-FRI",
        "0 0 1 JAN *",
        "0 2 * * 0",
        "45 2 29 3 *",
        "0 30 2 * * *",
    ];
    // Just before a change: Berlin spring and autumn, New York's, Sydney's (southern), Lord Howe's 30 minutes.
    let starts = [
        ("Europe/Berlin", "2026-03-28T23:10:00Z"),
        ("Europe/Berlin", "2026-10-24T23:10:00Z"),
        ("Europe/Berlin", "2026-10-25T01:10:00Z"),
        ("America/New_York", "2026-03-08T05:10:00Z"),
        ("America/New_York", "2026-11-01T04:10:00Z"),
        ("Australia/Sydney", "2026-04-04T14:10:00Z"),
        ("Australia/Sydney", "2026-10-03T14:10:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T14:10:00Z"),
        ("Asia/Kolkata", "2026-01-01T00:00:00Z"),
        ("UTC", "2026-02-27T00:00:00Z"),
    ];
    let mut cases = Vec::new();
    let mut want = Vec::new();
    for (tz, start) in starts {
        for expr in exprs {
            let s = rill::Schedule::cron(expr).tz(tz);
            let mut t = ms(start);
            let mut got = Vec::new();
            for _ in 0..8 {
                t = s.next_after(t).unwrap();
                got.push(t);
            }
            cases.push(serde_json::json!([expr, tz, ms(start), 8]));
            want.push(got);
        }
    }
    let arg = serde_json::Value::Array(cases.clone()).to_string();
    for lang in [Lang::Python, Lang::TypeScript] {
        let out = lang.run(&redis, "fire", &["fire-times", &arg]);
        let got: Vec<Vec<u64>> = serde_json::from_str(out.trim()).unwrap();
        for ((case, w), g) in cases.iter().zip(&want).zip(&got) {
            assert_eq!(w, g, "{}: {case}", lang.name());
        }
    }
}

/// A schedule added by any client fires once per fire time while Rust, Python and TypeScript workers all run:
/// each package's worker fires through the same `fire.lua` fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_python_and_typescript_workers_fire_each_time_once() {
    let redis = TestRedis::start_single();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<String>("emails").unwrap();
    // Python adds one, TypeScript another, Rust the third: all every second.
    Lang::Python.run(&redis, &ns, &["add-schedule", "py", "every", "1000"]);
    Lang::TypeScript.run(&redis, &ns, &["add-schedule", "ts", "every", "1000"]);
    q.schedule(
        "rs",
        rill::Schedule::every(Duration::from_secs(1)),
        &"rs".into(),
    )
    .await
    .unwrap();
    let names: Vec<String> = q
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["py", "rs", "ts"]);
    let ran: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>> = Default::default();
    let r2 = ran.clone();
    let rust = spawn_worker(
        Worker::new(client.clone(), "emails")
            .unwrap()
            .block(Duration::from_millis(200)),
        move |job: Job<String>| {
            let ran = r2.clone();
            async move {
                let (name, at) = job.schedule().unwrap();
                ran.lock().unwrap().push((name.to_owned(), at));
                Ok::<_, JobError>(())
            }
        },
    );
    let children: Vec<_> = [
        (Lang::Python, Lang::Python.millis(5000)),
        (Lang::TypeScript, Lang::TypeScript.millis(5000)),
    ]
    .into_iter()
    .map(|(lang, d)| {
        lang.driver(&redis, &ns, &["serve", &d])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    })
    .collect();
    let outs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    q.remove_schedule("py").await.unwrap();
    q.remove_schedule("ts").await.unwrap();
    q.remove_schedule("rs").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rust.stop().await;
    let by_packages: u64 = outs
        .iter()
        .map(|o| {
            assert!(o.status.success());
            let s = String::from_utf8_lossy(&o.stdout);
            s.trim()
                .strip_prefix("completed ")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // Every fire time once, none skipped, by the `fired` events (whichever worker ran the job).
    let mut fired: HashMap<String, Vec<u64>> = HashMap::new();
    let events: Vec<HashMap<String, String>> = q
        .events(None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "fired")
        .map(|e| e.fields)
        .collect();
    for f in &events {
        fired
            .entry(f["schedule"].clone())
            .or_default()
            .push(f["fire_ms"].parse().unwrap());
    }
    for name in ["py", "ts", "rs"] {
        let times = fired.remove(name).unwrap_or_default();
        assert!(times.len() >= 3, "{name} fired {times:?}");
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == 1000),
            "{name}: each second once, none skipped: {times:?}"
        );
    }
    // Every fired job ran, on one of the three workers.
    let total = ran.lock().unwrap().len() as u64 + by_packages;
    assert_eq!(total, events.len() as u64);
}
