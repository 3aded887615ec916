//! Which TOC entries pg_restore acts on, and whether as schema, data or statistics.
//!
//! This mirrors `_tocEntryRequired` in PostgreSQL's `pg_backup_archiver.c` (17 and 18), so
//! that `pgarc list` shows the same entries as `pg_restore -l` and `pgarc restore` restores
//! the same ones as pg_restore with the same options. Only the options implemented so far are
//! modelled; the rest keep pg_restore's defaults.

use super::toc::{Section, TocEntry};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }
}

const LO_TAG_PREFIX: &str = "LARGE OBJECT";

/// Decides what to do with `entry`; `current` is the section in force, which SECTION_NONE
/// entries inherit from the entry before them (see [`sections_in_force`]).
pub fn entry_reqs(entry: &TocEntry, current: i32, opts: &Selection) -> Reqs {
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
    let dependent = desc.is("ACL") || desc.is("COMMENT") || desc.is("SECURITY LABEL");
    if dependent && entry.tag.starts_with("DATABASE ") && !opts.create_db {
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
