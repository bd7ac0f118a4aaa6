//! OpenTelemetry (feature `otel`): a job carries its producer's trace context (W3C `traceparent` and
//! `tracestate`, as the `x-traceparent` and `x-tracestate` headers), and the worker's `rill.job` span continues
//! that trace, named and attributed after the OpenTelemetry messaging conventions (`process <queue>`, kind
//! consumer, `messaging.system` = `rill`). Install `tracing-opentelemetry`'s layer in the application; rill
//! exports nothing itself.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers that carry a trace context.
pub(crate) const TRACEPARENT: &str = "x-traceparent";
pub(crate) const TRACESTATE: &str = "x-tracestate";

/// The current span's trace context as headers (none when no OpenTelemetry span is current).
pub(crate) fn current_context_headers() -> Vec<(String, Vec<u8>)> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)]
        .into_iter()
        .filter_map(|(k, header)| {
            carrier
                .remove(k)
                .filter(|v| !v.is_empty())
                .map(|v| (header.to_owned(), v.into_bytes()))
        })
        .collect()
}

/// Makes `span` a child of the trace context in `traceparent` (and `tracestate`), if it parses.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_owned());
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".into(), ts.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is no trace to continue.
        let _ = span.set_parent(cx);
    }
}
