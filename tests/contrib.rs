//! `contrib/grafana/axum-pools.json` and `contrib/prometheus/alerts.yml`
//! use only series that `/pools/metrics` really exposes: every metric name
//! in their expressions is checked against a live scrape of the
//! `full_stack` example, and `promtool check rules` passes on the alerts
//! when promtool is installed (Debian's `prometheus` package, which
//! `scripts/services-up.sh` installs).
#![cfg(all(feature = "postgres", feature = "redis", feature = "http"))]

mod common;

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The series names of a live `/pools/metrics` of the `full_stack` example
/// (histograms by their `_bucket`, `_sum` and `_count` samples).
fn live_series() -> Option<BTreeSet<String>> {
    let database = common::pg_url()?;
    let redis = common::redis_url()?;
    let binary = common::example::binary("full_stack", "postgres,redis,http");
    let port = common::example::free_port();
    let mut server = common::certs::KillOnDrop(
        Command::new(binary)
            .env("DATABASE_URL", database)
            .env("REDIS_URL", redis)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..300 {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("full_stack exited: {status}");
        }
        if let Some(response) = common::example::get(port, "/pools/metrics") {
            let (_, body) = response.split_once("\r\n\r\n").unwrap();
            return Some(
                body.lines()
                    .filter(|line| !line.starts_with('#') && !line.is_empty())
                    .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
                    .collect(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("full_stack never answered /pools/metrics");
}

/// The metric names in a PromQL expression: the identifiers with the
/// prefixes of this crate's series.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| {
            ["axum_pools_", "db_client_", "process_", "tokio_"]
                .iter()
                .any(|prefix| token.starts_with(prefix))
        })
        .collect()
}

/// Every `expr` of the dashboard's panels and variables.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs
}

#[test]
fn the_dashboard_and_the_alerts_use_only_series_the_metrics_route_exposes() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("contrib/grafana/axum-pools.json")).unwrap(),
    )
    .unwrap();
    let alerts =
        std::fs::read_to_string(Path::new(ROOT).join("contrib/prometheus/alerts.yml")).unwrap();

    // The dashboard: three boards and a pool_name variable.
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["Pool health", "Performance", "Resources"]);
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"pool_name"), "{variables:?}");

    // The alerts the issue names, each with an expression.
    let alert_names: Vec<&str> = alerts
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(
        alert_names,
        [
            "AxumPoolsAcquireSlow",
            "AxumPoolsExhausted",
            "AxumPoolsConnectionErrors",
            "AxumPoolsMemoryGrowing",
            "AxumPoolsBreakerOpen",
            "AxumPoolsUnhealthy",
        ]
    );
    let alert_exprs: Vec<String> = alerts
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(alert_exprs.len(), alert_names.len());

    let Some(live) = live_series() else {
        return;
    };
    assert!(live.len() > 20, "{live:?}");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() > 20, "{exprs:?}");
    for expr in exprs.iter().chain(&alert_exprs) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no series of ours in {expr}");
        for name in names {
            assert!(
                live.contains(name),
                "{name} (in {expr}) is not exposed by /pools/metrics: {live:?}"
            );
        }
    }

    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(ROOT).join("contrib/prometheus/alerts.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(!common::in_ci(), "promtool: {e}");
            eprintln!("promtool not installed ({e}); rules not checked by it");
        }
    }
}

/// The check is not vacuous: a misspelt series would be caught.
#[test]
fn a_misspelt_series_is_found() {
    assert_eq!(
        metric_names("rate(axum_pools_leasez_total{pool_name=\"a\"}[5m]) > process_threads"),
        ["axum_pools_leasez_total", "process_threads"]
    );
}
