//! The `rill` command on a Redis Cluster (`--redis redis+cluster://...`): enqueue and wait, work, stats, jobs,
//! schedules and queue removal, with the same arguments as on one server.

use std::process::Stdio;
use std::time::Duration;

use super::support::ChildGuard;
use super::support::cluster::TestCluster;
use super::{Cli, sigterm, wait_exit};

#[test]
fn every_kind_of_subcommand_works_on_a_cluster() {
    let mut cli = Cli::new();
    cli.cluster = Some(TestCluster::start(3));
    let mut w = ChildGuard(
        cli.cmd(&[
            "work",
            "mail",
            "--",
            "sh",
            "-c",
            r#"cat >/dev/null; echo '{"sent":true}'"#,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let done = cli.json(&[
        "enqueue",
        "mail",
        r#"{"to":"ada"}"#,
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(done["outcome"], "completed", "{done}");
    assert_eq!(done["result"], serde_json::json!({"sent": true}), "{done}");
    cli.ok(&["enqueue", "other", "{}"]);
    let stats = cli.json(&["stats"]);
    let text = stats.to_string();
    assert!(text.contains("mail") && text.contains("other"), "{text}");
    cli.ok(&["schedule", "add", "tick", "mail", "--every", "1s"]);
    let list = cli.json(&["schedule", "list", "mail"]).to_string();
    assert!(list.contains("tick"), "{list}");
    cli.ok(&["schedule", "pause", "tick", "mail"]);
    cli.ok(&["schedule", "remove", "tick", "mail"]);
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
    cli.ok(&["queue", "remove", "other", "--yes"]);
    let stats = cli.json(&["stats"]).to_string();
    assert!(!stats.contains("other"), "{stats}");
}

#[test]
fn a_partitioned_queue_is_created_worked_and_inspected_by_its_name() {
    let mut cli = Cli::new();
    cli.cluster = Some(TestCluster::start(3));
    let created = cli.json(&["queue", "create", "orders", "--partitions", "3"]);
    assert_eq!(created["partitions"], 3, "{created}");
    let mut w = ChildGuard(
        cli.cmd(&[
            "work",
            "orders",
            "--",
            "sh",
            "-c",
            r#"cat >/dev/null; echo '{"ok":1}'"#,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    for n in 0..6 {
        let done = cli.json(&[
            "enqueue",
            "orders",
            &format!(r#"{{"n":{n}}}"#),
            "--wait",
            "--timeout",
            "20s",
        ]);
        assert_eq!(done["outcome"], "completed", "{done}");
        let id = done["id"].as_str().unwrap().to_owned();
        let job = cli
            .json(&["jobs", "show", &id, "--queue", "orders"])
            .to_string();
        assert!(job.contains("completed"), "{job}");
    }
    let stats = cli.json(&["stats"]).to_string();
    assert!(stats.contains("orders") && !stats.contains('~'), "{stats}");
    // Listings and events span the partitions.
    let listed = cli
        .json(&["jobs", "list", "orders", "--state", "completed"])
        .to_string();
    assert!(listed.contains("\"id\""), "{listed}");
    let events = cli.ok(&["events", "tail", "orders", "-n", "20", "--no-follow"]);
    assert!(events.contains("completed"), "{events}");
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
    cli.ok(&["queue", "remove", "orders", "--yes"]);
    let stats = cli.json(&["stats"]).to_string();
    assert!(!stats.contains("orders"), "{stats}");
}
