//! Work units for reading tables in parallel (a dump's copy, a check's re-read): whole
//! tables, or ctid ranges of big ones, largest first; and the COPY statement of each.

use super::session::CatalogTable;

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

/// The COPY statement that copies the rows of table `qualified` (its columns `columns`, a
/// comma-separated list of quoted names, in that order), or of the pages `pages` of it. The
/// text it produces is byte-identical to pg_dump's `COPY table (columns) TO stdout`.
pub fn copy_out_sql(qualified: &str, columns: &str, pages: Option<(u64, Option<u64>)>) -> String {
    match pages {
        None if columns.is_empty() => format!("COPY {qualified} TO stdout"),
        None => format!("COPY {qualified} ({columns}) TO stdout"),
        Some((start, end)) => {
            let upper = end.map_or(String::new(), |e| {
                format!(" AND ctid < '({e},0)'::pg_catalog.tid")
            });
            format!(
                "COPY (SELECT {columns} FROM ONLY {qualified} WHERE ctid >= '({start},0)'::pg_catalog.tid{upper}) TO stdout"
            )
        }
    }
}
