//! The socket of a Postgres connection that this crate opens itself (with
//! `query_timeout` or `transaction_pooling`), and the task that drives it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::TlsConnect;

/// What a TLS session can run over.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A socket to the server, of either kind.
pub(super) enum PgSocket {
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
pub(super) async fn open_socket(
    config: &tokio_postgres::Config,
) -> Result<(PgSocket, String), String> {
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
pub(super) async fn connect_driven<S, T>(
    config: &tokio_postgres::Config,
    socket: S,
    tls: T,
) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    S: Stream,
    T: TlsConnect<S>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect_raw(socket, tls).await?;
    tokio::spawn(drive(connection));
    Ok(client)
}

/// Drives a connection opened by [`connect_driven`] until its
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
