//! `pgarc dump`: the planner ([`plan`]), the schema capture by the stock pg_dump ([`schema`])
//! and the data workers ([`worker`]), put together here in the order of format-spec/tool.md §1:
//!
//! 1. the snapshot holder opens, exports (or imports) the snapshot, reads the catalog and
//!    locks every table;
//! 2. pg_dump captures the schema under the snapshot while N workers, each having imported it,
//!    copy the rows into staged data files;
//! 3. the TOC gets one TABLE DATA entry per table, data files get their final names, frame
//!    indexes and toc.dat are written;
//! 4. the holder proves it is still alive and commits; the manifest is written last.
//!
//! If the holder's session ends at any point, the dump stops with "snapshot lost" and no
//! manifest.

pub mod plan;
pub mod resume;
pub mod schema;
pub mod scope;
pub mod worker;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

use crate::archive::frame::Codec;
use crate::archive::manifest::{
    rfc3339_utc, CopySettings, DumpOptionsRecord, FileRecord, Manifest, TableRecord, FORMAT,
    FORMAT_1, FORMAT_2, MANIFEST_FILE,
};
use crate::archive::store::{Location, Store};
use crate::archive::writer::ArchiveWriter;
use crate::pg::conn::ConnParams;
use crate::pg::session::ConnectFailed;
use crate::pg::session::{catalog_tables, open_worker, relations_with_data, SnapshotHolder};
use crate::pg::tools::find_pg_dump;

/// The default bound on the data per ctid-range chunk of a dump into a directory. Measured on
/// this project's 2-core machine, `-j 2`, a 592 MB table (2.5 M rows of text, numeric,
/// timestamptz, jsonb, bytea), two runs each: no split 3.3-3.7 s, 512MB 3.5-3.7 s, 256MB
/// 3.2-3.5 s, 128MB 3.1-3.3 s, 64MB 3.2-3.4 s, 32MB 3.1-3.2 s: from 128MB down the copy is as
/// fast. A kill loses the chunk each worker was copying (`dump --resume`, tool.md §11), so the
/// chunk is what a resume redoes: on the bench's skewed database (1.2 GB table, `-j 2`, killed
/// at half the dump's time), uninterrupted 7.07-7.21 s at 128MB and 7.03-7.16 s at 32MB, the
/// killed and resumed total 1.18-1.20 times that at 128MB, 1.09-1.13 at 64MB, 1.07-1.09 at
/// 32MB.
pub const DEFAULT_SPLIT_SIZE: u64 = 32 << 20;

/// The default for a dump into an object store: there the end of every chunk of a split table
/// also uploads the part being filled (up to 5 MiB, the journal's tail, tool.md §11.1), which
/// bigger chunks make rarer.
pub const DEFAULT_SPLIT_SIZE_S3: u64 = 128 << 20;

/// What `pgarc dump` was asked to do.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub conn: ConnParams,
    /// `-f`: a directory or `s3://BUCKET/PREFIX`.
    pub out: Location,
    /// Plain HTTP to an object store that is not on loopback (`--s3-allow-http`).
    pub allow_http: bool,
    pub jobs: usize,
    /// `-Z`; None: the default for the schema's pg_dump ([`default_codec`]).
    pub codec: Option<Codec>,
    pub snapshot: Option<String>,
    pub split_size: u64,
    pub frame_size: usize,
    /// `--pg-dump` or `PGARC_PG_DUMP`, with the name of where it came from.
    pub pg_dump: Option<(PathBuf, &'static str)>,
    /// pg_dump's selection and content options.
    pub selection: scope::DumpSelection,
    /// `--report FILE`: the JSON report, written once the archive is complete.
    pub report: Option<PathBuf>,
    /// Content digests of every frame and table (format 3); off with `--no-digest`.
    pub digests: bool,
    /// `--resume`: continue the unfinished dump in `out` (its journal gives the snapshot and
    /// the options that shape the archive).
    pub resume: bool,
}

/// The end-of-run summary.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    pub out: PathBuf,
    pub database: String,
    pub snapshot_id: String,
    pub tables: usize,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub elapsed: Duration,
    pub jobs: usize,
    pub codec: Codec,
    /// Tables copied in several chunks: name, chunks, workers used, most at once.
    pub split: Vec<(String, usize, usize, usize)>,
    /// Tables larger than --split-size copied whole because the server predates TID range
    /// scans (PostgreSQL 14): the server version, and how many.
    pub unsplit: Option<(String, usize)>,
    /// The pg_restore releases that read the archive.
    pub readers: crate::archive::compat::Readers,
    /// How much of the work earlier runs did (a resumed dump).
    pub resumed: Option<crate::report::ResumeReport>,
}

impl fmt::Display for DumpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        writeln!(
            f,
            "pgarc: dumped database {:?} to {} (snapshot {})",
            self.database,
            self.out.display(),
            self.snapshot_id
        )?;
        writeln!(
            f,
            "  {} tables, {} rows, {} raw, {} stored ({}), in {:.1} s with {} worker{}: {}/s",
            self.tables,
            self.rows,
            crate::run::human(self.raw_bytes),
            crate::run::human(self.stored_bytes),
            self.codec,
            secs,
            self.jobs,
            if self.jobs == 1 { "" } else { "s" },
            crate::run::human((self.raw_bytes as f64 / secs) as u64)
        )?;
        writeln!(f, "  readable by {} (and by pgarc)", self.readers)?;
        if let Some(r) = &self.resumed {
            writeln!(
                f,
                "  resumed (run {}): {} of {} chunks kept from earlier runs, {} copied by this \
                 run ({} of them begun by an earlier run and copied again)",
                r.run,
                r.kept,
                r.kept + r.done,
                r.done,
                r.redone
            )?;
        }
        for (name, chunks, workers, at_once) in &self.split {
            writeln!(
                f,
                "  split table {name}: {chunks} chunks, copied by {workers} workers, {at_once} at once"
            )?;
        }
        if let Some((version, n)) = &self.unsplit {
            writeln!(
                f,
                "  no ctid split: server {version} has no TID range scans (PostgreSQL 14 and \
                 newer); {n} table{} larger than --split-size copied whole by one worker each",
                if *n == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// The gzip level of the default codec for pg_dump 15 and older (see [`default_codec`]).
pub const DEFAULT_GZIP_LEVEL: u32 = 3;

/// The codec without `-Z`: one that the pg_restore of the same major version as the schema's
/// pg_dump reads, so that the archive needs no newer tool than the one that wrote its schema.
/// zstd (archive version 1.15, pg_restore 16 and newer) from pg_dump 16 on; gzip before,
/// whose archive version is pg_dump's own. zstd at level 1: the dump is bound by the
/// server's COPY there. gzip at level 3: measured on PostgreSQL 15, `-j 2`, a 543 MB table
/// (bench/RESULTS.md, issue 16), gzip:1 took 3.5 s for 205 MB, gzip:3 4.8 s for 141 MB,
/// gzip:6 6.5 s for 136 MB, pg_dump 11.6 s for 142 MB: level 3 gives pg_dump's size in well
/// under half its time, where level 1 is 45 % larger.
pub fn default_codec(pg_dump_major: u32) -> Codec {
    if pg_dump_major >= 16 {
        Codec::Zstd(1)
    } else {
        Codec::Gzip(DEFAULT_GZIP_LEVEL)
    }
}

/// The message of a dump stopped by a signal before its manifest was written.
fn interrupted(signal: &'static str, out: &Location) -> crate::run::Interrupted {
    crate::run::Interrupted {
        signal,
        what: format!(
            "the dump stopped and the archive in {out} is incomplete (no {MANIFEST_FILE}): \
             remove it"
        ),
    }
}

/// Runs a dump. On error, and when SIGINT or SIGTERM stops it, the output directory has no
/// manifest; pg_dump is killed and every session closed when the pipeline is dropped.
pub async fn run(opts: DumpOptions) -> Result<DumpSummary> {
    let out = opts.out.clone();
    let committing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut signals = crate::run::Signals::new()?;
    let store = {
        let (out, allow_http) = (opts.out.clone(), opts.allow_http);
        tokio::task::spawn_blocking(move || crate::s3::open(&out, allow_http))
            .await
            .context("the storage task failed")??
    };
    let pipeline = run_pipeline(opts, store.clone(), committing.clone());
    tokio::pin!(pipeline);
    let signal = tokio::select! {
        biased;
        signal = signals.recv() => signal,
        result = &mut pipeline => {
            if result.is_err() {
                abandon(&store).await;
                // A Ctrl-C reaches pg_dump too, which may fail before our handler runs.
                if let Ok(signal) =
                    tokio::time::timeout(Duration::from_millis(300), signals.recv()).await
                {
                    return Err(interrupted(signal, &out).into());
                }
            }
            return result;
        }
    };
    if committing.load(std::sync::atomic::Ordering::SeqCst) {
        // The snapshot holder has committed and the manifest is being written: a moment
        // from now the archive is complete, so finishing is the honest outcome.
        return pipeline.await;
    }
    abandon(&store).await;
    Err(interrupted(signal, &out).into())
}

/// Aborts the uploads of a dump that failed or was interrupted (off the async threads).
async fn abandon(store: &Arc<dyn Store>) {
    let store = store.clone();
    let _ = tokio::task::spawn_blocking(move || store.abandon()).await;
}

/// `e`, saying that the archive is incomplete.
fn incomplete(out: &Location, e: anyhow::Error) -> anyhow::Error {
    anyhow!("{e:#}; the archive in {out} is incomplete (no {MANIFEST_FILE}): remove it")
}

/// The dump in the order of format-spec/tool.md §1: the holder and the plan, the copy beside the
/// schema capture, then assembly and the manifest.
async fn run_pipeline(
    mut opts: DumpOptions,
    store: Arc<dyn Store>,
    committing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<DumpSummary> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    // Refuse a non-empty output directory or prefix before touching the server; or read back
    // the journal of the dump to resume, which gives the snapshot and the options.
    let replay = prepare_target(&mut opts, &store).await?;
    let holder = match open_holder(&mut opts).await {
        Err(e) if replay.is_some() => return Err(lost_snapshot(e, &opts.out)),
        r => r?,
    };
    let info = holder.info.clone();
    let (pg_dump, pg_dump_version) = find_pg_dump(
        opts.pg_dump.as_ref().map(|(p, s)| (p.as_path(), *s)),
        info.major() as u32,
        &info.version,
    )?;
    let codec = opts
        .codec
        .unwrap_or_else(|| default_codec(pg_dump_version.major));
    let mut planned = plan_dump(&holder, &opts).await?;
    if let Some(r) = &replay {
        planned.chunks = resume::plan_chunks(r, &planned.tables)?;
    }
    let begun = Begun::start(&store, &holder, &opts, codec, &planned, replay, started_at).await?;
    let schema_dir = begun.archive.schema_dir()?;
    let plan_time = started.elapsed();
    let mut shared = worker::Shared::new(
        planned.tables,
        begun.start,
        codec,
        opts.frame_size,
        begun.archive.clone(),
    )?;
    shared.verbose = opts.selection.verbose;
    shared.digests = opts.digests;
    for (t, f) in begun.kept.finished {
        shared.keep_finished(t, f);
    }
    for (t, w) in begun.kept.partial {
        shared.keep_partial(t, w);
    }
    let shared = Arc::new(shared);
    let progress = crate::progress::Progress::start(
        "dump",
        Some(begun.estimate),
        Some(begun.todo as u64),
        opts.jobs,
    );
    let copy_started = Instant::now();
    let capture = begun.schema.is_none().then(|| schema::Capture {
        pg_dump: &pg_dump,
        version: &pg_dump_version,
        conn: &opts.conn,
        snapshot_id: &holder.snapshot_id,
        out: &schema_dir,
        codec,
        tables: &shared.tables,
        selection: &opts.selection,
        encoding: &info.encoding,
        keep: &planned.keep,
    });
    let schema_slot = std::sync::Mutex::new(begun.schema);
    let schema_time = copy_and_capture(&opts, &holder, capture, &shared, &schema_slot)
        .await
        .map_err(|e| incomplete(&opts.out, e))?;
    let times = Times {
        started_at,
        started,
        plan: plan_time,
        copy: copy_started.elapsed(),
        schema: schema_time,
    };
    let schema = schema_slot
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| anyhow!("internal error: the schema was not captured"))?;
    let done = Finish {
        opts: &opts,
        holder,
        archive: begun.archive,
        shared,
        schema,
        kept_chunks: begun.kept.chunks.len(),
        codec,
        pg_dump_version: &pg_dump_version.full,
        unsplit: planned.unsplit,
        committing,
        times,
    };
    let (report, summary) = done.run().await.map_err(|e| incomplete(&opts.out, e))?;
    progress.finish();
    // The archive is complete from here on: a report that cannot be written says so.
    if let (Some(report), Some(path)) = (report, &opts.report) {
        report
            .write(path)
            .map_err(|e| anyhow!("the archive in {} is complete, but {e:#}", opts.out))?;
    }
    Ok(summary)
}

/// Before the server is touched: a new dump refuses a non-empty target; a resumed one reads
/// the journal and takes the snapshot and the shaping options from it.
async fn prepare_target(
    opts: &mut DumpOptions,
    store: &Arc<dyn Store>,
) -> Result<Option<crate::archive::journal::Replay>> {
    let store = store.clone();
    if !opts.resume {
        tokio::task::spawn_blocking(move || ArchiveWriter::check_target(store.as_ref()))
            .await
            .context("the storage task failed")??;
        return Ok(None);
    }
    let out = opts.out.clone();
    let replay = tokio::task::spawn_blocking(move || resume::load(store.as_ref(), &out))
        .await
        .context("the storage task failed")??;
    let shaping = resume::Shaping::from_value(&replay.options)?;
    opts.codec = Some(shaping.codec()?);
    opts.frame_size = shaping.frame_size;
    opts.split_size = shaping.split_size;
    opts.digests = shaping.digests;
    let verbose = opts.selection.verbose;
    opts.selection = shaping.selection;
    opts.selection.verbose = verbose;
    opts.snapshot = Some(replay.snapshot_id.clone());
    Ok(Some(replay))
}

/// A resumed dump whose snapshot the server no longer has: said so, with what to do.
fn lost_snapshot(e: anyhow::Error, out: &Location) -> anyhow::Error {
    match e.downcast_ref::<crate::pg::session::SnapshotGone>() {
        Some(gone) => anyhow!(
            "snapshot lost: the snapshot {} that the interrupted dump in {out} read is no \
             longer held by the server ({}); the dump cannot be resumed consistently and \
             nothing was changed: remove it and dump again (hold the snapshot with `pgarc \
             snapshot` and pass --snapshot, so that a later interruption can be resumed)",
            gone.id,
            gone.detail
        ),
        None => e,
    }
}

/// The archive started (or taken up again), its journal, and what earlier runs left.
struct Begun {
    archive: Arc<ArchiveWriter>,
    start: worker::Start,
    kept: resume::Kept,
    /// The schema an earlier run captured: pg_dump's TOC and the files it wrote.
    schema: Option<SchemaDone>,
    /// Chunks left, and the bytes they are estimated at.
    todo: usize,
    estimate: u64,
}

/// pg_dump's TOC and the files it wrote, once in the store.
type SchemaDone = (crate::archive::toc::Toc, Vec<FileRecord>);

impl Begun {
    /// A new dump: the archive is created and the journal begun with the plan. A resumed one:
    /// the archive is reopened, the run recorded, and the kept work carried in.
    async fn start(
        store: &Arc<dyn Store>,
        holder: &SnapshotHolder,
        opts: &DumpOptions,
        codec: Codec,
        planned: &PlannedDump,
        replay: Option<crate::archive::journal::Replay>,
        started_at: SystemTime,
    ) -> Result<Begun> {
        use crate::archive::journal::{Journal, Record};
        let store = store.clone();
        let snapshot_id = holder.snapshot_id.clone();
        let shaping = resume::Shaping {
            compression: codec.to_string(),
            frame_size: opts.frame_size,
            split_size: opts.split_size,
            digests: opts.digests,
            selection: opts.selection.clone(),
        };
        let chunks = planned.chunks.clone();
        let tables = planned.tables.clone();
        let (out, digests) = (opts.out.clone(), opts.digests);
        let begun = tokio::task::spawn_blocking(move || -> Result<Begun> {
            let version = env!("CARGO_PKG_VERSION").to_string();
            let Some(replay) = replay else {
                let started = format!(
                    "started = \"{}\"\nsnapshot_id = \"{snapshot_id}\"\npgarc_version = \"{version}\"\n",
                    rfc3339_utc(started_at),
                );
                let archive = Arc::new(ArchiveWriter::create(store.clone(), &started)?);
                let journal = Arc::new(Journal::new(store, 0));
                journal.write(
                    Record::Begin {
                        snapshot_id,
                        pgarc_version: version,
                        started: rfc3339_utc(started_at),
                        options: shaping.to_value(),
                        chunks: resume::planned(&chunks, &tables),
                    },
                    true,
                )?;
                return Ok(Begun::fresh(archive, journal, chunks));
            };
            let archive = Arc::new(ArchiveWriter::reopen(store.clone())?);
            let journal = Arc::new(Journal::new(store.clone(), replay.next_seq));
            let run = replay.runs + 1;
            journal.write(
                Record::Resume {
                    run,
                    pgarc_version: version,
                },
                true,
            )?;
            let carry = resume::Carry {
                archive: &archive,
                journal: &journal,
                run,
                codec,
                digests,
            };
            let kept = resume::keep(&replay, &tables, &chunks, &carry)?;
            let schema = resume::kept_schema(&replay, &archive)?;
            if schema.is_none() {
                resume::clear_schema(&store, &archive)?;
            }
            let begun = Begun::resumed(archive, journal, chunks, kept, schema, &replay, run);
            crate::progress::say(&format!(
                "pgarc: resuming the dump in {out} under snapshot {} (run {run}): {} of {} \
                 chunks kept, {} left; the schema is {}",
                replay.snapshot_id,
                begun.kept.chunks.len(),
                begun.start.all.len(),
                begun.todo,
                if begun.schema.is_some() { "kept" } else { "captured again" }
            ));
            Ok(begun)
        })
        .await
        .context("the storage task failed")??;
        Ok(begun)
    }

    fn fresh(
        archive: Arc<ArchiveWriter>,
        journal: Arc<crate::archive::journal::Journal>,
        all: Vec<plan::Chunk>,
    ) -> Begun {
        let estimate = all.iter().map(|c| c.estimate).sum();
        Begun {
            archive,
            todo: all.len(),
            estimate,
            start: worker::Start {
                todo: (0..all.len()).collect(),
                all,
                journal,
                run: 1,
                started_before: Default::default(),
            },
            kept: resume::Kept {
                finished: Vec::new(),
                partial: Vec::new(),
                chunks: Default::default(),
            },
            schema: None,
        }
    }

    fn resumed(
        archive: Arc<ArchiveWriter>,
        journal: Arc<crate::archive::journal::Journal>,
        all: Vec<plan::Chunk>,
        kept: resume::Kept,
        schema: Option<SchemaDone>,
        replay: &crate::archive::journal::Replay,
        run: u32,
    ) -> Begun {
        let todo: Vec<usize> = (0..all.len())
            .filter(|i| !kept.chunks.contains(i))
            .collect();
        let estimate = todo.iter().map(|&i| all[i].estimate).sum();
        let started_before = replay
            .started_chunks
            .iter()
            .copied()
            .filter(|i| !kept.chunks.contains(i))
            .collect();
        Begun {
            archive,
            todo: todo.len(),
            estimate,
            start: worker::Start {
                all,
                todo,
                journal,
                run,
                started_before,
            },
            kept,
            schema,
        }
    }
}

/// Step 1: the snapshot holder. Like libpq programs, when the server wants a password and
/// none was given, pgarc asks for one on the terminal (unless -w).
async fn open_holder(opts: &mut DumpOptions) -> Result<SnapshotHolder> {
    let serializable = opts.selection.serializable_deferrable;
    match SnapshotHolder::open(&opts.conn, opts.snapshot.as_deref(), serializable).await {
        Err(e) if opts.conn.may_prompt() && ConnectFailed::needs_password(&e) => {
            opts.conn.prompt_password()?;
            SnapshotHolder::open(&opts.conn, opts.snapshot.as_deref(), serializable).await
        }
        r => r,
    }
}

/// What the holder's catalog reads decided.
struct PlannedDump {
    /// The tables whose rows pgarc copies, and their chunks.
    tables: Vec<crate::pg::session::CatalogTable>,
    chunks: Vec<plan::Chunk>,
    /// The other relations whose data pg_dump writes (schema, name).
    keep: Vec<(String, String)>,
    /// Tables too big for one chunk on a server without TID range scans: version, count.
    unsplit: Option<(String, usize)>,
}

/// Step 1, continued: the catalog under the snapshot, the selection, the locks, the check
/// for tables rewritten after the snapshot, and the chunks.
async fn plan_dump(holder: &SnapshotHolder, opts: &DumpOptions) -> Result<PlannedDump> {
    let info = &holder.info;
    let client = &holder.session.client;
    let catalog = catalog_tables(client).await?;
    let chosen = scope::resolve(client, &opts.selection, &info.database, &catalog).await?;
    let names: Vec<&str> = chosen.dumped.iter().map(|t| t.qualified.as_str()).collect();
    holder.lock(&names).await?;
    // A table rewritten (TRUNCATE, VACUUM FULL, ...) between the snapshot and the lock looks
    // empty under the snapshot: refuse rather than vouch for it.
    let oids: Vec<u32> = chosen.data.iter().map(|t| t.oid).collect();
    refuse_rewritten(&chosen.data, &holder.rewritten_since_snapshot(&oids).await?)?;
    let block_size = info.block_size;
    let copied: std::collections::HashSet<u32> = oids.into_iter().collect();
    let keep: Vec<(String, String)> = relations_with_data(client)
        .await?
        .into_iter()
        .filter(|(oid, _, _)| !copied.contains(oid))
        .map(|(_, schema, name)| (schema, name))
        .collect();
    let tables = chosen.data;
    let can_split = info.version_num >= 140000;
    let chunks = plan::plan_chunks(&tables, opts.split_size, block_size, can_split);
    let too_big = tables
        .iter()
        .filter(|t| t.table_bytes > opts.split_size)
        .count();
    Ok(PlannedDump {
        unsplit: (!can_split && too_big > 0).then(|| (info.version.clone(), too_big)),
        tables,
        chunks,
        keep,
    })
}

/// The refusal naming every table in `rewritten` (OIDs).
fn refuse_rewritten(tables: &[crate::pg::session::CatalogTable], rewritten: &[u32]) -> Result<()> {
    if rewritten.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = tables
        .iter()
        .filter(|t| rewritten.contains(&t.oid))
        .map(|t| t.display_name())
        .collect();
    names.sort();
    let one = names.len() == 1;
    bail!(
        "table{} {} {} rewritten (TRUNCATE, VACUUM FULL, CLUSTER or a rewriting ALTER TABLE) \
         after the snapshot was taken and before pgarc locked {}: under the snapshot {} \
         empty, so {} rows cannot be dumped consistently; nothing was written: run the \
         dump again (with --snapshot, export the snapshot after such maintenance)",
        if one { "" } else { "s" },
        names.join(", "),
        if one { "was" } else { "were" },
        if one { "it" } else { "them" },
        if one { "it looks" } else { "they look" },
        if one { "its" } else { "their" },
    );
}

/// Steps 2 and 3: N workers, each having imported the snapshot, copy the chunks while
/// pg_dump captures the schema. Returns the capture's time. If the holder's session ends,
/// the dump stops with "snapshot lost".
async fn copy_and_capture(
    opts: &DumpOptions,
    holder: &SnapshotHolder,
    capture: Option<schema::Capture<'_>>,
    shared: &Arc<worker::Shared>,
    schema_slot: &std::sync::Mutex<Option<SchemaDone>>,
) -> Result<Duration> {
    let work = async {
        // Every worker imports the snapshot before any starts copying.
        let sessions = futures_util::future::try_join_all(
            (1..=opts.jobs)
                .map(|n| open_worker(&opts.conn, &holder.info, &holder.snapshot_id, n, &[], &[])),
        )
        .await?;
        if let Some(first) = sessions.first() {
            let values = crate::pg::session::copy_settings(&first.client).await?;
            *shared.settings.lock().unwrap_or_else(|p| p.into_inner()) = Some(values);
        }
        let capture_started = Instant::now();
        // The schema: captured, its files put into the store and recorded in the journal
        // (unless an earlier run did all that).
        let capture = async {
            let Some(capture) = capture else {
                return Ok::<_, anyhow::Error>(Duration::ZERO);
            };
            schema::capture(capture).await?;
            let (archive, journal) = (shared.archive.clone(), shared.journal.clone());
            let done = tokio::task::spawn_blocking(move || {
                crate::run::kill_point("schema-captured");
                let (toc, kept, files) = archive.adopt_schema()?;
                journal.write(
                    crate::archive::journal::Record::Schema {
                        toc: kept,
                        files: files.clone(),
                    },
                    true,
                )?;
                Ok::<_, crate::archive::Error>((toc, files))
            })
            .await
            .context("the storage task failed")??;
            *schema_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
            Ok(capture_started.elapsed())
        };
        let workers =
            futures_util::future::try_join_all(sessions.into_iter().enumerate().map(|(i, s)| {
                let shared = shared.clone();
                async move {
                    tokio::spawn(worker::run(i + 1, s, shared))
                        .await
                        .context("a worker task failed")?
                }
            }));
        let result = tokio::try_join!(capture, workers);
        if result.is_err() {
            shared.stop();
        }
        result.map(|(schema_time, _)| schema_time)
    };
    let mut closed = holder.session.closed.clone();
    tokio::select! {
        r = work => match r {
            Ok(t) => Ok(t),
            Err(e) => {
                // When the server went away, every session fails at once: say so first.
                let mut again = holder.session.closed.clone();
                let lost = tokio::time::timeout(
                    Duration::from_millis(500),
                    again.wait_for(|c| c.is_some()),
                )
                .await
                .is_ok();
                if lost {
                    let reason = holder.lost().unwrap_or_default();
                    return Err(anyhow!(
                        "snapshot lost: the snapshot holder's session ended ({reason}), and \
                         with it {e:#}"
                    ));
                }
                Err(e)
            }
        },
        _ = closed.wait_for(|c| c.is_some()) => {
            shared.stop();
            let reason = holder.lost().unwrap_or_default();
            Err(anyhow!(
                "snapshot lost: the snapshot holder's session ended ({reason}); the data could \
                 no longer be proven consistent"
            ))
        }
    }
}

/// When the dump started and how long its phases took.
struct Times {
    started_at: SystemTime,
    started: Instant,
    plan: Duration,
    copy: Duration,
    schema: Duration,
}

/// Steps 4 and 5: assembly, the holder's commit, the manifest last; the report and the
/// summary.
struct Finish<'a> {
    opts: &'a DumpOptions,
    holder: SnapshotHolder,
    archive: Arc<ArchiveWriter>,
    shared: Arc<worker::Shared>,
    schema: SchemaDone,
    /// Chunks an earlier run copied that this one kept.
    kept_chunks: usize,
    codec: Codec,
    pg_dump_version: &'a str,
    unsplit: Option<(String, usize)>,
    committing: Arc<std::sync::atomic::AtomicBool>,
    times: Times,
}

impl Finish<'_> {
    async fn run(self) -> Result<(Option<crate::report::Report>, DumpSummary)> {
        let Finish {
            opts,
            holder,
            archive,
            shared,
            schema,
            kept_chunks,
            codec,
            pg_dump_version,
            unsplit,
            committing,
            times,
        } = self;
        let resumed = (shared.run > 1).then(|| crate::report::ResumeReport {
            run: shared.run,
            kept: kept_chunks,
            done: shared.copied.load(std::sync::atomic::Ordering::SeqCst),
            redone: shared.redone.load(std::sync::atomic::Ordering::SeqCst),
        });
        let info = holder.info.clone();
        let assemble_started = Instant::now();
        let settings = if opts.digests {
            Some(copy_settings(&shared)?)
        } else {
            None
        };
        // Hashing and file I/O run off the async runtime's threads.
        let assembled = {
            let archive = archive.clone();
            let encoding = info.encoding.clone();
            let table_entries = opts.selection.writes_table_entries();
            tokio::task::spawn_blocking(move || {
                assemble(&archive, &shared, schema, &encoding, codec, table_entries)
            })
            .await
            .context("the archive assembly task failed")??
        };
        // The holder must have lived through everything the manifest vouches for.
        let snapshot_id = holder.snapshot_id.clone();
        let current_snapshot = holder.current_snapshot.clone();
        let imported = holder.imported;
        holder.finish().await?;
        let manifest = Manifest {
            // The lowest version that carries the archive (format-spec §9): 1.9 when every
            // frame index is a file.
            format: if opts.digests {
                FORMAT
            } else if assembled.tables.iter().any(|t| t.frame_list.is_some()) {
                FORMAT_2
            } else {
                FORMAT_1
            },
            pgarc_version: env!("CARGO_PKG_VERSION").to_string(),
            created_start: rfc3339_utc(times.started_at),
            created_end: rfc3339_utc(SystemTime::now()),
            server_version: info.version.clone(),
            pg_dump_version: pg_dump_version.to_string(),
            database: info.database.clone(),
            encoding: info.encoding.clone(),
            snapshot_id: snapshot_id.clone(),
            current_snapshot,
            options: DumpOptionsRecord {
                compression: codec.to_string(),
                frame_size: opts.frame_size as u64,
                split_size: opts.split_size,
                jobs: opts.jobs as u32,
                snapshot_imported: imported,
            },
            settings,
            files: assembled.files,
            tables: assembled.tables,
            ignored_keys: Vec::new(),
        };
        let tables = manifest.tables.len();
        let assembled_in = assemble_started.elapsed();
        let manifest_started = Instant::now();
        committing.store(true, std::sync::atomic::Ordering::SeqCst);
        let created_end = manifest.created_end.clone();
        publish(archive, manifest).await?;
        let report = opts.report.as_ref().map(|_| {
            let mut r = crate::report::Report::new(
                "dump",
                times.started_at,
                &opts.out.shown(),
                &info.database,
                opts.jobs,
            )
            .phase("plan", times.plan, None)
            .phase("copy", times.copy, None)
            .phase("schema capture", times.schema, None)
            .phase("assemble", assembled_in, None)
            .phase("manifest", manifest_started.elapsed(), None)
            .tables(assembled.report.clone(), times.started.elapsed(), 0);
            r.finished = created_end;
            r.server_version = Some(info.version.clone());
            r.compression = Some(codec.to_string());
            r.snapshot_id = Some(snapshot_id.clone());
            r.resume = resumed.clone();
            r
        });
        let summary = DumpSummary {
            out: opts.out.shown(),
            database: info.database.clone(),
            snapshot_id,
            tables,
            rows: assembled.rows,
            raw_bytes: assembled.raw_bytes,
            stored_bytes: assembled.stored_bytes,
            elapsed: times.started.elapsed(),
            jobs: opts.jobs,
            codec,
            split: assembled.split,
            unsplit,
            readers: assembled.readers,
            resumed,
        };
        Ok((report, summary))
    }
}

/// Writes the manifest, which completes the archive, then removes the journal (a journal that
/// cannot be removed is said, and removed by the next `dump --resume`).
async fn publish(archive: Arc<ArchiveWriter>, manifest: Manifest) -> Result<()> {
    let store = archive.store().clone();
    tokio::task::spawn_blocking(move || {
        crate::run::kill_point("before-manifest");
        archive.write_manifest(&manifest)?;
        crate::run::kill_point("after-manifest");
        Ok::<_, crate::archive::Error>(())
    })
    .await
    .context("the manifest task failed")??;
    // The archive is complete: its journal has done its work.
    let removed =
        tokio::task::spawn_blocking(move || store.log_remove(crate::archive::journal::JOURNAL))
            .await;
    if let Ok(Err(e)) = removed {
        crate::progress::say(&format!(
            "pgarc: warning: the archive is complete, but its journal could not be removed \
             ({e}); `pgarc dump --resume` removes it"
        ));
    }
    Ok(())
}

/// The archive's files and tables once data and schema are in, before the manifest.
struct Assembled {
    files: Vec<FileRecord>,
    tables: Vec<TableRecord>,
    rows: u64,
    raw_bytes: u64,
    stored_bytes: u64,
    split: Vec<(String, usize, usize, usize)>,
    report: Vec<crate::report::TableReport>,
    /// The pg_restore releases that read the archive.
    readers: crate::archive::compat::Readers,
}

/// Adopts pg_dump's files, adds the TABLE DATA entries, gives the data files their final
/// names, and writes frame indexes and toc.dat (format-spec/tool.md §1, step 4). Blocking.
fn assemble(
    archive: &ArchiveWriter,
    shared: &worker::Shared,
    schema: SchemaDone,
    encoding: &str,
    codec: Codec,
    table_entries: bool,
) -> Result<Assembled> {
    let (mut toc, mut files) = schema;
    let recorded = toc.encoding()?;
    if recorded.as_deref() != Some(encoding) {
        bail!("pg_dump recorded encoding {recorded:?} but the data was copied in {encoding}");
    }
    let results = shared.results()?;
    if shared.run > 1 {
        let used = results.iter().map(|r| r.finished.rel.clone()).collect();
        resume::clear_assembly(archive.store().as_ref(), &used)?;
    }
    // Each entry names its data file without the codec's suffix, as pg_dump's do.
    let names: Vec<String> = results
        .iter()
        .map(|r| {
            let rel = &r.finished.rel;
            rel.strip_suffix(codec.suffix()).unwrap_or(rel).to_string()
        })
        .collect();
    let ids = plan::add_table_data(&mut toc, &shared.tables, &names, table_entries)?;
    toc.header.version = plan::archive_version(toc.header.version, codec);
    toc.header.compression = plan::header_compression(toc.header.version, codec);
    let readers = crate::archive::compat::readers(&toc.header);
    let mut out = Assembled {
        files: Vec::new(),
        tables: Vec::new(),
        rows: 0,
        raw_bytes: 0,
        stored_bytes: 0,
        split: Vec::new(),
        report: Vec::new(),
        readers,
    };
    for ((t, id), r) in shared.tables.iter().zip(ids).zip(results) {
        let Some(id) = id else {
            crate::progress::say(&format!(
                "pgarc: warning: pg_dump did not dump table {}; its rows are left out too",
                t.display_name()
            ));
            archive.discard_data_file(&r.finished)?;
            continue;
        };
        let (file, index) = archive.place_data_file(&r.finished, id)?;
        let (frame_index, frame_list, index_file) = index.into_manifest();
        out.rows += r.finished.rows;
        out.raw_bytes += r.finished.raw_bytes;
        out.stored_bytes += file.size;
        if r.chunks > 1 {
            out.split
                .push((t.display_name(), r.chunks, r.workers.len(), r.max_at_once));
        }
        out.report.push(crate::report::TableReport {
            schema: crate::pg::carrier::display(&t.schema),
            name: crate::pg::carrier::display(&t.name),
            rows: r.finished.rows,
            raw_bytes: r.finished.raw_bytes,
            stored_bytes: file.size,
            seconds: crate::report::secs(r.elapsed),
            workers: r.workers.clone(),
            pieces: r.chunks,
        });
        out.tables.push(TableRecord {
            dump_id: id,
            schema: crate::pg::carrier::display(&t.schema),
            name: crate::pg::carrier::display(&t.name),
            file: file.path.clone(),
            frame_index,
            frame_list,
            rows: r.finished.rows,
            raw_bytes: r.finished.raw_bytes,
            stored_bytes: file.size,
            frames: r.finished.index.len() as u64,
            rows_sum: r.finished.rows_digest.map(|d| d.sum_hex()),
        });
        files.push(file);
        files.extend(index_file);
    }
    files.push(archive.started_record());
    files.push(archive.write_toc(&toc)?);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    out.tables.sort_by_key(|t| t.dump_id);
    out.files = files;
    Ok(out)
}

/// The COPY settings the workers' sessions had (read from the first one as it started).
fn copy_settings(shared: &worker::Shared) -> Result<CopySettings> {
    let values = shared
        .settings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("internal error: the sessions' COPY settings were not read"))?;
    let [client_encoding, datestyle, intervalstyle, extra_float_digits, timezone, bytea_output, lc_monetary] =
        <[String; 7]>::try_from(values)
            .map_err(|_| anyhow!("internal error: not every COPY setting was read"))?;
    Ok(CopySettings {
        client_encoding,
        datestyle,
        intervalstyle,
        extra_float_digits,
        timezone,
        bytea_output,
        lc_monetary,
    })
}
