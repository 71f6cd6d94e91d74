//! Postgres over TLS against real servers this test starts: a throwaway
//! cluster with `ssl = on` that accepts `hostssl` only, and one without TLS.
//! The CA and the server certificate (for `localhost` only) are made here
//! with rcgen. Each libpq `sslmode` is tried as a user would write it.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use axum_pools::{DbConfig, DbConn, PoolManager};
use common::{
    certs::{make_certs, tls_in_stats},
    servers::{start_cluster, start_cluster_with},
};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

async fn build(url: String) -> Result<PoolManager, axum_pools::PoolError> {
    build_with(url, None).await
}

/// With `query_timeout` the crate opens the socket and negotiates TLS
/// itself (its watch reads the protocol above TLS); without, the driver
/// does. Every `sslmode` must behave the same both ways.
async fn build_with(
    url: String,
    query_timeout: Option<Duration>,
) -> Result<PoolManager, axum_pools::PoolError> {
    PoolManager::builder()
        .database::<AsyncPgConnection>(
            "tls",
            DbConfig::from_url(url)
                .max_size(2)
                .acquire_timeout(Duration::from_secs(5))
                .query_timeout(query_timeout),
        )
        .build()
        .await
}

const BOTH_WAYS: [Option<Duration>; 2] = [None, Some(Duration::from_secs(5))];

/// The server's own view: is this session encrypted?
async fn server_says_ssl(manager: &PoolManager) -> String {
    let mut db = DbConn::<AsyncPgConnection>::acquire(manager).await.unwrap();
    diesel::select(
        diesel::dsl::sql::<Text>(
            "(SELECT CASE WHEN ssl THEN version ELSE 'off' END FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
        ),
    )
    .get_result::<String>(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn each_sslmode_against_a_tls_only_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some(server) = start_cluster(Some(&certs)) else {
        return;
    };
    let url = |host: &str, query: &str| {
        format!(
            "postgres://postgres@{host}:{}/postgres?{query}",
            server.port
        )
    };
    let ca = certs.ca.display().to_string();
    for query_timeout in BOTH_WAYS {
        eprintln!("query_timeout: {query_timeout:?}");
        // verify-full with the right CA and the certificate's name.
        let m = build_with(
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            query_timeout,
        )
        .await
        .unwrap();
        assert_eq!(server_says_ssl(&m).await, "TLSv1.3");
        assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("TLSv1.3"));

        // verify-full with another CA: not trusted, and the message says what to do.
        let other = certs.other_ca.display().to_string();
        let e = build_with(
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            query_timeout,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("not trusted: unknown issuer"), "{e}");
        assert!(e.contains("set sslrootcert or SSL_CERT_FILE"), "{e}");
        assert!(e.contains("failed to set up pool 'tls'"), "{e}");

        // verify-full by an address the certificate does not name.
        let e = build_with(
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            query_timeout,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("host name mismatch"), "{e}");

        // verify-ca checks the chain only: the same address passes...
        let m = build_with(
            url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            query_timeout,
        )
        .await
        .unwrap();
        assert_eq!(server_says_ssl(&m).await, "TLSv1.3");
        // ...but not with a CA that did not sign the certificate.
        let e = build_with(
            url(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
            query_timeout,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown issuer"), "{e}");
        // ...and never against the platform's roots: without the name, any
        // publicly trusted certificate would pass.
        let e = build_with(url("127.0.0.1", "sslmode=verify-ca"), query_timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=verify-ca needs sslrootcert"), "{e}");

        // require encrypts without checking; prefer (the default) too.
        for query in ["sslmode=require", "sslmode=prefer", ""] {
            let m = build_with(url("127.0.0.1", query), query_timeout)
                .await
                .unwrap();
            assert_eq!(server_says_ssl(&m).await, "TLSv1.3", "{query:?}");
        }

        // disable: this server accepts hostssl only.
        let e = build_with(url("127.0.0.1", "sslmode=disable"), query_timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no encryption"), "{e}");
    }
}

#[tokio::test]
async fn a_server_without_tls_prefer_falls_back_and_require_says_why() {
    let Some(server) = start_cluster(None) else {
        return;
    };
    let url = |query: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            server.port
        )
    };
    for query_timeout in BOTH_WAYS {
        eprintln!("query_timeout: {query_timeout:?}");
        let m = build_with(url("sslmode=prefer"), query_timeout)
            .await
            .unwrap();
        assert_eq!(server_says_ssl(&m).await, "off");
        assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("off"));

        let e = build_with(url("sslmode=require"), query_timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server does not support TLS but sslmode=require"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn bad_tls_settings_fail_the_build_naming_the_setting() {
    let e = build("postgres://postgres@127.0.0.1:1/postgres?sslmode=verify-everything".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sslmode=verify-everything: must be one of disable, prefer, require, verify-ca, verify-full"),
        "{e}"
    );
    let e = build(
        "postgres://postgres@127.0.0.1:1/postgres?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
            .into(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some(server) = start_cluster_with(Some(&certs), "cert") else {
        return;
    };
    let base = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port,
        certs.ca.display()
    );

    // sslcert + sslkey: the server checks the chain and takes the user from
    // the certificate's common name.
    let m = build(base.clone() + &certs.client_params("sslcert", "sslkey"))
        .await
        .unwrap();
    let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
    let dn: String = diesel::select(diesel::dsl::sql::<Text>(
        "(SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
    ))
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(dn, "/CN=postgres");

    // Without one, the server's refusal reaches the user.
    let e = build(base.clone()).await.unwrap_err().to_string();
    assert!(e.contains("failed to set up pool 'tls'"), "{e}");
    assert!(e.contains("requires a valid client certificate"), "{e}");

    // The key of another certificate is refused before any connection.
    let e = build(format!(
        "{base}&sslcert={}&sslkey={}",
        certs.client_cert.display(),
        certs.key.display()
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("sslcert/sslkey"), "{e}");
}
