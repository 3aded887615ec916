//! Which TOC entries pg_restore acts on, and whether as schema, data or statistics.
//!
//! This mirrors `_tocEntryRequired` in PostgreSQL's `pg_backup_archiver.c` (17 and 18), so
//! that `pgarc list` shows the same entries as `pg_restore -l` and `pgarc restore` restores
//! the same ones as pg_restore with the same options: `-C`, `-x`, `--section`, `-s`, `-a`,
//! `--no-statistics`, the name filters `-n -N -t -I -P -T` (exact names, as pg_restore takes
//! them) and a `-L` list file ([`parse_list`]).

use std::collections::{HashMap, HashSet};

use super::toc::{Section, TocEntry, TocStr};

/// What an entry contributes, as pg_restore's `REQ_*` bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reqs {
    pub schema: bool,
    pub data: bool,
    pub stats: bool,
    /// ENCODING, STDSTRINGS, SEARCHPATH: processed when the TOC is read, never listed.
    pub special: bool,
}

impl Reqs {
    /// Whether `pg_restore -l` prints the entry and a restore runs it.
    pub fn selected(self) -> bool {
        self.schema || self.data || self.stats
    }
}

/// Restore options that change selection. `Default` is pg_restore without options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `-C`: restore DATABASE and DATABASE PROPERTIES entries (and the database's ACL/COMMENT).
    pub create_db: bool,
    /// `--no-statistics` clears this (pg_restore 18 restores statistics by default).
    pub statistics: bool,
    /// `-x`/`--no-privileges` clears this: ACL and DEFAULT ACL entries are skipped.
    pub acls: bool,
    /// `--section`: which sections are restored (all three unless `--section` is given).
    pub pre_data: bool,
    pub data: bool,
    pub post_data: bool,
    /// `-s`: only REQ_SCHEMA; `-a`: only REQ_DATA.
    pub schema_only: bool,
    pub data_only: bool,
    pub names: NameFilters,
    /// `-L`: the dump IDs listed (not commented out).
    pub id_wanted: Option<HashSet<i32>>,
}

/// pg_restore's name filters, exact names (not patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFilters {
    /// `-n`, `-N`: schema names.
    pub schemas: Vec<String>,
    pub exclude_schemas: Vec<String>,
    /// `-t`, `-I`, `-P`, `-T`: object names by kind; any of them makes the restore select
    /// by type (`selTypes`), and kinds not named are skipped.
    pub tables: Vec<String>,
    pub indexes: Vec<String>,
    pub functions: Vec<String>,
    pub triggers: Vec<String>,
}

impl NameFilters {
    fn sel_types(&self) -> bool {
        !(self.tables.is_empty()
            && self.indexes.is_empty()
            && self.functions.is_empty()
            && self.triggers.is_empty())
    }

    /// Whether any filter applies (a partial restore).
    pub fn any(&self) -> bool {
        self.sel_types() || !self.schemas.is_empty() || !self.exclude_schemas.is_empty()
    }

    /// The kind of name (`-t`, `-I`, `-P` or `-T`) that selects `entry`, and those names.
    fn names_for(&self, entry: &TocEntry) -> Option<(&'static str, &[String])> {
        let d = &entry.desc;
        if TABLE_LIKE.iter().any(|k| d.is(k)) {
            Some(("table", &self.tables))
        } else if d.is("INDEX") {
            Some(("index", &self.indexes))
        } else if d.is("FUNCTION") || d.is("AGGREGATE") || d.is("PROCEDURE") {
            Some(("function", &self.functions))
        } else if d.is("TRIGGER") {
            Some(("trigger", &self.triggers))
        } else {
            None
        }
    }

    /// `--strict-names`: the first name no entry of `entries` carries, as `kind "name"`.
    pub fn missing(&self, entries: &[TocEntry]) -> Option<String> {
        let text = |s: &TocStr| s.to_str_lossy().map(|t| t.into_owned());
        for name in &self.schemas {
            if !entries
                .iter()
                .any(|e| text(&e.namespace).as_ref() == Some(name))
            {
                return Some(format!("schema \"{name}\""));
            }
        }
        let kinds = [
            ("table", &self.tables),
            ("index", &self.indexes),
            ("function", &self.functions),
            ("trigger", &self.triggers),
        ];
        for (kind, names) in kinds {
            for name in names {
                let found = entries.iter().any(|e| {
                    text(&e.tag).as_ref() == Some(name)
                        && self.names_for(e).is_some_and(|(k, _)| k == kind)
                });
                if !found {
                    return Some(format!("{kind} \"{name}\""));
                }
            }
        }
        None
    }
}

impl Selection {
    fn section_wanted(&self, current: i32) -> bool {
        match Section::from_code(current) {
            Some(Section::PreData) => self.pre_data,
            Some(Section::Data) => self.data,
            Some(Section::PostData) => self.post_data,
            _ => false,
        }
    }
}

/// ACL entries, which `--no-privileges` skips and which restore in the ACL pass.
pub fn is_acl(entry: &TocEntry) -> bool {
    let d = &entry.desc;
    d.is("ACL") || d.is("ACL LANGUAGE") || d.is("DEFAULT ACL")
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            create_db: false,
            statistics: true,
            acls: true,
            pre_data: true,
            data: true,
            post_data: true,
            schema_only: false,
            data_only: false,
            names: NameFilters::default(),
            id_wanted: None,
        }
    }
}

/// The kinds of entry `-t` selects.
const TABLE_LIKE: &[&str] = &[
    "TABLE",
    "TABLE DATA",
    "VIEW",
    "FOREIGN TABLE",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "SEQUENCE",
    "SEQUENCE SET",
];

/// The name filters for a standalone entry (`_tocEntryRequired`'s selective-restore rules).
fn names_allow(entry: &TocEntry, opts: &NameFilters) -> bool {
    let ns = entry.namespace.to_str_lossy();
    if !opts.schemas.is_empty() {
        match &ns {
            Some(n) if opts.schemas.iter().any(|s| s == n.as_ref()) => {}
            _ => return false,
        }
    }
    if let Some(n) = &ns {
        if opts.exclude_schemas.iter().any(|s| s == n.as_ref()) {
            return false;
        }
    }
    if opts.sel_types() {
        let tag = entry.tag.to_str_lossy().unwrap_or_default();
        match opts.names_for(entry) {
            Some((_, names)) if names.iter().any(|n| *n == tag) => {}
            _ => return false,
        }
    }
    true
}

/// What to do with every entry of `entries` (in TOC order): an ACL, COMMENT or SECURITY LABEL
/// of a selective restore follows its parent object, whose decision comes earlier.
pub fn toc_reqs(entries: &[TocEntry], opts: &Selection) -> Vec<Reqs> {
    let mut decided: HashMap<i32, (bool, bool)> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (e, current) in sections_in_force(entries) {
        let parent = |id: i32| decided.get(&id).copied();
        let r = entry_reqs_with(e, current, opts, &parent);
        decided.insert(e.dump_id, (e.desc.is("ACL"), r.selected() || r.special));
        out.push(r);
    }
    out
}

const LO_TAG_PREFIX: &str = "LARGE OBJECT";

/// Decides what to do with `entry`; `current` is the section in force, which SECTION_NONE
/// entries inherit from the entry before them (see [`sections_in_force`]); `parent` tells, for
/// an entry decided earlier, whether it is an ACL and whether it was selected.
fn entry_reqs_with(
    entry: &TocEntry,
    current: i32,
    opts: &Selection,
    parent: &dyn Fn(i32) -> Option<(bool, bool)>,
) -> Reqs {
    let desc = &entry.desc;
    if desc.is("ENCODING") || desc.is("STDSTRINGS") || desc.is("SEARCHPATH") {
        return Reqs {
            special: true,
            ..Reqs::default()
        };
    }
    if desc.is("DATABASE") || desc.is("DATABASE PROPERTIES") {
        return Reqs {
            schema: opts.create_db,
            ..Reqs::default()
        };
    }
    if !opts.acls && is_acl(entry) {
        return Reqs::default();
    }
    if !opts.section_wanted(current) {
        return Reqs::default();
    }
    if desc.is("STATISTICS DATA") {
        return Reqs {
            stats: opts.statistics,
            ..Reqs::default()
        };
    }
    if let Some(wanted) = &opts.id_wanted {
        if !wanted.contains(&entry.dump_id) {
            return Reqs::default();
        }
    }
    let dependent = desc.is("ACL") || desc.is("COMMENT") || desc.is("SECURITY LABEL");
    if dependent {
        if entry.tag.starts_with("DATABASE ") {
            if !opts.create_db {
                return Reqs::default();
            }
        } else if opts.names.any() {
            // Restored only with a parent object that is (ACLs as parents do not count).
            let any = entry
                .deps
                .iter()
                .any(|&d| matches!(parent(d), Some((false, true))));
            if !any {
                return Reqs::default();
            }
        }
    } else if !names_allow(entry, &opts.names) {
        return Reqs::default();
    }
    let mut reqs = Reqs {
        schema: true,
        data: true,
        ..Reqs::default()
    };
    if !entry.had_dumper {
        let lo_related = desc.is("SEQUENCE SET")
            || desc.is("BLOB")
            || desc.is("BLOB METADATA")
            || (dependent && entry.tag.starts_with(LO_TAG_PREFIX));
        if lo_related {
            reqs.schema = false;
        } else {
            reqs.data = false;
        }
    }
    let no_defn = entry.defn.as_bytes().is_none_or(|d| d.is_empty());
    if no_defn || entry.defn.starts_with("-- load via partition root ") {
        reqs.schema = false;
    }
    if desc.is("<Init>") && entry.tag.is("Max OID") {
        return Reqs::default();
    }
    if opts.schema_only {
        reqs.data = false;
    }
    if opts.data_only {
        reqs.schema = false;
    }
    reqs
}

/// The section in force at each entry, in TOC order: an entry's own section unless it is
/// SECTION_NONE, which inherits the previous one. The walk starts in PRE_DATA.
pub fn sections_in_force(entries: &[TocEntry]) -> impl Iterator<Item = (&TocEntry, i32)> {
    let mut current = Section::PreData.code();
    entries.iter().map(move |e| {
        if e.section != Section::None.code() {
            current = e.section;
        }
        (e, current)
    })
}

/// A `-L` list file read as pg_restore's `SortTocFromFile` reads it: each line is cut at its
/// first `;`; what is left, if not blank, must start with a dump ID. Returns the IDs in the
/// file's order and a warning per ignored line (no ID, or an ID seen before), as pg_restore
/// warns "line ignored".
pub fn parse_list(text: &str) -> (Vec<i32>, Vec<String>) {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut warnings = Vec::new();
    for line in text.lines() {
        let before = line.split(';').next().unwrap_or("");
        if before.trim().is_empty() {
            continue;
        }
        let t = before.trim_start();
        let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
        match digits.parse::<i32>() {
            Ok(id) if id > 0 && seen.insert(id) => ids.push(id),
            _ => warnings.push(format!("line ignored: {before}")),
        }
    }
    (ids, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::toc::TocStr;

    fn entry(desc: &str, section: Section, had_dumper: bool, defn: Option<&str>) -> TocEntry {
        TocEntry {
            dump_id: 1,
            had_dumper,
            table_oid: "0".into(),
            oid: "0".into(),
            tag: "t".into(),
            desc: desc.into(),
            section: section.code(),
            defn: defn.map_or(TocStr::NULL, TocStr::from),
            drop_stmt: TocStr::NULL,
            copy_stmt: TocStr::NULL,
            namespace: TocStr::NULL,
            tablespace: TocStr::NULL,
            tableam: TocStr::NULL,
            relkind: 0,
            owner: TocStr::NULL,
            with_oids: "false".into(),
            deps: vec![],
            filename: "".into(),
        }
    }

    #[test]
    fn list_files_are_read_like_pg_restore() {
        let text = "; Archive created at ...\n;\n12; 2615 2200 SCHEMA - app postgres\n\
                    ;14; 1259 16414 TABLE app orders postgres\n  7; 0 0 COMMENT - x\n\
                    \n9\nbogus line\n12; again\n";
        let (ids, warnings) = parse_list(text);
        assert_eq!(ids, [12, 7, 9]);
        assert_eq!(warnings, ["line ignored: bogus line", "line ignored: 12"]);
    }

    #[test]
    fn name_filters_and_lists_select_like_pg_restore() {
        let mut table = entry("TABLE", Section::PreData, false, Some("CREATE TABLE t ();"));
        table.namespace = "app".into();
        table.dump_id = 5;
        let mut comment = entry("COMMENT", Section::None, false, Some("COMMENT ON TABLE"));
        comment.dump_id = 6;
        comment.deps = vec![5];
        let mut index = entry("INDEX", Section::PostData, false, Some("CREATE INDEX"));
        index.namespace = "app".into();
        index.dump_id = 7;
        let entries = vec![table.clone(), comment.clone(), index.clone()];
        let picked = |sel: &Selection| -> Vec<bool> {
            toc_reqs(&entries, sel)
                .iter()
                .map(|r| r.selected())
                .collect()
        };
        let by_names = |names: NameFilters| Selection {
            names,
            ..Selection::default()
        };
        let by_table = by_names(NameFilters {
            tables: vec!["t".into()],
            ..NameFilters::default()
        });
        // -t: the table and its comment, not the index (no -I).
        assert_eq!(picked(&by_table), [true, true, false]);
        let other = by_names(NameFilters {
            tables: vec!["u".into()],
            ..NameFilters::default()
        });
        assert_eq!(picked(&other), [false, false, false]);
        let schema = by_names(NameFilters {
            schemas: vec!["app".into()],
            ..NameFilters::default()
        });
        assert_eq!(picked(&schema), [true, true, true]);
        let excluded = by_names(NameFilters {
            exclude_schemas: vec!["app".into()],
            ..NameFilters::default()
        });
        assert_eq!(picked(&excluded), [false, false, false]);
        let listed = Selection {
            id_wanted: Some([5, 7].into()),
            ..Selection::default()
        };
        assert_eq!(picked(&listed), [true, false, true]);
        let data_only = Selection {
            data_only: true,
            ..Selection::default()
        };
        assert_eq!(picked(&data_only), [false, false, false]);
    }

    /// Decides one entry without parents (no selective options that need them).
    fn entry_reqs(entry: &TocEntry, current: i32, opts: &Selection) -> Reqs {
        entry_reqs_with(entry, current, opts, &|_| None)
    }

    fn reqs(e: &TocEntry) -> Reqs {
        entry_reqs(e, e.section, &Selection::default())
    }

    #[test]
    fn default_selection_follows_pg_restore() {
        let table = entry("TABLE", Section::PreData, false, Some("CREATE TABLE t ();"));
        assert!(reqs(&table).schema && !reqs(&table).data);
        let data = entry("TABLE DATA", Section::Data, true, None);
        assert!(reqs(&data).data && !reqs(&data).schema);
        let seqset = entry(
            "SEQUENCE SET",
            Section::Data,
            false,
            Some("SELECT setval(1);"),
        );
        assert!(reqs(&seqset).data && !reqs(&seqset).schema);
        assert!(reqs(&entry("ENCODING", Section::PreData, false, Some("SET"))).special);
        assert!(!reqs(&entry("DATABASE", Section::PreData, false, Some("CREATE"))).selected());
        let create = Selection {
            create_db: true,
            ..Selection::default()
        };
        let db = entry("DATABASE", Section::PreData, false, Some("CREATE"));
        assert!(entry_reqs(&db, db.section, &create).schema);
        // An entry with no definition and no data file does nothing.
        assert!(!reqs(&entry("COMMENT", Section::PreData, false, Some(""))).selected());
        // An unknown section code silently drops the entry, as in pg_restore.
        let odd = entry("TABLE", Section::PreData, false, Some("CREATE"));
        assert!(!entry_reqs(&odd, 9, &Selection::default()).selected());
        let stats = entry("STATISTICS DATA", Section::Data, false, Some("SELECT"));
        assert!(reqs(&stats).stats);
    }

    #[test]
    fn no_privileges_and_sections_filter_entries() {
        let acl = entry("ACL", Section::None, false, Some("GRANT ALL ON t TO r;"));
        assert!(entry_reqs(&acl, Section::PreData.code(), &Selection::default()).schema);
        let no_acl = Selection {
            acls: false,
            ..Selection::default()
        };
        assert!(!entry_reqs(&acl, Section::PreData.code(), &no_acl).selected());
        let data_only = Selection {
            pre_data: false,
            post_data: false,
            ..Selection::default()
        };
        let table = entry("TABLE", Section::PreData, false, Some("CREATE TABLE t ();"));
        let data = entry("TABLE DATA", Section::Data, true, None);
        let index = entry(
            "INDEX",
            Section::PostData,
            false,
            Some("CREATE INDEX i ON t (a);"),
        );
        assert!(!entry_reqs(&table, table.section, &data_only).selected());
        assert!(entry_reqs(&data, data.section, &data_only).data);
        assert!(!entry_reqs(&index, index.section, &data_only).selected());
    }

    #[test]
    fn section_none_inherits_the_previous_section() {
        let entries = vec![
            entry("A", Section::None, false, None),
            entry("B", Section::Data, false, None),
            entry("C", Section::None, false, None),
        ];
        let sections: Vec<i32> = sections_in_force(&entries).map(|(_, s)| s).collect();
        assert_eq!(sections, [2, 3, 3]);
    }
}
