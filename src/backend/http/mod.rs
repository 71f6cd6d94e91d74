//! Outbound HTTP pools (feature `http`): real connections to one upstream,
//! opened with hyper's connection API and pooled by the same core as the
//! database pools.
//!
//! - `max_size` caps the open connections; a request that finds none free
//!   waits under `acquire_timeout` and is answered 503 with `Retry-After`
//!   like a database lease (hyper-util's legacy client has no such cap).
//! - Each attempt leases one connection for as long as its response body is
//!   being read; HTTP/1.1 keep-alive connections go back to the pool after.
//! - A connection that closed (the upstream went away, a timed-out attempt
//!   abandoned it) is discarded at its next checkout.
//! - Health: `HEAD {health_path}`, then `GET` if it answers 405. A 5xx fails
//!   the check; another 4xx passes and is shown in the stats as
//!   `health_status`.
//! - Only `http://` upstreams: no TLS stack is compiled in.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    body::Incoming,
    client::conn::{http1, http2},
    header::{HOST, HeaderValue},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

mod client;
mod config;
mod error;
mod response;
mod stats;

use self::stats::HttpCounters;
pub use self::{
    client::{HttpClient, RequestBuilder},
    config::HttpConfig,
    error::HttpError,
    response::{ConnectionGuard, HttpResponse},
    stats::HttpStats,
};
use crate::pool::Backend;

/// One open connection to the upstream.
pub(crate) struct HttpConnection {
    sender: Sender,
    /// Set when an attempt was abandoned mid-flight: the connection's state
    /// is unknown, so it is never reused.
    pub(crate) poisoned: bool,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl HttpConnection {
    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends one request on this connection.
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

/// The backend of an HTTP pool.
pub(crate) struct Http {
    /// `host:port` to connect to.
    addr: String,
    pub(crate) authority: HeaderValue,
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
            .parse()
            .map_err(|e| format!("base_url is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https upstreams are not supported yet (no TLS stack is compiled in); use http://"
                        .into(),
                );
            }
            _ => return Err("base_url must start with http://".into()),
        }
        let authority = uri.authority().ok_or("base_url has no host")?.clone();
        if authority.as_str().contains('@') {
            return Err("base_url must not carry credentials; send them as a header".into());
        }
        let port = authority.port_u16().unwrap_or(80);
        let addr = format!("{}:{port}", authority.host());
        Ok(Self {
            addr,
            authority: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            counters: Arc::default(),
            health_note: Mutex::new(None),
            config,
        })
    }

    /// The request URI for `path_and_query` (which starts with '/').
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        let full = format!("{}{path_and_query}", self.base_path);
        let uri = if self.config.http2 {
            format!(
                "http://{}{full}",
                self.authority.to_str().unwrap_or_default()
            )
        } else {
            full
        };
        uri.parse()
            .map_err(|e| format!("invalid path {path_and_query:?}: {e}"))
    }

    pub(crate) fn request(
        &self,
        method: Method,
        uri: Uri,
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers.clone();
        if !self.config.http2 {
            request.headers_mut().insert(HOST, self.authority.clone());
        }
        if self.config.http2 {
            *request.version_mut() = hyper::Version::HTTP_2;
        }
        request
    }

    async fn probe(&self, conn: &mut HttpConnection, method: Method) -> Result<StatusCode, String> {
        let uri = self.uri(&self.config.health_path)?;
        let request = self.request(method, uri, &hyper::HeaderMap::new(), Bytes::new());
        let response = conn.send(request).await.map_err(|e| e.to_string())?;
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

    async fn connect(&self) -> Result<HttpConnection, String> {
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
        let io = TokioIo::new(stream);
        let sender = if self.config.http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::H2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::H1(sender)
        };
        Ok(HttpConnection {
            sender,
            poisoned: false,
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
        conn.poisoned || conn.is_closed()
    }

    fn required_at_build(&self) -> bool {
        false
    }

    async fn server_info(&self, _conn: &mut HttpConnection) -> Option<BTreeMap<String, String>> {
        let mut info = BTreeMap::from([("upstream".to_owned(), self.addr.clone())]);
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

    fn http_stats(&self) -> Option<HttpStats> {
        Some(self.counters.snapshot())
    }
}
