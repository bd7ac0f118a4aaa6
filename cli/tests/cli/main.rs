//! The `rill` command driven as a process against a private Redis: every subcommand, `rill work -- sh -c ...`
//! with success, retry (exit 75), failure, cancel and SIGTERM, and the errors a person sees.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod admin;
mod browser;
mod clients;
mod cluster;
mod dashboard;
mod limits;
mod metrics;
mod operator;
mod schedule;
mod tls;
mod tools;
mod work;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use support::TestRedis;

/// A namespace on a private Redis, and the `rill` binary pointed at it.
struct Cli {
    redis: TestRedis,
    ns: String,
    /// A Redis Cluster the commands use instead of `redis` (which then only stands by).
    cluster: Option<support::cluster::TestCluster>,
}

impl Cli {
    fn new() -> Self {
        Cli {
            redis: TestRedis::start(),
            ns: support::namespace(),
            cluster: None,
        }
    }

    /// On one plain server also when the suite runs on clusters (`RILL_TEST_CLUSTER`): a test that stops the
    /// server, reaches it as a bare `host:port`, counts one server's commands, or drives a package without cluster
    /// support.
    fn single() -> Self {
        Cli {
            redis: TestRedis::start_single(),
            ns: support::namespace(),
            cluster: None,
        }
    }

    /// The URL the commands are given.
    fn url(&self) -> String {
        self.cluster
            .as_ref()
            .map_or_else(|| self.redis.client_url(), |c| c.url())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rill"));
        let url = self.url();
        c.args(["--redis", &url, "--namespace", &self.ns])
            .args(args)
            .env_remove("REDIS_URL")
            // Quiet unless RILL_TEST_LOG asks (e.g. `RILL_TEST_LOG=info`: the processes log to the test output).
            .env(
                "RUST_LOG",
                std::env::var("RILL_TEST_LOG").unwrap_or("off".into()),
            );
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

    /// `rill jobs show ID --json` without `--queue`.
    fn job_anywhere(&self, id: &str) -> Json {
        self.json(&["jobs", "show", id])
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
    // The rate columns say what they measure.
    assert!(
        table.contains("DONE/s, FAILED/s: per second over the last 1m"),
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
        .env("REDIS_URL", cli.url())
        .output()
        .unwrap();
    assert!(env_url.status.success(), "REDIS_URL is honoured");
}

#[test]
fn command_line_slips_get_a_tip_and_text_views_refuse_json() {
    let cli = Cli::single();
    let err = cli.fails(&["work", "emails", "./send-email.sh"], 2);
    assert!(
        err.contains("tip: put `--` before the worker command"),
        "{err}"
    );
    for view in [&["top", "--once"][..], &["demo", "--jobs", "300"]] {
        let args: Vec<&str> = ["--json"].iter().chain(view).copied().collect();
        let err = cli.fails(&args, 1);
        assert!(
            err.contains("prints no JSON") && err.contains("--json"),
            "{err}"
        );
    }
    // `host:port` without a scheme is a redis:// URL.
    let bare = format!("127.0.0.1:{}", cli.redis.port());
    cli.ok(&["enqueue", "q", "1", "--id", "bare"]);
    let shown = cli.ok(&["jobs", "show", "bare", "--redis", &bare]);
    assert!(shown.contains("waiting"), "{shown}");
    // (the address given last is the one used)
    let err = cli.fails(&["jobs", "show", "bare", "--redis", "127.0.0.1:1"], 1);
    assert!(err.contains("redis://127.0.0.1:1"), "{err}");
}

#[test]
fn shell_completions_name_every_subcommand() {
    let cli = Cli::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = cli.ok(&["completions", shell]);
        for sub in ["enqueue", "work", "dashboard", "schedule", "completions"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    cli.fails(&["completions", "tcsh"], 2);
    let err = cli.fails(&["--json", "completions", "bash"], 1);
    assert!(err.contains("shell script"), "{err}");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let cli = Cli::new();
    for sub in [
        vec!["enqueue"],
        vec!["work"],
        vec!["stats"],
        vec!["top"],
        vec!["jobs"],
        vec!["jobs", "show"],
        vec!["jobs", "cancel"],
        vec!["jobs", "list"],
        vec!["jobs", "promote"],
        vec!["jobs", "delete"],
        vec!["queue"],
        vec!["queue", "pause"],
        vec!["queue", "resume"],
        vec!["queue", "drain"],
        vec!["queue", "remove"],
        vec!["dead"],
        vec!["dead", "list"],
        vec!["dead", "retry"],
        vec!["dead", "purge"],
        vec!["workers"],
        vec!["signal"],
        vec!["signal", "send"],
        vec!["signal", "history"],
        vec!["metrics"],
        vec!["dashboard"],
        vec!["completions"],
        vec!["queue", "limit"],
        vec!["events"],
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

/// `rill enqueue lines --stdin` running: the process, its stdin, and the ids it prints.
fn enqueue_from_stdin(
    cli: &Cli,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = cli
        .cmd(&["enqueue", "lines", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let ids = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdin, ids)
}

/// Everything an exited child wrote to its piped stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn enqueue_streams_its_input_and_says_how_far_it_got() {
    use std::io::Write;
    let mut cli = Cli::single();
    let (mut child, mut stdin, mut ids) = enqueue_from_stdin(&cli);
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
    let err = stderr_of(&mut child);
    assert!(
        err.contains("1 jobs landed") && err.contains("stdin, line 2"),
        "{err}"
    );

    // Redis goes away mid-stream: the error says how many landed and from which line to resume.
    let (mut child, mut stdin, mut ids) = enqueue_from_stdin(&cli);
    writeln!(stdin, "1\n2").unwrap();
    stdin.flush().unwrap();
    ids.next().unwrap().unwrap();
    ids.next().unwrap().unwrap();
    cli.redis.kill();
    writeln!(stdin, "3").unwrap();
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(&mut child);
    assert!(
        err.contains("2 jobs landed before the batch starting at stdin line 3")
            && err.contains("tail -n +3"),
        "{err}"
    );
}
