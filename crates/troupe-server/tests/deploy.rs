//! The files in `deploy/` speak of metrics Troupe exports: every metric a
//! dashboard panel or an alert queries exists, and every metric is on the
//! dashboard. (`promtool check rules` and `promtool test rules` check the
//! alerts' syntax and behaviour; scripts/test.sh runs them.)

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use troupe::telemetry::metrics::ALL;

fn deploy(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric names in a PromQL text, with histogram suffixes taken off.
fn metrics_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("multiagent_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        found.insert(base.to_owned());
        rest = &tail[end..];
    }
    found
}

fn known(found: &BTreeSet<String>, file: &str) {
    for name in found {
        assert!(
            ALL.contains(&name.as_str()),
            "{file} queries {name}, which Troupe does not export"
        );
    }
}

#[test]
fn the_dashboard_shows_every_metric_and_only_real_ones() {
    let dashboard: Value = serde_json::from_str(&deploy("grafana/troupe.json")).unwrap();
    assert_eq!(dashboard["uid"], "troupe-overview");
    let mut found = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let used = metrics_in(expr);
            assert!(!used.is_empty(), "{expr}");
            found.extend(used);
        }
    }
    known(&found, "the dashboard");
    let missing: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|m| !found.contains(*m) && *m != "multiagent_workers_total")
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn the_alerts_query_real_metrics() {
    let rules = deploy("prometheus/alerts.yml");
    let found = metrics_in(&rules);
    assert!(found.len() >= 5, "{found:?}");
    known(&found, "alerts.yml");
}
