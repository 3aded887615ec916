//! `pgarc restore`: loads a directory archive (pgarc's or stock `pg_dump -Fd`'s) into a
//! database the way `pg_restore -j N` does, natively:
//!
//! 1. [`prepare`] reads toc.dat and, for pgarc archives, checks it and every frame index
//!    against the manifest; every data file to be loaded must be present before the database
//!    is touched;
//! 2. the leader connects, refuses a non-empty target (unless `--clean`), runs `--clean`'s
//!    drops, then the pre-data entries in TOC order (`--create` first creates the database and
//!    reconnects to it);
//! 3. N workers run the rest as the [`plan`] scheduler releases it: table data largest first,
//!    a big pgarc table split by its frame index across idle workers (a gang whose parts
//!    commit only together), post-data as soon as its tables are loaded, never two
//!    conflicting lock holders on one table; then the ACL pass, then materialized view data;
//! 4. what a dependency cycle left over runs serially; errors are counted as pg_restore counts
//!    them (or stop the restore with `--exit-on-error`).

pub mod account;
pub mod analyze;
pub mod ledger;
pub mod plan;
pub mod sql;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::mpsc;

use crate::archive::data::{DataProblem, LargeObject, Located, TableData};
use crate::archive::manifest::ManifestIndex;
use crate::archive::select::{parse_list, toc_reqs, NameFilters, Selection};
use crate::archive::store::Location;
use crate::archive::toc::{Toc, TocEntry};
use crate::archive::ArchiveDir;
use crate::pg::conn::ConnParams;
use crate::pg::session::ConnectFailed;
use crate::pg::session::{describe, query_text};
use account::{Next, PartOutcome, TableLoad};
use analyze::Analyzer;
use plan::{Pass, Plan, Scheduler};
use worker::{label, Conn, Gang, Outcome};

/// What `pgarc restore` was asked to do (pg_restore's options of the same names).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target database, or with `--create` the database to connect to first.
    pub conn: ConnParams,
    /// A directory or `s3://BUCKET/PREFIX`.
    pub archive: Location,
    /// Plain HTTP to an object store that is not on loopback.
    pub allow_http: bool,
    pub jobs: usize,
    pub create: bool,
    pub clean: bool,
    pub if_exists: bool,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub role: Option<String>,
    /// `--section`s given; empty means all.
    pub sections: Vec<crate::archive::toc::Section>,
    pub exit_on_error: bool,
    /// `-s`, `-a`.
    pub schema_only: bool,
    pub data_only: bool,
    /// `--no-statistics`.
    pub no_statistics: bool,
    /// `-n -N -t -I -P -T`: exact names.
    pub names: NameFilters,
    pub strict_names: bool,
    /// `-L FILE`.
    pub use_list: Option<PathBuf>,
    pub disable_triggers: bool,
    /// `-1`: one session, one transaction.
    pub single_transaction: bool,
    pub verbose: bool,
    /// `--report FILE`.
    pub report: Option<PathBuf>,
    /// `--analyze`: ANALYZE each loaded table once its data and indexes are in.
    pub analyze: bool,
    /// COPY FREEZE for big tables created by this run (off with `--no-freeze`).
    pub freeze: bool,
    /// `--verify`: the caller checks the restored database afterwards and writes the
    /// `--report` itself, with the check in it; the restore leaves it in the summary.
    pub defer_report: bool,
    /// `--resume`: continue the interrupted restore whose ledger is in the target database.
    pub resume: bool,
}

/// Options that cannot go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("cannot use --single-transaction with -j > 1: one transaction is one session")]
    SingleTransactionJobs,
    #[error(
        "cannot use --single-transaction with --create: CREATE DATABASE cannot run in a \
         transaction"
    )]
    SingleTransactionCreate,
    #[error(
        "--resume continues a restore in the database it was restoring into: it cannot be \
         used with --create, --clean or --single-transaction (connect with -d to the database \
         the interrupted restore created)"
    )]
    ResumeWith,
}

impl RestoreOptions {
    /// The rules between options that pg_restore enforces; [`run`] checks them too, so the
    /// library refuses what the command line refuses.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.single_transaction && self.jobs > 1 {
            return Err(OptionsError::SingleTransactionJobs);
        }
        if self.single_transaction && self.create {
            return Err(OptionsError::SingleTransactionCreate);
        }
        if self.resume && (self.create || self.clean || self.single_transaction) {
            return Err(OptionsError::ResumeWith);
        }
        Ok(())
    }

    /// Options for an archive and a connection, everything else as pg_restore's defaults.
    pub fn new(conn: ConnParams, archive: Location) -> RestoreOptions {
        RestoreOptions {
            conn,
            archive,
            allow_http: false,
            jobs: 1,
            create: false,
            clean: false,
            if_exists: false,
            no_owner: false,
            no_privileges: false,
            role: None,
            sections: Vec::new(),
            exit_on_error: false,
            schema_only: false,
            data_only: false,
            no_statistics: false,
            names: NameFilters::default(),
            strict_names: false,
            use_list: None,
            disable_triggers: false,
            single_transaction: false,
            verbose: false,
            report: None,
            analyze: false,
            freeze: true,
            defer_report: false,
            resume: false,
        }
    }
}

/// Everything the workers share: the archive, the plan, the session settings.
pub struct Ctx {
    pub opts: RestoreOptions,
    pub dir: ArchiveDir,
    pub toc: Toc,
    pub plan: Plan,
    pub data: HashMap<usize, Arc<TableData>>,
    /// BLOBS entries to restore: their large objects, or the first problem found with them
    /// (the entry's error when it is restored).
    pub blobs: HashMap<usize, Result<Arc<[LargeObject]>, Located>>,
    pub encoding: String,
    pub std_strings: bool,
    pub search_path: Option<String>,
    by_id: HashMap<i32, usize>,
    conn: RwLock<ConnParams>,
    server_version_num: AtomicI32,
    /// `pg_postmaster_start_time()` when the first session opened: a different value later
    /// means the server restarted under the restore.
    server_started: std::sync::Mutex<Option<String>>,
    /// Once the ledger is in place: this run's number, and what earlier runs recorded
    /// (nothing for a new restore). Unset: no ledger (`-1`, or before `--create`'s database).
    pub ledger: std::sync::OnceLock<(u32, ledger::Ledger)>,
}

impl Ctx {
    /// This run's number in the ledger, once there is one.
    pub fn ledger_run(&self) -> Option<u32> {
        self.ledger.get().map(|(run, _)| *run)
    }

    /// Whether entry `idx` loads data in a transaction of its own (table data, large
    /// objects), which records itself in the ledger.
    pub fn loads_data(&self, idx: usize) -> bool {
        let e = &self.toc.entries[idx];
        self.plan.items[idx].reqs.data
            && e.had_dumper
            && (e.desc.is("TABLE DATA") || e.desc.is("BLOBS"))
    }

    pub fn conn(&self) -> ConnParams {
        self.conn.read().expect("not poisoned").clone()
    }

    pub fn entry_by_id(&self, id: i32) -> Option<&TocEntry> {
        self.by_id.get(&id).map(|&i| &self.toc.entries[i])
    }

    pub fn server_version_num(&self) -> i32 {
        self.server_version_num.load(Ordering::Relaxed)
    }

    pub fn set_server_version_num(&self, v: i32) {
        self.server_version_num.store(v, Ordering::Relaxed);
    }

    /// Records the server's start time from a new session; false when it differs from the
    /// first session's (the server restarted).
    pub fn same_server_start(&self, started: &str) -> bool {
        let mut first = self.server_started.lock().expect("not poisoned");
        match first.as_deref() {
            None => {
                *first = Some(started.to_string());
                true
            }
            Some(f) => f == started,
        }
    }

    pub fn fixed_state(&self, server_version_num: i32) -> Vec<String> {
        sql::fixed_state(
            &self.encoding,
            self.std_strings,
            self.opts.role.as_deref(),
            self.search_path.as_deref(),
            server_version_num,
        )
    }
}

/// The selection for `opts`, with `-L`'s list applied to `toc`: the listed entries move to the
/// end of the TOC in the list's order, as pg_restore's `SortTocFromFile` moves them.
pub fn selection(opts: &RestoreOptions, toc: &mut Toc) -> Result<Selection> {
    let mut sel = Selection {
        create_db: opts.create,
        acls: !opts.no_privileges,
        // pg_restore 18: -s and -a restore no statistics either.
        statistics: !(opts.no_statistics || opts.schema_only || opts.data_only),
        schema_only: opts.schema_only,
        data_only: opts.data_only,
        names: opts.names.clone(),
        ..Selection::default()
    };
    if let Some(path) = &opts.use_list {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the list file {}", path.display()))?;
        let (ids, warnings) = parse_list(&String::from_utf8_lossy(&text));
        let max = toc.entries.iter().map(|e| e.dump_id).max().unwrap_or(0);
        let mut at = toc.positions_by_dump_id();
        for w in warnings {
            crate::progress::say(&format!("pgarc: warning: {}: {w}", path.display()));
        }
        let mut wanted = HashSet::new();
        let mut listed = Vec::new();
        for id in ids {
            if id > max {
                crate::progress::say(&format!(
                    "pgarc: warning: {}: line ignored: no entry has ID {id}",
                    path.display()
                ));
                continue;
            }
            let i = at.remove(&id).ok_or_else(|| {
                anyhow!(
                    "{}: could not find entry for ID {id} in the archive: was the list made from another archive? (pgarc restore -l ARCHIVE makes one)",
                    path.display()
                )
            })?;
            wanted.insert(id);
            listed.push(i);
        }
        let listed_set: HashSet<usize> = listed.iter().copied().collect();
        let mut order: Vec<usize> = (0..toc.entries.len())
            .filter(|i| !listed_set.contains(i))
            .collect();
        order.extend(listed);
        let mut old: Vec<Option<TocEntry>> = std::mem::take(&mut toc.entries)
            .into_iter()
            .map(Some)
            .collect();
        toc.entries = order
            .into_iter()
            .map(|i| old[i].take().expect("each entry once"))
            .collect();
        sel.id_wanted = Some(wanted);
    }
    if opts.strict_names {
        if let Some(what) = opts.names.missing(&toc.entries) {
            bail!("{what} not found in the archive (--strict-names)");
        }
    }
    if !opts.sections.is_empty() {
        use crate::archive::toc::Section;
        sel.pre_data = opts.sections.contains(&Section::PreData);
        sel.data = opts.sections.contains(&Section::Data);
        sel.post_data = opts.sections.contains(&Section::PostData);
    }
    Ok(sel)
}

/// Reads and checks the archive before any connection is made.
pub fn prepare(opts: RestoreOptions) -> Result<Ctx> {
    let dir = crate::s3::open_archive(&opts.archive, opts.allow_http)?;
    // Only what the checks need is kept; the manifest itself is dropped before toc.dat is
    // read (memory: an archive of 50,000 tables).
    let manifest = dir.read_manifest()?.map(|m| ManifestIndex::new(&m));
    let toc = match &manifest {
        Some(m) => dir.read_listed_toc(m)?,
        None => dir.read_toc()?,
    };
    let mut toc = toc;
    let sel = selection(&opts, &mut toc)?;
    let by_id = toc.positions_by_dump_id();
    let special = |desc: &str| {
        toc.entries
            .iter()
            .find(|e| e.desc.is(desc))
            .and_then(|e| e.defn.carrier())
    };
    let encoding = toc
        .encoding()
        .with_context(|| dir.toc_path().display().to_string())?
        .unwrap_or_else(|| "UTF8".to_string());
    let std_strings = special("STDSTRINGS").is_none_or(|d| !d.contains("'off'"));
    let search_path = special("SEARCHPATH");

    // Every data file to be loaded, found now and checked against the manifest now.
    let mut data: HashMap<usize, Arc<TableData>> = HashMap::new();
    let mut missing: Vec<String> = Vec::new();
    for ((i, e), reqs) in toc
        .entries
        .iter()
        .enumerate()
        .zip(toc_reqs(&toc.entries, &sel))
    {
        if !(e.had_dumper && e.desc.is("TABLE DATA") && reqs.data) {
            continue;
        }
        let mut problems = Vec::new();
        let found = dir.table_data(manifest.as_ref(), e, &mut problems);
        match problems.into_iter().next() {
            None => {
                let found = found.expect("data without problems");
                data.insert(i, Arc::new(found));
            }
            Some(Located {
                file,
                problem: DataProblem::Missing | DataProblem::ListedMissing,
                ..
            }) => missing.push(format!("{} ({file})", e.qualified_name())),
            Some(problem) => bail!(
                "{}/{problem}: cannot restore {}; nothing was restored; run pgarc verify",
                dir.root().display(),
                label(e)
            ),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: data file{} missing for {} table{}: {}; nothing was restored (the database \
             was not touched): put the files back, or restore the rest with pg_restore -L; \
             pgarc verify names every damaged file",
            dir.root().display(),
            if missing.len() == 1 { "" } else { "s" },
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        );
    }
    let mut blobs: HashMap<usize, Result<Arc<[LargeObject]>, Located>> = HashMap::new();
    for ((i, e), reqs) in toc
        .entries
        .iter()
        .enumerate()
        .zip(toc_reqs(&toc.entries, &sel))
    {
        if e.desc.is("BLOBS") && reqs.data {
            let mut problems = Vec::new();
            let objects = dir.large_objects(&toc, manifest.as_ref(), e, &mut problems);
            let found = match problems.into_iter().next() {
                Some(problem) => Err(problem),
                None => Ok(objects.into()),
            };
            blobs.insert(i, found);
        }
    }
    let plan = Plan::build(&toc, &sel, |e| {
        let i = by_id[&e.dump_id];
        match (data.get(&i), blobs.get(&i)) {
            (Some(table), _) => table.file.size,
            (None, Some(Ok(objects))) => objects.iter().map(|o| o.file.size).sum(),
            _ => 0,
        }
    });
    let conn = RwLock::new(opts.conn.clone());
    Ok(Ctx {
        opts,
        dir,
        toc,
        plan,
        data,
        blobs,
        encoding,
        std_strings,
        search_path,
        by_id,
        conn,
        server_version_num: AtomicI32::new(0),
        server_started: std::sync::Mutex::new(None),
        ledger: std::sync::OnceLock::new(),
    })
}

/// Time and counts of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    pub entries: usize,
    pub elapsed: Duration,
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default)]
pub struct RestoreSummary {
    pub archive: PathBuf,
    pub database: String,
    pub jobs: usize,
    pub pre_data: PhaseStats,
    pub data: PhaseStats,
    pub post_data: PhaseStats,
    pub acl: PhaseStats,
    pub tables: usize,
    pub rows: u64,
    pub raw_bytes: u64,
    pub elapsed: Duration,
    /// Tables loaded by several workers at once: name, workers, frames.
    pub split: Vec<(String, usize, usize)>,
    pub errors: usize,
    /// Per table, for `--report`.
    pub table_reports: Vec<crate::report::TableReport>,
    pub server_version: Option<String>,
    /// Tables analyzed (`--analyze`).
    pub analyzed: usize,
    /// The connection to the restored database (after `--create`, to the new one).
    pub conn: Option<crate::pg::conn::ConnParams>,
    /// The dumpIds of the data entries restored (TABLE DATA, SEQUENCE SET, BLOBS).
    pub restored_data: std::collections::HashSet<i32>,
    /// The `--report` when `defer_report`: built, not written.
    pub report: Option<crate::report::Report>,
    /// A resumed restore: entries earlier runs did, kept (schema and data); data loads kept
    /// (whole entries and parts); data loads this run did, and how many of them an earlier
    /// run had begun and not committed.
    pub kept: usize,
    pub kept_loads: usize,
    pub loads: usize,
    pub redone: usize,
    /// The run's number, when it resumed an earlier one.
    pub run: Option<u32>,
    /// Entries whose session ended under them (terminated, server restarted).
    pub sessions_lost: usize,
}

impl fmt::Display for RestoreSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.errors > 0 {
            "restore with errors of"
        } else {
            "restored"
        };
        writeln!(
            f,
            "pgarc: {verb} {} into database {:?} with {} workers in {:.1} s",
            self.archive.display(),
            self.database,
            self.jobs,
            self.elapsed.as_secs_f64()
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, p: &PhaseStats, extra: String| {
            writeln!(
                f,
                "  {name:<10} {:>7} entries {:>8.1} s{extra}",
                p.entries,
                p.elapsed.as_secs_f64()
            )
        };
        line(f, "pre-data", &self.pre_data, String::new())?;
        line(
            f,
            "data",
            &self.data,
            format!(
                "   {} tables, {} rows, {}",
                self.tables,
                self.rows,
                crate::run::human(self.raw_bytes)
            ),
        )?;
        line(f, "post-data", &self.post_data, String::new())?;
        line(f, "acl+after", &self.acl, String::new())?;
        if self.analyzed > 0 {
            writeln!(
                f,
                "  analyzed {:>7} tables as they were ready",
                self.analyzed
            )?;
        }
        for (name, workers, frames) in &self.split {
            writeln!(
                f,
                "  table {name}: {frames} frames loaded by {workers} workers at once"
            )?;
        }
        if let Some(run) = self.run {
            writeln!(
                f,
                "  resumed (run {run}): {} entries kept from earlier runs ({} data loads), {} \
                 data loads by this run ({} of them begun by an earlier run and loaded again)",
                self.kept, self.kept_loads, self.loads, self.redone
            )?;
        }
        if self.errors > 0 {
            writeln!(f, "  errors: {}", self.errors)?;
        }
        Ok(())
    }
}

enum Job {
    Entry {
        idx: usize,
        truncate: bool,
    },
    Part {
        idx: usize,
        range: Range<usize>,
        gang: Arc<Gang>,
    },
    /// Remove the committed parts of a split table another part of which failed.
    Undo {
        idx: usize,
    },
    /// `ANALYZE` the table a loaded TABLE DATA entry filled (`--analyze`).
    Analyze {
        idx: usize,
    },
    /// The frames of a table that an interrupted run did not commit (`--resume`).
    Rest {
        idx: usize,
        ranges: Vec<Range<usize>>,
    },
}

struct Done {
    worker: usize,
    idx: usize,
    outcome: Outcome,
    undo: bool,
    /// An `ANALYZE` (`--analyze`), not an entry.
    analyze: bool,
    /// The worker's session ended and it could not open a new one.
    gone: bool,
}

/// Runs a restore.
pub async fn run(opts: RestoreOptions) -> Result<RestoreSummary> {
    opts.validate()?;
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let ctx = tokio::task::spawn_blocking(move || prepare(opts))
        .await
        .context("the archive reader failed")??;
    let ctx = Arc::new(ctx);

    // The estimate: the manifest's raw sizes (pgarc archives); none for pg_dump's archives.
    let total: Option<u64> = ctx
        .data
        .values()
        .map(|d| d.frames().map(|f| f.iter().map(|x| x.raw).sum::<u64>()))
        .sum();
    let tables = ctx.data.len() as u64;
    let progress = crate::progress::Progress::start("restore", total, Some(tables), ctx.opts.jobs);
    let mut signals = crate::run::Signals::new()?;
    let mut leader = open_leader(&ctx).await?;
    if ctx.opts.resume {
        resume(&ctx, &mut leader).await?;
    } else {
        check_target(&ctx, &leader).await?;
    }
    if ctx.opts.single_transaction {
        leader
            .session
            .client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| anyhow!("cannot start the transaction: {}", describe(&e)))?;
    }

    let mut summary = RestoreSummary {
        archive: ctx.opts.archive.shown(),
        jobs: ctx.opts.jobs,
        ..Default::default()
    };
    let mut errors = Errors::new(ctx.opts.exit_on_error);

    if ctx.opts.clean {
        clean(&ctx, &mut leader, &mut errors).await?;
    }
    if !ctx.opts.resume && !ctx.opts.create {
        start_ledger(&ctx, &leader).await?;
    }

    let t = Instant::now();
    let (leader, created) = pre_data(&ctx, leader, &mut signals, &mut summary, &mut errors).await?;
    summary.pre_data.elapsed = t.elapsed();
    summary.database = ctx.conn().dbname;
    crate::progress::say(&format!(
        "pgarc: pre-data: {} entries in {:.1} s",
        summary.pre_data.entries,
        summary.pre_data.elapsed.as_secs_f64()
    ));

    parallel(
        &ctx,
        leader,
        &created,
        &mut summary,
        &mut errors,
        &mut signals,
    )
    .await?;

    summary.errors = errors.count;
    summary.run = ctx.ledger_run().filter(|&r| r > 1);
    finish_ledger(&ctx, summary.sessions_lost).await;
    summary.elapsed = started.elapsed();
    progress.finish();
    conclude(&ctx, &mut summary, started_at)?;
    if errors.count > 0 {
        eprint!("{summary}");
        let resume = if summary.sessions_lost > 0 && ctx.ledger.get().is_some() {
            format!(
                "; {} of them lost their session: run the restore again with --resume to do \
                 what did not commit",
                summary.sessions_lost
            )
        } else {
            String::new()
        };
        bail!(
            "restore finished with {} error{}, listed above (as pg_restore, pgarc carried on \
             after them; -e stops at the first){resume}",
            errors.count,
            if errors.count == 1 { "" } else { "s" }
        );
    }
    Ok(summary)
}

/// Pre-data on the leader, in TOC order (tool.md §4); returns the leader (connected to the
/// new database after `--create`) and the TABLE DATA entries whose tables it created.
async fn pre_data(
    ctx: &Arc<Ctx>,
    mut leader: Conn,
    signals: &mut crate::run::Signals,
    summary: &mut RestoreSummary,
    errors: &mut Errors,
) -> Result<(Conn, HashSet<usize>)> {
    // Pre-data on the leader, in TOC order; schema statements commit without waiting for
    // their WAL, flushed before the restore ends (tool.md §8).
    let async_schema = !ctx.opts.single_transaction;
    if async_schema {
        leader.async_commits(true).await?;
    }
    let mut created: HashSet<usize> = resumed_created(ctx);
    // Entries run, recorded in the ledger a batch at a time (one that ran and is not recorded
    // yet is run again by a resumed restore, its "already exists" errors not counted).
    let mut ran: Vec<usize> = Vec::new();
    for idx in 0..ctx.toc.entries.len() {
        if !ctx.plan.items[idx].prefork || !ctx.plan.items[idx].reqs.selected() {
            continue;
        }
        if ctx.ledger.get().is_some_and(|(_, l)| l.done.contains(&idx)) {
            summary.kept += 1;
            continue;
        }
        if ran.len() >= LEDGER_BATCH {
            leader.mark_done(&std::mem::take(&mut ran)).await?;
        }
        let outcome = tokio::select! {
            outcome = leader.restore_entry(idx, false) => outcome,
            signal = signals.recv() => {
                return Err(crate::run::Interrupted {
                    signal,
                    what: format!(
                        "the restore stopped during pre-data, before any table data was \
                         loaded ({} of the schema's entries done); restore again with \
                         --clean, or into a new database",
                        summary.pre_data.entries
                    ),
                }
                .into());
            }
        };
        if outcome.table_created == Some(true) {
            if let Some(&td) = ctx.plan.table_data_of.get(&idx) {
                created.insert(td);
            }
        }
        let reconnect = outcome.reconnect.clone();
        let clean = outcome.errors.is_empty();
        summary.pre_data.entries += 1;
        if let Some(reason) = leader.lost() {
            for e in &outcome.errors {
                crate::progress::error(&format!("pgarc: error: {e}"));
            }
            bail!(
                "the connection to the server was lost during pre-data ({reason}): the restore \
                 stopped before any table data was loaded; the database holds part of the \
                 schema: restore again with --clean, or into a new database"
            );
        }
        errors.add(outcome.errors)?;
        if let Some(db) = reconnect {
            ctx.conn.write().expect("not poisoned").dbname = db;
            leader = Conn::open(ctx.clone(), "pgarc restore leader").await?;
            if async_schema {
                leader.async_commits(true).await?;
            }
            // --create: the ledger goes into the database just created.
            if !ctx.opts.single_transaction && ctx.ledger.get().is_none() {
                start_ledger(ctx, &leader).await?;
            }
        } else if clean {
            ran.push(idx);
        }
    }
    leader.mark_done(&ran).await?;
    Ok((leader, created))
}

/// Schema entries recorded in the ledger at once (see `run`).
const LEDGER_BATCH: usize = 64;

/// A new restore's ledger, in the database the data goes into.
async fn start_ledger(ctx: &Arc<Ctx>, leader: &Conn) -> Result<()> {
    if ctx.opts.single_transaction {
        return Ok(());
    }
    let (archive, selection) = identities(ctx).await?;
    ledger::create(&leader.session.client, &archive, &selection).await?;
    let _ = ctx.ledger.set((1, ledger::Ledger::default()));
    Ok(())
}

/// The archive's and the selection's identities, as the ledger keeps them.
async fn identities(ctx: &Arc<Ctx>) -> Result<(String, String)> {
    let store = ctx.dir.store().clone();
    let archive = tokio::task::spawn_blocking(move || -> Result<String> {
        use crate::archive::reader::{read_whole, Decode};
        let manifest = crate::archive::manifest::MANIFEST_FILE;
        let name = match store.stat(manifest)? {
            crate::archive::store::Stat::File(_) => manifest,
            _ => crate::archive::TOC_FILE,
        };
        let whole = read_whole(store.as_ref(), name, Decode::No)
            .with_context(|| format!("reading {name}"))?;
        Ok(format!("{name} sha256 {}", whole.sha256))
    })
    .await
    .context("the archive reader failed")??;
    let items = ctx
        .toc
        .entries
        .iter()
        .zip(&ctx.plan.items)
        .filter(|(_, it)| it.reqs.selected())
        .map(|(e, it)| (e.dump_id, format!("{:?}", it.reqs)));
    let mut selection = ledger::selection_id(items);
    selection.push_str(&format!(
        " owner:{} privileges:{}",
        !ctx.opts.no_owner, !ctx.opts.no_privileges
    ));
    Ok((archive, selection))
}

/// `--resume`: the ledger of the interrupted restore, checked against this archive, options
/// and database; this run is counted in it.
async fn resume(ctx: &Arc<Ctx>, leader: &mut Conn) -> Result<()> {
    let client = &leader.session.client;
    let db = ctx.conn().dbname;
    let Some(previous) = ledger::read(client).await? else {
        bail!(
            "database {db:?} has no pgarc restore ledger (schema {}): there is no interrupted \
             restore to resume there (it completed, or it was never started; pg_restore leaves \
             none); restore without --resume into an empty database",
            ledger::SCHEMA
        );
    };
    let (archive, selection) = identities(ctx).await?;
    if previous.archive != archive {
        bail!(
            "the archive differs from the one the interrupted restore into {db:?} used (it \
             had {}, this one has {archive}): resume with the same archive, or restore again \
             into a new database",
            previous.archive
        );
    }
    if previous.selection != selection {
        bail!(
            "the options that select what is restored (-n, -t, -L, --section, -a, -s, \
             --no-owner, --no-privileges, ...) differ from the interrupted restore's: resume \
             with the same ones"
        );
    }
    end_orphans(leader).await?;
    check_unchanged(ctx, leader, &previous).await?;
    let run = ledger::begin_run(&leader.session.client).await?;
    crate::progress::say(&format!(
        "pgarc: resuming the restore into {db:?} (run {run}): {} entries and {} table parts \
         done before are kept",
        previous.done.len(),
        previous.parts.values().map(Vec::len).sum::<usize>()
    ));
    let _ = ctx.ledger.set((run, previous));
    leader.tolerate_existing = true;
    Ok(())
}

/// Ends the sessions the interrupted restore left in the database. A killed client's backend
/// goes on with its statement until it next talks to the client: a CREATE INDEX would finish
/// and commit behind the resumed run's back (or deadlock with it). They are terminated, and
/// waited for.
async fn end_orphans(leader: &Conn) -> Result<()> {
    let client = &leader.session.client;
    let others = "FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() \
                  AND pid <> pg_catalog.pg_backend_pid() AND application_name LIKE 'pgarc restore%'";
    let ended = client
        .query(
            &format!("SELECT pid, pg_catalog.pg_terminate_backend(pid) {others}"),
            &[],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "cannot end the interrupted restore's sessions: {}",
                describe(&e)
            )
        })?;
    if ended.is_empty() {
        return Ok(());
    }
    crate::progress::say(&format!(
        "pgarc: ended {} session(s) the interrupted restore left running",
        ended.len()
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = client
            .query_one(&format!("SELECT count(*) {others}"), &[])
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot check the interrupted restore's sessions: {}",
                    describe(&e)
                )
            })?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{left} session(s) of the interrupted restore are still running in the database \
                 after a minute: end them (pg_terminate_backend) and resume again"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Refuses to resume when the target changed where the restore is to continue: a table whose
/// load the ledger records is gone, or one it is still to load has rows it did not put there.
async fn check_unchanged(ctx: &Arc<Ctx>, leader: &Conn, previous: &ledger::Ledger) -> Result<()> {
    let client = &leader.session.client;
    for (idx, e) in ctx.toc.entries.iter().enumerate() {
        if !(ctx.loads_data(idx) && e.desc.is("TABLE DATA")) || sql::loads_via_partition_root(e) {
            continue;
        }
        let q = sql::entry_table(e);
        let exists_sql = format!(
            "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
            crate::pg::session::literal(&q)
        );
        let exists = client
            .query_one(&exists_sql, &[])
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(|err| anyhow!("cannot check table {}: {}", label(e), describe(&err)))?;
        let loaded = previous.done.contains(&idx) || previous.parts.contains_key(&idx);
        if loaded && !exists {
            bail!(
                "{} was loaded before the interruption and is gone from the database: resuming \
                 would not restore it; restore again into a new database",
                label(e)
            );
        }
        if exists && !loaded {
            let rows = client
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM ONLY {q})"), &[])
                .await
                .map(|r| r.get::<_, bool>(0))
                .map_err(|err| anyhow!("cannot check table {}: {}", label(e), describe(&err)))?;
            if rows {
                bail!(
                    "{} has rows that no committed load of the interrupted restore put there \
                     (written after it stopped?): resuming would add the archive's rows to \
                     them; empty it (TRUNCATE), or restore again into a new database",
                    label(e)
                );
            }
        }
    }
    Ok(())
}

/// A resumed restore: the TABLE DATA entries whose tables an earlier run created and that hold
/// no row yet (checked), loaded as if created in this run (one transaction with TRUNCATE,
/// split across workers).
fn resumed_created(ctx: &Ctx) -> HashSet<usize> {
    let Some((_, previous)) = ctx.ledger.get().filter(|(run, _)| *run > 1) else {
        return HashSet::new();
    };
    ctx.plan
        .table_data_of
        .iter()
        .filter(|(table, _)| previous.done.contains(table))
        .map(|(_, &td)| td)
        .filter(|td| !previous.done.contains(td) && !previous.parts.contains_key(td))
        .collect()
}

/// The restore reached its end: the ledger is dropped, unless a session ended under an entry
/// (terminated, or the server restarted): then it stays, so that `--resume` does what did not
/// commit. (Statement errors, which pg_restore also reports and carries on after, are the
/// restore's result, not an interruption.)
async fn finish_ledger(ctx: &Arc<Ctx>, sessions_lost: usize) {
    if ctx.ledger.get().is_none() {
        return;
    }
    if sessions_lost > 0 {
        crate::progress::say(&format!(
            "pgarc: {sessions_lost} entr{} lost their session: the restore's ledger (schema \
             {}) is kept; run the restore again with --resume to do what did not commit",
            if sessions_lost == 1 { "y" } else { "ies" },
            ledger::SCHEMA
        ));
        return;
    }
    let dropped = async {
        let conn = Conn::open(ctx.clone(), "pgarc restore ledger").await?;
        ledger::drop(&conn.session.client).await
    };
    if let Err(e) = dropped.await {
        crate::progress::say(&format!(
            "pgarc: warning: the restore is complete, but its ledger could not be dropped \
             ({e:#}): DROP SCHEMA {} CASCADE",
            ledger::SCHEMA
        ));
    }
}

/// What the summary says of where the restore went and what it restored, and the
/// `--report` (written, or with `defer_report` kept in the summary).
fn conclude(
    ctx: &Ctx,
    summary: &mut RestoreSummary,
    started_at: std::time::SystemTime,
) -> Result<()> {
    summary.conn = Some(ctx.conn());
    summary.restored_data = ctx
        .toc
        .entries
        .iter()
        .zip(&ctx.plan.items)
        .filter(|(e, item)| {
            item.reqs.data
                && (e.desc.is("TABLE DATA") || e.desc.is("SEQUENCE SET") || e.desc.is("BLOBS"))
        })
        .map(|(e, _)| e.dump_id)
        .collect();
    if let Some(path) = &ctx.opts.report {
        let report = build_report(ctx, summary, started_at);
        if ctx.opts.defer_report {
            summary.report = Some(report);
        } else {
            report
                .write(path)
                .map_err(|e| anyhow!("the restore finished, but {e:#}"))?;
        }
    }
    Ok(())
}

/// `--report`: the restore's account (format-spec/report.schema.json).
fn build_report(
    ctx: &Ctx,
    summary: &RestoreSummary,
    started_at: std::time::SystemTime,
) -> crate::report::Report {
    let phase = |r: crate::report::Report, name: &str, p: &PhaseStats| {
        r.phase(name, p.elapsed, Some(p.entries))
    };
    let mut report = crate::report::Report::new(
        "restore",
        started_at,
        &summary.archive,
        &summary.database,
        summary.jobs,
    );
    report = phase(report, "pre-data", &summary.pre_data);
    report = phase(report, "data", &summary.data);
    report = phase(report, "post-data", &summary.post_data);
    report = phase(report, "acl and after", &summary.acl);
    report = report.tables(
        summary.table_reports.clone(),
        summary.elapsed,
        summary.errors,
    );
    report.server_version = Some(ctx.server_version_num().to_string());
    report.resume = summary.run.map(|run| crate::report::ResumeReport {
        run,
        kept: summary.kept_loads,
        done: summary.loads,
        redone: summary.redone,
    });
    report
}

/// What a restore that stops early has done: which tables' data is in (committed) and which
/// is not, every unfinished one named up to a limit, those with errors counted among them.
fn progress_report(ctx: &Ctx, loaded: &HashSet<usize>, failed: &HashSet<usize>) -> String {
    let tables: Vec<usize> = (0..ctx.toc.entries.len())
        .filter(|&i| {
            let e = &ctx.toc.entries[i];
            e.had_dumper && e.desc.is("TABLE DATA") && ctx.plan.items[i].reqs.data
        })
        .collect();
    let name = |i: usize| crate::pg::carrier::display(&ctx.toc.entries[i].qualified_name());
    let done = tables.iter().filter(|i| loaded.contains(i)).count();
    let mut unfinished: Vec<(String, bool)> = tables
        .iter()
        .filter(|i| !loaded.contains(i))
        .map(|&i| (name(i), failed.contains(&i)))
        .collect();
    unfinished.sort();
    let with_errors = unfinished.iter().filter(|(_, f)| *f).count();
    const SHOWN: usize = 20;
    let more = unfinished.len().saturating_sub(SHOWN);
    let shown: Vec<String> = unfinished
        .iter()
        .take(SHOWN)
        .map(|(n, f)| {
            if *f {
                format!("{n} (error)")
            } else {
                n.clone()
            }
        })
        .collect();
    format!(
        "data of {done} of {} tables is complete (committed); unfinished: {}{}{}",
        tables.len(),
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        if with_errors > 0 {
            format!(" ({with_errors} of them with errors, listed above)")
        } else {
            String::new()
        }
    )
}

/// Counts errors; the first one is fatal with `--exit-on-error`.
struct Errors {
    count: usize,
    exit_on_error: bool,
}

impl Errors {
    fn new(exit_on_error: bool) -> Self {
        Errors {
            count: 0,
            exit_on_error,
        }
    }

    fn add(&mut self, errors: Vec<String>) -> Result<()> {
        for e in errors {
            if self.exit_on_error {
                bail!("{e} (stopped by --exit-on-error)");
            }
            crate::progress::error(&format!("pgarc: error: {e}"));
            self.count += 1;
        }
        Ok(())
    }
}

async fn open_leader(ctx: &Arc<Ctx>) -> Result<Conn> {
    let first = Conn::open(ctx.clone(), "pgarc restore leader").await;
    match first {
        Err(e) if ctx.conn().may_prompt() && ConnectFailed::needs_password(&e) => {
            let mut params = ctx.conn();
            params.prompt_password()?;
            *ctx.conn.write().expect("not poisoned") = params;
            Conn::open(ctx.clone(), "pgarc restore leader").await
        }
        r => r,
    }
}

/// Refuses to restore over existing objects unless `--clean` says to drop them.
async fn check_target(ctx: &Ctx, leader: &Conn) -> Result<()> {
    let client = &leader.session.client;
    if ctx.opts.create {
        let db = ctx
            .toc
            .entries
            .iter()
            .find(|e| e.desc.is("DATABASE"))
            .and_then(|e| e.tag.to_str_lossy().map(|s| s.into_owned()))
            .ok_or_else(|| {
                anyhow!(
                    "--create: the archive has no DATABASE entry (was it dumped with pg_dump -Fd?)"
                )
            })?;
        let exists = query_text(
            client,
            &format!(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}",
                crate::pg::session::literal(&db)
            ),
        )
        .await?;
        if !exists.is_empty() && !ctx.opts.clean {
            bail!(
                "database {db:?} already exists: drop it first, or add --clean to drop and \
                 recreate it"
            );
        }
        return Ok(());
    }
    let creates_schema = ctx.plan.items.iter().any(|it| it.prefork && it.reqs.schema);
    // A partial restore (-L, -n, -t, ...) is meant for a database that has the rest.
    let selective = ctx.opts.use_list.is_some() || ctx.opts.names.any();
    if ctx.opts.clean || !creates_schema || selective {
        return Ok(());
    }
    let rows = query_text(client, EMPTY_CHECK).await?;
    if let Some(row) = rows.first() {
        let count: u64 = row[0].as_deref().unwrap_or("0").parse().unwrap_or(0);
        if count > 0 {
            let example = row[1].clone().unwrap_or_default();
            bail!(
                "database {:?} is not empty: it holds {example}{}; restore into an empty \
                 database (createdb, or --create), or add --clean to drop the archive's objects \
                 first",
                ctx.conn().dbname,
                if count > 1 {
                    format!(" and {} more objects", count - 1)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// Counts user objects: relations, functions, types, schemas besides public, extensions
/// besides plpgsql, large objects; and names one of them.
const EMPTY_CHECK: &str = r#"
WITH user_ns AS (
  SELECT oid, nspname FROM pg_catalog.pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%'
), objs AS (
  SELECT 'relation ' || n.nspname || '.' || c.relname AS what FROM pg_catalog.pg_class c
    JOIN user_ns n ON n.oid = c.relnamespace
  UNION ALL
  SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_catalog.pg_proc p
    JOIN user_ns n ON n.oid = p.pronamespace
  UNION ALL
  SELECT 'type ' || n.nspname || '.' || t.typname FROM pg_catalog.pg_type t
    JOIN user_ns n ON n.oid = t.typnamespace
    WHERE t.typrelid = 0 AND t.typelem = 0
  UNION ALL
  SELECT 'schema ' || nspname FROM user_ns WHERE nspname <> 'public'
  UNION ALL
  SELECT 'extension ' || extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'
  UNION ALL
  SELECT 'large object ' || oid FROM pg_catalog.pg_largeobject_metadata
)
SELECT count(*), min(what) FROM objs
"#;

/// `--clean`: the selected entries' DROP statements in reverse TOC order.
async fn clean(ctx: &Arc<Ctx>, leader: &mut Conn, errors: &mut Errors) -> Result<()> {
    for idx in (0..ctx.toc.entries.len()).rev() {
        let e = &ctx.toc.entries[idx];
        let reqs = ctx.plan.items[idx].reqs;
        if !(reqs.schema || reqs.data) {
            continue;
        }
        if ctx.opts.create && !(e.desc.is("DATABASE") || e.desc.is("DATABASE PROPERTIES")) {
            continue;
        }
        let (stmts, warning) = sql::drop_statements(e, ctx.opts.if_exists);
        if stmts.is_empty() {
            continue;
        }
        if let Some(w) = warning {
            crate::progress::say(&format!("pgarc: warning: {}: {w}", label(e)));
        }
        let mut out = Outcome::default();
        if let Some(ns) = e.namespace.carrier() {
            if let Some(stmt) = leader.state.schema(&ns) {
                leader.exec(e, &stmt, &mut out).await;
            }
        }
        for stmt in stmts {
            leader.exec(e, &stmt, &mut out).await;
        }
        errors.add(out.errors)?;
    }
    leader.state.forget_schema();
    Ok(())
}

/// How many parts a table should be loaded in: its share of all data times the workers,
/// at most one per two frames.
fn parts_wanted(ctx: &Ctx, idx: usize, total: u64) -> usize {
    let Some(source) = ctx.data.get(&idx) else {
        return 1;
    };
    let Some(frames) = source.frames() else {
        return 1;
    };
    let jobs = ctx.opts.jobs as u64;
    let share = (source.file.size.saturating_mul(jobs)).div_ceil(total.max(1));
    let by_frames = (frames.len().saturating_sub(1) / 2).max(1) as u64;
    share.clamp(1, jobs).min(by_frames) as usize
}

/// Cuts frames `0..n` into `k` contiguous ranges of about equal stored bytes.
fn split_frames(frames: &[crate::archive::frame::FrameIndexEntry], k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, frames.len().max(1));
    let total: u64 = frames.iter().map(|f| f.stored).sum();
    let mut ranges = Vec::with_capacity(k);
    let mut start = 0;
    let mut acc = 0u64;
    // A frame goes to the part its middle falls in.
    for (i, f) in frames.iter().enumerate() {
        let parts_left = k - ranges.len();
        if parts_left > 1 && i > start {
            let mid = acc + f.stored / 2;
            let crossed = mid * k as u64 >= total * (ranges.len() as u64 + 1);
            let must = frames.len() - i == parts_left - 1;
            if crossed || must {
                ranges.push(start..i);
                start = i;
            }
        }
        acc += f.stored;
    }
    ranges.push(start..frames.len());
    ranges
}

/// One worker: a task that owns a session and runs the jobs it is sent. When its session
/// ends under it (a terminated backend), it reports the job's outcome with the reason and
/// opens a new session to carry on; `gone` when it cannot.
fn spawn_worker(
    w: usize,
    mut conn: Conn,
    done_tx: mpsc::UnboundedSender<Done>,
) -> (
    mpsc::UnboundedSender<Job>,
    tokio::task::JoinHandle<Option<Conn>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let task = tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let (Job::Entry { idx, .. }
            | Job::Part { idx, .. }
            | Job::Undo { idx }
            | Job::Analyze { idx }
            | Job::Rest { idx, .. }) = &job;
            let idx = *idx;
            crate::progress::worker(w + 1, Some(label(&conn.ctx.toc.entries[idx])));
            let undo = matches!(job, Job::Undo { .. });
            let analyze = matches!(job, Job::Analyze { .. });
            let mut outcome = match job {
                Job::Entry { idx, truncate } => {
                    let mut out = conn.restore_entry(idx, truncate).await;
                    // A schema entry is recorded after it ran (a data load records itself).
                    // One with errors is not: a resumed restore runs it again.
                    if out.lost.is_none() && out.errors.is_empty() && !conn.ctx.loads_data(idx) {
                        if let Err(e) = conn.mark_done(&[idx]).await {
                            out.errors.push(format!("{e:#}"));
                        }
                    }
                    out
                }
                Job::Rest { idx, ranges } => conn.load_rest(idx, ranges).await,
                Job::Part { idx, range, gang } => {
                    let mut out = Outcome::default();
                    conn.load_table(idx, Some((range, gang)), false, &mut out)
                        .await;
                    out
                }
                Job::Undo { idx } => conn.undo_load(idx).await,
                Job::Analyze { idx } => conn.analyze(idx).await,
            };
            crate::progress::worker(w + 1, None);
            outcome.lost = conn.lost();
            let mut gone = false;
            if outcome.lost.is_some() {
                let single = conn.ctx.opts.single_transaction;
                // A terminated session is replaced; after a server restart (every session and
                // its work gone, the new session sees another start time) the restore stops.
                match Conn::open(conn.ctx.clone(), &format!("pgarc restore worker {w}")).await {
                    Ok(fresh) if !single && !fresh.restarted => conn = fresh,
                    Ok(_) => {
                        outcome.lost = Some(format!(
                            "{}; the server restarted",
                            outcome.lost.unwrap_or_default()
                        ));
                        gone = true;
                    }
                    Err(_) => gone = true,
                }
            }
            let done = Done {
                worker: w,
                idx,
                outcome,
                undo,
                analyze,
                gone,
            };
            if done_tx.send(done).is_err() || gone {
                return None;
            }
        }
        Some(conn)
    });
    (tx, task)
}

/// An entry being restored: its account, and for table data the report in progress.
struct Load {
    account: TableLoad,
    started: Instant,
    report: Option<crate::report::TableReport>,
}

/// The main and later passes (format-spec/tool.md §4): hands the scheduler's entries to idle
/// workers, splits a big table across idle workers where that is safe, and keeps the
/// account of what is committed. The leader's connection becomes worker 0.
struct Dispatcher<'a> {
    ctx: &'a Arc<Ctx>,
    sched: Scheduler,
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    tasks: Vec<tokio::task::JoinHandle<Option<Conn>>>,
    running: Vec<Option<usize>>,
    created: &'a HashSet<usize>,
    /// Tables that may be loaded in separately committed parts.
    splittable: HashSet<usize>,
    data_total: u64,
    data_left: usize,
    loads: HashMap<usize, Load>,
    /// TABLE DATA entries whose rows are all in; those that failed.
    loaded: HashSet<usize>,
    failed: HashSet<usize>,
    main_started: Instant,
    pass_started: Instant,
    /// `--analyze`: the tables to analyze as they become ready.
    analyze: Option<Analyzer>,
    /// Every pass has ended (what is left is `--analyze`'s last tables).
    passes_done: bool,
}

impl Dispatcher<'_> {
    fn analyze_ready(&self) -> bool {
        self.analyze.as_ref().is_some_and(Analyzer::has_ready)
    }

    /// After the last pass: queues the loaded tables whose indexes never all finished.
    fn flush_analyze(&mut self) -> bool {
        match self.analyze.as_mut() {
            Some(a) => {
                a.flush();
                a.has_ready()
            }
            None => false,
        }
    }

    /// Handles a finished `ANALYZE`: its error, if any, costs nothing else.
    fn analyzed(
        &mut self,
        done: Done,
        summary: &mut RestoreSummary,
        errors: &mut Errors,
    ) -> Result<()> {
        let Done {
            worker,
            idx,
            mut outcome,
            gone,
            ..
        } = done;
        let e = &self.ctx.toc.entries[idx];
        if let Some(reason) = &outcome.lost {
            outcome.errors = vec![format!(
                "ANALYZE of {}: the session of worker {} ended ({reason}); the table's data is \
                 in, its statistics are not",
                crate::pg::carrier::display(&e.qualified_name()),
                worker + 1
            )];
        }
        if gone {
            errors.add(outcome.errors)?;
            bail!(
                "the connection to the server was lost and no new session could be opened: the \
                 restore stopped; {}; restore again with --clean, or into a new database",
                progress_report(self.ctx, &self.loaded, &self.failed)
            );
        }
        if outcome.errors.is_empty() {
            summary.analyzed += 1;
        }
        errors.add(outcome.errors)
    }

    fn is_data(&self, i: usize) -> bool {
        self.ctx.toc.entries[i].had_dumper && self.ctx.plan.items[i].reqs.data
    }

    /// Sends ready entries to idle workers.
    fn dispatch(&mut self, summary: &mut RestoreSummary) {
        let ctx = self.ctx;
        let plan = &ctx.plan;
        loop {
            let idle: Vec<usize> = (0..self.running.len())
                .filter(|&w| self.running[w].is_none())
                .collect();
            if idle.is_empty() {
                break;
            }
            let busy: Vec<usize> = self.running.iter().flatten().copied().collect();
            let Some(idx) = self.sched.next(plan, &busy) else {
                // Nothing else ready for this worker: a table's statistics.
                match self.analyze.as_mut().and_then(Analyzer::take_ready) {
                    Some(table) => {
                        self.running[idle[0]] = Some(table);
                        let _ = self.jobs[idle[0]].send(Job::Analyze { idx: table });
                        continue;
                    }
                    None => break,
                }
            };
            if self.resumed(idx, idle[0], summary) {
                continue;
            }
            let e = &ctx.toc.entries[idx];
            let truncate = self.created.contains(&idx) && !sql::loads_via_partition_root(e);
            let k = if self.splittable.contains(&idx) {
                parts_wanted(ctx, idx, self.data_total).min(idle.len())
            } else {
                1
            };
            if let Some(source) = ctx.data.get(&idx) {
                let report = crate::report::TableReport {
                    schema: crate::pg::carrier::display(&e.namespace.carrier().unwrap_or_default()),
                    name: crate::pg::carrier::display(&e.tag.carrier().unwrap_or_default()),
                    rows: 0,
                    raw_bytes: 0,
                    stored_bytes: source.file.size,
                    seconds: 0.0,
                    workers: Vec::new(),
                    pieces: k,
                };
                let undoable = truncate || self.splittable.contains(&idx);
                self.loads.insert(idx, Load::new(k, undoable, Some(report)));
            } else {
                self.loads.insert(idx, Load::new(1, false, None));
            }
            if k >= 2 {
                let frames = ctx.data[&idx]
                    .frames()
                    .cloned()
                    .expect("split needs frames");
                let ranges = split_frames(&frames, k);
                // Each part is a load of its own (and, of a table begun before, one redone).
                summary.loads += ranges.len() - 1;
                if ctx.ledger.get().is_some_and(|(_, l)| l.in_flight(idx)) {
                    summary.redone += ranges.len() - 1;
                }
                let gang = Gang::new(ranges.len());
                summary.split.push((
                    crate::pg::carrier::display(&e.qualified_name()),
                    ranges.len(),
                    frames.len(),
                ));
                if let Some(l) = self.loads.get_mut(&idx) {
                    l.account = TableLoad::new(ranges.len(), true);
                }
                for (range, &w) in ranges.into_iter().zip(&idle) {
                    self.running[w] = Some(idx);
                    let _ = self.jobs[w].send(Job::Part {
                        idx,
                        range,
                        gang: gang.clone(),
                    });
                }
            } else {
                let w = idle[0];
                self.running[w] = Some(idx);
                let _ = self.jobs[w].send(Job::Entry { idx, truncate });
            }
        }
    }

    /// A resumed restore: an entry an earlier run finished is kept (completed at once); the
    /// frames left of a table part of which an earlier run committed go to worker `w` in one
    /// job. Counts the data loads done and redone. True when `idx` was handled here.
    fn resumed(&mut self, idx: usize, w: usize, summary: &mut RestoreSummary) -> bool {
        let ctx = self.ctx;
        let Some((_, previous)) = ctx.ledger.get() else {
            return false;
        };
        let loads_data = ctx.loads_data(idx);
        if previous.done.contains(&idx) {
            summary.kept += 1;
            summary.kept_loads += usize::from(loads_data);
            self.loads.insert(idx, Load::new(1, false, None));
            self.complete(idx, true, 0, 0, summary);
            return true;
        }
        if !loads_data {
            return false;
        }
        summary.loads += 1;
        // An earlier run began loading this and did not commit it: this run's loads of it
        // are work done again.
        summary.redone += usize::from(previous.in_flight(idx));
        let frames = ctx.data.get(&idx).and_then(|d| d.frames().map(|f| f.len()));
        let Some(missing) = frames.and_then(|n| previous.missing(idx, n)) else {
            return false;
        };
        summary.kept_loads += previous.parts.get(&idx).map_or(0, Vec::len);
        self.loads.insert(idx, Load::new(1, false, None));
        if missing.is_empty() {
            self.complete(idx, true, 0, 0, summary);
        } else {
            self.running[w] = Some(idx);
            let _ = self.jobs[w].send(Job::Rest {
                idx,
                ranges: missing,
            });
        }
        true
    }

    /// Takes a worker's report. Errors of a table are reported once (its first failing
    /// part's); rows count only when every part committed.
    fn on_done(
        &mut self,
        done: Done,
        summary: &mut RestoreSummary,
        errors: &mut Errors,
    ) -> Result<()> {
        let ctx = self.ctx;
        self.running[done.worker] = None;
        if done.analyze {
            return self.analyzed(done, summary, errors);
        }
        let Done {
            worker,
            idx,
            mut outcome,
            undo,
            gone,
            ..
        } = done;
        if let Some(reason) = &outcome.lost {
            summary.sessions_lost += 1;
            let e = &ctx.toc.entries[idx];
            let fate = if outcome.committed || !self.is_data(idx) {
                String::new()
            } else if self.loads.get(&idx).is_some_and(|l| l.account.undoable()) {
                "; its rows are not in the database".to_string()
            } else {
                "; whether its COPY committed is unknown: the table holds all of its rows \
                 from the archive or none of them"
                    .to_string()
            };
            // One error for the entry: the session's end (the statement's own failure, e.g.
            // "connection closed", is its consequence).
            outcome.errors = vec![format!(
                "{}: the session of worker {} ended ({reason}; it was terminated, e.g. by \
                 pg_terminate_backend, or the server stopped){fate}",
                label(e),
                worker + 1
            )];
            if gone {
                for err in &outcome.errors {
                    crate::progress::error(&format!("pgarc: error: {err}"));
                }
                if self.is_data(idx) && ctx.toc.entries[idx].desc.is("TABLE DATA") {
                    self.failed.insert(idx);
                }
                bail!(
                    "the connection to the server was lost ({reason}) and no new session \
                     could be opened: the restore stopped; {}; restore again with --clean, \
                     or into a new database",
                    progress_report(ctx, &self.loaded, &self.failed)
                );
            }
        }
        let is_data = self.is_data(idx);
        let load = self.loads.get_mut(&idx).expect("dispatched");
        let next = if undo {
            let ok = outcome.errors.is_empty() && outcome.lost.is_none();
            errors.add(std::mem::take(&mut outcome.errors))?;
            load.account.undone(ok)
        } else {
            if let Some(t) = load.report.as_mut() {
                if !t.workers.contains(&(worker + 1)) {
                    t.workers.push(worker + 1);
                }
            }
            // -1: the rows are in once the one transaction commits, at the end.
            let committed = outcome.committed
                || (is_data && ctx.opts.single_transaction && outcome.errors.is_empty());
            let (next, report) = load.account.part_done(PartOutcome {
                committed,
                failed: !outcome.errors.is_empty() || outcome.lost.is_some(),
                uncertain: outcome.lost.is_some() && !outcome.committed,
                rows: outcome.rows,
                raw_bytes: outcome.raw_bytes,
            });
            let errs = std::mem::take(&mut outcome.errors);
            if report {
                errors.add(errs)?;
            }
            next
        };
        match next {
            Next::Wait => {}
            Next::Undo => {
                self.running[worker] = Some(idx);
                let _ = self.jobs[worker].send(Job::Undo { idx });
            }
            Next::Done {
                loaded,
                rows,
                raw_bytes,
            } => self.complete(idx, loaded, rows, raw_bytes, summary),
        }
        Ok(())
    }

    /// A table (or other entry) is finished: the scheduler may release what waits for it.
    fn complete(
        &mut self,
        idx: usize,
        loaded: bool,
        rows: u64,
        raw: u64,
        summary: &mut RestoreSummary,
    ) {
        let ctx = self.ctx;
        let load = self.loads.remove(&idx).expect("dispatched");
        self.sched.complete(&ctx.plan, idx);
        let e = &ctx.toc.entries[idx];
        let is_table = self.is_data(idx) && e.desc.is("TABLE DATA");
        if is_table {
            crate::progress::item_done();
            if !loaded {
                self.failed.insert(idx);
            } else {
                self.loaded.insert(idx);
                summary.tables += 1;
                if let Some(a) = self.analyze.as_mut() {
                    a.table_loaded(idx);
                }
            }
        } else if let Some(a) = self.analyze.as_mut() {
            a.entry_done(&ctx.plan, idx);
        }
        summary.rows += rows;
        summary.raw_bytes += raw;
        if let Some(mut t) = load.report {
            t.rows = rows;
            t.raw_bytes = raw;
            t.seconds = crate::report::secs(load.started.elapsed());
            t.workers.sort_unstable();
            summary.table_reports.push(t);
        }
        if self.is_data(idx) {
            summary.data.entries += 1;
            self.data_left -= 1;
            if self.data_left == 0 {
                summary.data.elapsed = self.main_started.elapsed();
                crate::progress::say(&format!(
                    "pgarc: data: {} tables, {} rows, {} loaded in {:.1} s{}",
                    summary.tables,
                    summary.rows,
                    crate::run::human(summary.raw_bytes),
                    summary.data.elapsed.as_secs_f64(),
                    if self.failed.is_empty() {
                        String::new()
                    } else {
                        format!("; {} tables not loaded (errors above)", self.failed.len())
                    }
                ));
            }
        } else if self.sched.pass() == Pass::Main {
            if e.section == crate::archive::toc::Section::PostData.code() {
                summary.post_data.entries += 1;
            } else {
                summary.data.entries += 1;
            }
        } else {
            summary.acl.entries += 1;
        }
    }

    /// Nothing runs and nothing is ready: closes the pass; false when none is left.
    fn end_pass(&mut self, summary: &mut RestoreSummary) -> bool {
        let finished = self.sched.pass();
        let elapsed = self.pass_started.elapsed();
        match finished {
            Pass::Main => {
                summary.post_data.elapsed = self
                    .main_started
                    .elapsed()
                    .saturating_sub(summary.data.elapsed);
                crate::progress::say(&format!(
                    "pgarc: post-data: {} entries done after {:.1} s",
                    summary.post_data.entries,
                    summary.post_data.elapsed.as_secs_f64()
                ));
            }
            Pass::Acl | Pass::PostAcl => summary.acl.elapsed += elapsed,
        }
        self.pass_started = Instant::now();
        self.sched.advance(&self.ctx.plan)
    }

    /// Stops every worker now (their open transactions roll back as the sessions close) and
    /// removes the committed parts of split tables that did not finish.
    async fn abandon(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let partial: Vec<usize> = self
            .loads
            .iter()
            .filter(|(_, l)| l.account.needs_undo_if_abandoned())
            .map(|(i, _)| *i)
            .collect();
        if partial.is_empty() {
            return;
        }
        let undo = async {
            let mut conn = Conn::open(self.ctx.clone(), "pgarc restore cleanup")
                .await
                .ok()?;
            for idx in partial {
                let out = conn.undo_load(idx).await;
                for e in out.errors {
                    crate::progress::error(&format!("pgarc: error: {e}"));
                }
            }
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), undo).await;
    }
}

impl Load {
    fn new(parts: usize, undoable: bool, report: Option<crate::report::TableReport>) -> Load {
        Load {
            account: TableLoad::new(parts, undoable),
            started: Instant::now(),
            report,
        }
    }
}

/// The tables worth splitting that are safe to split: created in this run (so no row but
/// this run's is in them, and a failed part can be undone by TRUNCATE), not loaded through
/// a partition root, and with nothing on them now that sees across rows.
async fn splittable_tables(
    ctx: &Ctx,
    leader: &Conn,
    created: &HashSet<usize>,
) -> Result<HashSet<usize>> {
    if ctx.opts.jobs < 2 || ctx.opts.single_transaction {
        return Ok(HashSet::new());
    }
    let total: u64 = ctx.data.values().map(|d| d.file.size).sum();
    let candidates: Vec<usize> = created
        .iter()
        .copied()
        .filter(|&i| {
            let e = &ctx.toc.entries[i];
            ctx.plan.items[i].reqs.data
                && e.desc.is("TABLE DATA")
                && !sql::loads_via_partition_root(e)
                && parts_wanted(ctx, i, total) >= 2
        })
        .collect();
    Ok(leader.splittable(&candidates).await?.into_iter().collect())
}

/// The main and later passes with N workers; the leader's connection becomes worker 0.
async fn parallel(
    ctx: &Arc<Ctx>,
    leader: Conn,
    created: &HashSet<usize>,
    summary: &mut RestoreSummary,
    errors: &mut Errors,
    signals: &mut crate::run::Signals,
) -> Result<()> {
    let plan = &ctx.plan;
    let jobs = ctx.opts.jobs.max(1);
    let splittable = splittable_tables(ctx, &leader, created).await?;
    let mut conns = vec![leader];
    let opened = futures_util::future::join_all((1..jobs).map(|n| {
        let ctx = ctx.clone();
        async move { Conn::open(ctx, &format!("pgarc restore worker {n}")).await }
    }))
    .await;
    for c in opened {
        let mut c = c?;
        if !ctx.opts.single_transaction {
            c.async_commits(true).await?;
        }
        conns.push(c);
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (job_txs, tasks): (Vec<_>, Vec<_>) = conns
        .into_iter()
        .enumerate()
        .map(|(w, conn)| spawn_worker(w, conn, done_tx.clone()))
        .unzip();
    drop(done_tx);
    let data_items =
        (0..plan.items.len()).filter(|&i| ctx.toc.entries[i].had_dumper && plan.items[i].reqs.data);
    let mut d = Dispatcher {
        ctx,
        sched: Scheduler::new(plan),
        jobs: job_txs,
        tasks,
        running: vec![None; jobs],
        created,
        splittable,
        data_total: data_items.clone().map(|i| plan.items[i].data_len).sum(),
        data_left: data_items.count(),
        loads: HashMap::new(),
        loaded: HashSet::new(),
        failed: HashSet::new(),
        main_started: Instant::now(),
        pass_started: Instant::now(),
        analyze: ctx.opts.analyze.then(|| Analyzer::new(&ctx.toc, plan)),
        passes_done: false,
    };
    loop {
        d.dispatch(summary);
        if d.running.iter().all(Option::is_none) && !d.sched.has_ready() && !d.analyze_ready() {
            if !d.passes_done {
                if d.end_pass(summary) {
                    continue;
                }
                d.passes_done = true;
            }
            if d.flush_analyze() {
                continue;
            }
            break;
        }
        let step = tokio::select! {
            done = done_rx.recv() => match done {
                Some(done) => d.on_done(done, summary, errors),
                None => Err(anyhow!("a restore worker stopped unexpectedly")),
            },
            signal = signals.recv() => {
                d.abandon().await;
                return Err(crate::run::Interrupted {
                    signal,
                    what: format!(
                        "the restore stopped; {}; restore again with --clean, or into a new \
                         database",
                        progress_report(ctx, &d.loaded, &d.failed)
                    ),
                }
                .into());
            }
        };
        if let Err(e) = step {
            d.abandon().await;
            return Err(e);
        }
    }
    // What a dependency cycle left behind, serially on one worker.
    drop(std::mem::take(&mut d.jobs));
    let mut conns = Vec::new();
    for t in std::mem::take(&mut d.tasks) {
        conns.extend(t.await.context("a restore worker panicked")?);
    }
    let left = d.sched.left_over();
    if let Some(conn) = conns.first_mut() {
        for idx in left {
            if !plan.items[idx].reqs.selected() {
                continue;
            }
            let out = conn.restore_entry(idx, false).await;
            summary.rows += out.rows;
            errors.add(out.errors)?;
        }
        if ctx.opts.single_transaction {
            conn.session
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| {
                    anyhow!("the restore's transaction did not commit: {}", describe(&e))
                })?;
        } else {
            // Every schema statement's commit, of every session, reaches disk before the
            // restore says it is done.
            conn.async_commits(false).await.map_err(|e| {
                anyhow!("the restore's work is committed, but flushing it failed: {e:#}")
            })?;
        }
    }
    crate::progress::say(&format!(
        "pgarc: acl and after: {} entries in {:.1} s",
        summary.acl.entries,
        summary.acl.elapsed.as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::frame::FrameIndexEntry;

    fn frames(sizes: &[u64]) -> Vec<FrameIndexEntry> {
        let mut off = 0;
        sizes
            .iter()
            .map(|&s| {
                let f = FrameIndexEntry {
                    rows_sum: None,
                    offset: off,
                    stored: s,
                    raw: s,
                    rows: 1,
                    sha256: [0; 32],
                };
                off += s;
                f
            })
            .collect()
    }

    #[test]
    fn options_that_cannot_go_together_are_refused_by_the_library() {
        let conn = ConnParams::resolve(&crate::pg::conn::ConnArgs::default(), &|_| None)
            .expect("defaults resolve");
        let mut o = RestoreOptions::new(conn, Location::Local(PathBuf::from("/a")));
        assert_eq!(o.validate(), Ok(()));
        o.single_transaction = true;
        assert_eq!(o.validate(), Ok(()));
        o.jobs = 2;
        assert_eq!(o.validate(), Err(OptionsError::SingleTransactionJobs));
        o.jobs = 1;
        o.create = true;
        assert_eq!(o.validate(), Err(OptionsError::SingleTransactionCreate));
    }

    #[test]
    fn frames_are_cut_into_contiguous_balanced_ranges() {
        let f = frames(&[10, 10, 10, 10, 10, 10, 10, 10, 1]);
        let r = split_frames(&f, 2);
        assert_eq!(r, [0..4, 4..9]);
        let r = split_frames(&f, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, 9);
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(!w[0].is_empty());
        }
        // More parts than frames can never produce an empty range.
        let r = split_frames(&frames(&[100, 1, 1]), 3);
        assert_eq!(r, [0..1, 1..2, 2..3]);
    }
}
