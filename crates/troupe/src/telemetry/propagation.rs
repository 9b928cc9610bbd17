//! W3C trace context in and out of an envelope's `trace_context` map,
//! through OpenTelemetry's global propagator (a no-op until a binary sets one).

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes `span`'s context into `map`.
pub(crate) fn inject(span: &tracing::Span, map: &mut BTreeMap<String, String>) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MapInjector(map));
    });
}

/// Makes the context in `map`, if any, `span`'s parent.
pub(crate) fn set_parent(span: &tracing::Span, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(map)));
    // Fails only when the span is disabled or already started exporting: nothing to do then.
    let _ = span.set_parent(cx);
}
