//! The byte stream under every pgarc session: a thin, message-aware layer between
//! tokio-postgres and the socket (or the TLS stream), for two things tokio-postgres cannot do.
//!
//! 1. **Statements as bytes.** The archive's SQL and names are bytes in the archive's (the
//!    database's) encoding: LATIN1, EUC_JP, SQL_ASCII with any byte, ... tokio-postgres takes
//!    statements as `&str`, so bytes that are not UTF-8 cannot be passed to it. The wire
//!    carries bytes, so [`Raw`] registers the exact statement under an ASCII placeholder; the
//!    placeholder goes through tokio-postgres, and this layer puts the registered bytes in its
//!    place in the outgoing Query or Parse message. Bytes that are valid UTF-8 need no
//!    placeholder. pg_restore and pg_dump do the same thing: send the archive's bytes as they
//!    are, under `client_encoding` set to the archive's encoding.
//! 2. **COPY FROM STDIN that the server refuses.** tokio-postgres' `copy_in` sends Bind,
//!    Execute and Sync, and its sink later sends CopyDone (or CopyFail) and another Sync. When
//!    the server rejects the COPY before entering copy mode (a missing table or column, a
//!    permission), both Syncs are answered, and the second ReadyForQuery arrives when the
//!    client expects nothing: the connection fails with "unexpected message from server" and
//!    every later statement on the session is lost (rust-postgres issues 789 and 1337). For
//!    statements prepared as COPY FROM STDIN through [`Raw`], this layer sends Flush instead
//!    of the first Sync: the server then answers exactly once, in every case.
//!
//! Incoming, it rewrites the text fields of ErrorResponse and NoticeResponse messages that are
//! not valid UTF-8 (a message quoting a LATIN1 name under `client_encoding = LATIN1`) with
//! `\xNN` escapes for the invalid bytes, so that the server's message is still shown instead
//! of "error parsing response". Every other message passes through untouched.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A statement registered for substitution.
#[derive(Debug)]
struct Registered {
    sql: Vec<u8>,
    copy_in: bool,
}

/// The statements waiting to be put on the wire in place of their placeholders. Shared by a
/// session (which registers) and its [`Wire`] (which substitutes).
#[derive(Debug, Default)]
pub struct Raw {
    pending: Mutex<HashMap<Vec<u8>, Registered>>,
}

static NEXT_PLACEHOLDER: AtomicU64 = AtomicU64::new(1);

/// A registration; dropping it forgets a statement that never reached the wire.
pub struct Placeholder<'a> {
    raw: &'a Raw,
    text: String,
}

impl Placeholder<'_> {
    /// The ASCII text to hand to tokio-postgres (a SQL comment, harmless if ever executed).
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Drop for Placeholder<'_> {
    fn drop(&mut self) {
        self.raw
            .pending
            .lock()
            .expect("not poisoned")
            .remove(self.text.as_bytes());
    }
}

impl Raw {
    /// Registers `sql`; `copy_in` marks a `COPY ... FROM STDIN` to be prepared (see the module
    /// documentation).
    pub fn register(&self, sql: &[u8], copy_in: bool) -> Placeholder<'_> {
        let n = NEXT_PLACEHOLDER.fetch_add(1, Ordering::Relaxed);
        let text = format!("/* pgarc statement {n} */");
        self.pending.lock().expect("not poisoned").insert(
            text.as_bytes().to_vec(),
            Registered {
                sql: sql.to_vec(),
                copy_in,
            },
        );
        Placeholder { raw: self, text }
    }

    fn take(&self, placeholder: &[u8]) -> Option<Registered> {
        let mut pending = self.pending.lock().expect("not poisoned");
        if pending.is_empty() {
            return None;
        }
        pending.remove(placeholder)
    }
}

/// Splits the byte stream of one direction into messages: a one-byte type and a four-byte
/// big-endian length that counts itself (the first frontend message, the startup packet,
/// has no type byte). Messages of the kinds `keep` selects are collected whole and handed
/// to the caller; everything else is copied to the output as it arrives.
#[derive(Debug)]
struct Framer {
    untyped_first: bool,
    head: Vec<u8>,
    in_body: bool,
    left: usize,
    kept: Option<(u8, Vec<u8>)>,
}

impl Framer {
    fn new(untyped_first: bool) -> Self {
        Framer {
            untyped_first,
            head: Vec::with_capacity(5),
            in_body: false,
            left: 0,
            kept: None,
        }
    }

    fn feed(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        keep: fn(u8) -> bool,
        mut whole: impl FnMut(u8, Vec<u8>, &mut Vec<u8>),
    ) -> io::Result<()> {
        let mut i = 0;
        while i < data.len() {
            if !self.in_body {
                let size = if self.untyped_first { 4 } else { 5 };
                let take = (size - self.head.len()).min(data.len() - i);
                self.head.extend_from_slice(&data[i..i + take]);
                i += take;
                if self.head.len() < size {
                    break;
                }
                let ty = if self.untyped_first { 0 } else { self.head[0] };
                let len = u32::from_be_bytes(self.head[size - 4..].try_into().expect("4 bytes"));
                let body = (len as usize).checked_sub(4).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "protocol message too short")
                })?;
                self.untyped_first = false;
                if keep(ty) {
                    self.kept = Some((ty, Vec::with_capacity(body.min(1 << 20))));
                } else {
                    out.extend_from_slice(&self.head);
                }
                self.head.clear();
                self.left = body;
                self.in_body = true;
            }
            let take = self.left.min(data.len() - i);
            match &mut self.kept {
                Some((_, body)) => body.extend_from_slice(&data[i..i + take]),
                None => out.extend_from_slice(&data[i..i + take]),
            }
            i += take;
            self.left -= take;
            if self.left == 0 {
                self.in_body = false;
                if let Some((ty, body)) = self.kept.take() {
                    whole(ty, body, out);
                }
            }
        }
        Ok(())
    }
}

fn put_message(out: &mut Vec<u8>, ty: u8, body: &[u8]) {
    out.push(ty);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// The C string at the start of `bytes` and what follows its NUL.
fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, bytes)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// What the frontend direction remembers between messages.
#[derive(Debug, Default)]
struct Outgoing {
    /// Prepared statements (by name) that are `COPY ... FROM STDIN`.
    copy_statements: HashSet<Vec<u8>>,
    /// A Bind of such a statement was sent: its Sync becomes a Flush.
    copy_bound: bool,
}

impl Outgoing {
    fn message(&mut self, raw: &Raw, ty: u8, body: Vec<u8>, out: &mut Vec<u8>) {
        match ty {
            b'Q' => {
                let query = body.strip_suffix(&[0]).unwrap_or(&body);
                match raw.take(query) {
                    Some(r) => {
                        let mut b = r.sql;
                        b.push(0);
                        put_message(out, ty, &b);
                    }
                    None => put_message(out, ty, &body),
                }
            }
            b'P' => {
                let Some((name, rest)) = cstr(&body) else {
                    return put_message(out, ty, &body);
                };
                let Some((query, params)) = cstr(rest) else {
                    return put_message(out, ty, &body);
                };
                match raw.take(query) {
                    Some(r) => {
                        if r.copy_in {
                            self.copy_statements.insert(name.to_vec());
                        }
                        let mut b = Vec::with_capacity(body.len() + r.sql.len());
                        b.extend_from_slice(name);
                        b.push(0);
                        b.extend_from_slice(&r.sql);
                        b.push(0);
                        b.extend_from_slice(params);
                        put_message(out, ty, &b);
                    }
                    None => put_message(out, ty, &body),
                }
            }
            b'B' => {
                self.copy_bound = cstr(&body)
                    .and_then(|(_portal, rest)| cstr(rest))
                    .is_some_and(|(stmt, _)| self.copy_statements.contains(stmt));
                put_message(out, ty, &body);
            }
            b'S' if self.copy_bound => {
                self.copy_bound = false;
                put_message(out, b'H', &[]);
            }
            b'C' => {
                if let Some((b'S', name)) = body.split_first().map(|(k, r)| (*k, r)) {
                    let name = name.strip_suffix(&[0]).unwrap_or(name);
                    self.copy_statements.remove(name);
                }
                put_message(out, ty, &body);
            }
            _ => put_message(out, ty, &body),
        }
    }
}

fn outgoing_kept(ty: u8) -> bool {
    matches!(ty, b'Q' | b'P' | b'B' | b'S' | b'C')
}

fn incoming_kept(ty: u8) -> bool {
    matches!(ty, b'E' | b'N')
}

/// An ErrorResponse or NoticeResponse with every field made valid UTF-8 (invalid bytes as
/// `\xNN`); unchanged when it already is.
fn sanitize_fields(ty: u8, body: Vec<u8>, out: &mut Vec<u8>) {
    let valid = body
        .split(|&b| b == 0)
        .all(|f| f.len() < 2 || std::str::from_utf8(&f[1..]).is_ok());
    if valid {
        return put_message(out, ty, &body);
    }
    let mut b = Vec::with_capacity(body.len() + 16);
    let mut rest = &body[..];
    while let Some((&code, after)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some((value, tail)) = cstr(after) else {
            break;
        };
        b.push(code);
        b.extend_from_slice(escape_invalid_utf8(value).as_bytes());
        b.push(0);
        rest = tail;
    }
    b.push(0);
    put_message(out, ty, &b);
}

/// Text for messages: valid UTF-8 as it is, every other byte as `\xNN`.
pub fn escape_invalid_utf8(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Above this many pending outgoing bytes, a write first drains them to the socket.
const HIGH_WATER: usize = 256 << 10;

/// The stream tokio-postgres talks through (see the module documentation).
pub struct Wire<S> {
    inner: S,
    raw: Arc<Raw>,
    out_framer: Framer,
    outgoing: Outgoing,
    out: Vec<u8>,
    out_pos: usize,
    in_framer: Framer,
    read_buf: Box<[u8]>,
    incoming: Vec<u8>,
    in_pos: usize,
}

impl<S> Wire<S> {
    /// Wraps a stream on which the startup packet is the next thing written.
    pub fn new(inner: S, raw: Arc<Raw>) -> Self {
        Wire {
            inner,
            raw,
            out_framer: Framer::new(true),
            outgoing: Outgoing::default(),
            out: Vec::with_capacity(64 << 10),
            out_pos: 0,
            in_framer: Framer::new(false),
            read_buf: vec![0u8; 64 << 10].into_boxed_slice(),
            incoming: Vec::with_capacity(64 << 10),
            in_pos: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.out_pos >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        // A socket that takes part of what is pending leaves the sent bytes at the front:
        // drop them before appending, or `out` grows by every byte sent through a long COPY
        // whose socket is never drained to empty (it did: 500 MB for a 1 GB table).
        if this.out_pos >= HIGH_WATER {
            this.out.drain(..this.out_pos);
            this.out_pos = 0;
        }
        let (raw, outgoing) = (&this.raw, &mut this.outgoing);
        this.out_framer
            .feed(buf, &mut this.out, outgoing_kept, |ty, body, out| {
                outgoing.message(raw, ty, body, out)
            })?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.in_pos < this.incoming.len() {
                let n = buf.remaining().min(this.incoming.len() - this.in_pos);
                buf.put_slice(&this.incoming[this.in_pos..this.in_pos + n]);
                this.in_pos += n;
                if this.in_pos == this.incoming.len() {
                    this.incoming.clear();
                    this.in_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.read_buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.in_framer.feed(
                &this.read_buf[..n],
                &mut this.incoming,
                incoming_kept,
                sanitize_fields,
            )?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_message(&mut v, ty, body);
        v
    }

    /// Feeds `input` to the outgoing side in pieces of `step` bytes.
    fn send(raw: &Raw, input: &[u8], step: usize) -> Vec<u8> {
        let mut framer = Framer::new(true);
        let mut outgoing = Outgoing::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            framer
                .feed(piece, &mut out, outgoing_kept, |ty, body, out| {
                    outgoing.message(raw, ty, body, out)
                })
                .unwrap();
        }
        out
    }

    /// A socket whose buffer takes at most `max` bytes, then is full (Pending) until the
    /// next call: what a busy server's socket does.
    struct Slow {
        max: usize,
        taken: usize,
        full: bool,
    }

    impl AsyncWrite for Slow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if std::mem::take(&mut self.full) {
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.taken += n;
            self.full = true;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A long COPY through a socket that never takes everything at once: what was sent is
    /// dropped from the pending bytes, so they stay within a few high-water marks whatever
    /// the volume (they grew by every byte sent: 500 MB for a 1 GB table).
    #[test]
    fn pending_bytes_stay_bounded_when_the_socket_takes_part_of_them() {
        let mut wire = Wire::new(
            Slow {
                max: 200 << 10,
                taken: 0,
                full: false,
            },
            Arc::new(Raw::default()),
        );
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut startup = 8u32.to_be_bytes().to_vec();
        startup.extend_from_slice(&[0, 3, 0, 0]);
        let data = msg(b'd', &[7u8; 256 << 10]);
        let mut sent = 0usize;
        for buf in std::iter::once(&startup).chain(std::iter::repeat_n(&data, 4000)) {
            let mut done = 0;
            while done < buf.len() {
                match Pin::new(&mut wire).poll_write(&mut cx, &buf[done..]) {
                    Poll::Ready(Ok(n)) => done += n,
                    Poll::Pending => {} // the socket is writable again
                    Poll::Ready(Err(e)) => panic!("{e}"),
                }
            }
            sent += buf.len();
            assert!(
                wire.out.capacity() <= 4 * HIGH_WATER + buf.len(),
                "{}",
                wire.out.capacity()
            );
        }
        while Pin::new(&mut wire).poll_flush(&mut cx).is_pending() {}
        assert_eq!(
            wire.inner.taken, sent,
            "every byte reached the socket, once"
        );
    }

    #[test]
    fn placeholders_become_the_registered_bytes_and_copy_syncs_become_flushes() {
        let raw = Raw::default();
        let latin1 = b"CREATE TABLE caf\xe9 (x int)";
        let copy = b"COPY caf\xe9 (x) FROM stdin";
        let p1 = raw.register(latin1, false);
        let p2 = raw.register(copy, true);
        let mut startup = 12u32.to_be_bytes().to_vec();
        startup.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 0]);
        let mut input = startup.clone();
        input.extend(msg(b'Q', format!("{}\0", p1.text()).as_bytes()));
        input.extend(msg(b'Q', b"SELECT 1\0"));
        input.extend(msg(b'P', format!("s1\0{}\0\0\0", p2.text()).as_bytes()));
        input.extend(msg(b'S', b""));
        input.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        input.extend(msg(b'E', b"\0\0\0\0\0"));
        input.extend(msg(b'S', b""));
        input.extend(msg(b'd', &[7u8; 1000]));
        input.extend(msg(b'c', b""));
        input.extend(msg(b'S', b""));

        let mut expected = startup;
        expected.extend(msg(b'Q', b"CREATE TABLE caf\xe9 (x int)\0"));
        expected.extend(msg(b'Q', b"SELECT 1\0"));
        expected.extend(msg(b'P', b"s1\0COPY caf\xe9 (x) FROM stdin\0\0\0"));
        expected.extend(msg(b'S', b""));
        expected.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        expected.extend(msg(b'E', b"\0\0\0\0\0"));
        expected.extend(msg(b'H', b""));
        expected.extend(msg(b'd', &[7u8; 1000]));
        expected.extend(msg(b'c', b""));
        expected.extend(msg(b'S', b""));
        for step in [1, 3, 7, 64, 4096] {
            let raw2 = Raw::default();
            // Re-register under the same placeholders for each pass.
            for (p, sql, copy) in [(&p1, &latin1[..], false), (&p2, &copy[..], true)] {
                raw2.pending.lock().unwrap().insert(
                    p.text().as_bytes().to_vec(),
                    Registered {
                        sql: sql.to_vec(),
                        copy_in: copy,
                    },
                );
            }
            assert_eq!(send(&raw2, &input, step), expected, "step {step}");
        }
        drop(p1);
        assert_eq!(
            raw.pending.lock().unwrap().len(),
            1,
            "a dropped placeholder is forgotten"
        );
    }

    #[test]
    fn error_fields_that_are_not_utf8_are_escaped_and_others_pass_unchanged() {
        let mut framer = Framer::new(false);
        let mut out = Vec::new();
        let bad = msg(b'E', b"SERROR\0Mrelation \"caf\xe9\" does not exist\0\0");
        let good = msg(b'E', b"SERROR\0Mno\0\0");
        let row = msg(b'D', b"\0\x01\0\0\0\x01\xe9");
        let mut input = bad.clone();
        input.extend(&row);
        input.extend(&good);
        for piece in input.chunks(5) {
            framer
                .feed(piece, &mut out, incoming_kept, sanitize_fields)
                .unwrap();
        }
        let mut expected = msg(b'E', b"SERROR\0Mrelation \"caf\\xe9\" does not exist\0\0");
        expected.extend(&row);
        expected.extend(&good);
        assert_eq!(out, expected);
    }
}
