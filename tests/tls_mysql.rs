//! MySQL/MariaDB over TLS against a throwaway MariaDB this test starts
//! (`mariadb-install-db` into a temp dir, its own port) with a CA and a
//! `localhost` certificate made here; and against the shared server, which
//! has no TLS.
#![cfg(feature = "mysql")]

mod common;

use axum_pools::{DbConfig, DbConn, PoolManager};
use common::{
    certs::{make_certs, tls_in_stats},
    servers::mariadb,
};
use diesel::sql_types::Text;
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

async fn build(url: String) -> Result<PoolManager, axum_pools::PoolError> {
    PoolManager::builder()
        .database::<AsyncMysqlConnection>("tls", DbConfig::from_url(url).max_size(2))
        .build()
        .await
}

/// The build error of a pool at `url`, as text.
async fn refused(url: String) -> String {
    build(url).await.unwrap_err().to_string()
}

/// The server's view of the session's cipher ("" when plaintext).
async fn cipher(manager: &PoolManager) -> String {
    let mut db = DbConn::<AsyncMysqlConnection>::acquire(manager)
        .await
        .unwrap();
    diesel::select(diesel::dsl::sql::<Text>(
        "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher')",
    ))
    .get_result::<String>(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn each_ssl_mode_against_a_tls_only_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some((_server, port)) = mariadb(&certs, dir.path(), None) else {
        return;
    };
    let url = |host: &str, query: &str| format!("mysql://root@{host}:{port}/mysql?{query}");
    let ca = certs.ca.display().to_string();

    let m = build(url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    ))
    .await
    .unwrap();
    assert!(!cipher(&m).await.is_empty());
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("on"));

    let other = certs.other_ca.display().to_string();
    let e = refused(url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={other}"),
    ))
    .await;
    assert!(e.contains("not trusted: unknown issuer; set ssl-ca"), "{e}");

    // VERIFY_CA checks the chain, not the name: the certificate names
    // `localhost` only, so by 127.0.0.1 VERIFY_IDENTITY fails and VERIFY_CA
    // passes, for every connection of the pool (two held at once), with
    // and without the relay of `query_timeout`.
    let e = refused(url(
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    ))
    .await;
    assert!(e.contains("host name mismatch"), "{e}");
    assert!(e.contains("or use ssl-mode=VERIFY_CA"), "{e}");
    let verify_ca = url("127.0.0.1", &format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"));
    for query_timeout in [None, Some(std::time::Duration::from_secs(5))] {
        let m = PoolManager::builder()
            .database::<AsyncMysqlConnection>(
                "tls",
                DbConfig::from_url(verify_ca.as_str())
                    .max_size(2)
                    .query_timeout(query_timeout),
            )
            .build()
            .await
            .unwrap();
        let first = DbConn::<AsyncMysqlConnection>::acquire(&m).await.unwrap();
        assert!(!cipher(&m).await.is_empty(), "{query_timeout:?}");
        drop(first);
        assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("on"));
    }
    // ... and still refuses a chain it does not trust, in its own words.
    let e = refused(url(
        "127.0.0.1",
        &format!("ssl-mode=VERIFY_CA&ssl-ca={other}"),
    ))
    .await;
    assert!(e.contains("not trusted: unknown issuer; set ssl-ca"), "{e}");
    assert!(e.contains("(ssl-mode=VERIFY_CA)"), "{e}");

    for query in ["ssl-mode=REQUIRED", "ssl-mode=PREFERRED", ""] {
        let m = build(url("127.0.0.1", query)).await.unwrap();
        assert!(!cipher(&m).await.is_empty(), "{query:?}");
    }

    // DISABLED: plaintext, though the server offers TLS. (With
    // `--skip-grant-tables` MariaDB does not enforce
    // `require_secure_transport`, so the server lets it in.)
    let m = build(url("127.0.0.1", "ssl-mode=DISABLED")).await.unwrap();
    assert_eq!(cipher(&m).await, "");
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("off"));
}

/// `VERIFY_CA` keeps the name it found for the pool's next connections;
/// when the server's certificate is renewed for another name (same CA), a
/// new connection fails on the kept name, and the pool looks again and
/// connects.
#[tokio::test]
async fn verify_ca_follows_a_certificate_renewed_for_another_name() {
    use diesel_async::SimpleAsyncConnection;

    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some((_server, port)) = mariadb(&certs, dir.path(), None) else {
        return;
    };
    let url = format!(
        "mysql://root@127.0.0.1:{port}/mysql?ssl-mode=VERIFY_CA&ssl-ca={}",
        certs.ca.display()
    );
    // One connection at build (`min_size` is 1), up to two.
    let m = build(url).await.unwrap();
    // The one connection so far, held: its certificate named `localhost`.
    let mut first = DbConn::<AsyncMysqlConnection>::acquire(&m).await.unwrap();
    common::certs::renew_server_cert(&certs, "renewed.db.internal");
    first.batch_execute("FLUSH SSL").await.unwrap();
    let created = m.stats_of("tls").unwrap().created;
    let mut second = DbConn::<AsyncMysqlConnection>::acquire(&m).await.unwrap();
    assert_eq!(
        m.stats_of("tls").unwrap().created,
        created + 1,
        "a new connection"
    );
    second.batch_execute("SELECT 1").await.unwrap();
    drop((first, second));
}

#[tokio::test]
async fn the_shared_server_without_tls_prefer_falls_back_and_required_says_why() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let with = |query: &str| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{query}")
    };
    let m = build(with("ssl-mode=PREFERRED")).await.unwrap();
    if !cipher(&m).await.is_empty() {
        eprintln!("skipping: the shared server speaks TLS");
        return;
    }
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("off"));
    let e = refused(with("ssl-mode=REQUIRED")).await;
    assert!(
        e.contains("server does not support TLS but ssl-mode=REQUIRED"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certs(dir.path()).ca;
    let e = refused(with(&format!("ssl-mode=VERIFY_CA&ssl-ca={}", ca.display()))).await;
    assert!(
        e.contains("server does not support TLS but ssl-mode=VERIFY_CA"),
        "{e}"
    );
}

#[tokio::test]
async fn a_client_certificate_logs_in_a_user_created_require_x509() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let init = "CREATE USER 'x509'@'%' REQUIRE X509;\nGRANT ALL ON *.* TO 'x509'@'%';\n";
    let Some((_server, port)) = mariadb(&certs, dir.path(), Some(init)) else {
        return;
    };
    let base = format!(
        "mysql://x509@localhost:{port}/mysql?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        certs.ca.display()
    );

    // An RSA key in PKCS#8 form (the driver itself reads PKCS#1 only).
    let (cert, key) = common::certs::rsa_client(&certs, dir.path());
    let m = build(format!(
        "{base}&ssl-cert={}&ssl-key={}",
        cert.display(),
        key.display()
    ))
    .await
    .unwrap();
    assert!(!cipher(&m).await.is_empty(), "encrypted");
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("on"));

    // VERIFY_CA by an address the certificate does not name: the pool's own
    // look at the chain presents the client certificate too.
    let m = build(format!(
        "mysql://x509@127.0.0.1:{port}/mysql?ssl-mode=VERIFY_CA&ssl-ca={}&ssl-cert={}&ssl-key={}",
        certs.ca.display(),
        cert.display(),
        key.display()
    ))
    .await
    .unwrap();
    assert!(!cipher(&m).await.is_empty(), "encrypted");

    // Without one the server denies the user.
    let e = refused(base.clone()).await;
    assert!(e.contains("failed to set up pool 'tls'"), "{e}");
    assert!(e.contains("Access denied for user 'x509'"), "{e}");

    // An EC key: refused before any connection, saying why.
    let e = refused(base.clone() + &certs.client_params("ssl-cert", "ssl-key")).await;
    assert!(
        e.contains("the MySQL driver takes RSA keys only; use an RSA client certificate"),
        "{e}"
    );

    // A certificate without its key is refused before any connection.
    let e = refused(format!("{base}&ssl-cert={}", certs.client_cert.display())).await;
    assert!(
        e.contains("ssl-cert and ssl-key go together: set both or neither"),
        "{e}"
    );
}
