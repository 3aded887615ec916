//! `pgarc verify ARCHIVE --against`: proves that a database holds what an archive holds
//! (issue 19; format-spec/tool.md §2a). The planner takes what the archive expects
//! (`archive::expect`: each table's rows digest and column list, sequences, large objects)
//! and matches it to the database's catalog under one exported snapshot; the workers import
//! that snapshot, copy every table's rows again (big tables in ctid ranges, as a dump does)
//! under the settings the archive's rows were copied with, and add up the same digests.
//! Nothing is written to the database.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures_util::{pin_mut, StreamExt};

use crate::archive::digest::{RowsDigest, StreamDigest};
use crate::archive::expect::{expected, Expected};
use crate::archive::frame::hex;
use crate::pg::carrier;
use crate::pg::chunks::{copy_out_sql, plan_chunks, Chunk};
use crate::pg::conn::ConnParams;
use crate::pg::session::{
    catalog_sequences, catalog_tables, describe, large_object_digests, open_worker,
    sequence_states, CatalogTable, ConnectFailed, Session, SnapshotHolder,
};

/// What `--against` was asked to do.
#[derive(Debug, Clone)]
pub struct AgainstOptions {
    /// A directory or `s3://BUCKET/PREFIX`.
    pub archive: crate::archive::store::Location,
    /// Plain HTTP to an object store that is not on loopback.
    pub allow_http: bool,
    pub conn: ConnParams,
    pub jobs: usize,
    /// Tables larger than this are read in ctid ranges by several workers.
    pub split_size: u64,
    /// The dumpIds of the TABLE DATA, SEQUENCE SET and BLOBS entries to check (a restore of
    /// part of an archive); None: all of them.
    pub only: Option<HashSet<i32>>,
}

/// One way the database differs from the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Rows that do not add up to the archive's digest.
    Table {
        name: String,
        expected: RowsDigest,
        found: RowsDigest,
    },
    /// A table whose rows could not be read as the archive's were (a column missing, say).
    Unreadable {
        name: String,
        why: String,
    },
    MissingTable {
        name: String,
    },
    ExtraTable {
        name: String,
    },
    Sequence {
        name: String,
        expected: (i128, bool),
        found: (i128, bool),
    },
    MissingSequence {
        name: String,
    },
    LargeObject {
        oid: u32,
    },
    MissingLargeObject {
        oid: u32,
    },
    ExtraLargeObject {
        oid: u32,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Table {
                name,
                expected,
                found,
            } => {
                let rows = if expected.rows == found.rows {
                    format!("{} rows as in the archive", found.rows)
                } else {
                    format!("{} rows, the archive has {}", found.rows, expected.rows)
                };
                write!(
                    f,
                    "table {name}: DIFFERENT: {rows}; rows digest {}, the archive's is {}",
                    found.sum_hex(),
                    expected.sum_hex()
                )
            }
            Difference::Unreadable { name, why } => write!(
                f,
                "table {name}: DIFFERENT: its rows cannot be read as the archive's were: {why}"
            ),
            Difference::MissingTable { name } => {
                write!(f, "table {name}: MISSING from the database")
            }
            Difference::ExtraTable { name } => write!(
                f,
                "table {name}: EXTRA: the database has it, the archive does not"
            ),
            Difference::Sequence {
                name,
                expected,
                found,
            } => write!(
                f,
                "sequence {name}: DIFFERENT: last_value {} (is_called {}), the archive sets {} \
                 (is_called {})",
                found.0, found.1, expected.0, expected.1
            ),
            Difference::MissingSequence { name } => {
                write!(f, "sequence {name}: MISSING from the database")
            }
            Difference::LargeObject { oid } => write!(
                f,
                "large object {oid}: DIFFERENT: its bytes are not the archive's"
            ),
            Difference::MissingLargeObject { oid } => {
                write!(f, "large object {oid}: MISSING from the database")
            }
            Difference::ExtraLargeObject { oid } => write!(
                f,
                "large object {oid}: EXTRA: the database has it, the archive does not"
            ),
        }
    }
}

/// The outcome of a check that ran.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub archive: PathBuf,
    pub database: String,
    pub differences: Vec<Difference>,
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
    pub sequences: usize,
    pub large_objects: usize,
    /// The archive's digests came from its manifest (else from its data files).
    pub from_manifest: bool,
    pub elapsed: Duration,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }

    /// The check's part of a `--report`.
    pub fn report(&self) -> crate::report::VerifyReport {
        crate::report::VerifyReport {
            status: if self.equal() { "equal" } else { "different" },
            seconds: crate::report::secs(self.elapsed),
            tables: self.tables,
            rows: self.rows,
            sequences: self.sequences,
            large_objects: self.large_objects,
            differences: self.differences.iter().map(ToString::to_string).collect(),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let archive = self.archive.display();
        for d in &self.differences {
            writeln!(f, "pgarc: {archive}: {d}")?;
        }
        let what = format!(
            "{} tables ({} rows, {}), {} sequences, {} large objects compared by content \
             digest{} in {:.1} s",
            self.tables,
            self.rows,
            crate::run::human(self.bytes),
            self.sequences,
            self.large_objects,
            if self.from_manifest {
                ""
            } else {
                " (the archive's digests computed from its data files)"
            },
            self.elapsed.as_secs_f64()
        );
        if self.equal() {
            writeln!(
                f,
                "pgarc: {archive}: EQUAL: database {:?} holds what the archive holds: {what}",
                self.database
            )
        } else {
            let n = self.differences.len();
            writeln!(
                f,
                "pgarc: {archive}: DIFFERENT: database {:?} differs from the archive in {n} \
                 place{} listed above: {what}",
                self.database,
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

/// A table to read: the archive's expectation and the database's table.
struct Target {
    name: String,
    expected: RowsDigest,
    table: CatalogTable,
}

/// What the workers share.
struct Shared {
    targets: Vec<Target>,
    queue: Mutex<VecDeque<Chunk>>,
    found: Mutex<Vec<RowsDigest>>,
    unreadable: Mutex<HashMap<usize, String>>,
    snapshot_id: String,
}

/// Runs the check. `Err`: it could not run (exit 2).
pub async fn run(opts: AgainstOptions) -> Result<Comparison> {
    let started = Instant::now();
    let (dir_path, jobs, only) = (opts.archive.clone(), opts.jobs, opts.only.clone());
    let allow_http = opts.allow_http;
    let expected = tokio::task::spawn_blocking(move || -> Result<Expected> {
        let dir = crate::s3::open_archive(&dir_path, allow_http)?;
        Ok(expected(&dir, jobs, only.as_ref())?)
    })
    .await
    .context("the archive reader failed")??;
    let mut conn = opts.conn.clone();
    let holder = match SnapshotHolder::open(&conn, None, false).await {
        Err(e) if conn.may_prompt() && ConnectFailed::needs_password(&e) => {
            conn.prompt_password()?;
            SnapshotHolder::open(&conn, None, false).await?
        }
        r => r?,
    };
    let client = &holder.session.client;
    let catalog = catalog_tables(client).await?;
    let mut differences = Vec::new();
    let targets = match_tables(&expected, catalog, &mut differences);
    let sequences = compare_sequences(&holder.session, &expected, &mut differences).await?;
    let large_objects = if opts.only.is_none() || expected.has_large_objects {
        compare_large_objects(client, &expected, &mut differences).await?
    } else {
        0
    };

    let can_split = holder.info.version_num >= 140000;
    let tables: Vec<CatalogTable> = targets.iter().map(|t| t.table.clone()).collect();
    let chunks = plan_chunks(&tables, opts.split_size, holder.info.block_size, can_split);
    // The COPY text the archive holds: what the workers will read, if the database is equal.
    let estimate: u64 = targets.iter().map(|t| t.expected.bytes).sum();
    let progress = crate::progress::Progress::start(
        "verify",
        Some(estimate),
        Some(chunks.len() as u64),
        opts.jobs,
    );
    let shared = Arc::new(Shared {
        found: Mutex::new(vec![RowsDigest::default(); targets.len()]),
        targets,
        queue: Mutex::new(chunks.into()),
        unreadable: Mutex::new(HashMap::new()),
        snapshot_id: holder.snapshot_id.clone(),
    });
    let settings = copy_settings(&expected);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sessions = futures_util::future::try_join_all((1..=opts.jobs).map(|n| {
        open_worker(
            &conn,
            &holder.info,
            &holder.snapshot_id,
            n,
            &pairs,
            &["lc_monetary"],
        )
    }))
    .await?;
    futures_util::future::try_join_all(sessions.into_iter().enumerate().map(|(i, s)| {
        let shared = shared.clone();
        async move {
            tokio::spawn(worker(i + 1, s, shared))
                .await
                .context("a worker task failed")?
        }
    }))
    .await?;
    progress.finish();
    let database = holder.info.database.clone();
    holder.finish().await?;

    let found = std::mem::take(&mut *shared.found.lock().unwrap_or_else(|p| p.into_inner()));
    let unreadable =
        std::mem::take(&mut *shared.unreadable.lock().unwrap_or_else(|p| p.into_inner()));
    let mut rows = 0;
    let mut bytes = 0;
    for (i, t) in shared.targets.iter().enumerate() {
        if let Some(why) = unreadable.get(&i) {
            differences.push(Difference::Unreadable {
                name: t.name.clone(),
                why: why.clone(),
            });
            continue;
        }
        rows += found[i].rows;
        bytes += found[i].bytes;
        if !found[i].same_rows(&t.expected) {
            differences.push(Difference::Table {
                name: t.name.clone(),
                expected: t.expected,
                found: found[i],
            });
        }
    }
    Ok(Comparison {
        archive: opts.archive.shown(),
        database,
        differences,
        tables: shared.targets.len(),
        rows,
        bytes,
        sequences,
        large_objects,
        from_manifest: expected.from_manifest,
        elapsed: started.elapsed(),
    })
}

/// The settings to copy under: the archive's (format 3), else pg_dump's (which the workers'
/// sessions already have) and the archive's encoding.
fn copy_settings(expected: &Expected) -> Vec<(&'static str, String)> {
    match &expected.settings {
        Some(s) => s.pairs().iter().map(|(k, v)| (*k, v.to_string())).collect(),
        None => vec![("client_encoding", expected.encoding.clone())],
    }
}

fn shown(schema: &str, name: &str) -> String {
    carrier::display(&format!("{schema}.{name}"))
}

/// Pairs each expected table with the database's table of the same name (bytes), naming
/// those that are missing and the database's tables the archive does not know.
fn match_tables(
    expected: &Expected,
    catalog: Vec<CatalogTable>,
    differences: &mut Vec<Difference>,
) -> Vec<Target> {
    let mut by_name: HashMap<(String, String), CatalogTable> = HashMap::new();
    for t in catalog {
        let key = (t.schema.clone(), t.name.clone());
        if t.relkind == 'r' && !t.extension_member && !expected.known.contains(&key) {
            differences.push(Difference::ExtraTable {
                name: shown(&t.schema, &t.name),
            });
        }
        by_name.insert(key, t);
    }
    let mut targets = Vec::new();
    for e in &expected.tables {
        let name = shown(&e.schema, &e.name);
        match by_name.get(&(e.schema.clone(), e.name.clone())) {
            Some(t) => targets.push(Target {
                name,
                expected: e.digest,
                table: CatalogTable {
                    // The archive's columns, in its order.
                    columns: e.columns.clone(),
                    ..t.clone()
                },
            }),
            None => differences.push(Difference::MissingTable { name }),
        }
    }
    targets
}

async fn compare_sequences(
    session: &Session,
    expected: &Expected,
    differences: &mut Vec<Difference>,
) -> Result<usize> {
    if expected.sequences.is_empty() {
        return Ok(0);
    }
    let catalog: HashMap<(String, String), String> = catalog_sequences(&session.client)
        .await?
        .into_iter()
        .map(|(s, n, q)| ((s, n), q))
        .collect();
    let mut present = Vec::new();
    for s in &expected.sequences {
        match catalog.get(&(s.schema.clone(), s.name.clone())) {
            Some(q) => present.push((s, q.clone())),
            None => differences.push(Difference::MissingSequence {
                name: shown(&s.schema, &s.name),
            }),
        }
    }
    let names: Vec<String> = present.iter().map(|(_, q)| q.clone()).collect();
    let states = sequence_states(session, &names).await?;
    for ((s, _), found) in present.iter().zip(states) {
        if found != (s.value, s.is_called) {
            differences.push(Difference::Sequence {
                name: shown(&s.schema, &s.name),
                expected: (s.value, s.is_called),
                found,
            });
        }
    }
    Ok(expected.sequences.len())
}

async fn compare_large_objects(
    client: &tokio_postgres::Client,
    expected: &Expected,
    differences: &mut Vec<Difference>,
) -> Result<usize> {
    let found: HashMap<u32, String> = large_object_digests(client).await?.into_iter().collect();
    let mut known = HashSet::new();
    for (oid, sha) in &expected.large_objects {
        known.insert(*oid);
        match found.get(oid) {
            None => differences.push(Difference::MissingLargeObject { oid: *oid }),
            Some(h) if *h != hex(sha) => differences.push(Difference::LargeObject { oid: *oid }),
            Some(_) => {}
        }
    }
    let mut extra: Vec<u32> = found
        .keys()
        .filter(|o| !known.contains(o))
        .copied()
        .collect();
    extra.sort_unstable();
    differences.extend(
        extra
            .into_iter()
            .map(|oid| Difference::ExtraLargeObject { oid }),
    );
    Ok(expected.large_objects.len())
}

/// One worker: takes chunks until none is left, copies each and adds its digest to its
/// table's. A table whose rows the server refuses to copy as asked is marked unreadable
/// (a difference) and the worker goes on in a fresh transaction on the same snapshot.
async fn worker(n: usize, session: Arc<Session>, shared: Arc<Shared>) -> Result<()> {
    loop {
        let Some(chunk) = shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
        else {
            break;
        };
        let target = &shared.targets[chunk.table];
        crate::progress::worker(n, Some(format!("verifying {}", target.name)));
        let sql = copy_out_sql(&target.table.qualified, &target.table.columns, chunk.pages);
        match copy_digest(&session, &sql).await {
            Ok(d) => {
                shared.found.lock().unwrap_or_else(|p| p.into_inner())[chunk.table].combine(&d);
            }
            Err(CopyFailed::Refused(why)) => {
                shared
                    .unreadable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(chunk.table)
                    .or_insert(why);
                let restart = format!(
                    "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                    crate::pg::session::literal(&shared.snapshot_id)
                );
                session
                    .execute_bytes(restart.as_bytes())
                    .await
                    .map_err(|e| anyhow!("worker {n}: {}", describe(&e)))?;
            }
            Err(CopyFailed::Lost(e)) => {
                return Err(e.context(format!("worker {n}: reading {}", target.name)))
            }
        }
        crate::progress::item_done();
    }
    crate::progress::worker(n, None);
    Ok(())
}

enum CopyFailed {
    /// The server refused the statement or failed it (the table differs).
    Refused(String),
    /// The session failed.
    Lost(anyhow::Error),
}

async fn copy_digest(session: &Session, sql: &str) -> Result<RowsDigest, CopyFailed> {
    let failed = |e: tokio_postgres::Error| async move {
        if e.as_db_error().is_some() {
            CopyFailed::Refused(describe(&e))
        } else {
            CopyFailed::Lost(anyhow!("{}", session.explain(&e).await))
        }
    };
    let statement = match session.prepare_bytes(&carrier::to_bytes(sql), false).await {
        Ok(s) => s,
        Err(e) => return Err(failed(e).await),
    };
    let stream = match session.client.copy_out(&statement).await {
        Ok(s) => s,
        Err(e) => return Err(failed(e).await),
    };
    pin_mut!(stream);
    let mut digest = StreamDigest::new();
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) => {
                crate::progress::add(bytes.len() as u64);
                digest.feed(&bytes);
            }
            Err(e) => return Err(failed(e).await),
        }
    }
    let (d, partial) = digest.finish();
    if partial {
        return Err(CopyFailed::Lost(anyhow!(
            "the server's COPY output ended inside a row"
        )));
    }
    Ok(d)
}
