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

mod rounds;
mod socket;
mod tls;
mod unnamed;

use std::{path::PathBuf, sync::Arc};

use diesel_async::AsyncPgConnection;
use tokio_postgres::{config::SslMode, tls::NoTls};

use self::{
    rounds::Rounds,
    socket::{Stream, connect_driven, open_socket},
    tls::{MakeRustls, Refused},
    unnamed::Unnamed,
};
use super::silence::Silence;
use crate::{
    pool::RoundTrip,
    tls::{Files, Verify},
};

/// How a Postgres pool opens its connections: the driver's config and, for
/// TLS, the rustls config; made once from the pool's URL.
pub struct PgConnector {
    config: tokio_postgres::Config,
    mode: Mode,
    tls: Option<MakeRustls>,
    /// `transaction_pooling`: see [`unnamed`].
    pooled: bool,
}

/// Not derived: the driver's config holds the password.
impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("sslmode", &self.mode.name())
            .field("transaction_pooling", &self.pooled)
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
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| {
                // "invalid connection string", and why in the source.
                match std::error::Error::source(&e) {
                    Some(why) => format!("url: {e}: {why}"),
                    None => format!("url: {e}"),
                }
            })?;
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
                config: crate::tls::client_config(verify, &files, &[b"postgresql"])?,
                version: Arc::default(),
            }),
        };
        Ok(Self {
            config,
            mode,
            tls,
            pooled: false,
        })
    }

    fn transaction_pooling(&mut self) -> Result<(), String> {
        self.pooled = true;
        Ok(())
    }

    /// Opens one connection; the error names the TLS reason when there is
    /// one.
    async fn connect(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> Result<AsyncPgConnection, String> {
        if self.pooled {
            return self.connect_pooled(round_trip).await;
        }
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
    /// startup, and the stream opened here ([`open`](Self::open)), its
    /// rounds watched above TLS. The connection is then driven by a task
    /// of ours instead of diesel-async's, which takes tokio-postgres' own
    /// socket type only; so diesel-async's LISTEN/NOTIFY stream is not fed
    /// on such a pool.
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
        config.ssl_mode(SslMode::Disable);
        let stream = self.open(&config, Some(round_trip)).await?;
        let client = connect_driven(&config, stream, NoTls).await.map_err(|e| {
            let text = self.explain(&e);
            if text.contains("unsupported startup parameter: options") {
                return format!(
                    "{text} (query_timeout sets the server's statement_timeout at startup, \
                         which a pooler such as PgBouncer refuses: behind one, turn on \
                         transaction_pooling, which leaves it to the client)"
                );
            }
            text
        })?;
        AsyncPgConnection::try_from(client)
            .await
            .map_err(|e| e.to_string())
    }

    /// With `transaction_pooling`: the stream opened here
    /// ([`open`](Self::open); no `statement_timeout` startup option, which
    /// a pooler refuses), and the driver over [`Unnamed`] above it.
    async fn connect_pooled(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> Result<AsyncPgConnection, String> {
        let mut config = self.config.clone();
        config.ssl_mode(SslMode::Disable);
        let stream = self.open(&config, round_trip).await?;
        let client = connect_driven(&config, Unnamed::new(stream), NoTls)
            .await
            .map_err(|e| self.explain(&e))?;
        AsyncPgConnection::try_from(client)
            .await
            .map_err(|e| e.to_string())
    }

    /// The socket to the server, TLS negotiated here as libpq would (by
    /// `sslmode`), and with `query_timeout` a [`Silence`] above TLS, where
    /// [`Rounds`] sees the protocol's messages. The driver is then
    /// connected with TLS off (`config`'s `sslmode=disable`).
    async fn open(
        &self,
        config: &tokio_postgres::Config,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> Result<Box<dyn Stream>, String> {
        let (socket, host) = open_socket(config).await?;
        let mut stream: Box<dyn Stream> = Box::new(socket);
        if let Some(make) = &self.tls {
            let required = self.mode != Mode::Prefer;
            stream = tls::negotiate(stream, make, host, required)
                .await
                .map_err(|refused| match refused {
                    Refused::NoTls => self.no_tls(),
                    Refused::Io(e) => self
                        .tls_reason(&e)
                        .unwrap_or_else(|| format!("error connecting to server: {e}")),
                })?;
        }
        Ok(match round_trip {
            Some(round_trip) => Box::new(Silence::with(stream, round_trip, Rounds::default())),
            None => stream,
        })
    }

    fn no_tls(&self) -> String {
        format!(
            "server does not support TLS but sslmode={}; enable ssl on the server or use sslmode=prefer",
            self.mode.name()
        )
    }

    /// The TLS reason of `e` in a user's words, with the `sslmode`.
    fn tls_reason(&self, e: &(dyn std::error::Error + 'static)) -> Option<String> {
        crate::tls::reason(e).map(|reason| format!("{reason} (sslmode={})", self.mode.name()))
    }

    fn explain(&self, e: &tokio_postgres::Error) -> String {
        if let Some(reason) = self.tls_reason(e) {
            return reason;
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
            return self.no_tls();
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
