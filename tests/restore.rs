//! `pgarc restore` against real servers and the stock tools (issue 4's acceptance): pgarc and
//! stock archives restore to a database equal to the source and to what pg_restore gives;
//! the ownership and privilege options match pg_restore's; a big table is loaded by several
//! workers at once; a damaged frame is named and leaves no partial table; a non-empty target
//! is refused and left alone.

use std::path::Path;

use crate::util::{default_bindir, newest_bindir, run_ok, Cluster};

/// Runs `pgarc restore ARGS ARCHIVE`; returns (exit code, stderr).
fn pgarc_restore(cluster: &Cluster, archive: &Path, args: &[&str]) -> (i32, String) {
    let out = cluster
        .pgarc()
        .arg("restore")
        .args(args)
        .arg(archive)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore_ok(cluster: &Cluster, archive: &Path, args: &[&str]) -> String {
    let (code, stderr) = pgarc_restore(cluster, archive, args);
    assert_eq!(code, 0, "pgarc restore {args:?} failed:\n{stderr}");
    stderr
}

fn stock_restore(cluster: &Cluster, archive: &Path, args: &[&str]) {
    run_ok(cluster.client("pg_restore").args(args).arg(archive));
}

/// Acceptance 1 and 4: the fixtures database, `pgarc dump -j 4`, `pgarc restore -j 4` into a
/// fresh database, equal to the source; a table of many frames is split across workers.
#[test]
fn pgarc_archives_restore_equal_to_the_source() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    // A table big enough in frames (64 kB each) to be worth splitting.
    cluster.psql(
        "src",
        "CREATE TABLE app.big AS SELECT i AS id, md5(i::text) AS h, repeat('x', i % 200) AS pad \
         FROM generate_series(1, 60000) i; ALTER TABLE app.big ADD PRIMARY KEY (id)",
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "4", "--frame-size", "64kB"]);

    cluster.create_db("dst");
    let stderr = restore_ok(&cluster, &archive, &["-d", "dst", "-j", "4"]);
    cluster.assert_same_db(&expected, "dst");
    assert!(stderr.contains("pre-data:"), "a line per phase: {stderr}");
    assert!(
        stderr.contains("data:") && stderr.contains("post-data:"),
        "{stderr}"
    );
    let split = stderr
        .lines()
        .find(|l| l.contains("table app.big:"))
        .unwrap_or_else(|| panic!("big must be split across workers: {stderr}"));
    let workers: usize = split
        .split("loaded by ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(workers >= 2, "{split}");
    assert!(
        stderr.contains("60000") || stderr.contains("rows"),
        "{stderr}"
    );

    // -j 1 gives the same database.
    cluster.create_db("dst1");
    restore_ok(&cluster, &archive, &["-d", "dst1"]);
    cluster.assert_same_db(&expected, "dst1");
}

/// Acceptance 2: stock `pg_dump -Fd` archives in every codec the available pg_dump writes,
/// restored by `pgarc restore -j 4`, equal the source and what `pg_restore -j 4` restores.
#[test]
fn stock_archives_restore_like_pg_restore() {
    for (bindir, codecs) in [
        (default_bindir(), vec!["0", "6"]),
        (newest_bindir(), vec!["none", "gzip", "zstd", "lz4"]),
    ] {
        let cluster = Cluster::start_in(&bindir);
        cluster.create_fixtures_db("src");
        let expected = cluster.db_state("src");
        let work = tempfile::tempdir().unwrap();
        for codec in codecs {
            let archive = work.path().join(format!("stock-{codec}"));
            run_ok(
                cluster
                    .client("pg_dump")
                    .args(["-Fd", "-Z", codec, "-d", "src", "-f"])
                    .arg(&archive),
            );
            let ours = format!("pgarc_{codec}");
            let theirs = format!("stock_{codec}");
            cluster.create_db(&ours);
            restore_ok(&cluster, &archive, &["-d", &ours, "-j", "4"]);
            cluster.assert_same_db(&expected, &ours);
            cluster.create_db(&theirs);
            stock_restore(&cluster, &archive, &["-d", &theirs, "-j", "4"]);
            assert_eq!(
                cluster.db_state(&ours),
                cluster.db_state(&theirs),
                "pg {} -Z {codec}: pgarc and pg_restore differ",
                cluster.version.major
            );
        }
    }
}

/// Acceptance 3: with objects owned by a second role and grants to a third, `--no-owner`,
/// `--no-privileges`, `--clean --if-exists` and `--create` each give the database
/// pg_restore gives with the same options.
#[test]
fn ownership_privilege_clean_and_create_options_match_pg_restore() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE app.owned_by_reader (id int PRIMARY KEY);
         ALTER TABLE app.owned_by_reader OWNER TO fixture_reader;
         GRANT SELECT ON app.vehicles TO fixture_reader",
    );
    let owners = "SELECT string_agg(c.relname || ':' || pg_get_userbyid(c.relowner) || ':' || \
                  coalesce(c.relacl::text, '-'), ' ' ORDER BY c.relname) FROM pg_class c \
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'";
    assert!(cluster.psql("src", owners).contains("fixture_owner"));
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "2"]);

    for opts in [&["--no-owner"][..], &["--no-privileges"], &["-O", "-x"]] {
        let name = opts.join("").replace('-', "");
        let (ours, theirs) = (format!("p{name}"), format!("s{name}"));
        cluster.create_db(&ours);
        cluster.create_db(&theirs);
        let mut args = vec!["-d", ours.as_str(), "-j", "4"];
        args.extend(opts);
        restore_ok(&cluster, &archive, &args);
        let mut sargs = vec!["-d", theirs.as_str(), "-j", "4"];
        sargs.extend(opts);
        stock_restore(&cluster, &archive, &sargs);
        assert_eq!(
            cluster.db_state(&ours),
            cluster.db_state(&theirs),
            "{opts:?}"
        );
        assert_eq!(cluster.psql(&ours, owners), cluster.psql(&theirs, owners));
    }

    // --clean --if-exists over a database that already holds a restore (and an extra row).
    for db in ["pclean", "sclean"] {
        cluster.create_db(db);
        stock_restore(&cluster, &archive, &["-d", db]);
        cluster.psql(db, "INSERT INTO app.owned_by_reader VALUES (42)");
    }
    restore_ok(
        &cluster,
        &archive,
        &["-d", "pclean", "-j", "4", "--clean", "--if-exists"],
    );
    stock_restore(
        &cluster,
        &archive,
        &["-d", "sclean", "-j", "4", "--clean", "--if-exists"],
    );
    let expected = cluster.db_state("src");
    cluster.assert_same_db(&expected, "pclean");
    assert_eq!(cluster.db_state("pclean"), cluster.db_state("sclean"));

    // --create: the database is created from the archive's DATABASE entry.
    cluster.psql(
        "postgres",
        "ALTER DATABASE src SET work_mem = '7MB'; COMMENT ON DATABASE src IS 'the source'",
    );
    let archive2 = work.path().join("b");
    cluster.pgarc_dump("src", &archive2, &["-j", "2"]);
    let expected = cluster.db_state("src");
    let db_props = "SELECT d.datname || '|' || pg_get_userbyid(d.datdba) || '|' || \
        coalesce(shobj_description(d.oid, 'pg_database'), '-') || '|' || \
        coalesce((SELECT array_agg(s.setconfig)::text FROM pg_db_role_setting s \
        WHERE s.setdatabase = d.oid), '-') FROM pg_database d WHERE datname = 'src'";
    let source_props = cluster.psql("postgres", db_props);
    cluster.psql("postgres", "DROP DATABASE src");
    restore_ok(&cluster, &archive2, &["-d", "postgres", "-C", "-j", "4"]);
    cluster.assert_same_db(&expected, "src");
    let ours = cluster.psql("postgres", db_props);
    assert_eq!(ours, source_props);
    // A second --create is refused while the database exists...
    let (code, stderr) = pgarc_restore(&cluster, &archive2, &["-d", "postgres", "-C"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--clean"),
        "{stderr}"
    );
    // ...and with --clean it drops and recreates it, as pg_restore -C -c does.
    restore_ok(
        &cluster,
        &archive2,
        &["-d", "postgres", "-C", "-c", "-j", "2"],
    );
    cluster.assert_same_db(&expected, "src");
    cluster.psql("postgres", "DROP DATABASE src");
    stock_restore(&cluster, &archive2, &["-d", "postgres", "-C", "-j", "4"]);
    assert_eq!(cluster.psql("postgres", db_props), ours);
    cluster.assert_same_db(&expected, "src");
}

/// Flips one byte inside frame `frame` (1-based) of the data file of `table`.
fn damage_frame(archive: &Path, table: &str, frame: usize) -> String {
    let m = crate::util::read_manifest(archive);
    let t = m.tables.iter().find(|t| t.name == table).unwrap();
    let index = crate::util::frame_index_of(archive, t);
    let f = &index[frame - 1];
    let path = archive.join(&t.file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(f.offset + f.stored / 2) as usize] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    t.file.clone()
}

/// Acceptance 5: a flipped byte inside one frame stops that table's load, names the table
/// and frame, exits non-zero, and the table holds no rows at all; for a table loaded by one
/// worker and for one loaded by several.
#[test]
fn a_damaged_frame_is_named_and_leaves_no_partial_table() {
    let cluster = Cluster::start_in(&newest_bindir());
    for db in ["src", "d1", "d2"] {
        cluster.create_db(db);
    }
    cluster.psql(
        "src",
        "CREATE TABLE big AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 80000) i;
         CREATE TABLE small AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 5000) i;
         CREATE TABLE intact AS SELECT i AS id FROM generate_series(1, 100) i",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["--frame-size", "32kB", "-Z", "gzip"]);
    let small_file = damage_frame(&archive, "small", 2);
    let big_file = damage_frame(&archive, "big", 20);

    let (code, stderr) = pgarc_restore(&cluster, &archive, &["-d", "d1", "-j", "4"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("public.small")
            && stderr.contains(&format!("{small_file}, frame 2"))
            && stderr.contains("checksum mismatch"),
        "the table and frame are named: {stderr}"
    );
    assert!(
        stderr.contains("public.big") && stderr.contains(&format!("{big_file}, frame 20")),
        "{stderr}"
    );
    assert!(
        stderr.contains("table public.big:") && stderr.contains("workers at once"),
        "big was loaded in parts: {stderr}"
    );
    assert!(stderr.lines().all(|l| !l.contains("panicked")), "{stderr}");
    let counts = cluster.psql(
        "d1",
        "SELECT (SELECT count(*) FROM big) || ' ' || (SELECT count(*) FROM small) || ' ' || \
         (SELECT count(*) FROM intact)",
    );
    assert_eq!(
        counts.trim(),
        "0 0 100",
        "no partial rows; other tables loaded"
    );

    // With -e the restore stops at the first error, still with a non-zero exit.
    let (code, stderr) = pgarc_restore(&cluster, &archive, &["-d", "d2", "-j", "2", "-e"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("frame") && stderr.contains("--exit-on-error"),
        "{stderr}"
    );
}

/// Acceptance 6: a non-empty target without `--clean` is refused with a clear message and
/// is left exactly as it was.
#[test]
fn a_non_empty_target_is_refused_and_left_alone() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.create_db("busy");
    cluster.psql("src", "CREATE TABLE t AS SELECT 1 AS a");
    cluster.psql(
        "busy",
        "CREATE TABLE keep (x int); INSERT INTO keep VALUES (1)",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &[]);
    let before = cluster.db_state("busy");
    let (code, stderr) = pgarc_restore(&cluster, &archive, &["-d", "busy", "-j", "2"]);
    assert_eq!(code, 1);
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(
        line.contains("\"busy\" is not empty")
            && line.contains("public.keep")
            && line.contains("--clean"),
        "{line}"
    );
    assert_eq!(cluster.db_state("busy"), before);

    // No -d: a one-line usage error; a missing archive: named.
    let (code, stderr) = pgarc_restore(&cluster, &archive, &[]);
    assert_eq!((code, stderr.trim().lines().count()), (1, 1), "{stderr}");
    assert!(stderr.contains("-d"), "{stderr}");
    let (code, stderr) = pgarc_restore(&cluster, &work.path().join("nope"), &["-d", "busy"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no such directory"), "{stderr}");
}

/// Data that pg_dump wrote itself inside a pgarc archive (an extension's configuration
/// table: a TABLE DATA entry with no `[[table]]`, its file listed in the manifest) is one
/// stream whose size and SHA-256 the manifest vouches for. Restore loads it (it used to
/// refuse the archive), and refuses a changed byte in it at the end of the stream, before
/// COMMIT, naming the file; verify names it too.
#[test]
fn data_pg_dump_wrote_itself_is_read_as_a_stream_the_manifest_checks() {
    let cluster = Cluster::start_in(&newest_bindir());
    for db in ["src", "d1", "d2"] {
        cluster.create_db(db);
    }
    cluster.psql(
        "src",
        "CREATE TABLE conf AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 3000) i;
         CREATE TABLE other AS SELECT i AS id FROM generate_series(1, 10) i",
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &[]);
    // What pg_dump's own entry looks like: no [[table]], no frame index; the data file (a
    // zstd stream of frames, as pg_dump's own would be) stays listed.
    let mut m = crate::util::read_manifest(&archive);
    let conf = crate::util::drop_table_record(&archive, &mut m, "conf");
    crate::util::write_manifest(&archive, &m);

    let (code, out) = crate::verify::verify(&archive, &[]);
    assert_eq!(code, 0, "{out}");
    restore_ok(&cluster, &archive, &["-d", "d1", "-j", "2"]);
    cluster.assert_same_db(&expected, "d1");

    // A changed byte that still decompresses (inside an uncompressed copy) is caught by the
    // listing's SHA-256 at the end of the stream: the table is not loaded.
    let plain = pgarc::archive::data::strip_codec_suffix(&conf.file).to_string();
    let rows = std::fs::read(archive.join(&conf.file)).unwrap();
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut zstd::Decoder::new(&rows[..]).unwrap(), &mut text).unwrap();
    let at = text.iter().position(|&b| b == b'a').unwrap();
    text[at] = b'b';
    std::fs::remove_file(archive.join(&conf.file)).unwrap();
    std::fs::write(archive.join(&plain), &text).unwrap();
    // Listed at its new size, with the SHA-256 of other bytes: only the hash can tell.
    let f = m.files.iter_mut().find(|f| f.path == conf.file).unwrap();
    f.path = plain.clone();
    f.size = text.len() as u64;
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    crate::util::write_manifest(&archive, &m);
    let (code, stderr) = pgarc_restore(&cluster, &archive, &["-d", "d2"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{plain}: SHA-256 is")) && stderr.contains("public.conf"),
        "{stderr}"
    );
    let counts = cluster.psql(
        "d2",
        "SELECT (SELECT count(*) FROM conf) || ' ' || (SELECT count(*) FROM other)",
    );
    assert_eq!(counts.trim(), "0 10", "nothing of conf committed");
    let (code, out) = crate::verify::verify(&archive, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{plain}, table public.conf: SHA-256 is")),
        "{out}"
    );
}

/// `--analyze` (issue 18): every table the restore loads has planner statistics when it
/// ends, expression indexes included, and the database equals the source; a table whose
/// statistics the archive restores (PostgreSQL 18) is not analyzed again; without
/// `--analyze` nothing is.
#[test]
fn analyze_gives_every_loaded_table_statistics_as_it_is_ready() {
    let cluster = Cluster::start_in_with(&newest_bindir(), "-c autovacuum=off");
    for db in ["src", "plain", "with_stats", "without_stats"] {
        cluster.create_db(db);
    }
    cluster.psql(
        "src",
        "CREATE TABLE a AS SELECT i AS id, md5(i::text) AS v FROM generate_series(1, 20000) i;
         CREATE INDEX a_lower ON a (lower(v));
         ALTER TABLE a ADD PRIMARY KEY (id);
         CREATE TABLE b AS SELECT i AS id FROM generate_series(1, 5000) i;
         CREATE TABLE c (x int);
         CREATE TABLE stats AS SELECT i AS id FROM generate_series(1, 100) i;
         ANALYZE stats;
         CREATE TABLE pt (id int, k int) PARTITION BY RANGE (id);
         CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000);
         CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (1000) TO (3000) PARTITION BY LIST (k);
         CREATE TABLE pt2a PARTITION OF pt2 FOR VALUES IN (1);
         INSERT INTO pt SELECT i, 1 FROM generate_series(1, 2999) i;",
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["--frame-size", "64kB"]);
    // pg_dump 18's statistics: column statistics for `stats` only (the others were never
    // analyzed), relation statistics for all.
    let with_stats = work.path().join("stock");
    run_ok(
        cluster
            .client("pg_dump")
            .args(["-Fd", "--statistics", "-d", "src", "-f"])
            .arg(&with_stats),
    );
    let analyzed = |db: &str| {
        cluster
            .psql(
                db,
                "SELECT string_agg(relname || '=' || analyze_count, ' ' ORDER BY relname) \
                 FROM pg_stat_user_tables",
            )
            .trim()
            .to_string()
    };
    let has_stats = |db: &str, rel: &str| {
        cluster
            .psql(
                db,
                &format!("SELECT count(*) > 0 FROM pg_stats WHERE tablename = '{rel}'"),
            )
            .trim()
            == "t"
    };

    restore_ok(&cluster, &archive, &["-d", "plain", "-j", "2"]);
    assert_eq!(
        analyzed("plain"),
        "a=0 b=0 c=0 pt=0 pt1=0 pt2=0 pt2a=0 stats=0",
        "no --analyze, no ANALYZE"
    );

    // The archive restores the column statistics of `stats`: that table is left alone.
    let stderr = restore_ok(
        &cluster,
        &with_stats,
        &["-d", "with_stats", "-j", "2", "--analyze"],
    );
    cluster.assert_same_db(&expected, "with_stats");
    // Partitioned tables too, once (PostgreSQL 18: ANALYZE ONLY, the partitions are not
    // analyzed a second time), with their inheritance statistics.
    assert_eq!(
        analyzed("with_stats"),
        "a=1 b=1 c=1 pt=1 pt1=1 pt2=1 pt2a=1 stats=0",
        "{stderr}"
    );
    assert!(stderr.contains("analyzed       7 tables"), "{stderr}");
    for rel in ["a", "a_lower", "b", "stats", "pt", "pt2", "pt2a"] {
        assert!(has_stats("with_stats", rel), "{rel} has statistics");
    }

    let stderr = restore_ok(
        &cluster,
        &with_stats,
        &[
            "-d",
            "without_stats",
            "-j",
            "3",
            "--analyze",
            "--no-statistics",
        ],
    );
    assert_eq!(
        analyzed("without_stats"),
        "a=1 b=1 c=1 pt=1 pt1=1 pt2=1 pt2a=1 stats=1",
        "{stderr}"
    );
    for rel in ["a", "a_lower", "b", "stats"] {
        assert!(has_stats("without_stats", rel), "{rel} has statistics");
    }
}

/// Issue 18: simple PRIMARY KEY and UNIQUE constraints of plain tables are built as their
/// index and `ADD CONSTRAINT ... USING INDEX`, beside the table's other index builds; the
/// schema pg_dump reads back is the source's, for every form of key constraint (deferrable,
/// quoted names, and the forms that keep pg_dump's statement: INCLUDE, storage parameters,
/// NULLS NOT DISTINCT, a partitioned table's key), and foreign keys over them still hold.
#[test]
fn key_constraints_built_through_their_index_leave_the_sources_catalog() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.create_db("dst");
    cluster.psql(
        "src",
        r#"CREATE TABLE k (id int NOT NULL, "Odd Col" text NOT NULL, v int, w int);
           INSERT INTO k SELECT i, 'x' || i, i % 7, i FROM generate_series(1, 20000) i;
           ALTER TABLE k ADD CONSTRAINT k_pkey PRIMARY KEY (id);
           ALTER TABLE k ADD CONSTRAINT "k ""odd"" uq" UNIQUE ("Odd Col", id) DEFERRABLE INITIALLY DEFERRED;
           ALTER TABLE k ADD CONSTRAINT k_w_inc UNIQUE (w) INCLUDE (v);
           ALTER TABLE k ADD CONSTRAINT k_v_ff UNIQUE (v, id) WITH (fillfactor = 70);
           ALTER TABLE k ADD CONSTRAINT k_nnd UNIQUE NULLS NOT DISTINCT (w, v);
           CREATE INDEX k_v ON k (v);
           CREATE INDEX k_lower ON k (lower("Odd Col"));
           CREATE TABLE r (id int PRIMARY KEY, k_id int REFERENCES k (id));
           INSERT INTO r SELECT i, i FROM generate_series(1, 100) i;
           CREATE TABLE p (id int, part int, PRIMARY KEY (id, part)) PARTITION BY LIST (part);
           CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
           INSERT INTO p SELECT i, 1 FROM generate_series(1, 100) i;"#,
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &[]);
    restore_ok(&cluster, &archive, &["-d", "dst", "-j", "3"]);
    cluster.assert_same_db(&expected, "dst");
    let constraints =
        "SELECT string_agg(conname || ' ' || contype::text || ' ' || condeferrable || \
                       ' ' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) \
                       FROM pg_constraint WHERE connamespace = 'public'::regnamespace";
    assert_eq!(
        cluster.psql("dst", constraints),
        cluster.psql("src", constraints)
    );
    let indexes = "SELECT string_agg(indexrelid::regclass || ' ' || indisprimary || ' ' || \
                   indisunique || ' ' || pg_get_indexdef(indexrelid), E'\\n' ORDER BY indexrelid::regclass::text) \
                   FROM pg_index WHERE indrelid::regclass::text IN ('k', 'r', 'p', 'p1')";
    assert_eq!(cluster.psql("dst", indexes), cluster.psql("src", indexes));
}

/// COPY FREEZE (tool.md §7): a table created by the restore and big enough is loaded frozen
/// (its pages all-visible, which ANALYZE counts in relallvisible); a small one and every
/// table under --no-freeze are loaded as pg_restore loads them; the data is equal either way.
#[test]
fn big_tables_created_by_the_restore_load_frozen_unless_no_freeze() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE big (id int PRIMARY KEY, h text);
         INSERT INTO big SELECT i, md5(i::text) || md5((i * 7)::text) FROM generate_series(1, 30000) i;
         CREATE TABLE heap_only (id int, h text);
         INSERT INTO heap_only SELECT i, md5(i::text) FROM generate_series(1, 30000) i;
         CREATE TABLE small (id int PRIMARY KEY, h text);
         INSERT INTO small SELECT i, md5(i::text) FROM generate_series(1, 50) i;
         CREATE TABLE p (id int, part int) PARTITION BY LIST (part);
         CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
         INSERT INTO p SELECT i, 1 FROM generate_series(1, 60000) i;",
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &[]);
    // COPY FREEZE marks the pages it fills all-visible (not quite all: 371 of 416 here).
    let visible = "SELECT string_agg(relname || ' ' || (relpages > 0 AND relallvisible > relpages / 2)::text, \
                   ', ' ORDER BY relname) FROM pg_class \
                   WHERE relname IN ('big', 'heap_only', 'small', 'p1')";
    for (db, extra, frozen) in [
        (
            "d_freeze",
            None,
            "big true, heap_only true, p1 true, small false",
        ),
        (
            "d_plain",
            Some("--no-freeze"),
            "big false, heap_only false, p1 false, small false",
        ),
    ] {
        cluster.create_db(db);
        // -j 1: no table is split into parts (parts are never frozen: each is its own
        // transaction, and only one could truncate the table).
        let mut args = vec!["-d", db, "-j", "1", "--analyze"];
        args.extend(extra);
        restore_ok(&cluster, &archive, &args);
        cluster.assert_same_db(&expected, db);
        assert_eq!(cluster.psql(db, visible).trim(), frozen, "{db}");
    }
}
