//! The last hour as inline SVG bars (completions, with failures stacked in red): drawn on the server, so the
//! pages need no chart library.

use maud::{Markup, html};

use crate::context::Json;

fn series(hour: &Json, key: &str) -> Vec<u64> {
    hour[key]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Bars of `width` x `height` pixels; `axis` adds the scale and the time labels.
fn bars(hour: &Json, width: u32, height: u32, axis: bool) -> Markup {
    let done = series(hour, "completed");
    let failed = series(hour, "failed");
    let slots = done.len().max(1) as u32;
    let top = done
        .iter()
        .zip(&failed)
        .map(|(d, f)| d + f)
        .max()
        .unwrap_or(0)
        .max(1);
    let pad = if axis { 16 } else { 0 };
    let plot_h = height - pad;
    let step = width as f64 / slots as f64;
    let scale = |v: u64| (v as f64 / top as f64) * plot_h as f64;
    let total: u64 = done.iter().sum();
    let total_failed: u64 = failed.iter().sum();
    let label =
        format!("last hour: {total} completed, {total_failed} failed; busiest minute {top}");
    html! {
        svg.chart width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label=(label) {
            title { (label) }
            @for (i, (d, f)) in done.iter().zip(&failed).enumerate() {
                @let x = i as f64 * step;
                @let hd = scale(*d);
                @let hf = scale(*f);
                @if *d > 0 {
                    rect.done x=(format!("{x:.1}")) y=(format!("{:.1}", plot_h as f64 - hd)) width=(format!("{:.1}", (step - 1.0).max(1.0))) height=(format!("{hd:.1}")) {}
                }
                @if *f > 0 {
                    rect.failed x=(format!("{x:.1}")) y=(format!("{:.1}", plot_h as f64 - hd - hf)) width=(format!("{:.1}", (step - 1.0).max(1.0))) height=(format!("{hf:.1}")) {}
                }
            }
            @if axis {
                line.axis x1="0" y1=(plot_h) x2=(width) y2=(plot_h) {}
                text x="0" y=(height - 2) { "60 min ago" }
                text x=(width) y=(height - 2) text-anchor="end" { "now" }
                text x="2" y="10" { (top) " / min" }
            }
        }
    }
}

/// A small chart for a table row.
pub fn sparkline(hour: &Json) -> Markup {
    bars(hour, 180, 28, false)
}

/// The queue page's chart, with its scale.
pub fn hour(hour: &Json) -> Markup {
    html! {
        (bars(hour, 720, 140, true))
        p.legend { span.key.done {} " completed  " span.key.failed {} " failed (retried or dead)  — a bar a minute" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_minute_and_skip_empty_ones() {
        let hour = serde_json::json!({ "completed": [0, 10, 5], "failed": [0, 0, 5] });
        let svg = bars(&hour, 300, 100, false).into_string();
        assert_eq!(svg.matches("<rect class=\"done\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"failed\"").count(), 1);
        assert!(svg.contains("height=\"100.0\""), "{svg}");
        assert!(svg.contains("15 completed, 5 failed; busiest minute 10"));
        // Nothing at all still draws (an empty chart), never divides by zero.
        let empty = bars(&serde_json::json!({}), 300, 100, true).into_string();
        assert!(empty.contains("<svg") && !empty.contains("<rect"));
    }
}
