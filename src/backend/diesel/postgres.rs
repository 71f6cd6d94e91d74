//! Opening Postgres connections, with libpq's TLS parameters (feature
//! `tls`): `sslmode` = `disable` | `prefer` (the default, as in libpq) |
//! `require` | `verify-ca` | `verify-full`, `sslrootcert`, `sslcert`,
//! `sslkey`, in the URL (`postgres://…?sslmode=verify-full&sslrootcert=ca.pem`)
//! or as `key=value` words.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` | if the server offers it, else plaintext | not checked |
//! | `require` | always; a server without TLS is an error | not checked (checked as `verify-ca` when `sslrootcert` is set, as libpq does) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain and host name |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and refuses
//! the other parameters, so they are taken out of the URL here and the TLS
//! is done by this crate's one stack ([`crate::tls`]).

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    Socket,
    config::SslMode,
    tls::{ChannelBinding, MakeTlsConnect, NoTls, TlsConnect},
};

use super::silence::Silence;
use crate::{
    pool::RoundTrip,
    tls::{self, Files, Verify},
};

/// How a Postgres pool opens its connections: the driver's config and, for
/// TLS, the rustls config; made once from the pool's URL.
pub struct PgConnector {
    config: tokio_postgres::Config,
    mode: Mode,
    tls: Option<MakeRustls>,
}

/// Not derived: the driver's config holds the password.
impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("sslmode", &self.mode.name())
            .finish_non_exhaustive()
    }
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other}: must be one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl super::Connect<AsyncPgConnection> for PgConnector {
    /// Parses `url`, taking libpq's TLS parameters out of it.
    fn new(url: &str) -> Result<Self, String> {
        let (rest, params) = take_ssl_params(url)?;
        let mut mode = Mode::Prefer;
        let mut files = Files::default();
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => mode = Mode::parse(&value)?,
                "sslrootcert" => files.ca = Some(PathBuf::from(value)),
                "sslcert" => files.cert = Some(PathBuf::from(value)),
                "sslkey" => files.key = Some(PathBuf::from(value)),
                _ => unreachable!("take_ssl_params returns only these"),
            }
        }
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("invalid connection string: {e}"))?;
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        // libpq: `require` with a root certificate checks the chain.
        let verify = match mode {
            Mode::Disable => None,
            Mode::Prefer => Some(Verify::Nothing),
            Mode::Require if files.ca.is_some() => Some(Verify::Chain),
            Mode::Require => Some(Verify::Nothing),
            Mode::VerifyCa => Some(Verify::Chain),
            Mode::VerifyFull => Some(Verify::Full),
        };
        let tls = match verify {
            None => None,
            Some(verify) => Some(MakeRustls {
                config: tls::client_config(verify, &files, &[b"postgresql"])?,
                version: Arc::default(),
            }),
        };
        Ok(Self { config, mode, tls })
    }

    /// Opens one connection; the error names the TLS reason when there is
    /// one.
    async fn connect(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> Result<AsyncPgConnection, String> {
        if let Some(round_trip) = round_trip {
            return self.connect_watched(round_trip).await;
        }
        let connected = match &self.tls {
            None => match self.config.connect(NoTls).await {
                Ok((client, conn)) => {
                    AsyncPgConnection::try_from_client_and_connection(client, conn).await
                }
                Err(e) => return Err(self.explain(&e)),
            },
            Some(tls) => match self.config.connect(tls.clone()).await {
                Ok((client, conn)) => {
                    AsyncPgConnection::try_from_client_and_connection(client, conn).await
                }
                Err(e) => return Err(self.explain(&e)),
            },
        };
        connected.map_err(|e| e.to_string())
    }

    /// The TLS version of the last connection opened, or `off`.
    fn transport(&self) -> Option<String> {
        Some(
            self.tls
                .as_ref()
                .and_then(|tls| {
                    tls.version
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                })
                .unwrap_or_else(|| "off".to_owned()),
        )
    }
}

impl PgConnector {
    /// With `query_timeout`: the server's `statement_timeout` set at
    /// startup, and the socket, opened here, wrapped in [`Silence`]. The
    /// connection is then driven by a task of ours instead of
    /// diesel-async's, which takes tokio-postgres' own socket type only; so
    /// diesel-async's LISTEN/NOTIFY stream is not fed on such a pool.
    async fn connect_watched(
        &self,
        round_trip: Arc<RoundTrip>,
    ) -> Result<AsyncPgConnection, String> {
        let mut config = self.config.clone();
        let timeout = format!(
            "-c statement_timeout={}",
            round_trip.limit().as_millis().max(1)
        );
        let options = match config.get_options() {
            Some(options) => format!("{options} {timeout}"),
            None => timeout,
        };
        config.options(&options);
        let (socket, host) = open_socket(&config).await?;
        let socket = Silence::new(socket, round_trip);
        let client = match &self.tls {
            None => connect_driven(&config, socket, NoTls).await,
            Some(tls) => {
                let connect = RustlsConnect {
                    make: tls.clone(),
                    host,
                };
                connect_driven(&config, socket, connect).await
            }
        }
        .map_err(|e| self.explain(&e))?;
        AsyncPgConnection::try_from(client)
            .await
            .map_err(|e| e.to_string())
    }

    fn explain(&self, e: &tokio_postgres::Error) -> String {
        if let Some(reason) = tls::reason(e) {
            return format!("{reason} (sslmode={})", self.mode.name());
        }
        // tokio-postgres puts the detail ("no pg_hba.conf entry …", "server
        // does not support TLS") in the error's sources.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if text.contains("server does not support TLS") {
            return format!(
                "server does not support TLS but sslmode={}; enable ssl on the server or use sslmode=prefer",
                self.mode.name()
            );
        }
        text
    }
}

/// What a TLS session can run over.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A socket to the server, of either kind.
enum PgSocket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// Calls `$method` on whichever socket `$self` is.
macro_rules! on_socket {
    ($self:expr, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            PgSocket::Tcp(s) => Pin::new(s).$method($($arg),*),
            #[cfg(unix)]
            PgSocket::Unix(s) => Pin::new(s).$method($($arg),*),
        }
    };
}

impl AsyncRead for PgSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_socket!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for PgSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_socket!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_socket!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_socket!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_socket!(self, poll_shutdown(cx))
    }
}

/// Opens a socket to the first of `config`'s hosts that answers, as
/// tokio-postgres would (`hostaddr`, per-host ports, `connect_timeout`);
/// also the host name, for TLS.
async fn open_socket(config: &tokio_postgres::Config) -> Result<(PgSocket, String), String> {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let mut failed = "no host in the connection string".to_owned();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = async {
            match host {
                Host::Tcp(name) => {
                    let stream = match config.get_hostaddrs().get(i) {
                        Some(addr) => tokio::net::TcpStream::connect((*addr, port)).await,
                        None => tokio::net::TcpStream::connect((name.as_str(), port)).await,
                    }?;
                    stream.set_nodelay(true)?;
                    Ok::<_, io::Error>((PgSocket::Tcp(stream), name.clone()))
                }
                #[cfg(unix)]
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok((PgSocket::Unix(stream), String::new()))
                }
            }
        };
        let opened = match config.get_connect_timeout() {
            Some(limit) => tokio::time::timeout(*limit, attempt)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => attempt.await,
        };
        match opened {
            Ok(opened) => return Ok(opened),
            Err(e) => failed = format!("error connecting to server: {e}"),
        }
    }
    Err(failed)
}

/// Connects over `socket` and drives the connection on a task of ours.
async fn connect_driven<T>(
    config: &tokio_postgres::Config,
    socket: Silence<PgSocket>,
    tls: T,
) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    T: TlsConnect<Silence<PgSocket>>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect_raw(socket, tls).await?;
    tokio::spawn(drive(connection));
    Ok(client)
}

/// Drives a connection opened by [`PgConnector::connect_watched`] until its
/// client is dropped or the socket fails.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

/// Splits libpq's TLS parameters off `url` (URL query or `key=value`
/// words): the rest for tokio-postgres, and the parameters.
fn take_ssl_params(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), taken));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if KEYS.contains(&key) {
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| format!("{key}: the value is not UTF-8"))?;
                taken.push((key.to_owned(), value.into_owned()));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some((key, value)) if KEYS.contains(&key) => {
                taken.push((key.to_owned(), value.trim_matches('\'').to_owned()));
            }
            _ => kept.push(word),
        }
    }
    Ok((kept.join(" "), taken))
}

/// tokio-postgres' TLS hook on rustls; records the negotiated version.
#[derive(Clone)]
struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
    version: Arc<Mutex<Option<String>>>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            make: self.clone(),
            host: host.to_owned(),
        })
    }
}

struct RustlsConnect {
    make: MakeRustls,
    host: String,
}

impl<S: Stream> TlsConnect<S> for RustlsConnect {
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // A unix socket or `hostaddr` alone has no name to check.
            let name =
                rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("TLS needs a host name to check, not {:?}", self.host),
                    )
                })?;
            let connector = tokio_rustls::TlsConnector::from(self.make.config.clone());
            let tls = connector.connect(name, stream).await?;
            if let Some(version) = tls.get_ref().1.protocol_version() {
                *self.make.version.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(tls::version_name(version));
            }
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS stream to the server.
struct RustlsStream<S = Socket>(tokio_rustls::client::TlsStream<S>);

impl<S: Stream> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    /// No channel binding: SCRAM works; `channel_binding=require` does not.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: Stream> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: Stream> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{super::Connect, *};

    #[test]
    fn ssl_parameters_are_taken_out_of_both_forms() {
        let (rest, taken) = take_ssl_params(
            "postgres://u:p@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(
            taken,
            [
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), "/tmp/ca.pem".to_owned())
            ]
        );
        let (rest, taken) = take_ssl_params("host=db user=u sslmode=require").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(taken, [("sslmode".to_owned(), "require".to_owned())]);
    }

    #[test]
    fn a_bad_sslmode_names_the_choices() {
        let e = PgConnector::new("postgres://u@db/app?sslmode=verify")
            .err()
            .unwrap();
        assert!(
            e.contains("disable, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
        let e = PgConnector::new("postgres://u@db/app?sslmode=require&sslcert=/c.pem")
            .err()
            .unwrap();
        assert!(e.contains("sslcert and sslkey go together"), "{e}");
    }
}
