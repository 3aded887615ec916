//! The account of one table's data load (format-spec/tool.md §4): what is committed, whether the
//! table is whole, empty, or must be emptied, and which errors to report. Pure; the
//! dispatcher feeds it the workers' outcomes.
//!
//! A table is loaded in one job, or, when it is safe (created in this run, nothing on it
//! that sees across rows), in parts on several sessions whose transactions commit
//! separately once every part has loaded (the gang barrier). The rule it enforces: a table
//! counts as loaded only when every part committed; when a part failed after another
//! committed, the committed rows are removed (the table was created in this run, so all of
//! its rows are this run's) before the table counts as done, not loaded.

/// What a part (or the whole table's job) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOutcome {
    /// Its transaction committed: `rows` are in the database.
    pub committed: bool,
    /// It failed (an error, or its session ended): its rows are not known to be in.
    pub failed: bool,
    /// Its session ended before the worker learnt whether the transaction committed.
    pub uncertain: bool,
    pub rows: u64,
    pub raw_bytes: u64,
}

/// What the dispatcher does next for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Other parts are still running.
    Wait,
    /// Remove the committed parts' rows (TRUNCATE), then report [`TableLoad::undone`].
    Undo,
    /// The table is finished: loaded whole (`loaded`, with these rows) or not at all.
    Done {
        loaded: bool,
        rows: u64,
        raw_bytes: u64,
    },
}

/// One table's load in progress.
#[derive(Debug, Clone)]
pub struct TableLoad {
    parts: usize,
    reported: usize,
    committed_parts: usize,
    uncertain_parts: usize,
    rows: u64,
    raw_bytes: u64,
    failed: bool,
    /// All of its rows are this run's (created in this run): what committed may be removed.
    undoable: bool,
}

impl TableLoad {
    pub fn new(parts: usize, undoable: bool) -> TableLoad {
        TableLoad {
            parts: parts.max(1),
            reported: 0,
            committed_parts: 0,
            uncertain_parts: 0,
            rows: 0,
            raw_bytes: 0,
            failed: false,
            undoable,
        }
    }

    /// Whether rows it committed can be removed again.
    pub fn undoable(&self) -> bool {
        self.undoable
    }

    /// Takes a part's outcome. The second value says whether its errors are to be
    /// reported: a table's failure is reported once, by the first failing part.
    pub fn part_done(&mut self, o: PartOutcome) -> (Next, bool) {
        let report_errors = !(self.failed && o.failed);
        self.reported += 1;
        if o.failed {
            self.failed = true;
        }
        if o.uncertain {
            self.uncertain_parts += 1;
        }
        if o.committed {
            self.committed_parts += 1;
            self.rows += o.rows;
            self.raw_bytes += o.raw_bytes;
        }
        if self.reported < self.parts {
            return (Next::Wait, report_errors);
        }
        if self.failed && self.may_hold_rows() && self.undoable {
            return (Next::Undo, report_errors);
        }
        (self.finish(), report_errors)
    }

    /// The removal of committed rows ended (`ok`: the table is empty again).
    pub fn undone(&mut self, ok: bool) -> Next {
        if ok {
            self.committed_parts = 0;
            self.uncertain_parts = 0;
        }
        self.finish()
    }

    /// Some of its rows are, or may be, in the database.
    fn may_hold_rows(&self) -> bool {
        self.committed_parts > 0 || self.uncertain_parts > 0
    }

    /// Whether an interrupted run must remove this table's rows (it did not finish).
    pub fn needs_undo_if_abandoned(&self) -> bool {
        self.undoable && self.may_hold_rows()
    }

    fn finish(&self) -> Next {
        if self.failed {
            Next::Done {
                loaded: false,
                rows: 0,
                raw_bytes: 0,
            }
        } else {
            Next::Done {
                loaded: true,
                rows: self.rows,
                raw_bytes: self.raw_bytes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What happens to one part of a split table, as a real run can make it happen.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        /// Its COPY fails (a bad row, a damaged frame, a constraint): nothing commits.
        CopyFails,
        /// It loads; then its COMMIT succeeds, unless the barrier says another part failed.
        Loads,
        /// It loads, and its session ends during COMMIT: the server may or may not have
        /// committed (`in_db`), the worker cannot tell.
        LostAtCommit { in_db: bool },
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            3 => Just(Fate::Loads),
            1 => Just(Fate::CopyFails),
            1 => any::<bool>().prop_map(|in_db| Fate::LostAtCommit { in_db }),
        ]
    }

    /// The database's truth and the account's claim for one table after a run, driven by
    /// the same rules the workers follow (the gang barrier, COMMIT, TRUNCATE to undo).
    struct Run {
        rows_in_db: u64,
        claimed: Option<Next>,
        errors: usize,
    }

    fn simulate(
        fates: &[Fate],
        rows_per_part: &[u64],
        kill_after: Option<usize>,
        undo_works: bool,
        created: bool,
    ) -> Run {
        let parts = fates.len();
        // Split tables were created in this run, so their rows can be removed; a table
        // loaded in one job can be emptied when it was created in this run.
        let mut load = TableLoad::new(parts, parts > 1 || created);
        // The barrier: parts commit only if every part's COPY succeeded.
        let all_loaded = fates.iter().all(|f| !matches!(f, Fate::CopyFails));
        let mut run = Run {
            rows_in_db: 0,
            claimed: None,
            errors: 0,
        };
        for (i, (&f, &rows)) in fates.iter().zip(rows_per_part).enumerate() {
            if kill_after == Some(i) {
                // Interrupted: the sessions close (uncommitted work rolls back) and the
                // committed parts of an unfinished table are removed.
                if load.needs_undo_if_abandoned() && undo_works {
                    run.rows_in_db = 0;
                }
                return run;
            }
            let outcome = match f {
                Fate::CopyFails => PartOutcome {
                    committed: false,
                    failed: true,
                    uncertain: false,
                    rows: 0,
                    raw_bytes: 0,
                },
                Fate::Loads if all_loaded => {
                    run.rows_in_db += rows;
                    PartOutcome {
                        committed: true,
                        failed: false,
                        uncertain: false,
                        rows,
                        raw_bytes: rows * 10,
                    }
                }
                Fate::Loads => PartOutcome {
                    committed: false,
                    failed: false,
                    uncertain: false,
                    rows: 0,
                    raw_bytes: 0,
                },
                Fate::LostAtCommit { in_db } => {
                    if all_loaded && in_db {
                        run.rows_in_db += rows;
                    }
                    PartOutcome {
                        committed: false,
                        failed: true,
                        uncertain: true,
                        rows: 0,
                        raw_bytes: 0,
                    }
                }
            };
            let (next, report) = load.part_done(outcome);
            if report && outcome.failed {
                run.errors += 1;
            }
            match next {
                Next::Wait => {}
                Next::Undo => {
                    if undo_works {
                        run.rows_in_db = 0;
                    } else {
                        run.errors += 1;
                    }
                    run.claimed = Some(load.undone(undo_works));
                }
                done => run.claimed = Some(done),
            }
        }
        run
    }

    proptest! {
        /// Whatever fails where, and wherever the run is killed: a table the account calls
        /// loaded holds exactly the rows it claims, all of them; a table it calls not
        /// loaded holds none (or an error says it holds part); a failure is reported once.
        #[test]
        fn no_table_ends_partially_loaded(
            fates in proptest::collection::vec(fate(), 1..6),
            rows in proptest::collection::vec(1u64..1000, 6),
            kill in proptest::option::of(0usize..6),
            undo_works in proptest::bool::weighted(0.9),
            created in any::<bool>(),
        ) {
            let rows = &rows[..fates.len()];
            let total: u64 = rows.iter().sum();
            let run = simulate(&fates, rows, kill, undo_works, created);
            let uncertain = fates.iter().any(|f| matches!(f, Fate::LostAtCommit { .. }));
            let failed_parts = fates.iter().filter(|f| !matches!(f, Fate::Loads)).count();
            match run.claimed {
                Some(Next::Done { loaded: true, rows: claimed, .. }) => {
                    prop_assert_eq!(claimed, total);
                    prop_assert_eq!(run.rows_in_db, total);
                    prop_assert_eq!(failed_parts, 0);
                    prop_assert_eq!(run.errors, 0);
                }
                Some(Next::Done { loaded: false, rows: claimed, .. }) => {
                    prop_assert_eq!(claimed, 0);
                    prop_assert!(failed_parts > 0);
                    if run.rows_in_db == 0 {
                        prop_assert!(run.errors >= 1);
                    } else if run.rows_in_db == total && uncertain && fates.len() == 1 {
                        // A table loaded in one job whose session ended at COMMIT and that
                        // cannot be emptied: whole, and the error says the outcome is
                        // unknown.
                        prop_assert!(!created || !undo_works);
                    } else {
                        // Part of the table is in only when removing it failed, and then a
                        // second error says so.
                        prop_assert!(!undo_works);
                        prop_assert_eq!(run.errors, 2);
                    }
                    prop_assert!(run.errors <= 2, "a failure is reported once");
                }
                Some(other) => prop_assert!(false, "unfinished claim {:?}", other),
                None => {
                    // Killed before the table finished: it is listed as unfinished, and it
                    // holds no rows unless the clean-up itself failed.
                    prop_assert!(kill.is_some());
                    prop_assert!(run.rows_in_db == 0 || !undo_works);
                }
            }
        }
    }

    #[test]
    fn one_part_tables_are_whole_or_empty_without_undo() {
        let mut t = TableLoad::new(1, false);
        let (next, report) = t.part_done(PartOutcome {
            committed: false,
            failed: true,
            uncertain: false,
            rows: 0,
            raw_bytes: 0,
        });
        assert!(report);
        assert_eq!(
            next,
            Next::Done {
                loaded: false,
                rows: 0,
                raw_bytes: 0
            }
        );
    }
}
