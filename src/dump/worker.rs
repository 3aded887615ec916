//! Data workers: each takes the next chunk (largest first), locks its table NOWAIT as pg_dump's
//! workers do, streams the rows with COPY, cuts them into frames of whole rows, and has the
//! frames compressed, hashed and appended off the async threads. One frame per worker is
//! compressed while the next is being read, so memory stays at about two frames per worker.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{pin_mut, StreamExt};
use tokio::task::JoinHandle;

use super::plan::{copy_sql, Chunk};
use crate::archive::frame::{hex, Codec, Encoder, Frame, FrameIndexEntry, RowBatcher};
use crate::archive::journal::{frame_list, Journal, Record};
use crate::archive::writer::{ArchiveWriter, DataFileWriter, FinishedDataFile};
use crate::pg::carrier;
use crate::pg::session::{describe, CatalogTable, Session};

/// What the workers share.
pub struct Shared {
    pub tables: Vec<CatalogTable>,
    pub codec: Codec,
    pub frame_size: usize,
    pub archive: Arc<ArchiveWriter>,
    /// The end frame every data file closes with, compressed once.
    end: Frame,
    /// The chunks left, with their numbers in the plan.
    queue: Mutex<VecDeque<(usize, Chunk)>>,
    /// The journal every finished chunk and table is recorded in.
    pub journal: Arc<Journal>,
    /// This run's number (1: the first; more: resumed).
    pub run: u32,
    /// Chunks an earlier run started and did not finish.
    started_before: HashSet<usize>,
    /// Chunks this run copied, and how many of them an earlier run had started.
    pub copied: AtomicUsize,
    pub redone: AtomicUsize,
    state: Vec<TableState>,
    stop: AtomicBool,
    /// `-v`: a line per chunk as it starts.
    pub verbose: bool,
    /// Frames and tables get the rows' digests (not `--no-digest`).
    pub digests: bool,
    /// The COPY settings of the sessions (`pg::session::COPY_SETTINGS`), once read.
    pub settings: Mutex<Option<Vec<String>>>,
}

#[derive(Default)]
struct TableState {
    chunks: usize,
    remaining: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
    workers: Mutex<BTreeSet<usize>>,
    writer: Mutex<Option<Arc<DataFileWriter>>>,
    finished: Mutex<Option<FinishedDataFile>>,
    /// When the first chunk started and the last one ended.
    span: Mutex<(Option<Instant>, Option<Instant>)>,
}

/// What happened to one table.
#[derive(Debug, Clone)]
pub struct TableResult {
    pub finished: FinishedDataFile,
    pub chunks: usize,
    pub workers: Vec<usize>,
    /// The most workers that copied this table at the same moment.
    pub max_at_once: usize,
    /// From the first chunk's start to the last chunk's end.
    pub elapsed: Duration,
}

/// Where a run starts: the plan's chunks, the ones left to copy, and the journal.
pub struct Start {
    pub all: Vec<Chunk>,
    /// Numbers (in `all`) of the chunks to copy, in order.
    pub todo: Vec<usize>,
    pub journal: Arc<Journal>,
    pub run: u32,
    pub started_before: HashSet<usize>,
}

impl Shared {
    pub fn new(
        tables: Vec<CatalogTable>,
        start: Start,
        codec: Codec,
        frame_size: usize,
        archive: Arc<ArchiveWriter>,
    ) -> Result<Shared> {
        let mut state: Vec<TableState> = (0..tables.len()).map(|_| TableState::default()).collect();
        for c in &start.all {
            state[c.table].chunks += 1;
        }
        let queue: VecDeque<(usize, Chunk)> = start
            .todo
            .iter()
            .map(|&i| (i, start.all[i].clone()))
            .collect();
        for (_, c) in &queue {
            *state[c.table].remaining.get_mut() += 1;
        }
        Ok(Shared {
            tables,
            codec,
            frame_size,
            archive,
            end: Frame::end(codec).context("could not compress the end frame")?,
            queue: Mutex::new(queue),
            journal: start.journal,
            run: start.run,
            started_before: start.started_before,
            copied: AtomicUsize::new(0),
            redone: AtomicUsize::new(0),
            state,
            stop: AtomicBool::new(false),
            verbose: false,
            digests: true,
            settings: Mutex::new(None),
        })
    }

    /// Makes every worker stop after its current chunk.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A table an earlier run finished: its data file is kept whole.
    pub fn keep_finished(&self, table: usize, finished: FinishedDataFile) {
        *self.state[table]
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(finished);
    }

    /// A table whose kept chunks were carried into `writer`: the rest goes there too.
    pub fn keep_partial(&self, table: usize, writer: DataFileWriter) {
        *self.state[table]
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(writer));
    }

    fn next_chunk(&self) -> Option<(usize, Chunk)> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn writer(&self, table: usize) -> Result<Arc<DataFileWriter>> {
        let mut slot = self.state[table]
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = slot.as_ref() {
            return Ok(w.clone());
        }
        let w = Arc::new(self.archive.data_file(
            self.tables[table].oid,
            self.run,
            self.tables[table].table_bytes,
            self.codec,
            self.digests,
        )?);
        *slot = Some(w.clone());
        Ok(w)
    }

    /// The per-table results, once every worker has finished without error (taken: call once).
    pub fn results(&self) -> Result<Vec<TableResult>> {
        self.state
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let finished = s
                    .finished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| {
                        anyhow!(
                            "internal error: the data of {} was not finished",
                            self.tables[i].display_name()
                        )
                    })?;
                Ok(TableResult {
                    finished,
                    chunks: s.chunks,
                    workers: s
                        .workers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .copied()
                        .collect(),
                    max_at_once: s.max_active.load(Ordering::SeqCst),
                    elapsed: match *s.span.lock().unwrap_or_else(|p| p.into_inner()) {
                        (Some(a), Some(b)) => b.saturating_duration_since(a),
                        _ => Duration::ZERO,
                    },
                })
            })
            .collect()
    }
}

/// One worker's loop, on a session that has imported the snapshot.
pub async fn run(n: usize, session: Arc<Session>, shared: Arc<Shared>) -> Result<()> {
    let mut locked = HashSet::new();
    let mut encoder = None;
    while let Some((id, chunk)) = shared.next_chunk() {
        let table = &shared.tables[chunk.table];
        {
            let (journal, run) = (shared.journal.clone(), shared.run);
            blocking(move || journal.write(Record::Started { run, chunk: id }, false)).await?;
        }
        shared.copied.fetch_add(1, Ordering::SeqCst);
        if shared.started_before.contains(&id) {
            shared.redone.fetch_add(1, Ordering::SeqCst);
        }
        let state = &shared.state[chunk.table];
        // The worker's own NOWAIT lock on a table it has not locked yet goes out in the same
        // round trip as the COPY (pipelined): a failed lock aborts the transaction, so the
        // COPY cannot run without it.
        let lock = locked.insert(table.oid).then_some(table);
        let writer = shared.writer(chunk.table)?;
        state
            .span
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get_or_insert_with(Instant::now);
        let task = match chunk.pages {
            Some((start, Some(end))) => {
                format!("{} pages {start}-{}", table.display_name(), end - 1)
            }
            Some((start, None)) => format!("{} pages {start}-end", table.display_name()),
            None => table.display_name(),
        };
        if shared.verbose {
            crate::progress::say(&format!("pgarc: worker {n}: dumping {task}"));
        }
        crate::progress::worker(n, Some(task));
        let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_active.fetch_max(now, Ordering::SeqCst);
        state
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n);
        let copied = copy_chunk(
            &session,
            lock,
            &copy_sql(table, &chunk),
            &writer,
            &shared,
            &mut encoder,
        )
        .await;
        state.active.fetch_sub(1, Ordering::SeqCst);
        state.span.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(Instant::now());
        let frames =
            copied.with_context(|| format!("worker {n}: copying {}", table.display_name()))?;
        // A chunk that may not be the table's last is recorded while it still counts as
        // remaining, so that no other worker can finish the file before the record is made.
        if state.remaining.load(Ordering::SeqCst) > 1 {
            let (journal, run, oid, w) = (
                shared.journal.clone(),
                shared.run,
                table.oid,
                writer.clone(),
            );
            blocking(move || record_chunk(&journal, run, id, oid, &w, &frames)).await?;
        }
        if state.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last chunk of the table: append the end frame, complete the file, record it.
            state
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (shared2, oid) = (shared.clone(), table.oid);
            let finished = blocking(move || {
                let finished = writer.finish(&shared2.end)?;
                shared2
                    .journal
                    .write(file_record(shared2.run, oid, &finished), true)?;
                Ok(finished)
            })
            .await?;
            *state.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(finished);
        }
        crate::progress::item_done();
    }
    crate::progress::worker(n, None);
    Ok(())
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::archive::Error> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .context("a storage task failed")??)
}

/// The journal's record of a finished data file.
pub fn file_record(run: u32, oid: u32, f: &FinishedDataFile) -> Record {
    Record::File {
        run,
        oid,
        file: f.rel.clone(),
        size: f.size,
        sha256: hex(&f.sha256),
        frames: frame_list(&f.index),
        rows: f.rows,
        raw_bytes: f.raw_bytes,
        rows_sum: f.rows_digest.map(|d| d.sum_hex()),
    }
}

/// Makes a chunk's frames durable and records them (format-spec tool.md §10): the file is
/// checkpointed, the bytes of a part still being filled go into a tail object, then the
/// record. Blocking.
pub fn record_chunk(
    journal: &Journal,
    run: u32,
    chunk: usize,
    oid: u32,
    writer: &DataFileWriter,
    frames: &[FrameIndexEntry],
) -> Result<(), crate::archive::Error> {
    let mut checkpoint = writer.checkpoint()?;
    let tail = std::mem::take(&mut checkpoint.tail);
    let tail = if tail.is_empty() {
        None
    } else {
        Some(journal.put_tail(tail)?)
    };
    journal.write(
        Record::Chunk {
            run,
            chunk,
            oid,
            file: writer.rel().to_string(),
            frames: frame_list(frames),
            checkpoint,
            tail,
        },
        true,
    )?;
    Ok(())
}

fn lock_error(e: &tokio_postgres::Error, table: &CatalogTable) -> anyhow::Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
        anyhow!(
            "could not obtain lock on table {}: another session holds or waits for a \
             conflicting lock (ALTER TABLE, TRUNCATE, VACUUM FULL, ...); run the dump again \
             when it is done",
            table.display_name()
        )
    } else {
        anyhow!(
            "cannot lock table {}: {}",
            table.display_name(),
            describe(e)
        )
    }
}

/// A frame being compressed and appended off the async threads; it gives back the encoder and
/// the batch's buffer.
/// The largest last batch of rows compressed on the worker's own task (see `copy_chunk`).
const SMALL_BATCH: usize = 64 << 10;

type Pending = JoinHandle<(
    Encoder,
    Vec<u8>,
    Result<FrameIndexEntry, crate::archive::Error>,
)>;

/// Copies one chunk; returns the index entries of its frames.
async fn copy_chunk(
    session: &Session,
    lock: Option<&CatalogTable>,
    sql: &str,
    writer: &Arc<DataFileWriter>,
    shared: &Shared,
    encoder: &mut Option<Encoder>,
) -> Result<Vec<FrameIndexEntry>> {
    let lock_nowait = async {
        match lock {
            Some(t) => {
                let sql = format!("LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT", t.qualified);
                Some((t, session.execute_bytes(&carrier::to_bytes(&sql)).await))
            }
            None => None,
        }
    };
    // The statement names the table in the database's encoding: prepared as bytes.
    let copy_out = async {
        let statement = session
            .prepare_bytes(&carrier::to_bytes(sql), false)
            .await?;
        session.client.copy_out(&statement).await
    };
    let (locked, stream) = tokio::join!(lock_nowait, copy_out);
    if let Some((t, Err(e))) = locked {
        if e.as_db_error().is_some() {
            return Err(lock_error(&e, t));
        }
        bail!("{}", session.explain(&e).await);
    }
    let stream = match stream {
        Ok(s) => s,
        Err(e) => bail!("{}", session.explain(&e).await),
    };
    pin_mut!(stream);
    let mut idle = match encoder.take() {
        Some(e) => Some(e),
        None => Some(Encoder::new(shared.codec).context("could not start the compressor")?),
    };
    let mut batcher = RowBatcher::new(shared.frame_size);
    let mut pending: Option<Pending> = None;
    let mut frames = Vec::new();
    let submit = |mut encoder: Encoder, batch: Vec<u8>| {
        crate::progress::add(batch.len() as u64);
        let writer = writer.clone();
        tokio::task::spawn_blocking(move || {
            let result = writer.append_rows(&batch, &mut encoder);
            (encoder, batch, result)
        })
    };

    while let Some(row) = stream.next().await {
        let row = match row {
            Ok(row) => row,
            Err(e) => bail!("{}", session.explain(&e).await),
        };
        if let Some(batch) = batcher.push(&row) {
            let encoder = ready(&mut pending, &mut idle, &mut batcher, &mut frames).await?;
            pending = Some(submit(encoder, batch));
        }
    }
    if let Some(batch) = batcher.finish() {
        let mut encoder = ready(&mut pending, &mut idle, &mut batcher, &mut frames).await?;
        // A table whose rows fit in one small batch (most tables of a database with
        // thousands of them) is compressed and written on this task: a hand-off to a
        // blocking thread and back costs more than compressing a few kilobytes.
        if batch.len() <= SMALL_BATCH {
            crate::progress::add(batch.len() as u64);
            frames.push(writer.append_rows(&batch, &mut encoder)?);
            idle = Some(encoder);
        } else {
            pending = Some(submit(encoder, batch));
        }
    }
    *encoder = Some(ready(&mut pending, &mut idle, &mut batcher, &mut frames).await?);
    Ok(frames)
}

/// The encoder, once the frame in flight (if any) is written: at most one frame per worker is
/// being compressed while the next is read.
async fn ready(
    pending: &mut Option<Pending>,
    idle: &mut Option<Encoder>,
    batcher: &mut RowBatcher,
    frames: &mut Vec<FrameIndexEntry>,
) -> Result<Encoder> {
    if let Some(handle) = pending.take() {
        let (encoder, buf, result) = handle.await.context("a compression task failed")?;
        frames.push(result?);
        batcher.recycle(buf);
        return Ok(encoder);
    }
    idle.take()
        .ok_or_else(|| anyhow!("internal error: the worker's encoder went missing"))
}
