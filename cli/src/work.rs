//! `rill work QUEUE -- CMD [ARGS...]`: a worker in any language. Each job runs CMD once, in its own process
//! group, with the payload as JSON on stdin and `RILL_JOB_ID`, `RILL_ATTEMPT`, `RILL_MAX_ATTEMPTS`, `RILL_QUEUE`
//! in the environment. Exit 0 completes the job (stdout, if any, is its result: JSON if it parses, else text);
//! exit 75 asks for a retry; any other exit fails the attempt (retried with backoff, dead-lettered once out of
//! attempts, with stderr's tail as the error). A cancel signal for the job, or a shutdown that outlasts
//! `--shutdown-timeout`, terminates the process group (SIGTERM, then SIGKILL after `--kill-after`); whatever the
//! job left running in its group is killed when the job ends. A second SIGINT/SIGTERM terminates running jobs at
//! once and hands them back (their attempt not counted).

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::context::{Context, Json};
use crate::output;

pub const AFTER_HELP: &str = "Exit codes of CMD:\n  0      completed (stdout, if any, is the \
result: JSON if it parses, else text)\n  75     retry (EX_TEMPFAIL)\n  other  failed: retried with backoff, then \
dead-lettered with the tail of stderr\n\nExamples:\n  rill work emails -- ./send-email.sh\n  rill work images \
--concurrency 8 -- python3 resize.py\n  rill work emails -- sh -c 'jq -r .to | xargs ./notify'";

/// How much of stderr is kept as a failure's error text.
const STDERR_TAIL: usize = 2048;

#[derive(Args, Debug)]
pub struct WorkArgs {
    /// Queue name.
    queue: String,
    /// Jobs (processes) run at once.
    #[arg(long, short, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Most jobs taken beyond --concurrency to wait here for a free slot; fewer when jobs run long (what is
    /// expected to start within 100 ms), none for jobs of a second or more. 0 = off.
    #[arg(long, default_value_t = rill::DEFAULT_PREFETCH as u64, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    prefetch: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics: this worker's jobs by outcome, handler duration and wait,
    /// lease renewal failures, Redis call times, and the queue's depth.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Lease of a job: renewed while CMD runs; if this worker dies, another takes the job after it.
    #[arg(long, default_value = "30s", value_parser = crate::parse_lease)]
    lease: Duration,
    /// Attempts for jobs that do not set their own.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
    /// Longest run of one job; past it the process is terminated and the attempt fails.
    #[arg(long, value_parser = crate::parse_duration)]
    timeout: Option<Duration>,
    /// On SIGINT/SIGTERM: how long running jobs may finish before they are terminated and handed back (a second
    /// signal does it at once).
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    shutdown_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a job's process is terminated.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    kill_after: Duration,
    /// The command run for each job, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
    /// Largest stdout kept as a completed job's result; longer output is cut to this many bytes (with a note of
    /// how much was cut). 0 keeps no result.
    #[arg(long, default_value_t = 65_536)]
    result_max_bytes: usize,
    /// How long a completed job's result (and record) is kept.
    #[arg(long, default_value = "24h", value_parser = crate::parse_duration)]
    retention: Duration,
}

struct Spec {
    program: String,
    args: Vec<String>,
    queue: String,
    timeout: Option<Duration>,
    kill_after: Duration,
    result_max_bytes: usize,
    /// Fires on a second SIGINT/SIGTERM: running jobs are terminated and handed back at once.
    force: CancellationToken,
}

pub async fn run(ctx: &Context, a: WorkArgs) -> anyhow::Result<ExitCode> {
    // clap requires CMD; this says so again should that ever change.
    let (program, args) = a
        .command
        .split_first()
        .context("no command given: rill work QUEUE -- CMD [ARGS...]")?;
    if !is_runnable(program) {
        bail!("command not found or not executable: {program}");
    }
    ctx.connect().await?;
    let spec = Arc::new(Spec {
        program: program.clone(),
        args: args.to_vec(),
        queue: a.queue.clone(),
        timeout: a.timeout,
        kill_after: a.kill_after,
        result_max_bytes: a.result_max_bytes,
        force: CancellationToken::new(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(watch_signals(stop_tx, spec.force.clone()));
    let worker = rill::Worker::new(ctx.client.clone(), &a.queue)?
        .concurrency(a.concurrency as usize)
        .prefetch(a.prefetch as usize)
        .lease(a.lease)
        .max_attempts(a.attempts)
        .shutdown_timeout(a.shutdown_timeout)
        .retention(a.retention)
        .metadata("command", a.command.join(" "))
        .capability("exec");
    // Bound before the worker starts, so a taken port is one error at start, not a worker without metrics.
    let (worker, _exporter) = match a.metrics {
        Some(addr) => {
            let metrics = rill::metrics::Metrics::new();
            let scope = crate::metrics::Scope::Queues(vec![ctx.queue(&a.queue)?]);
            let server = crate::metrics::serve(addr, metrics.clone(), scope).await?;
            eprintln!("rill work: metrics at http://{addr}/metrics");
            (
                worker.metrics(&metrics),
                Some(tokio_util::task::AbortOnDropHandle::new(server)),
            )
        }
        None => (worker, None),
    };
    let consumer = worker.consumer().to_owned();
    eprintln!(
        "rill work: queue {} on {}, {} at once, worker {consumer}; running: {} (Ctrl-C to stop)",
        a.queue,
        ctx.url,
        a.concurrency,
        a.command.join(" ")
    );
    let report = worker
        .run(
            move |job: rill::Job<ciborium::Value>| {
                let spec = spec.clone();
                async move { run_job(&spec, job).await }
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await;
    signals.abort();
    let report = report?;
    if ctx.json {
        output::print_json(&json!({
            "worker": consumer,
            "completed": report.completed,
            "retried": report.retried,
            "dead": report.dead,
            "cancelled": report.cancelled,
            "released": report.released,
        }));
    } else {
        eprintln!(
            "rill work: stopped; {} completed, {} retried, {} dead-lettered, {} cancelled, {} handed back",
            report.completed, report.retried, report.dead, report.cancelled, report.released
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT/SIGTERM starts a graceful shutdown (`stop`); a second one fires `force`.
async fn watch_signals(stop: tokio::sync::oneshot::Sender<()>, force: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("rill work: cannot listen for SIGINT/SIGTERM; stop it with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "rill work: shutting down: taking no new jobs, waiting for running ones (again to terminate them and hand \
         them back)"
    );
    let _ = stop.send(());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("rill work: terminating running jobs and handing them back");
    force.cancel();
}

fn is_runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

/// How a job's process ended.
enum End {
    Exited(std::process::ExitStatus),
    Cancelled,
    TimedOut,
    /// Terminated by a second shutdown signal.
    Stopped,
}

async fn run_job(spec: &Spec, job: rill::Job<ciborium::Value>) -> rill::JobResult<Option<Json>> {
    // A payload JSON cannot hold exactly (bytes, NaN, bignums, tags) fails for good with the reason: a process
    // fed an approximation would do the wrong thing quietly.
    let input = output::exact_json(job.data().clone())
        .map_err(|why| {
            rill::JobError::permanent(format!(
                "the payload cannot be passed to the process as JSON: {why} (rill work hands jobs over as JSON; \
                 enqueue JSON-shaped payloads, or work this queue with a CBOR-aware worker)"
            ))
        })?
        .to_string();
    let mut child = tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .env("RILL_JOB_ID", job.id())
        .env("RILL_ATTEMPT", job.attempt().to_string())
        .env("RILL_MAX_ATTEMPTS", job.max_attempts().to_string())
        .env("RILL_QUEUE", &spec.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches rill (which shuts down gracefully), not the jobs,
        // and terminating a job reaches every process it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| rill::JobError::retry(format!("cannot start {}: {e}", spec.program)))?;
    let pid = child.id();
    // Whatever happens to this handler (it returns, or the worker drops it at the shutdown deadline), nothing the
    // job started outlives it.
    let group = pid.map(ProcessGroup);
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(s) = stdin.as_mut() {
            // A command that ignores its input closes the pipe early; that is not an error.
            let _ = s.write_all(input.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    };
    let read_out = async move {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    // The job's own limit (its worker also fires its token then) or --timeout.
    let limit = job.timeout().or(spec.timeout);
    let supervise = async {
        let timeout = async {
            match limit {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            status = child.wait() => status.map(End::Exited),
            _ = job.cancelled().cancelled() => Ok(End::Cancelled),
            _ = spec.force.cancelled() => Ok(End::Stopped),
            _ = timeout => Ok(End::TimedOut),
        };
        if matches!(end, Ok(End::Exited(_))) {
            // The job is over: background processes it left would hold its pipes open (and outlive it).
            if let Some(g) = &group {
                g.kill();
            }
        } else {
            terminate(pid, &mut child, spec.kill_after).await;
        }
        end
    };
    let ((), end, out, err) = tokio::join!(feed, supervise, read_out, read_err);
    let end =
        end.map_err(|e| rill::JobError::retry(format!("waiting for {}: {e}", spec.program)))?;
    let tail = stderr_tail(&err);
    match end {
        End::Cancelled => Err(rill::JobError::interrupted("cancelled: process terminated")),
        End::Stopped => Err(rill::JobError::interrupted(
            "worker stopped: process terminated",
        )),
        End::TimedOut => Err(rill::JobError::retry(format!(
            "timed out after {}: {tail}",
            output::age(limit.unwrap_or_default())
        ))),
        End::Exited(status) => match status.code() {
            Some(0) => Ok(result_of(&out, spec.result_max_bytes)),
            Some(75) => Err(rill::JobError::retry(format!("exit 75 (retry): {tail}"))),
            Some(code) => Err(rill::JobError::retry(format!("exit {code}: {tail}"))),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Err(rill::JobError::retry(format!(
                    "killed by signal {}: {tail}",
                    status.signal().unwrap_or(0)
                )))
            }
        },
    }
}

/// A job's process group, SIGKILLed on drop (processes the job left behind; a no-op once all have exited).
struct ProcessGroup(u32);

impl ProcessGroup {
    fn kill(&self) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe { libc::kill(-(self.0 as libc::pid_t), libc::SIGKILL) };
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGTERM to the job's process group, SIGKILL if it outlives `grace`.
async fn terminate(pid: Option<u32>, child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = pid else { return };
    let group = -(pid as libc::pid_t);
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
    unsafe { libc::kill(group, libc::SIGTERM) };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}

/// Stdout as the job's result: nothing (or `max` 0) → no result; JSON → that value; anything else → the text.
/// Output over `max` bytes is cut to `max` and kept as text with a note of how much was cut.
fn result_of(stdout: &[u8], max: usize) -> Option<Json> {
    if max == 0 {
        return None;
    }
    if stdout.len() > max {
        let kept = String::from_utf8_lossy(&stdout[..max]);
        return Some(Json::String(format!(
            "{kept}… [{} more bytes cut; see --result-max-bytes]",
            stdout.len() - max
        )));
    }
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned())))
}

fn stderr_tail(err: &[u8]) -> String {
    let start = err.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&err[start..]);
    let text = text.trim();
    if text.is_empty() {
        "(no stderr)".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_becomes_the_result() {
        assert_eq!(result_of(b"", 100), None);
        assert_eq!(result_of(b"  \n", 100), None);
        assert_eq!(
            result_of(b"{\"ok\":true}\n", 100),
            Some(json!({"ok": true}))
        );
        assert_eq!(result_of(b"done\n", 100), Some(json!("done")));
        assert_eq!(result_of(b"done\n", 0), None, "0 keeps no result");
        assert_eq!(
            result_of(b"0123456789", 4),
            Some(json!("0123… [6 more bytes cut; see --result-max-bytes]"))
        );
    }

    #[test]
    fn stderr_keeps_its_tail() {
        assert_eq!(stderr_tail(b""), "(no stderr)");
        let long = "x".repeat(5000) + "the end";
        assert!(stderr_tail(long.as_bytes()).ends_with("the end"));
        assert_eq!(stderr_tail(long.as_bytes()).len(), STDERR_TAIL);
    }

    #[test]
    fn commands_are_found_on_path() {
        assert!(is_runnable("sh"));
        assert!(is_runnable("/bin/sh"));
        assert!(!is_runnable("no-such-command-rill"));
    }
}
