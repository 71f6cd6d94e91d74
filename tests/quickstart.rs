//! The quickstart example's routes, on a real SQLite file.
#![cfg(feature = "sqlite")]

mod common;

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

use axum::{
    body::{Body, Bytes},
    http::{Request, StatusCode, header},
};
use axum_pools::{DbConfig, PoolManager, SqliteConnection};
use common::{body_json, get};
use tower::ServiceExt;

fn post(body: &str) -> Request<Body> {
    post_to("/notes", body)
}

fn post_to(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn app() -> (tempfile::TempDir, axum::Router) {
    let (dir, path) = common::sqlite_file();
    let manager = PoolManager::builder()
        .database::<SqliteConnection>("notes", DbConfig::from_url(path).max_size(4))
        .build()
        .await
        .unwrap();
    quickstart::migrate(&manager).await.unwrap();
    (dir, quickstart::app(manager))
}

#[tokio::test]
async fn notes_round_trip_and_invalid_titles_store_nothing() {
    let (_dir, app) = app().await;

    let r = app
        .clone()
        .oneshot(post(r#"{"title":"first"}"#))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[header::LOCATION], "/notes/1");
    assert_eq!(
        body_json(r).await,
        serde_json::json!({"id": 1, "title": "first"})
    );

    for bad in [
        r#"{"title":""}"#,
        r#"{"title":"   "}"#,
        "{}",
        r#"{"title":null}"#,
    ] {
        let r = app.clone().oneshot(post(bad)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(body_json(r).await["status"], 422);
    }

    let r = app.clone().oneshot(get("/notes")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body_json(r).await,
        serde_json::json!([{"id": 1, "title": "first"}]),
        "the invalid notes were not stored"
    );

    let r = app.clone().oneshot(get("/notes/1")).await.unwrap();
    assert_eq!(body_json(r).await["title"], "first");
    let r = app.clone().oneshot(get("/notes/2")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let r = app.clone().oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await["pools"][0]["pool"], "notes");
    let r = app.oneshot(get("/pools/stats/notes")).await.unwrap();
    let stats = body_json(r).await;
    assert_eq!(stats["active"], 0);
    assert!(stats["leases"].as_u64().unwrap() >= 9);
}

#[tokio::test]
async fn a_batch_stores_every_note_or_none() {
    let (_dir, app) = app().await;
    let notes = |app: axum::Router| async move {
        body_json(app.oneshot(get("/notes")).await.unwrap()).await
    };

    // The first two notes are inserted before the empty title is reached:
    // the 422 rolls them back.
    let r = app
        .clone()
        .oneshot(post_to(
            "/notes/batch",
            r#"[{"title":"a"},{"title":"b"},{"title":""},{"title":"d"}]"#,
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body_json(r).await["detail"]
            .as_str()
            .unwrap()
            .starts_with("note 2:")
    );
    assert_eq!(notes(app.clone()).await, serde_json::json!([]));

    let r = app
        .clone()
        .oneshot(post_to("/notes/batch", r#"[{"title":"a"},{"title":"b"}]"#))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored = notes(app.clone()).await;
    let titles: Vec<_> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["a", "b"]);

    let stats = body_json(app.oneshot(get("/pools/stats/notes")).await.unwrap()).await;
    assert_eq!(
        (
            stats["tx_committed"].as_u64(),
            stats["tx_rolled_back"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn clients_trickling_uploads_hold_no_connection() {
    let (_dir, path) = common::sqlite_file();
    let manager = PoolManager::builder()
        .database::<SqliteConnection>(
            "notes",
            DbConfig::from_url(path)
                .max_size(2)
                .acquire_timeout(std::time::Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap();
    quickstart::migrate(&manager).await.unwrap();
    let app = quickstart::app(manager.clone());

    // Four POSTs whose bodies stop after their first byte, as a slow client's do.
    let mut senders = Vec::new();
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
        senders.push(tx);
        let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let request = Request::post("/notes")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap();
        uploads.push(tokio::spawn(app.clone().oneshot(request)));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Meanwhile every connection is free for the readers.
    assert_eq!(manager.stats_of("notes").unwrap().active, 0);
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.clone().oneshot(get("/notes")),
    )
    .await
    .expect("answers at once")
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The uploads finish and are stored.
    for tx in &senders {
        tx.send(Ok(Bytes::from_static(br#""title":"slow"}"#)))
            .await
            .unwrap();
    }
    drop(senders);
    for upload in uploads {
        assert_eq!(upload.await.unwrap().unwrap().status(), StatusCode::CREATED);
    }
    let all = body_json(app.oneshot(get("/notes")).await.unwrap()).await;
    assert_eq!(all.as_array().unwrap().len(), 4);
}

/// What the quickstart refuses, each as problem+json, and that none of it is
/// stored: a body over the limit (413), titles too long, with a NUL or a
/// control character (422), an id that is not a number (404).
#[tokio::test]
async fn bad_inputs_are_refused_as_problems_and_store_nothing() {
    let (_dir, app) = app().await;
    let too_long = "x".repeat(quickstart::TITLE_MAX + 1);
    let huge = "x".repeat(3 * 1024 * 1024);
    let cases = [
        (
            format!(r#"{{"title":"{huge}"}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            format!(r#"{{"title":"{too_long}"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"title":"a\u0000b"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"title":"line\nbreak"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
        ("not json".to_owned(), StatusCode::BAD_REQUEST),
    ];
    for (body, want) in cases {
        let r = app.clone().oneshot(post(&body)).await.unwrap();
        assert_eq!(r.status(), want, "{}", &body[..body.len().min(60)]);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    // Exactly the longest title is fine.
    let longest = "y".repeat(quickstart::TITLE_MAX);
    let r = app
        .clone()
        .oneshot(post(&format!(r#"{{"title":"{longest}"}}"#)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = app.clone().oneshot(get("/notes/abc")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let stored = body_json(app.oneshot(get("/notes")).await.unwrap()).await;
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
}
