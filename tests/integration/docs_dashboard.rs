//! The Grafana dashboard shipped in docs/ queries only metrics the appliance exports: every
//! metric name in its expressions is one `docs/api.md` documents (whose table the metric tests
//! keep honest).

use std::path::Path;

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if ["image_factory_", "http_", "process_"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(&word);
            out.push(base.to_string());
        }
        word.clear();
    }
    out
}

#[test]
fn the_dashboard_queries_documented_metrics_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api = std::fs::read_to_string(root.join("docs/api.md")).expect("api.md");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    api.contains(&format!("`{name}")),
                    "{name} (panel {}) is not in docs/api.md",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
    assert_eq!(
        metric_names("rate(http_request_duration_seconds_bucket{a=\"b\"}[5m])"),
        ["http_request_duration_seconds"]
    );
}
