//! Outbound HTTP pools (feature `http`): real connections to one upstream,
//! opened with hyper's connection API, pooled by the same core as the
//! database pools, and used through a request path built from tower parts.
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use axum_pools::{HttpClient, HttpConfig, HttpError, PoolLayer, PoolManager, pool_name};
//!
//! pool_name!(Billing = "billing");
//!
//! async fn invoice(billing: HttpClient<Billing>) -> Result<Json<serde_json::Value>, HttpError> {
//!     Ok(Json(billing.get("/invoices/1").send().await?.json().await?))
//! }
//!
//! # async fn demo() -> Result<(), axum_pools::PoolError> {
//! let manager = PoolManager::builder()
//!     .http("billing", HttpConfig::new("http://billing.internal:8080").max_size(16))
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/invoice", get(invoice))
//!     .layer(PoolLayer::new(manager));
//! # Ok(()) }
//! ```
//!
//! One [`send`](RequestBuilder::send) runs through this stack, outermost
//! first:
//!
//! | layer | from | does |
//! |---|---|---|
//! | `FollowRedirect` | tower-http | only when `max_redirects > 0`; same origin only; 303 (and 301/302 after a `POST`) becomes a `GET` without body |
//! | `Retry` | tower | idempotent methods (all with `retry_non_idempotent`); on no response (a connection that could not be opened, a reset), a timeout, 502, 503 or 504; not on the pool's own refusals (`acquire_timeout`, shedding, an open breaker, drain); at most `retries` times, exponential backoff from `retry_backoff` with jitter |
//! | leasing | here | leases a connection (`acquire_timeout`, breaker, load shedding, drain), counts the attempt, tells the breaker its outcome |
//! | `Timeout` | tower | `request_timeout` (or the pool's shorter `query_timeout`) on one attempt, from sending until the response head |
//! | send | here | sends on the leased connection (hyper `client::conn`) |
//!
//! - `max_size` caps the open connections; a request that finds none free
//!   waits under `acquire_timeout` and is answered 503 with `Retry-After`
//!   like a database lease (hyper-util's legacy client has no such cap).
//! - The response body ([`HttpBody`]) holds the lease until it has been
//!   read to its end. A connection is *in doubt* from the moment a request is
//!   sent on it until then: if its body is dropped unread, fails, or the
//!   request is cancelled or times out, the connection is discarded, never
//!   handed to the next request.
//! - A connection that closed (the upstream went away) is discarded at its
//!   next checkout. When the upstream closes an idle connection just as it
//!   is leased (its keep-alive timeout), hyper gives the request back
//!   unsent: it goes out on another connection, whatever its method, and
//!   counts as neither a retry nor an error. A request already written when
//!   the close is seen may have reached the upstream: it fails, and only
//!   `Retry` sends it again.
//! - Health: `HEAD {health_path}`, then `GET` if it answers 405. A 5xx fails
//!   the check; another 4xx passes and is shown in the stats as
//!   `health_status`.
//! - `https://` upstreams speak TLS on the crate's one stack (rustls with
//!   `ring`), checking the certificate and host name against the
//!   platform's roots (`SSL_CERT_FILE` honoured) and `tls_ca_file`, and
//!   offer ALPN `h2` and `http/1.1`: each connection speaks what the
//!   upstream picked. `http2` is for plaintext (prior knowledge). Stats show
//!   `tls`: the TLS version, or `off`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri, Version,
    body::Incoming,
    client::conn::{http1, http2},
    header::{HOST, HeaderValue},
    http::uri::{self, Authority, PathAndQuery, Scheme},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

mod client;
mod config;
mod error;
mod response;
mod service;
mod stats;

use self::stats::HttpCounters;
pub use self::{
    client::{HttpClient, RequestBuilder},
    config::HttpConfig,
    error::HttpError,
    response::{ConnectionGuard, HttpBody, HttpResponse},
    stats::HttpStats,
};
use crate::pool::Backend;

/// One open connection to the upstream.
#[doc(hidden)]
#[allow(missing_debug_implementations)] // holds hyper's senders only
pub struct HttpConnection {
    sender: Sender,
    /// The TLS version, for an `https://` upstream.
    tls: Option<String>,
    /// Set when a request is sent on it; cleared only when its response
    /// body has been read to its end. Still set when the lease returns (the
    /// body dropped unread or failed, the attempt cancelled or timed out),
    /// the connection's state is unknown and it is discarded.
    pub(crate) in_doubt: bool,
    /// Set once a response has come on it: a request it gives back unsent
    /// then means the upstream closed it while it sat idle.
    served: bool,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl HttpConnection {
    /// Whether the connection speaks HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends one request on this connection. On failure, the request comes
    /// back with the error when hyper never wrote it (the connection closed
    /// before it went out).
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, (hyper::Error, Option<Request<Full<Bytes>>>)> {
        let sent = match &mut self.sender {
            Sender::H1(s) => match s.ready().await {
                Ok(()) => s.try_send_request(request).await,
                Err(e) => return Err((e, Some(request))),
            },
            Sender::H2(s) => match s.ready().await {
                Ok(()) => s.try_send_request(request).await,
                Err(e) => return Err((e, Some(request))),
            },
        };
        match sent {
            Ok(response) => {
                self.served = true;
                Ok(response)
            }
            Err(mut e) => {
                let unsent = e.take_message();
                Err((e.into_error(), unsent))
            }
        }
    }

    /// Whether a response has come on this connection before.
    pub(crate) fn served(&self) -> bool {
        self.served
    }
}

/// The backend of an HTTP pool.
#[doc(hidden)]
#[allow(missing_debug_implementations)] // its config's Debug is redacted, but nothing needs it
pub struct Http {
    /// `host:port` to connect to.
    addr: String,
    /// `http` or `https`.
    scheme: Scheme,
    /// For `https://`: the rustls config and the name the certificate must
    /// carry.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The base URL's `host[:port]` as the `Host` header of HTTP/1.1
    /// requests.
    pub(crate) authority: HeaderValue,
    /// The same, parsed once, as the authority of each request's absolute
    /// URI (kept beside the header: neither converts to the other without
    /// a parse).
    uri_authority: Authority,
    /// Base path without a trailing '/', e.g. `/api` or ``.
    pub(crate) base_path: String,
    pub(crate) config: HttpConfig,
    pub(crate) counters: Arc<HttpCounters>,
    /// What the last health check answered when it was not a 2xx/3xx.
    health_note: Mutex<Option<String>>,
}

impl Http {
    pub(crate) fn new(config: HttpConfig) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let uri: Uri = config
            .base_url
            .expose_secret()
            .parse()
            .map_err(|e| format!("base_url is not a URL: {e}"))?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, 80),
            Some("https") => (Scheme::HTTPS, 443),
            _ => return Err("base_url must start with http:// or https://".into()),
        };
        let authority = uri.authority().ok_or("base_url has no host")?;
        if authority.as_str().contains('@') {
            return Err("base_url must not carry credentials; send them as a header".into());
        }
        // Host names are case-insensitive, and tower-http compares a
        // redirect's origin (which the `url` crate lowercases) with the
        // request's as written: `Billing.internal` would match nothing.
        let authority = Authority::try_from(authority.as_str().to_ascii_lowercase())
            .map_err(|e| format!("base_url's host: {e}"))?;
        // It would be dropped: requests take only the base URL's path.
        if uri.query().is_some() {
            return Err(
                "base_url must not carry a query; add it to each request's path, or send a key as a header"
                    .into(),
            );
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let addr = format!("{}:{port}", authority.host());
        let tls = if scheme == Scheme::HTTPS {
            let files = crate::tls::Files {
                ca: config.tls_ca_file.clone(),
                cert: config.tls_client_cert.clone(),
                key: config.tls_client_key.clone(),
            };
            let client =
                crate::tls::client_config(crate::tls::Verify::Full, &files, &[b"h2", b"http/1.1"])
                    .map_err(|e| knob_names(&e))?;
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("base_url's host {host:?}: {e}"))?;
            Some((client, name))
        } else {
            None
        };
        Ok(Self {
            addr,
            scheme,
            tls,
            authority: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            uri_authority: authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            counters: Arc::default(),
            health_note: Mutex::new(None),
            config,
        })
    }

    /// The absolute URI of `path_and_query` (which starts with '/' or '?')
    /// under the base URL; [`prepare`](Self::prepare) puts it in the form
    /// the connection speaks. Built from the base URL's parsed scheme and
    /// authority, so only the path is parsed per request.
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        if !path_and_query.is_empty() && !path_and_query.starts_with(['/', '?']) {
            // The path is not repeated: it may carry a key (`?api_key=`)
            // or a token as a segment.
            return Err("the request path must start with '/'".into());
        }
        let path = if self.base_path.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path))
        }
        .map_err(|e| format!("invalid request path ({e}); percent-encode spaces and other characters a URI cannot hold"))?;
        Ok(self.absolute(path))
    }

    /// `path` under the base URL's scheme and authority.
    fn absolute(&self, path: PathAndQuery) -> Uri {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.uri_authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).expect("a scheme, an authority and a path make a URI")
    }

    pub(crate) fn request(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        request
    }

    /// Turns a request with an absolute URI (as the redirect layer needs it)
    /// into what the connection (`h2` or not) sends: HTTP/1.1 in origin
    /// form with `Host`, HTTP/2 absolute. A request a connection gave back
    /// unsent has been prepared once already, maybe for the other protocol.
    pub(crate) fn prepare(&self, request: &mut Request<Full<Bytes>>, h2: bool) {
        if h2 {
            if request.uri().scheme().is_none() {
                // Prepared for HTTP/1.1 before: absolute again, and the
                // `Host` that preparation set goes (`:authority` says it).
                let path = request.uri().path_and_query().cloned();
                *request.uri_mut() =
                    self.absolute(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
                request.headers_mut().remove(HOST);
            }
            *request.version_mut() = Version::HTTP_2;
        } else {
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
            *request.version_mut() = Version::HTTP_11;
            request.headers_mut().insert(HOST, self.authority.clone());
        }
    }

    async fn probe(&self, conn: &mut HttpConnection, method: Method) -> Result<StatusCode, String> {
        let uri = self.uri(&self.config.health_path)?;
        let mut request = self.request(method, uri, HeaderMap::new(), Bytes::new());
        self.prepare(&mut request, conn.is_h2());
        let response = conn.send(request).await.map_err(|(e, _)| e.to_string())?;
        let status = response.status();
        // Read the (empty or small) body so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

impl Backend for Http {
    type Connection = HttpConnection;

    /// An attempt's result is the call: 5xx and no response count as
    /// failures, anything else as success.
    const RECORDS_OUTCOMES: bool = true;

    fn kind(&self) -> &'static str {
        "http"
    }

    /// An HTTP pool bounds each attempt by `request_timeout` (or the pool's
    /// `query_timeout`, when shorter) in its request stack; the
    /// connection's watch is not used.
    async fn connect(
        &self,
        _round_trip: Option<std::sync::Arc<crate::pool::RoundTrip>>,
    ) -> Result<HttpConnection, String> {
        let stream = tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::TcpStream::connect(&self.addr),
        )
        .await
        .map_err(|_| {
            format!(
                "connecting to {} timed out after {}",
                self.addr,
                humantime::format_duration(self.config.connect_timeout)
            )
        })?
        .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            let sender = handshake(TokioIo::new(stream), self.config.http2).await?;
            return Ok(HttpConnection {
                sender,
                tls: None,
                in_doubt: false,
                served: false,
            });
        };
        let connecting =
            tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), stream);
        let tls = tokio::time::timeout(self.config.connect_timeout, connecting)
            .await
            .map_err(|_| format!("TLS handshake with {} timed out", self.addr))?
            .map_err(|e| match crate::tls::reason(&e) {
                Some(reason) => knob_names(&reason),
                None => format!("TLS handshake with {}: {e}", self.addr),
            })?;
        let session = tls.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let version = session.protocol_version().map(crate::tls::version_name);
        let sender = handshake(TokioIo::new(tls), h2).await?;
        Ok(HttpConnection {
            sender,
            tls: version,
            in_doubt: false,
            served: false,
        })
    }

    /// Validation of an idle connection: local (is it still open?), no
    /// request sent; the health check sends one.
    async fn ping(&self, conn: &mut HttpConnection) -> Result<(), String> {
        if conn.is_closed() {
            Err("connection closed".into())
        } else {
            Ok(())
        }
    }

    async fn health_check(&self, conn: &mut HttpConnection) -> Result<(), String> {
        let path = &self.config.health_path;
        let mut status = self.probe(conn, Method::HEAD).await?;
        let mut method = "HEAD";
        if status == StatusCode::METHOD_NOT_ALLOWED {
            status = self.probe(conn, Method::GET).await?;
            method = "GET";
        }
        if status.is_server_error() {
            return Err(format!("{method} {path} answered {status}"));
        }
        *self.health_note.lock().unwrap_or_else(|e| e.into_inner()) =
            (status.is_client_error()).then(|| format!("{method} {path} answered {status}"));
        Ok(())
    }

    fn is_broken(&self, conn: &mut HttpConnection) -> bool {
        conn.in_doubt || conn.is_closed()
    }

    fn required_at_build(&self) -> bool {
        false
    }

    async fn server_info(&self, conn: &mut HttpConnection) -> Option<BTreeMap<String, String>> {
        let mut info = BTreeMap::from([
            ("upstream".to_owned(), self.addr.clone()),
            (
                "tls".to_owned(),
                conn.tls.clone().unwrap_or_else(|| "off".to_owned()),
            ),
        ]);
        if let Some(note) = self
            .health_note
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            info.insert("health_status".to_owned(), note);
        }
        Some(info)
    }

    const COMPONENT_TYPE: &'static str = "component";

    fn fill_stats(&self, snapshot: &mut crate::stats::StatsSnapshot) {
        snapshot.http = Some(self.counters.snapshot());
    }
}

/// hyper's client handshake on `io`: HTTP/2 or HTTP/1.1; the connection
/// task is spawned.
async fn handshake<T>(io: T, h2: bool) -> Result<Sender, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    Ok(if h2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Sender::H2(sender)
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Sender::H1(sender)
    })
}

impl crate::manager::PoolManagerBuilder {
    /// Registers an outbound HTTP pool called `name` (feature `http`);
    /// handlers take [`HttpClient`](crate::HttpClient) with a marker naming it.
    ///
    /// ```no_run
    /// use axum_pools::{HttpConfig, PoolManager};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .http("billing", HttpConfig::new("http://billing.internal:8080").max_size(32))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Unlike a database, an upstream that is down does not fail the build:
    /// its pool starts unhealthy and recovers when the upstream does.
    pub fn http(self, name: impl Into<String>, config: HttpConfig) -> Self {
        let url = config.base_url.clone();
        let pool = config.pool.clone();
        self.register(
            name.into(),
            Http::new(config),
            &url,
            pool,
            crate::Hooks::new(),
        )
    }
}

/// A TLS message in this pool's own knob names (the TLS module speaks
/// libpq's: `sslrootcert`, `sslcert`, `sslkey`).
fn knob_names(text: &str) -> String {
    text.replace("sslrootcert", "tls_ca_file")
        .replace("sslcert", "tls_client_cert")
        .replace("sslkey", "tls_client_key")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request a connection gives back unsent is prepared again for the
    /// next connection, which may speak the other protocol.
    #[test]
    fn a_request_prepared_for_one_protocol_is_prepared_again_for_the_other() {
        let http = Http::new(HttpConfig::new("https://Api.Example:8443/v1")).unwrap();
        let fresh = || {
            let uri = http.uri("/items?page=2").unwrap();
            http.request(Method::POST, uri, HeaderMap::new(), Bytes::new())
        };

        let mut request = fresh();
        http.prepare(&mut request, false);
        assert_eq!(request.uri(), "/v1/items?page=2");
        assert_eq!(request.headers()[HOST], "api.example:8443");
        http.prepare(&mut request, true);
        assert_eq!(request.uri(), "https://api.example:8443/v1/items?page=2");
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(request.headers().get(HOST).is_none());

        let mut request = fresh();
        http.prepare(&mut request, true);
        http.prepare(&mut request, false);
        assert_eq!(request.uri(), "/v1/items?page=2");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()[HOST], "api.example:8443");
    }
}
