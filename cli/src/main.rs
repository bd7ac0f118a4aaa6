//! `rill`: operate rill queues and run workers in any language from the terminal.
//!
//! One module per subcommand (`enqueue`, `work`, `stats`, `top`, `jobs`, `dead`, `workers`, `signal`,
//! `events`, `metrics`, `dashboard`, `bench`, `demo`); `context` opens the connection and turns Redis failures into advice, `output`
//! prints tables, JSON and CBOR payloads.

mod bench;
mod context;
mod dashboard;
mod dead;
mod demo;
mod enqueue;
mod events;
mod jobs;
mod metrics;
mod output;
mod queue;
mod raw;
mod schedule;
mod signal;
mod stats;
mod top;
mod work;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use context::Context;

/// Operate rill job queues on Redis Streams, and run a worker for any command.
#[derive(Parser, Debug)]
#[command(name = "rill", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  rill enqueue emails '{\"to\":\"a@example.com\"}'\n  rill work emails \
                        -- ./send-email.sh\n  rill stats\n  rill top"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone)]
struct Global {
    /// Redis to use: redis://host:6379, rediss://host:6380 (TLS: see --tls-*), redis+unix:///path,
    /// redis+sentinel://host:26379,host2:26379/SERVICE (the primary Sentinels name),
    /// redis+cluster://host:7000,host2:7001 (a Redis Cluster, by any of its nodes), or host:port.
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        help_heading = "Global options"
    )]
    redis: String,
    /// Key namespace (the first key segment), for several deployments on one Redis.
    #[arg(
        long,
        env = "RILL_NAMESPACE",
        default_value = "rill",
        global = true,
        help_heading = "Global options"
    )]
    namespace: String,
    /// Print data as JSON (one document, or one object per line for streams of events).
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Run even if Redis may evict keys under memory pressure (a maxmemory-policy other than noeviction), which
    /// loses jobs silently. Without it, rill refuses such a Redis.
    #[arg(
        long,
        env = "RILL_ALLOW_EVICTION",
        global = true,
        help_heading = "Global options"
    )]
    allow_eviction: bool,
    /// For rediss:// URLs: PEM file of the certificate authority to trust instead of the system's roots.
    #[arg(
        long,
        env = "RILL_TLS_CA",
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    tls_ca: Option<std::path::PathBuf>,
    /// For rediss:// URLs: PEM client certificate, for servers that authenticate clients (with --tls-key).
    #[arg(
        long,
        env = "RILL_TLS_CERT",
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// For rediss:// URLs: PEM private key of --tls-cert.
    #[arg(
        long,
        env = "RILL_TLS_KEY",
        global = true,
        help_heading = "Global options",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    /// For rediss:// URLs: accept any server certificate and host name (test servers only: anyone on the path
    /// can read and change the traffic).
    #[arg(long, global = true, help_heading = "Global options")]
    tls_insecure: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Add jobs: one from the command line, or one per line of a file or stdin.
    #[command(
        after_help = "Examples:\n  rill enqueue emails '{\"to\":\"a@example.com\"}'\n  rill enqueue emails \
                            '{\"to\":\"b@example.com\"}' --id welcome-b --delay 30s --attempts 3\n  rill enqueue \
                            emails --file jobs.jsonl"
    )]
    Enqueue(enqueue::EnqueueArgs),
    /// Run a worker that runs a command once per job (payload as JSON on stdin).
    #[command(after_help = work::AFTER_HELP)]
    Work(work::WorkArgs),
    /// Per queue: waiting, delayed, active, dead, rates, oldest waiting job.
    #[command(after_help = "Examples:\n  rill stats\n  rill stats emails --json")]
    Stats(stats::StatsArgs),
    /// A live view of queues and workers (q to quit).
    #[command(
        after_help = "Examples:\n  rill top\n  rill top --interval 500ms\n  rill top --once   # one \
                            frame as text"
    )]
    Top(top::TopArgs),
    /// List jobs by state; show, cancel, promote or delete one.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill jobs list emails --state failed\n  rill jobs show order-42\n  rill jobs promote order-42\n  rill jobs delete order-42"
    )]
    Jobs(jobs::JobsCommand),
    /// Pause, resume, drain or remove a queue.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill queue pause emails\n  rill queue drain emails --yes\n  rill queue remove emails"
    )]
    Queue(queue::QueueCommand),
    /// Cron and interval schedules: add, list, pause, resume, remove.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill schedule add nightly-report reports --cron '0 3 * * *' --tz Europe/Berlin\n  rill schedule list reports\n  rill schedule pause nightly-report reports"
    )]
    Schedule(schedule::ScheduleCommand),
    /// List, retry or purge dead letters.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill dead list emails\n  rill dead retry emails --all\n  rill dead purge emails --older-than 7d"
    )]
    Dead(dead::DeadCommand),
    /// Registered workers, with their health.
    #[command(after_help = "Examples:\n  rill workers\n  rill workers emails --json")]
    Workers(workers::WorkersArgs),
    /// Send signals (cancel, pause, resume, quiet, stop, custom) and read their history.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill signal send emails quiet\n  rill signal history emails"
    )]
    Signal(signal::SignalCommand),
    /// Serve Prometheus metrics of queue depths (workers serve their own with `rill work --metrics`).
    #[command(
        after_help = "Examples:\n  rill metrics\n  rill metrics --listen 0.0.0.0:9464 emails images\n\nSeries: rill_queue_jobs{queue,state}, rill_queue_oldest_waiting_seconds{queue}; with a worker also\nrill_jobs_total{queue,outcome}, rill_job_duration_seconds, rill_job_wait_seconds, rill_lease_renewal_failures_total,\nrill_redis_call_seconds{queue,call}."
    )]
    Metrics(metrics::MetricsArgs),
    /// Serve a web dashboard of queues, jobs and workers (pages and a JSON API).
    #[command(after_help = dashboard::AFTER_HELP)]
    Dashboard(dashboard::DashboardArgs),
    /// Follow a queue's lifecycle events.
    #[command(
        subcommand,
        after_help = "Examples:\n  rill events tail emails\n  rill events tail emails -n 20 --no-follow --json"
    )]
    Events(events::EventsCommand),
    /// Measure throughput against this Redis: raw Redis ceiling, then rill.
    #[command(
        after_help = "Examples:\n  rill bench\n  rill bench --jobs 50000 --concurrency 64 --json\n  rill bench --concurrency 1 --prefetch 0"
    )]
    Bench(bench::BenchArgs),
    /// Run a producer and a worker on sample jobs (starts a throwaway redis-server if none answers).
    #[command(
        after_help = "Examples:\n  rill demo\n  rill demo --jobs 2000\n  rill demo --redis redis://10.0.0.5:6379"
    )]
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Examples:\n  rill completions bash > /etc/bash_completion.d/rill\n  rill completions zsh > \"${fpath[1]}/_rill\"\n  rill completions fish > ~/.config/fish/completions/rill.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses `30s`, `1m 30s`, `500ms`, `2h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 1m 30s, 500ms, 2h)"))
}

/// Parses a lease: at least 100 ms (it is renewed every third of it).
pub(crate) fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!(
            "a lease must be at least 100ms (it is renewed every third of it); got {s}"
        ));
    }
    Ok(d)
}

/// Prints a command-line error, with a tip when a worker command came without the `--` that must precede it.
fn usage_error(e: clap::Error) -> ! {
    let worker_without_dashes = e.kind() == clap::error::ErrorKind::UnknownArgument
        && std::env::args().any(|a| a == "work")
        && !std::env::args().any(|a| a == "--");
    if worker_without_dashes {
        let _ = e.print();
        eprintln!("\ntip: put `--` before the worker command: rill work QUEUE -- CMD [ARGS...]");
        std::process::exit(2);
    }
    e.exit()
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| usage_error(e));
    // `rill demo` starts a throwaway Redis only when the user named none.
    let redis_named = matches.value_source("redis") != Some(ValueSource::DefaultValue);
    let namespace_named = matches.value_source("namespace") == Some(ValueSource::CommandLine);
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cli.global.redis = context::with_scheme(&cli.global.redis);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal, and never under NO_COLOR (https://no-color.org): log files get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if namespace_named && matches!(cli.command, Command::Demo(_)) {
        eprintln!(
            "note: rill demo ignores --namespace: it works in a namespace of its own, rill-demo-<pid>, which it removes at the end"
        );
    }
    match runtime.block_on(run(cli, redis_named)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, redis_named: bool) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    // Views for a person only: refuse `--json` rather than print text where JSON was asked for.
    let text_only = match &cli.command {
        Command::Top(_) => Some(
            "`rill top` is a live view and prints no JSON; `rill stats --json` and `rill workers --json` give its data",
        ),
        Command::Metrics(_) => Some(
            "`rill metrics` serves Prometheus text; `rill stats --json` gives queue counts as JSON",
        ),
        Command::Dashboard(_) => {
            Some("`rill dashboard` serves pages; its JSON is under /api (see README)")
        }
        Command::Completions { .. } => Some("`rill completions` prints a shell script"),
        Command::Demo(_) => Some(
            "`rill demo` is a walk-through and prints no JSON; `rill bench --json` measures throughput as JSON",
        ),
        _ => None,
    };
    if let (true, Some(why)) = (g.json, text_only) {
        anyhow::bail!("{why}");
    }
    if let Command::Completions { shell } = cli.command {
        // Into a buffer first: the generator panics on a write error, and `| head` closes the pipe early.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "rill", &mut script);
        let written = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    let ctx = Context::new(&g)?;
    match cli.command {
        Command::Enqueue(a) => enqueue::run(&ctx, a).await,
        Command::Work(a) => work::run(&ctx, a).await,
        Command::Stats(a) => stats::run(&ctx, a).await,
        Command::Top(a) => top::run(&ctx, a).await,
        Command::Jobs(c) => jobs::run(&ctx, c).await,
        Command::Queue(c) => queue::run(&ctx, c).await,
        Command::Metrics(a) => metrics::run(&ctx, a).await,
        Command::Dashboard(a) => dashboard::run(&ctx, a).await,
        Command::Dead(c) => dead::run(&ctx, c).await,
        Command::Schedule(c) => schedule::run(&ctx, c).await,
        Command::Workers(a) => workers::run(&ctx, a).await,
        Command::Signal(c) => signal::run(&ctx, c).await,
        Command::Events(c) => events::run(&ctx, c).await,
        Command::Bench(a) => bench::run(&ctx, a).await,
        Command::Demo(a) => demo::run(&g, redis_named, a).await,
        Command::Completions { .. } => unreachable!("printed above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_too_short_to_renew_is_refused() {
        assert!(parse_lease("0s").unwrap_err().contains("at least 100ms"));
        assert!(parse_lease("50ms").is_err());
        assert_eq!(parse_lease("30s").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn an_address_without_scheme_is_a_redis_url() {
        assert_eq!(
            context::with_scheme("127.0.0.1:6391"),
            "redis://127.0.0.1:6391"
        );
        assert_eq!(context::with_scheme("redis://h:1/2"), "redis://h:1/2");
        assert_eq!(
            context::with_scheme("redis+unix:///tmp/r.sock"),
            "redis+unix:///tmp/r.sock"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_or_say_how() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
    }
}
