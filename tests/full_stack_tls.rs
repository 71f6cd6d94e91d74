//! The full_stack example against TLS-only servers, run as an operator runs
//! it: its binary with `DATABASE_URL=…?sslmode=verify-full`,
//! `REDIS_URL=rediss://localhost:P` and `SSL_CERT_FILE` naming the CA
//! answers `/pools/health` 200 with every pool passing; with a CA that did
//! not sign the servers' certificates it exits non-zero, printing the
//! certificate error.
#![cfg(all(feature = "postgres", feature = "redis", feature = "http"))]

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    certs::{KillOnDrop, make_certs},
    example::{free_port, get},
    servers::{redis_tls, start_cluster},
};

#[test]
fn full_stack_over_tls_passes_with_the_ca_and_exits_saying_why_without() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let (Some(pg), Some((_redis, redis_port))) = (start_cluster(Some(&certs)), redis_tls(&certs))
    else {
        return;
    };
    let binary = common::example::binary("full_stack", "postgres,redis,http");
    let run = |ca: &std::path::Path, port: u16| {
        let mut command = Command::new(&binary);
        command
            .env(
                "DATABASE_URL",
                format!(
                    "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
                    pg.port
                ),
            )
            .env("REDIS_URL", format!("rediss://localhost:{redis_port}/0"))
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR")
            .env_remove("UPSTREAM_URL")
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };

    // With the CA: every pool passes, over TLS.
    let port = free_port();
    let mut server = KillOnDrop(run(&certs.ca, port).spawn().unwrap());
    let mut health = None;
    for _ in 0..300 {
        if let Some(status) = server.0.try_wait().unwrap() {
            let mut stderr = String::new();
            server
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("full_stack exited ({status}): {stderr}");
        }
        if let Some(response) = get(port, "/pools/health") {
            health = Some(response);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = health.expect("full_stack did not answer");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"pass""#), "{health}");
    assert!(!health.contains(r#""status":"fail""#), "{health}");
    let stats = get(port, "/pools/stats").unwrap();
    assert!(stats.contains(r#""tls":"TLSv1.3""#), "{stats}");
    assert!(stats.contains(r#""tls":"on""#), "{stats}");
    drop(server);

    // With a CA that did not sign the servers' certificates: exit 1 and why.
    let out = run(&certs.other_ca, free_port()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "server certificate is not trusted: unknown issuer; set sslrootcert or SSL_CERT_FILE"
        ),
        "{stderr}"
    );
}
