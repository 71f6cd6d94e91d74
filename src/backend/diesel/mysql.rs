//! Opening MySQL/MariaDB connections, with the MySQL client's TLS
//! parameters in the URL (feature `tls`): `ssl-mode` = `DISABLED` |
//! `PREFERRED` (the default, as the MySQL client) | `REQUIRED` |
//! `VERIFY_CA` | `VERIFY_IDENTITY`, `ssl-ca` (a CA file trusted besides the
//! platform's roots), and `ssl-cert` with `ssl-key` (a client certificate
//! and its key, PEM, for users created `REQUIRE X509`), e.g.
//! `mysql://app@db/app?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ssl/ca.pem`.
//!
//! | `ssl-mode` | TLS | the server's certificate |
//! |---|---|---|
//! | `DISABLED` | never | – |
//! | `PREFERRED` | if the server offers it, else plaintext | not checked |
//! | `REQUIRED` | always; a server without TLS is an error | not checked |
//! | `VERIFY_CA` | always | chain (see [`super::verify_ca`]) |
//! | `VERIFY_IDENTITY` | always | chain and host name |
//!
//! Connections go over TCP even to a local server (the driver would
//! otherwise switch to the server's unix socket, without TLS).

use diesel_async::AsyncMysqlConnection;
use mysql_async::{ClientIdentity, DriverError, Opts, OptsBuilder, SslOpts};

use std::sync::Arc;

use crate::{pool::RoundTrip, tls};

/// How a MySQL pool opens its connections: the driver's options, made once
/// from the pool's URL.
pub struct MysqlConnector {
    opts: Opts,
    /// `PREFERRED`: the options without TLS, for a server that has none.
    plain: Option<Opts>,
    mode: &'static str,
    /// `VERIFY_CA`: the name of the server's certificate, for the driver.
    verify_ca: Option<super::verify_ca::Names>,
    /// Whether the last connection opened is encrypted.
    encrypted: std::sync::atomic::AtomicBool,
}

/// Not derived: the driver's options hold the password.
impl std::fmt::Debug for MysqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConnector")
            .field("ssl_mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl MysqlConnector {
    /// `VERIFY_CA`: opens with the server's certificate's own name as the
    /// TLS host name (the chain checked on the way). When the driver fails
    /// on the certificate with a name found before, the name is looked up
    /// again and the connect tried once more. `Err` is a failed look.
    async fn open_verify_ca(
        &self,
        names: &super::verify_ca::Names,
        round_trip: &Option<Arc<RoundTrip>>,
    ) -> Result<Result<mysql_async::Conn, mysql_async::Error>, String> {
        let (host, port) = (self.opts.ip_or_hostname(), self.opts.tcp_port());
        let mut tries = 2;
        loop {
            tries -= 1;
            let (name, fresh) = names.get(host, port).await?;
            let ssl = self.opts.ssl_opts().cloned().unwrap_or_default();
            let opts: Opts = OptsBuilder::from_opts(self.opts.clone())
                .ssl_opts(ssl.with_danger_tls_hostname_override(Some(name.clone())))
                .into();
            let opened = mysql_async::Conn::new(via(&opts, round_trip).await?).await;
            // Only a certificate failure makes the name suspect: a wrong
            // password or a full server must not cost another look (each
            // is an aborted connect to the server).
            if let Err(e) = &opened
                && tls::reason(e).is_some()
            {
                names.forget(&name).await;
                if !fresh && tries > 0 {
                    continue;
                }
            }
            return Ok(opened);
        }
    }
}

/// A TLS reason in the MySQL client's parameter names (the TLS module
/// speaks libpq's), with `mode` unless it names it.
pub(super) fn in_mysql_words(reason: &str, mode: &str) -> String {
    let words = reason
        .replace("sslrootcert", "ssl-ca")
        .replace("sslcert and sslkey", "ssl-cert and ssl-key")
        .replace("sslmode=verify-ca", "ssl-mode=VERIFY_CA")
        .replace("sslmode=verify-full", "ssl-mode=VERIFY_IDENTITY");
    match words.contains(&format!("ssl-mode={mode}")) {
        true => words,
        false => format!("{words} (ssl-mode={mode})"),
    }
}

impl super::Connect<AsyncMysqlConnection> for MysqlConnector {
    /// Parses `url`, taking the TLS parameters out of it.
    fn new(url: &str) -> Result<Self, String> {
        let SslParams {
            rest,
            mode,
            ca,
            cert,
            key,
        } = take_ssl_params(url);
        let mode = match mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("PREFERRED") => "PREFERRED",
            Some("DISABLED") => "DISABLED",
            Some("REQUIRED") => "REQUIRED",
            Some("VERIFY_IDENTITY") => "VERIFY_IDENTITY",
            Some("VERIFY_CA") => "VERIFY_CA",
            Some(other) => {
                return Err(format!(
                    "ssl-mode={other}: must be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ));
            }
        };
        if mode == "VERIFY_CA" && ca.is_none() {
            return Err(in_mysql_words(tls::CA_REQUIRED, mode));
        }
        let verify_ca = (mode == "VERIFY_CA").then(|| {
            super::verify_ca::Names::new(tls::Files {
                ca: ca.clone().map(Into::into),
                cert: cert.clone().map(Into::into),
                key: key.clone().map(Into::into),
            })
        });
        let base =
            Opts::from_url(&rest).map_err(|e| format!("url: invalid connection string: {e}"))?;
        let builder = OptsBuilder::from_opts(base)
            // Our own statement cache, found rows as Postgres counts them:
            // what diesel-async's own `establish` sets.
            .stmt_cache_size(0)
            .client_found_rows(true)
            .prefer_socket(false);
        let identity = client_identity(cert, key, mode)?;
        let ssl = match mode {
            "DISABLED" => None,
            "VERIFY_IDENTITY" => Some(verified(ca.as_deref(), true)?),
            // The CA file alone, as the look at the chain (`super::verify_ca`).
            "VERIFY_CA" => Some(verified(ca.as_deref(), false)?),
            _ => Some(SslOpts::default().with_danger_accept_invalid_certs(true)),
        }
        .map(|ssl| ssl.with_client_identity(identity));
        if ssl.is_some() {
            tls::install_default_provider();
        }
        let plain = (mode == "PREFERRED").then(|| Opts::from(builder.clone()));
        Ok(Self {
            opts: builder.ssl_opts(ssl).into(),
            plain,
            mode,
            verify_ca,
            encrypted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Opens one connection; the error names the TLS reason when there is
    /// one. With `query_timeout` the server bounds each statement
    /// (MariaDB `max_statement_time`, MySQL `max_execution_time`, which
    /// covers `SELECT` only), and the connection goes through a relay that
    /// cuts it off when the server stops answering altogether
    /// (`super::relay`: the driver owns its socket).
    async fn connect(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> Result<AsyncMysqlConnection, String> {
        let store = |encrypted| {
            self.encrypted
                .store(encrypted, std::sync::atomic::Ordering::Relaxed)
        };
        let opened = match &self.verify_ca {
            Some(names) => self.open_verify_ca(names, &round_trip).await?,
            None => mysql_async::Conn::new(via(&self.opts, &round_trip).await?).await,
        };
        let conn = match opened {
            Ok(conn) => {
                store(self.opts.ssl_opts().is_some());
                conn
            }
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                let Some(plain) = &self.plain else {
                    return Err(format!(
                        "server does not support TLS but ssl-mode={}; enable TLS on the server or use ssl-mode=PREFERRED",
                        self.mode
                    ));
                };
                let conn = mysql_async::Conn::new(via(plain, &round_trip).await?)
                    .await
                    .map_err(|e| e.to_string())?;
                store(false);
                conn
            }
            Err(e) => {
                return Err(match tls::reason(&e) {
                    Some(reason) => in_mysql_words(&reason, self.mode),
                    None => e.to_string(),
                });
            }
        };
        let mut conn = conn;
        if let Some(round_trip) = round_trip {
            use mysql_async::prelude::Queryable as _;
            // MariaDB numbers its releases from 10; MySQL is below.
            let sql = if conn.server_version().0 >= 10 {
                format!(
                    "SET SESSION max_statement_time = {}",
                    round_trip.limit().as_secs_f64()
                )
            } else {
                format!(
                    "SET SESSION max_execution_time = {}",
                    round_trip.limit().as_millis()
                )
            };
            conn.query_drop(sql)
                .await
                .map_err(|e| format!("setting query_timeout on the server: {e}"))?;
        }
        AsyncMysqlConnection::try_from(conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// What the stats show of the last connection opened: `on` or `off`
    /// (the driver does not tell the TLS version).
    fn transport(&self) -> Option<String> {
        let on = self.encrypted.load(std::sync::atomic::Ordering::Relaxed);
        Some(if on { "on" } else { "off" }.to_owned())
    }
}

/// The options to open with: `opts`, through a relay of its own with
/// `query_timeout`.
async fn via(opts: &Opts, round_trip: &Option<Arc<RoundTrip>>) -> Result<Opts, String> {
    match round_trip {
        Some(round_trip) => super::relay::relayed(opts, round_trip.clone()).await,
        None => Ok(opts.clone()),
    }
}

/// The driver's roots, no built-in list: `ssl-ca`, and with `platform`
/// (`VERIFY_IDENTITY`) the platform's roots too.
fn verified(ca: Option<&str>, platform: bool) -> Result<SslOpts, String> {
    // DER of the platform's roots, then the PEM of `ssl-ca`.
    let mut roots: Vec<Vec<u8>> = Vec::new();
    let native = match platform {
        true => rustls_native_certs::load_native_certs().certs,
        false => Vec::new(),
    };
    for cert in native {
        // Only what rustls accepts: the driver fails on the first it cannot.
        if rustls::RootCertStore::empty().add(cert.clone()).is_ok() {
            roots.push(cert.to_vec());
        }
    }
    if let Some(ca) = ca {
        roots.push(std::fs::read(ca).map_err(|e| format!("ssl-ca {ca}: {e}"))?);
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: set ssl-ca or SSL_CERT_FILE, or install the platform's CA bundle"
                .to_owned(),
        );
    }
    Ok(SslOpts::default()
        .with_disable_built_in_roots(true)
        .with_root_certs(roots.into_iter().map(Into::into).collect()))
}

/// `ssl-cert` and `ssl-key`, read now so that a missing file fails the
/// build, not each connection.
fn client_identity(
    cert: Option<String>,
    key: Option<String>,
    mode: &str,
) -> Result<Option<ClientIdentity>, String> {
    let files = tls::Files {
        cert: cert.map(Into::into),
        key: key.map(Into::into),
        ..tls::Files::default()
    };
    let Some((cert, key)) = files.identity(["ssl-cert", "ssl-key"])? else {
        return Ok(None);
    };
    if mode == "DISABLED" {
        return Err(
            "ssl-cert and ssl-key need TLS, but ssl-mode=DISABLED; drop them or choose another ssl-mode"
                .to_owned(),
        );
    }
    let cert = tls::read("ssl-cert", cert)?;
    let pem = tls::read("ssl-key", key)?;
    let der = rsa_pkcs1_der(&pem).map_err(|e| format!("ssl-key {}: {e}", key.display()))?;
    Ok(Some(ClientIdentity::new(cert.into(), der.into())))
}

/// The key as the driver reads it: PKCS#1 DER, the only form its rustls
/// loader takes. A PKCS#8 RSA key (what `openssl genrsa` writes today) is
/// unwrapped; any other key is refused with the fix.
fn rsa_pkcs1_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let not_rsa = "the MySQL driver takes RSA keys only; use an RSA client certificate";
    match PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no PEM private key: {e}"))? {
        PrivateKeyDer::Pkcs1(key) => Ok(key.secret_pkcs1_der().to_vec()),
        PrivateKeyDer::Pkcs8(key) => pkcs8_rsa(key.secret_pkcs8_der())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| not_rsa.to_owned()),
        _ => Err(not_rsa.to_owned()),
    }
}

/// The PKCS#1 key inside a PKCS#8 `PrivateKeyInfo` whose algorithm is
/// `rsaEncryption`.
fn pkcs8_rsa(der: &[u8]) -> Option<&[u8]> {
    /// One DER element: its tag, its content and what follows it.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (SEQUENCE, info, _) = element(der)? else {
        return None;
    };
    let (0x02, _version, rest) = element(info)? else {
        return None;
    };
    let (SEQUENCE, algorithm, rest) = element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = element(algorithm)? else {
        return None;
    };
    let (0x04, key, _) = element(rest)? else {
        return None;
    };
    (oid == RSA_ENCRYPTION).then_some(key)
}

/// The URL without its TLS parameters, and those parameters.
#[derive(Debug, Default)]
struct SslParams {
    rest: String,
    mode: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Splits `ssl-mode`, `ssl-ca`, `ssl-cert` and `ssl-key` (also spelled
/// with `_`) off the URL's query.
fn take_ssl_params(url: &str) -> SslParams {
    let Some((base, query)) = url.split_once('?') else {
        return SslParams {
            rest: url.to_owned(),
            ..SslParams::default()
        };
    };
    let mut params = SslParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "ssl-mode" | "ssl_mode" => params.mode = Some(value),
            "ssl-ca" | "ssl_ca" => params.ca = Some(value),
            "ssl-cert" | "ssl_cert" => params.cert = Some(value),
            "ssl-key" | "ssl_key" => params.key = Some(value),
            _ => kept.push(pair),
        }
    }
    params.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    params
}

#[cfg(test)]
mod tests {
    use super::{super::Connect, *};

    #[test]
    fn ssl_parameters_are_taken_out_and_checked() {
        let p = take_ssl_params(
            "mysql://u:p@db/app?pool_min=1&ssl-mode=REQUIRED&ssl-ca=%2Fca.pem&ssl-cert=c.pem&ssl_key=k.pem",
        );
        assert_eq!(p.rest, "mysql://u:p@db/app?pool_min=1");
        assert_eq!(p.mode.as_deref(), Some("REQUIRED"));
        assert_eq!(p.ca.as_deref(), Some("/ca.pem"));
        assert_eq!(p.cert.as_deref(), Some("c.pem"));
        assert_eq!(p.key.as_deref(), Some("k.pem"));
        let e = MysqlConnector::new("mysql://u@db/app?ssl-mode=REQUIRED&ssl-cert=/c.pem")
            .err()
            .unwrap();
        assert!(e.contains("ssl-cert and ssl-key go together"), "{e}");
        let e = MysqlConnector::new("mysql://u@db/app?ssl-cert=/nowhere/c.pem&ssl-key=/k.pem")
            .err()
            .unwrap();
        assert!(e.starts_with("ssl-cert /nowhere/c.pem: "), "{e}");
        // VERIFY_CA trusts its CA file alone, so it needs one.
        let e = MysqlConnector::new("mysql://u@db/app?ssl-mode=VERIFY_CA")
            .err()
            .unwrap();
        assert!(e.starts_with("ssl-mode=VERIFY_CA needs ssl-ca"), "{e}");
        let e = MysqlConnector::new("mysql://u@db/app?ssl-mode=ALWAYS")
            .err()
            .unwrap();
        assert!(
            e.contains("DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"),
            "{e}"
        );
    }
}
