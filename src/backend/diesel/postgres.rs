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

use crate::tls::{self, Files, Verify};

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
    async fn connect(&self) -> Result<AsyncPgConnection, String> {
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

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream>>;

    fn connect(self, stream: Socket) -> Self::Future {
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
struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    /// No channel binding: SCRAM works; `channel_binding=require` does not.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
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
