//! Postgres pools behind a throwaway PgBouncer in transaction mode, in
//! front of the test database, with 2 server connections shared by 16
//! client connections: with `transaction_pooling` on, `DbConn` queries of
//! several shapes, `DbTx` inserts committed and rolled back (with and
//! without isolation options), validation pings and health checks run
//! under load with no error, and the rows stored are exactly the committed
//! ones; with it off, the same load fails on the prepared statements.
#![cfg(feature = "postgres")]

mod common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::Body,
    extract::{Path, State},
    http::{Request, StatusCode},
    routing::{get, post},
};
use axum_pools::{
    DbConfig, DbConn, DbError, DbTx, HealthStatus, IsolationLevel, PoolLayer, PoolManager,
    TxOptions,
};
use common::{
    servers::{pgbouncer, pgbouncer_with},
    unique,
};
use diesel::{
    IntoSql, QueryableByName,
    sql_types::{BigInt, Integer, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tower::ServiceExt;

type Pg = AsyncPgConnection;

/// Server connections behind PgBouncer, and client connections of the pool.
const SERVER_CONNS: usize = 2;
const CLIENT_CONNS: usize = 16;

fn config(url: &str, transaction_pooling: bool) -> DbConfig {
    DbConfig::from_url(url)
        .max_size(CLIENT_CONNS)
        .transaction_pooling(transaction_pooling)
        // A validation ping on every checkout, through the pooler too.
        .alive_bypass_window(Duration::ZERO)
        .query_timeout(Some(Duration::from_secs(10)))
        .acquire_timeout(Duration::from_secs(10))
}

#[derive(QueryableByName)]
struct Text1 {
    #[diesel(sql_type = Text)]
    s: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    c: i64,
}

/// Three shapes of parameterised query on one connection; a failure
/// answers 500 with the driver's words, for the test to read.
async fn select(
    State(table): State<Arc<str>>,
    Path(n): Path<i32>,
    db: DbConn<Pg>,
) -> Result<String, (StatusCode, String)> {
    shapes(&table, n, db)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn shapes(table: &str, n: i32, mut db: DbConn<Pg>) -> Result<String, DbError> {
    let sum: i32 = diesel::select(n.into_sql::<Integer>() + 1.into_sql::<Integer>())
        .get_result(&mut *db)
        .await?;
    let text: Text1 = diesel::sql_query("SELECT $1::text || '-' || $2::int AS s")
        .bind::<Text, _>("n")
        .bind::<Integer, _>(n)
        .get_result(&mut *db)
        .await?;
    let count: Count =
        diesel::sql_query(format!("SELECT count(*) AS c FROM {table} WHERE id < $1"))
            .bind::<Integer, _>(n)
            .get_result(&mut *db)
            .await?;
    assert_eq!((sum, text.s), (n + 1, format!("n-{n}")));
    Ok(count.c.to_string())
}

/// Inserts row `id` in a transaction, kept on 201, rolled back on 409.
async fn insert(
    State(table): State<Arc<str>>,
    Path((id, keep)): Path<(i32, bool)>,
    mut tx: DbTx<Pg>,
) -> Result<StatusCode, DbError> {
    diesel::sql_query(format!("INSERT INTO {table} (id, note) VALUES ($1, $2)"))
        .bind::<Integer, _>(id)
        .bind::<Text, _>(format!("row {id}"))
        .execute(&mut *tx)
        .await?;
    // Transaction-scoped settings work behind the pooler.
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;
    Ok(if keep {
        StatusCode::CREATED
    } else {
        StatusCode::CONFLICT
    })
}

/// A read-only, repeatable-read transaction.
async fn count(State(table): State<Arc<str>>, mut tx: DbTx<Pg>) -> Result<String, DbError> {
    let count: Count = diesel::sql_query(format!("SELECT count(*) AS c FROM {table}"))
        .get_result(&mut *tx)
        .await?;
    Ok(count.c.to_string())
}

struct Fixture {
    app: Router,
    manager: PoolManager,
    table: String,
    direct: String,
}

async fn fixture(bouncer_url: &str, direct: &str, transaction_pooling: bool) -> Fixture {
    let mut config = config(bouncer_url, transaction_pooling);
    if !transaction_pooling {
        config = config.query_timeout(None);
    }
    let table = unique("axp_bouncer");
    let setup = PoolManager::builder()
        .database::<Pg>("setup", DbConfig::from_url(direct).max_size(1))
        .build()
        .await
        .unwrap();
    DbConn::<Pg>::acquire(&setup)
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text NOT NULL)"
        ))
        .await
        .unwrap();
    let manager = PoolManager::builder()
        .database::<Pg>("db", config)
        .build()
        .await
        .unwrap();
    let report = TxOptions::default()
        .isolation(IsolationLevel::RepeatableRead)
        .read_only();
    let app = Router::new()
        .route("/select/{n}", get(select))
        .route("/rows/{id}/{keep}", post(insert))
        .route("/count", get(count).route_layer(Extension(report)))
        .with_state(Arc::<str>::from(table.as_str()))
        .layer(PoolLayer::new(manager.clone()));
    Fixture {
        app,
        manager,
        table,
        direct: direct.to_owned(),
    }
}

impl Fixture {
    /// 4 × `CLIENT_CONNS` clients, each making `rounds` rounds of a select,
    /// a kept insert, a rolled-back insert and a read-only count; every
    /// status seen, with the ids whose insert answered 201.
    async fn drive(&self, rounds: i32) -> (Vec<(String, StatusCode, String)>, BTreeSet<i32>) {
        let clients = i32::try_from(4 * CLIENT_CONNS).unwrap();
        let tasks = (0..clients).map(|client| {
            let app = self.app.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut kept = BTreeSet::new();
                for round in 0..rounds {
                    let id = client * 10_000 + round * 2;
                    for (method, uri) in [
                        ("GET", format!("/select/{}", round + 1)),
                        ("POST", format!("/rows/{id}/true")),
                        ("POST", format!("/rows/{}/false", id + 1)),
                        ("GET", "/count".to_owned()),
                    ] {
                        let request = Request::builder()
                            .method(method)
                            .uri(&uri)
                            .body(Body::empty())
                            .unwrap();
                        let response = app.clone().oneshot(request).await.unwrap();
                        let status = response.status();
                        if status == StatusCode::CREATED {
                            kept.insert(id);
                        }
                        seen.push((uri, status, common::body_text(response).await));
                    }
                }
                (seen, kept)
            })
        });
        let mut seen = Vec::new();
        let mut kept = BTreeSet::new();
        for task in futures_util::future::join_all(tasks).await {
            let (s, k) = task.unwrap();
            seen.extend(s);
            kept.extend(k);
        }
        (seen, kept)
    }

    /// The ids stored, read straight from Postgres.
    async fn stored(&self) -> BTreeSet<i32> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = Integer)]
            id: i32,
        }
        let check = PoolManager::builder()
            .database::<Pg>("check", DbConfig::from_url(&self.direct).max_size(1))
            .build()
            .await
            .unwrap();
        let mut db = DbConn::<Pg>::acquire(&check).await.unwrap();
        let rows: Vec<Id> = diesel::sql_query(format!("SELECT id FROM {}", self.table))
            .load(&mut *db)
            .await
            .unwrap();
        db.batch_execute(&format!("DROP TABLE {}", self.table))
            .await
            .unwrap();
        rows.into_iter().map(|r| r.id).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_serves_conn_and_tx_through_pgbouncer_with_no_error() {
    let direct = require!(common::pg_url());
    let Some(bouncer) = pgbouncer(&direct, SERVER_CONNS) else {
        return;
    };
    let f = fixture(&bouncer.url, &direct, true).await;
    let (seen, kept) = f.drive(12).await;
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(uri, status, _)| {
            let want = if uri.ends_with("/true") {
                StatusCode::CREATED
            } else if uri.ends_with("/false") {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            *status != want
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers were wrong, e.g. {:?}; pgbouncer log:\n{}",
        wrong.len(),
        seen.len(),
        &wrong[..wrong.len().min(5)],
        std::fs::read_to_string(&bouncer.log).unwrap_or_default()
    );
    assert_eq!(kept.len(), 4 * CLIENT_CONNS * 12);
    // Health checks go through the pooler too.
    assert_eq!(f.manager.check_health().await.status, HealthStatus::Pass);
    let stats = f.manager.stats_of("db").unwrap();
    assert_eq!(stats.active, 0);
    assert!(stats.validations > 0, "no validation ping ran");
    assert_eq!(f.stored().await, kept, "stored rows differ from the 201s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_transaction_pooling_the_same_load_fails_on_prepared_statements() {
    let direct = require!(common::pg_url());
    let Some(bouncer) = pgbouncer(&direct, SERVER_CONNS) else {
        return;
    };
    // query_timeout would fail every connect: a pooler refuses the
    // startup option it sends (see the next test).
    let f = fixture(&bouncer.url, &direct, false).await;
    let (seen, _) = f.drive(6).await;
    let _ = f.stored().await;
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, s, _)| s.is_server_error())
        .collect();
    assert!(
        !failed.is_empty(),
        "every request passed without transaction_pooling: the test cannot tell the knob works"
    );
    assert!(
        failed
            .iter()
            .any(|(_, _, body)| body.contains("prepared statement")
                && body.contains("does not exist")),
        "the failures were not about prepared statements: {:?}",
        &failed[..failed.len().min(5)]
    );
}

#[tokio::test]
async fn query_timeout_without_transaction_pooling_says_to_turn_it_on() {
    let direct = require!(common::pg_url());
    let Some(bouncer) = pgbouncer(&direct, SERVER_CONNS) else {
        return;
    };
    let e = PoolManager::builder()
        .database::<Pg>("db", config(&bouncer.url, false))
        .build()
        .await
        .expect_err("PgBouncer took the statement_timeout startup option");
    assert!(e.to_string().contains("turn on transaction_pooling"), "{e}");
}

#[tokio::test]
async fn a_session_set_is_refused_with_a_clear_error_and_set_local_works() {
    let direct = require!(common::pg_url());
    let Some(bouncer) = pgbouncer(&direct, SERVER_CONNS) else {
        return;
    };
    let manager = PoolManager::builder()
        .database::<Pg>("db", config(&bouncer.url, true).max_size(2))
        .build()
        .await
        .unwrap();
    let mut db = DbConn::<Pg>::acquire(&manager).await.unwrap();
    for sql in ["SET search_path TO public", "set work_mem = '64MB'"] {
        let e = db.batch_execute(sql).await.unwrap_err().to_string();
        assert!(
            e.contains("would change the session") && e.contains("transaction_pooling"),
            "{sql}: {e}"
        );
    }
    // Through diesel's prepared path too.
    let e = diesel::sql_query("SET search_path TO public")
        .execute(&mut *db)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("would change the session"), "{e}");
    // The connection is still good, and what a pooler carries is allowed.
    db.batch_execute("SET application_name = 'axp'")
        .await
        .unwrap();
    drop(db);
    let mut tx = DbTx::<Pg>::begin(&manager).await.unwrap();
    tx.batch_execute("SET LOCAL work_mem = '64MB'")
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn transaction_pooling_is_refused_on_other_backends() {
    let (_dir, path) = common::sqlite_file();
    let Err(e) = PoolManager::builder()
        .database::<axum_pools::SqliteConnection>(
            "db",
            DbConfig::from_url(path).transaction_pooling(true),
        )
        .build()
        .await
    else {
        panic!("built a SQLite pool with transaction_pooling");
    };
    assert!(e.to_string().contains("transaction_pooling"), "{e}");
}

/// TLS to the pooler, negotiated under the rewriting: `verify-full`
/// serves the same load, the stats show the TLS version, and the reasons a
/// handshake fails still reach the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_over_tls_checks_the_pooler_and_serves_the_load() {
    let direct = require!(common::pg_url());
    let dir = tempfile::tempdir().unwrap();
    let certs = common::certs::make_certs(dir.path());
    let Some(bouncer) = pgbouncer_with(&direct, SERVER_CONNS, Some(&certs)) else {
        return;
    };
    let tls_url = |ca: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            bouncer.url.replace("127.0.0.1", "localhost"),
            ca.display()
        )
    };
    let f = fixture(&tls_url(&certs.ca), &direct, true).await;
    let (seen, kept) = f.drive(2).await;
    assert!(
        seen.iter()
            .all(|(_, s, _)| s.is_success() || *s == StatusCode::CONFLICT),
        "{:?}",
        seen.iter().find(|(_, s, _)| !s.is_success())
    );
    let tls = common::certs::tls_in_stats(&f.manager, "db").unwrap();
    assert!(tls.starts_with("TLSv1."), "{tls}");
    assert_eq!(f.stored().await, kept);

    let untrusted = PoolManager::builder()
        .database::<Pg>("db", config(&tls_url(&certs.other_ca), true))
        .build()
        .await
        .expect_err("an untrusted pooler was accepted");
    assert!(untrusted.to_string().contains("not trusted"), "{untrusted}");

    // A pooler without TLS, and sslmode=require.
    let Some(plain) = pgbouncer(&direct, SERVER_CONNS) else {
        return;
    };
    let url = format!("{}?sslmode=require", plain.url);
    let e = PoolManager::builder()
        .database::<Pg>("db", config(&url, true))
        .build()
        .await
        .expect_err("sslmode=require went plaintext");
    assert!(e.to_string().contains("server does not support TLS"), "{e}");
}

/// The full_stack example run as an operator would behind PgBouncer
/// (`DATABASE_URL` at the pooler, `DB_TRANSACTION_POOLING=true`, 4 server
/// connections under its 16): 200 concurrent `POST /notes` all answer 201,
/// and exactly those notes are stored.
#[cfg(all(feature = "redis", feature = "http"))]
#[test]
fn full_stack_behind_pgbouncer_stores_exactly_the_notes_it_answered_201_for() {
    use std::process::{Command, Stdio};

    use common::example::{free_port, get, request};

    let (Some(direct), Some(redis)) = (common::pg_url(), common::redis_url()) else {
        return;
    };
    let Some(bouncer) = pgbouncer(&direct, 4) else {
        return;
    };
    let binary = common::example::binary("full_stack", "postgres,redis,http");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let _server = common::certs::KillOnDrop(
        Command::new(binary)
            .env("DATABASE_URL", &bouncer.url)
            .env("DB_TRANSACTION_POOLING", "true")
            .env("DB_MAX_SIZE", "16")
            .env("REDIS_URL", &redis)
            .env_remove("UPSTREAM_URL")
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..300 {
        if get(port, "/pools/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up,
        "full_stack did not become healthy: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );

    let tag = unique("bouncer");
    let posts: Vec<_> = (0..200)
        .map(|i| {
            let body = format!(r#"{{"title":"{tag}-{i}"}}"#);
            std::thread::spawn(move || request(port, "POST", "/notes", Some(&body)))
        })
        .collect();
    let mut created = 0;
    let mut other = Vec::new();
    for post in posts {
        let response = post.join().unwrap().expect("no answer");
        if response.starts_with("HTTP/1.1 201") {
            created += 1;
        } else {
            other.push(response);
        }
    }
    assert!(
        other.is_empty(),
        "{} answers were not 201, e.g. {}",
        other.len(),
        other[0]
    );

    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let check = PoolManager::builder()
            .database::<Pg>("check", DbConfig::from_url(&direct).max_size(1))
            .build()
            .await
            .unwrap();
        let mut db = DbConn::<Pg>::acquire(&check).await.unwrap();
        let count: Count =
            diesel::sql_query("SELECT count(*) AS c FROM full_stack_notes WHERE title LIKE $1")
                .bind::<Text, _>(format!("{tag}-%"))
                .get_result(&mut *db)
                .await
                .unwrap();
        count.c
    });
    assert_eq!((created, stored), (200, 200));
}
