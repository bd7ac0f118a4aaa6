//! The operator's commands on the states they meet: empty namespaces, a job running elsewhere with checkpoints, a
//! retried job, dead letters to list, requeue and purge, signals with targets, events followed live. State the
//! CLI cannot make (a delivery held by another worker) is made with the library's scripts.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use rill::keys::{GROUP, QueueKeys};
use rill::scripts::{self, CheckpointWrite, DeliveryRef, Fail, FailMode};
use rill::wire::DeadReason;
use serde_json::Value as Json;

use super::support::{ChildGuard, caller, create_group, now_ms};
use super::{Cli, wait_exit};

/// A worker elsewhere (consumer `w1`) that holds deliveries and ends them through the scripts.
struct Elsewhere {
    rt: tokio::runtime::Runtime,
    conn: super::support::AConn,
    keys: QueueKeys,
}

impl Elsewhere {
    fn new(cli: &Cli, queue: &str) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut conn = rt.block_on(cli.redis.aconn());
        let keys = QueueKeys::new(&cli.ns, queue).unwrap();
        rt.block_on(create_group(&mut conn, &keys));
        Elsewhere { rt, conn, keys }
    }

    /// Takes the next waiting job; returns its entry id.
    fn take(&mut self) -> String {
        let v: redis::Value = self
            .rt
            .block_on(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg("w1")
                    .arg("COUNT")
                    .arg(1)
                    .arg("STREAMS")
                    .arg(&self.keys.ready)
                    .arg(">")
                    .query_async(&mut self.conn),
            )
            .unwrap();
        rill::wire::parse_read_reply(v).unwrap().remove(0).id
    }

    fn checkpoint(&mut self, entry: &str, job: &str, label: &str, step: u64) {
        let state = rill::wire::encode(&step).unwrap();
        let write = CheckpointWrite {
            version: 0,
            label,
            state: &state,
            keep: 5,
            ttl_ms: 3_600_000,
            max_bytes: 1 << 20,
        };
        let d = DeliveryRef {
            entry_id: entry,
            token: 1,
        };
        let c = caller(&self.keys, "w1");
        self.rt
            .block_on(scripts::checkpoint(
                &mut self.conn,
                &c,
                d,
                job,
                now_ms(),
                write,
            ))
            .unwrap();
    }

    /// Marks job id `job` live (in the index), as a new job with that id would.
    fn mark_live(&mut self, job: &str) {
        let _: () = self
            .rt
            .block_on(
                redis::cmd("HSET")
                    .arg(&self.keys.index)
                    .arg(job)
                    .arg("9-0")
                    .query_async(&mut self.conn),
            )
            .unwrap();
    }

    fn fail(&mut self, entry: &str, job: &str, mode: FailMode, error: &str) {
        let call = Fail {
            delivery: DeliveryRef {
                entry_id: entry,
                token: 1,
            },
            job_id: job,
            now_ms: now_ms(),
            mode,
            error,
        };
        let c = caller(&self.keys, "w1");
        self.rt
            .block_on(scripts::fail(&mut self.conn, &c, call))
            .unwrap();
    }
}

#[test]
fn empty_namespaces_and_missing_arguments_say_so() {
    let cli = Cli::new();
    assert!(cli.ok(&["stats"]).contains("no queues in namespace"));
    assert!(
        cli.fails(&["dead", "list", "nope"], 1)
            .contains("has no queues yet")
    );
    assert!(
        cli.fails(&["jobs", "show", "nope"], 1)
            .contains("(searched: none)")
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--redis", &cli.url(), "--namespace", "bad name", "stats"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad name"));
    // A queue another client wrote to without listing it is found by its entries.
    let raw = QueueKeys::new(&cli.ns, "unlisted").unwrap();
    let mut c = cli.redis.conn();
    let _: String = redis::cmd("XADD")
        .arg(&raw.ready)
        .arg("*")
        .arg("v")
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert!(cli.ok(&["stats", "unlisted"]).contains("unlisted"));
    let dir = tempfile::tempdir().unwrap();
    let e = cli.fails(&["enqueue", "q", "--file", dir.path().to_str().unwrap()], 1);
    assert!(e.contains("cannot read"), "{e}");
    assert!(cli.ok(&["workers"]).contains("no workers registered"));
    assert!(cli.fails(&["enqueue", "q"], 1).contains("no job given"));
    assert!(cli.fails(&["work", "q"], 2).contains("<CMD>"));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = cli.fails(&["enqueue", "q", "--file", empty.to_str().unwrap()], 1);
    assert!(e.contains("holds no jobs"), "{e}");
    let two = dir.path().join("two.jsonl");
    std::fs::write(&two, "1\n2\n").unwrap();
    let e = cli.fails(
        &["enqueue", "q", "--file", two.to_str().unwrap(), "--id", "x"],
        1,
    );
    assert!(e.contains("apply to one job"), "{e}");
    let first = cli.ok(&["enqueue", "q", "1", "--dedup-key", "k"]);
    assert_eq!(
        cli.ok(&["enqueue", "q", "2", "--dedup-key", "k"]),
        first,
        "deduplicated"
    );
    assert!(
        cli.ok(&["dead", "list", "q"])
            .contains("no dead letters in q")
    );
    assert!(cli.ok(&["signal", "history", "q"]).contains("no signals"));

    cli.ok(&["signal", "send", "q", "pause"]);
    assert!(cli.ok(&["stats"]).contains("q (paused)"));
    // To a worker: only one that is registered (a record and an entry in the registry).
    let e = cli.fails(
        &["signal", "send", "q", "custom:hello", "--worker", "w1"],
        1,
    );
    assert!(
        e.contains("no worker \"w1\" is registered on q (registered: none)"),
        "{e}"
    );
    let q_keys = QueueKeys::new(&cli.ns, "q").unwrap();
    let now = now_ms();
    let _: () = redis::cmd("HSET")
        .arg(q_keys.worker("w1"))
        .arg("last_beat_ms")
        .arg(now)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&q_keys.workers)
        .arg(now)
        .arg("w1")
        .query(&mut c)
        .unwrap();
    cli.ok(&["signal", "send", "q", "custom:hello", "--worker", "w1"]);
    cli.ok(&["signal", "send", "q", "cancel", "--job", first.trim()]);
    let h = cli.ok(&["signal", "history", "q", "--worker", "w1", "--since", "1h"]);
    assert!(h.contains("custom:hello") && h.contains("worker:w1"), "{h}");
    assert!(!h.contains("cancel"), "filtered by target: {h}");
    let h: Json = cli.json(&["signal", "history", "q", "--job", first.trim()]);
    assert_eq!(h[0]["kind"], "cancel");

    // A listed queue whose stream another program replaced with a string: one line naming Redis's error.
    let broken = QueueKeys::new(&cli.ns, "broken").unwrap();
    let _: () = redis::cmd("SET")
        .arg(&broken.ready)
        .arg("oops")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(rill::keys::queues_key(&cli.ns).unwrap())
        .arg("broken")
        .query(&mut c)
        .unwrap();
    let e = cli.fails(&["top", "--once"], 1);
    assert!(e.contains("WRONGTYPE") && e.lines().count() == 1, "{e}");
}

#[test]
fn jobs_show_a_job_running_elsewhere_with_checkpoints_and_one_that_failed() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "q", "30", "--id", "long"]);
    let mut w = Elsewhere::new(&cli, "q");
    let entry = w.take();
    w.checkpoint(&entry, "long", "step 10", 10);
    let shown = cli.ok(&["jobs", "show", "long"]);
    assert!(shown.contains("running on: w1 (delivery 1)"), "{shown}");
    assert!(
        shown.contains("checkpoints (newest first):") && shown.contains("step 10"),
        "{shown}"
    );
    assert!(shown.contains("newest checkpoint state: 10"), "{shown}");
    assert!(
        shown.contains("attempts:   1 (the running one included)"),
        "{shown}"
    );
    let doc = cli.job("q", "long");
    assert_eq!(doc["checkpoints"][0]["label"], "step 10");
    assert_eq!(doc["checkpoints"][0]["state"], 10);

    cli.ok(&["enqueue", "q", "1", "--id", "flaky"]);
    let entry = w.take();
    w.fail(
        &entry,
        "flaky",
        FailMode::Retry {
            delay_ms: 3_600_000,
        },
        "upstream said 503",
    );
    let shown = cli.ok(&["jobs", "show", "flaky"]);
    assert!(shown.contains("last error: upstream said 503"), "{shown}");
}

#[test]
fn an_id_in_several_queues_is_refused_until_the_queue_is_named() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "images", "1", "--id", "flaky-1"]);
    cli.ok(&["enqueue", "media", "2", "--id", "flaky-1", "--delay", "1h"]);
    for verb in ["show", "cancel"] {
        let err = cli.fails(&["jobs", verb, "flaky-1"], 1);
        assert!(
            err.contains("is in 2 queues: images (waiting), media (delayed)")
                && err.contains("--queue"),
            "{err}"
        );
    }
    // Neither job was touched; naming the queue acts on that one only.
    assert_eq!(cli.job("images", "flaky-1")["state"], "waiting");
    cli.ok(&["jobs", "cancel", "flaky-1", "--queue", "media"]);
    assert_eq!(cli.job("media", "flaky-1")["state"], "cancelled");
    assert_eq!(cli.job("images", "flaky-1")["state"], "waiting");
}

#[test]
fn dead_letters_are_listed_requeued_and_purged_and_a_dead_job_cannot_be_cancelled() {
    let cli = Cli::new();
    let mut w = Elsewhere::new(&cli, "q");
    for id in ["d1", "d2", "d3"] {
        cli.ok(&["enqueue", "q", "1", "--id", id]);
        let entry = w.take();
        w.fail(&entry, id, FailMode::Dead(DeadReason::Failed), "bad input");
    }
    assert!(
        cli.fails(&["jobs", "cancel", "d1"], 1).is_empty(),
        "the answer is on stdout"
    );
    let out = cli.run(&["jobs", "cancel", "d1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["outcome"].as_str(), doc["state_before"].as_str()),
        (Some("not_found"), Some("dead"))
    );
    assert!(
        cli.ok(&["dead", "list", "q", "--limit", "2"])
            .contains("(2 of 3 shown")
    );

    // d2's id is live again (another producer's job holds it); "nope" never died: one requeued, two refused,
    // and the command says so.
    w.mark_live("d2");
    let out = cli.run(&["dead", "retry", "q", "d1", "d2", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requeued 1 job(s) on q"), "{text}");
    assert!(text.contains("nope: not a dead letter of q"), "{text}");
    assert!(
        text.contains("d2: left dead, the job id is live again"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 job(s) could not be requeued"));

    let all = cli.ok(&["dead", "retry", "q", "--all"]);
    assert!(all.contains("requeued"), "{all}");
    assert!(
        cli.ok(&["dead", "purge", "q", "--yes"])
            .contains("dead letter(s) from q;")
    );
}

#[test]
fn events_are_followed_live_as_json_lines_until_interrupted() {
    let cli = Cli::new();
    let mut w = Elsewhere::new(&cli, "q");
    cli.ok(&["enqueue", "q", "1", "--id", "before"]);
    let entry = w.take();
    w.fail(
        &entry,
        "before",
        FailMode::Retry {
            delay_ms: 3_600_000,
        },
        "later",
    );
    let past = cli.ok(&["events", "tail", "q", "--json", "--no-follow"]);
    let first: Json = serde_json::from_str(past.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["event"].as_str(), first["id"].as_str()),
        (Some("retrying"), Some("before"))
    );
    // Numbers are JSON numbers, here and in a job's history.
    assert_eq!(first["delay_ms"], 3_600_000, "{first}");
    assert!(first["attempt"].is_u64() && first["ms"].is_u64(), "{first}");
    let history = &cli.job("q", "before")["history"][0];
    assert!(
        history["attempt"].is_u64() && history.get("ids").is_none(),
        "{history}"
    );
    let mut child = ChildGuard(
        cli.cmd(&["events", "tail", "q", "--json", "-n", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // `-n 0` follows from the newest event when the command starts: produce the next one only once it is
    // blocked reading (on a loaded machine the process may start after the event, which it then never shows).
    cli.wait_for("the follower blocked on XREAD", || {
        let clients = cli.redis.every_node(redis::cmd("CLIENT").arg("LIST"));
        clients.concat().lines().any(|c| c.contains(" cmd=xread "))
    });
    cli.ok(&["enqueue", "q", "2", "--id", "after"]);
    let entry = w.take();
    w.fail(
        &entry,
        "after",
        FailMode::Dead(DeadReason::Failed),
        "bad input",
    );
    let line: Json = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["id"].as_str()),
        (Some("dead"), Some("after"))
    );
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(wait_exit(&mut child.0, Duration::from_secs(10)).success());
}
