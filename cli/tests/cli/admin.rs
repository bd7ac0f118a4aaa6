//! The commands an operator reaches for first, on a live queue with a worker: `jobs list` by state and page,
//! `workers` with the jobs each runs, `jobs promote|delete`, and `queue pause|resume|drain|remove` with their
//! confirmation (`--yes`; without a terminal rill refuses rather than ask).

use std::process::Stdio;

use serde_json::Value as Json;

use super::Cli;
use super::support::ChildGuard;

/// A worker that holds `{"kind":"hold"}` jobs for a minute and completes the rest, one at a time.
fn holding_worker(cli: &Cli, queue: &str) -> ChildGuard {
    let script = r#"read p; case "$p" in *hold*) sleep 60 ;; esac"#;
    let child = cli
        .cmd(&[
            "work",
            queue,
            "--concurrency",
            "1",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

fn ids(page: &Json) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn jobs_are_listed_promoted_and_deleted_and_queues_drained_paused_and_removed() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "adm", r#"{"kind":"hold"}"#, "--id", "held"]);
    let mut w = holding_worker(&cli, "adm");
    cli.wait_for("held running", || cli.state("adm", "held") == "active");
    for i in 1..=3 {
        cli.ok(&["enqueue", "adm", "{}", "--id", &format!("w-{i}")]);
    }
    for i in 1..=2 {
        cli.ok(&[
            "enqueue",
            "adm",
            "{}",
            "--id",
            &format!("d-{i}"),
            "--delay",
            "1h",
        ]);
    }

    // Pages of two: a cursor to go on, printed as the command that does.
    let first = cli.ok(&["jobs", "list", "adm", "--state", "waiting", "--limit", "2"]);
    assert!(
        first.contains("JOB") && first.contains("ATTEMPTS") && first.contains("WAITING"),
        "{first}"
    );
    assert!(
        first.contains("w-1") && first.contains("w-2") && !first.contains("w-3"),
        "{first}"
    );
    let more = first
        .lines()
        .find(|l| l.starts_with("more: "))
        .expect("a next-page line");
    let after = more.rsplit(' ').next().unwrap();
    let page = cli.json(&[
        "jobs", "list", "adm", "--state", "waiting", "--limit", "2", "--after", after,
    ]);
    assert_eq!(ids(&page), vec!["w-3"]);
    assert!(page["next"].is_null());
    let delayed = cli.json(&["jobs", "list", "adm", "--state", "delayed"]);
    assert_eq!(ids(&delayed), vec!["d-1", "d-2"]);
    assert!(delayed["jobs"][0]["attempts"] == 0 && delayed["jobs"][0]["at_ms"].is_u64());
    let text = cli.ok(&["jobs", "list", "adm", "--state", "delayed"]);
    assert!(text.contains("DUE IN") && text.contains("59m"), "{text}");

    // Active: its worker and how long it has run, here and in `rill workers`.
    cli.wait_for("the start time, from the registry", || {
        cli.json(&["jobs", "list", "adm", "--state", "active"])["jobs"][0]["at_ms"].is_u64()
    });
    let active = cli.json(&["jobs", "list", "adm", "--state", "active"]);
    assert_eq!(ids(&active), vec!["held"]);
    assert_eq!(active["jobs"][0]["attempts"], 1);
    let worker = active["jobs"][0]["owner"].as_str().unwrap().to_owned();
    let workers = cli.ok(&["workers", "adm"]);
    assert!(
        workers.contains(&format!("{worker} runs: held (")),
        "{workers}"
    );
    let json = cli.json(&["workers", "adm"]);
    assert_eq!(json[0]["running"][0]["job"], "held");
    assert!(
        cli.fails(&["jobs", "list", "adm", "--state", "nope"], 2)
            .contains("one of waiting")
    );

    // Promote and delete one job.
    assert!(
        cli.ok(&["jobs", "promote", "d-1"])
            .contains("on the queue now")
    );
    assert_eq!(cli.state("adm", "d-1"), "waiting");
    assert!(cli.fails(&["jobs", "promote", "w-1"], 1).is_empty());
    assert!(
        cli.ok(&["jobs", "delete", "w-2"])
            .contains("deleted (it was waiting)")
    );
    assert_eq!(cli.state("adm", "w-2"), "unknown");

    // Drain: asked first, so a script without --yes is refused and nothing goes.
    let refused = cli.fails(&["queue", "drain", "adm"], 1);
    assert!(refused.contains("pass --yes"), "{refused}");
    assert_eq!(cli.state("adm", "w-1"), "waiting");
    let drained = cli.json(&["queue", "drain", "adm", "--yes"]);
    assert_eq!(
        (drained["waiting"].as_u64(), drained["delayed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(cli.state("adm", "held"), "active", "running jobs stay");

    // Pause and resume.
    assert!(
        cli.ok(&["queue", "pause", "adm", "--yes"])
            .contains("paused")
    );
    assert_eq!(cli.json(&["stats", "adm"])[0]["paused"], true);
    assert!(
        cli.ok(&["queue", "resume", "adm", "--yes"])
            .contains("resumed")
    );

    // Delete the running job: it is cancelled by its worker, not yanked.
    assert!(cli.ok(&["jobs", "delete", "held"]).contains("cancel sent"));
    cli.wait_for("held cancelled", || cli.state("adm", "held") == "cancelled");

    // Remove: refused under a live worker, done with --force, and the queue is gone.
    let busy = cli.fails(&["queue", "remove", "adm", "--yes"], 1);
    assert!(
        busy.contains("live worker") && busy.contains(&worker),
        "{busy}"
    );
    assert!(
        cli.ok(&["queue", "remove", "adm", "--yes", "--force"])
            .contains("removed queue adm")
    );
    w.stop();
    let stats = cli.ok(&["stats"]);
    assert!(!stats.contains("adm"), "{stats}");
}

/// `rill queue limit`: set, show and clear a queue's rate and concurrency limits; bad values are refused before
/// any I/O.
#[test]
fn queue_limit_sets_shows_and_clears_the_rate_and_the_concurrency() {
    let cli = Cli::new();
    let none = cli.json(&["queue", "limit", "api"]);
    assert!(none["rate_limit"].is_null(), "{none}");
    let set = cli.json(&["queue", "limit", "api", "--rate", "10/500ms"]);
    assert_eq!(
        set["rate_limit"],
        serde_json::json!({"max": 10, "per_ms": 500})
    );
    assert!(set["concurrency_limit"].is_null(), "{set}");
    let text = cli.ok(&["queue", "limit", "api", "--rate", "100/s"]);
    assert_eq!(
        text.trim(),
        "api: at most 100 starts per 1s\napi: no concurrency limit\napi: no per-key limits"
    );
    // Either limit set alone keeps the other.
    let both = cli.json(&["queue", "limit", "api", "--concurrency", "20"]);
    assert_eq!(both["concurrency_limit"], 20);
    assert_eq!(both["rate_limit"]["max"], 100);
    let text = cli.ok(&["queue", "limit", "api", "--clear"]);
    assert_eq!(
        text.trim(),
        "api: no rate limit\napi: no concurrency limit\napi: no per-key limits"
    );
    // Per key: needs a limit to give each key; a field without `x-` means the header `x-<field>`.
    cli.fails(&["queue", "limit", "api", "--per-key", "tenant"], 1);
    let keyed = cli.json(&[
        "queue",
        "limit",
        "api",
        "--per-key",
        "tenant",
        "--rate",
        "5/s",
    ]);
    assert_eq!(
        keyed["per_key"],
        serde_json::json!({"field": "x-tenant", "rate_limit": {"max": 5, "per_ms": 1000}, "concurrency_limit": null})
    );
    assert!(
        keyed["rate_limit"].is_null(),
        "the queue's own rate stays cleared: {keyed}"
    );
    cli.fails(&["enqueue", "api", "{}", "--header", "tenant=a"], 2);
    for bad in ["0/s", "ten/s", "10", "10/soon"] {
        cli.fails(&["queue", "limit", "api", "--rate", bad], 2);
    }
    cli.fails(&["queue", "limit", "api", "--concurrency", "0"], 2);
}

#[test]
fn queue_priorities_sets_levels_and_enqueue_puts_jobs_on_them() {
    let cli = Cli::new();
    let none = cli.json(&["queue", "priorities", "mail"]);
    assert_eq!(
        (none["levels"].as_u64(), none["weights"].is_null()),
        (Some(1), true)
    );
    // No such level yet: refused, nothing added.
    let refused = cli.fails(&["enqueue", "mail", "{}", "--priority", "2"], 1);
    assert!(refused.contains("no priority level 2"), "{refused}");
    let text = cli.ok(&["queue", "priorities", "mail", "--levels", "3"]);
    assert_eq!(
        text.trim(),
        "mail: 3 priority levels, 0 to 2, taken strictly in order"
    );
    let weighted = cli.json(&["queue", "priorities", "mail", "--weights", "6,3,1"]);
    assert_eq!(weighted["weights"], serde_json::json!([6, 3, 1]));
    let low = cli.ok(&["enqueue", "mail", "{\"n\": 1}", "--priority", "2"]);
    let top = cli.ok(&["enqueue", "mail", "{\"n\": 2}"]);
    let shown = cli.job("mail", low.trim());
    assert_eq!(
        (shown["state"].as_str(), shown["priority"].as_u64()),
        (Some("waiting"), Some(2))
    );
    let text = cli.ok(&["jobs", "show", low.trim(), "--queue", "mail"]);
    assert!(text.contains("priority:   level 2"), "{text}");
    // Waiting jobs are listed level by level: the level-0 job first, though enqueued later.
    let listed = cli.json(&["jobs", "list", "mail", "--state", "waiting"]);
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![top.trim(), low.trim()]);
    // A level that holds a job cannot go.
    let busy = cli.fails(&["queue", "priorities", "mail", "--levels", "2"], 1);
    assert!(busy.contains("level 2 still holds jobs"), "{busy}");
    for bad in [
        vec!["--levels", "0"],
        vec!["--levels", "17"],
        vec!["--weights", "3"],
        vec!["--weights", "3,0"],
    ] {
        let mut args = vec!["queue", "priorities", "mail"];
        args.extend(bad);
        cli.fails(&args, if args.contains(&"--levels") { 2 } else { 1 });
    }
}

#[test]
fn enqueue_says_when_an_id_was_a_duplicate() {
    let cli = Cli::new();
    let first = cli.json(&["enqueue", "dup", "{}", "--id", "order-1"]);
    assert_eq!(
        (first["ids"][0].as_str(), first["duplicate"].as_bool()),
        (Some("order-1"), Some(false))
    );
    let out = cli.run(&["enqueue", "dup", "{}", "--id", "order-1"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "order-1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("duplicate: job order-1 was enqueued already"),
        "{err}"
    );
    let again = cli.json(&["enqueue", "dup", "{}", "--id", "order-1"]);
    assert_eq!(again["duplicate"], true);
    // Ended (cancelled here), the id still refuses repeats until its dedup TTL runs out; then it is new again.
    cli.json(&[
        "enqueue",
        "dup",
        "{}",
        "--id",
        "order-2",
        "--dedup-ttl",
        "1s",
    ]);
    cli.ok(&["jobs", "cancel", "order-2", "--queue", "dup"]);
    let within = cli.json(&["enqueue", "dup", "{}", "--id", "order-2"]);
    assert_eq!(within["duplicate"], true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let fresh = cli.json(&["enqueue", "dup", "{}", "--id", "order-2"]);
    assert_eq!(fresh["duplicate"], false);
    cli.fails(&["enqueue", "dup", "{}", "--dedup-ttl", "1h"], 1);
}

#[test]
fn jobs_show_finds_a_job_in_a_queue_no_producer_listed() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "listed", "{}"]);
    // A foreign producer's plain XADD, without the `SADD <ns>:queues` (SPEC §8 calls it optional).
    let mut conn = cli.redis.conn();
    let id: String = redis::cmd("XADD")
        .arg(format!("{}:{{unlisted}}:ready", cli.ns))
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\xa1\x61n\x01"[..])
        .query(&mut conn)
        .unwrap();
    let shown = cli.job_anywhere(&id);
    assert_eq!(
        (
            shown["queue"].as_str(),
            shown["state"].as_str(),
            shown["payload"]["n"].as_u64()
        ),
        (Some("unlisted"), Some("waiting"), Some(1))
    );
    let missing = cli.fails(&["jobs", "show", "0-1"], 1);
    assert!(
        missing.contains("unlisted"),
        "the error names the queues searched: {missing}"
    );
}

#[test]
fn queue_lease_shows_and_sets_the_lease_workers_share() {
    let cli = Cli::new();
    let none = cli.json(&["queue", "lease", "mail"]);
    assert!(none["lease_ms"].is_null(), "{none}");
    let text = cli.ok(&["queue", "lease", "mail", "2m"]);
    assert!(
        text.starts_with("mail: lease 2m for every worker"),
        "{text}"
    );
    assert_eq!(cli.json(&["queue", "lease", "mail"])["lease_ms"], 120_000);
    cli.fails(&["queue", "lease", "mail", "soon"], 2);
}

#[test]
fn queue_timeout_shows_sets_and_clears_the_default_limit() {
    let cli = Cli::new();
    assert!(cli.json(&["queue", "timeout", "mail"])["timeout_ms"].is_null());
    let text = cli.ok(&["queue", "timeout", "mail", "5m"]);
    assert!(
        text.starts_with("mail: jobs without a limit of their own stop after 5m"),
        "{text}"
    );
    assert_eq!(
        cli.json(&["queue", "timeout", "mail"])["timeout_ms"],
        300_000
    );
    let cleared = cli.json(&["queue", "timeout", "mail", "--clear"]);
    assert!(cleared["timeout_ms"].is_null(), "{cleared}");
    cli.fails(&["queue", "timeout", "mail", "5m", "--clear"], 2);
}
