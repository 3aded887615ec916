//! `pgarc restore --analyze`: which tables get `ANALYZE`, and when. A table is analyzed as
//! soon as its data is committed and every index of it (INDEX and CONSTRAINT entries: the
//! statistics of an expression index are collected by the table's ANALYZE) has been built,
//! on a worker that has nothing else ready, so the statistics are built in parallel with the
//! rest of the restore and are there when it ends. Tables whose statistics the archive
//! restores (PostgreSQL 18's STATISTICS DATA entries, unless `--no-statistics`) are left
//! alone, as are tables whose load failed. A partitioned table (which has no data of its own,
//! and which autovacuum never analyzes) is analyzed at the end, once every loaded table is,
//! when a partition under it was loaded. Pure bookkeeping: the dispatcher runs the jobs.

use std::collections::{HashMap, HashSet, VecDeque};

use super::plan::Plan;
use crate::archive::toc::{Section, Toc};

#[derive(Debug, Default)]
pub struct Analyzer {
    /// TABLE DATA entry → its index entries not finished yet.
    waiting: HashMap<usize, usize>,
    /// The index entries counted in `waiting`.
    indexes: HashSet<usize>,
    /// Loaded tables that still wait for an index.
    loaded: HashSet<usize>,
    /// Tables whose statistics the archive restores (TABLE DATA entries, and the TABLE
    /// entries of partitioned tables).
    skip: HashSet<usize>,
    /// TABLE DATA entry → the TABLE entries of the partitioned tables above its table.
    ancestors: HashMap<usize, Vec<usize>>,
    /// Partitioned tables (TABLE entries) under which a partition was loaded.
    parents: std::collections::BTreeSet<usize>,
    queue: VecDeque<usize>,
    /// Tables queued so far.
    pub queued: usize,
}

impl Analyzer {
    pub fn new(toc: &Toc, plan: &Plan) -> Analyzer {
        let mut a = Analyzer::default();
        let is_data = |d: usize| toc.entries[d].desc.is("TABLE DATA");
        let by_id = toc.positions_by_dump_id();
        for (i, e) in toc.entries.iter().enumerate() {
            let item = &plan.items[i];
            if e.desc.is("STATISTICS DATA") && item.reqs.stats && has_column_stats(e) {
                // Its dependency is the table's entry (statistics in the data section) or,
                // repointed by the planner (post-data), the table's data entry.
                for &d in &item.deps {
                    let td = plan.table_data_of.get(&d).copied().unwrap_or(d);
                    if is_data(td) || is_partitioned(&toc.entries[td]) {
                        a.skip.insert(td);
                    }
                }
                continue;
            }
            if e.desc.is("TABLE DATA") {
                let up = partitioned_ancestors(toc, &by_id, e);
                if !up.is_empty() {
                    a.ancestors.insert(i, up);
                }
            }
            let builds_index = e.desc.is("INDEX") || e.desc.is("CONSTRAINT");
            if builds_index && e.section == Section::PostData.code() && item.reqs.schema {
                for &d in item.deps.iter().filter(|&&d| is_data(d)) {
                    *a.waiting.entry(d).or_default() += 1;
                    a.indexes.insert(i);
                }
            }
        }
        a
    }

    /// TABLE DATA entry `idx` committed all of its rows.
    pub fn table_loaded(&mut self, idx: usize) {
        if let Some(up) = self.ancestors.get(&idx) {
            self.parents
                .extend(up.iter().filter(|p| !self.skip.contains(p)));
        }
        if self.skip.contains(&idx) {
            return;
        }
        if self.waiting.get(&idx).copied().unwrap_or(0) == 0 {
            self.push(idx);
        } else {
            self.loaded.insert(idx);
        }
    }

    /// Entry `idx` (any but table data) finished, whether it succeeded or not: the tables
    /// whose last index it was are ready.
    pub fn entry_done(&mut self, plan: &Plan, idx: usize) {
        if !self.indexes.remove(&idx) {
            return;
        }
        for d in &plan.items[idx].deps {
            let Some(left) = self.waiting.get_mut(d) else {
                continue;
            };
            *left = left.saturating_sub(1);
            if *left == 0 && self.loaded.remove(d) {
                self.push(*d);
            }
        }
    }

    fn push(&mut self, idx: usize) {
        self.queued += 1;
        self.queue.push_back(idx);
    }

    /// The next table to analyze.
    pub fn take_ready(&mut self) -> Option<usize> {
        self.queue.pop_front()
    }

    /// Whether a table is ready to be analyzed.
    pub fn has_ready(&self) -> bool {
        !self.queue.is_empty()
    }

    /// At the end, called until it queues nothing: first the tables loaded whose indexes
    /// never all finished (a dependency cycle, or a restore that stopped), analyzed all the
    /// same; then, once those are done, the partitioned tables above loaded partitions.
    pub fn flush(&mut self) {
        if !self.loaded.is_empty() {
            let mut left: Vec<usize> = self.loaded.drain().collect();
            left.sort_unstable();
            for idx in left {
                self.push(idx);
            }
            return;
        }
        for idx in std::mem::take(&mut self.parents) {
            self.push(idx);
        }
    }
}

/// Whether `e` is the TABLE entry of a partitioned table (pg_dump writes its `PARTITION BY`
/// clause on a line of its own after the column list).
pub fn is_partitioned(e: &crate::archive::toc::TocEntry) -> bool {
    e.desc.is("TABLE") && e.defn.contains("\nPARTITION BY ")
}

/// The TABLE entries of the partitioned tables above TABLE DATA entry `e`'s table: pg_dump
/// makes a partition's TABLE entry depend on its parent's.
fn partitioned_ancestors(
    toc: &Toc,
    by_id: &HashMap<i32, usize>,
    e: &crate::archive::toc::TocEntry,
) -> Vec<usize> {
    let by_id = |id: i32| by_id.get(&id).copied();
    let mut out = Vec::new();
    let mut todo: Vec<usize> = e
        .deps
        .first()
        .and_then(|&id| by_id(id))
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    while let Some(t) = todo.pop() {
        if !seen.insert(t) {
            continue;
        }
        for &id in &toc.entries[t].deps {
            if let Some(p) = by_id(id).filter(|&p| is_partitioned(&toc.entries[p])) {
                out.push(p);
                todo.push(p);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Whether a STATISTICS DATA entry restores column statistics (`pg_restore_attribute_stats`),
/// not only the relation's page and row counts, which pg_dump 18 writes for every table,
/// analyzed or not: a table without column statistics in the archive is analyzed.
fn has_column_stats(e: &crate::archive::toc::TocEntry) -> bool {
    e.defn.contains("pg_restore_attribute_stats")
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::{e, toc};
    use super::*;
    use crate::archive::select::Selection;
    use crate::archive::toc::{TocEntry, TocStr};

    fn stats_entry(id: i32, deps: &[i32]) -> TocEntry {
        let mut s = e(id, "STATISTICS DATA", Section::PostData, deps, false);
        s.defn = TocStr::new(
            "SELECT * FROM pg_catalog.pg_restore_relation_stats(...);\n\
             SELECT * FROM pg_catalog.pg_restore_attribute_stats(...);\n",
        );
        s
    }

    /// Two tables (TOC positions 0 and 1) with data at 2 and 3; an index of the first (4), a
    /// foreign key between them (5), statistics of the second (6).
    fn sample(stats: bool) -> (Toc, Plan) {
        let toc = toc(vec![
            e(1, "TABLE", Section::PreData, &[], false),
            e(2, "TABLE", Section::PreData, &[], false),
            e(3, "TABLE DATA", Section::Data, &[1], true),
            e(4, "TABLE DATA", Section::Data, &[2], true),
            e(5, "INDEX", Section::PostData, &[1], false),
            e(6, "FK CONSTRAINT", Section::PostData, &[1, 2], false),
            stats_entry(7, &[2]),
        ]);
        let sel = Selection {
            statistics: stats,
            ..Selection::default()
        };
        let plan = Plan::build(&toc, &sel, |_| 1);
        (toc, plan)
    }

    #[test]
    fn a_table_is_analyzed_once_loaded_and_indexed_unless_the_archive_has_its_statistics() {
        let (toc, plan) = sample(true);
        let mut a = Analyzer::new(&toc, &plan);
        a.table_loaded(2);
        assert_eq!(a.take_ready(), None, "its index is not built yet");
        a.entry_done(&plan, 5);
        assert_eq!(a.take_ready(), None, "a foreign key is not an index");
        a.entry_done(&plan, 4);
        assert_eq!(a.take_ready(), Some(2), "loaded and indexed");
        a.table_loaded(3);
        assert_eq!(a.take_ready(), None, "the archive restores its statistics");
        assert_eq!(a.queued, 1);

        let (toc, plan) = sample(false);
        let mut a = Analyzer::new(&toc, &plan);
        a.table_loaded(3);
        assert_eq!(
            a.take_ready(),
            Some(3),
            "--no-statistics: analyzed like any other"
        );
        a.entry_done(&plan, 4);
        a.table_loaded(2);
        assert_eq!(a.take_ready(), Some(2), "indexed before it was loaded");
        let (toc, plan) = sample(false);
        let mut a = Analyzer::new(&toc, &plan);
        a.table_loaded(2);
        assert!(!a.has_ready());
        a.flush();
        assert_eq!(
            a.take_ready(),
            Some(2),
            "what never got its index is analyzed at the end"
        );
    }
}
