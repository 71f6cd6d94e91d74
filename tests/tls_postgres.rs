//! Postgres over TLS against real servers this test starts: a throwaway
//! cluster with `ssl = on` that accepts `hostssl` only, and one without TLS.
//! The CA and the server certificate (for `localhost` only) are made here
//! with rcgen. Each libpq `sslmode` is tried as a user would write it.
#![cfg(feature = "postgres")]

mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum_pools::{DbConfig, DbConn, PoolManager};
use common::certs::{Certs, make_certs, tls_in_stats};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A throwaway cluster on a free port, run as the `postgres` user (the
/// server refuses root). `None` (skipped) when initdb is missing outside CI.
struct Cluster {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    let mut found: Vec<PathBuf> = versions
        .flatten()
        .map(|v| v.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// `program` as the `postgres` user; `setpriv` execs it (`runuser` would
/// fork, and killing it would leave the server running).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

fn start_cluster(tls: Option<&Certs>) -> Option<Cluster> {
    let (Some(initdb), Some(postgres)) = (pg_bin("initdb"), pg_bin("postgres")) else {
        assert!(
            !common::in_ci(),
            "initdb/postgres not found under /usr/lib/postgresql"
        );
        eprintln!("skipping: no initdb");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let chown = |p: &Path| {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", p.display());
    };
    chown(dir.path());
    let ok = as_postgres(&initdb)
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "initdb failed");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conf = format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
        dir.path().display()
    );
    let hba = match tls {
        Some(certs) => {
            std::fs::copy(&certs.cert, data.join("server.crt")).unwrap();
            std::fs::copy(&certs.key, data.join("server.key")).unwrap();
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            "hostssl all all 127.0.0.1/32 trust\n"
        }
        None => "host all all 127.0.0.1/32 trust\n",
    };
    std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    chown(dir.path());
    let key = data.join("server.key");
    if key.exists() {
        let ok = Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let mut child = as_postgres(&postgres)
        .arg("-D")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Listening is not accepting yet: give startup a moment.
            std::thread::sleep(Duration::from_millis(200));
            return Some(Cluster {
                child,
                port,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the throwaway cluster did not listen on {port}");
}

async fn build(url: String) -> Result<PoolManager, axum_pools::PoolError> {
    PoolManager::builder()
        .database::<AsyncPgConnection>(
            "tls",
            DbConfig::from_url(url)
                .max_size(2)
                .acquire_timeout(Duration::from_secs(5)),
        )
        .build()
        .await
}

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

    // verify-full with the right CA and the certificate's name.
    let m = build(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert_eq!(server_says_ssl(&m).await, "TLSv1.3");
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("TLSv1.3"));

    // verify-full with another CA: not trusted, and the message says what to do.
    let other = certs.other_ca.display().to_string();
    let e = build(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not trusted: unknown issuer"), "{e}");
    assert!(e.contains("set sslrootcert or SSL_CERT_FILE"), "{e}");
    assert!(e.contains("failed to set up pool 'tls'"), "{e}");

    // verify-full by an address the certificate does not name.
    let e = build(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("host name mismatch"), "{e}");

    // verify-ca checks the chain only: the same address passes...
    let m = build(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert_eq!(server_says_ssl(&m).await, "TLSv1.3");
    // ...but not with a CA that did not sign the certificate.
    let e = build(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown issuer"), "{e}");

    // require encrypts without checking; prefer (the default) too.
    for query in ["sslmode=require", "sslmode=prefer", ""] {
        let m = build(url("127.0.0.1", query)).await.unwrap();
        assert_eq!(server_says_ssl(&m).await, "TLSv1.3", "{query:?}");
    }

    // disable: this server accepts hostssl only.
    let e = build(url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no encryption"), "{e}");
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
    let m = build(url("sslmode=prefer")).await.unwrap();
    assert_eq!(server_says_ssl(&m).await, "off");
    assert_eq!(tls_in_stats(&m, "tls").as_deref(), Some("off"));

    let e = build(url("sslmode=require")).await.unwrap_err().to_string();
    assert!(
        e.contains("server does not support TLS but sslmode=require"),
        "{e}"
    );
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
