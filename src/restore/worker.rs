//! A restore worker: one database session that restores TOC entries the way
//! pg_restore's `restore_toc_entry` does, and loads table data from the archive through a
//! reader thread that checks every frame before its rows are sent.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt};
use tokio::sync::{mpsc, Mutex, Notify};

use super::sql::{self, SessionState};
use super::Ctx;
use crate::archive::data::{LargeObject, ReadError, TableData};
use crate::archive::reader::RowSink;
use crate::archive::toc::TocEntry;
use crate::pg::carrier;
use crate::pg::session::{describe, Session};

/// What restoring an entry (or a part of a table) did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub errors: Vec<String>,
    /// A TABLE entry: whether it was created without error.
    pub table_created: Option<bool>,
    /// A DATABASE entry ran: the leader reconnects to this database.
    pub reconnect: Option<String>,
    pub rows: u64,
    pub raw_bytes: u64,
    /// The session's connection is gone (server restart, crash, termination): why.
    pub lost: Option<String>,
    /// Table data: the transaction that loaded `rows` committed (the rows are in the
    /// database). False when it rolled back, failed, or its fate is unknown (the session
    /// ended during COMMIT).
    pub committed: bool,
}

/// The parts of one table loaded by several workers at once: each part commits only when
/// every part has loaded without error, so a failure anywhere leaves the table without any
/// of the table's rows.
#[derive(Debug)]
pub struct Gang {
    parts: usize,
    state: Mutex<(usize, bool)>,
    notify: Notify,
}

impl Gang {
    pub fn new(parts: usize) -> Arc<Gang> {
        Arc::new(Gang {
            parts,
            state: Mutex::new((0, true)),
            notify: Notify::new(),
        })
    }

    /// Reports this part's result and waits for the others; true when all succeeded.
    async fn arrive(&self, ok: bool) -> bool {
        {
            let mut s = self.state.lock().await;
            s.0 += 1;
            s.1 &= ok;
            if s.0 == self.parts {
                self.notify.notify_waiters();
                return s.1;
            }
        }
        loop {
            let notified = self.notify.notified();
            pin_mut!(notified);
            notified.as_mut().enable();
            {
                let s = self.state.lock().await;
                if s.0 == self.parts {
                    return s.1;
                }
            }
            notified.await;
        }
    }
}

/// A connection with what it has set.
pub struct Conn {
    pub session: Session,
    pub state: SessionState,
    pub ctx: Arc<Ctx>,
    /// The server was started after the restore's first session (it restarted).
    pub restarted: bool,
    /// A resumed restore running schema entries again: an object that is there already
    /// (the entry ran before the restore stopped) is not an error ([`super::ledger`]).
    pub tolerate_existing: bool,
    /// A schema entry's statements are running (with `tolerate_existing`): the only ones
    /// whose "already exists" is forgiven, never a load's.
    in_schema_entry: bool,
}

impl Conn {
    /// Why the connection ended, once it has.
    pub fn lost(&self) -> Option<String> {
        self.session.closed.borrow().clone()
    }
}

enum FromReader {
    Rows(Bytes),
    Done(u64),
    Failed(ReadError),
}

/// Why a table's COPY failed.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("{0}")]
    Start(String),
    #[error("COPY failed: {0}")]
    Server(String),
    #[error("the server stored {stored} rows but the archive holds {read}")]
    Count { stored: u64, read: u64 },
    #[error("{0}")]
    Archive(ReadError),
    #[error("the archive reader stopped unexpectedly")]
    ReaderStopped,
}

/// Why loading a large object failed.
#[derive(Debug, thiserror::Error)]
enum BlobError {
    #[error("{0}")]
    Listed(crate::archive::data::Located),
    #[error("large object {oid}: {error}")]
    Archive { oid: u32, error: ReadError },
}

const CHUNK_BYTES: usize = 1 << 20;
/// Makes the transaction's commit wait for its WAL as the session's own setting says, in a
/// session whose other commits do not (tool.md §8): every transaction whose commit the
/// restore reports (rows loaded, large objects, rows removed) runs it.
const DURABLE_COMMIT: &str = "SET LOCAL synchronous_commit TO DEFAULT";
/// Tables created in this run with at least this many bytes of rows (decompressed, as the
/// frame index says; a stream's stored size otherwise) are truncated in their load's
/// transaction and loaded with COPY FREEZE (unless `--no-freeze`): about 32 pages.
pub const FREEZE_MIN_BYTES: u64 = 256 << 10;
/// The largest CopyData message a restore sends.
const SEND_BYTES: usize = 256 << 10;

impl Conn {
    /// Opens a session and sets the fixed restore state.
    pub async fn open(ctx: Arc<Ctx>, name: &str) -> anyhow::Result<Conn> {
        let session = crate::pg::session::connect(&ctx.conn(), name).await?;
        let row = crate::pg::session::query_text(
            &session.client,
            "SELECT current_setting('server_version_num'), pg_catalog.pg_postmaster_start_time()::text",
        )
        .await?
        .pop()
        .unwrap_or_default();
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        if ctx.server_version_num() == 0 {
            ctx.set_server_version_num(col(0).parse().unwrap_or(0));
        }
        let restarted = !ctx.same_server_start(&col(1));
        let mut conn = Conn {
            session,
            state: SessionState::new(ctx.search_path.is_some()),
            ctx,
            restarted,
            tolerate_existing: false,
            in_schema_entry: false,
        };
        conn.tolerate_existing = conn.ctx.ledger_run().is_some_and(|run| run > 1);
        conn.fixed_state().await?;
        Ok(conn)
    }

    /// `_doSetFixedOutputState`: every statement must succeed (a wrong --role stops here).
    pub async fn fixed_state(&mut self) -> anyhow::Result<()> {
        self.state = SessionState::new(self.ctx.search_path.is_some());
        for stmt in self.ctx.fixed_state(self.ctx.server_version_num()) {
            self.session
                .client
                .batch_execute(&stmt)
                .await
                .map_err(|e| anyhow::anyhow!("{stmt}: {}", describe(&e)))?;
        }
        Ok(())
    }

    /// Schema statements' commits (tool.md §8): `on`, this session's commits stop waiting for
    /// their WAL to reach disk (`SET synchronous_commit = off`, this session only; loads
    /// still wait, [`DURABLE_COMMIT`]); off, the session's own setting is back (`RESET`) and
    /// one commit that waits flushes the WAL of every earlier commit of every session, before
    /// the restore reports its end.
    pub async fn async_commits(&mut self, on: bool) -> anyhow::Result<()> {
        let stmts: &[&str] = if on {
            &["SET synchronous_commit = off"]
        } else {
            // txid_current() gives the transaction an ID, so its commit is written and
            // flushed (with everything before it in the WAL).
            &[
                "RESET synchronous_commit",
                "SELECT pg_catalog.txid_current()",
            ]
        };
        for stmt in stmts {
            self.session
                .client
                .batch_execute(stmt)
                .await
                .map_err(|e| anyhow::anyhow!("{stmt}: {}", describe(&e)))?;
        }
        Ok(())
    }

    /// Runs `sql` (a carrier: the archive's bytes, see `pg::carrier`), recording a failure
    /// against `entry` in `out`.
    pub(crate) async fn exec(&self, entry: &TocEntry, sql: &str, out: &mut Outcome) -> bool {
        match self.session.execute_bytes(&carrier::to_bytes(sql)).await {
            Ok(()) => true,
            Err(e) if self.in_schema_entry && super::ledger::already_there(&e, entry) => true,
            Err(e) => {
                out.errors.push(format!(
                    "{}: {} (command: {})",
                    label(entry),
                    describe(&e),
                    brief(sql)
                ));
                false
            }
        }
    }

    /// `_printTocEntry`: session state, the definition, the owner, a partitioned table's AM.
    /// In a resumed restore, an object that is there already is not an error here.
    async fn print_entry(&mut self, idx: usize, out: &mut Outcome) {
        self.in_schema_entry = self.tolerate_existing;
        self.print_entry_statements(idx, out).await;
        self.in_schema_entry = false;
    }

    async fn print_entry_statements(&mut self, idx: usize, out: &mut Outcome) {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        for stmt in self.state.enter(e) {
            self.exec(e, &stmt, out).await;
        }
        let by_id = |id: i32| ctx.entry_by_id(id);
        let built = if ctx.plan.items[idx].index_backed {
            // One message, one transaction: the index, then the constraint over it.
            let defn = e.defn.carrier().unwrap_or_default();
            sql::index_backed(&defn).map(|stmts| Ok(vec![stmts.join(";\n")]))
        } else {
            None
        };
        match built.unwrap_or_else(|| sql::definition(e, ctx.opts.no_owner, by_id)) {
            Ok(stmts) => {
                for stmt in stmts {
                    self.exec(e, &stmt, out).await;
                }
            }
            Err(msg) => out.errors.push(format!("{}: {msg}", label(e))),
        }
        if !ctx.opts.no_owner {
            match sql::ownership(e) {
                Ok(stmts) => {
                    for stmt in stmts {
                        self.exec(e, &stmt, out).await;
                    }
                }
                Err(msg) => out.errors.push(format!("{}: {msg}", label(e))),
            }
        }
        if let Some(stmt) = sql::partitioned_table_am(e) {
            self.exec(e, &stmt, out).await;
        }
    }

    /// `restore_toc_entry`: the schema part, then the data part of one entry.
    pub async fn restore_entry(&mut self, idx: usize, truncate: bool) -> Outcome {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        let reqs = ctx.plan.items[idx].reqs;
        let mut out = Outcome::default();
        let mut printed = false;
        if reqs.schema {
            self.print_entry(idx, &mut out).await;
            printed = true;
            if e.desc.is("TABLE") {
                out.table_created = Some(out.errors.is_empty());
            }
            if e.desc.is("DATABASE") || e.desc.is("DATABASE PROPERTIES") {
                out.reconnect = e.tag.to_str_lossy().map(|s| s.into_owned());
            }
        }
        if reqs.data {
            if e.had_dumper {
                if e.desc.is("BLOBS") {
                    self.load_blobs(idx, &mut out).await;
                } else if e.desc.is("TABLE DATA") {
                    self.load_table(idx, None, truncate, &mut out).await;
                }
            } else if !printed {
                self.print_entry(idx, &mut out).await;
                printed = true;
            }
        }
        if reqs.stats && !printed {
            self.print_entry(idx, &mut out).await;
        }
        out
    }

    /// Loads one table's rows: all of them (`part` None), or frames `range` as one part of a
    /// gang. A whole table created in this run is loaded as pg_restore does in parallel mode:
    /// `BEGIN; TRUNCATE TABLE ONLY; COPY; COMMIT`.
    pub async fn load_table(
        &mut self,
        idx: usize,
        part: Option<(Range<usize>, Arc<Gang>)>,
        truncate: bool,
        out: &mut Outcome,
    ) {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        for stmt in self.state.enter(e) {
            self.exec(e, &stmt, out).await;
        }
        let Some(source) = ctx.data.get(&idx).cloned() else {
            out.errors.push(format!(
                "{}: no data file was planned for this entry",
                label(e)
            ));
            return;
        };
        let mut copy = e.copy_stmt.carrier().unwrap_or_default();
        if copy.trim().is_empty() {
            out.errors.push(format!(
                "{}: the data is stored as INSERT statements (pg_dump --inserts), which pgarc \
                 does not restore; use pg_restore",
                label(e)
            ));
            return;
        }
        let single = ctx.opts.single_transaction;
        let qualified = sql::entry_table(e);
        // pg_restore's --disable-triggers acts in a data-only restore; the table is never split
        // then, so the ALTERs run once, in the load's own transaction.
        let triggers = ctx.opts.disable_triggers && ctx.opts.data_only;
        // Always an explicit transaction with its own COMMIT (never the implicit one that
        // ends an extended-protocol COPY at Sync): a deferred constraint or trigger that
        // fails at commit must be seen, or the rows would be counted while the server
        // rolled them back.
        let in_txn = !single;
        // A whole table created in this run. pg_restore truncates it in the load's
        // transaction (with wal_level=minimal the COPY then skips WAL); pgarc does so for
        // tables big enough to gain, and loads them with FREEZE, which needs that TRUNCATE
        // (tool.md §7). A small table is loaded without: its TRUNCATE would only replace
        // its files with new ones, three file creations for a few rows.
        let fresh = truncate && part.is_none() && !single;
        let big = source.raw_len().unwrap_or(ctx.plan.items[idx].data_len) >= FREEZE_MIN_BYTES;
        let freeze = fresh
            && big
            && ctx.opts.freeze
            && sql::owner_is_plain_table(e, |id| ctx.entry_by_id(id));
        if freeze {
            if let Some(frozen) = sql::copy_with_freeze(&copy) {
                copy = frozen;
            }
        }
        // BEGIN and TRUNCATE go in one message, pipelined with the COPY statement's Parse:
        // one round trip instead of three (2,000 small tables: this is most of the time).
        let mut prelude = Vec::new();
        if in_txn {
            prelude.push("BEGIN".to_string());
            prelude.push(DURABLE_COMMIT.to_string());
        }
        if fresh && big {
            prelude.push(format!("TRUNCATE TABLE ONLY {qualified}"));
        }
        if triggers {
            prelude.push(format!("ALTER TABLE {qualified} DISABLE TRIGGER ALL"));
        }
        let prelude = prelude.join("; ");
        let run = if in_txn { ctx.ledger_run() } else { None };
        let range_of = part.as_ref().map(|(r, _)| r.clone());
        if let Some(run) = run {
            // Committed on its own: says that a load began, to count work done again.
            let started = super::ledger::started_sql(idx, range_of.as_ref(), run);
            if !self.exec(e, &started, out).await {
                if let Some((_, gang)) = &part {
                    gang.arrive(false).await;
                }
                return;
            }
        }
        let client = &self.session.client;
        let copy_bytes = carrier::to_bytes(&copy);
        let (prelude_ok, prepared) = tokio::join!(
            async { prelude.is_empty() || self.exec(e, &prelude, out).await },
            self.session.prepare_bytes(&copy_bytes, true)
        );
        let prepared = match (prelude_ok, prepared) {
            (true, Ok(statement)) => Some(statement),
            (true, Err(err)) => {
                out.errors
                    .push(format!("{}: COPY failed: {}", label(e), describe(&err)));
                None
            }
            // The prelude's error is recorded already.
            (false, _) => None,
        };
        let prepared = match prepared {
            Some(statement) => statement,
            None => {
                if in_txn {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                // The other parts of a split table wait for this one: it failed.
                if let Some((_, gang)) = &part {
                    gang.arrive(false).await;
                }
                return;
            }
        };
        let range = part.as_ref().map(|(r, _)| r.clone());
        if ctx.opts.verbose {
            crate::progress::say(&format!("pgarc: loading {}", label(e)));
        }
        let result = self.copy_in(&prepared, source, range).await;
        let ok = result.is_ok();
        match result {
            Ok((rows, raw)) => {
                out.rows += rows;
                out.raw_bytes += raw;
            }
            Err(msg) => out.errors.push(format!("{}: {msg}", label(e))),
        }
        let mut commit = match &part {
            Some((_, gang)) => gang.arrive(ok).await,
            None => ok,
        };
        if triggers && (ok || single) {
            let enable = format!("ALTER TABLE {qualified} ENABLE TRIGGER ALL");
            commit &= self.exec(e, &enable, out).await;
        }
        if in_txn {
            let ledger = run.map(|run| (idx, range_of, run));
            self.end_load(e, commit, ledger, out).await;
        } else if !ok {
            // -1: nothing is committed until the restore's one transaction ends; the
            // dispatcher counts the rows of a COPY that succeeded.
            out.rows = 0;
            out.raw_bytes = 0;
        }
    }

    /// Ends a load's transaction: COMMIT (with the ledger's row of `ledger`: entry, frames,
    /// run) when `commit`, else ROLLBACK; rows count only when it committed.
    async fn end_load(
        &mut self,
        e: &TocEntry,
        commit: bool,
        ledger: Option<(usize, Option<Range<usize>>, u32)>,
        out: &mut Outcome,
    ) {
        if commit {
            // The ledger's row goes in the load's own transaction.
            let commit_sql = match ledger {
                Some((idx, range, run)) => format!(
                    "{}; COMMIT",
                    super::ledger::done_sql(idx, range.as_ref(), out.rows, run)
                ),
                None => "COMMIT".to_string(),
            };
            out.committed = self.exec(e, &commit_sql, out).await;
        }
        if !out.committed {
            // A failed COPY or ledger row left the transaction aborted; ROLLBACK ends it
            // either way.
            let _ = self.session.client.batch_execute("ROLLBACK").await;
            out.rows = 0;
            out.raw_bytes = 0;
        }
    }

    /// Removes the rows of a split table some of whose parts committed while another failed
    /// (only tables created in this run are split, so every row in it is this run's).
    pub async fn undo_load(&mut self, idx: usize) -> Outcome {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        let mut out = Outcome::default();
        let q = sql::entry_table(e);
        let mut truncate = format!("BEGIN; {DURABLE_COMMIT}; TRUNCATE TABLE ONLY {q}");
        if ctx.ledger_run().is_some() {
            truncate.push_str(&format!(
                "; DELETE FROM {}.done WHERE entry = {idx}",
                super::ledger::SCHEMA
            ));
        }
        if !(self.exec(e, &truncate, &mut out).await && self.exec(e, "COMMIT", &mut out).await) {
            let _ = self.session.client.batch_execute("ROLLBACK").await;
            out.errors = vec![format!(
                "{}: part of its rows committed and another part failed, and removing them \
                 failed too: the table holds part of its rows; TRUNCATE it and load it again",
                label(e)
            )];
        }
        out
    }

    /// `ANALYZE` of the table whose data TABLE DATA entry `idx` loaded (`--analyze`).
    pub async fn analyze(&mut self, idx: usize) -> Outcome {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        let mut out = Outcome::default();
        let q = sql::entry_table(e);
        // A partitioned table: from PostgreSQL 18 ONLY collects its own statistics without
        // analyzing every partition again (they were, as they were loaded); before 18 there
        // is no ONLY and ANALYZE of the parent analyzes its partitions too.
        let only = super::analyze::is_partitioned(e) && ctx.server_version_num() >= 180000;
        let stmt = format!("ANALYZE {}{q}", if only { "ONLY " } else { "" });
        self.exec(e, &stmt, &mut out).await;
        out
    }

    /// Among `candidates` (TABLE DATA entries of tables created in this run), those that
    /// can be loaded in parts committed separately: no trigger, rule, row security or
    /// constraint that can see other rows (unique, primary key, exclusion, foreign key,
    /// constraint trigger) is on the table now. CHECK and NOT NULL look at one row.
    pub async fn splittable(&self, candidates: &[usize]) -> anyhow::Result<Vec<usize>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = candidates
            .iter()
            .map(|&i| {
                let q = sql::entry_table(&self.ctx.toc.entries[i]);
                format!("({i}, {})", crate::pg::session::literal(&q))
            })
            .collect();
        let query = format!(
            "SELECT v.i FROM (VALUES {}) v(i, name)
             JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(v.name)
             WHERE NOT (c.relhastriggers OR c.relhasrules OR c.relrowsecurity
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                           WHERE k.conrelid = c.oid AND k.contype NOT IN ('c', 'n'))
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_index x
                           WHERE x.indrelid = c.oid AND x.indisunique))",
            values.join(", ")
        );
        let statement = self
            .session
            .prepare_bytes(&carrier::to_bytes(&query), false)
            .await
            .map_err(|e| anyhow::anyhow!("cannot check the tables to split: {}", describe(&e)))?;
        let rows = self
            .session
            .client
            .query(&statement, &[])
            .await
            .map_err(|e| anyhow::anyhow!("cannot check the tables to split: {}", describe(&e)))?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0) as usize).collect())
    }

    /// Streams rows from the archive into `COPY ... FROM stdin`: (rows, raw bytes) sent.
    async fn copy_in(
        &mut self,
        copy: &tokio_postgres::Statement,
        source: Arc<TableData>,
        range: Option<Range<usize>>,
    ) -> Result<(u64, u64), CopyError> {
        // One chunk waits while the reader decompresses and checks the next: enough to keep
        // the session busy, and memory per worker stays at a few frames (issue 6: -j 8).
        let (tx, mut rx) = mpsc::channel::<FromReader>(1);
        let reader = tokio::task::spawn_blocking(move || produce(source, range, tx));
        let sink = self
            .session
            .client
            .copy_in::<_, Bytes>(copy)
            .await
            .map_err(|e| CopyError::Start(describe(&e)))?;
        pin_mut!(sink);
        let mut raw = 0u64;
        let result = loop {
            match rx.recv().await {
                Some(FromReader::Rows(mut b)) => {
                    raw += b.len() as u64;
                    crate::progress::add(b.len() as u64);
                    // Sent in slices of the same buffer (no copy): the connection copies each
                    // message into its write buffer, which would otherwise grow to a whole
                    // frame per session.
                    let mut failed = None;
                    while !b.is_empty() {
                        let piece = b.split_to(b.len().min(SEND_BYTES));
                        if let Err(e) = sink.as_mut().send(piece).await {
                            failed = Some(CopyError::Server(describe(&e)));
                            break;
                        }
                    }
                    if let Some(msg) = failed {
                        break Err(msg);
                    }
                }
                Some(FromReader::Done(rows)) => match sink.as_mut().finish().await {
                    Ok(n) if n == rows => break Ok((n, raw)),
                    Ok(n) => {
                        break Err(CopyError::Count {
                            stored: n,
                            read: rows,
                        })
                    }
                    Err(e) => break Err(CopyError::Server(describe(&e))),
                },
                Some(FromReader::Failed(error)) => break Err(CopyError::Archive(error)),
                None => break Err(CopyError::ReaderStopped),
            }
        };
        drop(rx);
        let _ = reader.await;
        // On error the sink is dropped unfinished: tokio-postgres sends CopyFail and the
        // server discards every row of this COPY.
        result
    }

    /// Large objects of a BLOBS entry, in one transaction (`_LoadLOs`, `StartRestoreLOs`).
    async fn load_blobs(&mut self, idx: usize, out: &mut Outcome) {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        if let Some(stmt) = self.state.schema("pg_catalog") {
            self.exec(e, &stmt, out).await;
        }
        let single = ctx.opts.single_transaction;
        if !single && !self.exec(e, &format!("BEGIN; {DURABLE_COMMIT}"), out).await {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<Result<(u32, i64, Bytes), BlobError>>(4);
        let reader = {
            let objects = ctx.blobs.get(&idx).cloned();
            tokio::task::spawn_blocking(move || {
                let objects = match objects {
                    Some(Ok(objects)) => objects,
                    Some(Err(problem)) => {
                        let _ = tx.blocking_send(Err(BlobError::Listed(problem)));
                        return;
                    }
                    None => return,
                };
                for object in objects.iter() {
                    if read_blob(object, &tx).is_err() {
                        return;
                    }
                }
            })
        };
        let stmt = "SELECT pg_catalog.lo_put($1, $2, $3)";
        let mut failed = false;
        while let Some(item) = rx.recv().await {
            match item {
                Ok((oid, offset, data)) => {
                    let r = self
                        .session
                        .client
                        .execute(stmt, &[&oid, &offset, &data.as_ref()])
                        .await;
                    if let Err(err) = r {
                        out.errors.push(format!(
                            "{}: large object {oid}: {}",
                            label(e),
                            describe(&err)
                        ));
                        failed = true;
                        break;
                    }
                    out.raw_bytes += data.len() as u64;
                }
                Err(msg) => {
                    out.errors.push(format!("{}: {msg}", label(e)));
                    failed = true;
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        if single {
            // The whole restore's transaction decides.
        } else if failed {
            let _ = self.session.client.batch_execute("ROLLBACK").await;
        } else {
            let commit_sql = match ctx.ledger_run() {
                Some(run) => format!("{}; COMMIT", super::ledger::done_sql(idx, None, 0, run)),
                None => "COMMIT".to_string(),
            };
            out.committed = self.exec(e, &commit_sql, out).await;
            if !out.committed {
                let _ = self.session.client.batch_execute("ROLLBACK").await;
            }
        }
    }

    /// Records schema entries that ran (on their own, after them: see [`super::ledger`]).
    pub async fn mark_done(&mut self, entries: &[usize]) -> anyhow::Result<()> {
        let Some(run) = self.ctx.ledger_run() else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        self.session
            .client
            .batch_execute(&super::ledger::entries_done_sql(entries, run))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot record progress in the restore's ledger: {}",
                    describe(&e)
                )
            })
    }

    /// The frames `ranges` of a table whose other frames an interrupted run committed: all of
    /// them in one transaction, recorded in the ledger in it.
    pub async fn load_rest(&mut self, idx: usize, ranges: Vec<Range<usize>>) -> Outcome {
        let ctx = self.ctx.clone();
        let e = &ctx.toc.entries[idx];
        let mut out = Outcome::default();
        let (Some(source), Some(run)) = (ctx.data.get(&idx).cloned(), ctx.ledger_run()) else {
            out.errors
                .push(format!("{}: internal error: nothing to resume", label(e)));
            return out;
        };
        for stmt in self.state.enter(e) {
            self.exec(e, &stmt, &mut out).await;
        }
        let mut begun = Vec::new();
        for r in &ranges {
            begun.push(super::ledger::started_sql(idx, Some(r), run));
        }
        // Committed on their own (statements before a BEGIN in one message would join its
        // transaction).
        if !self.exec(e, &begun.join("; "), &mut out).await
            || !self
                .exec(e, &format!("BEGIN; {DURABLE_COMMIT}"), &mut out)
                .await
        {
            let _ = self.session.client.batch_execute("ROLLBACK").await;
            return out;
        }
        let copy = carrier::to_bytes(&e.copy_stmt.carrier().unwrap_or_default());
        let mut done = Vec::new();
        let mut ok = true;
        for r in ranges {
            let prepared = match self.session.prepare_bytes(&copy, true).await {
                Ok(p) => p,
                Err(err) => {
                    out.errors
                        .push(format!("{}: COPY failed: {}", label(e), describe(&err)));
                    ok = false;
                    break;
                }
            };
            match self
                .copy_in(&prepared, source.clone(), Some(r.clone()))
                .await
            {
                Ok((rows, raw)) => {
                    out.rows += rows;
                    out.raw_bytes += raw;
                    done.push(super::ledger::done_sql(idx, Some(&r), rows, run));
                }
                Err(msg) => {
                    out.errors.push(format!("{}: {msg}", label(e)));
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            done.push("COMMIT".into());
            out.committed = self.exec(e, &done.join("; "), &mut out).await;
        }
        if !out.committed {
            let _ = self.session.client.batch_execute("ROLLBACK").await;
            out.rows = 0;
            out.raw_bytes = 0;
        }
        out
    }
}

/// Sends one large object's contents in chunks; Err when the receiver is gone or the
/// object cannot be read (then the error was sent).
fn read_blob(
    object: &LargeObject,
    tx: &mpsc::Sender<Result<(u32, i64, Bytes), BlobError>>,
) -> Result<(), ()> {
    use std::io::Read;
    let send = |item| tx.blocking_send(item).map_err(|_| ());
    let failed = |error| {
        send(Err(BlobError::Archive {
            oid: object.oid,
            error,
        }))
        .and(Err(()))
    };
    let mut r = match object.open() {
        Ok(r) => r,
        Err(error) => return failed(error),
    };
    let mut offset = 0i64;
    loop {
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        match (&mut r).take(CHUNK_BYTES as u64).read_to_end(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                send(Ok((object.oid, offset, Bytes::from(buf))))?;
                offset += n as i64;
            }
            Err(error) => return failed(r.explain(error)),
        }
    }
}

/// The reader thread of one COPY: decompresses, checks and passes on rows.
fn produce(source: Arc<TableData>, range: Option<Range<usize>>, tx: mpsc::Sender<FromReader>) {
    let mut sink = RowBatches {
        tx: &tx,
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        gone: false,
    };
    let last = match source.read_rows(range, &mut sink) {
        Ok(Some(rows)) => {
            sink.send();
            if sink.gone {
                return;
            }
            FromReader::Done(rows)
        }
        Ok(None) => return,
        Err(error) => FromReader::Failed(error),
    };
    let _ = tx.blocking_send(last);
}

/// Rows on their way to the session, in chunks of about [`CHUNK_BYTES`].
struct RowBatches<'a> {
    tx: &'a mpsc::Sender<FromReader>,
    buf: Vec<u8>,
    gone: bool,
}

impl RowBatches<'_> {
    fn send(&mut self) {
        if self.buf.is_empty() || self.gone {
            return;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        if self
            .tx
            .blocking_send(FromReader::Rows(chunk.into()))
            .is_err()
        {
            self.gone = true;
        }
    }
}

impl RowSink for RowBatches<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if self.gone {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.send();
        }
    }

    fn stopped(&self) -> bool {
        self.gone
    }
}

/// How errors name an entry: `215 TABLE DATA app.orders`.
pub fn label(e: &TocEntry) -> String {
    let ns = e.namespace.to_str_lossy();
    let tag = e.tag.to_str_lossy().unwrap_or_default();
    let desc = e.desc.to_str_lossy().unwrap_or_default();
    match ns {
        Some(ns) if !ns.is_empty() => format!("entry {} {desc} {ns}.{tag}", e.dump_id),
        _ => format!("entry {} {desc} {tag}", e.dump_id),
    }
}

/// The first line of a statement (a carrier), shortened, for error messages.
fn brief(sql: &str) -> String {
    let text = carrier::display(sql);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if line.chars().count() > 100 {
        format!("{}...", line.chars().take(100).collect::<String>())
    } else {
        line.to_string()
    }
}
