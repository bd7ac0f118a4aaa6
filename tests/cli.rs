//! The `rill` command driven as a process against a private Redis: every subcommand, `rill work -- sh -c ...`
//! with success, retry (exit 75), failure, cancel and SIGTERM, and the errors a person sees.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use support::{ChildGuard, TestRedis};

/// A namespace on a private Redis, and the `rill` binary pointed at it.
struct Cli {
    redis: TestRedis,
    ns: String,
}

impl Cli {
    fn new() -> Self {
        Cli {
            redis: TestRedis::start(),
            ns: support::namespace(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rill"));
        c.args(["--redis", &self.redis.url(), "--namespace", &self.ns])
            .args(args)
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "off");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run rill")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rill {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Json {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("rill {args:?}: not JSON ({e}): {out}"))
    }

    /// Runs and expects failure with exit code `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "rill {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn job(&self, queue: &str, id: &str) -> Json {
        self.json(&["jobs", "show", id, "--queue", queue])
    }

    fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The job's state; `unknown` when `rill jobs show` finds nothing.
    fn state(&self, queue: &str, id: &str) -> String {
        let out = self.run(&["jobs", "show", id, "--queue", queue, "--json"]);
        if !out.status.success() {
            assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
            return "unknown".into();
        }
        let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
        doc["state"].as_str().unwrap().to_owned()
    }
}

fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for a child to exit, at most `timeout`.
fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn enqueue_stats_show_and_errors_a_person_can_act_on() {
    let cli = Cli::new();
    let one = cli.ok(&["enqueue", "emails", r#"{"to":"a@example.com"}"#]);
    let one = one.trim();
    assert!(one.contains('-'), "an entry id: {one}");
    assert_eq!(
        cli.ok(&[
            "enqueue",
            "emails",
            r#"{"to":"b"}"#,
            "--id",
            "welcome-b",
            "--delay",
            "1h",
            "--attempts",
            "3"
        ])
        .trim(),
        "welcome-b"
    );
    // A second enqueue of a live id adds nothing.
    assert_eq!(
        cli.ok(&["enqueue", "emails", r#"{"to":"c"}"#, "--id", "welcome-b"])
            .trim(),
        "welcome-b"
    );
    // Many: a file (pipelined) and stdin.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    let lines: String = (0..1500).map(|n| format!("{{\"n\":{n}}}\n\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let ids = cli.json(&["enqueue", "bulk", "--file", file.to_str().unwrap()]);
    assert_eq!(ids["ids"].as_array().unwrap().len(), 1500);
    let mut child = cli
        .cmd(&["enqueue", "bulk", "--stdin", "--attempts", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1\n\"two\"\n[3]\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);

    let stats = cli.json(&["stats"]);
    let by_name = |n: &str| {
        stats
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("emails")["waiting"], 1);
    assert_eq!(by_name("emails")["delayed"], 1);
    assert_eq!(by_name("bulk")["waiting"], 1503);
    assert!(by_name("bulk")["oldest_waiting_age_ms"].as_u64().is_some());
    let table = cli.ok(&["stats", "emails"]);
    assert!(
        table.starts_with("QUEUE") && table.contains("emails"),
        "{table}"
    );

    // jobs show, with and without --queue.
    let job = cli.job("emails", one);
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["payload"], json!({"to": "a@example.com"}));
    let found = cli.json(&["jobs", "show", "welcome-b"]);
    assert_eq!(
        (found["queue"].as_str(), found["state"].as_str()),
        (Some("emails"), Some("delayed"))
    );
    let shown = cli.ok(&["jobs", "show", "welcome-b"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state:") && l.ends_with(" delayed")),
        "{shown}"
    );
    // Cancel a waiting job: removed, recorded.
    assert!(
        cli.ok(&["jobs", "cancel", "welcome-b"])
            .contains("will never run")
    );
    assert_eq!(cli.state("emails", "welcome-b"), "cancelled");

    // Errors: one clear line, non-zero exit, no backtrace.
    for (args, code, needle) in [
        (vec!["enqueue", "emails", "{oops"], 1, "not valid JSON"),
        (
            vec!["enqueue", "emails", "{}", "--delay", "soon"],
            2,
            "examples: 30s",
        ),
        (vec!["enqueue", "bad name", "{}"], 1, "invalid queue name"),
        (vec!["stats", "nope"], 1, "unknown queue \"nope\""),
        (vec!["dead", "list", "nope"], 1, "known: bulk, emails"),
        (
            vec!["jobs", "show", "no-such-job"],
            1,
            "not found in any queue",
        ),
        (
            vec!["jobs", "cancel", "one-more", "--queue", "emails"],
            1,
            "not found in queue",
        ),
        (
            vec!["signal", "send", "emails", "cancel"],
            1,
            "cancel needs a job",
        ),
        (
            vec!["signal", "send", "emails", "explode"],
            2,
            "custom:NAME",
        ),
        (
            vec!["work", "emails", "--", "/no/such/program"],
            1,
            "command not found",
        ),
    ] {
        let err = cli.fails(&args, code);
        assert!(err.contains(needle), "rill {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--redis", "redis://127.0.0.1:1", "stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        err.contains("redis://127.0.0.1:1")
            && err.contains("--redis URL")
            && err.contains("REDIS_URL"),
        "{err}"
    );
    let bad_url = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--redis", "nope://x", "stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad_url.stderr);
    assert_eq!(bad_url.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("invalid Redis URL \"nope://x\": use redis://host:6379"),
        "{err}"
    );
    let env_url = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--namespace", &cli.ns, "stats", "emails", "--json"])
        .env("REDIS_URL", cli.redis.url())
        .output()
        .unwrap();
    assert!(env_url.status.success(), "REDIS_URL is honoured");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let cli = Cli::new();
    for sub in [
        vec!["enqueue"],
        vec!["work"],
        vec!["stats"],
        vec!["top"],
        vec!["jobs", "show"],
        vec!["jobs", "cancel"],
        vec!["dead", "list"],
        vec!["dead", "retry"],
        vec!["dead", "purge"],
        vec!["workers"],
        vec!["signal", "send"],
        vec!["signal", "history"],
        vec!["events", "tail"],
        vec!["bench"],
        vec!["demo"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let help = cli.ok(&args);
        assert!(
            help.contains("Examples:") && help.contains("rill "),
            "rill {sub:?} --help:\n{help}"
        );
        assert!(
            help.contains("--redis") && help.contains("--json"),
            "{help}"
        );
    }
}

const SCRIPT: &str = r#"p=$(cat)
case "$p" in
  *ok*) echo "{\"done\":\"$RILL_JOB_ID\",\"queue\":\"$RILL_QUEUE\"}" ;;
  *retry*) if [ "$RILL_ATTEMPT" = 1 ]; then echo "busy, try later" >&2; exit 75; fi; echo "second time" ;;
  *fail*) if [ -f "$RILL_TEST_MARKER" ]; then echo fixed; exit 0; fi; echo "disk on fire" >&2; exit 3 ;;
  *sleep*) sleep 60 ;;
  *slow*) sleep 1; touch "$RILL_TEST_MARKER.slow" ;;
  *orphan*) sleep 300 & echo $! > "$RILL_TEST_MARKER.orphan"; echo left-behind ;;
esac"#;

fn worker(cli: &Cli, queue: &str, marker: &std::path::Path) -> ChildGuard {
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
            .contains("retrying  attempt 1  error=exit 75 (retry): busy")
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
        cli.json(&["dead", "purge", "q", "--older-than", "1h"])["purged"],
        0
    );
    assert_eq!(cli.json(&["dead", "purge", "q"])["purged"], 1);

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
        "unknown",
        "completed without a result: no record kept"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut w.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("shutting down") && stderr.contains("stopped;"),
        "{stderr}"
    );
    assert_eq!(cli.json(&["workers", "q"]), json!([]));
}

#[test]
fn top_bench_and_demo() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "pics", r#"{"w":1}"#]);
    let dir = tempfile::tempdir().unwrap();
    let _w = worker(&cli, "pics", &dir.path().join("m"));
    cli.wait_for("a worker registered", || {
        cli.json(&["workers"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let frame = cli.ok(&["top", "--once"]);
    assert!(
        frame.contains("rill top") && frame.contains("Queues (1)") && frame.contains("pics"),
        "{frame}"
    );
    assert!(
        frame.contains("Workers (1)") && frame.contains("healthy"),
        "{frame}"
    );

    let bench = cli.json(&["bench", "--jobs", "300", "--concurrency", "8"]);
    let cases = bench["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        assert!(c["jobs_per_s"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert!(cases[1]["vs_raw"].as_f64().unwrap() > 0.0);
    // The benchmark cleans up after itself: only the test's own keys are left.
    let mut conn = cli.redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rill-bench-*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    let demo = cli.ok(&["demo", "--jobs", "300"]);
    assert!(demo.contains("processed 300 jobs"), "{demo}");
    assert!(demo.contains("dead letter: job corrupt"), "{demo}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rill-demo-*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// The live view on a real terminal (a pty from util-linux `script`): it draws, refreshes and quits on `q`.
#[test]
fn top_runs_live_on_a_terminal_and_quits_on_q() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "live", "{}"]);
    let rill = format!(
        "stty rows 20 cols 150; {} --redis {} --namespace {} top --interval 200ms",
        env!("CARGO_BIN_EXE_rill"),
        cli.redis.url(),
        cli.ns
    );
    let mut child = ChildGuard(
        Command::new("script")
            .args(["-qec", &rill, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("util-linux script"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    use std::io::Write;
    child.0.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let status = wait_exit(&mut child.0, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut screen = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut screen).unwrap();
    // Cells are placed with cursor moves, so words arrive one by one.
    for word in ["rill top", "Queues", "(1)", "live", "Workers", "quit"] {
        assert!(screen.contains(word), "{word} missing: {screen}");
    }
    assert!(
        screen.ends_with("\x1b[?1049l\x1b[?25h"),
        "the terminal is restored"
    );
}

/// `rill demo` with no `--redis` and nothing on the default address starts its own redis-server. Run in a fresh
/// network namespace (root), where 127.0.0.1:6379 is free whatever this machine runs.
#[test]
fn demo_starts_a_throwaway_redis_when_nothing_answers() {
    let script = format!(
        "ip link set lo up && {} demo --jobs 300",
        env!("CARGO_BIN_EXE_rill")
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env_remove("REDIS_URL")
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("started a throwaway redis-server"),
        "{stderr}"
    );
    assert!(
        stdout.contains("processed 300 jobs") && stdout.contains("3 retried"),
        "{stdout}"
    );
}

/// `--timeout`: a job that runs too long is terminated and its attempt fails with the reason.
#[test]
fn work_terminates_a_job_past_its_timeout() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "t", "{}", "--id", "j-long", "--attempts", "1"]);
    let _w = ChildGuard(
        cli.cmd(&[
            "work",
            "t",
            "--timeout",
            "300ms",
            "--kill-after",
            "200ms",
            "--",
            "sh",
            "-c",
            "sleep 30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let t = Instant::now();
    cli.wait_for("j-long dead", || cli.state("t", "j-long") == "dead");
    assert!(t.elapsed() < Duration::from_secs(20));
    let err = cli.job("t", "j-long")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(err.starts_with("timed out after 300ms"), "{err}");
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

#[test]
fn enqueue_streams_its_input_and_says_how_far_it_got() {
    use std::io::Write;
    let mut cli = Cli::new();
    let mut child = cli
        .cmd(&["enqueue", "lines", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut ids = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first job lands, and its id is printed, while the producer is still writing.
    writeln!(stdin, "{{\"n\": 1}}").unwrap();
    stdin.flush().unwrap();
    let first = ids.next().unwrap().unwrap();
    assert!(first.contains('-'), "an entry id: {first}");
    // A bad line: what came before it landed, and the error names the line to go on from.
    writeln!(stdin, "{{oops").unwrap();
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("1 jobs landed") && err.contains("stdin, line 2"),
        "{err}"
    );

    // Redis goes away mid-stream: the error says how many landed and from which line to resume.
    let mut child = cli
        .cmd(&["enqueue", "lines", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut ids = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "1\n2").unwrap();
    stdin.flush().unwrap();
    ids.next().unwrap().unwrap();
    ids.next().unwrap().unwrap();
    cli.redis.kill();
    writeln!(stdin, "3").unwrap();
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("2 jobs landed before the batch starting at stdin line 3")
            && err.contains("tail -n +3"),
        "{err}"
    );
}
