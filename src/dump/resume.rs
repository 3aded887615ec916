//! `pgarc dump --resume` (format-spec tool.md §10): what an interrupted dump left, read back
//! from its journal, checked, and carried into this run. A table whose data file an earlier run
//! finished is kept as it is; the recorded chunks of a table it was still copying are kept, its
//! file continued in place (a directory) or rewritten into a new file named for this run (an
//! object store), and the rest of its chunks are copied again. Frames recorded after the last
//! barrier are re-checked against their SHA-256. Blocking code: call it off the async threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan::Chunk;
use super::scope::DumpSelection;
use crate::archive::frame::{unhex, Codec, FrameIndexEntry};
use crate::archive::journal::{
    frame_list, replay, Journal, PartialFile, PlannedChunk, Record, Replay, JOURNAL, SCHEMA_TOC,
};
use crate::archive::manifest::MANIFEST_FILE;
use crate::archive::store::{Location, Stat, Store};
use crate::archive::writer::{
    is_data_file_name, ArchiveWriter, DataFileWriter, FinishedDataFile, KeptPrefix, FRAMES_DIR,
};
use crate::archive::{digest::RowsDigest, TOC_FILE};
use crate::pg::session::CatalogTable;

/// The options that shape an archive, as the journal's first record keeps them: a resumed run
/// takes them from there, so that its part of the archive is made as the first run's was.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    pub compression: String,
    pub frame_size: usize,
    pub split_size: u64,
    pub digests: bool,
    pub selection: DumpSelection,
}

impl Shaping {
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn from_value(v: &serde_json::Value) -> Result<Shaping> {
        serde_json::from_value(v.clone())
            .map_err(|e| anyhow!("the journal's options are not pgarc's ({e})"))
    }

    pub fn codec(&self) -> Result<Codec> {
        Codec::parse(&self.compression)
            .map_err(|e| anyhow!("the journal's compression {:?}: {e}", self.compression))
    }
}

/// Reads the journal of the unfinished archive at `out`. Refuses a complete archive (and
/// removes a journal its last run left behind), an archive without a journal, and a damaged
/// journal.
pub fn load(store: &dyn Store, out: &Location) -> Result<Replay> {
    let records = store.log_read(JOURNAL)?;
    if store.stat(MANIFEST_FILE)? != Stat::Absent {
        let mut said = String::new();
        if !records.is_empty() {
            store.log_remove(JOURNAL)?;
            said = "; the journal its last run left behind was removed".into();
        }
        bail!(
            "the archive in {out} is complete ({MANIFEST_FILE} is there): there is nothing to \
             resume{said}"
        );
    }
    match replay(&records) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => bail!(
            "{out} has no pgarc journal: it is not a dump pgarc can resume (it was stopped \
             before it planned anything, or it is no pgarc dump); remove it and dump again"
        ),
        Err(e) => bail!(
            "the journal in {out} is damaged ({e}): it cannot be resumed; remove it and dump \
             again"
        ),
    }
}

/// The journal's plan as chunks of `tables`, refused when the tables differ from the ones
/// the interrupted run planned (the same snapshot and options give the same ones).
pub fn plan_chunks(replay: &Replay, tables: &[CatalogTable]) -> Result<Vec<Chunk>> {
    let by_oid: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let planned: HashSet<u32> = replay.chunks.iter().map(|c| c.oid).collect();
    let now: HashSet<u32> = by_oid.keys().copied().collect();
    if planned != now {
        let mut changed: Vec<String> = tables
            .iter()
            .filter(|t| !planned.contains(&t.oid))
            .map(|t| format!("{} (new)", t.display_name()))
            .collect();
        changed.extend(
            planned
                .difference(&now)
                .map(|oid| format!("table OID {oid} (gone)")),
        );
        changed.sort();
        bail!(
            "the tables to dump are not the ones the interrupted run planned: {}; it cannot be \
             resumed: dump again into a new directory",
            changed.join(", ")
        );
    }
    Ok(replay
        .chunks
        .iter()
        .map(|c| {
            let table = by_oid[&c.oid];
            Chunk {
                table,
                pages: c.pages,
                estimate: tables[table].table_bytes,
            }
        })
        .collect())
}

/// The plan as the journal records it.
pub fn planned(chunks: &[Chunk], tables: &[CatalogTable]) -> Vec<PlannedChunk> {
    chunks
        .iter()
        .map(|c| PlannedChunk {
            oid: tables[c.table].oid,
            pages: c.pages,
        })
        .collect()
}

/// What an earlier run left that this one keeps.
pub struct Kept {
    pub finished: Vec<(usize, FinishedDataFile)>,
    pub partial: Vec<(usize, DataFileWriter)>,
    /// Chunks kept (their numbers in the plan).
    pub chunks: HashSet<usize>,
}

/// How a resumed run writes its data files.
pub struct Carry<'a> {
    pub archive: &'a ArchiveWriter,
    pub journal: &'a Journal,
    pub run: u32,
    pub codec: Codec,
    pub digests: bool,
}

/// Keeps what the journal says is done: finished data files (their sizes checked) as they are,
/// recorded chunks of unfinished ones carried into this run's new files. What cannot be kept
/// (a file missing or of another size, an upload that cannot be completed) is copied again,
/// with a warning.
pub fn keep(replay: &Replay, tables: &[CatalogTable], plan: &[Chunk], c: &Carry) -> Result<Kept> {
    let store = c.archive.store().clone();
    let by_oid: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let mut kept = Kept {
        finished: Vec::new(),
        partial: Vec::new(),
        chunks: HashSet::new(),
    };
    let names: Vec<(&u32, &str)> = replay
        .files
        .iter()
        .map(|(oid, f)| (oid, f.file.as_str()))
        .collect();
    let stats = store.stat_all(&names.iter().map(|(_, n)| *n).collect::<Vec<_>>());
    for ((oid, _), stat) in names.into_iter().zip(stats) {
        let f = &replay.files[oid];
        let table = by_oid[oid];
        // A file recorded after the last barrier may not have reached the disk whole before
        // the machine stopped: its bytes are checked.
        let unchecked = |size: u64| {
            size == f.size
                && (f.durable
                    || same_bytes(store.as_ref(), &f.file, f.size, &f.sha256).unwrap_or(false))
        };
        match stat? {
            Stat::File(size) if unchecked(size) => {}
            other => {
                crate::progress::say(&format!(
                    "pgarc: warning: the data file {} of table {} that the journal records as \
                     complete is {}; the table is copied again",
                    f.file,
                    tables[table].display_name(),
                    match other {
                        Stat::File(n) if n == f.size => "not what it recorded".into(),
                        Stat::File(n) => format!("{n} bytes long, not {}", f.size),
                        _ => "missing".into(),
                    }
                ));
                continue;
            }
        }
        kept.finished.push((table, finished_file(f)?));
        kept.chunks.extend(
            plan.iter()
                .enumerate()
                .filter(|(_, ch)| ch.table == table)
                .map(|(i, _)| i),
        );
    }
    let mut partial: Vec<(&u32, &PartialFile)> = replay.partial.iter().collect();
    partial.sort_by_key(|(oid, _)| **oid);
    for (oid, p) in partial {
        let table = by_oid[oid];
        match carry_table(*oid, &tables[table], p, c) {
            Ok(writer) => {
                kept.chunks.extend(p.chunks.keys().copied());
                kept.partial.push((table, writer));
            }
            Err(e) => crate::progress::say(&format!(
                "pgarc: warning: the chunks of table {} that the interrupted run wrote cannot be \
                 kept ({e:#}); they are copied again",
                tables[table].display_name()
            )),
        }
    }
    finish_whole(&mut kept, tables, plan, c)?;
    Ok(kept)
}

/// A table all of whose chunks are kept but whose file no run finished (the run was killed
/// after two workers recorded its last two chunks at once and before either finished the
/// file): no worker would come to it, so it is finished here and recorded.
fn finish_whole(kept: &mut Kept, tables: &[CatalogTable], plan: &[Chunk], c: &Carry) -> Result<()> {
    let end = crate::archive::frame::Frame::end(c.codec).context("compressing the end frame")?;
    for (table, writer) in std::mem::take(&mut kept.partial) {
        let left = plan
            .iter()
            .enumerate()
            .any(|(i, ch)| ch.table == table && !kept.chunks.contains(&i));
        if left {
            kept.partial.push((table, writer));
            continue;
        }
        let finished = writer.finish(&end)?;
        let record = super::worker::file_record(c.run, tables[table].oid, &finished);
        c.journal.write(record, true)?;
        kept.finished.push((table, finished));
    }
    Ok(())
}

/// Whether `name` has `size` bytes whose SHA-256 is `sha256` (lower-case hex).
pub fn same_bytes(store: &dyn Store, name: &str, size: u64, sha256: &str) -> Result<bool> {
    use crate::archive::reader::{read_whole, Decode};
    let whole = read_whole(store, name, Decode::No)?;
    Ok(whole.size == size && whole.sha256 == sha256)
}

/// The schema an earlier run captured, if it is whole: pg_dump's toc.dat and its files
/// (re-checked when recorded after the last barrier).
pub fn kept_schema(
    replay: &Replay,
    archive: &ArchiveWriter,
) -> Result<
    Option<(
        crate::archive::toc::Toc,
        Vec<crate::archive::manifest::FileRecord>,
    )>,
> {
    let Some((toc, files)) = &replay.schema else {
        return Ok(None);
    };
    let store = archive.store();
    if !replay.schema_durable {
        for f in files {
            if !same_bytes(store.as_ref(), &f.path, f.size, &f.sha256).unwrap_or(false) {
                return Ok(None);
            }
        }
    }
    match archive.read_schema_toc(toc) {
        Ok(toc) => Ok(Some((toc, files.clone()))),
        Err(_) if !replay.schema_durable => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A finished data file as the journal records it.
fn finished_file(f: &crate::archive::journal::DoneFile) -> Result<FinishedDataFile> {
    let sha256 = unhex::<32>(&f.sha256).context("the journal's checksum of a data file")?;
    let rows_digest = match &f.rows_sum {
        Some(sum) => Some(
            RowsDigest::from_parts(sum, f.rows, f.raw_bytes)
                .context("the journal's digest of a data file")?,
        ),
        None => None,
    };
    Ok(FinishedDataFile {
        rel: f.file.clone(),
        size: f.size,
        sha256,
        index: f.frames.clone(),
        rows: f.rows,
        raw_bytes: f.raw_bytes,
        rows_digest,
    })
}

/// Carries the recorded chunks of a table an earlier run was copying into this run: in place
/// where the store can ([`continue_in_place`]), else rewritten into this run's new data file,
/// recorded there, and the old file removed.
fn carry_table(oid: u32, t: &CatalogTable, p: &PartialFile, c: &Carry) -> Result<DataFileWriter> {
    let store = c.archive.store().clone();
    let checkpoint = p.checkpoint();
    store.recover(&p.file, &checkpoint)?;
    if let Some(writer) = continue_in_place(oid, p, c)? {
        return Ok(writer);
    }
    let writer = c
        .archive
        .data_file(oid, c.run, t.table_bytes, c.codec, c.digests)?;
    match carry_frames(oid, p, &writer, c) {
        Ok(()) => Ok(writer),
        Err(e) => {
            // The table is copied again into a file of this name: this one goes.
            if let Err(gone) = writer.discard(store.as_ref()) {
                crate::progress::say(&format!(
                    "pgarc: warning: could not remove a partly carried data file ({gone})"
                ));
            }
            Err(e)
        }
    }
}

/// The most bytes of recorded frames past the first gap (the frames of chunks the killed run
/// had not finished) that [`continue_in_place`] holds in memory to move; a table with more is
/// rewritten instead. With `-j` workers about `j` chunks' frames are there.
const MOVE_LIMIT: u64 = 128 << 20;

/// The recorded frames of `p`, by offset: (offset, chunk, index in the chunk's frames).
fn frames_by_offset(p: &PartialFile) -> Vec<(u64, usize, usize)> {
    let mut order: Vec<(u64, usize, usize)> = Vec::new();
    for (&chunk, k) in &p.chunks {
        for (i, e) in k.frames.iter().enumerate() {
            order.push((e.offset, chunk, i));
        }
    }
    order.sort_unstable();
    order
}

/// A frame read back from an earlier run's file: recorded after the last barrier, it is
/// checked against its SHA-256 (before it, it was flushed before the barrier was written).
fn check_frame(p: &PartialFile, chunk: usize, e: &FrameIndexEntry, bytes: &[u8]) -> Result<()> {
    if !p.chunks[&chunk].durable && Sha256::digest(bytes).as_slice() != e.sha256 {
        bail!(
            "{}: the frame at byte {} differs from the journal's SHA-256",
            p.file,
            e.offset
        );
    }
    Ok(())
}

/// Continues the old file of a directory archive in place instead of rewriting it: the
/// recorded frames that fill it from its start without a gap stay (read once, for the file's
/// hash), a `cut` record voids the rest and the file is cut after them, and the recorded
/// frames that were past the first gap are appended again and their chunks recorded again.
/// `None`: the store cannot continue a file (an object store), nothing starts the file, or
/// too much would move.
fn continue_in_place(oid: u32, p: &PartialFile, c: &Carry) -> Result<Option<DataFileWriter>> {
    // An object store cannot cut an object: its files are rewritten.
    let object_store = !c.archive.store().can_reopen();
    let order = frames_by_offset(p);
    let frame = |&(_, chunk, i): &(u64, usize, usize)| (chunk, p.chunks[&chunk].frames[i]);
    let mut len = 0u64;
    let mut split = 0;
    for o in &order {
        if o.0 != len {
            break;
        }
        len += frame(o).1.stored;
        split += 1;
    }
    let moved: u64 = order[split..].iter().map(|o| frame(o).1.stored).sum();
    if object_store || split == 0 || moved > MOVE_LIMIT {
        return Ok(None);
    }
    let store = c.archive.store().clone();
    let mut reader = store.open(&p.file, 0, None)?;
    let mut prefix = KeptPrefix::new(c.digests);
    let mut bytes = Vec::new();
    for o in &order[..split] {
        let (chunk, e) = frame(o);
        bytes.resize(e.stored as usize, 0);
        reader
            .read_exact(&mut bytes)
            .with_context(|| format!("{}: reading the frame at byte {}", p.file, e.offset))?;
        check_frame(p, chunk, &e, &bytes)?;
        prefix.add(&bytes, &e)?;
    }
    let mut at = len;
    let mut moving = Vec::new();
    for o in &order[split..] {
        let (chunk, e) = frame(o);
        if e.offset < at {
            bail!("{}: frames overlap at byte {}", p.file, e.offset);
        }
        std::io::copy(&mut (&mut reader).take(e.offset - at), &mut std::io::sink())?;
        let mut bytes = vec![0u8; e.stored as usize];
        reader
            .read_exact(&mut bytes)
            .with_context(|| format!("{}: reading the frame at byte {}", p.file, e.offset))?;
        check_frame(p, chunk, &e, &bytes)?;
        at = e.offset + e.stored;
        moving.push((chunk, e, bytes));
    }
    drop(reader);
    // Durable before the file is cut: a later resume must not read moved frames where they were.
    let cut = Record::Cut {
        run: c.run,
        oid,
        file: p.file.clone(),
        at: len,
    };
    c.journal.write(cut, true)?;
    let Some(writer) = c.archive.continue_data_file(&p.file, c.codec, prefix)? else {
        return Ok(None);
    };
    // Each chunk with a frame past the cut is recorded again, with all its frames.
    let mut carried: BTreeMap<usize, Vec<FrameIndexEntry>> = BTreeMap::new();
    for (chunk, _, _) in &moving {
        carried.entry(*chunk).or_insert_with(|| {
            p.chunks[chunk]
                .frames
                .iter()
                .filter(|e| e.offset + e.stored <= len)
                .copied()
                .collect()
        });
    }
    for (chunk, e, bytes) in moving {
        let entry = writer.append_stored(&bytes, &e)?;
        carried.entry(chunk).or_default().push(entry);
    }
    record_carried(oid, &writer, carried, c)?;
    Ok(Some(writer))
}

/// Records `carried` (chunk: its frames in `writer`'s file), one flush for all of them, made
/// by the last record's write.
fn record_carried(
    oid: u32,
    writer: &DataFileWriter,
    carried: BTreeMap<usize, Vec<FrameIndexEntry>>,
    c: &Carry,
) -> Result<()> {
    let mut checkpoint = writer.checkpoint()?;
    let tail = std::mem::take(&mut checkpoint.tail);
    let tail = (!tail.is_empty())
        .then(|| c.journal.put_tail(tail))
        .transpose()?;
    let last = carried.keys().next_back().copied();
    for (chunk, frames) in carried {
        c.journal.write(
            Record::Chunk {
                run: c.run,
                chunk,
                oid,
                file: writer.rel().to_string(),
                frames: frame_list(&frames),
                checkpoint: checkpoint.clone(),
                tail: tail.clone(),
            },
            Some(chunk) == last,
        )?;
    }
    Ok(())
}

/// Appends the recorded chunks' frames of the old file `p` to `writer`, records them under
/// it, and removes the old file.
fn carry_frames(oid: u32, p: &PartialFile, writer: &DataFileWriter, c: &Carry) -> Result<()> {
    let store = c.archive.store().clone();
    let checkpoint = p.checkpoint();
    let durable = checkpoint.durable;
    let order = frames_by_offset(p);
    let mut reader: Box<dyn Read + Send> = if durable > 0 {
        store.open(&p.file, 0, Some(durable))?
    } else {
        Box::new(std::io::empty())
    };
    let mut at = 0u64;
    let mut tails: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut carried: BTreeMap<usize, Vec<FrameIndexEntry>> =
        p.chunks.keys().map(|&k| (k, Vec::new())).collect();
    let damaged = |what: String| anyhow!("{}: {what}", p.file);
    for (offset, chunk, i) in order {
        let e = &p.chunks[&chunk].frames[i];
        let end = offset + e.stored;
        let mut bytes = vec![0u8; e.stored as usize];
        let below = end.min(durable).saturating_sub(offset) as usize;
        if below > 0 {
            if offset < at {
                return Err(damaged(format!("frames overlap at byte {offset}")));
            }
            std::io::copy(&mut (&mut reader).take(offset - at), &mut std::io::sink())?;
            reader
                .read_exact(&mut bytes[..below])
                .with_context(|| format!("{}: reading the frame at byte {offset}", p.file))?;
            at = offset + below as u64;
        }
        if below < bytes.len() {
            let k = &p.chunks[&chunk];
            let tail = match tails.get(&chunk) {
                Some(t) => t,
                None => {
                    let name = k
                        .tail
                        .as_deref()
                        .ok_or_else(|| damaged(format!("the frame at byte {offset} is past the checkpoint and no tail holds it")))?;
                    let mut t = Vec::new();
                    store.open(name, 0, None)?.read_to_end(&mut t)?;
                    tails.entry(chunk).or_insert(t)
                }
            };
            let from = (offset + below as u64)
                .checked_sub(k.checkpoint.durable)
                .ok_or_else(|| damaged(format!("the tail of the frame at byte {offset}")))?
                as usize;
            let rest = bytes.len() - below;
            let src = tail.get(from..from + rest).ok_or_else(|| {
                damaged(format!("the tail is short of the frame at byte {offset}"))
            })?;
            bytes[below..].copy_from_slice(src);
        }
        check_frame(p, chunk, e, &bytes)?;
        let entry = writer.append_stored(&bytes, e)?;
        carried.entry(chunk).or_default().push(entry);
    }
    drop(reader);
    // Once they are on stable storage, the superseded file goes.
    record_carried(oid, writer, carried, c)?;
    let gone = durable == 0 && store.stat(&p.file)? == Stat::Absent;
    if let Err(e) = (!gone).then(|| store.delete(&p.file)).transpose() {
        crate::progress::say(&format!(
            "pgarc: warning: could not remove the superseded data file ({e}); it is removed \
             before the manifest is written"
        ));
    }
    Ok(())
}

/// Before the schema is captured again: removes what an interrupted capture left (pg_dump's
/// local directory, files it had already moved into the archive, its kept toc.dat).
pub fn clear_schema(store: &Arc<dyn Store>, archive: &ArchiveWriter) -> Result<()> {
    let dir = archive.schema_dir()?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for name in store.list()? {
        if name == SCHEMA_TOC || (!name.contains('/') && !is_data_file_name(&name)) {
            store.delete(&name)?;
        }
    }
    Ok(())
}

/// Before the archive is assembled again: removes what an interrupted assembly wrote (toc.dat,
/// frame indexes) and data files no table uses any more. `keep` are the data files in use.
pub fn clear_assembly(store: &dyn Store, keep: &HashSet<String>) -> Result<()> {
    for name in store.list()? {
        let stale = name == TOC_FILE
            || name.starts_with(&format!("{FRAMES_DIR}/"))
            || (is_data_file_name(&name) && !keep.contains(&name));
        if stale {
            store.delete(&name)?;
        }
    }
    Ok(())
}
