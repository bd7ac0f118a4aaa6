//! `rill schedule add|list|pause|resume|remove`, with a `rill work` worker firing an interval schedule.

use std::process::Stdio;
use std::time::Duration;

use super::*;
use crate::support::ChildGuard;

#[test]
fn schedules_are_added_listed_fired_paused_and_removed() {
    let cli = Cli::new();
    let added = cli.json(&[
        "schedule",
        "add",
        "nightly",
        "reports",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--payload",
        r#"{"kind":"full"}"#,
        "--missed",
        "all:3",
    ]);
    assert_eq!(added["when"], "cron 0 3 * * * Europe/Berlin", "{added}");
    assert_eq!(
        (added["missed"].as_str(), added["missed_max"].as_u64()),
        (Some("all"), Some(3))
    );
    assert_eq!(added["payload"], serde_json::json!({"kind": "full"}));
    cli.ok(&[
        "schedule",
        "add",
        "tick",
        "reports",
        "--every",
        "1s",
        "--payload",
        "7",
    ]);
    // Bad definitions are refused with the reason.
    let err = cli.fails(
        &["schedule", "add", "bad", "reports", "--cron", "whenever"],
        1,
    );
    assert!(err.contains("cron expression"), "{err}");
    let err = cli.fails(
        &[
            "schedule",
            "add",
            "bad",
            "reports",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Mars/Base",
        ],
        1,
    );
    assert!(err.contains("time zone"), "{err}");
    cli.fails(
        &[
            "schedule", "add", "bad", "reports", "--missed", "all:0", "--every", "1s",
        ],
        2,
    );
    let list = cli.json(&["schedule", "list", "reports"]);
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["nightly", "tick"]);
    // A worker fires `tick` every second; each job gets its payload.
    let mut w = ChildGuard(
        cli.cmd(&["work", "reports", "--", "sh", "-c", "cat >/dev/null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("tick fired twice", || {
        let list = cli.json(&["schedule", "list", "reports"]);
        list["schedules"][1]["fired"].as_u64().unwrap_or(0) >= 2
    });
    let done = cli.json(&["stats", "reports"]);
    assert!(done.to_string().contains("completed"), "{done}");
    cli.ok(&["schedule", "pause", "tick", "reports"]);
    let text = cli.ok(&["schedule", "list", "reports"]);
    assert!(text.contains("paused"), "{text}");
    let fired = |cli: &Cli| {
        cli.json(&["schedule", "list", "reports"])["schedules"][1]["fired"]
            .as_u64()
            .unwrap()
    };
    let before = fired(&cli);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fired(&cli), before, "fired while paused");
    cli.ok(&["schedule", "resume", "tick", "reports"]);
    cli.wait_for("tick fires again", || fired(&cli) > before);
    cli.ok(&["schedule", "remove", "tick", "reports"]);
    cli.fails(&["schedule", "remove", "tick", "reports"], 1);
    sigterm(&w.0);
    assert!(wait_exit(&mut w.0, Duration::from_secs(10)).success());
}
