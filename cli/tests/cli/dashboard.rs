//! `rill dashboard` over HTTP: the JSON API against real jobs, the actions and what guards them (CSRF, the token
//! off loopback, read-only), and what a refresh costs Redis.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::Client as Http;
use serde_json::Value as Json;

use super::Cli;
use super::support::ChildGuard;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `rill dashboard` process and its base URL.
pub struct Dashboard {
    child: ChildGuard,
    pub base: String,
}

impl Dashboard {
    /// Starts `rill dashboard --listen HOST:PORT ARGS` and waits until it answers.
    pub fn start(cli: &Cli, host: &str, args: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("{host}:{port}");
        let mut all = vec!["dashboard", "--listen", &listen];
        all.extend_from_slice(args);
        if !args.contains(&"--refresh") {
            all.extend(["--refresh", "1s"]);
        }
        let child = cli
            .cmd(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Dashboard {
            child: ChildGuard(child),
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = http();
        cli.wait_for("the dashboard answers", || {
            http.get(format!("{}/login", d.base)).send().is_ok()
        });
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// An HTTP client that does not follow redirects (the tests look at them).
pub fn http() -> Http {
    Http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn get_json(http: &Http, url: &str) -> Json {
    let r = http.get(url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    r.json().unwrap()
}

/// GETs `path`; the body as text.
fn get_text(http: &Http, d: &Dashboard, path: &str) -> String {
    http.get(d.url(path)).send().unwrap().text().unwrap()
}

/// POSTs `path` with the CSRF `token` header; the JSON answer.
fn post(http: &Http, d: &Dashboard, path: &str, token: &str) -> Json {
    http.post(d.url(path))
        .header("X-CSRF-Token", token)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The CSRF token a page carries.
fn csrf(http: &Http, d: &Dashboard) -> String {
    let page = get_text(http, d, "/");
    let at = page
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta")
        + 27;
    page[at..at + 48].to_owned()
}

fn queue_doc(http: &Http, d: &Dashboard, name: &str) -> Json {
    let doc = get_json(http, &d.url("/api/queues"));
    doc["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("queue {name} not in {doc}"))
}

/// A queue `mail` with two waiting jobs (one with an id that needs escaping in a URL) and one dead letter.
pub fn seed(cli: &Cli) {
    cli.ok(&[
        "enqueue",
        "mail",
        r#"{"to":"dead@example.com"}"#,
        "--id",
        "doomed",
        "--attempts",
        "1",
    ]);
    let mut worker = ChildGuard(
        cli.cmd(&["work", "mail", "--", "sh", "-c", "exit 3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("the job is dead", || cli.state("mail", "doomed") == "dead");
    worker.stop();
    cli.ok(&[
        "enqueue",
        "mail",
        r#"{"to":"a@example.com"}"#,
        "--id",
        "order/7#x",
    ]);
    cli.ok(&["enqueue", "mail", r#"{"to":"b@example.com"}"#]);
}

#[test]
fn the_api_shows_queues_jobs_and_workers_and_runs_actions_behind_csrf() {
    let cli = Cli::new();
    seed(&cli);
    let d = Dashboard::start(&cli, "127.0.0.1", &[]);
    let http = http();

    let q = queue_doc(&http, &d, "mail");
    assert_eq!(
        (q["waiting"].as_u64(), q["dead"].as_u64()),
        (Some(2), Some(1)),
        "{q}"
    );
    assert_eq!(q["paused"], false);
    assert_eq!(q["last_hour"]["completed"].as_array().unwrap().len(), 60);

    let page = get_json(&http, &d.url("/api/queues/mail/jobs?state=waiting"));
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "order/7#x");
    assert!(page["limits"]["rate"].is_null() && page["limits"]["concurrency"].is_null());
    cli.ok(&[
        "queue",
        "limit",
        "mail",
        "--rate",
        "10/s",
        "--concurrency",
        "3",
    ]);
    cli.ok(&["queue", "priorities", "mail", "--weights", "3,1"]);
    cli.ok(&["queue", "lease", "mail", "45s"]);
    let limited = get_json(&http, &d.url("/api/queues/mail/jobs"));
    assert_eq!(
        (
            limited["limits"]["priority_levels"].as_u64(),
            limited["limits"]["lease_ms"].as_u64()
        ),
        (Some(2), Some(45_000))
    );
    assert_eq!(
        (
            limited["limits"]["rate"]["max"].as_u64(),
            limited["limits"]["concurrency"].as_u64()
        ),
        (Some(10), Some(3))
    );
    let html = get_text(&http, &d, "/queues/mail");
    assert!(
        html.contains("at most 10 starts per 1s; at most 3 running at once"),
        "{html}"
    );
    assert!(
        html.contains("Priority levels: 0 to 1, weighted 3:1") && html.contains("Lease: 45s"),
        "{html}"
    );
    cli.ok(&["queue", "priorities", "mail", "--levels", "1"]);
    cli.ok(&["queue", "limit", "mail", "--clear"]);
    let dead = get_json(&http, &d.url("/api/queues/mail/jobs?state=dead"));
    assert_eq!(dead["jobs"][0]["id"], "doomed");
    let letters = get_json(&http, &d.url("/api/queues/mail/dead"));
    assert_eq!(letters["total"], 1);
    assert_eq!(letters["dead"][0]["payload"]["to"], "dead@example.com");

    let job = get_json(&http, &d.url("/api/jobs/mail/order%2F7%23x"));
    assert_eq!(
        (job["state"].as_str(), job["payload"]["to"].as_str()),
        (Some("waiting"), Some("a@example.com"))
    );
    let doomed = get_json(&http, &d.url("/api/jobs/mail/doomed"));
    assert_eq!(doomed["state"], "dead");
    assert!(
        doomed["last_error"].as_str().unwrap().contains("exit 3"),
        "{doomed}"
    );
    assert!(
        doomed["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "dead"),
        "{doomed}"
    );

    // What is not there says so, as JSON.
    for (path, status) in [
        ("/api/jobs/mail/nope", StatusCode::NOT_FOUND),
        ("/api/queues/nope/jobs", StatusCode::NOT_FOUND),
        ("/api/queues/mail/jobs?state=bogus", StatusCode::BAD_REQUEST),
        ("/api/queues/bad%20name/jobs", StatusCode::BAD_REQUEST),
    ] {
        let r = http.get(d.url(path)).send().unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: Json = r.json().unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    let page = http.get(d.url("/jobs/mail/nope")).send().unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);

    // Actions need the CSRF token (or the bearer token, which this dashboard has none of).
    let retry = d.url("/api/jobs/mail/doomed/retry");
    assert_eq!(
        http.post(&retry).send().unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let r = http
        .post(&retry)
        .header("X-CSRF-Token", "0".repeat(48))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let token = csrf(&http, &d);
    let r = post(&http, &d, "/api/jobs/mail/doomed/retry", &token);
    assert_eq!(r["outcome"], "requeued", "{r}");
    assert_eq!(cli.state("mail", "doomed"), "waiting");

    // A page's form: the token as a field, answered with a redirect back saying what was done.
    let r = http
        .post(d.url("/api/queues/mail/pause"))
        .form(&[("csrf", token.as_str()), ("back", "/queues/mail")])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(
        to.starts_with("/queues/mail?done=mail%3A%20pause%20sent"),
        "{to}"
    );
    assert_eq!(queue_doc(&http, &d, "mail")["paused"], true);
    let r = http
        .post(d.url("/api/queues/mail/resume"))
        .form(&[("csrf", token.as_str()), ("back", "https://evil.example/")])
        .send()
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/?done=")
    );
    assert_eq!(queue_doc(&http, &d, "mail")["paused"], false);
    let r = http
        .post(d.url("/api/queues/mail/explode"))
        .header("X-CSRF-Token", &token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Delete, cancel, and the dead letters' retry all and purge.
    let r = post(&http, &d, "/api/jobs/mail/order%2F7%23x/cancel", &token);
    assert_eq!(r["outcome"], "removed", "{r}");
    let r = post(&http, &d, "/api/jobs/mail/doomed/delete", &token);
    assert_eq!(r["outcome"], "deleted", "{r}");
    let r = post(&http, &d, "/api/queues/mail/dead/purge", &token);
    assert_eq!(r["purged"], 0, "{r}");

    // Workers: a running one is listed with its health.
    let mut worker = ChildGuard(
        cli.cmd(&["work", "mail", "--", "sh", "-c", "sleep 30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cli.wait_for("the worker is listed", || {
        let w = get_json(&http, &d.url("/api/workers"));
        w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["queue"] == "mail" && w["health"] == "healthy")
    });
    // A running job's page names the worker running it, from the registry.
    cli.ok(&["enqueue", "mail", "{}", "--id", "slow"]);
    cli.wait_for("the job runs", || cli.state("mail", "slow") == "active");
    let slow = get_json(&http, &d.url("/api/jobs/mail/slow"));
    assert_eq!(slow["owner"]["worker"], slow["worker"]["id"], "{slow}");
    assert_eq!(slow["worker"]["health"], "healthy", "{slow}");
    let page = get_text(&http, &d, "/jobs/mail/slow");
    assert!(
        page.contains("Running on") && page.contains("healthy"),
        "{page}"
    );
    worker.stop();
    // The same process serves Prometheus text.
    let metrics = get_text(&http, &d, "/metrics");
    assert!(
        metrics.contains("rill_queue_jobs{queue=\"mail\",state=\"waiting\"}"),
        "{metrics}"
    );
}

#[test]
fn off_loopback_a_token_is_required_and_read_only_refuses_every_action() {
    let cli = Cli::new();
    cli.ok(&["enqueue", "mail", "{}", "--id", "j1"]);
    let port = free_port().to_string();
    let err = cli.fails(&["dashboard", "--listen", &format!("0.0.0.0:{port}")], 1);
    assert!(err.contains("--token"), "{err}");

    let mut d = Dashboard::start(&cli, "0.0.0.0", &["--token", "s3cret"]);
    let http = http();
    let api = d.url("/api/queues");
    assert_eq!(
        http.get(&api).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&api).bearer_auth("wrong").send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&api)
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(d.url("/metrics")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A browser is sent to sign in, and comes back to where it was going.
    let r = http.get(d.url("/queues/mail")).send().unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fqueues%2Fmail");
    let r = http
        .post(d.url("/login"))
        .form(&[("token", "wrong"), ("next", "/queues/mail")])
        .send()
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("failed=1")
    );
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(d.url("/login"))
        .form(&[("token", "s3cret"), ("next", "/queues/mail")])
        .send()
        .unwrap();
    assert_eq!(r.headers()["location"], "/queues/mail");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(!session.contains("s3cret"), "the cookie is not the token");
    let r = http
        .get(d.url("/queues/mail"))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Signed in is not enough to act: a page's CSRF token is, or the bearer token.
    let cancel = d.url("/api/jobs/mail/j1/cancel");
    let r = http
        .post(&cancel)
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r: Json = http
        .post(&cancel)
        .bearer_auth("s3cret")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["outcome"], "removed", "{r}");
    d.stop();

    cli.ok(&["enqueue", "mail", "{}", "--id", "j2"]);
    let d = Dashboard::start(&cli, "127.0.0.1", &["--read-only"]);
    let page = get_text(&http, &d, "/jobs/mail/j2");
    assert!(
        page.contains("j2") && !page.contains("method=\"post\""),
        "{page}"
    );
    let token = csrf(&http, &d);
    let r = http
        .post(d.url("/api/jobs/mail/j2/cancel"))
        .header("X-CSRF-Token", &token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(cli.state("mail", "j2"), "waiting");
}

fn commandstats(cli: &Cli) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut cli.redis.conn())
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Writes since the last save (INFO persistence): every write command adds to it.
fn changes(cli: &Cli) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut cli.redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rdb_changes_since_last_save")
}

#[test]
fn a_refresh_reads_a_bounded_amount_and_writes_nothing() {
    let cli = Cli::single();
    let file = cli.redis.dir().join("jobs.jsonl");
    std::fs::write(&file, "{\"n\":1}\n".repeat(20_000)).unwrap();
    for q in ["a", "b", "c"] {
        cli.ok(&["enqueue", q, "--file", file.to_str().unwrap()]);
    }
    seed(&cli);
    let d = Dashboard::start(&cli, "127.0.0.1", &["--refresh", "0s"]);
    let http = http();
    // Past the first pass of the charts' reader.
    std::thread::sleep(Duration::from_millis(500));
    let pages = [
        "/",
        "/queues/a",
        "/queues/a?state=dead",
        "/jobs/mail/doomed",
        "/queues/mail/dead",
        "/workers",
        "/api/queues",
    ];
    let dirty_before = changes(&cli);
    let before = commandstats(&cli);
    let rounds = 5;
    for _ in 0..rounds {
        for p in pages {
            assert_eq!(
                http.get(d.url(p)).send().unwrap().status(),
                StatusCode::OK,
                "{p}"
            );
        }
    }
    let after = commandstats(&cli);
    let dirty_after = changes(&cli);
    let mut grew: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, n)| *n > 0 && k != "info")
        .collect();
    grew.sort();
    for cmd in ["scan", "keys", "xadd", "del", "unlink", "hset", "xack"] {
        assert!(
            !after.contains_key(cmd) || after[cmd] == before.get(cmd).copied().unwrap_or(0),
            "a refresh ran {cmd}: {grew:?}"
        );
    }
    // Nothing written at all: Redis's count of changes since the last save stayed put.
    assert_eq!(dirty_after, dirty_before, "a refresh wrote: {grew:?}");
    let total: u64 = grew.iter().map(|(_, n)| n).sum();
    let per_page = total as f64 / (rounds * pages.len()) as f64;
    eprintln!(
        "dashboard: {per_page:.1} Redis calls per page view (4 queues, 60,000 waiting jobs): {grew:?}"
    );
    assert!(per_page < 40.0, "{per_page} calls per page: {grew:?}");
}
