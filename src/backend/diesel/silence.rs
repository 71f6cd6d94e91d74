//! [`Silence`]: a socket that fails when the server stays silent too long
//! while it owes the client an answer: the client side of `query_timeout`,
//! above TLS under the Postgres driver (whose socket we open ourselves) and
//! in the relay in front of each MySQL connection (whose driver owns its
//! socket, so the relay sees TLS records, not messages).
//!
//! What "owes an answer" means is the protocol's business ([`Turns`]):
//! - [`AnyByte`] (MySQL's relay): from a write until the next byte read.
//!   Enough for a protocol where every request waits for its answer
//!   before the next is sent;
//! - Postgres counts its rounds at message boundaries
//!   (`super::postgres::rounds`), since its driver sends one request
//!   before the last one's answer is read (the Close of a statement that
//!   diesel could not cache goes out with no one waiting for its answer):
//!   that answer must not hide the next request's.
//!
//! The wait is bounded from the moment the server first owes an answer,
//! and again from each byte it sends while it still owes one. A server
//! that is frozen, partitioned or overloaded so far that it sends nothing
//! is cut off; one that streams a long answer slowly is not.

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

/// What a [`Silence`] knows of the protocol on its socket: whether the
/// server owes the client an answer.
pub(super) trait Turns: Unpin {
    /// `bytes` went to the server, in order.
    fn wrote(&mut self, bytes: &[u8]);
    /// `bytes` came from the server, in order.
    fn read(&mut self, bytes: &[u8]);
    /// The server owes an answer.
    fn owed(&self) -> bool;
}

/// Owed from a write until the next byte read.
#[derive(Debug, Default)]
pub(super) struct AnyByte(bool);

impl Turns for AnyByte {
    fn wrote(&mut self, _: &[u8]) {
        self.0 = true;
    }
    fn read(&mut self, _: &[u8]) {
        self.0 = false;
    }
    fn owed(&self) -> bool {
        self.0
    }
}

/// `S`, failing its reads with [`io::ErrorKind::TimedOut`] once
/// `query_timeout` + [`GRACE`] pass with the server owing an answer (by
/// `T`) and sending nothing.
pub(super) struct Silence<S, T = AnyByte> {
    inner: S,
    turns: T,
    round_trip: Arc<RoundTrip>,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> Silence<S> {
    /// Owed from a write until the next byte read ([`AnyByte`]).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))] // the MySQL relay's
    pub(super) fn new(inner: S, round_trip: Arc<RoundTrip>) -> Self {
        Self::with(inner, round_trip, AnyByte::default())
    }
}

impl<S, T: Turns> Silence<S, T> {
    /// Owed as `turns` says.
    pub(super) fn with(inner: S, round_trip: Arc<RoundTrip>, turns: T) -> Self {
        Self {
            inner,
            turns,
            round_trip,
            // Made once per connection and reset per round trip.
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// Starts the wait over: `query_timeout` + grace from now.
    fn arm(&mut self, cx: &mut Context<'_>) {
        self.armed = true;
        let deadline = Instant::now() + self.round_trip.limit() + GRACE;
        self.timer.as_mut().reset(deadline);
        // Registers the task: a silent server never wakes the read.
        let _ = self.timer.as_mut().poll(cx);
    }

    /// After the turns saw a write: armed if the server now owes an answer
    /// and did not before (a request sent while it still owes one does
    /// not postpone the deadline).
    fn after_write(&mut self, cx: &mut Context<'_>) {
        if !self.armed && self.turns.owed() {
            self.arm(cx);
        }
    }
}

impl<S: AsyncRead + Unpin, T: Turns> AsyncRead for Silence<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.turns.read(read);
                    if this.turns.owed() {
                        // Progress: the server is alive and still owes.
                        this.arm(cx);
                    } else {
                        this.armed = false;
                    }
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

impl<S: AsyncWrite + Unpin, T: Turns> AsyncWrite for Silence<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            this.turns.wrote(&buf[..n]);
            this.after_write(cx);
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
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                this.turns.wrote(&buf[..take]);
                left -= take;
            }
            this.after_write(cx);
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
