//! A dump's journal (format-spec tool.md §10): the durable record, kept with the archive
//! behind the same [`Store`], of what an unfinished dump has written, so that `pgarc dump
//! --resume` keeps it and redoes only the rest. Pure code: the records, their encoding (one
//! JSON object per record), and the replay that turns a journal back into what is done.
//!
//! A record is written only after what it describes is written: a chunk's record after its
//! frames are in the file (a directory) or in uploaded parts (an object store; the bytes of the
//! part still being filled go into a tail object first), a table's after its data file is
//! complete, the schema's after pg_dump's files are in the store. So whatever instant the
//! process is killed at, every record describes bytes that are there. Against the machine
//! stopping (a directory's files are in the page cache until flushed), a barrier record is
//! written at most every [`BARRIER_EVERY`]: everything is flushed ([`Store::sync`]) and the
//! barrier says so for every record before it. A resumed run trusts the records before the
//! last barrier and re-checks the data of the ones after it against their SHA-256.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::Error;
use super::frame::{parse_frame_list, write_frame_index, FrameIndexEntry};
use super::manifest::FileRecord;
use super::store::{Checkpoint, Store};

/// The journal's name in the archive; its other objects (tails, the schema's toc.dat, and in
/// an object store the records themselves) are under `pgarc/journal.d/`.
pub const JOURNAL: &str = "pgarc/journal";
/// pg_dump's own toc.dat, kept until the dump is complete (pgarc's toc.dat is written last).
pub const SCHEMA_TOC: &str = "pgarc/journal.d/schema.toc";
/// How often at most a journal flushes the store and writes a barrier.
pub const BARRIER_EVERY: Duration = Duration::from_secs(1);

/// The name of the object holding the tail of record `seq`.
pub fn tail_name(seq: u64) -> String {
    format!("{JOURNAL}.d/{seq:010}.tail")
}

/// One unit of the plan: a table (by OID) or the pages `[start, end)` of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    pub oid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<(u64, Option<u64>)>,
}

/// What a journal says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// The first record: the snapshot, the options that shape the archive (the dump's own
    /// encoding of them), and the plan; chunks are numbered by their place in it.
    Begin {
        snapshot_id: String,
        pgarc_version: String,
        started: String,
        options: serde_json::Value,
        chunks: Vec<PlannedChunk>,
    },
    /// A resumed run starts (runs are numbered from 1, the first run).
    Resume { run: u32, pgarc_version: String },
    /// A run starts copying a chunk (not necessarily durable: it counts redone work).
    Started { run: u32, chunk: usize },
    /// A chunk of a table whose data file is not finished is durable: its frames (offsets in
    /// `file`), and the file's checkpoint when it was.
    Chunk {
        run: u32,
        chunk: usize,
        oid: u32,
        file: String,
        frames: String,
        checkpoint: Checkpoint,
        /// The object holding the file's bytes from `checkpoint.durable` on ([`tail_name`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<String>,
    },
    /// A resumed run continues `file` in place: its first `at` bytes (whole frames of
    /// recorded chunks) stay and the rest is cut off. Chunks recorded with frames past `at`
    /// are void from here (the run records again those it moves).
    Cut {
        run: u32,
        oid: u32,
        file: String,
        at: u64,
    },
    /// A table's data file is complete (end frame written, file durable).
    File {
        run: u32,
        oid: u32,
        file: String,
        size: u64,
        sha256: String,
        frames: String,
        rows: u64,
        raw_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows_sum: Option<String>,
    },
    /// pg_dump captured the schema: its toc.dat ([`SCHEMA_TOC`]) and the files it wrote,
    /// now in the store.
    Schema {
        toc: FileRecord,
        files: Vec<FileRecord>,
    },
    /// Everything the records up to number `through` describe is on stable storage.
    Barrier { through: u64 },
}

#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    #[serde(flatten)]
    record: Record,
}

/// Writes records; safe to share between workers.
#[derive(Debug)]
pub struct Journal {
    store: Arc<dyn Store>,
    /// False when `PGARC_BENCH_NO_JOURNAL` is set: nothing is written (the bench measures the
    /// journal's cost with it; such a dump cannot be resumed).
    enabled: bool,
    next: AtomicU64,
    /// When the last barrier was written (held while one is being written).
    barrier: Mutex<Instant>,
}

impl Journal {
    /// A journal whose next record is number `next` (0 for a new one).
    pub fn new(store: Arc<dyn Store>, next: u64) -> Journal {
        Journal {
            store,
            enabled: std::env::var_os("PGARC_BENCH_NO_JOURNAL").is_none(),
            next: AtomicU64::new(next),
            barrier: Mutex::new(Instant::now()),
        }
    }

    /// Appends `record`; with `durable` it is on stable storage when this returns (and so is
    /// everything written before it). A record that is not durable becomes so with the next
    /// barrier, written here when the last one is [`BARRIER_EVERY`] old.
    pub fn write(&self, record: Record, durable: bool) -> Result<u64, Error> {
        if !self.enabled {
            return Ok(self.next.fetch_add(1, Ordering::SeqCst));
        }
        if durable {
            self.store.sync()?;
        }
        let seq = self.append(record, durable)?;
        if !durable {
            self.maybe_barrier()?;
        }
        Ok(seq)
    }

    fn append(&self, record: Record, durable: bool) -> Result<u64, Error> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let line = serde_json::to_vec(&Line { seq, record }).map_err(|e| Error::Store {
            location: self.store.location().display().to_string(),
            problem: format!("internal error: a journal record could not be encoded: {e}"),
        })?;
        self.store.log_append(JOURNAL, seq, &line, durable)?;
        Ok(seq)
    }

    /// Flushes the store and writes a barrier, if the last one is old enough and no other
    /// thread is writing one.
    fn maybe_barrier(&self) -> Result<(), Error> {
        let Ok(mut last) = self.barrier.try_lock() else {
            return Ok(());
        };
        if last.elapsed() < BARRIER_EVERY {
            return Ok(());
        }
        // Every record numbered below `next` was made after the data it describes was
        // written: the flush covers that data.
        let through = self.next.load(Ordering::SeqCst).saturating_sub(1);
        self.store.sync()?;
        self.append(Record::Barrier { through }, true)?;
        *last = Instant::now();
        Ok(())
    }

    /// Stores the bytes of a file's part being filled; returns the object's name. It is
    /// written before the record that names it.
    pub fn put_tail(&self, bytes: Vec<u8>) -> Result<String, Error> {
        let name = tail_name(self.next.fetch_add(1, Ordering::SeqCst));
        if self.enabled {
            self.store.put(&name, bytes)?;
        }
        Ok(name)
    }
}

/// One chunk kept from earlier runs: its frames in its table's current data file.
#[derive(Debug, Clone)]
pub struct KeptChunk {
    pub frames: Vec<FrameIndexEntry>,
    pub checkpoint: Checkpoint,
    pub tail: Option<String>,
    /// Recorded before the last barrier: its frames are on stable storage. Else their bytes
    /// are re-checked against their SHA-256 when they are carried.
    pub durable: bool,
}

/// A table whose data file an earlier run started: the file, and its durable chunks.
#[derive(Debug, Clone, Default)]
pub struct PartialFile {
    pub run: u32,
    pub file: String,
    pub chunks: BTreeMap<usize, KeptChunk>,
}

impl PartialFile {
    /// The furthest checkpoint recorded: every byte below its `durable` is in the store
    /// (once recovered).
    pub fn checkpoint(&self) -> Checkpoint {
        self.chunks
            .values()
            .map(|c| &c.checkpoint)
            .max_by_key(|c| (c.durable, c.upload.as_ref().map_or(0, |u| u.1.len())))
            .cloned()
            .unwrap_or_default()
    }
}

/// A table whose data file is complete.
#[derive(Debug, Clone)]
pub struct DoneFile {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub frames: Vec<FrameIndexEntry>,
    pub rows: u64,
    pub raw_bytes: u64,
    pub rows_sum: Option<String>,
    /// Recorded before the last barrier: on stable storage. Else its bytes are re-checked.
    pub durable: bool,
}

/// What a journal says is done, replayed in record order.
#[derive(Debug, Clone)]
pub struct Replay {
    pub snapshot_id: String,
    pub started: String,
    pub options: serde_json::Value,
    pub chunks: Vec<PlannedChunk>,
    /// Runs so far (1 after the first).
    pub runs: u32,
    pub next_seq: u64,
    /// Chunks any run started.
    pub started_chunks: HashSet<usize>,
    pub files: HashMap<u32, DoneFile>,
    pub partial: HashMap<u32, PartialFile>,
    pub schema: Option<(FileRecord, Vec<FileRecord>)>,
    /// Whether the schema's record came before the last barrier.
    pub schema_durable: bool,
    /// Records after the first one that did not parse (a torn or lost end): left out.
    pub ignored: usize,
}

/// Why a journal cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct ReplayError {
    pub problem: String,
}

fn bad(problem: impl Into<String>) -> ReplayError {
    ReplayError {
        problem: problem.into(),
    }
}

fn frames(text: &str, what: &str) -> Result<Vec<FrameIndexEntry>, ReplayError> {
    let digests = text.starts_with("offset\tstored\traw\trows\tsha256\trows_sum");
    parse_frame_list(text.as_bytes(), digests)
        .map_err(|e| bad(format!("{what}: a damaged frame list ({e})")))
}

/// The frame list of a record.
pub fn frame_list(entries: &[FrameIndexEntry]) -> String {
    write_frame_index(entries)
}

/// Replays the records read from a journal (each one JSON object).
pub fn replay(records: &[Vec<u8>]) -> Result<Option<Replay>, ReplayError> {
    let mut lines = Vec::with_capacity(records.len());
    let mut ignored = 0;
    for (i, r) in records.iter().enumerate() {
        match serde_json::from_slice::<Line>(r) {
            Ok(line) => lines.push(line),
            // The first record must be whole; after a machine stopped, the end of a journal
            // may be lost or garbage: what follows is left out (and redone).
            Err(e) if i == 0 => return Err(bad(format!("record 1 is damaged ({e})"))),
            Err(_) => {
                ignored = records.len() - i;
                break;
            }
        }
    }
    lines.sort_by_key(|l| l.seq);
    let barrier = lines
        .iter()
        .filter_map(|l| match l.record {
            Record::Barrier { through } => Some(through),
            _ => None,
        })
        .max();
    let mut it = lines.into_iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    let Record::Begin {
        snapshot_id,
        started,
        options,
        chunks,
        ..
    } = first.record
    else {
        return Err(bad("the first record is not the dump's beginning"));
    };
    let mut out = Replay {
        snapshot_id,
        started,
        options,
        chunks,
        runs: 1,
        next_seq: first.seq + 1,
        started_chunks: HashSet::new(),
        files: HashMap::new(),
        partial: HashMap::new(),
        schema: None,
        schema_durable: false,
        ignored,
    };
    for line in it {
        out.next_seq = out.next_seq.max(line.seq + 1);
        let durable = barrier.is_some_and(|b| line.seq <= b);
        out.apply(line.record, durable)?;
    }
    Ok(Some(out))
}

impl Replay {
    fn check_chunk(&self, chunk: usize, oid: u32) -> Result<(), ReplayError> {
        match self.chunks.get(chunk) {
            Some(c) if c.oid == oid => Ok(()),
            _ => Err(bad(format!(
                "a record names chunk {chunk} of table OID {oid}, which the plan does not have"
            ))),
        }
    }

    fn apply(&mut self, record: Record, durable: bool) -> Result<(), ReplayError> {
        match record {
            Record::Begin { .. } => return Err(bad("a second beginning")),
            Record::Barrier { .. } => {}
            Record::Resume { run, .. } => self.runs = self.runs.max(run),
            Record::Started { chunk, .. } => {
                self.started_chunks.insert(chunk);
            }
            Record::Chunk {
                run,
                chunk,
                oid,
                file,
                frames: text,
                checkpoint,
                tail,
            } => {
                self.check_chunk(chunk, oid)?;
                let kept = KeptChunk {
                    frames: frames(&text, &file)?,
                    checkpoint,
                    tail,
                    durable,
                };
                let p = self.partial.entry(oid).or_default();
                if p.file != file {
                    // A later run rewrote the table into a new file: older records are void.
                    if p.file.is_empty() || run > p.run {
                        *p = PartialFile {
                            run,
                            file,
                            chunks: BTreeMap::new(),
                        };
                    } else {
                        return Ok(());
                    }
                }
                p.chunks.insert(chunk, kept);
            }
            Record::Cut { oid, file, at, .. } => {
                if let Some(p) = self.partial.get_mut(&oid).filter(|p| p.file == file) {
                    p.chunks
                        .retain(|_, k| k.frames.iter().all(|e| e.offset + e.stored <= at));
                    for k in p.chunks.values_mut() {
                        k.checkpoint.durable = k.checkpoint.durable.min(at);
                    }
                }
            }
            Record::File {
                oid,
                file,
                size,
                sha256,
                frames: text,
                rows,
                raw_bytes,
                rows_sum,
                ..
            } => {
                if !self.chunks.iter().any(|c| c.oid == oid) {
                    return Err(bad(format!(
                        "a finished file of table OID {oid}, not planned"
                    )));
                }
                let frames = frames(&text, &file)?;
                self.partial.remove(&oid);
                self.files.insert(
                    oid,
                    DoneFile {
                        file,
                        size,
                        sha256,
                        frames,
                        rows,
                        raw_bytes,
                        rows_sum,
                        durable,
                    },
                );
            }
            Record::Schema { toc, files } => {
                self.schema = Some((toc, files));
                self.schema_durable = durable;
            }
        }
        Ok(())
    }

    /// The chunks done: of finished files, and kept in partial ones.
    pub fn done_chunks(&self) -> HashSet<usize> {
        let mut done: HashSet<usize> = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| self.files.contains_key(&c.oid))
            .map(|(i, _)| i)
            .collect();
        for p in self.partial.values() {
            done.extend(p.chunks.keys().copied());
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, record: Record) -> Vec<u8> {
        serde_json::to_vec(&Line { seq, record }).unwrap()
    }

    fn entry(offset: u64) -> FrameIndexEntry {
        FrameIndexEntry {
            offset,
            stored: 10,
            raw: 20,
            rows: 2,
            sha256: [7; 32],
            rows_sum: Some([1; 16]),
        }
    }

    fn begin() -> Record {
        Record::Begin {
            snapshot_id: "00000003-00000002-1".into(),
            pgarc_version: "x".into(),
            started: "now".into(),
            options: serde_json::json!({"codec": "zstd:1"}),
            chunks: vec![
                PlannedChunk {
                    oid: 10,
                    pages: Some((0, Some(5))),
                },
                PlannedChunk {
                    oid: 10,
                    pages: Some((5, None)),
                },
                PlannedChunk {
                    oid: 11,
                    pages: None,
                },
            ],
        }
    }

    fn file(run: u32, oid: u32) -> Record {
        Record::File {
            run,
            oid,
            file: format!("t{oid}.dat"),
            size: 10,
            sha256: "00".into(),
            frames: frame_list(&[entry(0)]),
            rows: 2,
            raw_bytes: 20,
            rows_sum: None,
        }
    }

    fn chunk(run: u32, chunk: usize, file: &str, durable: u64) -> Record {
        Record::Chunk {
            run,
            chunk,
            oid: 10,
            file: file.into(),
            frames: frame_list(&[entry(0)]),
            checkpoint: Checkpoint {
                durable,
                upload: None,
                tail: Vec::new(),
            },
            tail: None,
        }
    }

    #[test]
    fn a_replay_keeps_what_the_newest_file_of_each_table_holds() {
        let records = vec![
            line(0, begin()),
            line(1, Record::Started { run: 1, chunk: 0 }),
            line(2, chunk(1, 0, "t10.dat", 10)),
            // Out of order, as an object store lists them by name: sorted by seq.
            line(5, file(2, 11)),
            line(
                3,
                Record::Resume {
                    run: 2,
                    pgarc_version: "x".into(),
                },
            ),
            line(4, chunk(2, 0, "t10-r2.dat", 10)),
            // A stale record of the first run's file, after the rewrite: void.
            line(6, chunk(1, 1, "t10.dat", 20)),
        ];
        let r = replay(&records).unwrap().unwrap();
        assert_eq!(r.runs, 2);
        assert_eq!(r.next_seq, 7);
        assert_eq!(r.partial[&10].file, "t10-r2.dat");
        assert_eq!(r.partial[&10].chunks.len(), 1);
        assert!(r.files.contains_key(&11));
        let mut done: Vec<usize> = r.done_chunks().into_iter().collect();
        done.sort();
        assert_eq!(done, vec![0, 2]);
        assert!(r.started_chunks.contains(&0));
    }

    #[test]
    fn records_before_the_last_barrier_are_durable_and_the_others_are_not() {
        let file = file(1, 11);
        let records = vec![
            line(0, begin()),
            // Written after the flush that it vouches for: seq 2 was handed out before it.
            line(2, chunk(1, 0, "t10.dat", 10)),
            line(3, Record::Barrier { through: 2 }),
            line(1, file.clone()),
            line(4, chunk(1, 1, "t10.dat", 20)),
        ];
        let r = replay(&records).unwrap().unwrap();
        let chunks = &r.partial[&10].chunks;
        assert!(chunks[&0].durable);
        assert!(!chunks[&1].durable);
        assert!(r.files[&11].durable);
        // Without a barrier nothing is.
        let r = replay(&[
            line(0, begin()),
            line(1, file),
            line(2, chunk(1, 0, "t10.dat", 10)),
        ])
        .unwrap()
        .unwrap();
        assert!(!r.files[&11].durable);
        assert!(!r.partial[&10].chunks[&0].durable);
    }

    #[test]
    fn a_cut_voids_the_chunks_with_frames_past_it_and_bounds_the_checkpoints() {
        let at = |run: u32, chunk: usize, offset: u64| Record::Chunk {
            run,
            chunk,
            oid: 10,
            file: "t10.dat".into(),
            frames: frame_list(&[entry(offset)]),
            checkpoint: Checkpoint {
                durable: 500,
                upload: None,
                tail: Vec::new(),
            },
            tail: None,
        };
        let stored = entry(0).stored;
        let cut = |file: &str| Record::Cut {
            run: 2,
            oid: 10,
            file: file.into(),
            at: stored,
        };
        let records = vec![
            line(0, begin()),
            line(1, at(1, 0, 0)),
            line(2, at(1, 1, stored + 7)),
            // Another file's cut changes nothing.
            line(3, cut("t10-r2.dat")),
        ];
        let r = replay(&records).unwrap().unwrap();
        assert_eq!(r.partial[&10].chunks.len(), 2);
        let mut records = records;
        records.push(line(4, cut("t10.dat")));
        let r = replay(&records).unwrap().unwrap();
        let chunks = &r.partial[&10].chunks;
        assert_eq!(chunks.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(chunks[&0].checkpoint.durable, stored);
        // The chunk moved by the run that cut is recorded again, after the kept one.
        records.push(line(5, at(2, 1, stored)));
        let r = replay(&records).unwrap().unwrap();
        assert_eq!(r.partial[&10].chunks.len(), 2);
        assert_eq!(r.partial[&10].chunks[&1].frames[0].offset, stored);
    }

    #[test]
    fn damaged_or_foreign_journals_are_refused_and_an_empty_one_is_none() {
        assert!(replay(&[]).unwrap().is_none());
        assert!(replay(&[b"{not json".to_vec()]).is_err());
        // A torn end is left out, and counted.
        let torn = replay(&[
            line(0, begin()),
            b"\0\0\0".to_vec(),
            line(1, chunk(1, 0, "t10.dat", 10)),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(torn.ignored, 2);
        assert!(torn.partial.is_empty());
        assert!(replay(&[line(0, Record::Started { run: 1, chunk: 0 })]).is_err());
        let foreign = Record::Chunk {
            run: 1,
            chunk: 2,
            oid: 10,
            file: "t10.dat".into(),
            frames: frame_list(&[entry(0)]),
            checkpoint: Checkpoint::default(),
            tail: None,
        };
        assert!(replay(&[line(0, begin()), line(1, foreign)]).is_err());
    }
}
