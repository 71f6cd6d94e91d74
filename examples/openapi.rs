//! An application's own OpenAPI document with the pools router's paths merged
//! in, served next to the pools router. No server needed.
//!
//! ```sh
//! cargo run --example openapi
//! curl -s localhost:3000/openapi.json | python3 -m json.tool | grep '"/'   # /notes and /pools/...
//! # the pools' own document and docs page stay at /pools/openapi.json and /pools/docs
//! ```

#![allow(missing_docs, unreachable_pub)]

use axum::{Json, Router, routing::get};
use axum_pools::{DbConfig, PoolLayer, PoolManager, SqliteConnection, routes::openapi::PoolsApi};
use utoipa::OpenApi;

/// The application's notes.
#[utoipa::path(get, path = "/notes", responses((status = 200, description = "All notes.", body = [String])))]
async fn notes() -> Json<Vec<String>> {
    Json(vec!["hello".into()])
}

#[derive(OpenApi)]
#[openapi(info(title = "notes"), paths(notes))]
struct NotesApi;

/// The application's document, the pools' paths and schemas included.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = NotesApi::openapi();
    doc.merge(PoolsApi::openapi());
    doc
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("axum-pools-openapi-example.db");
    let manager = PoolManager::builder()
        .database::<SqliteConnection>("main", DbConfig::from_url(path.display().to_string()))
        .build()
        .await?;
    let doc = document();
    let app = Router::new()
        .route("/notes", get(notes))
        .route("/openapi.json", get(move || async move { Json(doc) }))
        .merge(manager.router())
        .layer(PoolLayer::new(manager.clone()));
    let listener = tokio::net::TcpListener::bind(
        std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into()),
    )
    .await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(manager.drain_on(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .await?;
    Ok(())
}
