//! The Prometheus endpoints: `rill work --metrics ADDR` (the worker's jobs and its queue's depth) and
//! `rill metrics --listen ADDR` (depths without a worker), scraped over HTTP as Prometheus would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use super::Cli;
use super::support::ChildGuard;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// GET /metrics: (content type, body), or None while nothing listens yet.
fn scrape(addr: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))?
        .to_owned();
    Some((content_type, body.to_owned()))
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn a_worker_and_a_standalone_exporter_serve_prometheus_metrics() {
    let cli = Cli::new();
    for i in 0..5 {
        cli.ok(&["enqueue", "mq", &i.to_string()]);
    }
    let addr = free_addr();
    let child = cli
        .cmd(&[
            "work",
            "mq",
            "--metrics",
            &addr,
            "--",
            "sh",
            "-c",
            "cat >/dev/null",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut worker = ChildGuard(child);
    let series = "rill_jobs_total{queue=\"mq\",outcome=\"completed\"}";
    cli.wait_for("five jobs counted", || {
        scrape(&addr).is_some_and(|(_, body)| sample(&body, series) == Some(5.0))
    });
    let (content_type, body) = scrape(&addr).unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(
        sample(&body, "rill_job_duration_seconds_count{queue=\"mq\"}"),
        Some(5.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "rill_queue_jobs{queue=\"mq\",state=\"waiting\"}"),
        Some(0.0),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    // A port that is taken: one error at start, no worker without its metrics.
    let taken = cli.fails(&["work", "mq", "--metrics", &addr, "--", "true"], 1);
    assert!(taken.contains("cannot listen there"), "{taken}");
    worker.stop();

    // Without a worker: depths of every queue, found at each scrape.
    cli.ok(&["enqueue", "other", "{}"]);
    let addr = free_addr();
    let child = cli
        .cmd(&["metrics", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut exporter = ChildGuard(child);
    cli.wait_for("the exporter answers", || scrape(&addr).is_some());
    let (_, body) = scrape(&addr).unwrap();
    assert_eq!(
        sample(&body, "rill_queue_jobs{queue=\"other\",state=\"waiting\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "rill_queue_jobs{queue=\"mq\",state=\"waiting\"}"),
        Some(0.0),
        "{body}"
    );
    assert!(
        !body.contains("rill_jobs_total{"),
        "no worker here, no job counts: {body}"
    );
    exporter.stop();
}
