//! Data files as frames (format-spec §4.1 and §5.2): the codec that turns whole COPY rows into
//! independently decompressible frames, the row batcher that cuts a COPY stream into frames of
//! bounded size, and the frame index that records where each frame is.
//!
//! A frame is one gzip member, one zstd frame, or plain bytes. Stock pg_restore reads a file of
//! concatenated frames as one stream, so a data file written frame by frame, by several workers
//! and in any order, restores unchanged; pgarc itself uses the index to check and to split the
//! file again. Everything here is CPU work on byte slices: callers run it off the async
//! runtime's threads.

use std::fmt::Write as _;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::toc::CompressionAlgorithm;

/// The bytes every data file ends with, as pg_dump writes them: the COPY end marker `\.` and
/// two empty lines. They form the last frame, and no other frame may contain a `\.` line.
pub const END_MARKER: &[u8] = b"\\.\n\n\n";

/// The default bound on a frame's raw (decompressed) size.
pub const DEFAULT_FRAME_SIZE: usize = 4 << 20;

/// How frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    /// gzip at a level from 1 to 9.
    Gzip(u32),
    /// zstd at a level from 1 to 22.
    Zstd(i32),
}

/// gzip's level when none is given (pg_dump's default, zlib's 6).
pub const GZIP_DEFAULT_LEVEL: u32 = 6;
/// zstd's level when none is given (zstd's own default).
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Why a `-Z` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecSpecError {
    #[error("compression level {level:?} for {name} must be a number from {lo} to {hi}")]
    Level {
        level: String,
        name: String,
        lo: i64,
        hi: i64,
    },
    #[error("unknown compression {0:?}: use none, gzip[:1-9] or zstd[:1-22]")]
    Unknown(String),
}

impl Codec {
    /// Parses `none`, `gzip[:LEVEL]` or `zstd[:LEVEL]` (the `-Z` syntax).
    pub fn parse(spec: &str) -> Result<Codec, CodecSpecError> {
        let (name, level) = match spec.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (spec, None),
        };
        let level_in = |lo: i64, hi: i64| -> Result<Option<i64>, CodecSpecError> {
            level
                .map(|l| match l.parse::<i64>() {
                    Ok(v) if (lo..=hi).contains(&v) => Ok(v),
                    _ => Err(CodecSpecError::Level {
                        level: l.to_string(),
                        name: name.to_string(),
                        lo,
                        hi,
                    }),
                })
                .transpose()
        };
        match name {
            "none" if level.is_none() => Ok(Codec::None),
            "gzip" => Ok(Codec::Gzip(
                level_in(1, 9)?.map_or(GZIP_DEFAULT_LEVEL, |l| l as u32),
            )),
            "zstd" => Ok(Codec::Zstd(
                level_in(1, 22)?.map_or(ZSTD_DEFAULT_LEVEL, |l| l as i32),
            )),
            _ => Err(CodecSpecError::Unknown(spec.to_string())),
        }
    }

    /// The file name suffix pg_restore looks for.
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Gzip(_) => ".gz",
            Codec::Zstd(_) => ".zst",
        }
    }

    /// The algorithm a 1.15+ header names for files of this codec.
    pub fn algorithm(self) -> CompressionAlgorithm {
        match self {
            Codec::None => CompressionAlgorithm::None,
            Codec::Gzip(_) => CompressionAlgorithm::Gzip,
            Codec::Zstd(_) => CompressionAlgorithm::Zstd,
        }
    }

    /// Compresses `raw` into one frame (a one-off [`Encoder`]).
    pub fn encode(self, raw: &[u8]) -> io::Result<Vec<u8>> {
        Ok(Encoder::new(self)?.frame(raw, 0)?.stored.to_vec())
    }

    /// Decompresses exactly one frame whole ([`Codec::decode_into`] into one buffer).
    pub fn decode(self, stored: &[u8], raw_limit: usize) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        let mut piece = vec![0u8; 64 << 10];
        let mut input = stored;
        self.decode_into(&mut input, raw_limit as u64, &mut piece, |p| {
            out.extend_from_slice(p)
        })?;
        Ok(out)
    }
}

/// The largest window a zstd frame may need (2^27 bytes, zstd's own default limit for
/// streaming decoders): a hostile frame header cannot make a decoder allocate more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

impl Codec {
    /// Decompresses exactly one frame from `input` in pieces of at most `piece.len()` bytes,
    /// handing each to `emit`; refuses output beyond `raw_limit` as soon as it appears and
    /// bytes after the end of the frame. Memory is the decoder's window and `piece`,
    /// whatever the frame claims. Returns the decompressed length.
    pub fn decode_into<R: io::BufRead>(
        self,
        input: &mut R,
        raw_limit: u64,
        piece: &mut [u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<u64, FrameError> {
        let mut total = 0u64;
        let mut pump = |r: &mut dyn Read| -> Result<(), FrameError> {
            loop {
                let n = match r.read(piece) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(FrameError::Corrupt(e)),
                };
                total += n as u64;
                if total > raw_limit {
                    return Err(FrameError::TooLarge {
                        limit: raw_limit as usize,
                    });
                }
                emit(&piece[..n]);
            }
        };
        match self {
            Codec::None => pump(input)?,
            Codec::Gzip(_) => pump(&mut flate2::bufread::GzDecoder::new(&mut *input))?,
            Codec::Zstd(_) => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(&mut *input)
                    .map_err(FrameError::Corrupt)?
                    .single_frame();
                dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(FrameError::Corrupt)?;
                pump(&mut dec)?;
            }
        }
        let trailing = input.fill_buf().map_err(FrameError::Corrupt)?.len();
        if trailing != 0 {
            return Err(FrameError::TrailingBytes(trailing));
        }
        Ok(total)
    }
}

/// The codec as `-Z` spells it: `none`, `gzip:LEVEL`, `zstd:LEVEL`.
impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Gzip(l) => write!(f, "gzip:{l}"),
            Codec::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("does not decompress: {0}")]
    Corrupt(io::Error),
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0} bytes follow the end of the compressed frame")]
    TrailingBytes(usize),
}

/// Compresses frame after frame for one writer thread, keeping the compression context and
/// the output buffer from one frame to the next (a fresh zstd context and a fresh 4 MiB
/// buffer per frame cost page faults and zeroing for every frame).
pub struct Encoder {
    codec: Codec,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("codec", &self.codec)
            .finish()
    }
}

/// A frame the [`Encoder`] has just made: borrowed until its next frame.
#[derive(Debug)]
pub struct EncodedFrame<'a> {
    pub stored: &'a [u8],
    pub raw_len: u64,
    pub rows: u64,
    pub sha256: [u8; 32],
}

impl EncodedFrame<'_> {
    /// An owned copy.
    pub fn to_frame(&self) -> Frame {
        Frame {
            stored: self.stored.to_vec(),
            raw_len: self.raw_len,
            rows: self.rows,
            sha256: self.sha256,
        }
    }

    /// The index line of this frame when it starts at `offset` in its data file.
    pub fn index_entry(&self, offset: u64) -> FrameIndexEntry {
        FrameIndexEntry {
            offset,
            stored: self.stored.len() as u64,
            raw: self.raw_len,
            rows: self.rows,
            sha256: self.sha256,
            rows_sum: None,
        }
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> io::Result<Encoder> {
        let zstd = match codec {
            Codec::Zstd(level) => Some(zstd::bulk::Compressor::new(level)?),
            _ => None,
        };
        Ok(Encoder {
            codec,
            zstd,
            out: Vec::new(),
        })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Compresses a batch of whole COPY text rows (each ending in `\n`) into one frame; the
    /// same bytes as [`Frame::of_rows`].
    pub fn rows<'a>(&'a mut self, raw: &'a [u8]) -> io::Result<EncodedFrame<'a>> {
        let rows = memchr::memchr_iter(b'\n', raw).count() as u64;
        self.frame(raw, rows)
    }

    /// The end frame: [`END_MARKER`], zero rows.
    pub fn end(&mut self) -> io::Result<EncodedFrame<'_>> {
        self.frame(END_MARKER, 0)
    }

    fn frame<'a>(&'a mut self, raw: &'a [u8], rows: u64) -> io::Result<EncodedFrame<'a>> {
        self.out.clear();
        let stored: &[u8] = if let Some(z) = self.zstd.as_mut() {
            self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            z.compress_to_buffer(raw, &mut self.out)?;
            &self.out
        } else if let Codec::Gzip(level) = self.codec {
            let mut enc = flate2::write::GzEncoder::new(
                std::mem::take(&mut self.out),
                flate2::Compression::new(level),
            );
            enc.write_all(raw)?;
            self.out = enc.finish()?;
            &self.out
        } else {
            raw
        };
        Ok(EncodedFrame {
            stored,
            raw_len: raw.len() as u64,
            rows,
            sha256: Sha256::digest(stored).into(),
        })
    }
}

/// A frame ready to be appended to a data file, with what its index line records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stored: Vec<u8>,
    pub raw_len: u64,
    pub rows: u64,
    pub sha256: [u8; 32],
}

impl Frame {
    /// Compresses a batch of whole COPY text rows (each ending in `\n`; COPY escapes newlines
    /// inside values, so every `\n` ends a row), with a one-off [`Encoder`].
    pub fn of_rows(codec: Codec, raw: &[u8]) -> io::Result<Frame> {
        Ok(Encoder::new(codec)?.rows(raw)?.to_frame())
    }

    /// The end frame: [`END_MARKER`], zero rows.
    pub fn end(codec: Codec) -> io::Result<Frame> {
        Ok(Encoder::new(codec)?.end()?.to_frame())
    }

    /// A borrowed view, as an [`Encoder`] makes them.
    pub fn as_encoded(&self) -> EncodedFrame<'_> {
        EncodedFrame {
            stored: &self.stored,
            raw_len: self.raw_len,
            rows: self.rows,
            sha256: self.sha256,
        }
    }

    /// The index line of this frame when it starts at `offset` in its data file.
    pub fn index_entry(&self, offset: u64) -> FrameIndexEntry {
        self.as_encoded().index_entry(offset)
    }
}

/// Collects COPY rows into batches of at most `limit` raw bytes (a longer row is a batch of
/// its own), so memory per worker stays bounded whatever the table size.
#[derive(Debug)]
pub struct RowBatcher {
    buf: Vec<u8>,
    limit: usize,
    /// A finished batch's buffer given back, to be filled again.
    spare: Option<Vec<u8>>,
}

impl RowBatcher {
    pub fn new(limit: usize) -> Self {
        RowBatcher {
            buf: Vec::with_capacity(limit),
            limit,
            spare: None,
        }
    }

    /// Adds one row; returns the finished batch when this row does not fit in the current one.
    pub fn push(&mut self, row: &[u8]) -> Option<Vec<u8>> {
        let full = !self.buf.is_empty() && self.buf.len() + row.len() > self.limit;
        let done = full.then(|| {
            let next = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(self.limit));
            std::mem::replace(&mut self.buf, next)
        });
        self.buf.extend_from_slice(row);
        done
    }

    /// Gives back a batch's buffer once its frame is written, so that the next batch reuses
    /// its memory instead of faulting in new pages.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare = Some(buf);
    }

    /// The last, partial batch, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// One line of a frame index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameIndexEntry {
    pub offset: u64,
    pub stored: u64,
    pub raw: u64,
    pub rows: u64,
    pub sha256: [u8; 32],
    /// The digest of the frame's rows, as the sum's 16 big-endian bytes (format 3, §5.3).
    pub rows_sum: Option<[u8; 16]>,
}

const INDEX_HEADER: &str = "offset\tstored\traw\trows\tsha256\n";
/// The header of a frame index with the rows' digests (format 3).
const INDEX_HEADER_3: &str = "offset\tstored\traw\trows\tsha256\trows_sum\n";

/// Writes a frame index (format-spec §5.2), with the `rows_sum` column when the entries
/// have digests (all of them or none: a writer sets it for every frame of a file).
pub fn write_frame_index(entries: &[FrameIndexEntry]) -> String {
    let digests = entries.iter().any(|e| e.rows_sum.is_some());
    let mut out = String::with_capacity(INDEX_HEADER_3.len() + entries.len() * 170);
    out.push_str(if digests {
        INDEX_HEADER_3
    } else {
        INDEX_HEADER
    });
    for e in entries {
        let _ = write!(out, "{}\t{}\t{}\t{}\t", e.offset, e.stored, e.raw, e.rows);
        push_hex(&mut out, &e.sha256);
        if digests {
            out.push('\t');
            push_hex(&mut out, &e.rows_sum.unwrap_or([0; 16]));
        }
        out.push('\n');
    }
    out
}

/// Whether a parsed frame index has the `rows_sum` column (format 3).
pub fn index_has_digests(entries: &[FrameIndexEntry]) -> bool {
    entries.first().is_some_and(|e| e.rows_sum.is_some())
}

/// A frame index that does not parse or does not tile its data file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct IndexError {
    pub line: usize,
    pub problem: String,
}

/// Parses a frame index and checks that its frames follow each other without gaps from 0.
/// `digests`: whether the index must have the `rows_sum` column (format 3) or must not.
pub fn parse_frame_index(text: &[u8], digests: bool) -> Result<Vec<FrameIndexEntry>, IndexError> {
    parse_frames(text, digests, true)
}

/// Parses a list of some of a file's frames in the frame index's layout (a dump journal's
/// record of one chunk): increasing offsets, not necessarily adjacent.
pub fn parse_frame_list(text: &[u8], digests: bool) -> Result<Vec<FrameIndexEntry>, IndexError> {
    parse_frames(text, digests, false)
}

fn parse_frames(
    text: &[u8],
    digests: bool,
    tiled: bool,
) -> Result<Vec<FrameIndexEntry>, IndexError> {
    let err = |line: usize, problem: String| IndexError { line, problem };
    let text = std::str::from_utf8(text).map_err(|_| err(1, "not UTF-8".into()))?;
    let mut lines = text.split_terminator('\n');
    let header = if digests {
        INDEX_HEADER_3
    } else {
        INDEX_HEADER
    };
    match lines.next() {
        Some(h) if h == header.trim_end() => {}
        Some(h) if h == INDEX_HEADER.trim_end() || h == INDEX_HEADER_3.trim_end() => {
            return Err(err(
                1,
                if digests {
                    "no rows_sum column: format 3 requires it".into()
                } else {
                    "a rows_sum column: only format 3 has it".into()
                },
            ))
        }
        _ => return Err(err(1, "missing header line".into())),
    }
    let columns = if digests { 6 } else { 5 };
    let mut entries = Vec::new();
    let mut next_offset = 0u64;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns {
            return Err(err(
                n,
                format!("{} fields instead of {columns}", fields.len()),
            ));
        }
        let (offset, stored, raw, rows, sha) =
            (fields[0], fields[1], fields[2], fields[3], fields[4]);
        // Decimal digits without sign or leading zeros (format-spec §5.2).
        let num = |s: &str, what: &str| {
            let canonical = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            canonical
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| err(n, format!("{what} {s:?} is not a number")))
        };
        let entry = FrameIndexEntry {
            offset: num(offset, "offset")?,
            stored: num(stored, "stored length")?,
            raw: num(raw, "raw length")?,
            rows: num(rows, "row count")?,
            sha256: unhex(sha).ok_or_else(|| err(n, format!("bad sha256 {sha:?}")))?,
            rows_sum: match fields.get(5) {
                Some(sum) => {
                    Some(unhex(sum).ok_or_else(|| err(n, format!("bad rows_sum {sum:?}")))?)
                }
                None => None,
            },
        };
        if (tiled && entry.offset != next_offset) || entry.offset < next_offset {
            return Err(err(
                n,
                format!("frame starts at {} instead of {next_offset}", entry.offset),
            ));
        }
        next_offset = entry
            .offset
            .checked_add(entry.stored)
            .ok_or_else(|| err(n, "offset overflows".into()))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Lower-case hex, as the manifest and `sha256sum` print digests.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// `N` bytes written as `2 N` lower-case hex digits (a SHA-256, a rows digest; format-spec
/// §5), nothing else.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: &[u8] = b"1\tfirst\n2\tsecond with \\t tab\n3\t\\N\n";

    #[test]
    fn codecs_parse_like_the_dash_z_option() {
        assert_eq!(Codec::parse("none"), Ok(Codec::None));
        assert_eq!(Codec::parse("gzip"), Ok(Codec::Gzip(6)));
        assert_eq!(Codec::parse("gzip:9"), Ok(Codec::Gzip(9)));
        assert_eq!(Codec::parse("zstd"), Ok(Codec::Zstd(3)));
        assert_eq!(Codec::parse("zstd:19"), Ok(Codec::Zstd(19)));
        for bad in ["gzip:0", "gzip:10", "zstd:x", "lz5", "none:1", ""] {
            assert!(Codec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_codec_round_trips_a_frame_and_refuses_damage() {
        for codec in [Codec::None, Codec::Gzip(6), Codec::Zstd(3)] {
            let frame = Frame::of_rows(codec, ROWS).unwrap();
            assert_eq!((frame.rows, frame.raw_len), (3, ROWS.len() as u64));
            assert_eq!(
                frame.sha256,
                <[u8; 32]>::from(Sha256::digest(&frame.stored))
            );
            assert_eq!(codec.decode(&frame.stored, ROWS.len()).unwrap(), ROWS);
            if codec == Codec::None {
                continue;
            }
            assert!(matches!(
                codec.decode(&frame.stored, ROWS.len() - 1),
                Err(FrameError::TooLarge { .. })
            ));
            let mut two = frame.stored.clone();
            two.extend_from_slice(&frame.stored);
            assert!(matches!(
                codec.decode(&two, 1000),
                Err(FrameError::TrailingBytes(n)) if n == frame.stored.len()
            ));
            let cut = &frame.stored[..frame.stored.len() - 2];
            assert!(codec.decode(cut, 1000).is_err());
        }
    }

    #[test]
    fn the_reusing_encoder_writes_the_same_frames_as_one_shot_compression() {
        let big: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{i}\trow {i} {}\n", i * 7919).into_bytes())
            .collect();
        for codec in [Codec::None, Codec::Gzip(6), Codec::Zstd(3), Codec::Zstd(1)] {
            let mut enc = Encoder::new(codec).unwrap();
            // Several frames through one encoder, large after small and small after large.
            for raw in [ROWS, &big[..], ROWS, &big[..1000]] {
                let want = Frame::of_rows(codec, raw).unwrap();
                let got = enc.rows(raw).unwrap();
                assert_eq!(got.stored, &want.stored[..], "{codec:?}");
                assert_eq!(got.index_entry(7), want.index_entry(7), "{codec:?}");
            }
            let end = Frame::end(codec).unwrap();
            assert_eq!(enc.end().unwrap().stored, &end.stored[..]);
        }
        // Recycled buffers come back empty and batches are unchanged by reuse.
        let mut b = RowBatcher::new(10);
        assert_eq!(b.push(b"123456\n"), None);
        let first = b.push(b"abcdef\n").unwrap();
        assert_eq!(first, b"123456\n");
        b.recycle(first);
        assert_eq!(b.push(b"xy\n"), None);
        assert_eq!(b.push(b"zzzzzz\n").unwrap(), b"abcdef\nxy\n");
        assert_eq!(b.finish().unwrap(), b"zzzzzz\n");
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn batches_hold_whole_rows_within_the_limit() {
        let mut b = RowBatcher::new(10);
        assert_eq!(b.push(b"aaaa\n"), None);
        assert_eq!(b.push(b"bbbb\n"), None);
        assert_eq!(b.push(b"c\n").as_deref(), Some(&b"aaaa\nbbbb\n"[..]));
        assert_eq!(
            b.push(b"a row longer than ten\n").as_deref(),
            Some(&b"c\n"[..])
        );
        assert_eq!(
            b.push(b"d\n").as_deref(),
            Some(&b"a row longer than ten\n"[..])
        );
        assert_eq!(b.finish().as_deref(), Some(&b"d\n"[..]));
        assert_eq!(RowBatcher::new(10).finish(), None);
    }

    #[test]
    fn frame_index_round_trips_and_must_tile_the_file() {
        let a = Frame::of_rows(Codec::Zstd(1), ROWS).unwrap();
        let end = Frame::end(Codec::Zstd(1)).unwrap();
        let entries = [a.index_entry(0), end.index_entry(a.stored.len() as u64)];
        let text = write_frame_index(&entries);
        assert_eq!(parse_frame_index(text.as_bytes(), false).unwrap(), entries);
        let gap = text.replacen(
            &format!("\n{}\t", a.stored.len()),
            &format!("\n{}\t", a.stored.len() + 1),
            1,
        );
        assert_eq!(
            parse_frame_index(gap.as_bytes(), false).unwrap_err().line,
            3
        );
        assert!(parse_frame_index(b"offset\n", false).is_err());
        // Format 3: the rows_sum column, required there and refused elsewhere.
        let with = [
            FrameIndexEntry {
                rows_sum: Some([7; 16]),
                ..entries[0]
            },
            FrameIndexEntry {
                rows_sum: Some([0; 16]),
                ..entries[1]
            },
        ];
        let text3 = write_frame_index(&with);
        assert!(text3.starts_with("offset\tstored\traw\trows\tsha256\trows_sum\n"));
        assert_eq!(parse_frame_index(text3.as_bytes(), true).unwrap(), with);
        assert!(index_has_digests(&with) && !index_has_digests(&entries));
        assert!(parse_frame_index(text3.as_bytes(), false)
            .unwrap_err()
            .problem
            .contains("only format 3"));
        assert!(parse_frame_index(text.as_bytes(), true)
            .unwrap_err()
            .problem
            .contains("format 3 requires"));
        let short = text3.replacen(&format!("\t{}\n", "07".repeat(16)), "\n", 1);
        assert_eq!(
            parse_frame_index(short.as_bytes(), true).unwrap_err().line,
            2
        );
    }
}
