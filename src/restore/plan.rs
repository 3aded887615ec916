//! The restore planner: which entries run, in which pass, after which others, and which may
//! not run at the same time; and the scheduler that hands ready entries to workers. It follows
//! pg_restore's parallel restore (`restore_toc_entries_prefork`, `fix_dependencies`,
//! `repoint_table_dependencies`, `identify_locking_dependencies`, `pop_next_work_item`) so
//! that a pgarc restore runs the same statements under the same ordering guarantees.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::archive::select::{is_acl, toc_reqs, Reqs, Selection};
use crate::archive::toc::{Section, Toc, TocEntry};

/// pg_restore's restore passes: everything else, then ACLs, then what must follow ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pass {
    Main,
    Acl,
    PostAcl,
}

/// The pass of an entry (`_tocEntryRestorePass`, with 18's post-data statistics).
pub fn restore_pass(e: &TocEntry) -> Pass {
    if is_acl(e) {
        return Pass::Acl;
    }
    let d = &e.desc;
    if d.is("EVENT TRIGGER") || d.is("MATERIALIZED VIEW DATA") {
        return Pass::PostAcl;
    }
    if d.is("STATISTICS DATA") && e.section == Section::PostData.code() {
        return Pass::PostAcl;
    }
    if d.is("COMMENT") && e.tag.starts_with("EVENT TRIGGER ") {
        return Pass::PostAcl;
    }
    Pass::Main
}

/// One TOC entry as the scheduler sees it. Indexes are positions in the TOC.
#[derive(Debug, Clone)]
pub struct Item {
    pub reqs: Reqs,
    pub pass: Pass,
    /// Runs on the leader's connection, in TOC order, before the workers start.
    pub prefork: bool,
    /// Entries this one waits for (present ones only; post-data waits for table data).
    pub deps: Vec<usize>,
    pub rev_deps: Vec<usize>,
    /// Tables whose exclusive lock this entry needs (post-data, except indexes).
    pub lock_deps: Vec<usize>,
    /// For ordering: the data file's size, inherited by post-data entries from their tables.
    pub data_len: u64,
    /// An INDEX entry (SHARE lock: runs beside the table's other index builds).
    pub is_index: bool,
    /// A PRIMARY KEY or UNIQUE constraint of a plain table built through its index
    /// (`sql::index_backed`): runs beside the table's INDEX entries, not beside another such
    /// constraint (both would end waiting for the other's lock).
    pub index_backed: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub items: Vec<Item>,
    /// TABLE entry → its TABLE DATA entry (the last one in TOC order, as pg_restore keeps).
    pub table_data_of: HashMap<usize, usize>,
}

impl Plan {
    /// Plans `toc` under `sel`; `data_len` sizes the entries that have data files.
    pub fn build(toc: &Toc, sel: &Selection, data_len: impl Fn(&TocEntry) -> u64) -> Plan {
        let entries = &toc.entries;
        let by_id = toc.positions_by_dump_id();
        let mut table_data_of = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.desc.is("TABLE DATA") {
                if let Some(&t) = e.deps.first().and_then(|d| by_id.get(d)) {
                    table_data_of.insert(t, i);
                }
            }
        }
        let mut items: Vec<Item> = entries
            .iter()
            .zip(toc_reqs(entries, sel))
            .map(|(e, reqs)| Item {
                reqs,
                pass: restore_pass(e),
                prefork: false,
                deps: Vec::new(),
                rev_deps: Vec::new(),
                lock_deps: Vec::new(),
                data_len: if e.had_dumper { data_len(e) } else { 0 },
                is_index: e.desc.is("INDEX"),
                index_backed: index_backed(entries, &by_id, e),
            })
            .collect();
        // Dependencies, repointed from tables to their data for post-data entries.
        for (i, e) in entries.iter().enumerate() {
            let post = e.section == Section::PostData.code();
            let mut deps = Vec::with_capacity(e.deps.len());
            for d in &e.deps {
                let Some(&mut_dep) = by_id.get(d) else {
                    continue;
                };
                let mut dep = mut_dep;
                if post {
                    if let Some(&td) = table_data_of.get(&dep) {
                        dep = td;
                        items[i].data_len = items[i].data_len.max(items[td].data_len);
                    }
                }
                if dep != i && !deps.contains(&dep) {
                    deps.push(dep);
                }
            }
            if post && !e.desc.is("INDEX") {
                items[i].lock_deps = deps
                    .iter()
                    .copied()
                    .filter(|&d| entries[d].desc.is("TABLE DATA") || entries[d].desc.is("TABLE"))
                    .collect();
            }
            items[i].deps = deps;
        }
        for i in 0..items.len() {
            for d in items[i].deps.clone() {
                items[d].rev_deps.push(i);
            }
        }
        // The leader restores pre-data in TOC order; SECTION_NONE entries too, until the
        // first data or post-data entry has been passed over.
        let mut skipped = false;
        for (i, e) in entries.iter().enumerate() {
            let now = match e.section() {
                Some(Section::PreData) => true,
                Some(Section::Data | Section::PostData) => {
                    skipped = true;
                    false
                }
                _ => !skipped,
            };
            items[i].prefork = now && items[i].pass == Pass::Main;
        }
        // A TOC of 100,000 entries: no spare capacity in each entry's lists.
        for it in &mut items {
            it.deps.shrink_to_fit();
            it.rev_deps.shrink_to_fit();
            it.lock_deps.shrink_to_fit();
        }
        Plan {
            items,
            table_data_of,
        }
    }
}

/// Hands out ready entries, largest first, never two with conflicting locks at once.
#[derive(Debug)]
pub struct Scheduler {
    dep_count: Vec<usize>,
    /// Not yet ready or not yet in the current pass.
    pending: Vec<bool>,
    ready: BinaryHeap<(u64, Reverse<usize>)>,
    pass: Pass,
    done: Vec<bool>,
}

impl Scheduler {
    /// Starts after the leader has run the prefork entries.
    pub fn new(plan: &Plan) -> Scheduler {
        let n = plan.items.len();
        let mut s = Scheduler {
            dep_count: plan.items.iter().map(|it| it.deps.len()).collect(),
            pending: vec![true; n],
            ready: BinaryHeap::new(),
            pass: Pass::Main,
            done: vec![false; n],
        };
        for i in 0..n {
            if plan.items[i].prefork {
                s.pending[i] = false;
            }
        }
        for i in 0..n {
            if plan.items[i].prefork {
                s.complete(plan, i);
            }
        }
        s.fill(plan);
        s
    }

    pub fn pass(&self) -> Pass {
        self.pass
    }

    fn fill(&mut self, plan: &Plan) {
        for i in 0..plan.items.len() {
            if self.pending[i] && self.dep_count[i] == 0 && plan.items[i].pass == self.pass {
                self.pending[i] = false;
                self.ready.push((plan.items[i].data_len, Reverse(i)));
            }
        }
    }

    /// Marks `i` done and readies what waited only for it.
    pub fn complete(&mut self, plan: &Plan, i: usize) {
        self.done[i] = true;
        for &r in &plan.items[i].rev_deps {
            self.dep_count[r] -= 1;
            if self.dep_count[r] == 0 && self.pending[r] && plan.items[r].pass == self.pass {
                self.pending[r] = false;
                self.ready.push((plan.items[r].data_len, Reverse(r)));
            }
        }
    }

    /// The next entry to run beside `running`, if any. Entries that restore nothing are
    /// completed on the way, as pg_restore skips them.
    pub fn next(&mut self, plan: &Plan, running: &[usize]) -> Option<usize> {
        let mut stash = Vec::new();
        let mut found = None;
        while let Some((len, Reverse(i))) = self.ready.pop() {
            if !plan.items[i].reqs.selected() {
                self.complete(plan, i);
                continue;
            }
            let conflicts = running
                .iter()
                .any(|&r| lock_conflict(plan, i, r) || lock_conflict(plan, r, i));
            if conflicts {
                stash.push((len, Reverse(i)));
                continue;
            }
            found = Some(i);
            break;
        }
        self.ready.extend(stash);
        found
    }

    /// Whether anything is ready now.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// With nothing ready and nothing running: moves to the next pass. False after the last.
    pub fn advance(&mut self, plan: &Plan) -> bool {
        self.pass = match self.pass {
            Pass::Main => Pass::Acl,
            Pass::Acl => Pass::PostAcl,
            Pass::PostAcl => return false,
        };
        self.fill(plan);
        true
    }

    /// Entries never run (circular or broken dependencies), in TOC order, for the mop-up.
    pub fn left_over(&self) -> Vec<usize> {
        (0..self.done.len()).filter(|&i| !self.done[i]).collect()
    }
}

fn lock_conflict(plan: &Plan, a: usize, b: usize) -> bool {
    let (ia, ib) = (&plan.items[a], &plan.items[b]);
    if ia.index_backed && ib.is_index {
        return false;
    }
    ia.lock_deps.iter().any(|l| ib.deps.contains(l))
}

/// Whether a CONSTRAINT entry is a simple PRIMARY KEY or UNIQUE of a plain table (the TABLE
/// entry's relkind, archive version 1.16 and later, says `r`), built through its index.
fn index_backed(entries: &[TocEntry], by_id: &HashMap<i32, usize>, e: &TocEntry) -> bool {
    const PLAIN_TABLE: i32 = b'r' as i32;
    e.desc.is("CONSTRAINT")
        && e.section == Section::PostData.code()
        && e.deps.iter().any(|d| {
            by_id
                .get(d)
                .is_some_and(|&t| entries[t].desc.is("TABLE") && entries[t].relkind == PLAIN_TABLE)
        })
        && e.defn
            .carrier()
            .is_some_and(|d| super::sql::index_backed(&d).is_some())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::archive::toc::{
        ArchiveVersion, CompressionAlgorithm, CreateTime, Header, HeaderCompression, TocStr,
    };

    /// A TOC entry for planner tests (also used by `restore::analyze`'s).
    pub(crate) fn e(
        id: i32,
        desc: &str,
        section: Section,
        deps: &[i32],
        had_dumper: bool,
    ) -> TocEntry {
        TocEntry {
            dump_id: id,
            had_dumper,
            table_oid: "0".into(),
            oid: "0".into(),
            tag: format!("t{id}").as_str().into(),
            desc: desc.into(),
            section: section.code(),
            defn: if had_dumper {
                TocStr::NULL
            } else {
                "SQL;".into()
            },
            drop_stmt: TocStr::NULL,
            copy_stmt: TocStr::NULL,
            namespace: "public".into(),
            tablespace: TocStr::NULL,
            tableam: TocStr::NULL,
            relkind: 0,
            owner: TocStr::NULL,
            with_oids: "false".into(),
            deps: deps.to_vec(),
            filename: "".into(),
        }
    }

    /// A 1.16 TOC of `entries`.
    pub(crate) fn toc(entries: Vec<TocEntry>) -> Toc {
        let header = Header {
            version: ArchiveVersion::V1_16,
            int_size: 4,
            off_size: 8,
            format: 3,
            compression: HeaderCompression::Algorithm(CompressionAlgorithm::None),
            created: CreateTime::default(),
            dbname: "db".into(),
            server_version: "18".into(),
            pgdump_version: "18".into(),
        };
        Toc { header, entries }
    }

    /// Two tables with data, an index, a PK and an FK between them, an ACL, matview data.
    fn sample() -> Toc {
        toc(vec![
            e(1, "SCHEMA", Section::PreData, &[], false),
            e(2, "TABLE", Section::PreData, &[1], false),
            e(3, "TABLE", Section::PreData, &[1], false),
            e(4, "TABLE DATA", Section::Data, &[2], true),
            e(5, "TABLE DATA", Section::Data, &[3], true),
            e(6, "INDEX", Section::PostData, &[2], false),
            e(7, "CONSTRAINT", Section::PostData, &[2], false),
            e(8, "FK CONSTRAINT", Section::PostData, &[3, 7], false),
            e(9, "ACL", Section::None, &[2], false),
            e(
                10,
                "MATERIALIZED VIEW DATA",
                Section::PostData,
                &[99],
                false,
            ),
        ])
    }

    fn sizes(e: &TocEntry) -> u64 {
        match e.dump_id {
            4 => 1000,
            5 => 10,
            _ => 0,
        }
    }

    #[test]
    fn post_data_waits_for_table_data_and_inherits_its_size() {
        let plan = Plan::build(&sample(), &Selection::default(), sizes);
        assert_eq!(plan.items[5].deps, [3], "INDEX waits for TABLE DATA 4");
        assert_eq!(plan.items[5].data_len, 1000);
        assert!(
            plan.items[5].lock_deps.is_empty(),
            "indexes take no exclusive lock"
        );
        assert_eq!(plan.items[6].lock_deps, [3]);
        assert_eq!(plan.items[7].deps, [4, 6]);
        assert_eq!(
            plan.items[9].deps,
            Vec::<usize>::new(),
            "absent deps are dropped"
        );
        assert!(plan.items[0].prefork && plan.items[1].prefork && plan.items[2].prefork);
        assert!(!plan.items[3].prefork && !plan.items[8].prefork);
        assert_eq!(plan.items[8].pass, Pass::Acl);
        assert_eq!(plan.items[9].pass, Pass::PostAcl);
    }

    #[test]
    fn scheduler_runs_largest_first_in_passes_without_lock_conflicts() {
        let plan = Plan::build(&sample(), &Selection::default(), sizes);
        let mut s = Scheduler::new(&plan);
        assert_eq!(s.next(&plan, &[]), Some(3), "the bigger table data first");
        assert_eq!(s.next(&plan, &[3]), Some(4));
        assert_eq!(s.next(&plan, &[3, 4]), None);
        s.complete(&plan, 3);
        // INDEX (5) and CONSTRAINT (6) are ready; both on table 2. The constraint's ALTER
        // TABLE must wait for the index build, as in pg_restore.
        let first = s.next(&plan, &[4]).unwrap();
        assert_eq!(first, 5, "equal sizes: TOC order");
        assert_eq!(s.next(&plan, &[4, first]), None);
        s.complete(&plan, 4);
        s.complete(&plan, 5);
        assert_eq!(s.next(&plan, &[]), Some(6));
        // The FK needs the constraint (6) done.
        assert_eq!(s.next(&plan, &[6]), None);
        s.complete(&plan, 6);
        assert_eq!(s.next(&plan, &[]), Some(7));
        s.complete(&plan, 7);
        assert_eq!(s.next(&plan, &[]), None);
        assert!(s.advance(&plan));
        assert_eq!(s.pass(), Pass::Acl);
        assert_eq!(s.next(&plan, &[]), Some(8));
        s.complete(&plan, 8);
        assert!(s.advance(&plan));
        assert_eq!(s.next(&plan, &[]), Some(9));
        s.complete(&plan, 9);
        assert!(!s.advance(&plan));
        assert!(s.left_over().is_empty());
    }

    #[test]
    fn circular_dependencies_are_left_for_the_mop_up() {
        let t = toc(vec![
            e(1, "TABLE", Section::PreData, &[], false),
            e(2, "INDEX", Section::PostData, &[3], false),
            e(3, "INDEX", Section::PostData, &[2], false),
        ]);
        let plan = Plan::build(&t, &Selection::default(), |_| 0);
        let mut s = Scheduler::new(&plan);
        assert_eq!(s.next(&plan, &[]), None);
        while s.advance(&plan) {}
        assert_eq!(s.left_over(), [1, 2]);
    }
}
