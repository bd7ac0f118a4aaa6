//! The operator's view of the other languages: jobs the Python package produced and the TypeScript package's
//! worker ran, the dead letter that worker wrote for a malformed entry, and the worker itself, all seen through
//! `rill jobs show`, `rill dead list` and `rill workers` (SPEC.md alone joins them).

use std::process::{Command, Stdio};

use super::Cli;
use super::support::ChildGuard;
use super::support::foreign::{python, repo, typescript_package};

#[test]
fn rill_sees_the_packages_jobs_dead_letters_and_workers() {
    let cli = Cli::single();
    let url = cli.redis.url();
    let out = Command::new(python())
        .arg(repo().join("clients/python/tests/interop_driver.py"))
        .args([url.as_str(), cli.ns.as_str(), "emails", "produce"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A foreign producer's malformed entry (a format version no reader knows).
    let keys = rill::keys::QueueKeys::new(&cli.ns, "emails").unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&keys.ready)
        .arg("*")
        .arg("v")
        .arg("9")
        .arg("payload")
        .arg(&b"\xf6"[..])
        .arg("id")
        .arg("from-the-future")
        .query(&mut cli.redis.conn())
        .unwrap();
    // The TypeScript worker runs the four jobs, 400 ms each, while rill looks.
    let mut worker = ChildGuard(
        Command::new("node")
            .arg(format!("{}/test/interop_driver.mjs", typescript_package()))
            .args([url.as_str(), cli.ns.as_str(), "emails", "work", "4", "400"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("the TypeScript worker in `rill workers`", || {
        let w = cli.json(&["workers", "emails"]);
        w.as_array().is_some_and(|w| !w.is_empty())
    });
    let workers = cli.json(&["workers", "emails"]);
    assert_eq!(workers[0]["health"], "healthy", "{workers}");
    assert_eq!(workers[0]["version"], "typescript-0.1.0", "{workers}");
    cli.wait_for("py-named completed", || {
        cli.state("emails", "py-named") == "completed"
    });
    let job = cli.job("emails", "py-named");
    assert_eq!(job["result"]["by"], "typescript", "{job}");
    assert_eq!(job["result"]["n"], 1, "{job}");
    let dead = cli.json(&["dead", "list", "emails"]);
    assert_eq!(dead["dead"][0]["job_id"], "from-the-future", "{dead}");
    assert_eq!(dead["dead"][0]["reason"], "malformed", "{dead}");
    worker.stop();
}
