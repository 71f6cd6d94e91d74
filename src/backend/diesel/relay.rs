//! The client side of `query_timeout` for MySQL/MariaDB. The driver
//! (mysql_async) opens and owns its socket, so the pool cannot put a
//! [`Silence`] under it as it does for Postgres. Instead each connection
//! of a pool with `query_timeout` goes through a relay of its own: the
//! pool opens the socket to the server, listens once on a loopback port,
//! and the driver connects there. The relay copies bytes both ways through
//! a [`Silence`]; when the server stays silent for `query_timeout` + grace
//! after a request, the relay closes both sides, the driver's round trip
//! fails at once, and the connection is discarded. TLS runs end to end
//! through the relay, checked against the server's own name (or, under
//! `VERIFY_CA`, the name its certificate gave, see `super::verify_ca`),
//! never the relay's.

use std::{sync::Arc, time::Duration};

use mysql_async::{Opts, OptsBuilder};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use super::silence::Silence;
use crate::pool::RoundTrip;

/// How long a relay waits for the driver to connect to it.
const ACCEPT_WITHIN: Duration = Duration::from_secs(10);

/// Opens a socket to the server `opts` names and a relay in front of it;
/// returns the options that make the driver connect through the relay
/// (TLS still checked against the server's name). The error is the
/// server's connect error, as the driver would report it.
pub(super) async fn relayed(opts: &Opts, round_trip: Arc<RoundTrip>) -> Result<Opts, String> {
    let failed = |e: std::io::Error| format!("Input/output error: {e}");
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(failed)?;
    let port = listener.local_addr().map_err(failed)?.port();
    #[cfg(unix)]
    if let Some(path) = opts.socket() {
        let server = tokio::net::UnixStream::connect(path)
            .await
            .map_err(failed)?;
        tokio::spawn(relay(listener, server, round_trip));
        return Ok(through(opts, port));
    }
    let server = TcpStream::connect((opts.ip_or_hostname(), opts.tcp_port()))
        .await
        .map_err(failed)?;
    server.set_nodelay(true).map_err(failed)?;
    tokio::spawn(relay(listener, server, round_trip));
    Ok(through(opts, port))
}

/// `opts` pointed at the relay on `port`, TLS still checked against the
/// server's name (or the name `opts` already set, as `VERIFY_CA` does).
fn through(opts: &Opts, port: u16) -> Opts {
    let mut builder = OptsBuilder::from_opts(opts.clone())
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .socket(None::<String>);
    if let Some(ssl) = opts.ssl_opts() {
        let name = ssl
            .tls_hostname_override()
            .unwrap_or(opts.ip_or_hostname())
            .to_owned();
        builder = builder.ssl_opts(ssl.clone().with_danger_tls_hostname_override(Some(name)));
    }
    builder.into()
}

/// Accepts the driver's one connection and copies bytes between it and
/// `server` until either side closes, or the server is silent too long
/// (then both sockets are dropped: the driver reads the end at once).
async fn relay<S>(listener: TcpListener, server: S, round_trip: Arc<RoundTrip>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(Ok((mut client, _))) = tokio::time::timeout(ACCEPT_WITHIN, listener.accept()).await
    else {
        return;
    };
    drop(listener);
    let _ = client.set_nodelay(true);
    let mut server = Silence::new(server, round_trip);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "mysql relay ended");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers the first request and then goes silent: the
    /// relay passes the first round trip, and closes the client's side
    /// when the second gets no answer.
    #[tokio::test]
    async fn the_relay_passes_answers_and_cuts_a_silent_server() {
        let server = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = server.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let (mut socket, _) = server.accept().await.unwrap();
            let mut buf = [0; 4];
            socket.read_exact(&mut buf).await.unwrap();
            socket.write_all(b"pong").await.unwrap();
            socket.read_exact(&mut buf).await.unwrap();
            // Silent from here, but the socket stays open.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let opts = Opts::from(
            OptsBuilder::default()
                .ip_or_hostname(address.ip().to_string())
                .tcp_port(address.port()),
        );
        let round_trip = Arc::new(RoundTrip::detached(Duration::from_millis(100)));
        let through = relayed(&opts, round_trip.clone()).await.unwrap();
        assert_eq!(through.ip_or_hostname(), "127.0.0.1");
        assert_ne!(through.tcp_port(), address.port());
        let mut driver = TcpStream::connect(("127.0.0.1", through.tcp_port()))
            .await
            .unwrap();
        let mut buf = [0; 4];
        driver.write_all(b"ping").await.unwrap();
        driver.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert!(!round_trip.fired());

        driver.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), driver.read(&mut buf))
            .await
            .expect("the relay kept a silent server's connection open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(round_trip.fired());
        silent.abort();
    }

    #[tokio::test]
    async fn a_server_that_refuses_fails_the_connect_with_its_error() {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = Opts::from(
            OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(port),
        );
        let round_trip = Arc::new(RoundTrip::detached(Duration::from_millis(100)));
        let e = relayed(&opts, round_trip).await.unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn through_the_relay_tls_is_checked_against_the_servers_name() {
        let opts = Opts::from(
            OptsBuilder::default()
                .ip_or_hostname("db.example.com")
                .tcp_port(3306)
                .ssl_opts(mysql_async::SslOpts::default()),
        );
        let through = through(&opts, 4000);
        assert_eq!(
            (through.ip_or_hostname(), through.tcp_port()),
            ("127.0.0.1", 4000)
        );
        assert_eq!(
            through.ssl_opts().unwrap().tls_hostname_override(),
            Some("db.example.com")
        );
    }
}
