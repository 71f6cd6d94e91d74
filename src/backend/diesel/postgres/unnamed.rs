//! [`Unnamed`]: a Postgres connection's bytes, rewritten so that the server
//! keeps no named statement, for `transaction_pooling`.
//!
//! tokio-postgres prepares every statement under a name (`s41`: Parse,
//! Describe, Sync) and runs it in a later round (Bind, Execute, Sync);
//! diesel-async keeps it for the next request. Behind a pooler in
//! transaction mode the later round may run on another server session,
//! where `s41` does not exist. So, under the driver and above TLS:
//! - a Parse of `s41` is sent as a Parse of the unnamed statement, and its
//!   text is kept here;
//! - a Bind or Describe of `s41` is sent for the unnamed statement, after a
//!   Parse of the kept text in the same round (unless the round already
//!   parsed it); the server's extra ParseComplete is taken out of the
//!   answer before the driver reads it;
//! - a Close of `s41` closes the unnamed statement.
//!
//! A pooler in transaction mode changes server sessions only between
//! rounds (at Sync, outside a transaction), so every Bind finds its
//! statement. The driver and diesel-async keep their caches: a statement
//! is described once, and an execution is still one round trip; the server
//! parses and plans it each time.
//!
//! A statement that begins with a `SET` changing the session (anything but
//! `SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS` and the parameters a
//! pooler carries from session to session: `client_encoding`, `DateStyle`,
//! `TimeZone`, `standard_conforming_strings`, `application_name`) is
//! replaced by one that fails with a message saying why ([`refusal`]).

use std::{
    collections::{HashMap, VecDeque},
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many bytes not yet sent, a write waits for the socket.
const HIGH_WATER: usize = 64 * 1024;

/// What the server answers, in order, to what was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A ParseComplete the driver asked for.
    Keep,
    /// A ParseComplete for a Parse added here: not handed over.
    Drop,
    /// The ReadyForQuery that ends a round (Sync, simple Query).
    Round,
}

/// `S` with no named statement left on the server (see the module docs).
pub(super) struct Unnamed<S> {
    inner: S,
    /// Written by the driver, not yet a whole message.
    pending: Vec<u8>,
    /// Rewritten, not yet written to `inner`; sent from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// The untyped startup message has gone.
    started: bool,
    /// A statement's name → the rest of its Parse (text, NUL, types).
    statements: HashMap<Box<[u8]>, Box<[u8]>>,
    /// The statement the unnamed one holds in this round.
    current: Option<Box<[u8]>>,
    expect: VecDeque<Expect>,
    /// Read from `inner`, handed over from `taken` on.
    input: Vec<u8>,
    taken: usize,
    /// Bytes of the message being handed over still to come.
    passing: usize,
}

impl<S> Unnamed<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            out: Vec::new(),
            sent: 0,
            started: false,
            statements: HashMap::new(),
            current: None,
            expect: VecDeque::new(),
            input: Vec::new(),
            taken: 0,
            passing: 0,
        }
    }

    /// Rewrites the whole messages in `pending` into `out`.
    fn rewrite(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        loop {
            let rest = &pending[at..];
            if !self.started {
                let Some(len) = rest.get(..4).map(length) else {
                    break;
                };
                if rest.len() < len {
                    break;
                }
                self.out.extend_from_slice(&rest[..len]);
                self.started = true;
                at += len;
                continue;
            }
            let Some(len) = rest.get(1..5).map(length) else {
                break;
            };
            if rest.len() < 1 + len {
                break;
            }
            self.message(rest[0], &rest[5..1 + len]);
            at += 1 + len;
        }
        self.pending = pending;
        self.pending.drain(..at);
    }

    fn message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'P' => {
                let Some((name, rest)) = cstr(body) else {
                    return self.put(tag, &[body]);
                };
                let rest = guard(rest);
                if name.is_empty() {
                    self.current = None;
                } else {
                    self.statements.insert(name.into(), rest.as_slice().into());
                    self.current = Some(name.into());
                }
                self.put(b'P', &[b"\0", &rest]);
                self.expect.push_back(Expect::Keep);
            }
            b'B' => {
                let Some((portal, after)) = cstr(body) else {
                    return self.put(tag, &[body]);
                };
                match cstr(after) {
                    Some((name, rest)) if self.statements.contains_key(name) => {
                        self.parse_again(name);
                        self.put(b'B', &[portal, b"\0\0", rest]);
                    }
                    _ => self.put(tag, &[body]),
                }
            }
            b'D' | b'C' if body.first() == Some(&b'S') => match cstr(&body[1..]) {
                Some((name, _)) if self.statements.contains_key(name) => {
                    if tag == b'D' {
                        self.parse_again(name);
                    } else {
                        self.statements.remove(name);
                        if self.current.as_deref() == Some(name) {
                            self.current = None;
                        }
                    }
                    self.put(tag, &[b"S\0"]);
                }
                _ => self.put(tag, &[body]),
            },
            b'Q' => {
                self.put(tag, &[&guard(body)]);
                self.round();
            }
            b'S' | b'F' => {
                self.put(tag, &[body]);
                self.round();
            }
            _ => self.put(tag, &[body]),
        }
    }

    /// A round ends: the next may run on another server session.
    fn round(&mut self) {
        self.expect.push_back(Expect::Round);
        self.current = None;
    }

    /// Parses `name`'s text into the unnamed statement, unless this round
    /// already did.
    fn parse_again(&mut self, name: &[u8]) {
        if self.current.as_deref() == Some(name) {
            return;
        }
        let Some(rest) = self.statements.get(name) else {
            return;
        };
        let rest = rest.clone();
        self.put(b'P', &[b"\0", &rest]);
        self.expect.push_back(Expect::Drop);
        self.current = Some(name.into());
    }

    /// Appends one message to `out`.
    fn put(&mut self, tag: u8, parts: &[&[u8]]) {
        let len = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
        self.out.push(tag);
        self.out
            .extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        for part in parts {
            self.out.extend_from_slice(part);
        }
    }

    /// Hands the server's messages in `input` over to `buf`, leaving out
    /// the ParseCompletes answering Parses added here.
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        while buf.remaining() > 0 {
            let available = &self.input[self.taken..];
            if self.passing > 0 {
                let n = self.passing.min(available.len()).min(buf.remaining());
                if n == 0 {
                    break;
                }
                buf.put_slice(&available[..n]);
                self.taken += n;
                self.passing -= n;
                continue;
            }
            let Some(len) = available.get(1..5).map(length) else {
                break;
            };
            let tag = available[0];
            match tag {
                b'1' if self.parse_complete() == Expect::Drop => {
                    self.taken += 1 + len;
                    continue;
                }
                // The server skips the rest of the round: its Parses are
                // not answered.
                b'E' => {
                    while self.expect.front().is_some_and(|e| *e != Expect::Round) {
                        self.expect.pop_front();
                    }
                }
                b'Z' => {
                    while let Some(e) = self.expect.pop_front() {
                        if e == Expect::Round {
                            break;
                        }
                    }
                }
                _ => {}
            }
            self.passing = 1 + len;
        }
    }

    /// Which Parse a ParseComplete answers.
    fn parse_complete(&mut self) -> Expect {
        match self.expect.front() {
            Some(Expect::Drop | Expect::Keep) => self.expect.pop_front().unwrap_or(Expect::Keep),
            _ => Expect::Keep,
        }
    }
}

impl<S: AsyncWrite + Unpin> Unnamed<S> {
    /// Writes `out` to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// A message length (it counts itself), at least 4.
pub(super) fn length(bytes: &[u8]) -> usize {
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    usize::try_from(len).unwrap_or(usize::MAX).max(4)
}

/// Splits a NUL-terminated string off the front.
fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| *b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// `text` (a statement, NUL, anything after), with a refused `SET`
/// replaced.
fn guard(text: &[u8]) -> Vec<u8> {
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    match refusal(&String::from_utf8_lossy(&text[..end])) {
        None => text.to_vec(),
        Some(sql) => {
            let mut replaced = sql.into_bytes();
            replaced.extend_from_slice(&text[end..]);
            replaced
        }
    }
}

/// Session parameters that PgBouncer keeps per client and sets on whichever
/// server session the client gets.
const CARRIED: [&str; 5] = [
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
    "application_name",
];

/// When `sql` begins with a `SET` that would change the session: a
/// statement that fails saying so, in its place.
pub(super) fn refusal(sql: &str) -> Option<String> {
    let mut words = statement_words(sql);
    if words.next()? != "set" {
        return None;
    }
    let what = match words.next()?.as_str() {
        "local" | "transaction" | "constraints" | "names" => return None,
        "session" => match words.next()?.as_str() {
            "characteristics" => "session characteristics".to_owned(),
            "authorization" => "session authorization".to_owned(),
            name => name.to_owned(),
        },
        "time" if words.next().as_deref() == Some("zone") => return None,
        name => name.to_owned(),
    };
    if CARRIED.contains(&what.as_str()) {
        return None;
    }
    // A name made of [a-z0-9_. ] only: nothing of the user's text can end
    // the quoted strings below.
    Some(format!(
        "DO $axum_pools$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', \
         MESSAGE = 'SET {what} would change the session, which a pooler in transaction mode \
         does not keep (the pool has transaction_pooling on)', \
         HINT = 'use SET LOCAL inside a transaction (DbTx), or ALTER ROLE ... SET {what}'; \
         END $axum_pools$"
    ))
}

/// The first words of a statement, lower case, after any comments, with
/// quotes and anything but `[a-z0-9_.]` dropped.
fn statement_words(sql: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| c.is_whitespace() || c == '=' || c == ';')
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .to_ascii_lowercase()
        })
}

impl<S: AsyncRead + Unpin> AsyncRead for Unnamed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let before = buf.filled().len();
            this.hand_over(buf);
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.taken > 0 {
                this.input.drain(..this.taken);
                this.taken = 0;
            }
            let old = this.input.len();
            this.input.resize(old + 16 * 1024, 0);
            let mut read = ReadBuf::new(&mut this.input[old..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            this.input.truncate(old + n);
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The end of the stream.
                Poll::Ready(Ok(())) if n == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unnamed<S> {
    /// Takes all of `buf`; whole messages are rewritten and sent as far as
    /// the socket takes them, the rest by the flush the driver always
    /// does.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.sent > HIGH_WATER {
            ready!(this.poll_send(cx))?;
        }
        this.pending.extend_from_slice(buf);
        this.rewrite();
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_sets_are_refused_and_the_others_pass() {
        for sql in [
            "SET search_path TO app",
            "  set Search_Path = app",
            "/* x */ -- y\n SET statement_timeout = '1s'",
            "SET SESSION work_mem = '64MB'",
            "SET ROLE admin",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET \"search_path\" TO x",
        ] {
            let replaced = refusal(sql).unwrap_or_else(|| panic!("{sql} passed"));
            assert!(replaced.starts_with("DO $axum_pools$"), "{replaced}");
            assert!(replaced.contains("transaction_pooling"), "{replaced}");
        }
        for sql in [
            "SELECT 1",
            "SET LOCAL statement_timeout = '1s'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TIME ZONE 'UTC'",
            "SET CLIENT_ENCODING TO 'UTF8'",
            "SET application_name = 'x'",
            "SET NAMES 'UTF8'",
            "SETTINGS",
            "",
        ] {
            assert_eq!(refusal(sql), None, "{sql}");
        }
        let sql = refusal("SET search_path TO x'; DROP TABLE t; --").unwrap();
        assert!(sql.contains("SET search_path would"), "{sql}");
    }

    /// `(tag, body)` as the wire has it.
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn rewritten(stream: &mut Unnamed<()>, bytes: &[u8]) -> Vec<Vec<u8>> {
        stream.pending.extend_from_slice(bytes);
        stream.rewrite();
        let out = std::mem::take(&mut stream.out);
        let mut messages = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = length(&out[at + 1..at + 5]);
            messages.push(out[at..at + 1 + len].to_vec());
            at += 1 + len;
        }
        messages
    }

    #[test]
    fn named_statements_become_unnamed_and_are_parsed_again_in_each_round() {
        let mut s = Unnamed::new(());
        s.started = true;
        let prepare = [
            msg(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17"),
            msg(b'D', b"Ss1\0"),
            msg(b'S', b""),
        ]
        .concat();
        let out = rewritten(&mut s, &prepare);
        assert_eq!(
            out,
            [
                msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17"),
                msg(b'D', b"S\0"),
                msg(b'S', b"")
            ]
        );
        // A later round: parsed again before the bind, in one piece
        // written in two halves.
        let bind = [
            msg(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x04abcd\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        assert!(rewritten(&mut s, &bind[..7]).is_empty());
        let out = rewritten(&mut s, &bind[7..]);
        assert_eq!(
            out,
            [
                msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17"),
                msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x04abcd\0\0"),
                msg(b'E', b"\0\0\0\0\0"),
                msg(b'S', b"")
            ]
        );
        assert_eq!(
            Vec::from(s.expect.clone()),
            [Expect::Keep, Expect::Round, Expect::Drop, Expect::Round]
        );
        // Close closes the unnamed statement and forgets the text.
        let out = rewritten(&mut s, &msg(b'C', b"Ss1\0"));
        assert_eq!(out, [msg(b'C', b"S\0")]);
        assert!(s.statements.is_empty());
    }

    #[test]
    fn the_added_parse_completes_are_taken_out_of_the_answer() {
        let mut s = Unnamed::new(());
        s.expect = VecDeque::from([
            Expect::Keep,
            Expect::Round,
            Expect::Drop,
            Expect::Round,
            Expect::Drop,
            Expect::Keep,
            Expect::Round,
        ]);
        // Each message, and whether the driver gets it.
        let answer = [
            // round 1: the driver's own Parse
            (msg(b'1', b""), true),
            (msg(b't', b"\0\0"), true),
            (msg(b'Z', b"I"), true),
            // round 2: an added Parse, then the bind
            (msg(b'1', b""), false),
            (msg(b'2', b""), true),
            (msg(b'C', b"SELECT 1\0"), true),
            (msg(b'Z', b"I"), true),
            // round 3: the added Parse fails; nothing else answers
            (msg(b'E', b"Mno\0\0"), true),
            (msg(b'Z', b"I"), true),
        ];
        s.input = answer.iter().flat_map(|(m, _)| m.clone()).collect();
        let want: Vec<u8> = answer
            .iter()
            .filter(|(_, handed)| *handed)
            .flat_map(|(m, _)| m.clone())
            .collect();
        let mut storage = [0u8; 7];
        let mut got = Vec::new();
        loop {
            let mut buf = ReadBuf::new(&mut storage);
            s.hand_over(&mut buf);
            if buf.filled().is_empty() {
                break;
            }
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, want);
        assert!(s.expect.is_empty());
    }
}
