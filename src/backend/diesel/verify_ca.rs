//! `ssl-mode=VERIFY_CA` for MySQL/MariaDB: the server's certificate chain is
//! checked up to a trusted root, its host name is not (libpq's
//! `verify-ca`; a managed database reached through an address its
//! certificate does not name, a load balancer or an IP, say).
//!
//! The driver (mysql_async 0.36) checks the name whenever it checks the
//! chain: its switch to skip the name looks for an error text that rustls
//! no longer writes. So before the driver connects, the pool opens a TLS
//! session of its own to the server (MySQL's `SSLRequest`, then a handshake
//! that checks the chain alone, the check Postgres' `verify-ca` makes) and
//! takes a DNS name from the certificate that passed. The driver then
//! connects with that name as its TLS host name: it checks the chain again,
//! against the same roots, and the name passes because it is the
//! certificate's own. The name is kept for the pool's next connections
//! (one look at a time: connections opened together wait for the first);
//! when the driver then fails on the certificate (a renewed one, or
//! another node behind a balancer with a name of its own), the pool looks
//! again and retries that connect once.
//!
//! Both looks and the driver trust the CA file (`ssl-ca`) alone, which
//! `VERIFY_CA` requires (see the `tls` module). The certificate must carry
//! a DNS name (`subjectAltName`): the certificates MySQL generates by
//! itself (`auto_generate_certs`) have none and cannot be used with it.

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Mutex,
};

use crate::tls;

/// `CLIENT_SSL` in the handshake's capability flags.
const CLIENT_SSL: u32 = 0x0800;
/// The capabilities of the `SSLRequest`: long password (which also tells
/// MariaDB that the trailing bytes are no extended capabilities), protocol
/// 4.1, TLS, secure connection, plugin authentication.
const REQUEST_CAPABILITIES: u32 = 0x0001 | 0x0200 | CLIENT_SSL | 0x8000 | 0x0008_0000;
/// The largest packet a MySQL client announces by default (16 MiB).
const MAX_PACKET: u32 = 16 * 1024 * 1024;
/// `utf8mb4_general_ci`.
const CHARSET: u8 = 45;

/// The certificate name of one pool's server, found by [`Names::get`].
#[derive(Debug, Default)]
pub(super) struct Names {
    files: tls::Files,
    name: Mutex<Option<String>>,
}

impl Names {
    /// For a pool that trusts `files.ca` alone and logs in with
    /// `files.cert`/`files.key` when set.
    pub(super) fn new(files: tls::Files) -> Self {
        Self {
            files,
            name: Mutex::default(),
        }
    }

    /// A DNS name of the certificate of the server at `host:port`, whose
    /// chain checked out, and whether it is a new look (`false`: the one
    /// found before). One look at a time.
    /// The error reads as the driver's would: an I/O error as such, the
    /// rest in the MySQL client's parameter names.
    pub(super) async fn get(&self, host: &str, port: u16) -> Result<(String, bool), String> {
        let mut name = self.name.lock().await;
        if let Some(name) = &*name {
            return Ok((name.clone(), false));
        }
        let found =
            certificate_name(host, port, &self.files)
                .await
                .map_err(|failed| match failed {
                    Failed::Io(e) => format!("Input/output error: {e}"),
                    Failed::Refused(why) => super::mysql::in_mysql_words(&why, "VERIFY_CA"),
                })?;
        *name = Some(found.clone());
        Ok((found, true))
    }

    /// Forgets `stale` (unless another connect has found a newer name
    /// since): the next [`get`](Self::get) looks again.
    pub(super) async fn forget(&self, stale: &str) {
        let mut name = self.name.lock().await;
        if name.as_deref() == Some(stale) {
            *name = None;
        }
    }
}

/// Why a look at the certificate failed.
enum Failed {
    /// The connection itself.
    Io(std::io::Error),
    /// Anything else, in words a user can act on.
    Refused(String),
}

impl From<std::io::Error> for Failed {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Self::Refused(why)
    }
}

/// Opens a TLS session to the MySQL server at `host:port` that checks the
/// chain only, and returns a DNS name the server's certificate is valid
/// for.
async fn certificate_name(host: &str, port: u16, files: &tls::Files) -> Result<String, Failed> {
    let mut socket = TcpStream::connect((host, port)).await?;
    socket.set_nodelay(true)?;
    let greeting = read_packet(&mut socket).await?;
    if !offers_tls(&greeting)? {
        return Err(Failed::Refused(
            "server does not support TLS but ssl-mode=VERIFY_CA; enable TLS on the server or use ssl-mode=PREFERRED"
                .to_owned(),
        ));
    }
    socket.write_all(&ssl_request()).await?;
    let config = tls::client_config(tls::Verify::Chain, files, &[])?;
    // The name is not checked (`Verify::Chain`); rustls wants one for SNI.
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("host {host:?}: {e}"))?;
    let mut session = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, socket)
        .await
        .map_err(|e| tls::reason(&e).unwrap_or_else(|| format!("TLS handshake failed: {e}")))?;
    let name = session
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| dns_name(leaf));
    // Say goodbye; the server logs an aborted connect, nothing more.
    let _ = session.shutdown().await;
    name.ok_or_else(|| {
        Failed::Refused(
            "ssl-mode=VERIFY_CA: the server's certificate names no DNS host (subjectAltName), \
             which the MySQL driver needs; use ssl-mode=VERIFY_IDENTITY with the address it names"
                .to_owned(),
        )
    })
}

/// One MySQL packet's payload (the connection's first, so no sequence
/// check); a server's refusal (`ERR`: "Too many connections", a blocked
/// host) is an error with its message.
async fn read_packet<S: AsyncRead + Unpin>(socket: &mut S) -> Result<Vec<u8>, Failed> {
    let mut header = [0; 4];
    socket.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0; len];
    socket.read_exact(&mut payload).await?;
    if payload.first() == Some(&0xff) {
        // ERR: 0xff, a 2-byte code, then (4.1) '#' and a 5-byte state.
        let text = payload.get(3..).unwrap_or_default();
        let text = text
            .strip_prefix(b"#")
            .map_or(text, |t| t.get(5..).unwrap_or_default());
        return Err(Failed::Refused(format!(
            "the server refused the connection: {}",
            String::from_utf8_lossy(text)
        )));
    }
    Ok(payload)
}

/// Whether the greeting (protocol 10) offers `CLIENT_SSL`.
fn offers_tls(greeting: &[u8]) -> Result<bool, String> {
    let bad = || "the server's greeting is not MySQL protocol 10".to_owned();
    if greeting.first() != Some(&10) {
        return Err(bad());
    }
    // Protocol, the version up to its NUL, the connection id (4), the
    // first 8 bytes of the scramble, a filler byte: then the lower half of
    // the capability flags.
    let version_end = greeting[1..].iter().position(|&b| b == 0).ok_or_else(bad)? + 1;
    let at = version_end + 1 + 4 + 8 + 1;
    let flags = greeting.get(at..at + 2).ok_or_else(bad)?;
    Ok(u32::from(u16::from_le_bytes([flags[0], flags[1]])) & CLIENT_SSL != 0)
}

/// The `SSLRequest` packet (sequence 1): capabilities, largest packet,
/// character set, 23 zero bytes.
fn ssl_request() -> [u8; 36] {
    let mut packet = [0; 36];
    packet[..4].copy_from_slice(&[32, 0, 0, 1]);
    packet[4..8].copy_from_slice(&REQUEST_CAPABILITIES.to_le_bytes());
    packet[8..12].copy_from_slice(&MAX_PACKET.to_le_bytes());
    packet[12] = CHARSET;
    packet
}

/// A DNS name `leaf` is valid for; a wildcard (`*.db.example.com`) gives
/// one name it covers.
fn dns_name(leaf: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let name = cert.valid_dns_names().next()?;
    Some(match name.strip_prefix("*.") {
        Some(domain) => format!("verify-ca.{domain}"),
        None => name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_tells_whether_the_server_offers_tls() {
        // Protocol 10, "5.5.5-10.11.6-MariaDB\0", id, scramble, filler,
        // flags: the real layout, with and without CLIENT_SSL.
        let greeting = |flags: u16| {
            let mut g = vec![10];
            g.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
            g.extend_from_slice(&[1, 0, 0, 0]);
            g.extend_from_slice(b"abcdefgh");
            g.push(0);
            g.extend_from_slice(&flags.to_le_bytes());
            g.extend_from_slice(&[45, 2, 0]);
            g
        };
        assert_eq!(offers_tls(&greeting(0xffff)), Ok(true));
        assert_eq!(offers_tls(&greeting(0xf7ff)), Ok(false));
        assert!(offers_tls(&[9, 0]).is_err());
        assert!(offers_tls(&greeting(0xffff)[..20]).is_err());
    }

    #[test]
    fn the_ssl_request_is_a_32_byte_packet_of_sequence_one_asking_for_tls() {
        let p = ssl_request();
        assert_eq!(&p[..4], &[32, 0, 0, 1]);
        let flags = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        assert_ne!(flags & CLIENT_SSL, 0);
        assert_eq!(p[12], CHARSET);
        assert!(p[13..].iter().all(|&b| b == 0));
    }
}
