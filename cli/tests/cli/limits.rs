//! A queue's limits across four `rill work` processes, measured from the job records: each job's result is when
//! its handler process started and ended (ms), read back with `rill jobs show`. Never more starts in a window
//! than the rate limit; never more jobs running at once than the concurrency limit, which the fleet reaches; and
//! the same per key (`--per-key x-tenant`, jobs enqueued with `--header x-tenant=...`).

use std::process::Stdio;

use super::Cli;
use super::support::ChildGuard;

/// Four worker processes with 8 handler slots each; each job sleeps `ms` and returns `{"start", "end"}`.
fn four_workers(cli: &Cli, queue: &str, ms: u32) -> Vec<ChildGuard> {
    let handler = format!(
        "cat >/dev/null; S=$(date +%s%3N); sleep {}; E=$(date +%s%3N); echo \"{{\\\"start\\\":$S,\\\"end\\\":$E}}\"",
        f64::from(ms) / 1000.0
    );
    (0..4)
        .map(|_| {
            ChildGuard(
                cli.cmd(&[
                    "work",
                    queue,
                    "--concurrency",
                    "8",
                    "--",
                    "sh",
                    "-c",
                    &handler,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            )
        })
        .collect()
}

/// Enqueues `n` jobs from a file, with `args` added; their ids.
fn enqueue_with(cli: &Cli, queue: &str, n: usize, args: &[&str]) -> Vec<String> {
    let file = cli
        .redis
        .dir()
        .join(format!("{queue}-{}.jsonl", args.join("")));
    std::fs::write(&file, "{}\n".repeat(n)).unwrap();
    let mut all = vec!["enqueue", queue, "--file", file.to_str().unwrap()];
    all.extend(args);
    cli.ok(&all).lines().map(str::to_owned).collect()
}

/// Enqueues `n` jobs from a file; their ids.
fn enqueue(cli: &Cli, queue: &str, n: usize) -> Vec<String> {
    enqueue_with(cli, queue, n, &[])
}

/// The most runs that overlapped at any millisecond.
fn most_at_once(runs: &[(u64, u64)]) -> i32 {
    let mut edges: Vec<(u64, i32)> = runs.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // At the same millisecond an end goes first: touching runs do not overlap.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most
}

/// (start, end) of every job, from its record, once all have completed.
fn runs(cli: &Cli, queue: &str, ids: &[String]) -> Vec<(u64, u64)> {
    cli.wait_for("every job completed", || {
        ids.iter().all(|id| cli.state(queue, id) == "completed")
    });
    ids.iter()
        .map(|id| {
            let doc = cli.job(queue, id);
            let r = &doc["result"];
            (r["start"].as_u64().unwrap(), r["end"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn four_worker_processes_stay_within_the_concurrency_limit() {
    let cli = Cli::new();
    cli.ok(&["queue", "limit", "cap", "--concurrency", "3"]);
    let mut workers = four_workers(&cli, "cap", 150);
    let ids = enqueue(&cli, "cap", 24);
    let runs = runs(&cli, "cap", &ids);
    for w in &mut workers {
        w.stop();
    }
    let most = most_at_once(&runs);
    assert!(most <= 3, "{most} jobs ran at once under a limit of 3");
    assert_eq!(most, 3, "the fleet never reached the limit");
}

#[test]
fn four_worker_processes_stay_within_the_rate_limit() {
    let cli = Cli::new();
    cli.ok(&["queue", "limit", "rate", "--rate", "8/1s"]);
    let mut workers = four_workers(&cli, "rate", 10);
    let ids = enqueue(&cli, "rate", 24);
    let runs = runs(&cli, "rate", &ids);
    for w in &mut workers {
        w.stop();
    }
    let mut starts: Vec<u64> = runs.iter().map(|(s, _)| *s).collect();
    starts.sort();
    // Any 9 starts span a window (a little less: a handler process starts a moment after Redis counted it).
    for w in starts.windows(9) {
        assert!(w[8] - w[0] >= 950, "9 starts within {} ms", w[8] - w[0]);
    }
    // 24 jobs at 8 a second: three windows.
    assert!(starts[23] - starts[0] >= 1_900, "{starts:?}");
}

#[test]
fn four_worker_processes_keep_each_key_within_its_concurrency() {
    let cli = Cli::new();
    let out = cli.ok(&[
        "queue",
        "limit",
        "keyed",
        "--per-key",
        "tenant",
        "--concurrency",
        "2",
    ]);
    assert!(
        out.contains("per key (x-tenant): at most 2 running at once"),
        "{out}"
    );
    let mut workers = four_workers(&cli, "keyed", 120);
    // 24 of tenant a first, then 6 of tenant b: b's run beside a's, two at a time each.
    let a = enqueue_with(&cli, "keyed", 24, &["--header", "x-tenant=a"]);
    let b = enqueue_with(&cli, "keyed", 6, &["--header", "x-tenant=b"]);
    let (runs_a, runs_b) = (runs(&cli, "keyed", &a), runs(&cli, "keyed", &b));
    for w in &mut workers {
        w.stop();
    }
    for (t, r) in [("a", &runs_a), ("b", &runs_b)] {
        let most = most_at_once(r);
        assert_eq!(
            most, 2,
            "tenant {t}: {most} at once under a per-key limit of 2"
        );
    }
    // b was not queued behind a's 24: its last job ended before a's last started.
    let b_done = runs_b.iter().map(|r| r.1).max().unwrap();
    let a_last = runs_a.iter().map(|r| r.0).max().unwrap();
    assert!(
        b_done < a_last,
        "b finished at {b_done}, a's last started at {a_last}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["queue", "limit", "keyed", "--clear-per-key", "--json"]))
            .unwrap();
    assert_eq!(json["per_key"], serde_json::Value::Null);
}
