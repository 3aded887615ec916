//! The primitive encodings of `toc.dat` (format-spec §3.1): Int, Str and raw bytes.
//!
//! An Int is one sign byte (0 positive, anything else negative) followed by `intSize` bytes of
//! the absolute value, least significant first. A Str is an Int length followed by that many
//! bytes; a negative length is NULL. The reader works on an in-memory slice and checks every
//! length against what is left before it allocates, so a hostile length field costs nothing.

use std::borrow::Cow;
use std::fmt;

use super::error::{TocError, TocErrorKind};

/// A Str of `toc.dat`: raw bytes, or NULL (distinct from the empty string).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TocStr(Option<std::sync::Arc<[u8]>>);

impl TocStr {
    pub const NULL: TocStr = TocStr(None);

    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        TocStr(Some(std::sync::Arc::from(bytes.into())))
    }

    pub(crate) fn shared(bytes: std::sync::Arc<[u8]>) -> Self {
        TocStr(Some(bytes))
    }

    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }

    /// True when the string is not NULL and equals `s`.
    pub fn is(&self, s: &str) -> bool {
        self.as_bytes() == Some(s.as_bytes())
    }

    /// True when the string is not NULL and starts with `prefix`.
    /// Whether the bytes hold `needle` anywhere (false for NULL).
    pub fn contains(&self, needle: &str) -> bool {
        self.as_bytes()
            .is_some_and(|b| memchr::memmem::find(b, needle.as_bytes()).is_some())
    }

    pub fn starts_with(&self, prefix: &str) -> bool {
        self.as_bytes()
            .is_some_and(|b| b.starts_with(prefix.as_bytes()))
    }

    /// The bytes as a carrier string (`pg::carrier`): lossless, for building SQL.
    pub fn carrier(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| b.iter().map(|&c| char::from(c)).collect())
    }

    /// The text for display; invalid UTF-8 is replaced. None for NULL.
    pub fn to_str_lossy(&self) -> Option<Cow<'_, str>> {
        self.as_bytes().map(String::from_utf8_lossy)
    }
}

impl From<&str> for TocStr {
    fn from(s: &str) -> Self {
        TocStr::new(s.as_bytes())
    }
}

impl fmt::Debug for TocStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str_lossy() {
            None => f.write_str("NULL"),
            Some(s) => write!(f, "{s:?}"),
        }
    }
}

/// A cursor over `toc.dat` bytes that records where each item starts for error messages.
pub(crate) struct Reader<'a> {
    /// Where the bytes come from: a slice, or a file read as it is parsed (a TOC of
    /// 100,000 tables is 67 MB; it need not be in memory twice).
    src: Box<dyn std::io::Read + 'a>,
    /// How many bytes the source holds.
    total: usize,
    pos: usize,
    int_size: u8,
    /// The entry being read (index, dumpId), attached to errors.
    pub(crate) entry: Option<(usize, Option<i32>)>,
    /// The bytes of the item being read.
    scratch: Vec<u8>,
    /// Short strings read so far, shared: most entries repeat their desc, schema, owner,
    /// tablespace and access method, and one allocation each would double the memory a
    /// TOC of 100,000 tables takes.
    interned: std::collections::HashSet<std::sync::Arc<[u8]>>,
}

/// Strings up to this length are shared between entries.
const INTERNED_MAX: usize = 64;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader::from_stream(buf, buf.len())
    }

    /// Reads from `src`, which holds `total` bytes.
    pub(crate) fn from_stream(src: impl std::io::Read + 'a, total: usize) -> Self {
        Reader {
            src: Box::new(src),
            total,
            pos: 0,
            int_size: 4,
            entry: None,
            scratch: Vec::new(),
            interned: std::collections::HashSet::new(),
        }
    }

    pub(crate) fn set_int_size(&mut self, int_size: u8) {
        self.int_size = int_size;
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.total.saturating_sub(self.pos)
    }

    pub(crate) fn error_at(&self, offset: usize, kind: TocErrorKind) -> TocError {
        TocError {
            offset,
            entry: self.entry,
            kind,
        }
    }

    /// Reads the next `n` bytes into `scratch`.
    fn fill(&mut self, n: usize, what: &'static str) -> Result<(), TocError> {
        let truncated = |r: &Self| {
            r.error_at(
                r.pos,
                TocErrorKind::Truncated {
                    what,
                    needed: n,
                    available: r.remaining(),
                },
            )
        };
        if n > self.remaining() {
            return Err(truncated(self));
        }
        self.scratch.resize(n, 0);
        if self.src.read_exact(&mut self.scratch).is_err() {
            return Err(truncated(self));
        }
        self.pos += n;
        Ok(())
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&[u8], TocError> {
        self.fill(n, what)?;
        Ok(&self.scratch)
    }

    pub(crate) fn byte(&mut self, what: &'static str) -> Result<u8, TocError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// Reads an Int. Bytes beyond the eighth must be zero.
    pub(crate) fn int(&mut self, what: &'static str) -> Result<i64, TocError> {
        let start = self.pos;
        let raw = self.bytes(1 + usize::from(self.int_size), what)?;
        let negative = raw[0] != 0;
        let mut magnitude: u64 = 0;
        for (i, &b) in raw[1..].iter().enumerate() {
            if i < 8 {
                magnitude |= u64::from(b) << (8 * i);
            } else if b != 0 {
                return Err(self.error_at(start, TocErrorKind::IntTooLarge { what }));
            }
        }
        let value = i64::try_from(magnitude)
            .map_err(|_| self.error_at(start, TocErrorKind::IntTooLarge { what }))?;
        Ok(if negative { -value } else { value })
    }

    /// Reads an Int that must fit a C `int`, as every Int pg_dump writes does.
    pub(crate) fn int32(&mut self, what: &'static str) -> Result<i32, TocError> {
        let start = self.pos;
        let value = self.int(what)?;
        i32::try_from(value)
            .map_err(|_| self.error_at(start, TocErrorKind::OutOfRange { what, value }))
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<TocStr, TocError> {
        let start = self.pos;
        let len = self.int(what)?;
        if len < 0 {
            return Ok(TocStr::NULL);
        }
        let available = self.remaining();
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| n <= available)
            .ok_or_else(|| {
                self.error_at(
                    start,
                    TocErrorKind::StringTooLong {
                        what,
                        len,
                        available,
                    },
                )
            })?;
        self.fill(n, what)?;
        let bytes = &self.scratch[..];
        if n > INTERNED_MAX {
            return Ok(TocStr::new(bytes));
        }
        if let Some(shared) = self.interned.get(bytes) {
            return Ok(TocStr::shared(shared.clone()));
        }
        let shared: std::sync::Arc<[u8]> = std::sync::Arc::from(bytes);
        self.interned.insert(shared.clone());
        Ok(TocStr::shared(shared))
    }

    /// Reads a Str that pg_restore dereferences unconditionally and so must not be NULL.
    pub(crate) fn required_string(&mut self, what: &'static str) -> Result<TocStr, TocError> {
        let start = self.pos;
        let s = self.string(what)?;
        if s.is_null() {
            return Err(self.error_at(start, TocErrorKind::RequiredNull { what }));
        }
        Ok(s)
    }
}

/// Appends primitive encodings to a buffer, refusing values the header's intSize cannot hold.
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
    int_size: u8,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer {
            out: Vec::with_capacity(64 * 1024),
            int_size: 4,
        }
    }

    pub(crate) fn set_int_size(&mut self, int_size: u8) {
        self.int_size = int_size;
    }

    fn error(&self, kind: TocErrorKind) -> TocError {
        TocError {
            offset: self.out.len(),
            entry: None,
            kind,
        }
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    pub(crate) fn int(&mut self, value: i64, what: &'static str) -> Result<(), TocError> {
        let magnitude = value.unsigned_abs();
        let bits = 8 * u32::from(self.int_size);
        if bits < 64 && magnitude >> bits != 0 {
            return Err(self.error(TocErrorKind::DoesNotFit {
                what,
                value,
                int_size: self.int_size,
            }));
        }
        self.out.push(u8::from(value < 0));
        for i in 0..usize::from(self.int_size) {
            self.out.push(if i < 8 {
                (magnitude >> (8 * i)) as u8
            } else {
                0
            });
        }
        Ok(())
    }

    pub(crate) fn string(&mut self, s: &TocStr, what: &'static str) -> Result<(), TocError> {
        match s.as_bytes() {
            None => self.int(-1, what),
            Some(bytes) => {
                let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
                self.int(len, what)?;
                self.out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    pub(crate) fn required_string(
        &mut self,
        s: &TocStr,
        what: &'static str,
    ) -> Result<(), TocError> {
        if s.is_null() {
            return Err(self.error(TocErrorKind::RequiredNull { what }));
        }
        self.string(s, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_encoding_matches_the_reference_examples() {
        let mut w = Writer::new();
        w.int(-1, "x").unwrap();
        w.int(3380, "x").unwrap();
        assert_eq!(w.out, [1, 1, 0, 0, 0, 0, 0x34, 0x0d, 0, 0]);
        let mut r = Reader::new(&w.out);
        assert_eq!(r.int(".").unwrap(), -1);
        assert_eq!(r.int(".").unwrap(), 3380);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn null_and_empty_strings_stay_distinct() {
        let mut w = Writer::new();
        w.string(&TocStr::NULL, "a").unwrap();
        w.string(&TocStr::from(""), "b").unwrap();
        assert_eq!(w.out, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut r = Reader::new(&w.out);
        assert!(r.string("a").unwrap().is_null());
        assert_eq!(r.string("b").unwrap(), TocStr::from(""));
    }

    #[test]
    fn absurd_length_is_an_error_not_an_allocation() {
        let mut bytes = vec![0, 0xff, 0xff, 0xff, 0x7f];
        bytes.extend_from_slice(&[b'x'; 100]);
        let err = Reader::new(&bytes).string("defn").unwrap_err();
        assert_eq!(
            err.kind,
            TocErrorKind::StringTooLong {
                what: "defn",
                len: i64::from(i32::MAX),
                available: 100
            }
        );
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn value_too_wide_for_int_size_is_refused_on_write() {
        let mut w = Writer::new();
        w.set_int_size(2);
        assert!(w.int(65535, "x").is_ok());
        assert!(matches!(
            w.int(65536, "x").unwrap_err().kind,
            TocErrorKind::DoesNotFit { .. }
        ));
    }

    #[test]
    fn wide_int_size_reads_when_high_bytes_are_zero() {
        let mut w = Writer::new();
        w.set_int_size(12);
        w.int(-7, "x").unwrap();
        assert_eq!(w.out.len(), 13);
        let mut r = Reader::new(&w.out);
        r.set_int_size(12);
        assert_eq!(r.int("x").unwrap(), -7);
        let mut bad = w.out.clone();
        bad[11] = 1;
        let mut r = Reader::new(&bad);
        r.set_int_size(12);
        assert!(matches!(
            r.int("x").unwrap_err().kind,
            TocErrorKind::IntTooLarge { .. }
        ));
    }
}
