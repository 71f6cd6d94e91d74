//! [`Rounds`]: when a Postgres server owes its client an answer, read off
//! the protocol's messages in both directions (above TLS), for the
//! `query_timeout` watch ([`Silence`](super::super::silence::Silence)).
//!
//! Every round the client starts ends with exactly one ReadyForQuery
//! (`Z`) from the server: the startup message, each Sync (`S`), each
//! simple Query (`Q`) and each FunctionCall (`F`). The server owes an
//! answer while fewer `Z` came than rounds went. Counting matters because
//! tokio-postgres sends the Close of a statement diesel could not cache
//! (`sql_query`, `dsl::sql`, IN lists) without waiting for its answer: the
//! next request is often written before that answer is read, and the
//! answer must not make the next request look answered.
//!
//! In COPY FROM STDIN (`G`, and `W` for COPY BOTH) the server waits for
//! the client, and ignores the Syncs it gets meanwhile: nothing is owed
//! until the `Z` that ends the copy, from which the count starts again at
//! zero. diesel-async has no COPY FROM; this only keeps the count from
//! drifting up (a count that is too high would cut off an idle
//! connection; one that is too low only leaves a round unwatched).

use super::{super::silence::Turns, unnamed::length};

/// Rounds sent and not yet ended by the server (see the module docs).
#[derive(Debug)]
pub(super) struct Rounds {
    owed: u32,
    /// The client's messages; the first (startup) has no type byte.
    sent: Frames,
    /// The server's messages.
    got: Frames,
    /// In COPY FROM STDIN: the server waits for the client.
    copying: bool,
}

impl Default for Rounds {
    fn default() -> Self {
        Self {
            owed: 0,
            sent: Frames::new(false),
            got: Frames::new(true),
            copying: false,
        }
    }
}

impl Turns for Rounds {
    fn wrote(&mut self, bytes: &[u8]) {
        let owed = &mut self.owed;
        self.sent.feed(bytes, |tag| {
            // The startup message (no type byte), Sync, Query, FunctionCall.
            if matches!(tag, None | Some(b'S' | b'Q' | b'F')) {
                *owed = owed.saturating_add(1);
            }
        });
    }

    fn read(&mut self, bytes: &[u8]) {
        let (owed, copying) = (&mut self.owed, &mut self.copying);
        self.got.feed(bytes, |tag| match tag {
            Some(b'Z') if *copying => {
                *copying = false;
                *owed = 0;
            }
            Some(b'Z') => *owed = owed.saturating_sub(1),
            Some(b'G' | b'W') => *copying = true,
            _ => {}
        });
    }

    fn owed(&self) -> bool {
        self.owed > 0 && !self.copying
    }
}

/// Where a byte stream of messages stands: within a header (type byte if
/// `typed`, then a big-endian length that counts itself) or within a body.
#[derive(Debug)]
struct Frames {
    typed: bool,
    head: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    skip: usize,
}

impl Frames {
    fn new(typed: bool) -> Self {
        Self {
            typed,
            head: [0; 5],
            have: 0,
            skip: 0,
        }
    }

    /// Walks `bytes`, calling `header` with each message's type (`None`
    /// for an untyped one) once its header is complete. After the first
    /// message every message is typed.
    fn feed(&mut self, mut bytes: &[u8], mut header: impl FnMut(Option<u8>)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let need = if self.typed { 5 } else { 4 };
            let n = (need - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < need {
                break;
            }
            let (tag, len) = if self.typed {
                (Some(self.head[0]), &self.head[1..5])
            } else {
                (None, &self.head[..4])
            };
            self.skip = length(len) - 4;
            self.have = 0;
            self.typed = true;
            header(tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed message with a body of `body` bytes.
    fn msg(tag: u8, body: usize) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body as u32 + 4).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', body));
        m
    }

    fn startup() -> Vec<u8> {
        let mut m = 16u32.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 3, 0, 0]);
        m.extend_from_slice(b"user\0pg\0");
        m
    }

    /// The statement's round, then its Close sent with no one waiting,
    /// then the next statement's Parse, all before any answer.
    fn pipelined() -> Vec<u8> {
        [
            msg(b'B', 12),
            msg(b'E', 5),
            msg(b'S', 0),
            msg(b'C', 4),
            msg(b'S', 0),
            msg(b'P', 20),
            msg(b'D', 5),
            msg(b'S', 0),
        ]
        .concat()
    }

    fn answers(rounds: usize) -> Vec<u8> {
        let mut a = Vec::new();
        for _ in 0..rounds {
            a.extend(msg(b'2', 0));
            a.extend(msg(b'D', 10));
            a.extend(msg(b'C', 9));
            a.extend(msg(b'Z', 1));
        }
        a
    }

    #[test]
    fn the_startup_is_owed_until_ready_for_query() {
        let mut r = Rounds::default();
        assert!(!r.owed());
        r.wrote(&startup());
        assert!(r.owed());
        r.read(&[msg(b'R', 4), msg(b'S', 20), msg(b'K', 8)].concat());
        assert!(r.owed(), "authenticated, not yet ready");
        r.read(&msg(b'Z', 1));
        assert!(!r.owed());
    }

    #[test]
    fn an_answer_to_one_round_leaves_the_next_owed() {
        let mut r = Rounds::default();
        r.wrote(&startup());
        r.read(&msg(b'Z', 1));
        r.wrote(&pipelined());
        r.read(&answers(2));
        assert!(r.owed(), "the third round is unanswered");
        r.read(&answers(1));
        assert!(!r.owed());
    }

    /// Messages cut anywhere, in either direction, count the same.
    #[test]
    fn split_at_every_byte() {
        let mut r = Rounds::default();
        let out = [startup(), pipelined()].concat();
        let back = [msg(b'Z', 1), answers(3)].concat();
        for b in out.chunks(1) {
            r.wrote(b);
        }
        assert_eq!(r.owed, 4);
        for (i, b) in back.chunks(3).enumerate() {
            r.read(b);
            assert!(r.owed() || i == back.len().div_ceil(3) - 1);
        }
        assert!(!r.owed());
    }

    #[test]
    fn notices_and_notifications_are_not_answers() {
        let mut r = Rounds::default();
        r.wrote(&startup());
        r.read(&msg(b'Z', 1));
        r.wrote(&msg(b'Q', 30));
        r.read(&[msg(b'N', 40), msg(b'A', 20), msg(b'S', 10)].concat());
        assert!(r.owed());
        r.read(&[msg(b'C', 9), msg(b'Z', 1)].concat());
        assert!(!r.owed());
        // Idle: a notification owes nothing.
        r.read(&msg(b'A', 20));
        assert!(!r.owed());
    }

    #[test]
    fn copy_from_stdin_waits_for_the_client_and_recounts_after() {
        let mut r = Rounds::default();
        r.wrote(&startup());
        r.read(&msg(b'Z', 1));
        r.wrote(&[msg(b'B', 8), msg(b'E', 5), msg(b'S', 0)].concat());
        r.read(&msg(b'G', 3));
        assert!(!r.owed(), "the server waits for the data");
        r.wrote(&[msg(b'd', 100), msg(b'c', 0), msg(b'S', 0)].concat());
        assert!(!r.owed());
        r.read(&[msg(b'C', 9), msg(b'Z', 1)].concat());
        assert!(!r.owed(), "the ignored Sync is not owed");
        r.wrote(&msg(b'Q', 10));
        assert!(r.owed());
    }
}
