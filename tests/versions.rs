//! Issue 8: across PostgreSQL versions. Servers 14 to 18, stock pg_dump 14 to 18 archives,
//! and pg_restore 15 to 18 against what `pgarc list` and `pgarc verify` claim about pgarc's
//! archives. Every release is required: the test command installs them all.

use std::path::PathBuf;

use crate::util::{pg_bindir, repo_root, run_ok, Cluster, DbState};

const SERVERS: [u32; 5] = [14, 15, 16, 17, 18];
const NEWEST: u32 = 18;

fn bindir(major: u32) -> PathBuf {
    pg_bindir(major).unwrap_or_else(|| {
        panic!(
            "PostgreSQL {major} binaries are not installed: run scripts/install-deps.sh (the \
             version matrix needs 14 to 18)"
        )
    })
}

/// An identifier followed by a dot before another identifier (`orders.total`) loses the
/// qualifier: `total`. Numbers (`1000.5`) and quoted names are left alone.
fn unqualify(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    while i < b.len() {
        let starts = (b[i].is_ascii_lowercase() || b[i] == b'_') && (i == 0 || !ident(b[i - 1]));
        if starts {
            let mut j = i;
            while j < b.len() && ident(b[j]) {
                j += 1;
            }
            if j + 1 < b.len()
                && b[j] == b'.'
                && (b[j + 1].is_ascii_lowercase() || b[j + 1] == b'_')
            {
                i = j + 1;
                continue;
            }
            out.push_str(&line[i..j]);
            i = j;
            continue;
        }
        let ch = line[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The statements of a schema dump (comments and blank lines dropped), with the differences
/// that the server versions themselves make documented and taken out:
///
/// - from 14: PostgreSQL 15 changed the `public` schema (owned by `pg_database_owner`, no
///   CREATE for PUBLIC). A 14 database's `public` is dumped as `ALTER SCHEMA public OWNER TO
///   postgres` and `REVOKE USAGE ... GRANT ALL ON SCHEMA public TO PUBLIC`; pg_dump writes no
///   such entries for the restore to replay, so a newer server keeps its own default.
/// - from 14 and 15: view and rule definitions are deparsed by the server; before 16 it
///   qualifies columns with their table (`orders.total`), from 16 it does not (`total`).
fn statements(schema: &str, source_major: u32) -> Vec<String> {
    const PUBLIC_BEFORE_15: [&str; 3] = [
        "ALTER SCHEMA public OWNER TO postgres;",
        "REVOKE USAGE ON SCHEMA public FROM PUBLIC;",
        "GRANT ALL ON SCHEMA public TO PUBLIC;",
    ];
    schema
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .filter(|l| !(source_major < 15 && PUBLIC_BEFORE_15.contains(l)))
        .map(|l| {
            if source_major < 16 {
                unqualify(l)
            } else {
                l.to_string()
            }
        })
        .collect()
}

fn raw_statements(schema: &str) -> Vec<&str> {
    schema
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect()
}

/// Data, sequences, large objects and materialized views equal; the schema as documented.
fn assert_same_across_versions(source: &DbState, target: &DbState, source_major: u32, what: &str) {
    target.assert_same_data(source, what);
    assert_eq!(
        statements(&target.schema, source_major),
        statements(&source.schema, source_major),
        "schema: {what}"
    );
    // The documented differences are real, and only where documented.
    let raw_equal = raw_statements(&target.schema) == raw_statements(&source.schema);
    assert_eq!(
        raw_equal,
        source_major >= 16,
        "{what}: the schema text differs exactly when the versions make it differ"
    );
}

#[test]
fn the_fixtures_round_trip_on_every_server_version() {
    let newest = Cluster::start_in(&bindir(NEWEST));
    newest.psql_file("postgres", &repo_root().join("fixtures/sql/roles.sql"));
    let newest_bin = bindir(NEWEST);
    let work = tempfile::tempdir().unwrap();
    for major in SERVERS {
        let own;
        let cluster = if major == NEWEST {
            &newest
        } else {
            own = Cluster::start_in(&bindir(major));
            &own
        };
        assert_eq!(cluster.version.major, major);
        cluster.create_fixtures_db("fx");
        let expected = cluster.db_state("fx");
        let archive = work.path().join(format!("pg{major}"));
        // The server's own pg_dump; small chunks, so that app.orders is split by ctid.
        let summary = cluster.pgarc_dump("fx", &archive, &["-j", "3", "--split-size", "64kB"]);
        assert!(
            summary.contains("split table app.orders:"),
            "{major}: ctid ranges are used from 14: {summary}"
        );
        assert!(!summary.contains("no ctid split"), "{summary}");

        // pgarc restore into the same version.
        cluster.create_db("by_pgarc");
        run_ok(
            cluster
                .pgarc()
                .args(["restore", "-q", "-j", "3", "-d", "by_pgarc"])
                .arg(&archive),
        );
        cluster.assert_same_db(&expected, "by_pgarc");
        verify_against(
            cluster,
            &archive,
            "by_pgarc",
            &format!("{major}: pgarc restore"),
        );
        // The newest stock pg_restore, into the same version. pg_restore 17 and 18 send
        // `SET transaction_timeout = 0` whatever the server's version, so against 14 to 16 they
        // report that one error (and exit 1) and restore everything else: PostgreSQL's own
        // behaviour, checked here so that any other error still fails.
        cluster.create_db("by_pg_restore");
        let out = cluster
            .client_from(&newest_bin, "pg_restore")
            .args(["-j", "3", "-d", "by_pg_restore"])
            .arg(&archive)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if major >= 17 {
            assert!(out.status.success(), "{major}: {stderr}");
        } else {
            // One per session (-j 3: four).
            let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR:")).collect();
            assert!(!errors.is_empty(), "{major}: {stderr}");
            assert!(
                errors.iter().all(|l| l.ends_with(
                    "ERROR:  unrecognized configuration parameter \"transaction_timeout\""
                )),
                "{major}: {stderr}"
            );
        }
        cluster.assert_same_db(&expected, "by_pg_restore");
        verify_against(
            cluster,
            &archive,
            "by_pg_restore",
            &format!("{major}: pg_restore"),
        );

        if major == NEWEST {
            continue;
        }
        // Into the newest server: pgarc and stock pg_restore give the same database, and it
        // equals the source but for what the versions themselves change.
        let ours = format!("from{major}_by_pgarc");
        let theirs = format!("from{major}_by_pg_restore");
        newest.create_db(&ours);
        run_ok(
            newest
                .pgarc()
                .args(["restore", "-q", "-j", "3", "-d", &ours])
                .arg(&archive),
        );
        newest.create_db(&theirs);
        run_ok(
            newest
                .client("pg_restore")
                .args(["-j", "3", "-d", &theirs])
                .arg(&archive),
        );
        let got = newest.db_state(&ours);
        assert_eq!(
            got,
            newest.db_state(&theirs),
            "{major} -> {NEWEST}: pgarc vs pg_restore"
        );
        // Issue 19, acceptance 3: the archive of an older server, restored into the newest,
        // verifies equal by content digest: no type of the fixtures prints differently.
        verify_against(&newest, &archive, &ours, &format!("{major} -> {NEWEST}"));
        let source = cluster.db_state_with(&newest_bin, "fx");
        assert_same_across_versions(&source, &got, major, &format!("{major} -> {NEWEST}"));
    }
}

/// The pg_dump `-Z` values of a release: numeric gzip levels before 16, methods from 16 (lz4
/// and zstd where the build has them; every build installed here has both).
fn codecs(major: u32) -> &'static [&'static str] {
    if major < 16 {
        &["0", "6"]
    } else {
        &["none", "gzip", "zstd", "lz4"]
    }
}

#[test]
fn stock_archives_of_every_pg_dump_restore_with_pgarc() {
    let work = tempfile::tempdir().unwrap();
    for major in SERVERS {
        let cluster = Cluster::start_in(&bindir(major));
        cluster.create_fixtures_db("src");
        let expected = cluster.db_state("src");
        assert!(
            !expected.large_objects.is_empty(),
            "the fixtures hold large objects"
        );
        for codec in codecs(major) {
            let archive = work.path().join(format!("pg{major}-{codec}"));
            run_ok(
                cluster
                    .client("pg_dump")
                    .args(["-Fd", "-Z", codec, "-d", "src", "-f"])
                    .arg(&archive),
            );
            let listing = run_ok(crate::util::pgarc().arg("list").arg(&archive)).stdout;
            let listing = String::from_utf8_lossy(&listing);
            if major >= 17 {
                assert!(listing.contains("BLOB METADATA"), "{major}: {listing}");
            }
            let db = format!("restored_{codec}");
            cluster.create_db(&db);
            run_ok(
                cluster
                    .pgarc()
                    .args(["restore", "-q", "-j", "3", "-d", &db])
                    .arg(&archive),
            );
            cluster.assert_same_db(&expected, &db);
            // The digests computed from pg_dump's data files, any codec.
            verify_against(
                &cluster,
                &archive,
                &db,
                &format!("pg_dump {major} -Z {codec}"),
            );
        }
    }
}

/// `pgarc verify ARCHIVE --against -d DB` exits 0 (equal).
fn verify_against(cluster: &Cluster, archive: &std::path::Path, db: &str, what: &str) {
    let out = cluster
        .pgarc()
        .arg("verify")
        .arg(archive)
        .args(["--against", "-j", "2", "--split-size", "64kB", "-d", db])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{what}: {text}");
    assert!(text.contains("EQUAL"), "{what}: {text}");
}

/// `pg_stats` of the fixtures' tables, as text.
fn column_stats(cluster: &Cluster, db: &str) -> String {
    cluster.psql(
        db,
        "SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, \
         most_common_vals::text, histogram_bounds::text, correlation \
         FROM pg_stats WHERE schemaname = 'app' ORDER BY 1, 2, 3",
    )
}

#[test]
fn statistics_data_of_pg_dump_18_is_restored_unless_no_statistics() {
    let cluster = Cluster::start_in(&bindir(NEWEST));
    // No autovacuum: the statistics a restore leaves are the archive's, or none.
    cluster.psql("postgres", "ALTER SYSTEM SET autovacuum = off");
    assert!(cluster.pg_ctl(&["reload"]));
    cluster.create_fixtures_db("src");
    cluster.psql("src", "ANALYZE");
    let expected = column_stats(&cluster, "src");
    assert!(expected.lines().count() > 10, "{expected}");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("stats");
    run_ok(
        cluster
            .client("pg_dump")
            .args(["-Fd", "--statistics", "-d", "src", "-f"])
            .arg(&archive),
    );
    let listing = run_ok(crate::util::pgarc().arg("list").arg(&archive)).stdout;
    assert!(String::from_utf8_lossy(&listing).contains("STATISTICS DATA"));

    cluster.create_db("with_stats");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-j", "2", "-d", "with_stats"])
            .arg(&archive),
    );
    let got = column_stats(&cluster, "with_stats");
    assert!(
        got == expected,
        "pg_stats differ after the restore, first at: {:?}",
        got.lines().zip(expected.lines()).find(|(a, b)| a != b)
    );

    cluster.create_db("without_stats");
    run_ok(
        cluster
            .pgarc()
            .args([
                "restore",
                "-q",
                "-j",
                "2",
                "--no-statistics",
                "-d",
                "without_stats",
            ])
            .arg(&archive),
    );
    assert_eq!(column_stats(&cluster, "without_stats").trim(), "");
    // The listing with --no-statistics is pg_restore's.
    let ours = run_ok(
        cluster
            .pgarc()
            .args(["restore", "-l", "--no-statistics"])
            .arg(&archive),
    );
    let theirs = run_ok(
        cluster
            .client("pg_restore")
            .args(["-l", "--no-statistics"])
            .arg(&archive),
    );
    assert_eq!(
        crate::util::entry_lines(&ours.stdout),
        crate::util::entry_lines(&theirs.stdout)
    );
}

/// The first pg_restore major a claim like "pg_restore 17 and newer built with zstd" names.
fn claimed_first(text: &str, prefix: &str) -> u32 {
    let line = text
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"));
    let after = line.split("pg_restore ").nth(1).expect("a version");
    let version: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    version.parse().expect("a major version")
}

#[test]
fn the_pg_restore_versions_an_archive_claims_do_read_it_and_older_ones_refuse() {
    let restorers: Vec<(u32, PathBuf)> = (15..=NEWEST).map(|m| (m, bindir(m))).collect();
    let work = tempfile::tempdir().unwrap();
    // Every pg_restore restores into the newest server (pg_restore 17 and 18 cannot restore
    // cleanly into older servers, see above; pg_restore 15 and 16 restore into newer ones).
    let target = Cluster::start_in(&bindir(NEWEST));
    target.psql_file("postgres", &repo_root().join("fixtures/sql/roles.sql"));
    // Schema by pg_dump 15 (archive 1.14, or 1.15 for zstd), 16 (1.14 or 1.15) and 18 (1.16).
    for source in [15, 16, NEWEST] {
        let cluster = Cluster::start_in(&bindir(source));
        cluster.create_fixtures_db("src");
        let expected = cluster.table_fingerprints("src");
        for codec in ["none", "gzip", "zstd"] {
            let archive = work.path().join(format!("pg{source}-{codec}"));
            cluster.pgarc_dump("src", &archive, &["-q", "-Z", codec]);
            let list = run_ok(crate::util::pgarc().arg("list").arg(&archive));
            let first = claimed_first(&String::from_utf8_lossy(&list.stdout), "Readable by:");
            let verify = run_ok(crate::util::pgarc().arg("verify").arg(&archive));
            let verify = String::from_utf8_lossy(&verify.stdout);
            assert_eq!(
                claimed_first(&verify, "readable by"),
                first,
                "verify and list agree: {verify}"
            );
            // README: 1.16 from pg_dump 17 on; else 1.15 for zstd, 1.14 otherwise.
            let expected_first = if source >= 17 {
                17
            } else if codec == "zstd" {
                16
            } else {
                12
            };
            assert_eq!(first, expected_first, "pg {source} -Z {codec}");
            for (major, bin) in &restorers {
                let db = format!("pg{source}_{codec}_by_{major}");
                target.create_db(&db);
                let out = target
                    .client_from(bin, "pg_restore")
                    .args(["-d", &db])
                    .arg(&archive)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                if *major >= first {
                    assert!(
                        out.status.success(),
                        "pg_restore {major} must read {}: {stderr}",
                        archive.display()
                    );
                    assert_eq!(target.table_fingerprints(&db), expected, "{db}");
                } else {
                    assert!(
                        !out.status.success(),
                        "pg_restore {major} must refuse: {db}"
                    );
                    assert!(
                        stderr.contains("unsupported version"),
                        "pg_restore {major}: {stderr}"
                    );
                }
            }
        }
    }
}

#[test]
fn unqualify_drops_table_qualifiers_only() {
    assert_eq!(unqualify(" SELECT orders.id,"), " SELECT id,");
    assert_eq!(
        unqualify("  WHERE (orders.total > (1000.5)::numeric);"),
        "  WHERE (total > (1000.5)::numeric);"
    );
    assert_eq!(unqualify("\"Mixed Schema\".x"), "\"Mixed Schema\".x");
}
