//! Quickstart: a notes API over a pooled SQLite file, no server needed.
//!
//! ```sh
//! cargo run --example quickstart            # BIND=127.0.0.1:3000, DATABASE_URL=<tmp>/axum-pools-quickstart.db, DB_MAX_SIZE=8 ...
//! curl -s localhost:3000/notes -H 'content-type: application/json' -d '{"title":"hello"}'
//! curl -s localhost:3000/notes
//! curl -s localhost:3000/notes/1
//! curl -s localhost:3000/notes/batch -H 'content-type: application/json' -d '[{"title":"a"},{"title":""}]'   # 422, nothing stored
//! curl -s localhost:3000/pools/health
//! curl -s localhost:3000/pools/stats
//! ```
//!
//! Inputs are checked before anything is stored: a body over 64 KiB answers
//! 413, a title that is empty, longer than 200 characters or holds control
//! characters 422, an id that is not a number 404, all problem+json.
//!
//! SQLite keeps an in-memory database per connection, so the pool uses a
//! file: every pooled connection sees the same notes. Writes run in a
//! `DbTx`: `PoolLayer` commits it when the handler answers 2xx and rolls it
//! back otherwise, so `POST /notes/batch` stores every note or none. Ctrl-C
//! drains the pool (requests in flight finish, new ones get 503) and exits 0.

#![allow(missing_docs, unreachable_pub)]

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, Path,
        rejection::{JsonRejection, PathRejection},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_pools::{
    DbConfig, DbConn, DbError, DbTx, PoolError, PoolLayer, PoolManager, SqliteConnection,
};
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};

diesel::table! {
    notes (id) {
        id -> Integer,
        title -> Text,
    }
}

/// A stored note.
#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, PartialEq)]
#[diesel(table_name = notes)]
pub struct Note {
    pub id: i32,
    pub title: String,
}

#[derive(Deserialize)]
struct NewNote {
    #[serde(default)]
    title: Option<String>,
}

/// Creates the table if it is missing.
pub async fn migrate(manager: &PoolManager) -> Result<(), Box<dyn std::error::Error>> {
    let mut db = DbConn::<SqliteConnection>::acquire(manager).await?;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL CHECK (title <> '')
        )",
    )
    .await?;
    Ok(())
}

/// The largest request body the notes routes take.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The longest title, in characters.
pub const TITLE_MAX: usize = 200;

/// The notes routes plus the pools router, with the pool layer.
pub fn app(manager: PoolManager) -> Router {
    Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .route("/notes/batch", post(add_notes))
        .route("/notes/{id}", get(get_note))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(manager.router())
        .layer(PoolLayer::new(manager).read_body_first(BODY_LIMIT))
}

async fn list_notes(mut db: DbConn<SqliteConnection>) -> Result<Json<Vec<Note>>, AppError> {
    let all = notes::table
        .select(Note::as_select())
        .order(notes::id)
        .load(&mut db)
        .await?;
    Ok(Json(all))
}

/// The note's title, trimmed, or why it cannot be stored.
fn title_of(new: NewNote) -> Result<String, String> {
    let title = new.title.as_deref().map(str::trim).unwrap_or_default();
    if title.is_empty() {
        return Err("`title` must be a non-empty string".into());
    }
    if title.chars().count() > TITLE_MAX {
        return Err(format!("`title` must be at most {TITLE_MAX} characters"));
    }
    if title.chars().any(char::is_control) {
        return Err("`title` must not contain control characters".into());
    }
    Ok(title.to_owned())
}

/// A body the JSON extractor refused: its own status (413 for one over
/// the limit, 415 without `content-type: application/json`, 400 for
/// broken JSON), 422 for JSON of the wrong shape.
fn rejected(e: JsonRejection) -> AppError {
    match e.status() {
        StatusCode::UNPROCESSABLE_ENTITY => AppError::Invalid(e.body_text()),
        status => AppError::Rejected(status, e.body_text()),
    }
}

async fn insert(tx: &mut DbTx<SqliteConnection>, title: String) -> Result<Note, AppError> {
    Ok(diesel::insert_into(notes::table)
        .values(notes::title.eq(title))
        .returning(Note::as_returning())
        .get_result(tx)
        .await?)
}

async fn add_note(
    mut tx: DbTx<SqliteConnection>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Note>), AppError> {
    let Json(new) = body.map_err(rejected)?;
    let title = title_of(new).map_err(AppError::Invalid)?;
    let note = insert(&mut tx, title).await?;
    let location = format!("/notes/{}", note.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(note),
    ))
}

/// Stores every note or none: each is inserted as it comes, and an invalid
/// title answers 422, so the layer rolls the earlier inserts back.
async fn add_notes(
    mut tx: DbTx<SqliteConnection>,
    body: Result<Json<Vec<NewNote>>, JsonRejection>,
) -> Result<(StatusCode, Json<Vec<Note>>), AppError> {
    let Json(batch) = body.map_err(rejected)?;
    let mut stored = Vec::with_capacity(batch.len());
    for (i, new) in batch.into_iter().enumerate() {
        let title = title_of(new).map_err(|why| AppError::Invalid(format!("note {i}: {why}")))?;
        stored.push(insert(&mut tx, title).await?);
    }
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn get_note(
    id: Result<Path<i32>, PathRejection>,
    mut db: DbConn<SqliteConnection>,
) -> Result<Json<Note>, AppError> {
    // Not a number: no such note.
    let Path(id) = id.map_err(|_| AppError::NoSuchId)?;
    notes::table
        .find(id)
        .select(Note::as_select())
        .first(&mut db)
        .await
        .optional()?
        .map(Json)
        .ok_or(AppError::NotFound(id))
}

/// The example's errors, answered as problem+json.
#[derive(Debug)]
pub enum AppError {
    Db(DbError),
    Invalid(String),
    Rejected(StatusCode, String),
    NotFound(i32),
    NoSuchId,
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

impl From<PoolError> for AppError {
    fn from(e: PoolError) -> Self {
        Self::Db(e.into())
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::Db(e) => return e.into_response(),
            Self::Invalid(detail) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid note", detail),
            Self::Rejected(status, detail) => (status, "Request not accepted", detail),
            Self::NotFound(id) => (
                StatusCode::NOT_FOUND,
                "Note not found",
                format!("no note with id {id}"),
            ),
            Self::NoSuchId => (
                StatusCode::NOT_FOUND,
                "Note not found",
                "note ids are whole numbers".to_owned(),
            ),
        };
        let body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutdown signal received: draining");
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,axum_pools=debug".into()),
        )
        .init();

    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("axum-pools-quickstart.db")
            .display()
            .to_string()
    });
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let manager = PoolManager::builder()
        .database::<SqliteConnection>(
            "notes",
            DbConfig::from_url(url).max_size(8).knobs_from_env("DB")?,
        )
        .build()
        .await?;
    migrate(&manager).await?;

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(manager.clone()))
        .with_graceful_shutdown(manager.drain_on(shutdown_signal()))
        .await?;
    manager.drain(std::time::Duration::from_secs(5)).await;
    tracing::info!("bye");
    Ok(())
}
