//! The restore's ledger (format-spec/tool.md §10): tables in a `pgarc_restore` schema of the
//! target database that say what an unfinished restore has done, so that `pgarc restore
//! --resume` does the rest exactly once. Each load of table data (a whole entry, or a frame
//! range of a split table) inserts its row in the same transaction as its COPY: the rows are in
//! the database exactly when the ledger says so. Schema entries, which run statement by
//! statement as pg_restore runs them, are recorded after they ran; one that was running when
//! the restore stopped is run again, its "already exists" errors not counted. The schema is
//! dropped when the restore completes without error.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::archive::frame::hex;

/// The ledger's schema in the target database.
pub const SCHEMA: &str = "pgarc_restore";

/// What an interrupted restore left in the ledger.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// The archive it restored ([`archive_id`]) and what it selected ([`selection_id`]).
    pub archive: String,
    pub selection: String,
    /// Runs so far.
    pub runs: u32,
    /// Entries done whole.
    pub done: HashSet<usize>,
    /// Frame ranges of split tables committed, per entry.
    pub parts: HashMap<usize, Vec<Range<usize>>>,
    /// Loads begun (entry, range): the ones not committed were in flight when it stopped.
    pub started: HashSet<(usize, Option<Range<usize>>)>,
}

impl Ledger {
    /// Whether an earlier run began a load of `idx` (whole, or a range of it) and did not
    /// commit it: loading it now is work done again.
    pub fn in_flight(&self, idx: usize) -> bool {
        self.started.iter().any(|(i, r)| {
            *i == idx
                && r.as_ref()
                    .is_none_or(|r| !self.parts.get(&idx).is_some_and(|p| p.contains(r)))
        })
    }

    /// The frame ranges of `idx` still to load, of `frames` frames (the end frame included,
    /// as ranges count it), when some parts are committed; None when none are.
    pub fn missing(&self, idx: usize, frames: usize) -> Option<Vec<Range<usize>>> {
        let parts = self.parts.get(&idx)?;
        let mut parts = parts.clone();
        parts.sort_by_key(|r| r.start);
        let mut missing = Vec::new();
        let mut at = 0;
        for r in parts {
            if r.start > at {
                missing.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < frames {
            missing.push(at..frames);
        }
        Some(missing)
    }
}

/// The archive's identity: the SHA-256 of its manifest (pgarc's) or of its toc.dat (stock
/// pg_dump's, which has no manifest).
pub fn archive_id(manifest: Option<&[u8]>, toc: &[u8]) -> String {
    match manifest {
        Some(m) => format!("manifest sha256 {}", hex(&Sha256::digest(m))),
        None => format!("toc.dat sha256 {}", hex(&Sha256::digest(toc))),
    }
}

/// What a restore selected: every entry it acts on, and how, hashed.
pub fn selection_id(items: impl Iterator<Item = (i32, String)>) -> String {
    let mut h = Sha256::new();
    for (id, how) in items {
        h.update(format!("{id}:{how}\n").as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

fn failed(what: &str, e: &tokio_postgres::Error) -> anyhow::Error {
    anyhow!(
        "cannot {what} the restore's ledger (schema {SCHEMA}): {}",
        crate::pg::session::describe(e)
    )
}

/// Creates the ledger of a new restore, run 1.
pub async fn create(client: &Client, archive: &str, selection: &str) -> Result<()> {
    let lit = crate::pg::session::literal;
    let sql = format!(
        "BEGIN;
         CREATE SCHEMA {SCHEMA};
         CREATE TABLE {SCHEMA}.run (archive text NOT NULL, selection text NOT NULL,
            runs int NOT NULL, started timestamptz NOT NULL DEFAULT now());
         CREATE TABLE {SCHEMA}.done (entry int NOT NULL, first_frame int, end_frame int,
            rows bigint, run int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE {SCHEMA}.started (entry int NOT NULL, first_frame int, end_frame int,
            run int NOT NULL);
         INSERT INTO {SCHEMA}.run (archive, selection, runs) VALUES ({}, {}, 1);
         COMMIT",
        lit(archive),
        lit(selection)
    );
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(failed("create", &e));
    }
    Ok(())
}

/// The ledger of an interrupted restore in the connected database, if there is one.
pub async fn read(client: &Client) -> Result<Option<Ledger>> {
    let exists = client
        .query_one(
            &format!("SELECT pg_catalog.to_regclass('{SCHEMA}.run') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(|e| failed("read", &e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let run = client
        .query_opt(
            &format!("SELECT archive, selection, runs FROM {SCHEMA}.run"),
            &[],
        )
        .await
        .map_err(|e| failed("read", &e))?
        .ok_or_else(|| anyhow!("the restore's ledger (schema {SCHEMA}) is empty"))?;
    let mut ledger = Ledger {
        archive: run.get(0),
        selection: run.get(1),
        runs: run.get::<_, i32>(2) as u32,
        ..Ledger::default()
    };
    for (idx, range) in recorded(client, "done").await? {
        match range {
            Some(r) => ledger.parts.entry(idx).or_default().push(r),
            None => {
                ledger.done.insert(idx);
            }
        }
    }
    ledger.started = recorded(client, "started").await?.into_iter().collect();
    Ok(Some(ledger))
}

/// The (entry, frame range) of every row of the ledger's table `table`.
async fn recorded(client: &Client, table: &str) -> Result<Vec<(usize, Option<Range<usize>>)>> {
    let rows = client
        .query(
            &format!("SELECT entry, first_frame, end_frame FROM {SCHEMA}.{table}"),
            &[],
        )
        .await
        .map_err(|e| failed("read", &e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let range = match (row.get::<_, Option<i32>>(1), row.get::<_, Option<i32>>(2)) {
                (Some(a), Some(b)) => Some(a as usize..b as usize),
                _ => None,
            };
            (row.get::<_, i32>(0) as usize, range)
        })
        .collect())
}

/// Counts the new run; returns its number.
pub async fn begin_run(client: &Client) -> Result<u32> {
    let row = client
        .query_one(
            &format!("UPDATE {SCHEMA}.run SET runs = runs + 1 RETURNING runs"),
            &[],
        )
        .await
        .map_err(|e| failed("update", &e))?;
    Ok(row.get::<_, i32>(0) as u32)
}

/// Removes the ledger: the restore is complete.
pub async fn drop(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!("DROP SCHEMA {SCHEMA} CASCADE"))
        .await
        .map_err(|e| failed("drop", &e))
}

fn frames_sql(range: Option<&Range<usize>>) -> String {
    match range {
        Some(r) => format!("{}, {}", r.start, r.end),
        None => "NULL, NULL".into(),
    }
}

/// The statement that records a load, in its transaction.
pub fn done_sql(idx: usize, range: Option<&Range<usize>>, rows: u64, run: u32) -> String {
    format!(
        "INSERT INTO {SCHEMA}.done (entry, first_frame, end_frame, rows, run) VALUES ({idx}, {}, \
         {rows}, {run})",
        frames_sql(range)
    )
}

/// The statement that records schema entries run.
pub fn entries_done_sql(entries: &[usize], run: u32) -> String {
    let values: Vec<String> = entries
        .iter()
        .map(|i| format!("({i}, NULL, NULL, NULL, {run})"))
        .collect();
    format!(
        "INSERT INTO {SCHEMA}.done (entry, first_frame, end_frame, rows, run) VALUES {}",
        values.join(", ")
    )
}

/// The statement that records a load begun (committed on its own, before the load).
pub fn started_sql(idx: usize, range: Option<&Range<usize>>, run: u32) -> String {
    format!(
        "INSERT INTO {SCHEMA}.started (entry, first_frame, end_frame, run) VALUES ({idx}, {}, \
         {run})",
        frames_sql(range)
    )
}

/// Whether an error of a schema statement run again on resume says that its object is there
/// already (the statement ran before the restore stopped).
pub fn already_there(e: &tokio_postgres::Error, entry: &crate::archive::toc::TocEntry) -> bool {
    let Some(code) = e.code() else {
        return false;
    };
    // lo_create of an existing large object is a unique violation in pg_largeobject_metadata;
    // elsewhere (CREATE UNIQUE INDEX over duplicate rows) it is a real error.
    if *code == SqlState::UNIQUE_VIOLATION {
        return entry.desc.is("BLOB METADATA") || entry.desc.is("LARGE OBJECT");
    }
    [
        SqlState::DUPLICATE_TABLE,
        SqlState::DUPLICATE_OBJECT,
        SqlState::DUPLICATE_SCHEMA,
        SqlState::DUPLICATE_FUNCTION,
        SqlState::DUPLICATE_COLUMN,
        SqlState::DUPLICATE_DATABASE,
        // "multiple primary keys for table ... are not allowed"
        SqlState::INVALID_TABLE_DEFINITION,
    ]
    .contains(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frames_left_are_the_gaps_between_committed_parts() {
        let mut l = Ledger::default();
        assert_eq!(l.missing(3, 10), None);
        l.parts.insert(3, vec![4..7, 0..2]);
        assert_eq!(l.missing(3, 10), Some(vec![2..4, 7..10]));
        l.parts.insert(4, std::iter::once(0..10).collect());
        assert_eq!(l.missing(4, 10), Some(vec![]));
        l.started.insert((3, Some(2..4)));
        assert!(l.in_flight(3));
        l.started.insert((4, Some(0..10)));
        assert!(!l.in_flight(4), "its range committed");
    }

    #[test]
    fn identities_change_with_the_archive_and_the_selection() {
        assert_ne!(archive_id(Some(b"a"), b"t"), archive_id(Some(b"b"), b"t"));
        assert_ne!(archive_id(None, b"t"), archive_id(None, b"u"));
        let a = selection_id([(1, "schema".to_string())].into_iter());
        let b = selection_id([(1, "data".to_string())].into_iter());
        assert_ne!(a, b);
    }
}
