//! Issue 19: a restored database proven equal to its archive, without the source: content
//! digests recorded at dump time, `pgarc verify --against` and `pgarc restore --verify`.

use std::path::Path;

use crate::util::{newest_bindir, read_manifest, run_ok, Cluster};

/// A table of every common type, NULLs in every column, text that needs COPY's escapes;
/// in a database whose own settings differ from the server's defaults (a time zone, bytea
/// output, DateStyle), so that a check on another database (whose sessions start with the
/// server's defaults) must copy under the settings the archive recorded.
const TYPES_SQL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE TABLE every_type (
    id serial PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, num numeric, f4 float4, f8 float8, ok bool,
    t text, vc varchar(20), ch char(5), by bytea,
    d date, tm time, tmz timetz, ts timestamp, tsz timestamptz, iv interval,
    u uuid, js json, jb jsonb, x xml,
    ip inet, net cidr, mac macaddr, cash money,
    ia int[], ta text[], comp pair, m mood,
    r int4range, tr tstzrange, mr int4multirange,
    pt point, bx box, pg polygon, bits bit(4), vb varbit, tv tsvector, o oid
);
INSERT INTO every_type (i2, i4, i8, num, f4, f8, ok, t, vc, ch, by, d, tm, tmz, ts, tsz, iv,
    u, js, jb, x, ip, net, mac, cash, ia, ta, comp, m, r, tr, mr, pt, bx, pg, bits, vb, tv, o)
SELECT g % 300, g * 7, g::int8 * 100000000000, g / 7.0, g / 3.0, (g / 3.0)::float8 * 1e-300,
       g % 2 = 0, E'tab\there\nnewline \\ back ' || g || ' é 日本', 'vc' || g, 'c' || (g % 10),
       decode(md5(g::text), 'hex'), date '2000-01-01' + g, time '10:00' + g * interval '1 s',
       timetz '10:00+02' + g * interval '1 s', timestamp '2001-02-03 04:05:06.789' + g * interval '1 h',
       timestamptz '2001-02-03 04:05:06.789+00' + g * interval '1 h', g * interval '1 day 2 min',
       md5(g::text)::uuid, json_build_object('k', g, 'a', json_build_array(1, 'x')),
       jsonb_build_object('k', g, 'n', null), xmlelement(name e, g), ('10.0.' || (g % 250) || '.1')::inet,
       '10.1.0.0/16', '08:00:2b:01:02:03', g * 1.25, ARRAY[g, g + 1, NULL], ARRAY['a"b', NULL, 'c,d'],
       ROW(g, 'p' || g)::pair, (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, int4range(g, g + 10),
       tstzrange(timestamptz '2020-01-01 00:00+00' + g * interval '1 min', NULL),
       int4multirange(int4range(1, 3), int4range(g + 5, g + 9)), point(g, -g), box(point(0, 0), point(g, g)),
       polygon(box(point(0, 0), point(1, g))), (g % 16)::bit(4), (g % 5)::bit(3)::varbit,
       to_tsvector('simple', 'word' || g || ' other'), g
FROM generate_series(1, 2000) g;
INSERT INTO every_type (id) VALUES (100000);
INSERT INTO every_type (f4, f8, num) VALUES ('NaN', '-Infinity', 'NaN'), ('-0', '1e308', '-0.000');
"#;

fn database_settings(cluster: &Cluster, db: &str) {
    cluster.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {db} SET timezone = 'Asia/Kolkata';
             ALTER DATABASE {db} SET bytea_output = 'escape';
             ALTER DATABASE {db} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {db} SET IntervalStyle = 'iso_8601';
             ALTER DATABASE {db} SET extra_float_digits = 0;"
        ),
    );
}

/// Runs `pgarc verify ARCHIVE --against -d DB` (more `args`), returning exit code and stdout.
fn against(cluster: &Cluster, archive: &Path, db: &str, args: &[&str]) -> (i32, String) {
    let out = cluster
        .pgarc()
        .arg("verify")
        .arg(archive)
        .args(["--against", "-d", db])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

fn assert_equal(cluster: &Cluster, archive: &Path, db: &str, what: &str) {
    let (code, out) = against(cluster, archive, db, &["-j", "3", "--split-size", "64kB"]);
    assert_eq!(code, 0, "{what}: {out}");
    assert!(out.contains("EQUAL"), "{what}: {out}");
}

/// Acceptance 1: the fixtures and a table of every common type, by the three routes.
#[test]
fn fixtures_and_every_type_verify_equal_by_every_route() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    cluster.psql("src", TYPES_SQL);
    database_settings(&cluster, "src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "3", "--split-size", "64kB"]);
    let m = read_manifest(&archive);
    assert_eq!(m.format.to_string(), "3.0");
    let settings = m.settings.expect("format 3 records the COPY settings");
    assert_eq!(
        settings.timezone, "Asia/Kolkata",
        "the dump's own time zone"
    );
    assert_eq!(settings.bytea_output, "escape");
    assert_eq!(
        settings.datestyle, "ISO, DMY",
        "pinned to ISO as pg_dump does"
    );
    assert!(m.tables.iter().all(|t| t.rows_sum.is_some()));
    // The source itself equals its archive.
    assert_equal(&cluster, &archive, "src", "the source");

    // pgarc dump -> pgarc restore --verify, with a report.
    cluster.create_db("by_pgarc");
    let report = work.path().join("report.json");
    let out = run_ok(
        cluster
            .pgarc()
            .args([
                "restore", "-j", "3", "--verify", "-d", "by_pgarc", "--report",
            ])
            .arg(&report)
            .arg(&archive)
            .env("PGARC_PROGRESS_INTERVAL", "0.01"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EQUAL"), "{stderr}");
    // Progress covers the check too.
    assert!(
        stderr.lines().any(|l| l.starts_with("pgarc: verify: ")),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["verify"]["status"], "equal", "{json}");
    crate::interface::validate(&report);
    assert!(json["verify"]["tables"].as_u64().unwrap() > 5, "{json}");

    // pgarc dump -> stock pg_restore -> verify --against.
    cluster.create_db("by_pg_restore");
    run_ok(
        cluster
            .client("pg_restore")
            .args(["-j", "3", "-d", "by_pg_restore"])
            .arg(&archive),
    );
    assert_equal(&cluster, &archive, "by_pg_restore", "pg_restore of pgarc's");

    // stock pg_dump -Fd -> pgarc restore -> verify --against (digests from the data files;
    // pg_dump's settings, the server's time zone: the same as the source's here, since the
    // source's database setting applies to pg_dump's session too).
    let stock = work.path().join("stock");
    run_ok(
        cluster
            .client("pg_dump")
            .args(["-Fd", "-d", "src", "-f"])
            .arg(&stock),
    );
    cluster.create_db("from_stock");
    database_settings(&cluster, "from_stock");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-j", "3", "-d", "from_stock"])
            .arg(&stock),
    );
    let (code, out) = against(&cluster, &stock, "from_stock", &["-j", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("computed from its data files"), "{out}");
    // And restore --verify of the stock archive.
    cluster.create_db("from_stock_verified");
    database_settings(&cluster, "from_stock_verified");
    let out = run_ok(
        cluster
            .pgarc()
            .args([
                "restore",
                "-j",
                "2",
                "--verify",
                "-d",
                "from_stock_verified",
            ])
            .arg(&stock),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("EQUAL"));
}

/// Acceptance 2: each kind of change after a restore is found and named (exit 1); row order
/// alone is not a difference.
#[test]
fn every_kind_of_change_is_found_and_named() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE plain (id int, a text, b text, n text);
         INSERT INTO plain SELECT g, 'a' || g, 'b' || g, CASE WHEN g % 2 = 0 THEN NULL ELSE 'n' END
           FROM generate_series(1, 5000) g;
         CREATE TABLE keyed (id int PRIMARY KEY, v int);
         INSERT INTO keyed SELECT g, g * 3 FROM generate_series(1, 20000) g;
         CREATE TABLE other (x int); INSERT INTO other VALUES (1), (2);
         CREATE SEQUENCE seq; SELECT nextval('seq'), nextval('seq');
         SELECT lo_from_bytea(4242, 'large object bytes');",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "2"]);
    cluster.create_db("restored");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-d", "restored"])
            .arg(&archive),
    );
    assert_equal(&cluster, &archive, "restored", "as restored");
    let cases: &[(&str, &str, &str)] = &[
        (
            "a value",
            "UPDATE plain SET a = 'changed' WHERE id = 17",
            "table public.plain: DIFFERENT",
        ),
        (
            "a row deleted",
            "DELETE FROM plain WHERE id = 18",
            "table public.plain: DIFFERENT: 4999 rows, the archive has 5000",
        ),
        (
            "a row duplicated",
            "INSERT INTO plain SELECT * FROM plain WHERE id = 19",
            "table public.plain: DIFFERENT: 5001 rows",
        ),
        (
            "values swapped between columns",
            "UPDATE plain SET a = b, b = a WHERE id = 20",
            "table public.plain: DIFFERENT: 5000 rows as in the archive",
        ),
        (
            "NULL to empty string",
            "UPDATE plain SET n = '' WHERE id = 22",
            "table public.plain: DIFFERENT",
        ),
        (
            "a trailing space",
            "UPDATE plain SET a = a || ' ' WHERE id = 23",
            "table public.plain: DIFFERENT",
        ),
        (
            "a large object's byte",
            "SELECT lo_put(4242, 3, 'X')",
            "large object 4242: DIFFERENT",
        ),
        (
            "a sequence advanced",
            "SELECT nextval('seq')",
            "sequence public.seq: DIFFERENT: last_value 3",
        ),
        (
            "a table dropped",
            "DROP TABLE other",
            "table public.other: MISSING",
        ),
        (
            "an extra table",
            "CREATE TABLE surplus (y int)",
            "table public.surplus: EXTRA",
        ),
        (
            "a column dropped",
            "ALTER TABLE keyed DROP COLUMN v",
            "table public.keyed: DIFFERENT: its rows cannot be read",
        ),
    ];
    for (i, (what, sql, expect)) in cases.iter().enumerate() {
        let db = format!("changed{i}");
        cluster.psql(
            "postgres",
            &format!("CREATE DATABASE {db} TEMPLATE restored"),
        );
        cluster.psql(&db, sql);
        let report = work.path().join(format!("r{i}.json"));
        let report_arg = report.to_str().unwrap();
        let (code, out) = against(
            &cluster,
            &archive,
            &db,
            &["-j", "2", "--split-size", "64kB", "--report", report_arg],
        );
        assert_eq!(code, 1, "{what}: {out}");
        crate::interface::validate(&report);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(json["verify"]["status"], "different", "{json}");
        assert!(
            json["verify"]["differences"][0]
                .as_str()
                .unwrap()
                .contains(expect),
            "{json}"
        );
        assert!(out.contains(expect), "{what}: expected {expect:?} in {out}");
        assert!(out.contains("DIFFERENT: database"), "{what}: {out}");
        // Only the changed object is named.
        let named = out
            .lines()
            .filter(|l| {
                l.contains(": table ") || l.contains(": sequence ") || l.contains(": large object ")
            })
            .count();
        assert_eq!(named, 1, "{what}: {out}");
    }
    // Row order alone: CLUSTER and VACUUM FULL rewrite the tables in another order.
    cluster.psql("postgres", "CREATE DATABASE reordered TEMPLATE restored");
    cluster.psql("reordered", "CREATE INDEX keyed_v_desc ON keyed (v DESC)");
    cluster.psql("reordered", "CLUSTER keyed USING keyed_v_desc");
    cluster.psql("reordered", "UPDATE plain SET a = a WHERE id % 3 = 0");
    cluster.psql("reordered", "VACUUM FULL plain");
    assert_ne!(
        cluster
            .psql("reordered", "SELECT id FROM keyed LIMIT 1")
            .trim(),
        cluster
            .psql("restored", "SELECT id FROM keyed LIMIT 1")
            .trim(),
        "the rows are in another physical order"
    );
    assert_ne!(
        cluster
            .psql("reordered", "SELECT id FROM plain LIMIT 3")
            .trim(),
        cluster
            .psql("restored", "SELECT id FROM plain LIMIT 3")
            .trim(),
        "the rows are in another physical order"
    );
    assert_equal(&cluster, &archive, "reordered", "reordered rows");
}

/// Acceptance 5: the same data gives the same table digests whatever the split size, the
/// frame size and the number of workers; and a check reading with other splits agrees.
#[test]
fn digests_do_not_depend_on_split_frames_or_workers() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE wide AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 30000) g;",
    );
    let work = tempfile::tempdir().unwrap();
    let mut sums: Vec<Vec<(String, String, u64)>> = Vec::new();
    for (n, args) in [
        &["-j", "1"][..],
        &["-j", "3", "--split-size", "64kB"],
        &["-j", "4", "--split-size", "200kB", "--frame-size", "4kB"],
        &["-j", "2", "-Z", "gzip:1"],
        // No digests in the archive (format 2.0): --against computes them from the data.
        &["-j", "2", "--no-digest"],
    ]
    .iter()
    .enumerate()
    {
        let archive = work.path().join(format!("a{n}"));
        let summary = cluster.pgarc_dump("src", &archive, args);
        if args.contains(&"64kB") {
            assert!(summary.contains("split table public.wide"), "{summary}");
        }
        let m = read_manifest(&archive);
        if args.contains(&"--no-digest") {
            assert_eq!(m.format.to_string(), "2.0");
            assert!(m.settings.is_none() && m.tables.iter().all(|t| t.rows_sum.is_none()));
        } else {
            let mut tables: Vec<(String, String, u64)> = m
                .tables
                .into_iter()
                .map(|t| {
                    (
                        format!("{}.{}", t.schema, t.name),
                        t.rows_sum.unwrap(),
                        t.rows,
                    )
                })
                .collect();
            tables.sort();
            sums.push(tables);
        }
        for j in ["1", "3"] {
            let (code, out) = against(
                &cluster,
                &archive,
                "src",
                &["-j", j, "--split-size", "100kB"],
            );
            assert_eq!(code, 0, "{args:?}, verify -j {j}: {out}");
            assert_eq!(
                out.contains("computed from its data files"),
                args.contains(&"--no-digest"),
                "{out}"
            );
        }
    }
    assert!(sums[0].len() > 5);
    for s in &sums[1..] {
        assert_eq!(s, &sums[0], "same data, same digests");
    }
}

/// Bad input: a check that cannot run exits 2 with one line naming the problem.
#[test]
fn a_check_that_cannot_run_exits_2_with_one_line() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql("src", "CREATE TABLE t AS SELECT 1 AS x");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &[]);
    for (what, args, expect) in [
        ("no such database", vec!["-d", "nonexistent"], "nonexistent"),
        (
            "unreachable server",
            vec!["-d", "src", "-h", "/nonexistent-dir", "-p", "1"],
            "could not connect",
        ),
    ] {
        let out = cluster
            .pgarc()
            .arg("verify")
            .arg(&archive)
            .arg("--against")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains(expect), "{what}: {stderr}");
    }
    let (code, out) = against(&cluster, work.path(), "src", &[]);
    assert_eq!(code, 2, "not an archive: {out}");
    // Connection options without --against are a mistake, not an offline check.
    let out = cluster
        .pgarc()
        .arg("verify")
        .arg(&archive)
        .args(["-d", "src"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--against"));
}

/// Acceptance 3: a PostgreSQL 14 dump of every common type, restored into 18, verifies equal
/// (no type's text output differs between the two; were one to, this test would name it).
#[test]
fn a_postgresql_14_dump_restored_into_18_verifies_equal() {
    let old_bin = crate::util::pg_bindir(14).expect("PostgreSQL 14: run scripts/install-deps.sh");
    let old = Cluster::start_in(&old_bin);
    let new = Cluster::start_in(&newest_bindir());
    assert!(new.version.major > 14);
    old.create_fixtures_db("src");
    old.psql("src", TYPES_SQL);
    database_settings(&old, "src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a14");
    old.pgarc_dump("src", &archive, &["-j", "2", "--split-size", "64kB"]);
    new.psql_file(
        "postgres",
        &crate::util::repo_root().join("fixtures/sql/roles.sql"),
    );
    // --create: the check reads the database the restore created (named as in the archive).
    let out = new
        .pgarc()
        .args(["restore", "-j", "2", "--verify", "-C", "-d", "postgres"])
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) {
        // Name the columns whose text differs: each type's text in both servers.
        let columns = old.psql(
            "src",
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ')
             FROM pg_attribute WHERE attrelid = 'every_type'::regclass AND attnum > 0",
        );
        panic!("14 -> 18 differs (types of every_type: {columns}): {stderr}");
    }
    assert!(stderr.contains("EQUAL: database \"src\""), "{stderr}");
}

/// A partial restore (-n) is checked for what it restored: the tables it left out are
/// not missing; a table the archive does not know still is extra.
#[test]
fn a_partial_restore_is_checked_for_what_it_restored() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "2"]);
    cluster.create_db("part");
    // As with pg_restore, -n restores what is in the schema, not the schema itself.
    cluster.psql("part", "CREATE SCHEMA app");
    let out = run_ok(
        cluster
            .pgarc()
            .args(["restore", "-n", "app", "--verify", "-d", "part"])
            .arg(&archive),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EQUAL"), "{stderr}");
    // Fewer tables than the archive has: only those restored were compared.
    let all = read_manifest(&archive).tables.len();
    let line = stderr.lines().find(|l| l.contains("EQUAL")).unwrap();
    let before = &line[..line.find(" tables (").unwrap()];
    let compared: usize = before.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        compared > 0 && compared < all,
        "{compared} of {all}: {stderr}"
    );
    cluster.create_db("part2");
    cluster.psql(
        "part2",
        "CREATE SCHEMA app; CREATE TABLE public.stray (x int)",
    );
    let out = cluster
        .pgarc()
        .args(["restore", "-n", "app", "--verify", "-d", "part2"])
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("table public.stray: EXTRA"), "{stderr}");
    assert!(!stderr.contains("MISSING"), "{stderr}");
}
