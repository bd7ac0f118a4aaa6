//! A queue's limits across four `rill work` processes, measured from the job records: each job's result is when
//! its handler process started and ended (ms), read back with `rill jobs show`. Never more starts in a window
//! than the rate limit; never more jobs running at once than the concurrency limit, which the fleet reaches.

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

/// Enqueues `n` jobs from a file; their ids.
fn enqueue(cli: &Cli, queue: &str, n: usize) -> Vec<String> {
    let file = cli.redis.dir().join(format!("{queue}.jsonl"));
    std::fs::write(&file, "{}\n".repeat(n)).unwrap();
    cli.ok(&["enqueue", queue, "--file", file.to_str().unwrap()])
        .lines()
        .map(str::to_owned)
        .collect()
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
    let mut edges: Vec<(u64, i32)> = runs.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // At the same millisecond an end goes first: touching runs do not overlap.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
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
