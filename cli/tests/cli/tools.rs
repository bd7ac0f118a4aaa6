//! `rill top`, `rill bench` and `rill demo`.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::ChildGuard;
use super::work::worker;
use super::{Cli, wait_exit};

#[test]
fn top_bench_and_demo() {
    let cli = Cli::single(); // `rill bench` measures one server (README).
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
    // One frame: the rates' window, and no key to press.
    assert!(
        frame.contains("per second over the last 10s") && !frame.contains("q to quit"),
        "{frame}"
    );
    assert!(
        frame.contains("Workers (1)") && frame.contains("healthy"),
        "{frame}"
    );

    let table = cli.ok(&["bench", "--jobs", "100", "--concurrency", "4"]);
    assert!(
        table.contains("VS RAW") && table.contains("rill bench on"),
        "{table}"
    );
    let bench = cli.json(&["bench", "--jobs", "300", "--concurrency", "8"]);
    let cases = bench["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    // The server's version, as the shared connection read it.
    let server = bench["server"].as_str().unwrap();
    assert!(
        server.split('.').count() == 3 && server.split('.').all(|p| p.parse::<u16>().is_ok()),
        "{server}"
    );
    for c in cases {
        assert!(c["jobs_per_s"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["redis_cpu_us_per_job"].as_f64().unwrap() >= 0.0, "{c}");
        assert!(c["client_cpu_us_per_job"].as_f64().unwrap() >= 0.0, "{c}");
    }
    assert!(cases[1]["vs_raw"].as_f64().unwrap() > 0.0);
    assert_eq!(cases[3]["concurrency"], 8);
    // At concurrency 1 the raw loop it is compared with reads one entry at a time.
    let one = cli.json(&["bench", "--jobs", "200", "--concurrency", "1"]);
    assert_eq!(one["cases"][2]["case"], "raw XREADGROUP COUNT 1+XACK");
    // The drain's worker on a thread of its own: the same cases, and the document says so.
    let own = cli.json(&["bench", "--jobs", "200", "--dedicated-thread"]);
    assert_eq!(
        (
            own["dedicated_thread"].as_bool(),
            own["cases"].as_array().map(Vec::len)
        ),
        (Some(true), Some(4))
    );
    assert!(own["cases"][3]["jobs_per_s"].as_f64().unwrap() > 0.0);
    // The benchmark cleans up after itself: only the test's own keys are left.
    let mut conn = cli.redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rill-bench-*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    let out = cli.run(&["demo", "--jobs", "300"]);
    assert!(out.status.success());
    // The test's --namespace does not apply to the demo, and it says so.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rill demo ignores --namespace"), "{err}");
    let demo = String::from_utf8(out.stdout).unwrap();
    assert!(demo.contains("processed 300 jobs"), "{demo}");
    assert!(demo.contains("dead letter: job corrupt"), "{demo}");
    // A job's result as a person writes it, not Rust's `Debug` (`Some(0)`).
    assert!(
        demo.contains("job later-7 (delayed): completed, result 0") && !demo.contains("Some("),
        "{demo}"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rill-demo-*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Ctrl-C stops the demo and still removes its keys; a `--redis` with nothing there is one line saying so.
#[test]
fn demo_cleans_up_after_ctrl_c_and_names_an_unreachable_redis_once() {
    let cli = Cli::new();
    let mut conn = cli.redis.conn();
    let demo_keys = |conn: &mut super::support::Conn| -> usize {
        let keys: Vec<String> = redis::cmd("KEYS").arg("rill-demo-*").query(conn).unwrap();
        keys.len()
    };
    let mut child = ChildGuard(
        cli.cmd(&["demo", "--jobs", "1000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("the demo's keys", || demo_keys(&mut conn) > 0);
    let sent = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut child.0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(demo_keys(&mut conn), 0, "the demo's keys are gone");

    let err = cli.fails(
        &["demo", "--jobs", "300", "--redis", "redis://127.0.0.1:1"],
        1,
    );
    assert!(
        err.contains("cannot connect to Redis at redis://127.0.0.1:1")
            && err.lines().filter(|l| l.starts_with("error:")).count() == 1,
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}

/// The live view on a real terminal (a pty from util-linux `script`): it draws, refreshes and quits on `q`.
#[test]
fn top_runs_live_on_a_terminal_and_quits_on_q() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "live", "{}"]);
    let screen = top_on_a_terminal(&cli, 150);
    // Cells are placed with cursor moves, so words arrive one by one.
    for word in ["rill top", "Queues", "(1)", "live", "Workers", "quit"] {
        assert!(screen.contains(word), "{word} missing: {screen}");
    }
    assert!(
        screen.ends_with("\x1b[?1049l\x1b[?25h"),
        "the terminal is restored"
    );
    // On an 80-column terminal every queue header is whole.
    let dir = tempfile::tempdir().unwrap();
    let _w = worker(&cli, "live", &dir.path().join("m"));
    cli.wait_for("a worker registered", || {
        cli.json(&["workers"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let narrow = top_on_a_terminal(&cli, 80);
    for header in [
        "WAITING",
        "DELAYED",
        "PARKED",
        "DONE/s",
        "FAILED/s",
        "OLDEST",
        "IN-FLIGHT",
        "HEALTH",
    ] {
        assert!(
            narrow.contains(header),
            "{header} cut at 80 columns: {narrow}"
        );
    }
}

/// `rill top` on a pty `cols` wide (util-linux `script`), quit with `q` after 1.5 s: what it drew.
fn top_on_a_terminal(cli: &Cli, cols: u16) -> String {
    let rill = format!(
        "stty rows 20 cols {cols}; {} --redis {} --namespace {} top --interval 200ms",
        env!("CARGO_BIN_EXE_rill"),
        cli.url(),
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
    screen
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
