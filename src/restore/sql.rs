//! The SQL a restore sends for each TOC entry, as pg_restore builds it (`_printTocEntry`,
//! `_getObjectDescription`, the `--clean --if-exists` rewriting in `RestoreArchive`, the
//! per-large-object commands of `pg_backup_db.c`). Pure string work, unit-tested here; the
//! workers only send what these functions return.

use crate::archive::toc::{TocEntry, TocStr};

/// Quotes an identifier. pg_restore quotes only where needed; quoting always names the same
/// object and needs no keyword list.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`, or `"name"` without a schema.
pub fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{}.{}", ident(ns), ident(name)),
        _ => ident(name),
    }
}

/// The quoted, schema-qualified name of the table an entry is about (a carrier).
pub fn entry_table(entry: &TocEntry) -> String {
    qualified(
        text(&entry.namespace).as_deref(),
        &text(&entry.tag).unwrap_or_default(),
    )
}

use crate::pg::session::literal;

/// TOC text as a carrier (`pg::carrier`): the archive's bytes, whatever its encoding.
fn text(s: &TocStr) -> Option<String> {
    s.carrier()
}

/// The session settings every restore connection starts with (`_doSetFixedOutputState`).
pub fn fixed_state(
    encoding: &str,
    std_strings: bool,
    role: Option<&str>,
    search_path: Option<&str>,
    server_version_num: i32,
) -> Vec<String> {
    let mut v = vec![
        "SELECT pg_catalog.set_config('search_path', '', false)".to_string(),
        "SET statement_timeout = 0".into(),
        "SET lock_timeout = 0".into(),
        "SET idle_in_transaction_session_timeout = 0".into(),
    ];
    // pg_restore 17+ sends this unconditionally and fails on older servers; pgarc knows
    // the server's version.
    if server_version_num >= 170000 {
        v.push("SET transaction_timeout = 0".into());
    }
    v.push(format!("SET client_encoding = {}", literal(encoding)));
    v.push(format!(
        "SET standard_conforming_strings = {}",
        if std_strings { "on" } else { "off" }
    ));
    if let Some(role) = role {
        v.push(format!(
            "SET ROLE {}",
            ident(&crate::pg::carrier::from_user(role))
        ));
    }
    if let Some(sp) = search_path {
        v.push(sp.to_string());
    }
    v.push("SET check_function_bodies = false".into());
    v.push("SET xmloption = content".into());
    v.push("SET client_min_messages = warning".into());
    if !std_strings {
        v.push("SET escape_string_warning = off".into());
    }
    v.push("SET row_security = off".into());
    v
}

/// What one connection has already set, so that SETs are sent only when they change
/// (`_selectOutputSchema`, `_selectTablespace`, `_selectTableAccessMethod`).
#[derive(Debug, Default, Clone)]
pub struct SessionState {
    /// The archive has a SEARCHPATH entry: search_path stays as fixed_state set it.
    pub fixed_search_path: bool,
    schema: Option<String>,
    tablespace: Option<String>,
    tableam: Option<String>,
}

/// pg_class.relkind of a partitioned table, as the 1.16 TOC stores it.
const RELKIND_PARTITIONED_TABLE: i32 = b'p' as i32;

impl SessionState {
    pub fn new(fixed_search_path: bool) -> Self {
        SessionState {
            fixed_search_path,
            ..Default::default()
        }
    }

    /// The SETs needed before `entry`'s SQL runs.
    pub fn enter(&mut self, entry: &TocEntry) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = text(&entry.namespace) {
            v.extend(self.schema(&ns));
        }
        if let Some(ts) = text(&entry.tablespace) {
            if self.tablespace.as_deref() != Some(ts.as_str()) {
                v.push(if ts.is_empty() {
                    "SET default_tablespace = ''".to_string()
                } else {
                    format!("SET default_tablespace = {}", ident(&ts))
                });
                self.tablespace = Some(ts);
            }
        }
        if entry.relkind != RELKIND_PARTITIONED_TABLE {
            if let Some(am) = text(&entry.tableam) {
                if self.tableam.as_deref() != Some(am.as_str()) {
                    v.push(format!("SET default_table_access_method = {}", ident(&am)));
                    self.tableam = Some(am);
                }
            }
        }
        v
    }

    /// `SET search_path = schema, pg_catalog`, for archives without a SEARCHPATH entry.
    pub fn schema(&mut self, ns: &str) -> Option<String> {
        if self.fixed_search_path || ns.is_empty() || self.schema.as_deref() == Some(ns) {
            return None;
        }
        self.schema = Some(ns.to_string());
        Some(if ns == "pg_catalog" {
            "SET search_path = pg_catalog".to_string()
        } else {
            format!("SET search_path = {}, pg_catalog", ident(ns))
        })
    }

    /// After a DROP SCHEMA the search_path this state believes in may be gone.
    pub fn forget_schema(&mut self) {
        self.schema = None;
    }
}

/// The OIDs a BLOB METADATA entry's definition lists, one per line (each line must end in a
/// newline, as pg_restore reads them).
pub fn blob_oids(defn: &str) -> Vec<&str> {
    let mut v: Vec<&str> = defn.split_inclusive('\n').collect();
    if v.last().is_some_and(|l| !l.ends_with('\n')) {
        v.pop();
    }
    v.into_iter().map(|l| l.trim_end_matches('\n')).collect()
}

fn per_blob(defn: &str, begin: &str, end: &str) -> Vec<String> {
    blob_oids(defn)
        .into_iter()
        .map(|oid| format!("{begin}{oid}{end}"))
        .collect()
}

/// Splits the GRANT/REVOKE commands of a `LARGE OBJECTS` ACL entry into the part before the
/// OID and the part after it, per command (`IssueACLPerBlob`).
fn acl_halves(defn: &str) -> Vec<(String, String)> {
    let b = defn.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut start, mut first): (usize, usize, Option<String>) = (0, 0, None);
    let mut second_start = 0;
    let mut in_quotes = false;
    const KEY: &[u8] = b"LARGE OBJECT ";
    while i < b.len() {
        if b[i] == b'"' {
            in_quotes = !in_quotes;
        }
        if in_quotes {
            i += 1;
            continue;
        }
        if first.is_none() && b[i..].starts_with(KEY) {
            i += KEY.len();
            first = Some(defn[start..i].to_string());
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            second_start = i;
        } else if b[i] == b';' {
            if let Some(f) = first.take() {
                out.push((f, defn[second_start..i].to_string()));
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            start = i;
        } else {
            i += 1;
        }
    }
    out
}

/// Why an entry's statements cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntrySqlError {
    #[error("LARGE OBJECTS ACL without its BLOB METADATA entry")]
    AclWithoutBlobMetadata,
    #[error("don't know how to set the owner of a {0}")]
    UnknownOwnerKind(String),
}

/// A PRIMARY KEY or UNIQUE constraint as pg_dump writes it for a plain table
/// (`ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (a, b);\n`, optionally
/// DEFERRABLE), rebuilt as its index and `ADD CONSTRAINT ... USING INDEX` (pgcopydb's way):
/// the index build takes a SHARE lock, so it runs beside the table's other index builds, and
/// the catalog ends as the original statement leaves it. `None` for every other form
/// (INCLUDE, WITH, USING INDEX TABLESPACE, NULLS NOT DISTINCT, WITHOUT OVERLAPS, ...), which
/// is then run as it is.
pub fn index_backed(defn: &str) -> Option<[String; 2]> {
    let rest = defn.strip_prefix("ALTER TABLE ONLY ")?;
    let (table, rest) = rest.split_once("\n    ADD CONSTRAINT ")?;
    if table.contains('\n') {
        return None;
    }
    let (name, rest) = split_identifier(rest)?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix(" PRIMARY KEY (") {
        ("PRIMARY KEY", r)
    } else if let Some(r) = rest.strip_prefix(" UNIQUE (") {
        ("UNIQUE", r)
    } else {
        return None;
    };
    let (columns, tail) = split_columns(rest)?;
    let tail = tail
        .strip_suffix(";\n")
        .or_else(|| tail.strip_suffix(';'))?;
    if !matches!(tail, "" | " DEFERRABLE" | " DEFERRABLE INITIALLY DEFERRED") {
        return None;
    }
    Some([
        format!("CREATE UNIQUE INDEX {name} ON {table} USING btree ({columns})"),
        format!("ALTER TABLE ONLY {table} ADD CONSTRAINT {name} {kind} USING INDEX {name}{tail}"),
    ])
}

/// A leading SQL identifier (plain lower-case, or double-quoted with `""` inside) and the rest.
fn split_identifier(s: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut i = 0;
        let b = quoted.as_bytes();
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some(s.split_at(i + 2));
            }
            i += 1;
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// A column list `a, "B c"` up to its closing parenthesis: the list and what follows it.
/// Only plain identifiers separated by `, `: anything else is not pg_dump's simple form.
fn split_columns(s: &str) -> Option<(&str, &str)> {
    let mut rest = s;
    loop {
        let (_, after) = split_identifier(rest)?;
        if let Some(tail) = after.strip_prefix(')') {
            let len = s.len() - after.len();
            return Some((&s[..len], tail));
        }
        rest = after.strip_prefix(", ")?;
    }
}

/// The statements that create an entry's object (its schema part), without ownership.
/// `blob_metadata` finds the BLOB METADATA entry a `LARGE OBJECTS` ACL applies to.
pub fn definition<'a>(
    entry: &TocEntry,
    no_owner: bool,
    blob_metadata: impl Fn(i32) -> Option<&'a TocEntry>,
) -> Result<Vec<String>, EntrySqlError> {
    let defn = text(&entry.defn).unwrap_or_default();
    let desc = &entry.desc;
    if no_owner && desc.is("SCHEMA") && !defn.starts_with("--") {
        let tag = text(&entry.tag).unwrap_or_default();
        return Ok(vec![format!("CREATE SCHEMA {}", ident(&tag))]);
    }
    if desc.is("BLOB METADATA") {
        return Ok(per_blob(&defn, "SELECT pg_catalog.lo_create('", "')"));
    }
    if desc.is("ACL") && entry.tag.starts_with("LARGE OBJECTS") {
        let meta = entry
            .deps
            .first()
            .and_then(|&id| blob_metadata(id))
            .ok_or(EntrySqlError::AclWithoutBlobMetadata)?;
        let oids_defn = text(&meta.defn).unwrap_or_default();
        let mut v = Vec::new();
        for (first, second) in acl_halves(&defn) {
            v.extend(per_blob(&oids_defn, &first, &second));
        }
        return Ok(v);
    }
    if defn.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![defn])
}

/// The statements that give the object its owner (`ALTER ... OWNER TO`), if it has one.
pub fn ownership(entry: &TocEntry) -> Result<Vec<String>, EntrySqlError> {
    let owner = text(&entry.owner).unwrap_or_default();
    let drop = text(&entry.drop_stmt).unwrap_or_default();
    if owner.is_empty() || drop.is_empty() {
        return Ok(vec![]);
    }
    let desc = text(&entry.desc).unwrap_or_default();
    if desc == "BLOB METADATA" {
        let defn = text(&entry.defn).unwrap_or_default();
        let end = format!(" OWNER TO {}", ident(&owner));
        return Ok(per_blob(&defn, "ALTER LARGE OBJECT ", &end));
    }
    let object = object_description(entry)?;
    Ok(object
        .map(|o| format!("ALTER {o} OWNER TO {}", ident(&owner)))
        .into_iter()
        .collect())
}

/// How `ALTER ... OWNER TO` names the object of an entry; `None` for objects without an
/// owner of their own (`_getObjectDescription`).
fn object_description(entry: &TocEntry) -> Result<Option<String>, EntrySqlError> {
    let desc = text(&entry.desc).unwrap_or_default();
    let tag = text(&entry.tag).unwrap_or_default();
    let ns = text(&entry.namespace);
    const PLAIN: &[&str] = &[
        "COLLATION",
        "CONVERSION",
        "DOMAIN",
        "FOREIGN TABLE",
        "MATERIALIZED VIEW",
        "SEQUENCE",
        "STATISTICS",
        "TABLE",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH CONFIGURATION",
        "TYPE",
        "VIEW",
        "DATABASE",
        "PROCEDURAL LANGUAGE",
        "SCHEMA",
        "EVENT TRIGGER",
        "FOREIGN DATA WRAPPER",
        "SERVER",
        "PUBLICATION",
        "SUBSCRIPTION",
    ];
    const FROM_DROP: &[&str] = &[
        "AGGREGATE",
        "FUNCTION",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "PROCEDURE",
    ];
    const NO_OWNER: &[&str] = &[
        "CAST",
        "CHECK CONSTRAINT",
        "CONSTRAINT",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "FK CONSTRAINT",
        "INDEX",
        "RULE",
        "TRIGGER",
        "ROW SECURITY",
        "POLICY",
        "USER MAPPING",
    ];
    if PLAIN.contains(&desc.as_str()) {
        return Ok(Some(format!("{desc} {}", qualified(ns.as_deref(), &tag))));
    }
    if desc == "BLOB" {
        return Ok(Some(format!("LARGE OBJECT {tag}")));
    }
    if FROM_DROP.contains(&desc.as_str()) {
        let drop = text(&entry.drop_stmt).unwrap_or_default();
        let rest = drop.strip_prefix("DROP ").unwrap_or(&drop);
        return Ok(Some(rest.trim_end_matches(['\n', ';']).to_string()));
    }
    if NO_OWNER.contains(&desc.as_str()) {
        return Ok(None);
    }
    Err(EntrySqlError::UnknownOwnerKind(desc))
}

/// The statements `--clean` sends for an entry, with `IF EXISTS` added for `--if-exists`.
/// The second value is a warning when no place for `IF EXISTS` was found (the statement is
/// then sent unchanged, as pg_restore does).
pub fn drop_statements(entry: &TocEntry, if_exists: bool) -> (Vec<String>, Option<String>) {
    let drop = text(&entry.drop_stmt).unwrap_or_default();
    let desc = text(&entry.desc).unwrap_or_default();
    if desc == "BLOB METADATA" {
        let defn = text(&entry.defn).unwrap_or_default();
        let v = if if_exists {
            per_blob(
                &defn,
                "SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata \
                 WHERE oid = '",
                "'",
            )
        } else {
            per_blob(&defn, "SELECT pg_catalog.lo_unlink('", "')")
        };
        return (v, None);
    }
    if drop.is_empty() {
        return (vec![], None);
    }
    if !if_exists || drop.starts_with("--") {
        return (vec![drop], None);
    }
    if desc == "BLOB" {
        let oid = text(&entry.oid).unwrap_or_default();
        return (
            vec![format!(
                "SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata \
                 WHERE oid = '{oid}'"
            )],
            None,
        );
    }
    let (prefix, rest) = match drop.strip_prefix("ALTER TABLE") {
        Some(rest) => ("ALTER TABLE IF EXISTS", rest),
        None => ("", drop.as_str()),
    };
    if desc == "DEFAULT"
        || desc == "DATABASE PROPERTIES"
        || rest.starts_with("CREATE OR REPLACE VIEW")
    {
        return (vec![format!("{prefix}{rest}")], None);
    }
    let keyword = if matches!(
        desc.as_str(),
        "CONSTRAINT" | "CHECK CONSTRAINT" | "FK CONSTRAINT"
    ) {
        "DROP CONSTRAINT".to_string()
    } else {
        format!("DROP {desc}")
    };
    match rest.find(&keyword) {
        Some(at) => (
            vec![format!(
                "{prefix}{}{keyword} IF EXISTS{}",
                &rest[..at],
                &rest[at + keyword.len()..]
            )],
            None,
        ),
        None => (
            vec![format!("{prefix}{rest}")],
            Some(format!(
                "could not find where to insert IF EXISTS in statement {drop:?}"
            )),
        ),
    }
}

/// `ALTER TABLE ... SET ACCESS METHOD` for a partitioned table with a table AM (1.16).
pub fn partitioned_table_am(entry: &TocEntry) -> Option<String> {
    if entry.relkind != RELKIND_PARTITIONED_TABLE {
        return None;
    }
    let am = text(&entry.tableam)?;
    let tag = text(&entry.tag).unwrap_or_default();
    Some(format!(
        "ALTER TABLE {} SET ACCESS METHOD {}",
        qualified(text(&entry.namespace).as_deref(), &tag),
        ident(&am)
    ))
}

/// Whether a TABLE DATA entry loads through its partition root (then no TRUNCATE may precede
/// it): the mark pg_dump leaves in defn, or a copyStmt that names another table.
/// `COPY ... FROM stdin;` (pg_dump's copy statement, a carrier) with `WITH (FREEZE)`; None
/// when the statement is not of that form.
pub fn copy_with_freeze(copy: &str) -> Option<String> {
    let body = copy.trim_end().strip_suffix(';')?;
    body.ends_with(" FROM stdin")
        .then(|| format!("{body} WITH (FREEZE);\n"))
}

/// Whether TABLE DATA `entry` belongs to a plain table (a TABLE entry: not a foreign table,
/// whose COPY FREEZE the server refuses).
pub fn owner_is_plain_table<'a>(
    entry: &TocEntry,
    by_id: impl Fn(i32) -> Option<&'a TocEntry>,
) -> bool {
    entry
        .deps
        .first()
        .and_then(|&id| by_id(id))
        .is_some_and(|t| t.desc.is("TABLE"))
}

pub fn loads_via_partition_root(entry: &TocEntry) -> bool {
    if entry.defn.starts_with("-- load via partition root ") {
        return true;
    }
    match text(&entry.copy_stmt) {
        Some(copy) if !copy.is_empty() => {
            let tag = text(&entry.tag).unwrap_or_default();
            let ns = text(&entry.namespace);
            let quoted = format!("COPY {} ", qualified(ns.as_deref(), &tag));
            let plain = format!("COPY {} ", pg_style_qualified(ns.as_deref(), &tag));
            !(copy.starts_with(&quoted) || copy.starts_with(&plain))
        }
        _ => false,
    }
}

/// Qualified name quoted only where pg_dump's fmtId would quote (lower-case letters, digits,
/// underscores, not starting with a digit); keywords are not detected, so a keyword-named
/// table is merely treated as "not sure" by [`loads_via_partition_root`].
fn pg_style_qualified(ns: Option<&str>, name: &str) -> String {
    fn one(s: &str) -> String {
        let simple = !s.is_empty()
            && !s.as_bytes()[0].is_ascii_digit()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if simple {
            s.to_string()
        } else {
            ident(s)
        }
    }
    match ns {
        Some(ns) if !ns.is_empty() => format!("{}.{}", one(ns), one(name)),
        _ => one(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::toc::Section;

    fn entry(desc: &str, ns: Option<&str>, tag: &str, defn: &str, drop: &str) -> TocEntry {
        TocEntry {
            dump_id: 7,
            had_dumper: false,
            table_oid: "0".into(),
            oid: "16400".into(),
            tag: tag.into(),
            desc: desc.into(),
            section: Section::PreData.code(),
            defn: defn.into(),
            drop_stmt: drop.into(),
            copy_stmt: TocStr::NULL,
            namespace: ns.map_or(TocStr::NULL, TocStr::from),
            tablespace: TocStr::NULL,
            tableam: TocStr::NULL,
            relkind: 0,
            owner: "fixture_owner".into(),
            with_oids: "false".into(),
            deps: vec![],
            filename: "".into(),
        }
    }

    #[test]
    fn simple_key_constraints_are_built_through_their_index() {
        let pk = "ALTER TABLE ONLY public.big\n    ADD CONSTRAINT big_pkey PRIMARY KEY (id);\n";
        assert_eq!(
            index_backed(pk).unwrap(),
            [
                "CREATE UNIQUE INDEX big_pkey ON public.big USING btree (id)".to_string(),
                "ALTER TABLE ONLY public.big ADD CONSTRAINT big_pkey PRIMARY KEY USING INDEX \
                 big_pkey"
                    .to_string()
            ]
        );
        let uq = "ALTER TABLE ONLY \"S\".\"T x\"\n    ADD CONSTRAINT \"u \"\"q\"\"\" UNIQUE \
                  (a, \"B c\") DEFERRABLE INITIALLY DEFERRED;\n";
        let [create, alter] = index_backed(uq).unwrap();
        assert_eq!(
            create,
            "CREATE UNIQUE INDEX \"u \"\"q\"\"\" ON \"S\".\"T x\" USING btree (a, \"B c\")"
        );
        assert!(alter.ends_with("UNIQUE USING INDEX \"u \"\"q\"\"\" DEFERRABLE INITIALLY DEFERRED"));
        for other in [
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (id) INCLUDE (v);\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (id) WITH (fillfactor='50');\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c UNIQUE NULLS NOT DISTINCT (id);\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (id, p WITHOUT OVERLAPS);\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (id) USING INDEX TABLESPACE x;\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c EXCLUDE USING gist (r WITH &&);\n",
            "ALTER TABLE ONLY t\n    ADD CONSTRAINT c CHECK ((x > 0));\n",
            "ALTER TABLE t\n    ADD CONSTRAINT c PRIMARY KEY (id);\n",
        ] {
            assert_eq!(index_backed(other), None, "{other}");
        }
    }

    #[test]
    fn if_exists_goes_where_pg_restore_puts_it() {
        let t = entry("TABLE", Some("app"), "t", "", "DROP TABLE app.t;\n");
        assert_eq!(
            drop_statements(&t, true).0,
            ["DROP TABLE IF EXISTS app.t;\n"]
        );
        assert_eq!(drop_statements(&t, false).0, ["DROP TABLE app.t;\n"]);
        let c = entry(
            "FK CONSTRAINT",
            Some("app"),
            "t fk",
            "",
            "ALTER TABLE ONLY app.t DROP CONSTRAINT fk;\n",
        );
        assert_eq!(
            drop_statements(&c, true).0,
            ["ALTER TABLE IF EXISTS ONLY app.t DROP CONSTRAINT IF EXISTS fk;\n"]
        );
        let d = entry(
            "DEFAULT",
            Some("app"),
            "t id",
            "",
            "ALTER TABLE app.t ALTER COLUMN id DROP DEFAULT;\n",
        );
        assert_eq!(
            drop_statements(&d, true).0,
            ["ALTER TABLE IF EXISTS app.t ALTER COLUMN id DROP DEFAULT;\n"]
        );
        let public = entry(
            "SCHEMA",
            None,
            "public",
            "-- *not* creating",
            "-- *not* dropping",
        );
        assert_eq!(drop_statements(&public, true).0, ["-- *not* dropping"]);
        let odd = entry("TABLE", Some("app"), "t", "", "DELETE FROM x;");
        let (stmts, warning) = drop_statements(&odd, true);
        assert_eq!(stmts, ["DELETE FROM x;"]);
        assert!(warning.is_some());
    }

    #[test]
    fn large_objects_get_one_command_each() {
        let meta = entry(
            "BLOB METADATA",
            None,
            "1..2",
            "424242\n424243\n",
            "-- dummy",
        );
        assert_eq!(
            definition(&meta, false, |_| None).unwrap(),
            [
                "SELECT pg_catalog.lo_create('424242')",
                "SELECT pg_catalog.lo_create('424243')"
            ]
        );
        assert_eq!(
            ownership(&meta).unwrap(),
            [
                "ALTER LARGE OBJECT 424242 OWNER TO \"fixture_owner\"",
                "ALTER LARGE OBJECT 424243 OWNER TO \"fixture_owner\""
            ]
        );
        assert_eq!(drop_statements(&meta, false).0.len(), 2);
        let mut acl = entry(
            "ACL",
            None,
            "LARGE OBJECTS 424242..424243",
            "GRANT SELECT ON LARGE OBJECT 424242 TO \"LARGE OBJECT 1\";\nREVOKE ALL ON LARGE OBJECT 424242 FROM x;\n",
            "",
        );
        acl.deps = vec![9];
        let got = definition(&acl, false, |id| (id == 9).then_some(&meta)).unwrap();
        assert_eq!(
            got,
            [
                "GRANT SELECT ON LARGE OBJECT 424242 TO \"LARGE OBJECT 1\"",
                "GRANT SELECT ON LARGE OBJECT 424243 TO \"LARGE OBJECT 1\"",
                "REVOKE ALL ON LARGE OBJECT 424242 FROM x",
                "REVOKE ALL ON LARGE OBJECT 424243 FROM x"
            ]
        );
        assert_eq!(
            blob_oids("1\n2"),
            ["1"],
            "an unterminated last line is ignored"
        );
    }

    #[test]
    fn owners_are_set_per_object_kind() {
        let t = entry("TABLE", Some("app"), "my \"t\"", "CREATE", "DROP TABLE x;");
        assert_eq!(
            ownership(&t).unwrap(),
            ["ALTER TABLE \"app\".\"my \"\"t\"\"\" OWNER TO \"fixture_owner\""]
        );
        let f = entry(
            "FUNCTION",
            Some("app"),
            "f(integer)",
            "CREATE",
            "DROP FUNCTION app.f(integer);\n",
        );
        assert_eq!(
            ownership(&f).unwrap(),
            ["ALTER FUNCTION app.f(integer) OWNER TO \"fixture_owner\""]
        );
        let i = entry(
            "INDEX",
            Some("app"),
            "i",
            "CREATE INDEX",
            "DROP INDEX app.i;",
        );
        assert!(ownership(&i).unwrap().is_empty());
        let none = entry("TABLE", Some("app"), "t", "CREATE", "");
        assert!(
            ownership(&none).unwrap().is_empty(),
            "no dropStmt, no owner"
        );
        let odd = entry("GADGET", None, "g", "CREATE", "DROP GADGET g;");
        assert!(ownership(&odd).is_err());
    }

    #[test]
    fn no_owner_drops_the_authorization_of_create_schema() {
        let s = entry(
            "SCHEMA",
            None,
            "app",
            "CREATE SCHEMA app AUTHORIZATION x;",
            "DROP SCHEMA app;",
        );
        assert_eq!(
            definition(&s, true, |_| None).unwrap(),
            ["CREATE SCHEMA \"app\""]
        );
        assert_eq!(
            definition(&s, false, |_| None).unwrap(),
            ["CREATE SCHEMA app AUTHORIZATION x;"]
        );
    }

    #[test]
    fn session_state_sends_only_changes() {
        let mut s = SessionState::new(false);
        let mut t = entry("TABLE", Some("app"), "t", "CREATE", "DROP");
        t.tablespace = "".into();
        t.tableam = "heap".into();
        assert_eq!(
            s.enter(&t),
            [
                "SET search_path = \"app\", pg_catalog",
                "SET default_tablespace = ''",
                "SET default_table_access_method = \"heap\""
            ]
        );
        assert!(s.enter(&t).is_empty());
        let mut fixed = SessionState::new(true);
        assert_eq!(
            fixed.enter(&t).len(),
            2,
            "SEARCHPATH entry: no per-entry search_path"
        );
    }

    #[test]
    fn partition_root_loads_are_recognised() {
        let mut d = entry("TABLE DATA", Some("app"), "orders", "", "");
        d.copy_stmt = "COPY app.orders (id) FROM stdin;\n".into();
        assert!(!loads_via_partition_root(&d));
        d.copy_stmt = "COPY app.measurements (id) FROM stdin;\n".into();
        assert!(loads_via_partition_root(&d));
        d.copy_stmt = "COPY app.orders (id) FROM stdin;\n".into();
        d.defn = "-- load via partition root app.m".into();
        assert!(loads_via_partition_root(&d));
    }
}
