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
use crate::archive::frame::{Codec, Encoder, Frame, RowBatcher};
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
    queue: Mutex<VecDeque<Chunk>>,
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

impl Shared {
    pub fn new(
        tables: Vec<CatalogTable>,
        chunks: Vec<Chunk>,
        codec: Codec,
        frame_size: usize,
        archive: Arc<ArchiveWriter>,
    ) -> Result<Shared> {
        let mut state: Vec<TableState> = (0..tables.len()).map(|_| TableState::default()).collect();
        for c in &chunks {
            state[c.table].chunks += 1;
            *state[c.table].remaining.get_mut() += 1;
        }
        Ok(Shared {
            tables,
            codec,
            frame_size,
            archive,
            end: Frame::end(codec).context("could not compress the end frame")?,
            queue: Mutex::new(chunks.into()),
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

    fn next_chunk(&self) -> Option<Chunk> {
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
    while let Some(chunk) = shared.next_chunk() {
        let table = &shared.tables[chunk.table];
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
        copied.with_context(|| format!("worker {n}: copying {}", table.display_name()))?;
        crate::progress::item_done();
        if state.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last chunk of the table: append the end frame.
            state
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            // The end frame is a few bytes and the hash is finished in memory: done here,
            // without a hand-off to a blocking thread (thousands of small tables).
            let finished = writer.finish(&shared.end)?;
            *state.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(finished);
        }
    }
    crate::progress::worker(n, None);
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

type Pending = JoinHandle<(Encoder, Vec<u8>, Result<(), crate::archive::Error>)>;

async fn copy_chunk(
    session: &Session,
    lock: Option<&CatalogTable>,
    sql: &str,
    writer: &Arc<DataFileWriter>,
    shared: &Shared,
    encoder: &mut Option<Encoder>,
) -> Result<()> {
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
            let encoder = ready(&mut pending, &mut idle, &mut batcher).await?;
            pending = Some(submit(encoder, batch));
        }
    }
    if let Some(batch) = batcher.finish() {
        let mut encoder = ready(&mut pending, &mut idle, &mut batcher).await?;
        // A table whose rows fit in one small batch (most tables of a database with
        // thousands of them) is compressed and written on this task: a hand-off to a
        // blocking thread and back costs more than compressing a few kilobytes.
        if batch.len() <= SMALL_BATCH {
            crate::progress::add(batch.len() as u64);
            writer.append_rows(&batch, &mut encoder)?;
            idle = Some(encoder);
        } else {
            pending = Some(submit(encoder, batch));
        }
    }
    *encoder = Some(ready(&mut pending, &mut idle, &mut batcher).await?);
    Ok(())
}

/// The encoder, once the frame in flight (if any) is written: at most one frame per worker is
/// being compressed while the next is read.
async fn ready(
    pending: &mut Option<Pending>,
    idle: &mut Option<Encoder>,
    batcher: &mut RowBatcher,
) -> Result<Encoder> {
    if let Some(handle) = pending.take() {
        let (encoder, buf, result) = handle.await.context("a compression task failed")?;
        result?;
        batcher.recycle(buf);
        return Ok(encoder);
    }
    idle.take()
        .ok_or_else(|| anyhow!("internal error: the worker's encoder went missing"))
}
