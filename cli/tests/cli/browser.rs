//! The dashboard in a real browser (Debian's chromium, driven through chromedriver): each page against real jobs,
//! a dead letter retried by a click and then run by a worker, a queue paused by a click and its worker taking
//! nothing until it is resumed, counts that move without a reload. Screenshots land in
//! `target/dashboard-screenshots/` (and in `docs/dashboard/`, which README shows, with `RILL_BLESS=1`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::Cli;
use super::dashboard::{Dashboard, free_port, seed};
use super::support::ChildGuard;

/// chromedriver on a free port, killed on drop.
struct Driver {
    _child: ChildGuard,
    url: String,
}

fn driver() -> Driver {
    let port = free_port();
    let binary = std::env::var("RILL_TEST_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{binary}: {e} (install Debian's chromium and chromium-driver, as .ci/run does)")
        });
    let d = Driver {
        _child: ChildGuard(child),
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("RILL_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
            // As root in a container, with no network beyond loopback: no sandbox, nothing fetched in the background.
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())],
        }),
    );
    // The workspace builds rustls with two crypto providers (the library's ring, the driver client's default):
    // pick one for this process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver");
    c.set_window_size(1280, 860).await.unwrap();
    c
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots_dir().join(name), &png).unwrap();
    if std::env::var("RILL_BLESS").is_ok() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), &png).unwrap();
    }
}

/// Runs `act` on the element at `css` (waiting up to 20 s for it). The page refreshes itself: an element found
/// just before a refresh goes stale, so it is found again until `act` succeeds or 20 s pass.
async fn on_element<T, F, Fut>(c: &Client, css: &str, act: F) -> T
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match act(found).await {
            Ok(t) => return t,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    on_element(c, css, |e| async move { e.text().await }).await
}

/// Waits until the element at `css` reads `want` (the page updating itself, or after a click).
async fn until_text(c: &Client, css: &str, want: impl Fn(&str) -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && want(&t)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    on_element(c, css, |e| async move { e.click().await.map(|_| ()) }).await
}

fn worker(cli: &Cli) -> ChildGuard {
    ChildGuard(
        cli.cmd(&[
            "work",
            "mail",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; echo '{\"sent\":true}'",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    )
}

#[test]
fn every_page_renders_and_clicks_retry_a_dead_letter_and_pause_a_queue() {
    let cli = Cli::new();
    seed(&cli);
    cli.ok(&[
        "schedule",
        "add",
        "nightly",
        "mail",
        "--every",
        "1h",
        "--payload",
        "{\"report\":true}",
    ]);
    let d = Dashboard::start(&cli, "127.0.0.1", &[]);
    let drv = driver();
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&drv, profile.path()).await;

        c.goto(&d.url("/")).await.unwrap();
        let row = text(&c, "tr[data-queue=mail]").await;
        assert!(row.contains("mail"), "{row}");
        shot(&c, "overview.png").await;

        // A dead letter, retried by a click: back on the queue, then run by a worker.
        c.goto(&d.url("/queues/mail/dead")).await.unwrap();
        assert!(text(&c, "tr[data-job=doomed]").await.contains("exit 3"));
        shot(&c, "dead-letters.png").await;
        click(&c, "tr[data-job=doomed] button[data-action=retry]").await;
        let flash = text(&c, "p.flash").await;
        assert!(flash.contains("back on the queue"), "{flash}");
        assert_eq!(cli.state("mail", "doomed"), "waiting");
        let mut w = worker(&cli);
        c.goto(&d.url("/jobs/mail/doomed")).await.unwrap();
        // The job page updates itself: no reload here.
        until_text(
            &c,
            "span.state",
            |t| t == "completed",
            "the retried job completes",
        )
        .await;
        shot(&c, "job.png").await;

        // Pause by a click: the worker takes nothing enqueued after that, and the page shows them waiting.
        c.goto(&d.url("/queues/mail")).await.unwrap();
        click(&c, "h1 button[data-action=pause]").await;
        assert!(text(&c, "p.flash").await.contains("pause sent"));
        assert!(text(&c, "h1").await.contains("paused"));
        c.goto(&d.url("/workers")).await.unwrap();
        until_text(
            &c,
            "table.workers tbody",
            |t| t.contains("paused"),
            "the worker says paused",
        )
        .await;
        shot(&c, "workers.png").await;
        for i in 0..3 {
            cli.ok(&["enqueue", "mail", "{}", "--id", &format!("held-{i}")]);
        }
        c.goto(&d.url("/queues/mail")).await.unwrap();
        until_text(
            &c,
            "a.tab.current .count",
            |t| t == "3",
            "three jobs waiting",
        )
        .await;
        std::thread::sleep(Duration::from_secs(2));
        for i in 0..3 {
            assert_eq!(cli.state("mail", &format!("held-{i}")), "waiting");
        }
        shot(&c, "queue-paused.png").await;
        click(&c, "h1 button[data-action=resume]").await;
        // The same page, updating itself, sees them run.
        until_text(
            &c,
            "a.tab.current .count",
            |t| t == "0",
            "the held jobs ran",
        )
        .await;
        for i in 0..3 {
            assert_eq!(cli.state("mail", &format!("held-{i}")), "completed");
        }
        c.goto(&d.url("/queues/mail?state=completed"))
            .await
            .unwrap();
        assert!(text(&c, "table.jobs").await.contains("held-2"));
        shot(&c, "queue.png").await;

        c.goto(&d.url("/queues/mail/signals")).await.unwrap();
        let signals = text(&c, "table.signals").await;
        assert!(
            signals.contains("pause") && signals.contains("resume"),
            "{signals}"
        );
        shot(&c, "signals.png").await;
        c.goto(&d.url("/queues/mail/schedules")).await.unwrap();
        let schedules = text(&c, "table.schedules").await;
        assert!(
            schedules.contains("nightly") && schedules.contains("every 3600s"),
            "{schedules}"
        );
        shot(&c, "schedules.png").await;

        // Search by id from the queue page.
        c.goto(&d.url("/queues/mail")).await.unwrap();
        c.find(Locator::Css("form.search input[name=id]"))
            .await
            .unwrap()
            .send_keys("held-1")
            .await
            .unwrap();
        click(&c, "form.search button").await;
        // The click returns before the job's page has replaced the queue's.
        until_text(&c, "h1", |t| t.contains("held-1"), "the job's page").await;
        c.close().await.unwrap();
        w.stop();
    });
}
