//! The Python (`clients/python`) and TypeScript (`clients/typescript`) packages beside the Rust library: each
//! package's own suite (conformance vectors, shipped scripts identical to `lua/`, producing, working), and across
//! languages: their producers feed Rust workers, their workers run Rust jobs and show in the registry, and a stale
//! worker of theirs is refused once a Rust worker took its job over.

mod support;

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
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let ns = client.config().namespace.clone();
    let q = client.queue::<Email>("emails").unwrap();
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
    let redis = TestRedis::start();
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
    let redis = TestRedis::start();
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
    let redis = TestRedis::start();
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
        let redis = TestRedis::start();
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
