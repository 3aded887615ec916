//! `pgarc verify`: checks an archive offline, with no database (format-spec/tool.md §2; archive.md §7).
//!
//! The [`plan`]ner checks what the manifest, toc.dat, the frame indexes and the file sizes
//! can prove (it reads only small files); the [`worker`]s then read the data on N threads:
//! every frame of a pgarc data file against its frame index (SHA-256, lengths, rows, the end
//! marker in the last frame only), every other file against the manifest's SHA-256, and
//! whatever the TOC says is COPY data or a large object decompressed in full. An archive
//! without a manifest (stock pg_dump) gets the structural part only, and says so.
//!
//! `--quick` reads no data beyond each pgarc data file's first and last frame, and hashes no
//! large file: it catches everything a changed size, a missing or added file, a damaged
//! manifest, toc.dat or frame index shows, and damage in those two frames (format-spec/tool.md §2; archive.md §7).

pub mod against;
pub mod plan;
pub mod worker;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use plan::{Kind, Problem};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A directory or `s3://BUCKET/PREFIX`.
    pub archive: crate::archive::store::Location,
    /// Plain HTTP to an object store that is not on loopback.
    pub allow_http: bool,
    pub jobs: usize,
    pub quick: bool,
}

/// The result: the problems, and what was checked.
#[derive(Debug)]
pub struct Verdict {
    pub archive: PathBuf,
    pub kind: Kind,
    pub quick: bool,
    pub problems: Vec<Problem>,
    pub files: usize,
    pub tables: usize,
    pub frames: u64,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// The archive version and which pg_restore versions read it.
    pub readers: Option<(String, crate::archive::compat::Readers)>,
}

impl Verdict {
    /// Intact as far as this check can tell.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies an archive. `Err` only when the check could not run at all (not a directory,
/// nothing that looks like an archive).
pub fn run(opts: &VerifyOptions) -> Result<Verdict> {
    let started = Instant::now();
    let dir = crate::s3::open_archive(&opts.archive, opts.allow_http)?;
    let plan = plan::plan(&dir, opts.quick);
    let found = worker::run(plan.units, opts.jobs);
    let mut problems = plan.problems;
    problems.extend(found.problems);
    // A problem two steps see (a data file's size: the listing, then the table's data) is
    // reported once, as the first step names it.
    problems.sort_by(|a, b| {
        (&a.file, a.frame, &a.what, &a.table).cmp(&(&b.file, b.frame, &b.what, &b.table))
    });
    problems.dedup_by(|b, a| a.file == b.file && a.frame == b.frame && a.what == b.what);
    Ok(Verdict {
        archive: opts.archive.shown(),
        kind: plan.kind,
        quick: opts.quick,
        problems,
        files: plan.files,
        tables: plan.tables,
        frames: found.frames,
        rows: found.rows,
        bytes: found.bytes,
        elapsed: started.elapsed(),
        readers: plan.readers,
    })
}

impl fmt::Display for Verdict {
    /// One line per problem, then the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "pgarc: {}: {p}", self.archive.display())?;
        }
        let what = if self.quick {
            "quick check (sizes, metadata, first and last frame of each table; run without \
             --quick to read everything)"
        } else {
            "full check"
        };
        let read = format!(
            "{} files, {} tables, {} frames, {} rows, {} read in {:.1} s",
            self.files,
            self.tables,
            self.frames,
            self.rows,
            crate::run::human(self.bytes),
            self.elapsed.as_secs_f64()
        );
        let n = self.problems.len();
        let s = if n == 1 { "" } else { "s" };
        if let Kind::Pgarc {
            format, ignored, ..
        } = &self.kind
        {
            if !ignored.is_empty() {
                writeln!(
                    f,
                    "pgarc: {}: archive format {format} is newer than this pgarc knows ({}): \
                     not checked: {}",
                    self.archive.display(),
                    crate::archive::manifest::FORMAT,
                    ignored.join(", ")
                )?;
            }
        }
        if let Some((version, readers)) = &self.readers {
            writeln!(
                f,
                "pgarc: {}: archive version {version}: readable by {readers}",
                self.archive.display()
            )?;
        }
        match &self.kind {
            Kind::Pgarc {
                database, snapshot, ..
            } if n == 0 => writeln!(
                f,
                "pgarc: {}: intact: every file matches the manifest (pgarc archive of database \
                 {database:?}, snapshot {snapshot}); {what}: {read}",
                self.archive.display()
            ),
            Kind::Pgarc { .. } => writeln!(
                f,
                "pgarc: {}: DAMAGED: {n} problem{s} listed above; {what}: {read}",
                self.archive.display()
            ),
            Kind::Stock if n == 0 => writeln!(
                f,
                "pgarc: {}: structure intact (toc.dat parses; every data file named is there{}); \
                 no manifest, so integrity cannot be proven: this archive was not written by \
                 pgarc and holds no checksums; {what}: {read}",
                self.archive.display(),
                if self.quick {
                    ""
                } else {
                    ", decompresses fully and ends with the end-of-data marker"
                }
            ),
            Kind::Stock => writeln!(
                f,
                "pgarc: {}: DAMAGED: {n} problem{s} listed above (structural check only: no \
                 manifest); {what}: {read}",
                self.archive.display()
            ),
            Kind::NoManifest => writeln!(
                f,
                "pgarc: {}: DAMAGED: {n} problem{s} listed above; without its manifest this \
                 pgarc archive's integrity cannot be proven (structure checked); {what}: {read}",
                self.archive.display()
            ),
        }
    }
}
