//! Which tables a dump covers and which of them get their rows copied, with pg_dump's meanings
//! of `-n/-N/-t/-T/--exclude-table-data`, `-s/-a`, `--section` and `--no-unlogged-table-data`.
//!
//! The same options go to the stock pg_dump for the schema capture, so schema decisions are
//! pg_dump's own. pgarc must reach the same decision about which tables' rows it copies before
//! pg_dump has run, so the pattern rules are ported here: psql's `patternToSQLRegex` turns a
//! pattern into anchored regular expressions, matched in the server as pg_dump matches them
//! (`expand_schema_name_patterns`, `expand_table_name_patterns`), and the per-table decision
//! follows `selectDumpableNamespace`, `selectDumpableTable` and `makeTableDataInfo`
//! (PostgreSQL 18's `pg_dump.c`). A disagreement cannot lose rows: a table whose rows pgarc does
//! not copy keeps pg_dump's own data entry, since only the tables pgarc copies are named in the
//! `--exclude-table-data` patterns it adds.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::pg::session::{literal, query_text, CatalogTable};

/// The selection options of `pgarc dump`, as pg_dump spells them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DumpSelection {
    pub schemas: Vec<String>,
    pub exclude_schemas: Vec<String>,
    pub tables: Vec<String>,
    pub exclude_tables: Vec<String>,
    pub exclude_table_data: Vec<String>,
    pub schema_only: bool,
    pub data_only: bool,
    /// `--section`s given; empty means all three.
    pub sections: Vec<String>,
    pub no_unlogged_table_data: bool,
    pub strict_names: bool,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub no_comments: bool,
    pub large_objects: bool,
    pub no_large_objects: bool,
    pub serializable_deferrable: bool,
    pub verbose: bool,
}

impl DumpSelection {
    fn section(&self, name: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == name)
    }

    /// Whether table rows are dumped at all (pg_dump: `dumpData` and the data section).
    pub fn copies_data(&self) -> bool {
        !self.schema_only && self.section("data")
    }

    /// Whether pg_dump's archive holds TABLE entries that the TABLE DATA entries depend on;
    /// without them (`-a`, `--section=data`) pgarc writes its data entries from the catalog.
    pub fn writes_table_entries(&self) -> bool {
        !self.data_only && self.section("pre-data")
    }

    /// The same options for pg_dump (the selection patterns in argv, as pg_dump takes them).
    pub fn pg_dump_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let lists: [(&str, &Vec<String>); 5] = [
            ("--schema", &self.schemas),
            ("--exclude-schema", &self.exclude_schemas),
            ("--table", &self.tables),
            ("--exclude-table", &self.exclude_tables),
            ("--exclude-table-data", &self.exclude_table_data),
        ];
        for (flag, values) in lists {
            for v in values {
                args.push(format!("{flag}={v}"));
            }
        }
        for s in &self.sections {
            args.push(format!("--section={s}"));
        }
        let flags = [
            (self.schema_only, "--schema-only"),
            (self.data_only, "--data-only"),
            (self.no_unlogged_table_data, "--no-unlogged-table-data"),
            (self.strict_names, "--strict-names"),
            (self.no_owner, "--no-owner"),
            (self.no_privileges, "--no-privileges"),
            (self.no_comments, "--no-comments"),
            // -b and -B: pg_dump 15 spells the long forms --blobs and --no-blobs.
            (self.large_objects, "-b"),
            (self.no_large_objects, "-B"),
            (self.serializable_deferrable, "--serializable-deferrable"),
            (self.verbose, "--verbose"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        args
    }
}

/// A psql pattern as anchored regular expressions: `name`, and `schema` and `db` when the
/// pattern has that many dot-separated parts. `dots` counts every separator seen, including
/// those beyond the parts the caller asked for (an error for the caller to report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    pub db: Option<String>,
    pub schema: Option<String>,
    pub name: String,
    pub dots: usize,
}

/// psql's pattern rules (`patternToSQLRegex`): outside double quotes, letters fold to lower
/// case, `*` is `.*`, `?` is `.`, `.` separates parts and other regular-expression characters
/// keep their meaning; inside double quotes every character is literal and `""` is one `"`.
/// `$` is always literal, and so is `[` before `]`. `parts` is 1 (name), 2 (schema.name) or 3
/// (db.schema.name); the database part is returned as literal text, not a regular expression.
pub fn parse_pattern(pattern: &str, parts: usize) -> NamePattern {
    let chars: Vec<char> = pattern.chars().collect();
    let mut bufs = vec![String::from("^(")];
    let mut left = String::new();
    let mut in_left = parts == 3;
    let mut inquotes = false;
    let mut dots = 0;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        let full = bufs.len() >= parts;
        let cur = bufs.last_mut().expect("one buffer at least");
        if ch == '"' {
            if inquotes && chars.get(i + 1) == Some(&'"') {
                cur.push('"');
                if in_left {
                    left.push('"');
                }
                i += 1;
            } else {
                inquotes = !inquotes;
            }
            i += 1;
        } else if !inquotes && ch.is_ascii_uppercase() {
            cur.push(ch.to_ascii_lowercase());
            if in_left {
                left.push(ch.to_ascii_lowercase());
            }
            i += 1;
        } else if !inquotes && ch == '*' {
            cur.push_str(".*");
            if in_left {
                left.push('*');
            }
            i += 1;
        } else if !inquotes && ch == '?' {
            cur.push('.');
            if in_left {
                left.push('?');
            }
            i += 1;
        } else if !inquotes && ch == '.' {
            in_left = false;
            dots += 1;
            if full {
                cur.push('.');
            } else {
                cur.push_str(")$");
                bufs.push(String::from("^("));
            }
            i += 1;
        } else if ch == '$' {
            cur.push_str("\\$");
            if in_left {
                left.push('$');
            }
            i += 1;
        } else {
            let special = inquotes && "|*+?()[]{}.^$\\".contains(ch);
            if special || (ch == '[' && chars.get(i + 1) == Some(&']')) {
                cur.push('\\');
            }
            cur.push(ch);
            if in_left {
                left.push(ch);
            }
            i += 1;
        }
    }
    bufs.last_mut().expect("one buffer at least").push_str(")$");
    let name = bufs.pop().expect("one buffer at least");
    let schema = if parts >= 2 { bufs.pop() } else { None };
    let db = if parts == 3 && !bufs.is_empty() {
        Some(left)
    } else {
        None
    };
    NamePattern {
        db,
        schema,
        name,
        dots,
    }
}

/// `column ~ regex` with the database's collation, as pg_dump writes it; none for `.*`.
fn regex_clause(column: &str, regex: &str) -> Option<String> {
    (regex != "^(.*)$").then(|| {
        format!(
            "{column} OPERATOR(pg_catalog.~) {} COLLATE pg_catalog.default",
            literal(regex)
        )
    })
}

/// The query for the schemas a `-n`/`-N` pattern names (their names).
pub fn schema_query(pattern: &str) -> Result<String> {
    let p = parse_pattern(pattern, 1);
    if p.dots > 1 {
        bail!("improper qualified name (too many dotted names): {pattern}");
    } else if p.dots == 1 {
        // pg_dump compares the database part, which its parser leaves empty for a schema
        // pattern, with the current database: never equal.
        bail!("cross-database references are not implemented: {pattern}");
    }
    // The names as hex of their bytes: they are compared with the catalog's (carriers).
    let mut sql = String::from(
        "SELECT pg_catalog.encode(pg_catalog.convert_to(n.nspname::text, \
         pg_catalog.getdatabaseencoding()), 'hex') FROM pg_catalog.pg_namespace n",
    );
    if let Some(c) = regex_clause("n.nspname", &p.name) {
        sql.push_str(" WHERE ");
        sql.push_str(&c);
    }
    Ok(sql)
}

/// The query for the relations a `-t`/`-T`/`--exclude-table-data` pattern names (their OIDs):
/// tables, sequences, views, materialized views, foreign and partitioned tables; without a
/// schema part, only those visible in the search path.
pub fn table_query(pattern: &str, database: &str) -> Result<String> {
    let p = parse_pattern(pattern, 3);
    if p.dots > 2 {
        bail!("improper relation name (too many dotted names): {pattern}");
    }
    if let Some(db) = &p.db {
        if db != database {
            bail!("cross-database references are not implemented: {pattern}");
        }
    }
    let mut clauses = vec![
        "c.relkind OPERATOR(pg_catalog.=) ANY (array['r', 'S', 'v', 'm', 'f', 'p'])".to_string(),
    ];
    clauses.extend(regex_clause("c.relname", &p.name));
    match &p.schema {
        Some(s) => clauses.extend(regex_clause("n.nspname", s)),
        None => clauses.push("pg_catalog.pg_table_is_visible(c.oid)".into()),
    }
    Ok(format!(
        "SELECT c.oid FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n \
         ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE {}",
        clauses.join(" AND ")
    ))
}

/// The outcome: the tables the dump covers (to lock) and those whose rows pgarc copies:
/// plain tables that are not extension members (pg_dump handles extension configuration
/// tables, with their filters); partitioned tables hold no rows, their partitions do.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub dumped: Vec<CatalogTable>,
    pub data: Vec<CatalogTable>,
}

/// What the patterns matched in the server: schema names and relation OIDs. `None` for an
/// include list means the option was not given.
#[derive(Debug, Clone, Default)]
pub struct Matched {
    pub schema_include: Option<HashSet<String>>,
    pub schema_exclude: HashSet<String>,
    pub table_include: Option<HashSet<u32>>,
    pub table_exclude: HashSet<u32>,
    pub data_exclude: HashSet<u32>,
}

/// Decides, for every table of the catalog, as pg_dump would with the same options.
pub fn decide(sel: &DumpSelection, catalog: &[CatalogTable], m: &Matched) -> Resolved {
    let mut out = Resolved::default();
    for t in catalog {
        let dumped = match &m.table_include {
            Some(include) => include.contains(&t.oid),
            None => {
                m.schema_include
                    .as_ref()
                    .is_none_or(|s| s.contains(&t.schema))
                    && !m.schema_exclude.contains(&t.schema)
            }
        } && !m.table_exclude.contains(&t.oid);
        if !dumped {
            continue;
        }
        out.dumped.push(t.clone());
        let data = sel.copies_data()
            && t.relkind == 'r'
            && !t.extension_member
            && !(sel.no_unlogged_table_data && t.persistence == 'u')
            && !m.data_exclude.contains(&t.oid);
        if data {
            out.data.push(t.clone());
        }
    }
    out
}

async fn names(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(query_text(client, sql)
        .await
        .context("cannot match the selection patterns")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// Schema names (carriers) from a [`schema_query`].
async fn schema_names(client: &Client, sql: &str) -> Result<Vec<String>> {
    names(client, sql)
        .await?
        .iter()
        .map(|h| crate::pg::session::carrier_from_hex(h))
        .collect()
}

/// The OIDs of the relations `patterns` match; with `strict`, a pattern matching nothing is
/// pg_dump's error.
async fn table_oids(
    client: &Client,
    patterns: &[String],
    database: &str,
    strict: bool,
) -> Result<HashSet<u32>> {
    let mut found = HashSet::new();
    for p in patterns {
        let matched: Vec<u32> = names(client, &table_query(p, database)?)
            .await?
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        if strict && matched.is_empty() {
            bail!("no matching tables were found for pattern \"{p}\" (--strict-names): check -t");
        }
        found.extend(matched);
    }
    Ok(found)
}

/// Expands the patterns in the server (under the dump's snapshot, with the session's search
/// path) and decides. Errors as pg_dump's: `--strict-names` and a pattern matching nothing,
/// or include patterns that together match nothing.
pub async fn resolve(
    client: &Client,
    sel: &DumpSelection,
    database: &str,
    catalog: &[CatalogTable],
) -> Result<Resolved> {
    let mut schema_include: Option<HashSet<String>> = None;
    if !sel.schemas.is_empty() {
        let mut found = HashSet::new();
        for p in &sel.schemas {
            let matched = schema_names(client, &schema_query(p)?).await?;
            if sel.strict_names && matched.is_empty() {
                bail!(
                    "no matching schemas were found for pattern \"{p}\" (--strict-names): check -n"
                );
            }
            found.extend(matched);
        }
        if found.is_empty() {
            bail!("no matching schemas were found: check the -n patterns");
        }
        schema_include = Some(found);
    }
    let mut schema_exclude = HashSet::new();
    for p in &sel.exclude_schemas {
        schema_exclude.extend(schema_names(client, &schema_query(p)?).await?);
    }
    let mut table_include = None;
    if !sel.tables.is_empty() {
        let found = table_oids(client, &sel.tables, database, sel.strict_names).await?;
        if found.is_empty() {
            bail!("no matching tables were found: check the -t patterns");
        }
        table_include = Some(found);
    }
    let matched = Matched {
        schema_include,
        schema_exclude,
        table_include,
        table_exclude: table_oids(client, &sel.exclude_tables, database, false).await?,
        data_exclude: table_oids(client, &sel.exclude_table_data, database, false).await?,
    };
    Ok(decide(sel, catalog, &matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pattern: &str, parts: usize) -> (Option<String>, Option<String>, String, usize) {
        let r = parse_pattern(pattern, parts);
        (r.db, r.schema, r.name, r.dots)
    }

    #[test]
    fn patterns_follow_psql_rules() {
        assert_eq!(p("Foo*", 3), (None, None, "^(foo.*)$".into(), 0));
        assert_eq!(
            p("app.t?", 3),
            (None, Some("^(app)$".into()), "^(t.)$".into(), 1)
        );
        assert_eq!(
            p("\"Mixed Schema\".\"Ünïcødé Tåble\"", 3),
            (
                None,
                Some("^(Mixed Schema)$".into()),
                "^(Ünïcødé Tåble)$".into(),
                1
            )
        );
        // Inside quotes regular-expression characters are literal, and "" is one quote.
        assert_eq!(p("\"a.b*\"\"c\"", 3).2, "^(a\\.b\\*\"c)$");
        // Outside quotes they keep their meaning, except $ and [].
        assert_eq!(p("(a|b)", 1).2, "^((a|b))$");
        assert_eq!(p("a$", 1).2, "^(a\\$)$");
        assert_eq!(p("int[]", 1).2, "^(int\\[])$");
        assert_eq!(
            p("MyDb.s.t", 3),
            (Some("mydb".into()), Some("^(s)$".into()), "^(t)$".into(), 2)
        );
        assert_eq!(p("a.b.c.d", 3).3, 3);
        // A schema pattern has one part: a dot is counted and kept.
        assert_eq!(p("a.b", 1), (None, None, "^(a.b)$".into(), 1));
    }

    #[test]
    fn queries_match_like_pg_dump() {
        let q = table_query("app.*", "db").unwrap();
        assert!(
            q.contains("n.nspname OPERATOR(pg_catalog.~) '^(app)$'"),
            "{q}"
        );
        assert!(!q.contains("c.relname OPERATOR"), "{q}");
        let q = table_query("orders", "db").unwrap();
        assert!(q.contains("pg_table_is_visible"), "{q}");
        assert!(table_query("other.s.t", "db").is_err());
        assert!(table_query("db.s.t", "db").is_ok());
        assert!(table_query("a.b.c.d", "db").is_err());
        assert!(schema_query("a.b").is_err());
        let q = schema_query("it's").unwrap();
        assert!(q.contains("'^(it''s)$'"), "{q}");
    }

    fn table(oid: u32, schema: &str, name: &str, relkind: char, persistence: char) -> CatalogTable {
        CatalogTable {
            oid,
            schema: schema.into(),
            name: name.into(),
            relkind,
            persistence,
            owner: "o".into(),
            qualified: format!("{schema}.{name}"),
            columns: String::new(),
            heap_bytes: 0,
            table_bytes: 0,
            extension_member: false,
        }
    }

    #[test]
    fn tables_and_their_data_are_decided_like_pg_dump() {
        let catalog = vec![
            table(1, "a", "t1", 'r', 'p'),
            table(2, "a", "log", 'r', 'u'),
            table(3, "b", "t3", 'r', 'p'),
            table(4, "b", "parent", 'p', 'p'),
        ];
        let oids = |r: &Resolved| -> (Vec<u32>, Vec<u32>) {
            (
                r.dumped.iter().map(|t| t.oid).collect(),
                r.data.iter().map(|t| t.oid).collect(),
            )
        };
        let sel = DumpSelection::default();
        let none = Matched::default();
        let r = decide(&sel, &catalog, &none);
        assert_eq!(oids(&r), (vec![1, 2, 3, 4], vec![1, 2, 3]));
        // -n a -N a: the exclusion wins.
        let a: HashSet<String> = ["a".to_string()].into();
        let both = Matched {
            schema_include: Some(a.clone()),
            schema_exclude: a.clone(),
            ..Matched::default()
        };
        assert_eq!(oids(&decide(&sel, &catalog, &both)), (vec![], vec![]));
        // -t overrides -N; -T removes; --exclude-table-data keeps the table, not its rows.
        let t: HashSet<u32> = [1, 3].into();
        let t3: HashSet<u32> = [3].into();
        let m = Matched {
            schema_exclude: a,
            table_include: Some(t.clone()),
            data_exclude: t3.clone(),
            ..Matched::default()
        };
        assert_eq!(oids(&decide(&sel, &catalog, &m)), (vec![1, 3], vec![1]));
        let m = Matched {
            table_include: Some(t),
            table_exclude: t3,
            ..Matched::default()
        };
        assert_eq!(oids(&decide(&sel, &catalog, &m)), (vec![1], vec![1]));
        let unlogged = DumpSelection {
            no_unlogged_table_data: true,
            ..Default::default()
        };
        assert_eq!(oids(&decide(&unlogged, &catalog, &none)).1, vec![1, 3]);
        for sel in [
            DumpSelection {
                schema_only: true,
                ..Default::default()
            },
            DumpSelection {
                sections: vec!["pre-data".into(), "post-data".into()],
                ..Default::default()
            },
        ] {
            let r = decide(&sel, &catalog, &none);
            assert_eq!(oids(&r), (vec![1, 2, 3, 4], vec![]));
        }
    }

    #[test]
    fn options_reach_pg_dump_unchanged() {
        let sel = DumpSelection {
            schemas: vec!["app".into()],
            exclude_table_data: vec!["app.\"Big\"".into()],
            sections: vec!["data".into()],
            large_objects: true,
            strict_names: true,
            ..Default::default()
        };
        assert_eq!(
            sel.pg_dump_args(),
            [
                "--schema=app",
                "--exclude-table-data=app.\"Big\"",
                "--section=data",
                "--strict-names",
                "-b"
            ]
        );
        assert!(sel.copies_data() && !sel.writes_table_entries());
    }
}
