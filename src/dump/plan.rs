//! The dump planner: which tables get pgarc-written data, how they are cut into ctid-range
//! chunks and ordered, what COPY each chunk runs, and how their TABLE DATA entries join the
//! TOC that pg_dump wrote for the schema. Pure code, tested without a server.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::archive::frame::Codec;
use crate::archive::toc::{ArchiveVersion, HeaderCompression, Section, Toc, TocEntry, TocStr};
use crate::pg::carrier;
use crate::pg::session::CatalogTable;

/// The `--exclude-table-data` patterns that keep pg_dump from writing the data of exactly
/// these tables: per schema, the names folded into a prefix tree (`"t_0"("1"|"2"("a"|)))`),
/// so that pg_dump runs one catalog query per pattern instead of one per table (2,000 tables:
/// 1.07 s of pg_dump's time with one pattern each, 0.26 s for the schema alone). Literal text
/// is double-quoted, where psql patterns take every character literally; only `(`, `|` and
/// `)` outside quotes act as regular-expression syntax. A pattern holds at most
/// [`PATTERN_NAMES`] names and about [`PATTERN_BYTES`] bytes, well inside the server's regular
/// expression limits and Linux's 128 KiB bound on one argument.
///
/// `keep` are the other relations whose data pg_dump must still write (sequences,
/// materialized views, tables pgarc does not copy), as (schema, name) carriers. The
/// patterns match no name of theirs, and are as short as that allows: `schema.*` for a
/// schema holding nothing to keep; else for each table the shortest prefix of its name
/// that no kept name starts with, followed by `*`; the whole name only where it is itself
/// the start of a kept name (`orders` beside `orders_id_seq`). A pattern that matches more
/// can only also match relations with no data (views, partitioned and foreign tables) or
/// whose data pg_dump leaves out anyway. pg_dump evaluates each pattern as a regular
/// expression over every relation name (one catalog query per pattern), so few short
/// patterns keep it fast: 100,000 tables in one schema are one pattern.
pub fn exclude_data_patterns(tables: &[CatalogTable], keep: &[(String, String)]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut by_schema: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in tables {
        by_schema
            .entry(t.schema.as_str())
            .or_default()
            .push(t.name.as_str());
    }
    let mut kept: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
    for (schema, name) in keep {
        kept.entry(schema.as_str()).or_default().push(tokens(name));
    }
    let mut patterns = Vec::new();
    for (schema, mut names) in by_schema {
        names.sort_unstable();
        names.dedup();
        let Some(mut keep) = kept.remove(schema) else {
            patterns.push(format!("{}.*", quote_pattern(schema)));
            continue;
        };
        keep.sort_unstable();
        let mut exact: Vec<Vec<&str>> = Vec::new();
        let mut prefixes: Vec<Vec<&str>> = Vec::new();
        for name in &names {
            let t = tokens(name);
            // The kept names sharing the longest prefix with t are its neighbours in order.
            let at = keep.partition_point(|k| k.as_slice() < t.as_slice());
            let common = |k: Option<&Vec<&str>>| {
                k.map_or(0, |k| k.iter().zip(&t).take_while(|(a, b)| a == b).count())
            };
            let shared =
                common(keep.get(at)).max(common(at.checked_sub(1).and_then(|i| keep.get(i))));
            if shared >= t.len() {
                exact.push(t);
            } else {
                prefixes.push(t[..=shared].to_vec());
            }
        }
        // A prefix that another prefix starts covers nothing more.
        prefixes.sort_unstable();
        prefixes.dedup();
        let mut minimal: Vec<Vec<&str>> = Vec::new();
        for p in prefixes {
            if !minimal.last().is_some_and(|m| p.starts_with(m)) {
                minimal.push(p);
            }
        }
        // Exact names a prefix already covers need no pattern of their own.
        exact.retain(|e| !minimal.iter().any(|m| e.starts_with(m)));
        for (list, wildcard) in [(minimal, true), (exact, false)] {
            for chunk in chunks(&list) {
                let refs: Vec<&[&str]> = chunk.iter().map(|t| t.as_slice()).collect();
                patterns.push(format!(
                    "{}.{}{}",
                    quote_pattern(schema),
                    alternation(&refs),
                    if wildcard { "*" } else { "" }
                ));
            }
        }
    }
    patterns
}

/// Sorted names cut into groups of at most [`PATTERN_NAMES`] names and about
/// [`PATTERN_BYTES`] bytes.
fn chunks<'a, 'b>(names: &'a [Vec<&'b str>]) -> Vec<&'a [Vec<&'b str>]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < names.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < names.len() && end - start < PATTERN_NAMES && bytes < PATTERN_BYTES {
            bytes += names[end].iter().map(|t| t.len()).sum::<usize>() + 3;
            end += 1;
        }
        out.push(&names[start..end]);
        start = end;
    }
    out
}

/// At most this many table names go into one exclusion pattern.
pub const PATTERN_NAMES: usize = 500;
/// About this many bytes of names go into one exclusion pattern.
pub const PATTERN_BYTES: usize = 32 << 10;

/// Text that a psql pattern matches literally: lower-case ASCII letters, digits and `_` as
/// they are (they mean themselves in a pattern and in a regular expression), anything else
/// double-quoted.
fn quote_pattern(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return s.to_string();
    }
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A name (a carrier) cut where a pattern may branch: each ASCII character alone, and each
/// run of other bytes whole. In every server encoding a multibyte character is made of bytes
/// of 0x80 and above only, so a run holds whole characters and a branch never splits one
/// (a split character would be an invalid byte sequence in the server's regular expression).
fn tokens(name: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut high = false;
    for (i, c) in name.char_indices() {
        let is_high = !c.is_ascii();
        if i > start && !(high && is_high) {
            out.push(&name[start..i]);
            start = i;
        }
        high = is_high;
    }
    if start < name.len() {
        out.push(&name[start..]);
    }
    out
}

/// A pattern matching exactly the names of `sorted` (as tokens; sorted, without duplicates).
fn alternation(sorted: &[&[&str]]) -> String {
    if sorted.len() == 1 {
        return quote_pattern(&sorted[0].concat());
    }
    let first = sorted[0];
    let last = sorted[sorted.len() - 1];
    let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    if common > 0 {
        let rest: Vec<&[&str]> = sorted.iter().map(|s| &s[common..]).collect();
        let prefix: String = first[..common].concat();
        return format!("{}{}", quote_pattern(&prefix), alternation(&rest));
    }
    // No common prefix: one branch per first character; the empty string (at most one, and
    // first in sorted order) is an empty branch.
    let mut branches = Vec::new();
    let mut rest = sorted;
    if rest[0].is_empty() {
        branches.push(String::new());
        rest = &rest[1..];
    }
    while !rest.is_empty() {
        let c = rest[0][0];
        let n = rest.iter().take_while(|s| s[0] == c).count();
        branches.push(alternation(&rest[..n]));
        rest = &rest[n..];
    }
    format!("({})", branches.join("|"))
}

pub use crate::pg::chunks::{plan_chunks, Chunk};

/// The COPY statement a worker runs for a chunk. The text it produces is byte-identical to
/// pg_dump's `COPY table (columns) TO stdout`.
pub fn copy_sql(t: &CatalogTable, chunk: &Chunk) -> String {
    crate::pg::chunks::copy_out_sql(&t.qualified, &t.columns, chunk.pages)
}

/// The copyStmt of a TABLE DATA entry, as pg_dump writes it (two spaces when no columns).
pub fn copy_stmt(t: &CatalogTable) -> String {
    if t.columns.is_empty() {
        format!("COPY {}  FROM stdin;\n", t.qualified)
    } else {
        format!("COPY {} ({}) FROM stdin;\n", t.qualified, t.columns)
    }
}

/// The archive version to write: the lowest that carries pg_dump's entries and the codec.
/// Entries of archive 1.14 and 1.15 are identical (1.15 changed only the header's compression
/// field), so pg_dump 16's entries go into 1.14 unless zstd needs 1.15; 1.16 entries (pg_dump
/// 17 and newer: relkind, BLOB METADATA) stay 1.16.
pub fn archive_version(pg_dump_version: ArchiveVersion, codec: Codec) -> ArchiveVersion {
    let entries = if pg_dump_version <= ArchiveVersion::V1_15 {
        pg_dump_version.min(ArchiveVersion::V1_14)
    } else {
        pg_dump_version
    };
    let codec_needs = match codec {
        Codec::Zstd(_) => ArchiveVersion::V1_15,
        _ => ArchiveVersion::V1_12,
    };
    entries.max(codec_needs)
}

/// The header's compression field for `codec` in an archive of `version`.
pub fn header_compression(version: ArchiveVersion, codec: Codec) -> HeaderCompression {
    if version >= ArchiveVersion::V1_15 {
        HeaderCompression::Algorithm(codec.algorithm())
    } else {
        match codec {
            Codec::Gzip(level) => HeaderCompression::GzipLevel(level as i32),
            _ => HeaderCompression::GzipLevel(0),
        }
    }
}

/// Adds a TABLE DATA entry for each table that pg_dump wrote a TABLE entry for, with new
/// dumpIds above every existing one, placed where pg_dump puts table data: at the start of
/// the data section, sorted by schema and name. Returns, per input table, its new dumpId
/// (None when pg_dump did not dump the table, so its data must not be either).
pub fn add_table_data(
    toc: &mut Toc,
    tables: &[CatalogTable],
    files: &[String],
    table_entries_written: bool,
) -> Result<Vec<Option<i32>>> {
    let mut table_entries: HashMap<u32, usize> = HashMap::new();
    let copied: std::collections::HashSet<u32> = tables.iter().map(|t| t.oid).collect();
    for (i, e) in toc.entries.iter().enumerate() {
        let oid = e.oid.to_str_lossy().and_then(|s| s.parse::<u32>().ok());
        if let Some(oid) = oid {
            if e.desc.is("TABLE") {
                table_entries.insert(oid, i);
            } else if e.desc.is("TABLE DATA") && copied.contains(&oid) {
                bail!(
                    "internal error: pg_dump wrote data for table {} that pgarc excluded",
                    e.tag.to_str_lossy().unwrap_or_default()
                );
            }
        }
    }
    let mut order: Vec<usize> = (0..tables.len())
        .filter(|&i| !table_entries_written || table_entries.contains_key(&tables[i].oid))
        .collect();
    order.sort_by(|&a, &b| {
        (tables[a].schema.as_str(), tables[a].name.as_str())
            .cmp(&(tables[b].schema.as_str(), tables[b].name.as_str()))
    });
    let mut next_id = toc.entries.iter().map(|e| e.dump_id).max().unwrap_or(0);
    let mut ids = vec![None; tables.len()];
    let mut new_entries = Vec::with_capacity(order.len());
    for i in order {
        let t = &tables[i];
        // Without TABLE entries (`-a`, `--section=data`), the names come from the catalog,
        // as pg_dump's own data entries do; the dependency on the absent entry is dropped.
        let (tag, namespace, owner, deps) = match table_entries.get(&t.oid) {
            Some(&at) => {
                let e = &toc.entries[at];
                (
                    e.tag.clone(),
                    e.namespace.clone(),
                    e.owner.clone(),
                    vec![e.dump_id],
                )
            }
            None => (
                TocStr::new(carrier::to_bytes(&t.name)),
                TocStr::new(carrier::to_bytes(&t.schema)),
                TocStr::new(carrier::to_bytes(&t.owner)),
                Vec::new(),
            ),
        };
        next_id = next_id
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("too many TOC entries"))?;
        ids[i] = Some(next_id);
        new_entries.push(TocEntry {
            dump_id: next_id,
            had_dumper: true,
            table_oid: TocStr::from("0"),
            oid: TocStr::new(t.oid.to_string()),
            tag,
            desc: TocStr::from("TABLE DATA"),
            section: Section::Data.code(),
            defn: TocStr::NULL,
            drop_stmt: TocStr::NULL,
            copy_stmt: TocStr::new(carrier::to_bytes(&copy_stmt(t))),
            namespace,
            tablespace: TocStr::NULL,
            tableam: TocStr::NULL,
            relkind: 0,
            owner,
            with_oids: TocStr::from("false"),
            deps,
            filename: TocStr::new(files[i].clone()),
        });
    }
    let at = toc
        .entries
        .iter()
        .position(|e| matches!(e.section(), Some(Section::Data | Section::PostData)))
        .unwrap_or(toc.entries.len());
    toc.entries.splice(at..at, new_entries);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, heap: u64, total: u64) -> CatalogTable {
        CatalogTable {
            oid: 1,
            schema: "s".into(),
            name: name.into(),
            relkind: 'r',
            persistence: 'p',
            owner: "o".into(),
            qualified: format!("s.{name}"),
            columns: "a, b".into(),
            heap_bytes: heap,
            table_bytes: total,
            extension_member: false,
        }
    }

    #[test]
    fn big_tables_split_into_ranges_that_cover_every_page() {
        let tables = vec![
            table("small", 8192, 8192),
            table("big", 100 * 8192, 100 * 8192),
        ];
        let chunks = plan_chunks(&tables, 30 * 8192, 8192, true);
        let big: Vec<_> = chunks.iter().filter(|c| c.table == 1).collect();
        assert_eq!(big.len(), 4);
        assert_eq!(big[0].pages, Some((0, Some(25))));
        assert_eq!(big[3].pages, Some((75, None)));
        for w in big.windows(2) {
            assert_eq!(w[0].pages.unwrap().1, Some(w[1].pages.unwrap().0));
        }
        assert_eq!(chunks.last().unwrap().table, 0, "largest first");
        assert_eq!(chunks.last().unwrap().pages, None);
        // No splitting without TID range scans, or when the table is small.
        assert_eq!(plan_chunks(&tables, 30 * 8192, 8192, false).len(), 2);
        assert_eq!(plan_chunks(&tables, 1 << 40, 8192, true).len(), 2);
    }

    #[test]
    fn copy_statements_match_pg_dump() {
        let t = table("t", 0, 0);
        let whole = Chunk {
            table: 0,
            pages: None,
            estimate: 0,
        };
        assert_eq!(copy_sql(&t, &whole), "COPY s.t (a, b) TO stdout");
        let part = Chunk {
            table: 0,
            pages: Some((5, Some(9))),
            estimate: 0,
        };
        assert_eq!(
            copy_sql(&t, &part),
            "COPY (SELECT a, b FROM ONLY s.t WHERE ctid >= '(5,0)'::pg_catalog.tid AND ctid < '(9,0)'::pg_catalog.tid) TO stdout"
        );
        let mut empty = t.clone();
        empty.columns.clear();
        assert_eq!(copy_stmt(&empty), "COPY s.t  FROM stdin;\n");
        assert_eq!(copy_sql(&empty, &whole), "COPY s.t TO stdout");
    }

    /// The strings a pattern of [`exclude_data_patterns`]'s grammar matches: `"literal"`
    /// (with `""` for a quote), groups `(a|b|)`, and concatenation; the language is finite.
    fn expand(p: &[char]) -> (Vec<String>, usize) {
        let mut out = vec![String::new()];
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                '"' => {
                    let mut lit = String::new();
                    i += 1;
                    loop {
                        if p[i] == '"' && p.get(i + 1) == Some(&'"') {
                            lit.push('"');
                            i += 2;
                        } else if p[i] == '"' {
                            i += 1;
                            break;
                        } else {
                            lit.push(p[i]);
                            i += 1;
                        }
                    }
                    out.iter_mut().for_each(|s| s.push_str(&lit));
                }
                '(' => {
                    let mut alts = Vec::new();
                    loop {
                        let (strs, used) = expand(&p[i + 1..]);
                        alts.extend(strs);
                        i += 1 + used;
                        if p[i] == ')' {
                            i += 1;
                            break;
                        }
                        assert_eq!(p[i], '|');
                    }
                    out = out
                        .iter()
                        .flat_map(|a| alts.iter().map(move |b| format!("{a}{b}")))
                        .collect();
                }
                // The schema/name separator.
                '.' => {
                    out.iter_mut().for_each(|s| s.push('.'));
                    i += 1;
                }
                '|' | ')' => return (out, i),
                // The wildcard: any further characters.
                '*' => {
                    out.iter_mut().for_each(|s| s.push('\u{1}'));
                    i += 1;
                }
                c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' => {
                    out.iter_mut().for_each(|s| s.push(c));
                    i += 1;
                }
                c => panic!("unexpected {c:?} outside quotes"),
            }
        }
        (out, i)
    }

    /// Whether `name` (`schema.name`) is matched by one of the expanded patterns.
    fn matches(expanded: &[String], name: &str) -> bool {
        expanded.iter().any(|p| match p.strip_suffix('\u{1}') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }

    fn expand_all(patterns: &[String]) -> Vec<String> {
        let mut all = Vec::new();
        for p in patterns {
            assert!(p.len() < PATTERN_BYTES + 1000, "{}", p.len());
            let chars: Vec<char> = p.chars().collect();
            let (strs, used) = expand(&chars);
            assert_eq!(used, chars.len(), "{p}");
            all.extend(strs);
        }
        all
    }

    #[test]
    fn exclusion_patterns_match_the_tables_and_nothing_kept() {
        let mut names: Vec<String> = [
            "a", "ab", "abc", "abd", "b", "a.b", "A\"b", "a|b", "a(1)", "x*", "y?", "$z", "ünï",
            "ü", "t_1", "t_10", "t_100", "t_2", "orders",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend((0..1200).map(|i| format!("t_{i:05}")));
        let mut tables: Vec<CatalogTable> = names.iter().map(|n| table(n, 0, 0)).collect();
        let mut other = table("t_00001", 0, 0);
        other.schema = "Other \"S\"".into();
        tables.push(other);
        // Nothing to keep: one wildcard per schema.
        let patterns = exclude_data_patterns(&tables, &[]);
        assert_eq!(patterns, ["\"Other \"\"S\"\"\".*", "s.*"]);
        // Sequences and a matview beside the tables, some sharing long prefixes with them.
        let keep: Vec<(String, String)> = [
            "orders_id_seq",
            "t_000",
            "t_00050x",
            "abcd",
            "ü_seq",
            "zz",
            "a(1)_seq",
            "t_01",
        ]
        .iter()
        .map(|n| ("s".to_string(), n.to_string()))
        .chain(std::iter::once((
            "Other \"S\"".to_string(),
            "t_000011".to_string(),
        )))
        .collect();
        let patterns = exclude_data_patterns(&tables, &keep);
        let expanded = expand_all(&patterns);
        for n in &names {
            assert!(matches(&expanded, &format!("s.{n}")), "{n}: {patterns:?}");
        }
        assert!(matches(&expanded, "Other \"S\".t_00001"), "{patterns:?}");
        for (schema, k) in &keep {
            assert!(
                !matches(&expanded, &format!("{schema}.{k}")),
                "{k}: {patterns:?}"
            );
        }
        let total: usize = patterns.iter().map(String::len).sum();
        let listed: usize = names.iter().map(|n| n.len() + 1).sum();
        assert!(total * 4 < listed, "{total} vs {listed}: {patterns:?}");
    }

    /// Many kept names force many exact names: the patterns stay within their bounds.
    #[test]
    fn exclusion_patterns_hold_whole_names_in_bounded_groups() {
        let tables: Vec<CatalogTable> = (0..1500).map(|i| table(&format!("t{i}"), 0, 0)).collect();
        let keep: Vec<(String, String)> = (0..1500)
            .map(|i| ("s".to_string(), format!("t{i}_id_seq")))
            .collect();
        let patterns = exclude_data_patterns(&tables, &keep);
        assert_eq!(patterns.len(), 3, "{}", patterns.len());
        let expanded = expand_all(&patterns);
        for i in 0..1500 {
            assert!(matches(&expanded, &format!("s.t{i}")));
            assert!(!matches(&expanded, &format!("s.t{i}_id_seq")));
        }
    }

    #[test]
    fn versions_are_the_lowest_that_carry_entries_and_codec() {
        let v = |d, c| archive_version(d, c);
        assert_eq!(
            v(ArchiveVersion::V1_14, Codec::Gzip(6)),
            ArchiveVersion::V1_14
        );
        assert_eq!(
            v(ArchiveVersion::V1_14, Codec::Zstd(3)),
            ArchiveVersion::V1_15
        );
        assert_eq!(v(ArchiveVersion::V1_15, Codec::None), ArchiveVersion::V1_14);
        assert_eq!(
            v(ArchiveVersion::V1_16, Codec::Gzip(1)),
            ArchiveVersion::V1_16
        );
        assert_eq!(
            header_compression(ArchiveVersion::V1_14, Codec::Gzip(6)),
            HeaderCompression::GzipLevel(6)
        );
    }
}
