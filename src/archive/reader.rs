//! The primitives under [`super::data`], the seam restore and verify read through (format-spec
//! §4, §7): which file holds an entry's data and how it is compressed (pg_restore's rule),
//! stream decoders (gzip members, zstd and lz4 frames, any number of each), frame-by-frame
//! reading with checksums and limits for framed files, whole-file hashing for verify, and
//! the scanner that checks a COPY text stream row by row.
//!
//! Everything here is blocking I/O and CPU work: callers run it off the async threads.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::digest::StreamDigest;
use super::error::Error;
use super::frame::{hex, Codec, FrameIndexEntry};
pub use super::names::{safe_relative_name, NameError};
use super::store::{Stat, Store};
use super::toc::{ArchiveVersion, Toc, TocEntry};

/// How one data file is compressed, decided by its name as pg_restore decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCodec {
    None,
    Gzip,
    Lz4,
    Zstd,
}

/// The compression suffixes a data file's name may carry beyond its TOC name, in the order
/// pg_restore 16+ tries them, with the codec each means (format-spec §4).
pub const SUFFIXES: [(&str, FileCodec); 3] = [
    (".gz", FileCodec::Gzip),
    (".lz4", FileCodec::Lz4),
    (".zst", FileCodec::Zstd),
];

impl FileCodec {
    /// The codec a file name's suffix says (`.gz`, `.lz4`, `.zst`), none for any other.
    pub fn of_file_name(name: &str) -> FileCodec {
        Self::of_name(name).unwrap_or(FileCodec::None)
    }

    fn of_name(name: &str) -> Option<FileCodec> {
        SUFFIXES
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix))
            .map(|&(_, codec)| codec)
    }

    /// The frame codec that decodes one frame of a pgarc data file of this kind.
    pub fn frame_codec(self) -> Option<Codec> {
        match self {
            FileCodec::None => Some(Codec::None),
            FileCodec::Gzip => Some(Codec::Gzip(6)),
            FileCodec::Zstd => Some(Codec::Zstd(3)),
            FileCodec::Lz4 => None,
        }
    }
}

/// A data file found in the archive's store.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Where it is, for messages.
    pub path: PathBuf,
    /// The store that holds it.
    pub store: Arc<dyn Store>,
    /// The path relative to the archive root, as the manifest names it.
    pub rel: String,
    pub codec: FileCodec,
    pub size: u64,
}

impl DataFile {
    /// Its stored bytes from `from` to the end.
    pub fn open(&self, from: u64) -> Result<Box<dyn Read + Send>, Error> {
        self.open_range(from, None)
    }

    /// Its stored bytes from `from` up to `to` (exclusive).
    pub fn open_range(&self, from: u64, to: Option<u64>) -> Result<Box<dyn Read + Send>, Error> {
        self.store.open(&self.rel, from, to)
    }
}

/// The large-object list of a BLOBS entry: before archive version 1.16 pg_restore always
/// reads `blobs.toc`, whatever the entry says; from 1.16 the entry's file name.
pub fn blobs_toc_name<'a>(toc: &Toc, e: &'a TocEntry) -> Result<&'a str, NameError> {
    if toc.header.version < ArchiveVersion::V1_16 {
        Ok("blobs.toc")
    } else {
        safe_relative_name(e.filename.as_bytes().unwrap_or_default())
    }
}

/// What is wrong with a large-object list or one of its lines (numbered from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobListError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("line {0}: expected \"OID FILE\"")]
    NoSeparator(usize),
    #[error("line {0}: bad OID {1:?}")]
    BadOid(usize, String),
    #[error("line {0}: {1}")]
    Name(usize, NameError),
}

/// One line of a large-object list: `(oid, file name)`, or what is wrong with it.
pub type BlobLine = Result<(u32, String), BlobListError>;

/// The lines of a large-object list (`OID FILE`), each parsed or the problem with it. File
/// names are checked with [`safe_relative_name`].
pub fn parse_blobs_toc(bytes: &[u8]) -> Result<Vec<BlobLine>, BlobListError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BlobListError::NotUtf8)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let n = n + 1;
            let (oid, file) = line.split_once(' ').ok_or(BlobListError::NoSeparator(n))?;
            let oid: u32 = oid
                .parse()
                .map_err(|_| BlobListError::BadOid(n, oid.to_string()))?;
            safe_relative_name(file.as_bytes()).map_err(|m| BlobListError::Name(n, m))?;
            Ok((oid, file.to_string()))
        })
        .collect())
}

/// Finds the file holding the data of an entry whose TOC file name is `name`: a name with a
/// compression suffix is taken as it is; otherwise the plain name, then `.gz`, `.lz4`, `.zst`
/// are tried, as pg_restore 16+ does.
pub fn find_data_file(store: &Arc<dyn Store>, name: &[u8]) -> Result<DataFile, Error> {
    let root = store.location();
    let rel = safe_relative_name(name).map_err(|problem| Error::NotArchive {
        path: root.join("toc.dat"),
        problem: problem.to_string(),
    })?;
    let candidates: Vec<(String, FileCodec)> = match FileCodec::of_name(rel) {
        Some(codec) => vec![(rel.to_string(), codec)],
        None => std::iter::once((rel.to_string(), FileCodec::None))
            .chain(
                SUFFIXES
                    .iter()
                    .map(|(s, codec)| (format!("{rel}{s}"), *codec)),
            )
            .collect(),
    };
    for (name, codec) in &candidates {
        let path = store.resolve(name)?;
        match store.stat(name)? {
            Stat::File(size) => {
                return Ok(DataFile {
                    path,
                    store: store.clone(),
                    rel: name.clone(),
                    codec: *codec,
                    size,
                })
            }
            Stat::Special(kind) => return Err(Error::NotRegularFile { path, kind }),
            Stat::Absent => {}
        }
    }
    Err(Error::MissingDataFile {
        path: root.join(rel),
    })
}

/// Opens a whole data file as one decompressed stream. gzip members, zstd frames and lz4
/// frames may be concatenated any number of times, as pg_restore accepts them.
pub fn open_stream(file: &DataFile) -> Result<Box<dyn Read + Send>, Error> {
    let f = file.open(0)?;
    decode_stream(file.codec, f).map_err(|error| Error::Io {
        path: file.path.clone(),
        action: "could not start decompression of",
        error,
    })
}

/// Decompresses the bytes `stored` yields as one stream, as [`open_stream`] does a file.
pub fn decode_stream(
    codec: FileCodec,
    stored: impl Read + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(256 << 10, stored);
    Ok(match codec {
        FileCodec::None => Box::new(buffered),
        FileCodec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        FileCodec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        FileCodec::Lz4 => Box::new(Lz4Frames::new(buffered)),
    })
}

/// Reads any number of concatenated LZ4 frames (pg_dump's lz4 files may hold several).
struct Lz4Frames<R: BufRead> {
    current: Option<lz4_flex::frame::FrameDecoder<R>>,
}

impl<R: BufRead> Lz4Frames<R> {
    fn new(inner: R) -> Self {
        Lz4Frames {
            current: Some(lz4_flex::frame::FrameDecoder::new(inner)),
        }
    }
}

impl<R: BufRead> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.current.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done; another one may follow.
            let mut inner = self.current.take().expect("present").into_inner();
            if inner.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.current = Some(lz4_flex::frame::FrameDecoder::new(inner));
        }
    }
}

/// Why a COPY text stream is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("data after the end-of-data marker \\. (rows there would be silently dropped)")]
    DataAfterEnd,
    #[error("ends without the end-of-data marker \\.: the file is truncated")]
    NoEndMarker,
    #[error("the last row has no line end: the file is truncated")]
    PartialRow,
    #[error("an end-of-data marker \\. inside the data")]
    MarkerInsideData,
}

/// Follows a COPY text stream (one row per line; COPY escapes newlines inside values) and
/// passes on the rows without the end-of-data marker `\.`, counting them. What follows the
/// marker may only be empty lines: pg_dump writes `\.\n\n\n`, and anything else would be
/// rows the server silently ignores (reference §3.3).
#[derive(Debug, Default)]
pub struct CopyScanner {
    rows: u64,
    /// Bytes at the start of the current line that may still turn out to be the marker.
    carry: Vec<u8>,
    /// Inside a line known not to be the marker.
    mid_line: bool,
    ended: bool,
}

/// Where a [`CopyScanner`] puts the row bytes it passes on.
pub trait RowSink {
    fn put(&mut self, bytes: &[u8]);

    /// True when the receiver went away: the reader then stops without an error.
    fn stopped(&self) -> bool {
        false
    }
}

impl RowSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts the row bytes without keeping them: the rows are always a prefix of the input (the
/// scanner only drops the end marker and what follows it), so a caller that holds the input
/// can cut it to this length instead of copying it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountSink(pub usize);

impl RowSink for CountSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

const MARKER_LF: &[u8] = b"\\.\n";
const MARKER_CRLF: &[u8] = b"\\.\r\n";

impl CopyScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Passes the rows in `chunk` on to `out`.
    pub fn feed<S: RowSink>(&mut self, chunk: &[u8], out: &mut S) -> Result<(), ScanError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.ended {
                if chunk[i..].iter().any(|&b| b != b'\n') {
                    return Err(ScanError::DataAfterEnd);
                }
                return Ok(());
            }
            if self.mid_line {
                match memchr::memchr(b'\n', &chunk[i..]) {
                    Some(p) => {
                        out.put(&chunk[i..i + p + 1]);
                        self.rows += 1;
                        self.mid_line = false;
                        i += p + 1;
                    }
                    None => {
                        out.put(&chunk[i..]);
                        i = chunk.len();
                    }
                }
                continue;
            }
            self.carry.push(chunk[i]);
            i += 1;
            if self.carry == MARKER_LF || self.carry == MARKER_CRLF {
                self.ended = true;
                self.carry.clear();
            } else if !(MARKER_LF.starts_with(&self.carry) || MARKER_CRLF.starts_with(&self.carry))
            {
                out.put(&self.carry);
                if self.carry.last() == Some(&b'\n') {
                    self.rows += 1;
                } else {
                    self.mid_line = true;
                }
                self.carry.clear();
            }
        }
        Ok(())
    }

    /// Ends the stream: the marker must have been seen when `need_marker`, and no row may be
    /// left without its line end.
    pub fn finish(&self, need_marker: bool) -> Result<u64, ScanError> {
        if self.mid_line || !self.carry.is_empty() {
            return Err(ScanError::PartialRow);
        }
        if need_marker && !self.ended {
            return Err(ScanError::NoEndMarker);
        }
        Ok(self.rows)
    }
}

/// What reading a whole file found: its size and SHA-256, and whether its contents decode.
#[derive(Debug)]
pub struct WholeFile {
    pub size: u64,
    pub sha256: String,
    /// `None` when not asked to decode; else the rows (COPY data) or decompressed bytes
    /// (a large object), or what is wrong.
    pub decoded: Option<Result<u64, DecodeError>>,
}

/// Why a data file's contents, read as one stream, are refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Scan(#[from] ScanError),
    #[error("does not decompress after {after} bytes of output: {error}")]
    Decompress { after: u64, error: io::Error },
}

/// How [`read_whole`] is to decode a file while hashing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// Only hash it.
    No,
    /// COPY data: decompresses fully, whole rows, ends with the end-of-data marker.
    Copy(FileCodec),
    /// A large object: decompresses fully.
    Blob(FileCodec),
}

/// Reads a file once, hashing its stored bytes and, if asked, decompressing and checking its
/// contents on the way. Only an I/O error opening or reading it is an `Err`.
pub fn read_whole(store: &dyn Store, rel: &str, decode: Decode) -> io::Result<WholeFile> {
    let hash = SharedHash::default();
    let opener = |from| store.open(rel, from, None).map_err(io::Error::other);
    let stored = hash.reader(opener(0)?);
    let mut buf = vec![0u8; 256 << 10];
    let decoded = match decode {
        Decode::No => {
            let mut r = BufReader::with_capacity(256 << 10, stored);
            io::copy(&mut r, &mut io::sink())?;
            None
        }
        Decode::Copy(codec) | Decode::Blob(codec) => {
            let mut r = decode_stream(codec, stored)?;
            let mut scanner = CopyScanner::new();
            let mut sink = CountSink::default();
            let mut total = 0u64;
            let result = loop {
                match r.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        total += n as u64;
                        if matches!(decode, Decode::Copy(_)) {
                            if let Err(e) = scanner.feed(&buf[..n], &mut sink) {
                                break Err(DecodeError::Scan(e));
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        break Err(DecodeError::Decompress {
                            after: total,
                            error,
                        })
                    }
                }
            };
            // Hash what decoding did not read (after an error, or a trailer).
            drop(r);
            Some(result.and_then(|()| match decode {
                Decode::Copy(_) => scanner.finish(true).map_err(DecodeError::Scan),
                _ => Ok(total),
            }))
        }
    };
    // A decoder may stop before the end of the stored bytes: the rest is hashed too.
    let (digest, size) = hash.finish_file(opener)?;
    Ok(WholeFile {
        size,
        sha256: hex(&digest),
        decoded,
    })
}

/// The SHA-256 and length of a file's stored bytes as a decoder reads them through
/// [`SharedHash::reader`] (the decoder owns the reader, so the hash is shared with it).
#[derive(Clone, Default)]
pub(crate) struct SharedHash(std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>);

/// A reader that adds what it reads to a [`SharedHash`].
pub(crate) struct SharedHashing<R> {
    inner: R,
    hash: SharedHash,
}

impl<R: Read> Read for SharedHashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.hash.0.lock().expect("not poisoned");
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        Ok(n)
    }
}

impl SharedHash {
    pub(crate) fn reader<R>(&self, inner: R) -> SharedHashing<R> {
        SharedHashing {
            inner,
            hash: self.clone(),
        }
    }

    /// The digest and size of the whole file: what was read through the reader, then the
    /// rest of the file, opened by `open` at the first byte not read (a decoder may stop
    /// before the end: a trailer, an error).
    pub(crate) fn finish_file<R: Read>(
        &self,
        open: impl FnOnce(u64) -> io::Result<R>,
    ) -> io::Result<([u8; 32], u64)> {
        let (hasher, read) = self.0.lock().expect("not poisoned").clone();
        let rest = open(read)?;
        let mut hashing = HashingReader {
            inner: rest,
            hasher,
            read,
        };
        io::copy(&mut hashing, &mut io::sink())?;
        Ok(hashing.finish())
    }
}

/// Why a frame of a pgarc data file is refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameCheckError {
    #[error("{file}: {source}")]
    Io { file: String, source: io::Error },
    #[error("{file}, frame {frame} (bytes {offset}..{end}): {problem}")]
    Bad {
        file: String,
        frame: usize,
        offset: u64,
        end: u64,
        problem: String,
        /// The data ends early (the file, or the rows, stop inside the frame): every later
        /// frame would say the same.
        truncated: bool,
    },
}

/// A bound on one frame's stored and raw size (format-spec §4.1): a frame index claiming more
/// is refused. (COPY builds each row in memory, and PostgreSQL's allocations stop at 1 GiB,
/// so no row, and no frame of one row, is larger.)
pub const MAX_FRAME_BYTES: u64 = 1 << 30;

/// A bound on the raw size of a frame of more than one row (format-spec §4.1): writers cut
/// frames at `--frame-size`, at most this much, and only a single row may be larger.
pub const MAX_MULTI_ROW_FRAME_BYTES: u64 = 64 << 20;

/// Frames whose stored bytes are at most this size are read whole and their SHA-256 checked
/// before any of their rows is handed out; larger ones (a single huge row) are checked as
/// they stream, and their rows may be handed out before a mismatch is found.
pub const CHECKED_FIRST_BYTES: u64 = 16 << 20;

/// The decompressed bytes handed out at a time.
const PIECE_BYTES: usize = 256 << 10;

/// A frame read and checked by [`FrameReader::next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRead {
    /// The frame's number in the file, counting from 1.
    pub number: usize,
    pub rows: u64,
}

/// Reads frames `range` of a pgarc data file, checking each against its index line (SHA-256
/// of the stored bytes, raw length, row count, the end marker only in the last frame) and
/// handing out its rows as they decompress. Memory stays bounded whatever the index
/// claims: [`CHECKED_FIRST_BYTES`] of stored bytes, the decoder's window, a piece.
pub struct FrameReader<'a> {
    file: Box<dyn Read + Send>,
    data: &'a DataFile,
    codec: Codec,
    index: &'a [FrameIndexEntry],
    next: usize,
    end: usize,
    stored: Vec<u8>,
    piece: Vec<u8>,
    /// Also check each frame's rows against its `rows_sum` (format 3).
    digests: bool,
}

/// Passes rows on and, when asked, adds them to a digest.
struct Tee<'s, S> {
    inner: &'s mut S,
    digest: Option<StreamDigest>,
}

impl<S: RowSink> RowSink for Tee<'_, S> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(d) = self.digest.as_mut() {
            d.feed(bytes);
        }
        self.inner.put(bytes);
    }

    fn stopped(&self) -> bool {
        self.inner.stopped()
    }
}

impl<'a> FrameReader<'a> {
    pub fn open(
        data: &'a DataFile,
        index: &'a [FrameIndexEntry],
        range: std::ops::Range<usize>,
    ) -> Result<FrameReader<'a>, FrameCheckError> {
        let io_err = |source| FrameCheckError::Io {
            file: data.rel.clone(),
            source,
        };
        let codec = data.codec.frame_codec().ok_or_else(|| {
            io_err(io::Error::other(
                "pgarc archives have no lz4 data files; this file was not written by pgarc",
            ))
        })?;
        // One read of exactly the frames of the range (a ranged GET from an object store).
        let end = range.end.min(index.len());
        let from = index.get(range.start).map_or(0, |f| f.offset);
        let to = index[..end]
            .last()
            .map_or(from, |f| f.offset.saturating_add(f.stored))
            .max(from);
        let file = data
            .open_range(from, Some(to.min(data.size.max(from))))
            .map_err(|e| io_err(io::Error::other(e)))?;
        Ok(FrameReader {
            file,
            data,
            codec,
            index,
            next: range.start,
            end: range.end.min(index.len()),
            stored: Vec::new(),
            piece: vec![0u8; PIECE_BYTES],
            digests: false,
        })
    }

    /// Also checks the rows of each frame whose index line has a `rows_sum` against it
    /// (format-spec §5.3): what `pgarc verify` does; a restore relies on the SHA-256s.
    pub fn checking_digests(mut self) -> Self {
        self.digests = true;
        self
    }

    /// Reads the next frame, passing its rows (without the end marker) to `rows`; None
    /// after the last frame of the range.
    pub fn next_frame<S: RowSink>(
        &mut self,
        rows: &mut S,
    ) -> Result<Option<FrameRead>, FrameCheckError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let n = self.next;
        let e = self.index[n];
        self.next += 1;
        let flagged = |problem: String, truncated: bool| FrameCheckError::Bad {
            file: self.data.rel.clone(),
            frame: n + 1,
            offset: e.offset,
            end: e.offset + e.stored,
            problem,
            truncated,
        };
        let bad = |problem: String| flagged(problem, false);
        let cut_short = "the file ends inside this frame: it is truncated";
        if let Some(problem) = over_the_limits(&e) {
            return Err(bad(problem));
        }
        let truncated = |err: io::Error, file: &str| {
            if err.kind() == io::ErrorKind::UnexpectedEof {
                flagged(cut_short.into(), true)
            } else {
                FrameCheckError::Io {
                    file: file.to_string(),
                    source: err,
                }
            }
        };
        let last = n + 1 == self.index.len();
        let mut scanner = CopyScanner::new();
        let mut scan_error = None;
        let mut tee = Tee {
            inner: rows,
            digest: (self.digests && e.rows_sum.is_some()).then(StreamDigest::new),
        };
        let mut feed = |piece: &[u8]| {
            if scan_error.is_none() {
                if let Err(err) = scanner.feed(piece, &mut tee) {
                    scan_error = Some(err);
                }
            }
        };
        let decoded = if e.stored <= CHECKED_FIRST_BYTES {
            self.stored.resize(e.stored as usize, 0);
            self.file
                .read_exact(&mut self.stored)
                .map_err(|err| truncated(err, &self.data.rel))?;
            let digest: [u8; 32] = Sha256::digest(&self.stored).into();
            if digest != e.sha256 {
                return Err(bad(checksum_mismatch(&digest, &e.sha256)));
            }
            let mut input = &self.stored[..];
            self.codec
                .decode_into(&mut input, e.raw, &mut self.piece, &mut feed)
        } else {
            let mut hashing = HashingReader::new((&mut self.file).take(e.stored));
            let mut input = io::BufReader::with_capacity(PIECE_BYTES, &mut hashing);
            let decoded = self
                .codec
                .decode_into(&mut input, e.raw, &mut self.piece, &mut feed);
            drop(input);
            let (digest, read) = hashing.finish();
            if read < e.stored {
                return Err(bad(
                    "the file ends inside this frame: it is truncated".into()
                ));
            }
            if digest != e.sha256 {
                return Err(bad(checksum_mismatch(&digest, &e.sha256)));
            }
            decoded
        };
        let raw = decoded.map_err(|err| bad(err.to_string()))?;
        if raw != e.raw {
            return Err(bad(format!(
                "decompresses to {raw} bytes, the frame index says {}",
                e.raw
            )));
        }
        let scan_bad = |err: ScanError| {
            let truncated = matches!(err, ScanError::NoEndMarker | ScanError::PartialRow);
            flagged(err.to_string(), truncated)
        };
        if let Some(err) = scan_error {
            return Err(scan_bad(err));
        }
        if scanner.ended() && !last {
            return Err(bad(ScanError::MarkerInsideData.to_string()));
        }
        let got = scanner.finish(last).map_err(scan_bad)?;
        if got != e.rows {
            return Err(bad(format!(
                "holds {got} rows, the frame index says {}",
                e.rows
            )));
        }
        if let (Some(d), Some(expected)) = (tee.digest.as_ref(), e.rows_sum) {
            let (found, _) = d.finish();
            if found.sum_bytes() != expected {
                return Err(bad(format!(
                    "its rows' digest is {}, the frame index says {}: the rows are not those \
                     that were dumped",
                    found.sum_hex(),
                    hex(&expected)
                )));
            }
        }
        Ok(Some(FrameRead {
            number: n + 1,
            rows: got,
        }))
    }
}

/// What is wrong with an index line that claims a frame over the limits of format-spec §4.1.
fn over_the_limits(e: &FrameIndexEntry) -> Option<String> {
    if e.stored > MAX_FRAME_BYTES || e.raw > MAX_FRAME_BYTES {
        return Some(format!(
            "the frame index claims a frame of {} stored and {} raw bytes, over the \
             limit of 1 GiB (format-spec §4.1)",
            e.stored, e.raw
        ));
    }
    (e.rows > 1 && e.raw > MAX_MULTI_ROW_FRAME_BYTES).then(|| {
        format!(
            "the frame index claims {} rows in {} raw bytes: a frame of more than one \
             row holds at most 64 MiB (format-spec §4.1)",
            e.rows, e.raw
        )
    })
}

fn checksum_mismatch(digest: &[u8; 32], expected: &[u8; 32]) -> String {
    format!(
        "checksum mismatch: SHA-256 is {} but the frame index says {}",
        hex(digest),
        hex(expected)
    )
}

/// Hashes what is read through it; reads the rest on `finish` so that the whole input is
/// hashed even when the decoder stopped early.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    pub(crate) fn finish(mut self) -> ([u8; 32], u64) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        (self.hasher.finalize().into(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(crate::archive::store::LocalDir::new(p))
    }
    use std::io::Write;

    fn scan(chunks: &[&[u8]]) -> (Result<u64, ScanError>, Vec<u8>) {
        let mut s = CopyScanner::new();
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = s.feed(c, &mut out) {
                return (Err(e), out);
            }
        }
        (s.finish(true), out)
    }

    #[test]
    fn scanner_passes_rows_and_drops_the_marker() {
        let (rows, out) = scan(&[b"1\ta\n2\tb\n\\.\n\n\n"]);
        assert_eq!(rows, Ok(2));
        assert_eq!(out, b"1\ta\n2\tb\n");
        // Split at every possible place, the result is the same.
        let whole: &[u8] = b"\\x\n\\\n\\.x\n\n3\n\\.\r\n\n";
        for cut in 0..=whole.len() {
            let (rows, out) = scan(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(rows, Ok(5), "cut at {cut}");
            assert_eq!(out, b"\\x\n\\\n\\.x\n\n3\n");
        }
    }

    #[test]
    fn scanner_refuses_rows_after_the_marker_and_truncation() {
        assert_eq!(
            scan(&[b"1\n\\.\n2\n"]).0,
            Err(ScanError::DataAfterEnd),
            "rows after \\. would be dropped by the server"
        );
        assert_eq!(scan(&[b"1\n2\n"]).0, Err(ScanError::NoEndMarker));
        assert_eq!(scan(&[b"1\n2"]).0, Err(ScanError::PartialRow));
        assert_eq!(scan(&[b"\\.\n"]).0, Ok(0));
        let mut s = CopyScanner::new();
        s.feed(b"1\n", &mut Vec::new()).unwrap();
        assert_eq!(s.finish(false), Ok(1));
    }

    #[test]
    fn names_must_stay_inside_the_archive() {
        assert!(safe_relative_name(b"3380.dat").is_ok());
        assert!(safe_relative_name(b"sub/x.dat").is_ok());
        assert!(safe_relative_name(b"../x.dat").is_err());
        assert!(safe_relative_name(b"/etc/passwd").is_err());
        assert!(safe_relative_name(b"").is_err());
        assert!(safe_relative_name(b"a\0b").is_err());
        assert!(safe_relative_name(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn discovery_and_multi_frame_streams() {
        let dir = tempfile::tempdir().unwrap();
        let rows = b"1\talpha\n2\tbeta\n3\tgamma\n\\.\n\n\n";
        // lz4: two frames back to back.
        let mut lz4 = Vec::new();
        for part in [&rows[..9], &rows[9..]] {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(part).unwrap();
            lz4.extend(enc.finish().unwrap());
        }
        std::fs::write(dir.path().join("10.dat.lz4"), &lz4).unwrap();
        // zstd: two frames; gzip: two members.
        let mut zst = zstd::bulk::compress(&rows[..5], 3).unwrap();
        zst.extend(zstd::bulk::compress(&rows[5..], 3).unwrap());
        std::fs::write(dir.path().join("11.dat.zst"), &zst).unwrap();
        let mut gz = Codec::Gzip(6).encode(&rows[..20]).unwrap();
        gz.extend(Codec::Gzip(6).encode(&rows[20..]).unwrap());
        std::fs::write(dir.path().join("12.dat.gz"), &gz).unwrap();
        std::fs::write(dir.path().join("13.dat"), rows).unwrap();
        for (name, codec) in [
            ("10.dat", FileCodec::Lz4),
            ("11.dat", FileCodec::Zstd),
            ("12.dat", FileCodec::Gzip),
            ("13.dat", FileCodec::None),
        ] {
            let f = find_data_file(&local(dir.path()), name.as_bytes()).unwrap();
            assert_eq!(f.codec, codec, "{name}");
            let mut got = Vec::new();
            open_stream(&f).unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(got, rows, "{name}");
        }
        let missing = find_data_file(&local(dir.path()), b"14.dat").unwrap_err();
        assert!(
            missing.to_string().contains("data file missing"),
            "{missing}"
        );
    }

    #[test]
    fn frame_reader_checks_every_frame() {
        use crate::archive::frame::Frame;
        let dir = tempfile::tempdir().unwrap();
        let codec = Codec::Zstd(3);
        let frames = [
            Frame::of_rows(codec, b"1\n2\n").unwrap(),
            Frame::of_rows(codec, b"3\n").unwrap(),
            Frame::end(codec).unwrap(),
        ];
        let mut bytes = Vec::new();
        let mut index = Vec::new();
        for f in &frames {
            index.push(f.index_entry(bytes.len() as u64));
            bytes.extend(&f.stored);
        }
        let path = dir.path().join("5.dat.zst");
        std::fs::write(&path, &bytes).unwrap();
        let data = find_data_file(&local(dir.path()), b"5.dat").unwrap();
        let mut r = FrameReader::open(&data, &index, 1..3).unwrap();
        let mut rows = Vec::new();
        let read = r.next_frame(&mut rows).unwrap().unwrap();
        assert_eq!(
            (read.number, read.rows, rows.as_slice()),
            (2, 1, &b"3\n"[..])
        );
        let read = r.next_frame(&mut rows).unwrap().unwrap();
        assert_eq!((read.number, read.rows), (3, 0));
        assert_eq!(rows, b"3\n", "the end marker is not handed out");
        assert!(r.next_frame(&mut rows).unwrap().is_none());
        // One flipped byte in frame 2 is caught before its rows are handed out.
        let at = index[1].offset as usize + 5;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = FrameReader::open(&data, &index, 0..3).unwrap();
        let mut rows = Vec::new();
        assert!(r.next_frame(&mut rows).unwrap().is_some());
        let err = r.next_frame(&mut rows).unwrap_err().to_string();
        assert!(
            err.contains("5.dat.zst, frame 2") && err.contains("checksum mismatch"),
            "{err}"
        );
        assert_eq!(rows, b"1\n2\n");
    }

    /// A frame whose index entry claims (and whose bytes decompress to) far more than it
    /// stores is read in bounded pieces; one that decompresses to more than its index says
    /// is refused as soon as it does, naming the frame.
    #[test]
    fn frames_decompress_in_bounded_pieces_whatever_they_claim() {
        use crate::archive::frame::{Frame, FrameIndexEntry};
        let dir = tempfile::tempdir().unwrap();
        let codec = Codec::Zstd(1);
        let big: Vec<u8> = b"x\n".repeat(20 << 20);
        let frames = [
            Frame::of_rows(codec, &big).unwrap(),
            Frame::end(codec).unwrap(),
        ];
        let mut bytes = Vec::new();
        let mut index: Vec<FrameIndexEntry> = Vec::new();
        for f in &frames {
            index.push(f.index_entry(bytes.len() as u64));
            bytes.extend(&f.stored);
        }
        assert!(bytes.len() < 64 << 10, "the frame is a small bomb");
        std::fs::write(dir.path().join("6.dat.zst"), &bytes).unwrap();
        let data = find_data_file(&local(dir.path()), b"6.dat").unwrap();
        let mut sink = CountSink::default();
        let mut r = FrameReader::open(&data, &index, 0..2).unwrap();
        assert_eq!(r.next_frame(&mut sink).unwrap().unwrap().rows, 20 << 20);
        assert_eq!(sink.0, 40 << 20);
        // The index understates the raw size: refused, named.
        let mut lying = index.clone();
        lying[0].raw = 1 << 20;
        let mut r = FrameReader::open(&data, &lying, 0..2).unwrap();
        let err = r
            .next_frame(&mut CountSink::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("6.dat.zst, frame 1") && err.contains("more than 1048576 bytes"),
            "{err}"
        );
        // A claim over the spec's limit is refused before anything is read.
        lying[0].raw = MAX_FRAME_BYTES + 1;
        let mut r = FrameReader::open(&data, &lying, 0..2).unwrap();
        let err = r
            .next_frame(&mut CountSink::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the limit of 1 GiB"), "{err}");
    }
}
