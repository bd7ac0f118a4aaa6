//! `rill work QUEUE -- CMD`: a process per job, with success, retry (exit 75), failure, cancel, timeouts and
//! graceful stops.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::support::ChildGuard;
use super::{Cli, sigterm, wait_exit};

pub(crate) const SCRIPT: &str = r#"p=$(cat)
case "$p" in
  *ok*) echo "{\"done\":\"$RILL_JOB_ID\",\"queue\":\"$RILL_QUEUE\"}" ;;
  *retry*) if [ "$RILL_ATTEMPT" = 1 ]; then echo "busy, try later" >&2; exit 75; fi; echo "second time" ;;
  *fail*) if [ -f "$RILL_TEST_MARKER" ]; then echo fixed; exit 0; fi; echo "disk on fire" >&2; exit 3 ;;
  *sleep*) sleep 60 ;;
  *slow*) sleep 1; touch "$RILL_TEST_MARKER.slow" ;;
  *orphan*) sleep 300 & echo $! > "$RILL_TEST_MARKER.orphan"; echo left-behind ;;
esac"#;

pub(crate) fn worker(cli: &Cli, queue: &str, marker: &std::path::Path) -> ChildGuard {
    let child = cli
        .cmd(&[
            "work",
            queue,
            "--concurrency",
            "4",
            "--attempts",
            "2",
            "--",
            "sh",
            "-c",
            SCRIPT,
        ])
        .env("RILL_TEST_MARKER", marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

#[test]
fn work_runs_a_command_per_job_with_retry_failure_cancel_and_graceful_stop() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fixed");
    let enqueue = |payload: &str, id: &str| cli.ok(&["enqueue", "q", payload, "--id", id]);
    enqueue(r#"{"kind":"ok"}"#, "j-ok");
    enqueue(r#"{"kind":"retry"}"#, "j-retry");
    enqueue(r#"{"kind":"fail"}"#, "j-fail");
    enqueue(r#"{"kind":"sleep"}"#, "j-sleep");
    let mut w = worker(&cli, "q", &marker);

    cli.wait_for("j-ok completed", || cli.state("q", "j-ok") == "completed");
    assert_eq!(
        cli.job("q", "j-ok")["result"],
        json!({"done": "j-ok", "queue": "q"})
    );
    cli.wait_for("j-retry completed on attempt 2", || {
        cli.state("q", "j-retry") == "completed"
    });
    let retried = cli.job("q", "j-retry");
    let history: Vec<&str> = retried["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["retrying", "completed"]);
    assert!(
        cli.ok(&["jobs", "show", "j-retry"])
            .contains("retrying  attempts 1  error=exit 75 (retry): busy")
    );
    assert_eq!(
        (retried["attempts"].as_u64(), &retried["result"]),
        (Some(2), &json!("second time"))
    );
    cli.wait_for("j-fail dead", || cli.state("q", "j-fail") == "dead");
    let dead = cli.job("q", "j-fail");
    assert_eq!(dead["attempts"], 2);
    let err = dead["last_error"].as_str().unwrap();
    assert!(
        err.contains("exit 3") && err.contains("disk on fire"),
        "{err}"
    );

    // The worker is registered, healthy, and says what it runs.
    let workers = cli.json(&["workers", "q"]);
    let me = &workers[0];
    assert_eq!(me["health"], "healthy");
    assert!(
        me["metadata"]["command"]
            .as_str()
            .unwrap()
            .starts_with("sh -c")
    );
    assert!(cli.ok(&["workers"]).contains("healthy"));
    cli.wait_for("only j-sleep running", || {
        cli.json(&["workers", "q"])[0]["in_flight"] == 1
    });

    // A job that leaves a process behind (holding its stdout) still completes, and the process is gone.
    cli.ok(&["enqueue", "q", r#"{"kind":"orphan"}"#, "--id", "j-orphan"]);
    cli.wait_for("j-orphan completed", || {
        cli.state("q", "j-orphan") == "completed"
    });
    assert_eq!(cli.job("q", "j-orphan")["result"], json!("left-behind"));
    let orphan = std::fs::read_to_string(dir.path().join("fixed.orphan")).unwrap();
    let alive = || {
        std::path::Path::new(&format!("/proc/{}", orphan.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", orphan.trim()))
                .unwrap_or_default()
                .contains(") Z ")
    };
    cli.wait_for("the left-behind sleep is killed", || !alive());

    // Cancel the running job: its process is terminated, the job ends cancelled.
    cli.wait_for("j-sleep running", || cli.state("q", "j-sleep") == "active");
    let t = Instant::now();
    assert!(
        cli.ok(&["jobs", "cancel", "j-sleep"])
            .contains("cancel sent")
    );
    cli.wait_for("j-sleep cancelled", || {
        cli.state("q", "j-sleep") == "cancelled"
    });
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the sleep was cut short"
    );

    // Dead letters: list, retry (now fixed), purge.
    let list = cli.json(&["dead", "list", "q"]);
    assert_eq!(list["total"], 1);
    assert_eq!(list["dead"][0]["job_id"], "j-fail");
    assert_eq!(list["dead"][0]["payload"], json!({"kind": "fail"}));
    assert!(cli.ok(&["dead", "list", "q"]).contains("disk on fire"));
    // Follow the events while the retry happens.
    let mut tail = ChildGuard(
        cli.cmd(&["events", "tail", "q", "--json", "-n", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(tail.0.stdout.take().unwrap()).lines();
    // Its one past event printed, the tail follows from there: nothing after this point is missed.
    lines.next().unwrap().unwrap();
    std::fs::write(&marker, b"").unwrap();
    let retry = cli.json(&["dead", "retry", "q", "j-fail"]);
    assert_eq!(retry["requeued"], json!(["j-fail"]));
    cli.wait_for("j-fail completed after the retry", || {
        cli.state("q", "j-fail") == "completed"
    });
    let mut seen = Vec::new();
    for line in lines {
        let e: Json = serde_json::from_str(&line.unwrap()).unwrap();
        seen.push(e["event"].as_str().unwrap().to_owned());
        if e["event"] == "completed" {
            break;
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("requeued"),
        "{seen:?}"
    );
    tail.kill();
    let past = cli.ok(&["events", "tail", "q", "-n", "50", "--no-follow"]);
    for kind in ["completed", "retrying", "dead", "cancelled", "requeued"] {
        assert!(past.contains(kind), "{kind} missing from:\n{past}");
    }
    // Broken again before the job exists, so the worker cannot run it while the marker is still there.
    std::fs::remove_file(&marker).unwrap();
    cli.ok(&[
        "enqueue",
        "q",
        r#"{"kind":"fail"}"#,
        "--id",
        "j-fail-2",
        "--attempts",
        "1",
    ]);
    cli.wait_for("j-fail-2 dead", || cli.state("q", "j-fail-2") == "dead");
    assert_eq!(
        cli.json(&["dead", "purge", "q", "--older-than", "1h", "--yes"])["purged"],
        0
    );
    assert_eq!(cli.json(&["dead", "purge", "q", "--yes"])["purged"], 1);

    // Signals: pause the queue, read the history.
    let sent = cli.json(&["signal", "send", "q", "pause"]);
    assert_eq!(sent["outcomes"][0]["result"], "applied");
    assert!(cli.json(&["stats", "q"])[0]["paused"].as_bool().unwrap());
    cli.ok(&[
        "signal",
        "send",
        "q",
        "custom:reload",
        "--payload",
        r#"{"v":2}"#,
    ]);
    let history = cli.json(&["signal", "history", "q"]);
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.ends_with(&["pause", "custom:reload"]), "{kinds:?}");
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["payload"],
        json!({"v": 2})
    );
    assert!(
        cli.ok(&["signal", "history", "q", "--kind", "cancel"])
            .contains("job:j-sleep")
    );
    cli.ok(&["signal", "send", "q", "resume"]);

    // SIGTERM while a job runs: it finishes, then the worker leaves the registry and exits 0.
    cli.ok(&["enqueue", "q", r#"{"kind":"slow"}"#, "--id", "j-slow"]);
    cli.wait_for("j-slow running", || cli.state("q", "j-slow") == "active");
    sigterm(&w.0);
    let status = wait_exit(&mut w.0, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        dir.path().join("fixed.slow").exists(),
        "the running job finished"
    );
    assert_eq!(
        cli.state("q", "j-slow"),
        "completed",
        "a named job keeps a compact record, result or not"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut w.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("shutting down") && stderr.contains("stopped;"),
        "{stderr}"
    );
    assert_eq!(cli.json(&["workers", "q"]), json!([]));
}

/// `--timeout`: a job that runs too long is terminated and its attempt fails with the reason; a process killed
/// by a signal fails with the signal's number; the report at shutdown counts both.
#[test]
fn work_terminates_a_job_past_its_timeout() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "t", "{}", "--id", "j-long", "--attempts", "1"]);
    cli.ok(&[
        "enqueue",
        "t",
        r#"{"kill":1}"#,
        "--id",
        "j-killed",
        "--attempts",
        "1",
    ]);
    let stubborn = r#"{"stubborn":1}"#;
    cli.ok(&[
        "enqueue",
        "t",
        stubborn,
        "--id",
        "j-stubborn",
        "--attempts",
        "1",
    ]);
    let mut w = ChildGuard(
        cli.cmd(&[
            "--json",
            "work",
            "t",
            "--timeout",
            "300ms",
            "--kill-after",
            "200ms",
            "--",
            "sh",
            "-c",
            r#"case "$(cat)" in *kill*) kill -9 $$ ;; *stubborn*) trap '' TERM; sleep 30 ;; *) sleep 30 ;; esac"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let t = Instant::now();
    // A process that ignores SIGTERM is killed `--kill-after` later.
    cli.wait_for("all dead", || {
        ["j-long", "j-killed", "j-stubborn"]
            .iter()
            .all(|id| cli.state("t", id) == "dead")
    });
    assert!(t.elapsed() < Duration::from_secs(20));
    let error = |id: &str| cli.job("t", id)["last_error"].as_str().unwrap().to_owned();
    let err = error("j-long");
    assert!(err.starts_with("timed out after 300ms"), "{err}");
    let err = error("j-stubborn");
    assert!(err.starts_with("timed out after 300ms"), "{err}");
    let err = error("j-killed");
    assert!(err.starts_with("killed by signal 9"), "{err}");
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut w.0.stdout.take().unwrap(), &mut out).unwrap();
    let report: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["dead"].as_u64(), report["completed"].as_u64()),
        (Some(3), Some(0))
    );
}

/// `rill enqueue --timeout`: a job's own limit holds under a worker without `--timeout`.
#[test]
fn work_honours_a_timeout_set_on_the_job() {
    let cli = Cli::new();
    cli.ok(&[
        "enqueue",
        "t",
        "{}",
        "--id",
        "j-own",
        "--attempts",
        "1",
        "--job-timeout",
        "300ms",
    ]);
    let mut w = ChildGuard(
        cli.cmd(&["work", "t", "--", "sh", "-c", "cat >/dev/null; sleep 30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    cli.wait_for("dead", || cli.state("t", "j-own") == "dead");
    assert!(t.elapsed() < Duration::from_secs(20));
    let err = cli.job("t", "j-own")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.starts_with("timeout: the attempt ran past its 300ms limit"),
        "{err}"
    );
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
}

/// `rill enqueue --wait`: prints the result of a job a worker completes (exit 0), the error of one that dies
/// (exit 1), and where a job is when the wait runs out (exit 2).
#[test]
fn enqueue_waits_for_the_outcome() {
    let cli = Cli::new();
    let mut w = ChildGuard(
        cli.cmd(&[
            "work",
            "w",
            "--attempts",
            "1",
            "--",
            "sh",
            "-c",
            r#"case "$(cat)" in *fail*) echo 'no such mailbox' >&2; exit 3 ;; *) echo '{"sent":true}' ;; esac"#,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let done = cli.json(&[
        "enqueue",
        "w",
        r#"{"to":"ada"}"#,
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(done["outcome"], "completed", "{done}");
    assert_eq!(done["result"], serde_json::json!({"sent": true}), "{done}");
    let out = cli.run(&[
        "enqueue",
        "w",
        r#"{"fail":1}"#,
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dead: exit 3: no such mailbox"), "{text}");
    // No worker on this queue: still waiting when the wait runs out.
    let out = cli.run(&[
        "--json",
        "enqueue",
        "idle",
        "{}",
        "--wait",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["outcome"].as_str(), doc["state"].as_str()),
        (Some("pending"), Some("waiting"))
    );
    // --wait takes one job from the command line.
    let err = cli.fails(&["enqueue", "w", "--stdin", "--wait"], 1);
    assert!(err.contains("--wait waits for one job"), "{err}");
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
}

/// A second SIGTERM does not wait out `--shutdown-timeout`: running jobs are terminated and handed back, their
/// attempt not counted.
#[test]
fn a_second_sigterm_hands_running_jobs_back_at_once() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "s", "{}", "--id", "j-busy"]);
    let mut w = ChildGuard(
        cli.cmd(&[
            "work",
            "s",
            "--shutdown-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            "sleep 60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    cli.wait_for("j-busy running", || cli.state("s", "j-busy") == "active");
    let t = Instant::now();
    sigterm(&w.0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        w.0.try_wait().unwrap().is_none(),
        "the first signal waits for the job"
    );
    sigterm(&w.0);
    let status = wait_exit(&mut w.0, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "did not wait out the 60 s shutdown timeout"
    );
    let job = cli.job("s", "j-busy");
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_u64()),
        (Some("waiting"), Some(0))
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut w.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("handing them back") && stderr.contains("1 handed back"),
        "{stderr}"
    );
}

/// README's console session, replayed with the files it names (`examples/send-email.sh`, `examples/batch.jsonl`),
/// run from `examples/` as the README says.
#[test]
fn the_readme_session_replays_with_the_shipped_worker_and_batch() {
    let cli = Cli::new();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let in_examples = |args: &[&str]| {
        let out = cli.cmd(args).current_dir(examples).output().unwrap();
        assert!(out.status.success(), "rill {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    in_examples(&["enqueue", "emails", r#"{"to":"ada@example.com"}"#]);
    in_examples(&[
        "enqueue",
        "emails",
        r#"{"to":"bob@invalid"}"#,
        "--id",
        "welcome-bob",
        "--attempts",
        "2",
    ]);
    in_examples(&[
        "enqueue",
        "emails",
        r#"{"to":"cy@slow.example"}"#,
        "--id",
        "digest-cy",
    ]);
    in_examples(&["enqueue", "emails", "--file", "batch.jsonl"]);
    let mut w = ChildGuard(
        cli.cmd(&[
            "work",
            "emails",
            "--concurrency",
            "8",
            "--",
            "./send-email.sh",
        ])
        .current_dir(examples)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    cli.wait_for("digest-cy running", || {
        cli.state("emails", "digest-cy") == "active"
    });
    let cancel = in_examples(&["jobs", "cancel", "digest-cy"]);
    assert!(cancel.contains("cancel sent"), "{cancel}");
    cli.wait_for("bob dead, cy cancelled, 3,001 done", || {
        let stats = cli.json(&["workers"]);
        let done = stats[0]["processed"].as_u64().unwrap_or(0);
        done == 3001
            && cli.state("emails", "welcome-bob") == "dead"
            && cli.state("emails", "digest-cy") == "cancelled"
    });
    let bob = cli.job("emails", "welcome-bob");
    assert_eq!(
        bob["last_error"], "exit 1: no MX record for invalid",
        "{bob}"
    );
    let dead = in_examples(&["dead", "list", "emails"]);
    assert!(
        dead.contains("welcome-bob") && dead.contains("exhausted"),
        "{dead}"
    );
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(30)).success());
}

/// A payload JSON cannot hold exactly (here a CBOR byte string from a foreign producer) is not handed to the
/// process as an approximation: the job fails for good with the reason, and JSON-shaped jobs run as usual.
#[test]
fn work_refuses_payloads_json_cannot_hold() {
    let cli = Cli::new();
    let mut conn = cli.redis.conn();
    let _: String = redis::cmd("XADD")
        .arg(format!("{}:{{b}}:ready", cli.ns))
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\x42\x01\x02"[..])
        .arg("id")
        .arg("bytes")
        .query(&mut conn)
        .unwrap();
    cli.ok(&["enqueue", "b", "{\"n\": 1}", "--id", "json"]);
    let mut w = ChildGuard(
        cli.cmd(&["work", "b", "--", "sh", "-c", "cat"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("bytes dead, json done", || {
        cli.state("b", "bytes") == "dead" && cli.state("b", "json") == "completed"
    });
    let err = cli.job("b", "bytes")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("cannot be passed to the process as JSON: a byte string (2 bytes)"),
        "{err}"
    );
    assert_eq!(cli.job("b", "json")["result"], json!({"n": 1}));
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
}
