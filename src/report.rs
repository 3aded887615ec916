//! `--report FILE`: a JSON account of one dump or restore, for scripts and monitoring. Its
//! schema is `format-spec/report.schema.json` (JSON Schema 2020-12), report format 1: fields
//! may be added in later versions of format 1, never removed or changed in meaning.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// The version of the report's layout.
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub report_format: u32,
    /// "dump" or "restore".
    pub command: &'static str,
    pub pgarc_version: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    /// "ok", or "errors" for a restore that reported statement errors and carried on.
    pub status: &'static str,
    pub archive: String,
    pub database: String,
    pub server_version: Option<String>,
    pub jobs: usize,
    /// The data files' compression (a dump), as `-Z` spells it.
    pub compression: Option<String>,
    /// The exported (or imported) snapshot a dump read (a dump).
    pub snapshot_id: Option<String>,
    pub phases: Vec<Phase>,
    pub tables: Vec<TableReport>,
    pub totals: Totals,
    /// `restore --verify`: the check of the restored database against the archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    /// A resumed run (`--resume`): what earlier runs did and what this one did again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeReport>,
}

/// What a resumed dump or restore kept and redid (format-spec/tool.md §10).
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// This run's number: 2 for the first resume.
    pub run: u32,
    /// Units of work (a dump's chunks; a restore's data pieces) earlier runs finished and
    /// this one kept.
    pub kept: usize,
    /// Units this run did.
    pub done: usize,
    /// Of `done`, the units an earlier run had begun and not finished: the work redone.
    pub redone: usize,
}

/// What `restore --verify` found (format-spec/tool.md §2a).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// "equal" or "different".
    pub status: &'static str,
    pub seconds: f64,
    pub tables: usize,
    pub rows: u64,
    pub sequences: usize,
    pub large_objects: usize,
    /// One line per difference, naming the table, sequence or large object.
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    /// TOC entries run in the phase (a restore); absent for a dump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub schema: String,
    pub name: String,
    pub rows: u64,
    /// Uncompressed COPY text.
    pub raw_bytes: u64,
    /// The data file's size in the archive.
    pub stored_bytes: u64,
    /// From the first chunk (part) started to the last finished.
    pub seconds: f64,
    /// The workers (1-based) that copied or loaded the table.
    pub workers: Vec<usize>,
    /// Ctid-range chunks (a dump) or frame ranges loaded in parallel (a restore).
    pub pieces: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub tables: usize,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
    pub errors: usize,
}

impl Report {
    /// The report of one `command` ("dump" or "restore") that started at `started` and ends
    /// now, status "ok", with no phases and no tables yet: [`Report::phase`] and
    /// [`Report::tables`] fill them in, and the fields a command has (the compression,
    /// the snapshot) are set directly.
    pub fn new(
        command: &'static str,
        started: std::time::SystemTime,
        archive: &Path,
        database: &str,
        jobs: usize,
    ) -> Report {
        use crate::archive::manifest::rfc3339_utc;
        Report {
            report_format: REPORT_FORMAT,
            command,
            pgarc_version: env!("CARGO_PKG_VERSION").to_string(),
            started: rfc3339_utc(started),
            finished: rfc3339_utc(std::time::SystemTime::now()),
            status: "ok",
            archive: archive.display().to_string(),
            database: database.to_string(),
            server_version: None,
            jobs,
            compression: None,
            snapshot_id: None,
            phases: Vec::new(),
            tables: Vec::new(),
            totals: Totals {
                tables: 0,
                rows: 0,
                raw_bytes: 0,
                stored_bytes: 0,
                seconds: 0.0,
                errors: 0,
            },
            verify: None,
            resume: None,
        }
    }

    /// Adds a phase that took `elapsed` (and ran `entries` TOC entries, for a restore).
    pub fn phase(
        mut self,
        name: &str,
        elapsed: std::time::Duration,
        entries: Option<usize>,
    ) -> Self {
        self.phases.push(Phase {
            name: name.into(),
            seconds: secs(elapsed),
            entries,
        });
        self
    }

    /// Sets the tables, sorted by schema and name, and the totals: the tables' sums, the
    /// whole run's time and its errors (status "errors" when there were some).
    pub fn tables(
        mut self,
        mut tables: Vec<TableReport>,
        elapsed: std::time::Duration,
        errors: usize,
    ) -> Self {
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.totals = Totals {
            tables: tables.len(),
            rows: tables.iter().map(|t| t.rows).sum(),
            raw_bytes: tables.iter().map(|t| t.raw_bytes).sum(),
            stored_bytes: tables.iter().map(|t| t.stored_bytes).sum(),
            seconds: secs(elapsed),
            errors,
        };
        if errors > 0 {
            self.status = "errors";
        }
        self.tables = tables;
        self
    }

    /// Writes the report to `path` atomically (a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("cannot encode the report")?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .with_context(|| format!("--report {}: not a file name", path.display()))?;
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("cannot write the report to {}", path.display()))
    }
}

/// Seconds, rounded to milliseconds.
pub fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
