//! `rill top`: a live view of queues (depth, rates) and workers (health, status, in flight), refreshing until
//! `q`. `--once` prints one frame as text (for scripts, and when stdout is not a terminal).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use crate::context::Context;
use crate::{output, stats, workers};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    interval: Duration,
    /// Window the rates are measured over.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    window: Duration,
    /// Print one frame as plain text and exit.
    #[arg(long)]
    once: bool,
}

struct Snapshot {
    title: String,
    queues: Vec<stats::QueueStats>,
    workers: Vec<(rill::WorkerInfo, rill::Health)>,
    error: Option<String>,
    at: u64,
    window: Duration,
}

async fn snapshot(ctx: &Context, window: Duration) -> Snapshot {
    let title = format!("rill top — {} — namespace {}", ctx.url, ctx.namespace);
    let at = output::now_ms();
    let gathered = async {
        let queues = ctx.queues_or_all(None).await?;
        anyhow::Ok((
            stats::gather(&queues, window).await?,
            workers::gather(&queues).await?,
        ))
    };
    match gathered.await {
        Ok((queues, workers)) => Snapshot {
            title,
            queues,
            workers,
            error: None,
            at,
            window,
        },
        Err(e) => Snapshot {
            title,
            queues: Vec::new(),
            workers: Vec::new(),
            error: Some(format!("{e:#}")),
            at,
            window,
        },
    }
}

/// Column widths that fit the headers and the cells and no more, so the tables fit 80 columns when their
/// contents do.
fn fitted(headers: &[&str], rows: &[Vec<String>]) -> Vec<Constraint> {
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .fold(h.chars().count(), usize::max);
            Constraint::Length(widest as u16)
        })
        .collect()
}

/// Draws a frame; `live` adds how to quit.
fn draw(frame: &mut ratatui::Frame, s: &Snapshot, live: bool) {
    let [head, queues, workers, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(s.queues.len().max(1) as u16 + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let status = match &s.error {
        Some(e) => format!("  {}  error: {e}", output::time(s.at)),
        None => format!("  {}", output::time(s.at)),
    };
    frame.render_widget(
        Line::from(format!("{}{status}", s.title)).style(Style::new().add_modifier(Modifier::BOLD)),
        head,
    );
    let header = |cols: &[&str]| {
        Row::new(cols.iter().map(|c| c.to_string()).collect::<Vec<_>>())
            .style(Style::new().add_modifier(Modifier::BOLD))
    };
    let q_cells: Vec<Vec<String>> = s.queues.iter().map(|q| stats::row(q, s.at)).collect();
    let q_rows: Vec<Row> = s
        .queues
        .iter()
        .zip(&q_cells)
        .map(|(q, cells)| {
            let style = if q.counts.dead > 0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            Row::new(cells.clone()).style(style)
        })
        .collect();
    let q_widths = fitted(&stats::HEADERS, &q_cells);
    frame.render_widget(
        Table::new(q_rows, q_widths)
            .header(header(&stats::HEADERS))
            .block(Block::bordered().title(format!(" Queues ({}) ", s.queues.len()))),
        queues,
    );
    let w_cells: Vec<Vec<String>> = s.workers.iter().map(|(w, h)| workers::row(w, h)).collect();
    let w_rows: Vec<Row> = s
        .workers
        .iter()
        .zip(&w_cells)
        .map(|((_, h), cells)| {
            let color = match h {
                rill::Health::Healthy => Color::Green,
                rill::Health::Crashed => Color::Red,
                _ => Color::Yellow,
            };
            Row::new(cells.clone()).style(Style::new().fg(color))
        })
        .collect();
    let w_widths = fitted(&workers::HEADERS, &w_cells);
    frame.render_widget(
        Table::new(w_rows, w_widths)
            .header(header(&workers::HEADERS))
            .block(Block::bordered().title(format!(" Workers ({}) ", s.workers.len()))),
        workers,
    );
    frame.render_widget(
        Line::from(format!(
            "DONE/s, FAILED/s: per second over the last {}{}",
            output::age(s.window),
            if live { "; q to quit" } else { "" }
        )),
        foot,
    );
}

/// One frame as text, trailing spaces trimmed.
fn render_text(s: &Snapshot) -> anyhow::Result<String> {
    let height = 8 + s.queues.len().max(1) + s.workers.len().max(1);
    let mut term = Terminal::new(TestBackend::new(150, height as u16))?;
    term.draw(|f| draw(f, s, false))?;
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

pub async fn run(ctx: &Context, a: TopArgs) -> anyhow::Result<ExitCode> {
    ctx.connect().await?;
    if a.once || !std::io::stdout().is_terminal() {
        let s = snapshot(ctx, a.window).await;
        if let Some(e) = &s.error {
            anyhow::bail!("{e}");
        }
        print!("{}", render_text(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut term = ratatui::init();
    let result = async {
        loop {
            let s = snapshot(ctx, a.window).await;
            term.draw(|f| draw(f, &s, true))?;
            let deadline = tokio::time::Instant::now() + a.interval;
            // Keys are read between refreshes; the wait ends early on q / Esc / Ctrl-C.
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let quit = tokio::task::block_in_place(|| -> anyhow::Result<bool> {
                    if !event::poll(left.min(Duration::from_millis(100)))? {
                        return Ok(false);
                    }
                    Ok(matches!(event::read()?, Event::Key(k) if k.code == KeyCode::Char('q')
                        || k.code == KeyCode::Esc
                        || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))))
                })?;
                if quit {
                    return anyhow::Ok(());
                }
            }
        }
    }
    .await;
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}
