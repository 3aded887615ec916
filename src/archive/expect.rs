//! What a database must hold to equal an archive (issue 19; format-spec archive.md §5.3 and
//! tool.md §2a): for every table with data, its rows' digest and the column list its rows
//! were copied with; every sequence's value; every large object's SHA-256; the COPY settings.
//! Pure archive code: the check that reads a database is `verify::against`.
//!
//! A format 3 archive states each table's digest in its manifest. For a stock archive, or a
//! pgarc archive of format 1 or 2, the digests are computed from the data files themselves
//! (decompressed, checked as a restore checks them, and hashed), on `jobs` threads.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::data::{LargeObject, Located, TableData};
use super::digest::{RowsDigest, StreamDigest};
use super::manifest::{CopySettings, ManifestIndex};
use super::toc::{Toc, TocEntry};
use super::ArchiveDir;

/// One table the database must hold.
#[derive(Debug, Clone)]
pub struct ExpectedTable {
    pub dump_id: i32,
    /// Carriers (`pg::carrier`) of the schema and table names' bytes.
    pub schema: String,
    pub name: String,
    /// The column list of the entry's COPY statement (quoted names, a carrier), in its
    /// order; empty for a table without columns.
    pub columns: String,
    pub digest: RowsDigest,
}

/// A sequence's state as the archive's SEQUENCE SET entry sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSequence {
    pub schema: String,
    pub name: String,
    pub value: i128,
    pub is_called: bool,
}

/// Everything a database is checked against.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The settings to copy under: the manifest's (format 3), else `None`: pg_dump's.
    pub settings: Option<CopySettings>,
    /// The archive's encoding (its ENCODING entry).
    pub encoding: String,
    pub tables: Vec<ExpectedTable>,
    pub sequences: Vec<ExpectedSequence>,
    /// Large objects: OID and the SHA-256 of the bytes.
    pub large_objects: Vec<(u32, [u8; 32])>,
    /// Whether the archive has a BLOBS entry at all (else the database's large objects are
    /// not compared: a dump with --no-large-objects, or one that had none).
    pub has_large_objects: bool,
    /// Every relation the archive creates (TABLE entries, and sequences): the database's
    /// other tables are extra.
    pub known: HashSet<(String, String)>,
    /// Whether the digests came from the manifest (true) or from the data files.
    pub from_manifest: bool,
}

/// Why the expectation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("{0}")]
    Archive(#[from] super::Error),
    #[error("{0}")]
    Data(String),
}

/// `filter`: the dumpIds of the entries to check (TABLE DATA, SEQUENCE SET, BLOBS); None for
/// all of them.
pub fn expected(
    dir: &ArchiveDir,
    jobs: usize,
    filter: Option<&HashSet<i32>>,
) -> Result<Expected, ExpectError> {
    let manifest = dir.read_manifest()?;
    let settings = manifest.as_ref().and_then(|m| m.settings.clone());
    let index = manifest.as_ref().map(ManifestIndex::new);
    drop(manifest);
    let toc = match &index {
        Some(m) => dir.read_listed_toc(m)?,
        None => dir.read_toc()?,
    };
    let encoding = toc
        .encoding()
        .map_err(|e| ExpectError::Data(format!("toc.dat: {e}")))?
        .unwrap_or_else(|| "UTF8".to_string());
    let wanted = |e: &TocEntry| filter.is_none_or(|f| f.contains(&e.dump_id));
    let known = toc
        .entries
        .iter()
        .filter(|e| e.desc.is("TABLE") || e.desc.is("SEQUENCE"))
        .map(names)
        .collect();
    let from_manifest = index.as_ref().is_some_and(|m| m.digests);
    let mut pending = Vec::new();
    let mut tables = Vec::new();
    for e in toc
        .entries
        .iter()
        .filter(|e| e.desc.is("TABLE DATA") && wanted(e))
    {
        let (schema, name) = names(e);
        let copy = e.copy_stmt.carrier().unwrap_or_default();
        let columns = copy_columns(&copy).ok_or_else(|| {
            ExpectError::Data(format!(
                "toc.dat: the COPY statement of {} is not one pg_dump writes: {:?}",
                e.qualified_name(),
                e.copy_stmt.to_str_lossy().unwrap_or_default()
            ))
        })?;
        let stated = index
            .as_ref()
            .and_then(|m| m.table(e.dump_id))
            .and_then(|t| t.rows_sum.map(|s| (s, t.rows, t.raw_bytes)));
        let digest = match stated {
            Some((sum, rows, raw)) => {
                // raw_bytes counts the end marker `\.\n`; the digest's bytes do not.
                RowsDigest::from_sum_bytes(&sum, rows, raw.saturating_sub(3))
            }
            None => {
                pending.push((tables.len(), data_of(dir, index.as_ref(), e)?));
                RowsDigest::default()
            }
        };
        tables.push(ExpectedTable {
            dump_id: e.dump_id,
            schema,
            name,
            columns,
            digest,
        });
    }
    for (i, digest) in digest_files(&pending, jobs)? {
        tables[i].digest = digest;
    }
    let sequences = toc
        .entries
        .iter()
        .filter(|e| e.desc.is("SEQUENCE SET") && wanted(e))
        .map(|e| {
            let (schema, name) = names(e);
            let defn = e.defn.carrier().unwrap_or_default();
            let (value, is_called) = parse_setval(&defn).ok_or_else(|| {
                ExpectError::Data(format!(
                    "toc.dat: the SEQUENCE SET of {} is not one pg_dump writes",
                    e.qualified_name()
                ))
            })?;
            Ok(ExpectedSequence {
                schema,
                name,
                value,
                is_called,
            })
        })
        .collect::<Result<Vec<_>, ExpectError>>()?;
    let blobs: Vec<&TocEntry> = toc
        .entries
        .iter()
        .filter(|e| e.desc.is("BLOBS") && wanted(e))
        .collect();
    let large_objects = hash_large_objects(dir, &toc, index.as_ref(), &blobs, jobs)?;
    Ok(Expected {
        settings,
        encoding,
        tables,
        sequences,
        large_objects,
        has_large_objects: !blobs.is_empty(),
        known,
        from_manifest,
    })
}

fn names(e: &TocEntry) -> (String, String) {
    (
        e.namespace.carrier().unwrap_or_default(),
        e.tag.carrier().unwrap_or_default(),
    )
}

fn data_of(
    dir: &ArchiveDir,
    index: Option<&ManifestIndex>,
    e: &TocEntry,
) -> Result<TableData, ExpectError> {
    let mut problems: Vec<Located> = Vec::new();
    let found = dir.table_data(index, e, &mut problems);
    match (problems.into_iter().next(), found) {
        (None, Some(data)) => Ok(data),
        (Some(p), _) => Err(ExpectError::Data(format!(
            "{p}: cannot read the data of {}; run pgarc verify",
            e.qualified_name()
        ))),
        (None, None) => Err(ExpectError::Data(format!(
            "no data file for {}",
            e.qualified_name()
        ))),
    }
}

/// Runs `work` on every item on `jobs` threads, largest first by `weight`; the first error
/// stops the rest.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    weight: impl Fn(&T) -> u64,
    work: impl Fn(&T) -> Result<R, ExpectError> + Sync,
) -> Result<Vec<R>, ExpectError> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&items[i])));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed: Mutex<Option<ExpectError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(items.len().max(1)) {
            s.spawn(|| loop {
                if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    break;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                match work(&items[i]) {
                    Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r),
                    Err(e) => {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

/// The digests of data files read whole (checked as a restore reads them).
fn digest_files(
    pending: &[(usize, TableData)],
    jobs: usize,
) -> Result<Vec<(usize, RowsDigest)>, ExpectError> {
    parallel(
        pending,
        jobs,
        |(_, d)| d.file.size,
        |(i, data)| {
            let mut sink = StreamDigest::new();
            data.read_rows(None, &mut sink)
                .map_err(|e| ExpectError::Data(format!("{e}; run pgarc verify")))?;
            Ok((*i, sink.finish().0))
        },
    )
}

fn hash_large_objects(
    dir: &ArchiveDir,
    toc: &Toc,
    index: Option<&ManifestIndex>,
    blobs: &[&TocEntry],
    jobs: usize,
) -> Result<Vec<(u32, [u8; 32])>, ExpectError> {
    let mut objects: Vec<LargeObject> = Vec::new();
    for e in blobs {
        let mut problems = Vec::new();
        objects.extend(dir.large_objects(toc, index, e, &mut problems));
        if let Some(p) = problems.into_iter().next() {
            return Err(ExpectError::Data(format!(
                "{p}: cannot read the large objects; run pgarc verify"
            )));
        }
    }
    parallel(
        &objects,
        jobs,
        |o| o.file.size,
        |o| {
            use sha2::Digest as _;
            let mut stream = o
                .open()
                .map_err(|e| ExpectError::Data(format!("{e}; run pgarc verify")))?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ExpectError::Data(format!(
                            "{}; run pgarc verify",
                            stream.explain(e)
                        )))
                    }
                }
            }
            Ok((o.oid, hasher.finalize().into()))
        },
    )
}

/// The column list of a TABLE DATA entry's COPY statement, as pg_dump writes it:
/// `COPY name (col, "Col 2") FROM stdin;` gives `col, "Col 2"`, and `COPY name  FROM stdin;`
/// (no columns) gives an empty list. `None` for anything else. Names are quoted identifiers
/// or plain words; a quoted one may hold anything, `""` for a quote.
pub fn copy_columns(stmt: &str) -> Option<String> {
    let rest = stmt.strip_prefix("COPY ")?;
    let b = rest.as_bytes();
    let mut i = 0;
    // The (qualified) name: identifiers separated by dots.
    loop {
        i = skip_identifier(b, i)?;
        if b.get(i) == Some(&b'.') {
            i += 1;
        } else {
            break;
        }
    }
    let after_name = &rest[i..];
    let trimmed = after_name.trim_start_matches(' ');
    let (columns, tail) = match trimmed.strip_prefix('(') {
        Some(inner) => {
            let ib = inner.as_bytes();
            let mut j = 0;
            let mut quoted = false;
            loop {
                match ib.get(j)? {
                    b'"' => quoted = !quoted,
                    b')' if !quoted => break,
                    _ => {}
                }
                j += 1;
            }
            let list = &inner[..j];
            if !is_identifier_list(list) {
                return None;
            }
            (list.to_string(), &inner[j + 1..])
        }
        None => (String::new(), trimmed),
    };
    let tail = tail.trim_start_matches(' ');
    let end = tail.strip_prefix("FROM stdin;")?;
    end.trim_end_matches(['\n', '\r', ' '])
        .is_empty()
        .then_some(columns)
}

/// Whether `list` is identifiers separated by commas (and spaces), nothing else: the list
/// goes into the SQL of a check, so a hostile archive must not put an expression there.
fn is_identifier_list(list: &str) -> bool {
    let b = list.as_bytes();
    let mut i = 0;
    loop {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let Some(end) = skip_identifier(b, i) else {
            return false;
        };
        i = end;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        match b.get(i) {
            None => return true,
            Some(b',') => i += 1,
            Some(_) => return false,
        }
    }
}

/// The end of the identifier starting at `i`: a quoted one, or a run of characters that are
/// letters, digits, `_`, `$` or bytes of multibyte characters. `None` when there is none.
fn skip_identifier(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match b.get(i)? {
                b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }
    let start = i;
    while let Some(&c) = b.get(i) {
        if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80) {
            break;
        }
        i += 1;
    }
    (i > start).then_some(i)
}

/// The value and `is_called` of pg_dump's `SELECT pg_catalog.setval('name', 42, true);`.
/// The name is a literal that may hold anything, so the numbers are read from the end.
pub fn parse_setval(defn: &str) -> Option<(i128, bool)> {
    let body = defn.trim_end().strip_suffix(");")?;
    let (rest, called) = body.rsplit_once(',')?;
    let (_, value) = rest.rsplit_once(',')?;
    let is_called = match called.trim() {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    Some((value.trim().parse().ok()?, is_called))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_lists_come_from_pg_dumps_copy_statements() {
        for (stmt, cols) in [
            ("COPY public.t (a, b) FROM stdin;\n", Some("a, b")),
            ("COPY public.t  FROM stdin;\n", Some("")),
            (
                "COPY \"we.ird\".\"t (x\" (\"a)\"\"b\", c) FROM stdin;\n",
                Some("\"a)\"\"b\", c"),
            ),
            ("COPY t (a) FROM stdin;", Some("a")),
            ("COPY public.t (a) TO stdout;\n", None),
            ("COPY public.t (a FROM stdin;\n", None),
            ("COPY public.t (a) FROM stdin; DROP TABLE x;\n", None),
            ("SELECT 1", None),
            ("COPY \"open (a) FROM stdin;\n", None),
            // Expressions where names belong: refused (they would run in the check).
            ("COPY t (a FROM t2 UNION SELECT b) FROM stdin;\n", None),
            ("COPY t (a, now()) FROM stdin;\n", None),
            ("COPY t (a, b::text) FROM stdin;\n", None),
            ("COPY t (a,, b) FROM stdin;\n", None),
            ("COPY t () FROM stdin;\n", None),
            (
                "COPY s.t ( a ,\"b c\" ) FROM stdin;\n",
                Some(" a ,\"b c\" "),
            ),
        ] {
            assert_eq!(copy_columns(stmt).as_deref(), cols, "{stmt}");
        }
    }

    #[test]
    fn setval_reads_value_and_is_called_from_the_end() {
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.s', 42, true);\n"),
            Some((42, true))
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.\"a, 1, true)\"', -9223372036854775808, false);\n"),
            Some((-9223372036854775808, false))
        );
        assert_eq!(parse_setval("SELECT 1;"), None);
    }
}
