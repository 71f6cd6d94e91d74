//! The OpenAPI document: committed copy up to date, served as is, the docs
//! page and its assets offline, and every documented route answering what
//! the document says (status, content type, body schema).
// The document is one whatever the features (the stats' HTTP and Sentinel
// fields exist in every build): scripts/test.sh also runs this file with
// SQLite alone, where the committed document must match too.
#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use axum::{Router, http::StatusCode};
use axum_pools::{DbConfig, PoolManager, SqliteConnection, routes::openapi::PoolsApi};
use common::{body_text, get};
use serde_json::Value;
use tower::ServiceExt;
use utoipa::OpenApi;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/pools.json");

fn generated() -> String {
    PoolsApi::openapi().to_pretty_json().unwrap() + "\n"
}

#[allow(dead_code)]
#[path = "../examples/openapi.rs"]
mod example;

#[test]
fn the_example_merges_the_pools_paths_into_its_own_document() {
    let doc = example::document();
    for path in [
        "/notes",
        "/pools/health",
        "/pools/stats/{name}",
        "/pools/metrics",
    ] {
        assert!(doc.paths.paths.contains_key(path), "{path} missing");
    }
    let schemas = &doc.components.as_ref().unwrap().schemas;
    assert!(schemas.contains_key("HealthReport") && schemas.contains_key("Problem"));
}

#[test]
fn the_committed_document_is_up_to_date() {
    let fresh = generated();
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(COMMITTED, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == fresh,
        "openapi/pools.json is out of date; regenerate it with:\n    UPDATE_OPENAPI=1 cargo test --all-features --test openapi"
    );
    let doc: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

async fn manager() -> (tempfile::TempDir, PoolManager) {
    let (dir, path) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", DbConfig::from_url(&path))
        .build()
        .await
        .unwrap();
    (dir, m)
}

#[tokio::test]
async fn the_served_document_equals_the_committed_one_and_the_docs_work_offline() {
    let (_dir, m) = manager().await;
    let app: Router = m.router();
    let r = app
        .clone()
        .oneshot(get("/pools/openapi.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let served: Value = serde_json::from_str(&body_text(r).await).unwrap();
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();
    assert_eq!(served, committed);

    let r = app.clone().oneshot(get("/pools/docs/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = body_text(r).await;
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("cdn") && !page.contains("unpkg"),
        "no CDN: {page}"
    );
    for asset in [
        "/pools/docs/swagger-ui-bundle.js",
        "/pools/docs/swagger-initializer.js",
    ] {
        let r = app.clone().oneshot(get(asset)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        let js = body_text(r).await;
        assert!(js.len() > 100, "{asset} is served from the binary");
    }
}

/// Checks `value` against the subset of JSON Schema the document uses.
fn validate(schema: &Value, value: &Value, doc: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return validate(&doc["components"]["schemas"][name], value, doc, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            return options
                .iter()
                .find(|o| validate(o, value, doc, at).is_ok())
                .map(|_| ())
                .ok_or_else(|| format!("{at}: matches no option of {key}"));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, value, doc, at)?;
        }
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array)
        && !choices.contains(value)
    {
        return Err(format!("{at}: {value} not in {choices:?}"));
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !obj.contains_key(key) {
                return Err(format!("{at}: missing required `{key}`"));
            }
        }
        for (key, v) in obj {
            match props.get(key) {
                Some(s) => validate(s, v, doc, &format!("{at}.{key}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: undocumented `{key}`"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(items, v, doc, &format!("{at}[{i}]"))?;
        }
    }
    if let (Some(extra), Some(obj)) = (
        schema.get("additionalProperties").filter(|a| a.is_object()),
        value.as_object(),
    ) && schema.get("properties").is_none()
    {
        for (key, v) in obj {
            validate(extra, v, doc, &format!("{at}.{key}"))?;
        }
    }
    Ok(())
}

/// The `data:` of the first event of a `text/event-stream` answer; `None`
/// when the stream ends without one (it does while the manager drains).
async fn first_event_data(r: axum::response::Response) -> Option<String> {
    use http_body_util::BodyExt;
    let mut body = r.into_body();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let data = text.lines().find_map(|line| line.strip_prefix("data: "));
    Some(data.expect("a data line").to_owned())
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let (_dir, m) = manager().await;
    let app: Router = m.router();
    let doc: Value = serde_json::to_value(PoolsApi::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap().clone();
    let mut checked = Vec::new();

    // Each route with a pool that passes, an unknown name, then while draining.
    for phase in ["up", "draining"] {
        if phase == "draining" {
            m.drain(Duration::from_secs(1)).await;
        }
        for (path, item) in &paths {
            let op = &item["get"];
            assert!(op.is_object(), "{path}: only GET is served");
            let uris: Vec<String> = if path.contains("{name}") {
                vec![
                    path.replace("{name}", "main"),
                    path.replace("{name}", "no-such-pool"),
                ]
            } else {
                vec![path.clone()]
            };
            for uri in uris {
                let r = app.clone().oneshot(get(&uri)).await.unwrap();
                let status = r.status().as_u16().to_string();
                let documented = &op["responses"][&status];
                assert!(
                    documented.is_object(),
                    "{uri} ({phase}) answered undocumented {status}"
                );
                let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
                let content = documented["content"]
                    .as_object()
                    .expect("documented content");
                let (media, spec) = content
                    .iter()
                    .find(|(media, _)| content_type.starts_with(media.split(';').next().unwrap()))
                    .unwrap_or_else(|| panic!("{uri} {status}: {content_type} not in {content:?}"));
                let body = if content_type.starts_with("text/event-stream") {
                    // An endless stream: its first event's data is the body.
                    match first_event_data(r).await {
                        Some(data) => data,
                        None => {
                            assert_eq!(phase, "draining", "{uri}: a stream without an event");
                            checked.push(format!("{uri} {status} ended"));
                            continue;
                        }
                    }
                } else {
                    body_text(r).await
                };
                if media.starts_with("application/") || media == "text/event-stream" {
                    let value: Value = serde_json::from_str(&body).unwrap();
                    validate(&spec["schema"], &value, &doc, &uri)
                        .unwrap_or_else(|e| panic!("{uri} {status}: {e}\n{body}"));
                }
                checked.push(format!("{uri} {status}"));
            }
        }
    }
    for expected in [
        "/pools/health 200",
        "/pools/health 503",
        "/pools/health/main 200",
        "/pools/health/no-such-pool 404",
        "/pools/health/ready 503",
        "/pools/stats/no-such-pool 404",
        "/pools/metrics 200",
        "/pools/events 200",
        "/pools/events 200 ended",
        "/pools/dashboard 200",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} was not exercised: {checked:?}"
        );
    }
}
