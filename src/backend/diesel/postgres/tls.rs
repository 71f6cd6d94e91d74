//! tokio-postgres' TLS hook on this crate's rustls config.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    Socket,
    tls::{ChannelBinding, MakeTlsConnect, TlsConnect},
};

use super::socket::Stream;
use crate::tls;

/// tokio-postgres' TLS hook on rustls; records the negotiated version.
#[derive(Clone)]
pub(super) struct MakeRustls {
    pub(super) config: Arc<rustls::ClientConfig>,
    pub(super) version: Arc<Mutex<Option<String>>>,
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

pub(super) struct RustlsConnect {
    pub(super) make: MakeRustls,
    pub(super) host: String,
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
pub(super) struct RustlsStream<S = Socket>(tokio_rustls::client::TlsStream<S>);

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

/// Asks the server for TLS as libpq does (an SSLRequest on `socket`) and
/// runs the handshake when it agrees, for a connection whose bytes this
/// crate reads above TLS (`transaction_pooling`); the driver then talks
/// plaintext over what this returns: the socket itself from a server
/// without TLS when plaintext is allowed (`sslmode=prefer`).
pub(super) async fn negotiate(
    mut socket: Box<dyn Stream>,
    make: &MakeRustls,
    host: String,
    required: bool,
) -> Result<Box<dyn Stream>, Refused> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A unix socket has no TLS, as in libpq.
    if host.is_empty() && !required {
        return Ok(socket);
    }
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    socket.write_all(&SSL_REQUEST).await?;
    socket.flush().await?;
    match socket.read_u8().await? {
        b'S' => {}
        b'N' if !required => return Ok(socket),
        b'N' => return Err(Refused::NoTls),
        other => {
            return Err(Refused::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer {other:#x} to the TLS request"),
            )));
        }
    }
    let connect = RustlsConnect {
        make: make.clone(),
        host,
    };
    let tls = TlsConnect::connect(connect, socket).await?;
    Ok(Box::new(tls))
}

/// Why [`negotiate`] failed.
pub(super) enum Refused {
    /// The server has no TLS and the `sslmode` requires it.
    NoTls,
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}
