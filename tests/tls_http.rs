//! HTTPS upstreams: a server run by this test (tokio-rustls + hyper, HTTP/2
//! and HTTP/1.1 by ALPN) with a CA and a `localhost` certificate made here.
#![cfg(feature = "http")]

mod common;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::Request, routing::get};
use axum_pools::{HttpClient, HttpConfig, HttpError, PoolManager};
use common::certs::{Certs, make_certs};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Serves `/version` (the request's HTTP version) over TLS only, offering
/// `alpn`.
async fn upstream(certs: &Certs, alpn: &[&[u8]]) -> SocketAddr {
    upstream_with(certs, alpn, false).await
}

/// The same; with `client_auth`, only to clients that show a certificate of
/// the test CA.
async fn upstream_with(certs: &Certs, alpn: &[&[u8]], client_auth: bool) -> SocketAddr {
    let chain = CertificateDer::pem_file_iter(&certs.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&certs.ca).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = Router::new().route(
        "/version",
        get(|request: Request| async move { format!("{:?}", request.version()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    addr
}

/// The upstream's `/version` answer.
async fn version(client: &HttpClient) -> String {
    let response = client.get("/version").send().await.unwrap();
    response.text().await.unwrap()
}

async fn client(config: HttpConfig) -> (PoolManager, HttpClient) {
    let manager = PoolManager::builder()
        .http("upstream", config.max_size(2))
        .build()
        .await
        .unwrap();
    let client = HttpClient::from_manager(&manager).unwrap();
    (manager, client)
}

#[tokio::test]
async fn an_https_upstream_speaks_what_alpn_picked_over_a_verified_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    for (alpn, expected) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], "HTTP/2.0"),
        (&[b"http/1.1".as_slice()][..], "HTTP/1.1"),
    ] {
        let addr = upstream(&certs, alpn).await;
        let url = format!("https://localhost:{}", addr.port());
        let (manager, client) = client(HttpConfig::new(&url).tls_ca_file(&certs.ca)).await;
        for _ in 0..2 {
            assert_eq!(version(&client).await, expected);
        }
        let health = manager.check_health().await;
        assert_eq!(health.status, axum_pools::HealthStatus::Pass, "{health:?}");
        let stats = manager.stats_of("upstream").unwrap();
        assert_eq!(
            stats.server.unwrap().get("tls").map(String::as_str),
            Some("TLSv1.3")
        );
        assert_eq!(stats.created, 1, "one connection, reused");
    }
}

#[tokio::test]
async fn an_untrusted_or_misnamed_upstream_fails_the_request_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let addr = upstream(&certs, &[b"h2", b"http/1.1"]).await;

    let url = format!("https://localhost:{}", addr.port());
    let (_m, c) = client(
        HttpConfig::new(&url)
            .tls_ca_file(&certs.other_ca)
            .retries(0),
    )
    .await;
    let e = c.get("/version").send().await.unwrap_err();
    assert!(matches!(e, HttpError::Pool(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("not trusted: unknown issuer; set tls_ca_file or SSL_CERT_FILE"),
        "{text}"
    );

    // The certificate names `localhost`, not `127.0.0.1`.
    let url = format!("https://127.0.0.1:{}", addr.port());
    let (_m, c) = client(HttpConfig::new(&url).tls_ca_file(&certs.ca).retries(0)).await;
    let text = c.get("/version").send().await.unwrap_err().to_string();
    assert!(text.contains("host name mismatch"), "{text}");
}

#[tokio::test]
async fn a_client_certificate_opens_an_upstream_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let addr = upstream_with(&certs, &[b"h2", b"http/1.1"], true).await;
    let url = format!("https://localhost:{}", addr.port());

    let (_m, c) = client(
        HttpConfig::new(&url)
            .tls_ca_file(&certs.ca)
            .tls_client_identity(&certs.client_cert, &certs.client_key),
    )
    .await;
    assert_eq!(version(&c).await, "HTTP/2.0");

    // Without one the upstream refuses, and the error names the knobs.
    let (_m, c) = client(HttpConfig::new(&url).tls_ca_file(&certs.ca).retries(0)).await;
    let text = c.get("/version").send().await.unwrap_err().to_string();
    assert!(
        text.contains("requires a client certificate (TLS alert certificate_required); set tls_client_cert and tls_client_key"),
        "{text}"
    );

    // The key of another certificate fails the build, naming the knobs.
    let e = PoolManager::builder()
        .http(
            "upstream",
            HttpConfig::new(&url).tls_client_identity(&certs.client_cert, &certs.key),
        )
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls_client_cert/tls_client_key"), "{e}");
}
