//! `DbTx` on SQLite, Postgres and MariaDB: commit on 2xx, rollback on 4xx,
//! 5xx, panic, cancellation and late drop; the connection goes back to the
//! pool with no transaction open (checked on the server: a write through
//! the pooled connection is visible from another connection at once).
#![cfg(all(feature = "postgres", feature = "mysql", feature = "sqlite"))]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::Body,
    http::{Request, StatusCode},
    routing::post,
};
use axum_pools::{DbConfig, PoolLayer, PoolManager};
use common::{body_json, eventually, unique};
use tokio::sync::Semaphore;
use tower::ServiceExt;

fn config(url: &str) -> DbConfig {
    DbConfig::from_url(url)
        .max_size(1)
        .health_check_interval(None)
        .idle_timeout(None)
        .max_lifetime(None)
}

fn req(uri: &str) -> Request<Body> {
    Request::post(uri).body(Body::empty()).unwrap()
}

/// Lets a test hold a handler mid-transaction.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

macro_rules! tx_suite {
    ($backend:ident, $conn:ty, $url:expr, $ddl:literal) => {
        mod $backend {
            use super::*;
            use axum_pools::{DbConn, DbError, DbTx};
            use diesel::{dsl::sql, sql_types::BigInt};
            use diesel_async::{
                AsyncConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager,
            };

            type C = $conn;

            struct Fixture {
                _dir: Option<tempfile::TempDir>,
                url: String,
                table: String,
                manager: PoolManager,
            }

            async fn fixture() -> Option<Fixture> {
                let (dir, url): (Option<tempfile::TempDir>, String) = match $url {
                    Some(url) => (None, url),
                    None if stringify!($backend) == "sqlite" => {
                        let (dir, path) = common::sqlite_file();
                        (Some(dir), path)
                    }
                    None => return None,
                };
                let table = unique("axp_tx");
                let manager = PoolManager::builder()
                    .database::<C>("db", config(&url))
                    .build()
                    .await
                    .unwrap();
                let mut db = DbConn::<C>::acquire(&manager).await.unwrap();
                db.batch_execute(&format!($ddl, table = table)).await.unwrap();
                drop(db);
                Some(Fixture { _dir: dir, url, table, manager })
            }

            impl Fixture {
                /// Rows, counted on a connection of its own (not the pool's).
                async fn rows(&self) -> i64 {
                    let mut other = C::establish(&self.url).await.unwrap();
                    diesel::select(sql::<BigInt>(&format!("(SELECT COUNT(*) FROM {})", self.table)))
                        .get_result(&mut other)
                        .await
                        .unwrap()
                }

                fn insert_sql(&self, title: &str) -> String {
                    format!("INSERT INTO {} (title) VALUES ('{title}')", self.table)
                }

                fn stats(&self) -> axum_pools::StatsSnapshot {
                    self.manager.stats_of("db").unwrap()
                }

                /// The pool's only connection has no transaction open: diesel
                /// tracks none, and an autocommit write through it is visible
                /// from another connection at once.
                async fn connection_is_clean(&self) {
                    let mut db = DbConn::<C>::acquire(&self.manager).await.unwrap();
                    let depth = <C as AsyncConnection>::TransactionManager::transaction_manager_status_mut(&mut *db)
                        .transaction_depth()
                        .unwrap();
                    assert_eq!(depth, None, "diesel sees an open transaction");
                    let before = self.rows().await;
                    db.batch_execute(&self.insert_sql("probe")).await.unwrap();
                    assert_eq!(self.rows().await, before + 1, "the write was not committed at once");
                    db.batch_execute(&format!("DELETE FROM {} WHERE title = 'probe'", self.table))
                        .await
                        .unwrap();
                }

                fn app(&self, gate: &Gate) -> Router {
                    let table = self.table.clone();
                    let insert = move |title: &str| {
                        format!("INSERT INTO {table} (title) VALUES ('{title}')")
                    };
                    let (i1, i2, i3, i4, i5, i6, i7) = (
                        insert("ok"), insert("unprocessable"), insert("failed"),
                        insert("panicked"), insert("held"), insert("late"), insert("explicit"),
                    );
                    Router::new()
                        .route("/created", post(move |mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i1).await?;
                            Ok::<_, DbError>(StatusCode::CREATED)
                        }))
                        .route("/unprocessable", post(move |mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i2).await?;
                            Ok::<_, DbError>(StatusCode::UNPROCESSABLE_ENTITY)
                        }))
                        .route("/failed", post(move |mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i3).await?;
                            Ok::<_, DbError>(StatusCode::INTERNAL_SERVER_ERROR)
                        }))
                        .route("/panics", post(move |mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i4).await.unwrap();
                            if !i4.is_empty() {
                                panic!("handler panics inside its transaction");
                            }
                            StatusCode::OK
                        }))
                        .route("/held", post(move |Extension(gate): Extension<Gate>, mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i5).await.unwrap();
                            let _permit = gate.0.acquire().await.unwrap();
                            StatusCode::CREATED
                        }))
                        .route("/outlives", post(move |Extension(gate): Extension<Gate>, mut tx: DbTx<C>| async move {
                            tokio::spawn(async move {
                                let _permit = gate.0.acquire().await.unwrap();
                                tx.batch_execute(&i6).await.unwrap();
                                // dropped here, long after the response: never committed
                            });
                            StatusCode::ACCEPTED
                        }))
                        .route("/explicit", post(move |mut tx: DbTx<C>| async move {
                            tx.batch_execute(&i7).await?;
                            tx.commit().await?;
                            // The response is an error, but the commit already happened.
                            Ok::<_, DbError>(StatusCode::CONFLICT)
                        }))
                        .layer(Extension(gate.clone()))
                        .layer(PoolLayer::new(self.manager.clone()))
                }
            }

            fn gate() -> Gate {
                Gate(Arc::new(Semaphore::new(0)))
            }

            #[tokio::test]
            async fn commits_on_2xx_and_rolls_back_on_4xx_and_5xx() {
                let Some(f) = fixture().await else { return };
                let app = f.app(&gate());

                let r = app.clone().oneshot(req("/created")).await.unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                assert_eq!(f.rows().await, 1);
                f.connection_is_clean().await;

                let r = app.clone().oneshot(req("/unprocessable")).await.unwrap();
                assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(f.rows().await, 1, "the 422's insert was rolled back");
                f.connection_is_clean().await;

                let r = app.clone().oneshot(req("/failed")).await.unwrap();
                assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(f.rows().await, 1, "the 500's insert was rolled back");
                f.connection_is_clean().await;

                let r = app.oneshot(req("/explicit")).await.unwrap();
                assert_eq!(r.status(), StatusCode::CONFLICT);
                assert_eq!(f.rows().await, 2, "committed by the handler itself");
                f.connection_is_clean().await;

                let s = f.stats();
                assert_eq!((s.tx_committed, s.tx_rolled_back, s.tx_abandoned), (2, 2, 0));
                assert_eq!(s.active, 0);
            }

            #[tokio::test]
            async fn rolls_back_when_the_handler_panics() {
                let Some(f) = fixture().await else { return };
                let app = f.app(&gate());
                let joined = tokio::spawn(app.oneshot(req("/panics"))).await;
                assert!(joined.unwrap_err().is_panic());
                eventually("the abandoned transaction is rolled back", || {
                    let s = f.stats();
                    s.tx_abandoned == 1 && s.tx_rolled_back == 1 && s.active == 0
                })
                .await;
                assert_eq!(f.rows().await, 0);
                f.connection_is_clean().await;
            }

            #[tokio::test]
            async fn rolls_back_when_the_client_goes_away_mid_handler() {
                let Some(f) = fixture().await else { return };
                let gate = gate();
                let app = f.app(&gate);
                let request = tokio::spawn(app.oneshot(req("/held")));
                eventually("the handler holds its transaction", || f.stats().active == 1).await;
                request.abort(); // the request future is dropped with the handler still running
                assert!(request.await.unwrap_err().is_cancelled());
                eventually("the abandoned transaction is rolled back", || {
                    let s = f.stats();
                    s.tx_abandoned == 1 && s.active == 0
                })
                .await;
                assert_eq!(f.rows().await, 0);
                f.connection_is_clean().await;
            }

            #[tokio::test]
            async fn a_transaction_outliving_its_request_is_never_committed() {
                let Some(f) = fixture().await else { return };
                let gate = gate();
                let app = f.app(&gate);
                let r = app.oneshot(req("/outlives")).await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                assert_eq!(f.stats().tx_committed, 0);
                gate.0.add_permits(1); // the task writes, then drops its DbTx
                eventually("the late transaction is rolled back", || {
                    let s = f.stats();
                    s.tx_abandoned == 1 && s.active == 0
                })
                .await;
                assert_eq!(f.rows().await, 0);
                assert_eq!(f.stats().tx_committed, 0);
                f.connection_is_clean().await;
            }

            #[tokio::test]
            async fn begin_outside_a_request_rolls_back_unless_committed() {
                let Some(f) = fixture().await else { return };
                let mut tx = DbTx::<C>::begin(&f.manager).await.unwrap();
                tx.batch_execute(&f.insert_sql("dropped")).await.unwrap();
                drop(tx);
                eventually("rolled back", || f.stats().active == 0).await;
                assert_eq!(f.rows().await, 0);

                let mut tx = DbTx::<C>::begin(&f.manager).await.unwrap();
                tx.batch_execute(&f.insert_sql("kept")).await.unwrap();
                assert_eq!(f.rows().await, 0, "not visible before commit");
                tx.commit().await.unwrap();
                assert_eq!(f.rows().await, 1);

                let mut tx = DbTx::<C>::begin(&f.manager).await.unwrap();
                tx.batch_execute(&f.insert_sql("undone")).await.unwrap();
                tx.rollback().await.unwrap();
                assert_eq!(f.rows().await, 1);
                f.connection_is_clean().await;
            }
        }
    };
}

tx_suite!(
    sqlite,
    axum_pools::SqliteConnection,
    None::<String>,
    "CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL)"
);
tx_suite!(
    postgres,
    diesel_async::AsyncPgConnection,
    common::pg_url(),
    "CREATE TABLE {table} (id SERIAL PRIMARY KEY, title TEXT NOT NULL)"
);
tx_suite!(
    mysql,
    diesel_async::AsyncMysqlConnection,
    common::mysql_url(),
    "CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL)"
);

// ---------- options and commit failure ----------

mod options {
    use super::*;
    use axum_pools::{DbConn, DbError, DbTx, IsolationLevel, SqliteConnection, TxOptions};
    use diesel::{dsl::sql, sql_types::BigInt};
    use diesel_async::{
        AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    };

    async fn pg_pool(url: &str, table: &str, ddl: &str) -> PoolManager {
        let m = PoolManager::builder()
            .database::<AsyncPgConnection>("db", config(url).max_size(2))
            .build()
            .await
            .unwrap();
        let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
        db.batch_execute(&ddl.replace("{table}", table))
            .await
            .unwrap();
        m
    }

    async fn count(db: &mut DbTx<AsyncPgConnection>, table: &str) -> i64 {
        diesel::select(sql::<BigInt>(&format!("(SELECT COUNT(*) FROM {table})")))
            .get_result(db)
            .await
            .unwrap()
    }

    /// Two transactions at once: the reader sees a row committed meanwhile
    /// under READ COMMITTED, and does not under REPEATABLE READ.
    #[tokio::test]
    async fn postgres_isolation_is_as_configured() {
        let url = require!(common::pg_url());
        let table = unique("axp_iso");
        let m = pg_pool(&url, &table, "CREATE TABLE {table} (id SERIAL PRIMARY KEY)").await;
        for (level, sees_new_row) in [
            (IsolationLevel::ReadCommitted, true),
            (IsolationLevel::RepeatableRead, false),
            (IsolationLevel::Serializable, false),
        ] {
            let options = TxOptions::default().isolation(level);
            let mut reader = DbTx::<AsyncPgConnection>::begin_with(&m, options)
                .await
                .unwrap();
            let before = count(&mut reader, &table).await;
            let mut writer = DbTx::<AsyncPgConnection>::begin(&m).await.unwrap();
            writer
                .batch_execute(&format!("INSERT INTO {table} DEFAULT VALUES"))
                .await
                .unwrap();
            writer.commit().await.unwrap();
            let after = count(&mut reader, &table).await;
            assert_eq!(
                after == before + 1,
                sees_new_row,
                "{level:?}: {before} -> {after}"
            );
            reader.rollback().await.unwrap();
        }
    }

    #[tokio::test]
    async fn read_only_transactions_refuse_writes_and_sqlite_says_it_has_none() {
        let url = require!(common::pg_url());
        let table = unique("axp_ro");
        let m = pg_pool(&url, &table, "CREATE TABLE {table} (id SERIAL PRIMARY KEY)").await;
        let mut tx = DbTx::<AsyncPgConnection>::begin_with(&m, TxOptions::default().read_only())
            .await
            .unwrap();
        let err = tx
            .batch_execute(&format!("INSERT INTO {table} DEFAULT VALUES"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        drop(tx);

        let url = require!(common::mysql_url());
        let m = PoolManager::builder()
            .database::<AsyncMysqlConnection>("db", config(&url))
            .build()
            .await
            .unwrap();
        let table = unique("axp_ro");
        let mut db = DbConn::<AsyncMysqlConnection>::acquire(&m).await.unwrap();
        db.batch_execute(&format!("CREATE TABLE {table} (id INT PRIMARY KEY)"))
            .await
            .unwrap();
        drop(db);
        let mut tx = DbTx::<AsyncMysqlConnection>::begin_with(&m, TxOptions::default().read_only())
            .await
            .unwrap();
        let err = tx
            .batch_execute(&format!("INSERT INTO {table} VALUES (1)"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("READ ONLY"), "{err}");
        tx.rollback().await.unwrap();

        let (_dir, path) = common::sqlite_file();
        let m = PoolManager::builder()
            .database::<SqliteConnection>("db", config(&path))
            .build()
            .await
            .unwrap();
        let app = Router::new()
            .route(
                "/",
                post(|_tx: DbTx<SqliteConnection>| async { StatusCode::OK }),
            )
            .route_layer(Extension(TxOptions::default().read_only()))
            .layer(PoolLayer::new(m.clone()));
        let r = app.oneshot(req("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(r).await;
        assert_eq!(body["type"], "urn:axum-pools:problem:unsupported");
        assert!(
            body["detail"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
        assert_eq!(m.stats_of("db").unwrap().active, 0);
    }

    /// Query errors a handler `?`s: a unique violation answers 409, a missing
    /// row 404, with no SQL or values in the body; the transaction is rolled back.
    #[tokio::test]
    async fn query_errors_map_to_409_and_404_without_sql_in_the_body() {
        use diesel::OptionalExtension as _;
        let (_dir, path) = common::sqlite_file();
        let m = PoolManager::builder()
            .database::<SqliteConnection>("db", config(&path))
            .build()
            .await
            .unwrap();
        let mut db = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
        db.batch_execute("CREATE TABLE users (email TEXT PRIMARY KEY)")
            .await
            .unwrap();
        drop(db);
        let app = Router::new()
            .route(
                "/dup",
                post(|mut tx: DbTx<SqliteConnection>| async move {
                    tx.batch_execute("INSERT INTO users VALUES ('secret-value@example.org')")
                        .await?;
                    tx.batch_execute("INSERT INTO users VALUES ('secret-value@example.org')")
                        .await?;
                    Ok::<_, DbError>(StatusCode::CREATED)
                }),
            )
            .route(
                "/missing",
                post(|mut db: DbConn<SqliteConnection>| async move {
                    use diesel::QueryDsl as _;
                    diesel::table! { users (email) { email -> Text } }
                    let email: String = users::table
                        .find("nobody@example.org")
                        .select(users::email)
                        .first(&mut db)
                        .await?;
                    Ok::<_, DbError>(email)
                }),
            )
            .layer(PoolLayer::new(m.clone()));
        let r = app.clone().oneshot(req("/dup")).await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let body = body_json(r).await.to_string();
        assert!(body.contains("urn:axum-pools:problem:conflict"), "{body}");
        assert!(
            !body.contains("secret-value") && !body.contains("INSERT"),
            "{body}"
        );
        let r = app.oneshot(req("/missing")).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let mut db = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
        let first: Option<i64> = diesel::select(sql::<BigInt>("(SELECT COUNT(*) FROM users)"))
            .get_result(&mut db)
            .await
            .optional()
            .unwrap();
        assert_eq!(first, Some(0), "the 409's first insert was rolled back");
        drop(db);
        let s = m.stats_of("db").unwrap();
        assert_eq!(
            (s.tx_rolled_back, s.tx_committed, s.active),
            (1, 0, 0),
            "the rollback is counted: {s:?}"
        );
    }

    /// A deferred constraint fails only at COMMIT: the handler answered 201,
    /// the client gets a 500 problem and nothing is stored.
    #[tokio::test]
    async fn a_failed_commit_answers_500_and_stores_nothing() {
        let url = require!(common::pg_url());
        let table = unique("axp_defer");
        let m = pg_pool(
            &url,
            &table,
            "CREATE TABLE {table} (k INT, CONSTRAINT {table}_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await;
        let insert = format!("INSERT INTO {table} VALUES (1); INSERT INTO {table} VALUES (1)");
        let app = Router::new()
            .route(
                "/",
                post(move |mut tx: DbTx<AsyncPgConnection>| async move {
                    tx.batch_execute(&insert).await?;
                    Ok::<_, DbError>(StatusCode::CREATED)
                }),
            )
            .layer(PoolLayer::new(m.clone()));
        let r = app.oneshot(req("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = body_json(r).await;
        assert_eq!(body["type"], "urn:axum-pools:problem:commit-failed");
        assert!(
            !body.to_string().contains("INSERT"),
            "no SQL in the body: {body}"
        );

        let mut tx = DbTx::<AsyncPgConnection>::begin(&m).await.unwrap();
        assert_eq!(count(&mut tx, &table).await, 0);
        tx.rollback().await.unwrap();
        let s = m.stats_of("db").unwrap();
        assert_eq!((s.tx_committed, s.active), (0, 0));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
