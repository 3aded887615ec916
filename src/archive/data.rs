//! Where an entry's data lives, and the one way restore and verify read it: PostgreSQL's
//! archiver has one place that knows this (`pg_backup_directory.c` behind `_PrintTocData`
//! and `_LoadLOs`), and so does pgarc.
//!
//! [`ArchiveDir::table_data`] finds the data file of a TABLE DATA entry by pg_restore's rules
//! and, for a pgarc archive, cross-checks it against the manifest (format-spec §5, §7): the
//! `[[table]]` record naming that file, the listed size, the frame index's size and SHA-256,
//! and frames that tile the file and add up to the record. [`ArchiveDir::large_objects`] does
//! the same for a BLOBS entry. Every problem is a typed [`DataProblem`] located at an archive
//! file ([`Located`]): a restore stops at the first, verify reports them all.
//!
//! The data is then read through [`TableData::read_rows`] (checked rows: frame by frame for
//! pgarc's frame-indexed files, one stream otherwise, hashed against the manifest where it
//! lists the file) or [`LargeObject::open`]; verify reads frame ranges with
//! [`super::reader::FrameReader`] and whole files with [`super::reader::read_whole`].

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;

use super::digest::RowsDigest;
use super::dir::ArchiveDir;
use super::error::Error;
use super::frame::{hex, parse_frame_index, FrameIndexEntry};
use super::manifest::{IndexAt, ListedFile, ManifestIndex, TableFiles};
use super::names::safe_relative_name;
use super::reader::{
    blobs_toc_name, find_data_file, open_stream, parse_blobs_toc, BlobListError, CopyScanner,
    DataFile, FrameCheckError, FrameReader, RowSink, ScanError, SharedHash, SUFFIXES,
};
use super::toc::{Toc, TocEntry};
use super::TOC_FILE;

/// What is wrong with where an entry's data lives, or with how it agrees with the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataProblem {
    /// The TOC names a file that must not be opened (format-spec §2).
    #[error("entry {dump_id} names file {name:?}: {why}")]
    RefusedName {
        dump_id: i32,
        name: String,
        why: String,
    },
    /// A name found elsewhere (a manifest record, a large-object list) is refused.
    #[error("{0}")]
    Refused(String),
    #[error(
        "data file missing (also looked for .gz, .lz4 and .zst): the archive is incomplete; \
         restore the missing file or leave this entry out"
    )]
    Missing,
    #[error("missing (listed in the manifest)")]
    ListedMissing,
    #[error(
        "not a regular file (a {0}): an archive's data files are regular files; replace it \
         with the file the dump wrote"
    )]
    NotRegular(&'static str),
    #[error("{action}: {error}")]
    Io { action: &'static str, error: String },
    #[error("{what} not listed in the manifest")]
    Unlisted { what: &'static str },
    #[error("{found} bytes, the manifest says {listed}: {}", if found < listed { "truncated" } else { "grown" })]
    Size { found: u64, listed: u64 },
    #[error("SHA-256 is {found}, the manifest says {listed}: the file is damaged")]
    Sha256 { found: String, listed: String },
    /// The TOC and the manifest disagree on an entry's data file.
    #[error("entry {dump_id} names data file {toc:?}, the manifest {manifest:?}")]
    OtherFile {
        dump_id: i32,
        toc: String,
        manifest: String,
    },
    /// A `[[table]]` whose entry is not in the TOC.
    #[error("has no entry {dump_id} though the manifest lists its data in {file}")]
    NoEntry { dump_id: i32, file: String },
    #[error("{0}")]
    BadIndex(String),
    #[error("{}", .0)]
    IndexDisagrees(Box<IndexDisagreement>),
    #[error("{0}")]
    BlobList(BlobListError),
}

/// How a frame index disagrees with its data file and `[[table]]` record: each pair is
/// (what the index says, what the file or record says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDisagreement {
    pub covers: (u64, u64),
    pub frames: (u64, u64),
    pub rows: (u64, u64),
    pub raw_bytes: (u64, u64),
    /// The frames' digests added up, and the `[[table]]`'s `rows_sum` (format 3), as sums'
    /// bytes: spelled in hex only when they disagree.
    pub rows_sum: Option<([u8; 16], Option<[u8; 16]>)>,
}

impl fmt::Display for IndexDisagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.covers.0 != self.covers.1 {
            parts.push(format!(
                "covers {} bytes of {}",
                self.covers.0, self.covers.1
            ));
        }
        for (name, (index, record)) in [
            ("frames", self.frames),
            ("rows", self.rows),
            ("raw bytes", self.raw_bytes),
        ] {
            if index != record {
                parts.push(format!("{index} {name}, the manifest says {record}"));
            }
        }
        if let Some((index, record)) = &self.rows_sum {
            if Some(index) != record.as_ref() {
                parts.push(format!(
                    "the frames' rows_sum add up to {}, the manifest says {}",
                    hex(index),
                    record.map_or_else(|| "none".into(), |r| hex(&r))
                ));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// A problem and the archive file it is about (relative to the archive's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    /// The table whose data it concerns, where there is one (for people).
    pub table: Option<String>,
    pub problem: DataProblem,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

fn at(file: &str, problem: DataProblem) -> Located {
    Located {
        file: file.to_string(),
        table: None,
        problem,
    }
}

/// An archive error as a problem of the file it names.
fn from_error(e: Error) -> DataProblem {
    match e {
        Error::MissingDataFile { .. } => DataProblem::Missing,
        Error::NotRegularFile { kind, .. } => DataProblem::NotRegular(kind),
        Error::Io { error, .. } if error.kind() == io::ErrorKind::NotFound => {
            DataProblem::ListedMissing
        }
        Error::Io { action, error, .. } => DataProblem::Io {
            action,
            error: error.to_string(),
        },
        Error::NotArchive { problem, .. } => DataProblem::Refused(problem),
        Error::Toc { error, .. } => DataProblem::Refused(error.to_string()),
        Error::Store { problem, .. } => DataProblem::Io {
            action: "could not read",
            error: problem,
        },
    }
}

/// How a table's data is laid out.
#[derive(Debug, Clone)]
pub enum Layout {
    /// pgarc's frames, with the frame index the manifest vouches for (it tiles the file).
    Frames(Arc<[FrameIndexEntry]>),
    /// One COPY stream (stock pg_dump's data, or data pg_dump wrote inside a pgarc archive),
    /// with the manifest's size and SHA-256 when it lists the file.
    Stream(Option<ListedFile>),
}

/// A TABLE DATA entry's data, located and checked against the manifest.
#[derive(Debug, Clone)]
pub struct TableData {
    pub file: DataFile,
    pub layout: Layout,
    /// The file has the size the manifest lists (or no listed size). When false, the frames
    /// are still readable up to where the file ends, which is how verify names the frame.
    pub size_ok: bool,
}

/// One large object of a BLOBS entry.
#[derive(Debug, Clone)]
pub struct LargeObject {
    pub oid: u32,
    pub file: DataFile,
    /// The manifest's size and SHA-256 (pgarc archives).
    pub listed: Option<ListedFile>,
}

/// Why reading checked data stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Frame(#[from] FrameCheckError),
    #[error("{file}: {problem}")]
    Data { file: String, problem: DataProblem },
    #[error("{file}: {error}")]
    Scan { file: String, error: ScanError },
    #[error("{file}: {error}")]
    Io { file: String, error: io::Error },
    #[error("{file}: its frame index lists no frame, not even the end frame")]
    NoEndFrame { file: String },
}

impl ArchiveDir {
    /// A small file the manifest lists, read whole; refused unless its size and SHA-256 are
    /// the listed ones. `what` names it in messages ("frame index", "large-object list").
    pub fn read_listed(
        &self,
        m: &ManifestIndex,
        rel: &str,
        what: &'static str,
    ) -> Result<Vec<u8>, Located> {
        let Some(listed) = m.file(rel) else {
            return Err(at(rel, DataProblem::Unlisted { what }));
        };
        let bytes = self
            .read_small_file(rel)
            .map_err(|e| at(rel, from_error(e)))?;
        listed_problem(listed, bytes.len() as u64, &sha256(&bytes))
            .map_or(Ok(bytes), |p| Err(at(rel, p)))
    }

    /// The data of TABLE DATA entry `e`, located, and with a manifest checked against it:
    /// problems go to `problems`; `None` when there is nothing that can be read.
    pub fn table_data(
        &self,
        m: Option<&ManifestIndex>,
        e: &TocEntry,
        problems: &mut Vec<Located>,
    ) -> Option<TableData> {
        let table = Some(e.qualified_name());
        let mut push = |mut l: Located| {
            l.table.clone_from(&table);
            problems.push(l);
        };
        let raw_name = e.filename.as_bytes().unwrap_or_default();
        let shown = String::from_utf8_lossy(raw_name).into_owned();
        let name = match safe_relative_name(raw_name) {
            Ok(name) => name,
            Err(why) => {
                push(at(TOC_FILE, refused_name(e, &shown, why.to_string())));
                return None;
            }
        };
        let Some(m) = m else {
            return match find_data_file(self.store(), raw_name) {
                Ok(file) => Some(TableData {
                    file,
                    layout: Layout::Stream(None),
                    size_ok: true,
                }),
                Err(err) => {
                    push(at(name, from_error(err)));
                    None
                }
            };
        };
        match m.table(e.dump_id) {
            Some(record) => self.framed(m, e, name, record, &mut push),
            // Data pg_dump wrote itself (an extension's configuration table): one stream
            // whose size and SHA-256 the manifest lists.
            None => match find_data_file(self.store(), raw_name) {
                Ok(file) => match m.file(&file.rel) {
                    Some(listed) => {
                        let size_ok = listed.size == file.size;
                        if !size_ok {
                            push(at(&file.rel, size_problem(file.size, listed.size)));
                        }
                        Some(TableData {
                            layout: Layout::Stream(Some(listed.clone())),
                            file,
                            size_ok,
                        })
                    }
                    None => {
                        push(at(&file.rel, DataProblem::Unlisted { what: "data file" }));
                        None
                    }
                },
                Err(err) => {
                    push(at(name, from_error(err)));
                    None
                }
            },
        }
    }

    /// A pgarc table: the record's data file is the TOC's, present at its listed size, and
    /// the frame index (its SHA-256 checked) tiles it and adds up to the record.
    fn framed(
        &self,
        m: &ManifestIndex,
        e: &TocEntry,
        toc_name: &str,
        record: &TableFiles,
        push: &mut impl FnMut(Located),
    ) -> Option<TableData> {
        let stem = strip_codec_suffix(&record.file);
        if stem != toc_name {
            push(at(
                TOC_FILE,
                DataProblem::OtherFile {
                    dump_id: e.dump_id,
                    toc: toc_name.to_string(),
                    manifest: record.file.clone(),
                },
            ));
            return None;
        }
        let Some(listed) = m.file(&record.file) else {
            push(at(
                &record.file,
                DataProblem::Unlisted { what: "data file" },
            ));
            return None;
        };
        let index_at = record.frame_index.location();
        let parsed = match &record.frame_index {
            IndexAt::File(path) => self
                .read_listed(m, path, "frame index")
                .map(|bytes| parse_frame_index(&bytes, m.digests)),
            // Vouched for by the manifest's own checksum.
            IndexAt::Inline(text) => Ok(parse_frame_index(text.as_bytes(), m.digests)),
        };
        let index = match parsed {
            Ok(Ok(index)) => Some(index),
            Ok(Err(err)) => {
                push(at(index_at, DataProblem::BadIndex(err.to_string())));
                None
            }
            Err(problem) => {
                push(problem);
                None
            }
        };
        let file = match find_data_file(self.store(), record.file.as_bytes()) {
            Ok(file) => file,
            Err(Error::MissingDataFile { .. }) => {
                push(at(&record.file, DataProblem::ListedMissing));
                return None;
            }
            Err(err) => {
                push(at(&record.file, from_error(err)));
                return None;
            }
        };
        let size_ok = file.size == listed.size;
        if !size_ok {
            push(at(&record.file, size_problem(file.size, listed.size)));
        }
        let index = index?;
        let sum = |f: fn(&FrameIndexEntry) -> u64| index.iter().map(f).sum::<u64>();
        let disagreement = IndexDisagreement {
            covers: (sum(|f| f.stored), listed.size),
            frames: (index.len() as u64, record.frames),
            rows: (sum(|f| f.rows), record.rows),
            raw_bytes: (sum(|f| f.raw), record.raw_bytes),
            rows_sum: m.digests.then(|| {
                let mut total = RowsDigest::default();
                for f in index.iter() {
                    let frame = RowsDigest::from_sum_bytes(&f.rows_sum.unwrap_or([0; 16]), 0, 0);
                    total.combine(&frame);
                }
                (total.sum_bytes(), record.rows_sum)
            }),
        };
        if disagreement.covers.0 != disagreement.covers.1
            || disagreement.frames.0 != disagreement.frames.1
            || disagreement.rows.0 != disagreement.rows.1
            || disagreement.raw_bytes.0 != disagreement.raw_bytes.1
            || disagreement
                .rows_sum
                .is_some_and(|(index, record)| Some(index) != record)
        {
            push(at(
                index_at,
                DataProblem::IndexDisagrees(Box::new(disagreement)),
            ));
            return None;
        }
        Some(TableData {
            file,
            layout: Layout::Frames(index.into()),
            size_ok,
        })
    }

    /// The large objects of BLOBS entry `e`: its list (checked against the manifest when
    /// there is one) and each object's file, located. Problems go to `problems`; the objects
    /// returned are those that can be read.
    pub fn large_objects(
        &self,
        toc: &Toc,
        m: Option<&ManifestIndex>,
        e: &TocEntry,
        problems: &mut Vec<Located>,
    ) -> Vec<LargeObject> {
        let list = match blobs_toc_name(toc, e) {
            Ok(name) => name.to_string(),
            Err(why) => {
                let shown = e.filename.to_str_lossy().unwrap_or_default().into_owned();
                problems.push(at(TOC_FILE, refused_name(e, &shown, why.to_string())));
                return Vec::new();
            }
        };
        let bytes = match m {
            Some(m) => self.read_listed(m, &list, "large-object list"),
            None => self
                .read_small_file(&list)
                .map_err(|err| at(&list, from_error(err))),
        };
        let lines = match bytes.map(|b| parse_blobs_toc(&b)) {
            Ok(Ok(lines)) => lines,
            Ok(Err(err)) => {
                problems.push(at(&list, DataProblem::BlobList(err)));
                return Vec::new();
            }
            Err(problem) => {
                problems.push(problem);
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            let (oid, name) = match line {
                Ok(line) => line,
                Err(err) => {
                    problems.push(at(&list, DataProblem::BlobList(err)));
                    continue;
                }
            };
            let file = match find_data_file(self.store(), name.as_bytes()) {
                Ok(file) => file,
                Err(err) => {
                    problems.push(at(&name, from_error(err)));
                    continue;
                }
            };
            let listed = match m.map(|m| m.file(&file.rel)) {
                None => None,
                Some(Some(listed)) => Some(listed.clone()),
                Some(None) => {
                    problems.push(at(
                        &file.rel,
                        DataProblem::Unlisted {
                            what: "large object file",
                        },
                    ));
                    continue;
                }
            };
            out.push(LargeObject { oid, file, listed });
        }
        out
    }

    /// Every TOC entry's file name must stay inside the archive, with any compression
    /// suffix (format-spec §2): one problem per refused entry.
    pub fn refused_names(&self, toc: &Toc) -> Vec<Located> {
        let mut out = Vec::new();
        for e in &toc.entries {
            let name = e.filename.as_bytes().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let shown = String::from_utf8_lossy(name).into_owned();
            let why = match safe_relative_name(name) {
                Err(why) => Some(why.to_string()),
                Ok(rel) => std::iter::once("")
                    .chain(SUFFIXES.iter().map(|(s, _)| *s))
                    .find_map(|s| self.resolve(&format!("{rel}{s}")).err())
                    .map(|err| match from_error(err) {
                        DataProblem::Refused(why) => why,
                        other => other.to_string(),
                    }),
            };
            if let Some(why) = why {
                let mut l = at(TOC_FILE, refused_name(e, &shown, why));
                l.table = e.desc.is("TABLE DATA").then(|| e.qualified_name());
                out.push(l);
            }
        }
        out
    }
}

fn refused_name(e: &TocEntry, shown: &str, why: String) -> DataProblem {
    DataProblem::RefusedName {
        dump_id: e.dump_id,
        name: shown.to_string(),
        why,
    }
}

fn size_problem(found: u64, listed: u64) -> DataProblem {
    DataProblem::Size { found, listed }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(bytes).into()
}

/// What is wrong with a listed file of this size and SHA-256, if anything.
pub(crate) fn listed_problem(
    listed: &ListedFile,
    size: u64,
    digest: &[u8; 32],
) -> Option<DataProblem> {
    if size != listed.size {
        return Some(size_problem(size, listed.size));
    }
    if listed.sha256.as_ref() != Some(digest) {
        return Some(DataProblem::Sha256 {
            found: hex(digest),
            listed: listed
                .sha256
                .as_ref()
                .map_or("no valid SHA-256".to_string(), |h| hex(h)),
        });
    }
    None
}

/// A data file's name without its compression suffix: the name its TOC entry gives.
pub fn strip_codec_suffix(name: &str) -> &str {
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| name.strip_suffix(suffix))
        .unwrap_or(name)
}

impl TableData {
    /// The frame index, for a pgarc frame-indexed file.
    /// The rows' decompressed size, when a frame index gives it.
    pub fn raw_len(&self) -> Option<u64> {
        self.frames().map(|f| f.iter().map(|x| x.raw).sum())
    }

    pub fn frames(&self) -> Option<&Arc<[FrameIndexEntry]>> {
        match &self.layout {
            Layout::Frames(index) => Some(index),
            Layout::Stream(_) => None,
        }
    }

    /// A reader of frames `range` of a framed file, each checked as it is read (format-spec
    /// §4.1): verify reads frames this way to report every bad one, not only the first.
    pub fn frame_reader(&self, range: Range<usize>) -> Result<FrameReader<'_>, FrameCheckError> {
        let index = self.frames().map_or(&[][..], |i| &i[..]);
        FrameReader::open(&self.file, index, range)
    }

    /// Reads the rows of frames `range` (all of them for `None`, and for a stream), checked
    /// as format-spec §4.1 and §4.3 say, into `sink`, which sees them as they decompress: rows of a
    /// part that turns out damaged may have been passed on, so the consumer must be able to
    /// discard them (a COPY in a transaction). The number of rows, or `None` when the sink
    /// stopped.
    pub fn read_rows<S: RowSink>(
        &self,
        range: Option<Range<usize>>,
        sink: &mut S,
    ) -> Result<Option<u64>, ReadError> {
        match &self.layout {
            Layout::Frames(index) => read_frames(&self.file, index, range, sink),
            Layout::Stream(listed) => read_stream(&self.file, listed.as_ref(), sink),
        }
    }
}

fn read_frames<S: RowSink>(
    file: &DataFile,
    index: &[FrameIndexEntry],
    range: Option<Range<usize>>,
    sink: &mut S,
) -> Result<Option<u64>, ReadError> {
    let range = range.unwrap_or(0..index.len());
    let includes_last = range.end == index.len();
    let mut reader = FrameReader::open(file, index, range)?;
    let mut rows = 0;
    while let Some(frame) = reader.next_frame(sink)? {
        rows += frame.rows;
        if sink.stopped() {
            return Ok(None);
        }
    }
    if includes_last && index.is_empty() {
        return Err(ReadError::NoEndFrame {
            file: file.rel.clone(),
        });
    }
    Ok(Some(rows))
}

const STREAM_PIECE: usize = 256 << 10;

fn read_stream<S: RowSink>(
    file: &DataFile,
    listed: Option<&ListedFile>,
    sink: &mut S,
) -> Result<Option<u64>, ReadError> {
    let io_error = |error| ReadError::Io {
        file: file.rel.clone(),
        error,
    };
    let scan_error = |error| ReadError::Scan {
        file: file.rel.clone(),
        error,
    };
    let mut r = CheckedStream::open(file, listed).map_err(|e| ReadError::Data {
        file: file.rel.clone(),
        problem: from_error(e),
    })?;
    let mut scanner = CopyScanner::new();
    let mut buf = vec![0u8; STREAM_PIECE];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(r.explain(e)),
        };
        scanner.feed(&buf[..n], sink).map_err(scan_error)?;
        if sink.stopped() {
            return Ok(None);
        }
    }
    let rows = scanner.finish(true).map_err(scan_error)?;
    r.check_end().map_err(|e| match e {
        Ok(problem) => ReadError::Data {
            file: file.rel.clone(),
            problem,
        },
        Err(error) => io_error(error),
    })?;
    Ok(Some(rows))
}

impl LargeObject {
    /// The object's bytes, decompressed; with a manifest, its stored bytes' size and SHA-256
    /// are checked when the end is read (an error then, before the last byte is returned
    /// as read: the caller must treat a read error as the object's failure).
    pub fn open(&self) -> Result<CheckedStream, ReadError> {
        CheckedStream::open(&self.file, self.listed.as_ref()).map_err(|e| ReadError::Data {
            file: self.file.rel.clone(),
            problem: from_error(e),
        })
    }
}

/// A data file's decompressed bytes; where the manifest lists the file, its stored bytes are
/// hashed on the way and checked against the listing at the end of the stream.
pub struct CheckedStream {
    file: DataFile,
    listed: Option<ListedFile>,
    hashed: Option<SharedHash>,
    inner: Box<dyn Read + Send>,
    checked: bool,
}

/// The error a [`CheckedStream`] returns when the file is not what the manifest lists.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ListedMismatch(DataProblem);

impl CheckedStream {
    fn open(file: &DataFile, listed: Option<&ListedFile>) -> Result<CheckedStream, Error> {
        let Some(listed) = listed else {
            return Ok(CheckedStream {
                file: file.clone(),
                listed: None,
                hashed: None,
                inner: open_stream(file)?,
                checked: true,
            });
        };
        let f = file.open(0)?;
        let hash = SharedHash::default();
        let inner = super::reader::decode_stream(file.codec, hash.reader(f)).map_err(|error| {
            Error::Io {
                path: file.path.clone(),
                action: "could not start decompression of",
                error,
            }
        })?;
        Ok(CheckedStream {
            file: file.clone(),
            listed: Some(listed.clone()),
            hashed: Some(hash),
            inner,
            checked: false,
        })
    }

    /// Hashes what the decoder left unread and compares with the listing: `Err(Ok(problem))`
    /// when they differ, `Err(Err(io))` when the rest cannot be read.
    fn check_end(&mut self) -> Result<(), Result<DataProblem, io::Error>> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        let (Some(hash), Some(listed)) = (&self.hashed, &self.listed) else {
            return Ok(());
        };
        let (digest, size) = hash
            .finish_file(|from| self.file.open(from).map_err(io::Error::other))
            .map_err(Err)?;
        match listed_problem(listed, size, &digest) {
            Some(problem) => Err(Ok(problem)),
            None => Ok(()),
        }
    }

    /// A read error as the reason reading stopped.
    pub fn explain(&self, error: io::Error) -> ReadError {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ListedMismatch>())
        {
            Some(ListedMismatch(problem)) => ReadError::Data {
                file: self.file.rel.clone(),
                problem: problem.clone(),
            },
            None => ReadError::Io {
                file: self.file.rel.clone(),
                error,
            },
        }
    }
}

impl Read for CheckedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            match self.check_end() {
                Ok(()) => {}
                Err(Ok(problem)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        ListedMismatch(problem),
                    ))
                }
                Err(Err(error)) => return Err(error),
            }
        }
        Ok(n)
    }
}
