//! [`Silence`]: a socket that fails when the server stays silent too long
//! after the client wrote to it: the client side of `query_timeout`, under
//! the Postgres driver's socket (which we open ourselves) and in the relay
//! in front of each MySQL connection (whose driver owns its socket).
//!
//! It sits under TLS and sees bytes, not messages, so it bounds the wait
//! for the first byte of an answer: armed by a write, disarmed by any byte
//! read. A server that is frozen, partitioned or overloaded so far that it
//! sends nothing is cut off; one that streams a long answer slowly is not.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use crate::pool::RoundTrip;

/// How much longer the client waits than the server's own statement
/// timeout, so that a slow statement on a healthy server is cancelled by
/// the server (its connection survives) rather than cut off here.
pub(super) const GRACE: Duration = Duration::from_millis(50);

/// `S`, failing its reads with [`io::ErrorKind::TimedOut`] once
/// `query_timeout` + [`GRACE`] pass after a write with nothing read back.
pub(super) struct Silence<S> {
    inner: S,
    round_trip: Arc<RoundTrip>,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> Silence<S> {
    pub(super) fn new(inner: S, round_trip: Arc<RoundTrip>) -> Self {
        Self {
            inner,
            round_trip,
            // Made once per connection and reset per round trip.
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    fn arm(&mut self, cx: &mut Context<'_>) {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.round_trip.limit() + GRACE;
            self.timer.as_mut().reset(deadline);
            // Registers the task: a silent server never wakes the read.
            let _ = self.timer.as_mut().poll(cx);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Silence<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.armed && this.timer.as_mut().poll(cx).is_ready() => {
                this.armed = false;
                this.round_trip.fire();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer from the server within query_timeout ({})",
                        humantime::format_duration(this.round_trip.limit())
                    ),
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Silence<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.arm(cx);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.arm(cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pair(
        limit: Duration,
    ) -> (
        Silence<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<RoundTrip>,
    ) {
        let (client, server) = tokio::io::duplex(64);
        let round_trip = Arc::new(RoundTrip::detached(limit));
        (Silence::new(client, round_trip.clone()), server, round_trip)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_fails_the_read_at_the_limit_plus_grace() {
        let (mut client, _server, round_trip) = pair(Duration::from_secs(1));
        let start = Instant::now();
        client.write_all(b"SELECT 1").await.unwrap();
        let mut buf = [0; 8];
        let e = client.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("query_timeout (1s)"), "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(1) + GRACE);
        assert!(round_trip.fired());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_disarms_and_an_idle_connection_never_fails() {
        let (mut client, mut server, round_trip) = pair(Duration::from_secs(1));
        client.write_all(b"SELECT 1").await.unwrap();
        let mut buf = [0; 8];
        server.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        server.write_all(b"1").await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 1);
        // Nothing outstanding: an hour of quiet is not a timeout.
        let quiet = tokio::time::timeout(Duration::from_secs(3600), client.read(&mut buf)).await;
        assert!(quiet.is_err(), "the read still waits");
        assert!(!round_trip.fired());
        // The next round trip gets a full limit again.
        client.write_all(b"SELECT 2").await.unwrap();
        let start = Instant::now();
        assert!(client.read(&mut buf).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(1) + GRACE);
    }
}
