//! The planner of `pgarc verify`: everything that can be checked from the manifest, toc.dat,
//! the frame indexes and the file sizes (format-spec/tool.md §2, steps 1 to 5), done here at once,
//! and the list of reading work left for the workers (step 5).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::archive::data::{DataProblem, Layout, Located, TableData};
use crate::archive::frame::FrameIndexEntry;
use crate::archive::manifest::{IndexAt, Manifest, ManifestIndex, MANIFEST_FILE};
use crate::archive::reader::{blobs_toc_name, Decode};
use crate::archive::store::{Stat, Store};
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
    /// (`data.size_ok` false: the file's size differs from the manifest's, so frames after
    /// the first bad one are not checked: they would all be shifted.)
    Frames {
        data: Arc<TableData>,
        range: Range<usize>,
        table: String,
    },
    /// A whole file: hashed (against the manifest, when there is one) and decoded as asked.
    Whole {
        rel: String,
        store: Arc<dyn Store>,
        /// Its size as found.
        size: u64,
        expect: Option<(u64, String)>,
        decode: Decode,
        table: Option<String>,
    },
}

impl Unit {
    /// Bytes to read, for scheduling largest first.
    pub fn weight(&self) -> u64 {
        match self {
            Unit::Frames { data, range, .. } => data.frames().map_or(0, |index| {
                index[range.clone()].iter().map(|f| f.stored).sum()
            }),
            Unit::Whole { size, .. } => *size,
        }
    }
}

/// What kind of archive this is, as far as verify can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A manifest that checks out: integrity can be proven.
    Pgarc {
        database: String,
        snapshot: String,
        /// The archive format version, and the keys of a newer minor that were not checked.
        format: String,
        ignored: Vec<String>,
    },
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
                format: m.format.to_string(),
                ignored: m.ignored_keys.clone(),
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

/// A pgarc archive with a manifest whose own checksum holds: the steps of format-spec/tool.md §2.
fn with_manifest(dir: &ArchiveDir, m: &Manifest, quick: bool, p: &mut Plan) {
    p.files = m.files.len();
    let mut c = ManifestCheck {
        dir,
        m,
        index: ManifestIndex::new(m),
        quick,
        present: BTreeMap::new(),
        listed: m.files.iter().map(|f| f.path.as_str()).collect(),
        hashed: BTreeSet::new(),
        decode_as: HashMap::new(),
    };
    c.listed_files(p);
    c.nothing_unlisted(p);
    if let Some(toc) = c.toc(p) {
        c.entries(&toc, p);
    }
    c.whole_files(p);
}

/// What checking an archive against its manifest keeps between its steps.
struct ManifestCheck<'a> {
    dir: &'a ArchiveDir,
    m: &'a Manifest,
    index: ManifestIndex,
    quick: bool,
    /// Files on disk as regular files: path, size on disk, and the manifest's size and hash.
    present: BTreeMap<&'a str, (u64, u64, &'a str)>,
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
        // One listing for an object store, a stat per file for a directory.
        let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        let stats = self.dir.store().stat_all(&names);
        for (f, stat) in m.files.iter().zip(stats) {
            if let Err(e) = self.dir.resolve(&f.path) {
                p.problems
                    .push(Problem::new(&f.path, strip_path(&e, self.dir)));
                continue;
            }
            match stat {
                Ok(Stat::File(found)) => {
                    if found != f.size {
                        let problem = DataProblem::Size {
                            found,
                            listed: f.size,
                        };
                        p.problems.push(Problem::new(&f.path, problem.to_string()));
                    }
                    self.present.insert(&f.path, (found, f.size, &f.sha256));
                }
                Ok(Stat::Special(_)) => {
                    p.problems.push(Problem::new(&f.path, "not a regular file"))
                }
                Ok(Stat::Absent) => p.problems.push(Problem::new(
                    &f.path,
                    DataProblem::ListedMissing.to_string(),
                )),
                Err(e) => p
                    .problems
                    .push(Problem::new(&f.path, strip_path(&e, self.dir))),
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

    /// 3. toc.dat's SHA-256 against the manifest; it parses; it names no file outside.
    fn toc(&mut self, p: &mut Plan) -> Option<Toc> {
        self.hashed.insert(TOC_FILE.to_string());
        let bytes = match self.dir.read_listed(&self.index, TOC_FILE, "toc.dat") {
            Ok(bytes) => bytes,
            Err(problem) => {
                p.problems.push(located(problem));
                return None;
            }
        };
        let toc = match Toc::parse(&bytes) {
            Ok(toc) => toc,
            Err(e) => {
                p.problems.push(Problem::new(TOC_FILE, e.to_string()));
                return None;
            }
        };
        p.readers = Some(readers_of(&toc));
        p.problems
            .extend(self.dir.refused_names(&toc).into_iter().map(located));
        Some(toc)
    }

    /// 4 and 5. Each entry's data through the archive's one seam: a `[[table]]` naming the
    /// entry's data file, its frame index checked and tiling it (then its frames are work for
    /// the workers, step 6), or a listed stream of pg_dump's; large objects listed; every
    /// `[[table]]` has its entry.
    fn entries(&mut self, toc: &Toc, p: &mut Plan) {
        let mut problems = Vec::new();
        for e in toc.entries.iter().filter(|e| e.had_dumper) {
            if e.desc.is("TABLE DATA") {
                p.tables += 1;
                if let Some(t) = self.index.table(e.dump_id) {
                    if let IndexAt::File(path) = &t.frame_index {
                        self.hashed.insert(path.clone());
                    }
                }
                let Some(data) = self.dir.table_data(Some(&self.index), e, &mut problems) else {
                    continue;
                };
                let table = e.qualified_name();
                match &data.layout {
                    Layout::Frames(index) => {
                        self.hashed.insert(data.file.rel.clone());
                        let index = index.clone();
                        let data = Arc::new(data);
                        p.units
                            .extend(frame_units(&data, &index, &table, self.quick));
                    }
                    Layout::Stream(_) => {
                        let decode = Decode::Copy(data.file.codec);
                        self.decode_as.insert(data.file.rel, (decode, Some(table)));
                    }
                }
            } else if e.desc.is("BLOBS") {
                if let Ok(list) = blobs_toc_name(toc, e) {
                    self.hashed.insert(list.to_string());
                }
                for object in self
                    .dir
                    .large_objects(toc, Some(&self.index), e, &mut problems)
                {
                    let decode = Decode::Blob(object.file.codec);
                    self.decode_as.insert(object.file.rel, (decode, None));
                }
            }
        }
        let in_toc: BTreeSet<i32> = toc.entries.iter().map(|e| e.dump_id).collect();
        for t in self
            .m
            .tables
            .iter()
            .filter(|t| !in_toc.contains(&t.dump_id))
        {
            problems.push(Located {
                file: TOC_FILE.to_string(),
                table: Some(format!("{}.{}", t.schema, t.name)),
                problem: DataProblem::NoEntry {
                    dump_id: t.dump_id,
                    file: t.file.clone(),
                },
            });
        }
        p.problems.extend(problems.into_iter().map(located));
    }

    /// 7. Every other listed file, hashed whole (and decoded where the TOC says what it is).
    fn whole_files(mut self, p: &mut Plan) {
        if self.quick {
            return;
        }
        for (rel, (disk, size, sha)) in &self.present {
            if self.hashed.contains(*rel) || disk != size {
                continue;
            }
            let (decode, table) = self.decode_as.remove(*rel).unwrap_or((Decode::No, None));
            p.units.push(Unit::Whole {
                rel: rel.to_string(),
                store: self.dir.store().clone(),
                size: *disk,
                expect: Some((*size, sha.to_string())),
                decode,
                table,
            });
        }
    }
}

/// The frames of a table's data file as work: all of them in ranges of about
/// [`UNIT_BYTES`], or for `--quick` the first and the last. The manifest vouches for the
/// index, the index for every frame: checking each frame's SHA-256 covers every byte.
fn frame_units(
    data: &Arc<TableData>,
    index: &Arc<[FrameIndexEntry]>,
    table: &str,
    quick: bool,
) -> Vec<Unit> {
    let ranges: Vec<Range<usize>> = if quick {
        let last = index.len().saturating_sub(1);
        let mut r = Vec::with_capacity(2);
        r.push(0..index.len().min(1));
        if last > 0 {
            r.push(last..index.len());
        }
        r
    } else {
        frame_ranges(index)
    };
    ranges
        .into_iter()
        .map(|range| Unit::Frames {
            data: data.clone(),
            range,
            table: table.to_string(),
        })
        .collect()
}

fn located(l: Located) -> Problem {
    Problem::new(&l.file, l.problem.to_string()).of_table(l.table.as_ref())
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
    let refused = dir.refused_names(&toc);
    let mut problems = Vec::new();
    for e in toc.entries.iter().filter(|e| e.had_dumper) {
        if e.desc.is("TABLE DATA") {
            p.tables += 1;
            // A refused name is reported once, by refused_names.
            let mut mine = Vec::new();
            let data = dir.table_data(None, e, &mut mine);
            if !refused.iter().any(|r| matches!(&r.problem, DataProblem::RefusedName { dump_id, .. } if *dump_id == e.dump_id)) {
                problems.append(&mut mine);
            }
            let Some(data) = data else { continue };
            p.files += 1;
            if !quick {
                p.units.push(Unit::Whole {
                    rel: data.file.rel.clone(),
                    store: data.file.store.clone(),
                    size: data.file.size,
                    expect: None,
                    decode: Decode::Copy(data.file.codec),
                    table: Some(e.qualified_name()),
                });
            }
        } else if e.desc.is("BLOBS") {
            if blobs_toc_name(&toc, e).is_err() {
                continue; // reported by refused_names
            }
            p.files += 1;
            for object in dir.large_objects(&toc, None, e, &mut problems) {
                p.files += 1;
                if !quick {
                    p.units.push(Unit::Whole {
                        store: object.file.store.clone(),
                        size: object.file.size,
                        decode: Decode::Blob(object.file.codec),
                        rel: object.file.rel,
                        expect: None,
                        table: None,
                    });
                }
            }
        }
    }
    p.problems.extend(refused.into_iter().map(located));
    p.problems.extend(problems.into_iter().map(located));
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
            rows_sum: None,
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
