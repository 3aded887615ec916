//! The dump planner: which tables get pgarc-written data, how they are cut into ctid-range
//! chunks and ordered, what COPY each chunk runs, and how their TABLE DATA entries join the
//! TOC that pg_dump wrote for the schema. Pure code, tested without a server.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::archive::frame::Codec;
use crate::archive::toc::{ArchiveVersion, HeaderCompression, Section, Toc, TocEntry, TocStr};
use crate::pg::session::CatalogTable;

/// The tables pgarc copies itself: plain tables that are not extension members (pg_dump
/// handles extension configuration tables, with their filters). Partitioned tables hold no
/// rows; their partitions are plain tables.
pub fn data_tables(catalog: &[CatalogTable]) -> Vec<CatalogTable> {
    catalog
        .iter()
        .filter(|t| t.relkind == 'r' && !t.extension_member)
        .cloned()
        .collect()
}

/// A psql-style name pattern that matches exactly this relation (pg_dump's pattern syntax:
/// inside double quotes every character is literal, `""` is one quote).
pub fn exact_pattern(schema: &str, name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(name))
}

/// One unit of work: a whole table, or the pages `[start, end)` of it (`end` None: to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Index into the plan's tables.
    pub table: usize,
    pub pages: Option<(u64, Option<u64>)>,
    /// Estimated bytes, for ordering.
    pub estimate: u64,
}

/// Cuts tables larger than `split_size` into ctid ranges of about `split_size` each (only when
/// `can_split`: TID range scans need PostgreSQL 14), and orders all chunks largest first.
/// The last range of a table is open-ended, so rows on pages added after planning are copied
/// too.
pub fn plan_chunks(
    tables: &[CatalogTable],
    split_size: u64,
    block_size: u64,
    can_split: bool,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let pages = t.heap_bytes / block_size.max(1);
        let parts = if can_split && split_size > 0 && t.table_bytes > split_size {
            t.table_bytes.div_ceil(split_size).min(pages)
        } else {
            1
        };
        if parts < 2 {
            chunks.push(Chunk {
                table: i,
                pages: None,
                estimate: t.table_bytes,
            });
            continue;
        }
        let per = pages.div_ceil(parts);
        let mut start = 0;
        while start < pages {
            let end = start + per;
            chunks.push(Chunk {
                table: i,
                pages: Some((start, (end < pages).then_some(end))),
                estimate: t.table_bytes / parts,
            });
            start = end;
        }
    }
    // Largest first; a table's own chunks stay in page order.
    chunks.sort_by(|a, b| b.estimate.cmp(&a.estimate).then(a.table.cmp(&b.table)));
    chunks
}

/// The COPY statement a worker runs for a chunk. The text it produces is byte-identical to
/// pg_dump's `COPY table (columns) TO stdout`.
pub fn copy_sql(t: &CatalogTable, chunk: &Chunk) -> String {
    match chunk.pages {
        None if t.columns.is_empty() => format!("COPY {} TO stdout", t.qualified),
        None => format!("COPY {} ({}) TO stdout", t.qualified, t.columns),
        Some((start, end)) => {
            let upper = end.map_or(String::new(), |e| {
                format!(" AND ctid < '({e},0)'::pg_catalog.tid")
            });
            format!(
                "COPY (SELECT {} FROM ONLY {} WHERE ctid >= '({start},0)'::pg_catalog.tid{upper}) TO stdout",
                t.columns, t.qualified
            )
        }
    }
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
pub fn add_table_data(toc: &mut Toc, tables: &[CatalogTable]) -> Result<Vec<Option<i32>>> {
    let mut table_entries: HashMap<u32, usize> = HashMap::new();
    for (i, e) in toc.entries.iter().enumerate() {
        let oid = e.oid.to_str_lossy().and_then(|s| s.parse::<u32>().ok());
        if let Some(oid) = oid {
            if e.desc.is("TABLE") {
                table_entries.insert(oid, i);
            } else if e.desc.is("TABLE DATA") && tables.iter().any(|t| t.oid == oid) {
                bail!(
                    "internal error: pg_dump wrote data for table {} that pgarc excluded",
                    e.tag.to_str_lossy().unwrap_or_default()
                );
            }
        }
    }
    let mut order: Vec<usize> = (0..tables.len())
        .filter(|&i| table_entries.contains_key(&tables[i].oid))
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
        let table_entry = &toc.entries[table_entries[&t.oid]];
        next_id = next_id
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("too many TOC entries"))?;
        ids[i] = Some(next_id);
        new_entries.push(TocEntry {
            dump_id: next_id,
            had_dumper: true,
            table_oid: TocStr::from("0"),
            oid: TocStr::new(t.oid.to_string()),
            tag: table_entry.tag.clone(),
            desc: TocStr::from("TABLE DATA"),
            section: Section::Data.code(),
            defn: TocStr::NULL,
            drop_stmt: TocStr::NULL,
            copy_stmt: TocStr::new(copy_stmt(t)),
            namespace: table_entry.namespace.clone(),
            tablespace: TocStr::NULL,
            tableam: TocStr::NULL,
            relkind: 0,
            owner: table_entry.owner.clone(),
            with_oids: TocStr::from("false"),
            deps: vec![table_entry.dump_id],
            filename: TocStr::new(format!("{next_id}.dat")),
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
        assert_eq!(exact_pattern("My \"S\"", "a.b"), "\"My \"\"S\"\"\".\"a.b\"");
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
