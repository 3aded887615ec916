//! Writing an archive (format-spec §6, tool.md §1) into any store: starting it, adopting
//! the files pg_dump wrote for the schema, appending frames to data files from several
//! workers, and writing toc.dat, frame indexes and finally the manifest. A directory's files
//! are not fsynced one by one as they are written: the store makes everything durable at once
//! before the manifest ([`Store::publish`]).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::digest::RowsDigest;
use super::error::Error;
use super::frame::{hex, write_frame_index, Codec, EncodedFrame, Encoder, Frame, FrameIndexEntry};
use super::journal::SCHEMA_TOC;
use super::manifest::{FileRecord, Manifest, MANIFEST_FILE};
use super::store::{Appender, Checkpoint, Store};
use super::toc::Toc;
use super::TOC_FILE;

/// How many threads move pg_dump's files into the store at once.
const ADOPT_THREADS: usize = 4;
/// The directory of frame indexes, relative to the root.
pub const FRAMES_DIR: &str = "pgarc/frames";
/// The file a pgarc dump writes first (format-spec §6): an archive that has it and no
/// manifest is a pgarc dump that did not finish, never a stock archive.
pub const STARTED_FILE: &str = "pgarc/started";

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |error| Error::Io {
        path: path.to_owned(),
        action,
        error,
    }
}

/// An archive being written.
#[derive(Debug)]
pub struct ArchiveWriter {
    store: Arc<dyn Store>,
    /// Where pg_dump writes its schema archive (local, private), once asked.
    schema_dir: Mutex<Option<PathBuf>>,
    /// The record of [`STARTED_FILE`], for the manifest.
    started: FileRecord,
}

impl ArchiveWriter {
    /// Checks that the store holds nothing yet, without creating anything.
    pub fn check_target(store: &dyn Store) -> Result<(), Error> {
        store.check_empty()
    }

    /// Starts an archive in an empty store (a directory is created, or an existing empty one
    /// taken; a non-empty one is refused: it may be another archive) and writes
    /// [`STARTED_FILE`], whose `text` says when and under which snapshot.
    pub fn create(store: Arc<dyn Store>, started: &str) -> Result<ArchiveWriter, Error> {
        store.prepare()?;
        store.put(STARTED_FILE, started.as_bytes().to_vec())?;
        Ok(ArchiveWriter {
            store,
            schema_dir: Mutex::new(None),
            started: FileRecord {
                path: STARTED_FILE.to_string(),
                size: started.len() as u64,
                sha256: hex(&Sha256::digest(started.as_bytes())),
            },
        })
    }

    /// Takes up an unfinished archive again (`dump --resume`): [`STARTED_FILE`] is read back
    /// for the manifest's record of it.
    pub fn reopen(store: Arc<dyn Store>) -> Result<ArchiveWriter, Error> {
        let mut bytes = Vec::new();
        store
            .open(STARTED_FILE, 0, None)?
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(io_err(
                &store.location().join(STARTED_FILE),
                "could not read",
            ))?;
        Ok(ArchiveWriter {
            started: FileRecord {
                path: STARTED_FILE.to_string(),
                size: bytes.len() as u64,
                sha256: hex(&Sha256::digest(&bytes)),
            },
            store,
            schema_dir: Mutex::new(None),
        })
    }

    /// The record of the file written first, for the manifest.
    pub fn started_record(&self) -> FileRecord {
        self.started.clone()
    }

    pub fn root(&self) -> PathBuf {
        self.store.location()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The local directory pg_dump is to write its schema archive into (it must not exist
    /// yet): inside a local archive, else a private temporary directory.
    pub fn schema_dir(&self) -> Result<PathBuf, Error> {
        let mut slot = self.schema_dir.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(self.store.scratch_dir()?);
        }
        Ok(slot.clone().unwrap_or_default())
    }

    /// Reads the toc.dat pg_dump wrote into [`Self::schema_dir`], moves every other file it
    /// wrote (large objects, extension table data) into the archive, keeps its toc.dat as the
    /// journal's [`SCHEMA_TOC`] (pgarc writes its own toc.dat last), and removes the
    /// directory. Returns the TOC, the record of the kept toc.dat and the adopted files.
    pub fn adopt_schema(&self) -> Result<(Toc, FileRecord, Vec<FileRecord>), Error> {
        let dir = self.schema_dir()?;
        let toc = Toc::read_file(&dir.join(TOC_FILE))?;
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir, "could not read"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&dir, "could not read"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| is_plain_name(n)) else {
                return Err(Error::NotArchive {
                    path: entry.path(),
                    problem: "unexpected file name in pg_dump's output".into(),
                });
            };
            if name != TOC_FILE {
                files.push((name.to_string(), entry.path()));
            }
        }
        // Hashed and put into the store from several threads: one large object per file,
        // and an object store's requests take their round trip each.
        let per_thread = files.len().div_ceil(ADOPT_THREADS).max(1);
        let mut adopted = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(name, path)| {
                                let record = hash_local(path, name)?;
                                self.store.put_file(name, path)?;
                                Ok(record)
                            })
                            .collect::<Result<Vec<_>, Error>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<Vec<_>>, Error>>()
        })?
        .concat();
        let kept = hash_local(&dir.join(TOC_FILE), SCHEMA_TOC)?;
        self.store.put_file(SCHEMA_TOC, &dir.join(TOC_FILE))?;
        std::fs::remove_dir(&dir).map_err(io_err(&dir, "could not remove"))?;
        adopted.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((toc, kept, adopted))
    }

    /// pg_dump's toc.dat as an earlier run kept it ([`Self::adopt_schema`]), checked
    /// against its record.
    pub fn read_schema_toc(&self, record: &FileRecord) -> Result<Toc, Error> {
        let path = self.root().join(SCHEMA_TOC);
        let mut bytes = Vec::new();
        self.store
            .open(SCHEMA_TOC, 0, None)?
            .take(record.size + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path, "could not read"))?;
        if bytes.len() as u64 != record.size || hex(&Sha256::digest(&bytes)) != record.sha256 {
            return Err(Error::NotArchive {
                path,
                problem: "differs from what the journal recorded".into(),
            });
        }
        Toc::parse(&bytes).map_err(|error| Error::Toc { path, error })
    }

    /// Writes a whole file (created new).
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<FileRecord, Error> {
        self.store.put(rel, bytes.to_vec())?;
        Ok(FileRecord {
            path: rel.to_string(),
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        })
    }

    pub fn write_toc(&self, toc: &Toc) -> Result<FileRecord, Error> {
        let bytes = toc.to_bytes().map_err(|error| Error::Toc {
            path: self.root().join(TOC_FILE),
            error,
        })?;
        self.write_file(TOC_FILE, &bytes)
    }

    /// Starts the data file of the table with OID `oid` under its final name,
    /// `t<oid>.dat` plus the codec's suffix (format-spec §6: known before the TOC assigns
    /// dumpIds, so no file is ever renamed, which an object store cannot do). `table_bytes`
    /// is the table's size on disk, the store's guess at the file's size.
    /// With `digests`, each frame's index line carries the digest of its rows (format 3,
    /// §5.3) and the finished file the table's.
    /// `run`: the dump run that writes it (a resumed run rewrites a table into a new file).
    pub fn data_file(
        &self,
        oid: u32,
        run: u32,
        table_bytes: u64,
        codec: Codec,
        digests: bool,
    ) -> Result<DataFileWriter, Error> {
        let rel = format!("{}{}", data_file_name(oid, run), codec.suffix());
        let out = self.store.append(&rel, table_bytes)?;
        Ok(DataFileWriter {
            path: self.root().join(&rel),
            rel,
            codec,
            digests,
            inner: Mutex::new(DataInner {
                out: Some(out),
                offset: 0,
                hasher: Sha256::new(),
                index: Vec::new(),
                rows: 0,
                raw: 0,
                digest: RowsDigest::default(),
            }),
        })
    }

    /// Continues the data file `rel` that an earlier run wrote, where the store can (a
    /// directory; an object store cannot: `None`): the frames of `prefix` stay, everything
    /// after them is cut off, and the writer appends after them.
    pub fn continue_data_file(
        &self,
        rel: &str,
        codec: Codec,
        prefix: KeptPrefix,
    ) -> Result<Option<DataFileWriter>, Error> {
        let Some(out) = self.store.reopen(rel, prefix.len)? else {
            return Ok(None);
        };
        Ok(Some(DataFileWriter {
            path: self.root().join(rel),
            rel: rel.to_string(),
            codec,
            digests: prefix.digests,
            inner: Mutex::new(DataInner {
                out: Some(out),
                offset: prefix.len,
                hasher: prefix.hasher,
                index: prefix.index,
                rows: prefix.rows,
                raw: prefix.raw,
                digest: prefix.digest,
            }),
        }))
    }

    /// Places a finished data file's frame index: in the manifest when it has at most
    /// [`INLINE_FRAMES`] frames (format 2, §5.2: one file less per small table), else in
    /// `pgarc/frames/<dump_id>.tsv`. Returns the data file's record and where the index went.
    pub fn place_data_file(
        &self,
        done: &FinishedDataFile,
        dump_id: i32,
    ) -> Result<(FileRecord, PlacedIndex), Error> {
        let text = write_frame_index(&done.index);
        let index = if done.index.len() <= INLINE_FRAMES {
            PlacedIndex::Inline(text)
        } else {
            let rel = format!("{FRAMES_DIR}/{dump_id}.tsv");
            PlacedIndex::File(self.write_file(&rel, text.as_bytes())?)
        };
        let file = FileRecord {
            path: done.rel.clone(),
            size: done.size,
            sha256: hex(&done.sha256),
        };
        Ok((file, index))
    }

    /// Removes a data file that will not be part of the archive.
    pub fn discard_data_file(&self, done: &FinishedDataFile) -> Result<(), Error> {
        self.store.delete(&done.rel)
    }

    /// Writes the manifest last: the store makes every file durable first, and never
    /// writes over an existing manifest.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), Error> {
        self.store.publish(MANIFEST_FILE, manifest.to_bytes())
    }

    /// Gives up a dump that failed or was interrupted: uploads in progress are aborted and
    /// the schema's scratch directory removed (the archive stays without a manifest).
    pub fn abandon(&self) {
        self.store.abandon();
        let dir = self
            .schema_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(dir) = dir.filter(|d| !d.starts_with(self.root())) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The name in toc.dat of the data file of the table with OID `oid` (format-spec §6) that
/// run `run` of a dump writes: `t<oid>.dat`, or `t<oid>-r<run>.dat` from a resumed run on.
pub fn data_file_name(oid: u32, run: u32) -> String {
    if run <= 1 {
        format!("t{oid}.dat")
    } else {
        format!("t{oid}-r{run}.dat")
    }
}

/// Whether `name` is a data file a pgarc dump writes (`t<oid>.dat`, `t<oid>-r<run>.dat`,
/// with a codec's suffix or none).
pub fn is_data_file_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &rest[digits..];
    let rest = match rest.strip_prefix("-r") {
        Some(r) => {
            let d = r.bytes().take_while(u8::is_ascii_digit).count();
            if d == 0 {
                return false;
            }
            &r[d..]
        }
        None => rest,
    };
    digits > 0 && matches!(rest, ".dat" | ".dat.gz" | ".dat.lz4" | ".dat.zst")
}

/// Reads and hashes a local file, recording it as `rel`.
fn hash_local(path: &Path, rel: &str) -> Result<FileRecord, Error> {
    let mut f = std::fs::File::open(path).map_err(io_err(path, "could not open"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path, "could not read"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileRecord {
        path: rel.to_string(),
        size,
        sha256: hex(&hasher.finalize()),
    })
}

/// Frame indexes of at most this many frames (one frame of rows and the end frame) are
/// written into the manifest rather than a file of their own.
pub const INLINE_FRAMES: usize = 2;

/// Where [`ArchiveWriter::place_data_file`] put a frame index.
#[derive(Debug, Clone)]
pub enum PlacedIndex {
    /// Its own file, with that file's record.
    File(FileRecord),
    /// The index's text, for the manifest's `frame_list`.
    Inline(String),
}

impl PlacedIndex {
    /// The `[[table]]`'s `frame_index` and `frame_list` (exactly one is set), and the
    /// index file's record to list, if it has one.
    pub fn into_manifest(self) -> (Option<String>, Option<String>, Option<FileRecord>) {
        match self {
            PlacedIndex::File(f) => (Some(f.path.clone()), None, Some(f)),
            PlacedIndex::Inline(text) => (None, Some(text), None),
        }
    }
}

/// A file name pg_dump may write into a directory archive.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// The frames an earlier run left at the start of a data file, accounted as a writer
/// appending them would have (hash, index, rows, digest): what
/// [`ArchiveWriter::continue_data_file`] keeps.
#[derive(Debug)]
pub struct KeptPrefix {
    digests: bool,
    len: u64,
    hasher: Sha256,
    index: Vec<FrameIndexEntry>,
    rows: u64,
    raw: u64,
    digest: RowsDigest,
}

impl KeptPrefix {
    pub fn new(digests: bool) -> KeptPrefix {
        KeptPrefix {
            digests,
            len: 0,
            hasher: Sha256::new(),
            index: Vec::new(),
            rows: 0,
            raw: 0,
            digest: RowsDigest::default(),
        }
    }

    /// Adds the frame `entry` describes, whose bytes `stored` are at the prefix's end.
    pub fn add(&mut self, stored: &[u8], entry: &FrameIndexEntry) -> Result<(), Error> {
        let bad = |problem: String| Error::NotArchive {
            path: PathBuf::new(),
            problem,
        };
        if entry.offset != self.len || stored.len() as u64 != entry.stored {
            return Err(bad(format!(
                "a kept frame at byte {} of {} bytes does not follow byte {}",
                entry.offset, entry.stored, self.len
            )));
        }
        match (self.digests, entry.rows_sum) {
            (false, _) => {}
            (true, Some(sum)) => self
                .digest
                .combine(&RowsDigest::from_sum_bytes(&sum, entry.rows, entry.raw)),
            (true, None) => return Err(bad("a kept frame without its rows' digest".into())),
        }
        self.hasher.update(stored);
        self.index.push(*entry);
        self.len += entry.stored;
        self.rows += entry.rows;
        self.raw += entry.raw;
        Ok(())
    }

    /// The prefix's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One table's data file, appended to frame by frame by any number of workers. Each frame is
/// written whole at the current end under a lock, and the file's SHA-256 and frame index are
/// updated in the same step, so the index and checksum always describe the bytes in file order.
#[derive(Debug)]
pub struct DataFileWriter {
    path: PathBuf,
    rel: String,
    codec: Codec,
    digests: bool,
    inner: Mutex<DataInner>,
}

#[derive(Debug)]
struct DataInner {
    /// Where the bytes go; taken when the file is finished.
    out: Option<Box<dyn Appender>>,
    offset: u64,
    hasher: Sha256,
    index: Vec<FrameIndexEntry>,
    rows: u64,
    raw: u64,
    /// The rows' digest so far (when the file has digests).
    digest: RowsDigest,
}

/// A data file whose end frame is written and that is complete in its store.
#[derive(Debug, Clone)]
pub struct FinishedDataFile {
    /// Its name in the archive.
    pub rel: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub index: Vec<FrameIndexEntry>,
    pub rows: u64,
    pub raw_bytes: u64,
    /// The digest of every row (format 3), when the file was written with digests.
    pub rows_digest: Option<RowsDigest>,
}

impl DataFileWriter {
    /// Compresses whole COPY rows into one frame and appends it. Blocking: call it off the
    /// async runtime's threads.
    /// `encoder` must be of this file's codec.
    /// Returns the frame's index entry.
    pub fn append_rows(&self, raw: &[u8], encoder: &mut Encoder) -> Result<FrameIndexEntry, Error> {
        debug_assert_eq!(encoder.codec(), self.codec);
        // The digest is computed before the lock, like the compression.
        let digest = self.digests.then(|| {
            let mut d = RowsDigest::default();
            d.add_copy_text(raw);
            d
        });
        let frame = encoder
            .rows(raw)
            .map_err(io_err(&self.path, "could not compress"))?;
        self.append(&frame, digest)
    }

    /// Appends a frame an earlier run wrote, whose index entry `entry` was (its offset is
    /// this file's now). Returns the new entry.
    pub fn append_stored(
        &self,
        stored: &[u8],
        entry: &FrameIndexEntry,
    ) -> Result<FrameIndexEntry, Error> {
        let frame = EncodedFrame {
            stored,
            raw_len: entry.raw,
            rows: entry.rows,
            sha256: entry.sha256,
        };
        let digest = match (self.digests, entry.rows_sum) {
            (false, _) => None,
            (true, Some(sum)) => Some(RowsDigest::from_sum_bytes(&sum, entry.rows, entry.raw)),
            (true, None) => {
                return Err(Error::NotArchive {
                    path: self.path.clone(),
                    problem: "a kept frame without its rows' digest".into(),
                })
            }
        };
        self.append(&frame, digest)
    }

    /// Makes every frame appended so far durable where the store can ([`Appender::checkpoint`]).
    pub fn checkpoint(&self) -> Result<Checkpoint, Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.out.as_mut() {
            Some(out) => out.checkpoint(),
            None => Err(Error::NotArchive {
                path: self.path.clone(),
                problem: "internal error: a checkpoint after the end frame".into(),
            }),
        }
    }

    /// The file's name in the archive.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Appends a frame; `digest` is its rows' digest when the file has digests.
    fn append(
        &self,
        frame: &EncodedFrame<'_>,
        digest: Option<RowsDigest>,
    ) -> Result<FrameIndexEntry, Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let offset = inner.offset;
        match inner.out.as_mut() {
            Some(out) => out.write(frame.stored)?,
            None => {
                return Err(Error::NotArchive {
                    path: self.path.clone(),
                    problem: "internal error: a frame after the end frame".into(),
                })
            }
        }
        inner.hasher.update(frame.stored);
        let mut entry = frame.index_entry(offset);
        if let Some(d) = digest {
            entry.rows_sum = Some(d.sum_bytes());
            inner.digest.combine(&d);
        }
        inner.index.push(entry);
        inner.offset += frame.stored.len() as u64;
        inner.rows += frame.rows;
        inner.raw += frame.raw_len;
        Ok(entry)
    }

    /// Appends the end frame (`Frame::end` of this file's codec: the same bytes for every
    /// file, so callers make it once). No frame may be appended afterwards. Blocking.
    pub fn finish(&self, end: &Frame) -> Result<FinishedDataFile, Error> {
        // The end frame holds no rows: its digest is zero.
        let none = self.digests.then(RowsDigest::default);
        self.append(&end.as_encoded(), none)?;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = inner.out.take() {
            out.finish()?;
        }
        let sha = std::mem::take(&mut inner.hasher).finalize();
        Ok(FinishedDataFile {
            rel: self.rel.clone(),
            size: inner.offset,
            sha256: sha.into(),
            index: std::mem::take(&mut inner.index),
            rows: inner.rows,
            raw_bytes: inner.raw,
            rows_digest: self.digests.then_some(inner.digest),
        })
    }

    /// Gives the file up: what was appended is closed (an object store's upload completed,
    /// so that none is left open) and removed from `store`.
    pub fn discard(self, store: &dyn Store) -> Result<(), Error> {
        let out = self
            .inner
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .out;
        if let Some(out) = out {
            out.finish()?;
        }
        store.delete(&self.rel)
    }
}
