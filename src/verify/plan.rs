//! The planner of `pgarc verify`: everything that can be checked from the manifest, toc.dat,
//! the frame indexes and the file sizes (format-spec §6.2, steps 1 to 4), done here at once,
//! and the list of reading work left for the workers (step 5).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::frame::{hex, parse_frame_index, FrameIndexEntry};
use crate::archive::manifest::{Manifest, TableRecord, MANIFEST_FILE};
use crate::archive::reader::{
    blobs_toc_name, find_data_file, parse_blobs_toc, safe_relative_name, DataFile, Decode,
    FileCodec,
};
use crate::archive::toc::Toc;
use crate::archive::{ArchiveDir, ManifestState, TOC_FILE};

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file, relative to the archive root.
    pub file: String,
    /// The frame (numbered from 1) and its byte range, where there is one.
    pub frame: Option<(usize, u64, u64)>,
    /// The table whose data it is, as `schema.name`.
    pub table: Option<String>,
    pub what: String,
}

impl Problem {
    pub fn new(file: &str, what: impl Into<String>) -> Problem {
        Problem {
            file: file.to_string(),
            frame: None,
            table: None,
            what: what.into(),
        }
    }

    pub fn of_table(mut self, table: Option<&String>) -> Problem {
        self.table = table.cloned();
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((n, a, b)) = self.frame {
            write!(f, ", frame {n} (bytes {a}..{b})")?;
        }
        if let Some(t) = &self.table {
            write!(f, ", table {t}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Reading work for the workers.
#[derive(Debug)]
pub enum Unit {
    /// Frames of a pgarc data file, each checked against its frame index line.
    Frames {
        file: DataFile,
        index: Arc<Vec<FrameIndexEntry>>,
        range: Range<usize>,
        table: String,
        /// Whether the file has the manifest's size; if not, frames after the first bad one
        /// are not checked (they would all be shifted).
        size_ok: bool,
    },
    /// A whole file: hashed (against the manifest, when there is one) and decoded as asked.
    Whole {
        rel: String,
        path: PathBuf,
        expect: Option<(u64, String)>,
        decode: Decode,
        table: Option<String>,
    },
}

impl Unit {
    /// Bytes to read, for scheduling largest first.
    pub fn weight(&self) -> u64 {
        match self {
            Unit::Frames { index, range, .. } => {
                index[range.clone()].iter().map(|f| f.stored).sum()
            }
            Unit::Whole { expect, path, .. } => expect
                .as_ref()
                .map(|e| e.0)
                .or_else(|| std::fs::metadata(path).ok().map(|m| m.len()))
                .unwrap_or(0),
        }
    }
}

/// What kind of archive this is, as far as verify can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A manifest that checks out: integrity can be proven.
    Pgarc { database: String, snapshot: String },
    /// No manifest, no pgarc directory: a stock pg_dump archive, structure only.
    Stock,
    /// A pgarc archive without a usable manifest: structure only, and damaged.
    NoManifest,
}

/// The planner's result.
#[derive(Debug)]
pub struct Plan {
    pub kind: Kind,
    pub problems: Vec<Problem>,
    pub units: Vec<Unit>,
    /// Files the archive holds (listed in the manifest, or named by toc.dat).
    pub files: usize,
    /// Tables with data.
    pub tables: usize,
    /// Which pg_restore versions read the archive, from toc.dat's header (when it parses).
    pub readers: Option<(String, crate::archive::compat::Readers)>,
}

/// Bytes of frames per unit: big tables are checked by several workers at once.
const UNIT_BYTES: u64 = 32 << 20;

/// Checks everything but file contents, and plans the reading.
pub fn plan(dir: &ArchiveDir, quick: bool) -> Plan {
    let mut p = Plan {
        kind: Kind::Stock,
        problems: Vec::new(),
        units: Vec::new(),
        files: 0,
        tables: 0,
        readers: None,
    };
    match dir.manifest_state() {
        ManifestState::Good(m) => {
            p.kind = Kind::Pgarc {
                database: m.database.clone(),
                snapshot: m.snapshot_id.clone(),
            };
            with_manifest(dir, &m, quick, &mut p);
        }
        ManifestState::Absent => structure(dir, quick, &mut p),
        ManifestState::Missing => {
            p.kind = Kind::NoManifest;
            p.problems.push(Problem::new(
                MANIFEST_FILE,
                "missing, but pgarc/ is there: the dump did not finish or the manifest was \
                 deleted; nothing in this archive can be proven",
            ));
            structure(dir, quick, &mut p);
        }
        ManifestState::Bad(e) => {
            p.kind = Kind::NoManifest;
            let what = e.to_string();
            let what = what
                .strip_prefix(&format!("{}: ", dir.root().join(MANIFEST_FILE).display()))
                .unwrap_or(&what)
                .to_string();
            p.problems.push(Problem::new(MANIFEST_FILE, what));
            structure(dir, quick, &mut p);
        }
    }
    p
}

/// A pgarc archive with a manifest whose own checksum holds: the steps of format-spec §6.2.
fn with_manifest(dir: &ArchiveDir, m: &Manifest, quick: bool, p: &mut Plan) {
    p.files = m.files.len();
    let mut c = ManifestCheck {
        dir,
        m,
        quick,
        present: BTreeMap::new(),
        listed: m.files.iter().map(|f| f.path.as_str()).collect(),
        hashed: BTreeSet::new(),
        decode_as: HashMap::new(),
    };
    c.listed_files(p);
    c.nothing_unlisted(p);
    c.toc(p);
    for t in &m.tables {
        c.table(t, p);
    }
    c.whole_files(p);
}

/// What checking an archive against its manifest keeps between its steps.
struct ManifestCheck<'a> {
    dir: &'a ArchiveDir,
    m: &'a Manifest,
    quick: bool,
    /// Files on disk as regular files: path, size on disk, and the manifest's size and hash.
    present: BTreeMap<&'a str, (PathBuf, u64, u64, &'a str)>,
    listed: BTreeSet<&'a str>,
    /// Files checked by the steps before the last (not hashed whole again).
    hashed: BTreeSet<String>,
    /// Files whose contents the TOC says are COPY data or large objects.
    decode_as: HashMap<String, (Decode, Option<String>)>,
}

impl<'a> ManifestCheck<'a> {
    /// 1. Every listed file: a safe name, present, of its size.
    fn listed_files(&mut self, p: &mut Plan) {
        let m = self.m;
        for f in &m.files {
            let path = match self.dir.resolve(&f.path) {
                Ok(path) => path,
                Err(e) => {
                    p.problems
                        .push(Problem::new(&f.path, strip_path(&e, self.dir)));
                    continue;
                }
            };
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    if meta.len() != f.size {
                        p.problems.push(Problem::new(
                            &f.path,
                            format!(
                                "{} bytes, the manifest says {}: {}",
                                meta.len(),
                                f.size,
                                if meta.len() < f.size {
                                    "truncated"
                                } else {
                                    "grown"
                                }
                            ),
                        ));
                    }
                    self.present
                        .insert(&f.path, (path, meta.len(), f.size, &f.sha256));
                }
                Ok(_) => p.problems.push(Problem::new(&f.path, "not a regular file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => p
                    .problems
                    .push(Problem::new(&f.path, "missing (listed in the manifest)")),
                Err(e) => p.problems.push(Problem::new(&f.path, e.to_string())),
            }
        }
    }

    /// 2. Nothing unlisted.
    fn nothing_unlisted(&self, p: &mut Plan) {
        match self.dir.all_files() {
            Ok(all) => {
                for f in all {
                    if f != MANIFEST_FILE && !self.listed.contains(f.as_str()) {
                        p.problems.push(Problem::new(
                            &f,
                            "not listed in the manifest: added after the dump (or a leftover)",
                        ));
                    }
                }
            }
            Err(e) => p.problems.push(Problem::new(".", strip_path(&e, self.dir))),
        }
    }

    /// A small listed file, read and hashed now (the rest is left to the workers).
    fn read_small(&self, rel: &str, p: &mut Plan) -> Option<Vec<u8>> {
        let (_, disk, size, sha) = self.present.get(rel)?;
        if disk != size {
            return None; // reported
        }
        match self.dir.read_small_file(rel) {
            Ok(bytes) => {
                let sum = hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                if &sum != sha {
                    p.problems.push(Problem::new(
                        rel,
                        format!("SHA-256 is {sum}, the manifest says {sha}: the file is damaged"),
                    ));
                    None
                } else {
                    Some(bytes)
                }
            }
            Err(e) => {
                p.problems.push(Problem::new(rel, strip_path(&e, self.dir)));
                None
            }
        }
    }

    /// 3. toc.dat parses and agrees with the manifest.
    fn toc(&mut self, p: &mut Plan) {
        self.hashed.insert(TOC_FILE.to_string());
        let toc = self
            .read_small(TOC_FILE, p)
            .and_then(|bytes| match Toc::parse(&bytes) {
                Ok(toc) => Some(toc),
                Err(e) => {
                    p.problems.push(Problem::new(TOC_FILE, e.to_string()));
                    None
                }
            });
        if !self.listed.contains(TOC_FILE) {
            p.problems
                .push(Problem::new(TOC_FILE, "not listed in the manifest"));
        }
        let Some(toc) = &toc else { return };
        p.readers = Some(readers_of(toc));
        check_names(self.dir, toc, p);
        let tables_by_id: HashMap<i32, &TableRecord> =
            self.m.tables.iter().map(|t| (t.dump_id, t)).collect();
        let in_toc: BTreeSet<i32> = toc.entries.iter().map(|e| e.dump_id).collect();
        for e in &toc.entries {
            if !e.had_dumper {
                continue;
            }
            if e.desc.is("TABLE DATA") {
                p.tables += 1;
                let name = e.filename.to_str_lossy().unwrap_or_default().into_owned();
                match tables_by_id.get(&e.dump_id) {
                    Some(t) => {
                        let stem = [".gz", ".zst", ".lz4"]
                            .iter()
                            .find_map(|suffix| t.file.strip_suffix(suffix))
                            .unwrap_or(&t.file);
                        if stem != name {
                            p.problems.push(
                                Problem::new(
                                    TOC_FILE,
                                    format!(
                                        "entry {} names data file {name:?}, the manifest {:?}",
                                        e.dump_id, t.file
                                    ),
                                )
                                .of_table(Some(&e.qualified_name())),
                            );
                        }
                    }
                    None => match find_data_file(self.dir.root(), name.as_bytes()) {
                        // Data pg_dump wrote itself (an extension's configuration table).
                        Ok(f) if self.listed.contains(f.rel.as_str()) => {
                            self.decode_as
                                .insert(f.rel, (Decode::Copy(f.codec), Some(e.qualified_name())));
                        }
                        Ok(f) => p.problems.push(
                            Problem::new(&f.rel, "data file not listed in the manifest")
                                .of_table(Some(&e.qualified_name())),
                        ),
                        Err(err) => p.problems.push(
                            Problem::new(&name, strip_path(&err, self.dir))
                                .of_table(Some(&e.qualified_name())),
                        ),
                    },
                }
            } else if e.desc.is("BLOBS") {
                // An unsafe name is reported by check_names.
                let Ok(blobs) = blobs_toc_name(toc, e).map(str::to_string) else {
                    continue;
                };
                self.hashed.insert(blobs.clone());
                let Some(bytes) = self.read_small(&blobs, p) else {
                    if !self.listed.contains(blobs.as_str()) {
                        p.problems.push(Problem::new(
                            &blobs,
                            "large-object list not listed in the manifest",
                        ));
                    }
                    continue;
                };
                for (rel, problem) in blob_files(self.dir, &blobs, &bytes) {
                    match problem {
                        Some(what) => p.problems.push(Problem::new(&rel, what)),
                        None if !self.listed.contains(rel.as_str()) => p.problems.push(
                            Problem::new(&rel, "large object file not listed in the manifest"),
                        ),
                        None => {
                            let codec = FileCodec::of_file_name(&rel);
                            self.decode_as.insert(rel, (Decode::Blob(codec), None));
                        }
                    }
                }
            }
        }
        for t in &self.m.tables {
            if !in_toc.contains(&t.dump_id) {
                p.problems.push(
                    Problem::new(
                        TOC_FILE,
                        format!(
                            "has no entry {} though the manifest lists its data in {}",
                            t.dump_id, t.file
                        ),
                    )
                    .of_table(Some(&format!("{}.{}", t.schema, t.name))),
                );
            }
        }
    }

    /// 4. A pgarc table: its frame index matches the manifest and tiles the data file.
    fn table(&mut self, t: &TableRecord, p: &mut Plan) {
        let table = format!("{}.{}", t.schema, t.name);
        self.hashed.insert(t.frame_index.clone());
        let index = self.read_small(&t.frame_index, p).and_then(|bytes| {
            parse_frame_index(&bytes)
                .map_err(|e| {
                    p.problems
                        .push(Problem::new(&t.frame_index, e.to_string()).of_table(Some(&table)))
                })
                .ok()
        });
        if !self.listed.contains(t.frame_index.as_str()) {
            p.problems.push(
                Problem::new(&t.frame_index, "frame index not listed in the manifest")
                    .of_table(Some(&table)),
            );
        }
        let Some(index) = index else { return };
        let Some((path, disk, size, _)) = self.present.get(t.file.as_str()) else {
            if !self.listed.contains(t.file.as_str()) {
                p.problems.push(
                    Problem::new(&t.file, "data file not listed in the manifest")
                        .of_table(Some(&table)),
                );
            }
            return;
        };
        let stored: u64 = index.iter().map(|f| f.stored).sum();
        let rows: u64 = index.iter().map(|f| f.rows).sum();
        let raw: u64 = index.iter().map(|f| f.raw).sum();
        let mut disagree = Vec::new();
        if stored != *size {
            disagree.push(format!("covers {stored} bytes of {size}"));
        }
        if index.len() as u64 != t.frames {
            disagree.push(format!(
                "{} frames, the manifest says {}",
                index.len(),
                t.frames
            ));
        }
        if rows != t.rows {
            disagree.push(format!("{rows} rows, the manifest says {}", t.rows));
        }
        if raw != t.raw_bytes {
            disagree.push(format!(
                "{raw} raw bytes, the manifest says {}",
                t.raw_bytes
            ));
        }
        if !disagree.is_empty() {
            p.problems
                .push(Problem::new(&t.frame_index, disagree.join("; ")).of_table(Some(&table)));
            return;
        }
        self.hashed.insert(t.file.clone());
        // The manifest vouches for the index, the index for every frame: checking each
        // frame's SHA-256 covers every byte of the file.
        let file = DataFile {
            path: path.clone(),
            rel: t.file.clone(),
            codec: FileCodec::of_file_name(&t.file),
            size: *disk,
        };
        let size_ok = disk == size;
        let index = Arc::new(index);
        let ranges: Vec<Range<usize>> = if self.quick {
            let last = index.len().saturating_sub(1);
            let mut r = Vec::with_capacity(2);
            r.push(0..index.len().min(1));
            if last > 0 {
                r.push(last..index.len());
            }
            r
        } else {
            frame_ranges(&index)
        };
        for range in ranges {
            p.units.push(Unit::Frames {
                file: file.clone(),
                index: index.clone(),
                range,
                table: table.clone(),
                size_ok,
            });
        }
    }

    /// 5. Every other listed file, hashed whole (and decoded where the TOC says what it is).
    fn whole_files(mut self, p: &mut Plan) {
        if self.quick {
            return;
        }
        for (rel, (path, disk, size, sha)) in &self.present {
            if self.hashed.contains(*rel) || disk != size {
                continue;
            }
            let (decode, table) = self.decode_as.remove(*rel).unwrap_or((Decode::No, None));
            p.units.push(Unit::Whole {
                rel: rel.to_string(),
                path: path.clone(),
                expect: Some((*size, sha.to_string())),
                decode,
                table,
            });
        }
    }
}

fn readers_of(toc: &Toc) -> (String, crate::archive::compat::Readers) {
    (
        toc.header.version.to_string(),
        crate::archive::compat::readers(&toc.header),
    )
}

/// An archive without a (usable) manifest: toc.dat parses, every data file it names exists,
/// and (unless quick) decompresses fully and ends with the end-of-data marker.
fn structure(dir: &ArchiveDir, quick: bool, p: &mut Plan) {
    let toc = match dir.read_small_file(TOC_FILE) {
        Ok(bytes) => match Toc::parse(&bytes) {
            Ok(toc) => toc,
            Err(e) => {
                p.problems.push(Problem::new(TOC_FILE, e.to_string()));
                return;
            }
        },
        Err(e) => {
            p.problems.push(Problem::new(TOC_FILE, strip_path(&e, dir)));
            return;
        }
    };
    p.files = 1;
    p.readers = Some(readers_of(&toc));
    check_names(dir, &toc, p);
    for e in toc.entries.iter().filter(|e| e.had_dumper) {
        if e.desc.is("TABLE DATA") {
            p.tables += 1;
            let name = e.filename.as_bytes().unwrap_or_default();
            if safe_relative_name(name).is_err() {
                continue; // reported by check_names
            }
            match find_data_file(dir.root(), name) {
                Ok(f) => {
                    p.files += 1;
                    if !quick {
                        p.units.push(Unit::Whole {
                            rel: f.rel.clone(),
                            path: f.path.clone(),
                            expect: None,
                            decode: Decode::Copy(f.codec),
                            table: Some(e.qualified_name()),
                        });
                    }
                }
                Err(err) => p.problems.push(
                    Problem::new(&String::from_utf8_lossy(name), strip_path(&err, dir))
                        .of_table(Some(&e.qualified_name())),
                ),
            }
        } else if e.desc.is("BLOBS") {
            // An unsafe name is reported by check_names.
            let Ok(blobs) = blobs_toc_name(&toc, e).map(str::to_string) else {
                continue;
            };
            let bytes = match dir.read_small_file(&blobs) {
                Ok(b) => b,
                Err(err) => {
                    p.problems.push(Problem::new(&blobs, strip_path(&err, dir)));
                    continue;
                }
            };
            p.files += 1;
            for (rel, problem) in blob_files(dir, &blobs, &bytes) {
                match problem {
                    Some(what) => p.problems.push(Problem::new(&rel, what)),
                    None => {
                        p.files += 1;
                        if !quick {
                            p.units.push(Unit::Whole {
                                path: dir.root().join(&rel),
                                decode: Decode::Blob(FileCodec::of_file_name(&rel)),
                                rel,
                                expect: None,
                                table: None,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Every file name in toc.dat must stay inside the archive (format-spec §8.2).
fn check_names(dir: &ArchiveDir, toc: &Toc, p: &mut Plan) {
    for e in &toc.entries {
        let name = e.filename.as_bytes().unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let shown = String::from_utf8_lossy(name).into_owned();
        let problem = match safe_relative_name(name) {
            Err(what) => Some(what),
            Ok(rel) => ["", ".gz", ".lz4", ".zst"]
                .iter()
                .find_map(|s| dir.resolve(&format!("{rel}{s}")).err())
                .map(|e| strip_path(&e, dir)),
        };
        if let Some(what) = problem {
            p.problems.push(
                Problem::new(
                    TOC_FILE,
                    format!("entry {} names file {shown:?}: {what}", e.dump_id),
                )
                .of_table(e.desc.is("TABLE DATA").then(|| e.qualified_name()).as_ref()),
            );
        }
    }
}

/// The data files a large-object list names, each with the problem found, if any.
fn blob_files(dir: &ArchiveDir, list: &str, bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let lines = match parse_blobs_toc(bytes) {
        Ok(lines) => lines,
        Err(what) => return vec![(list.to_string(), Some(what))],
    };
    lines
        .into_iter()
        .map(|line| match line {
            Err(what) => (list.to_string(), Some(what)),
            Ok((_, name)) => match find_data_file(dir.root(), name.as_bytes()) {
                Ok(f) => (f.rel, None),
                Err(e) => (name, Some(strip_path(&e, dir))),
            },
        })
        .collect()
}

/// An archive error's message without the leading absolute path (problems name files
/// relative to the archive).
fn strip_path(e: &crate::archive::Error, dir: &ArchiveDir) -> String {
    let text = e.to_string();
    let root = format!("{}/", dir.root().display());
    match text.split_once(": ") {
        Some((path, rest))
            if path.starts_with(&root) || path == dir.root().display().to_string() =>
        {
            rest.to_string()
        }
        _ => text,
    }
}

/// Frames cut into contiguous ranges of about [`UNIT_BYTES`].
fn frame_ranges(index: &[FrameIndexEntry]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in index.iter().enumerate() {
        bytes += f.stored;
        if bytes >= UNIT_BYTES {
            out.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < index.len() || out.is_empty() {
        out.push(start..index.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_into_ranges_that_cover_the_file() {
        let f = |stored| FrameIndexEntry {
            offset: 0,
            stored,
            raw: 0,
            rows: 0,
            sha256: [0; 32],
        };
        let index: Vec<_> = (0..100).map(|_| f(1 << 20)).collect();
        let r = frame_ranges(&index);
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, 100);
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(r.len(), 4);
        assert_eq!(frame_ranges(&[]), vec![0..0]);
    }
}
