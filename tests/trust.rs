//! Issue 16: nothing lost, nothing lies. Each test is one class of failure the issue names,
//! with cases of its own: every server encoding, all-or-nothing split loads, a refused COPY,
//! private archives, decompression bombs, tables rewritten after the snapshot, faults that
//! must end clearly, and the default codec's readers.

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgarc::archive::frame::{Codec, FrameIndexEntry};

use crate::util::{
    all_cmdlines, newest_bindir, optional_bindir, run_ok, sorted_byte_lines, Cluster,
};

/// The text a test database of one encoding is built from; `{A}`, `{B}`, `{C}` become
/// letters of that encoding. Names, a default, a CHECK, a view, comments, a function body,
/// a sequence and a table big enough to be split across restore workers.
const ENCODING_SCHEMA: &str = r#"
CREATE SCHEMA "s{A}";
CREATE TABLE "s{A}"."t{B}" (id int PRIMARY KEY, "c{C}" text DEFAULT 'd{A}' CHECK ("c{C}" <> 'x{B}'), n numeric);
INSERT INTO "s{A}"."t{B}" SELECT i, 'v{A}{B}{C} ' || i, i FROM generate_series(1, 3000) i;
CREATE VIEW "s{A}"."v{C}" AS SELECT id, "c{C}" AS "a{A}" FROM "s{A}"."t{B}" WHERE "c{C}" <> 'w{C}';
COMMENT ON TABLE "s{A}"."t{B}" IS 'comment {A}{B}{C}';
COMMENT ON COLUMN "s{A}"."t{B}"."c{C}" IS 'column {C}';
CREATE FUNCTION "s{A}"."f{A}"(x text DEFAULT '{B}') RETURNS text LANGUAGE sql AS $$ SELECT 'r{B}' || x $$;
CREATE TABLE "s{A}"."big{A}" AS SELECT i AS id, repeat('{B}', 30) || i AS "v{C}" FROM generate_series(1, 30000) i;
CREATE INDEX "i{A}" ON "s{A}"."big{A}" ("v{C}");
CREATE SEQUENCE "s{A}"."q{C}";
SELECT setval('"s{A}"."q{C}"', 42);
"#;

/// One server encoding under test: its letters, and how the script reaches the server.
struct Encoding {
    name: &'static str,
    letters: [&'static str; 3],
    /// SQL_ASCII stores bytes as they come: the script is sent as LATIN1 bytes, which are
    /// not valid UTF-8. Every other encoding gets UTF-8 text that the server converts.
    latin1_bytes: bool,
}

const ENCODINGS: &[Encoding] = &[
    Encoding {
        name: "LATIN1",
        letters: ["é", "ñü", "ßø"],
        latin1_bytes: false,
    },
    Encoding {
        name: "SQL_ASCII",
        letters: ["é", "ñü", "ßø"],
        latin1_bytes: true,
    },
    Encoding {
        name: "EUC_JP",
        letters: ["日本", "語表", "ソ能"],
        latin1_bytes: false,
    },
    Encoding {
        name: "EUC_KR",
        letters: ["한국", "어표", "글"],
        latin1_bytes: false,
    },
    Encoding {
        name: "WIN1251",
        letters: ["щ", "жЯ", "ё"],
        latin1_bytes: false,
    },
];

impl Encoding {
    fn script(&self) -> Vec<u8> {
        let text = ENCODING_SCHEMA
            .replace("{A}", self.letters[0])
            .replace("{B}", self.letters[1])
            .replace("{C}", self.letters[2]);
        if self.latin1_bytes {
            text.chars()
                .map(|c| u8::try_from(u32::from(c)).expect("a LATIN1 letter"))
                .collect()
        } else {
            text.into_bytes()
        }
    }
}

/// `pg_dump -s` and the sorted lines of `pg_dump -a` of `db`, as bytes in the database's
/// encoding (what a byte-exact round trip must reproduce).
fn dump_bytes(cluster: &Cluster, db: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let schema: Vec<u8> = run_ok(cluster.client("pg_dump").args(["-s", "-d", db]))
        .stdout
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"\\restrict") && !l.starts_with(b"\\unrestrict"))
        .flatten()
        .copied()
        .collect();
    let data = run_ok(cluster.client("pg_dump").args(["-a", "-d", db])).stdout;
    let lines = sorted_byte_lines(&data)
        .into_iter()
        .filter(|l| !l.starts_with(b"\\restrict") && !l.starts_with(b"\\unrestrict"))
        .map(<[u8]>::to_vec)
        .collect();
    (schema, lines)
}

fn create_db_in(cluster: &Cluster, name: &str, encoding: &str) {
    cluster.psql(
        "postgres",
        &format!(
            "CREATE DATABASE \"{name}\" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0"
        ),
    );
}

/// Class 1: in every encoding (LATIN1, SQL_ASCII holding bytes that are not UTF-8, EUC_JP,
/// EUC_KR, WIN1251), names, defaults, CHECKs, views, comments, functions and data travel
/// byte for byte: pgarc dump -> pgarc restore, pgarc dump -> pg_restore, pg_dump -> pgarc
/// restore, each equal to the source in `pg_dump -s` and `pg_dump -a`.
#[test]
fn every_server_encoding_round_trips_byte_for_byte() {
    let cluster = Cluster::start_in(&newest_bindir());
    let work = tempfile::tempdir().unwrap();
    for enc in ENCODINGS {
        let src = format!("src_{}", enc.name.to_lowercase());
        create_db_in(&cluster, &src, enc.name);
        let script = work.path().join(format!("{src}.sql"));
        std::fs::write(&script, enc.script()).unwrap();
        let client_encoding = if enc.latin1_bytes {
            "SQL_ASCII"
        } else {
            "UTF8"
        };
        run_ok(
            cluster
                .client("psql")
                .env("PGCLIENTENCODING", client_encoding)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &src, "-f"])
                .arg(&script),
        );
        let expected = dump_bytes(&cluster, &src);
        assert!(
            expected.0.iter().any(|&b| b >= 0x80),
            "{}: the schema holds non-ASCII bytes",
            enc.name
        );

        let pgarc_archive = work.path().join(format!("{src}.pgarc"));
        cluster.pgarc_dump(
            &src,
            &pgarc_archive,
            &["-q", "-j", "2", "--frame-size", "64kB"],
        );
        let stock_archive = work.path().join(format!("{src}.stock"));
        run_ok(
            cluster
                .client("pg_dump")
                .args(["-Fd", "-d", &src, "-f"])
                .arg(&stock_archive),
        );
        let directions: [(&str, &Path, bool); 3] = [
            ("pgarc dump -> pgarc restore", &pgarc_archive, true),
            ("pgarc dump -> pg_restore", &pgarc_archive, false),
            ("pg_dump -> pgarc restore", &stock_archive, true),
        ];
        for (i, (what, archive, with_pgarc)) in directions.into_iter().enumerate() {
            let dst = format!("{src}_{i}");
            create_db_in(&cluster, &dst, enc.name);
            if with_pgarc {
                let out = cluster
                    .pgarc()
                    .args(["restore", "-j", "3", "-d", &dst])
                    .arg(archive)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{}, {what}: {stderr}", enc.name);
                if i == 0 {
                    assert!(
                        stderr.contains("frames loaded by 3 workers at once"),
                        "{}: the big table is split across workers: {stderr}",
                        enc.name
                    );
                }
            } else {
                run_ok(
                    cluster
                        .client("pg_restore")
                        .args(["-j", "3", "-d", &dst])
                        .arg(archive),
                );
            }
            let got = dump_bytes(&cluster, &dst);
            assert!(
                got.0 == expected.0,
                "{}, {what}: the schema text differs from the source's",
                enc.name
            );
            assert!(
                got.1 == expected.1,
                "{}, {what}: the data differs from the source's",
                enc.name
            );
        }
    }
}

/// Runs `cmd`, killing it (and failing the test) if it has not finished after `limit`.
fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("error:")).collect()
}

/// One data-only load of `loads_are_all_or_nothing_with_truthful_counts`: `table` from
/// `archive` into a fresh database prepared with `ddl`, by pgarc and by pg_restore; both load
/// all of it (`loads`) or none, and pgarc's summary and --report count what committed.
fn data_only_load_is_whole_or_nothing(
    cluster: &Cluster,
    archive: &Path,
    work: &Path,
    i: usize,
    (what, table, ddl, loads): (&str, &str, &str, bool),
) {
    let (db, twin) = (format!("t{i}"), format!("t{i}_stock"));
    for d in [&db, &twin] {
        cluster.create_db(d);
        cluster.psql(d, ddl);
    }
    let report = work.join(format!("r{i}.json"));
    let out = output_within(
        cluster
            .pgarc()
            .args([
                "restore", "-a", "-j", "4", "-t", table, "-d", &db, "--report",
            ])
            .arg(&report)
            .arg(archive),
        Duration::from_secs(120),
        what,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let count: u64 = cluster
        .psql(&db, &format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let reported = report["tables"][0]["rows"].as_u64().unwrap();
    assert_eq!(
        reported, count,
        "{what}: --report says what is in the table"
    );
    assert_eq!(report["totals"]["rows"].as_u64().unwrap(), count, "{what}");
    let stock = cluster
        .client("pg_restore")
        .args(["-a", "-t", table, "-d", &twin])
        .arg(archive)
        .output()
        .unwrap();
    let stock_count = cluster
        .psql(&twin, &format!("SELECT count(*) FROM {table}"))
        .trim()
        .to_string();
    if loads {
        assert!(out.status.success(), "{what}: pgarc loads it: {stderr}");
        assert!(stock.status.success(), "{what}: so does pg_restore");
        assert_eq!((count, stock_count.as_str()), (60000, "60000"), "{what}");
        assert!(stderr.contains("1 tables, 60000 rows"), "{what}: {stderr}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(count, 0, "{what}: no partial table");
        assert_eq!(stock_count, "0", "{what}: pg_restore agrees");
        assert_eq!(error_lines(&stderr).len(), 1, "{what}: one error: {stderr}");
        assert!(
            stderr.contains("0 tables, 0 rows") && stderr.contains("1 tables not loaded"),
            "{what}: the summary counts what committed: {stderr}"
        );
    }
}

/// Class 2: a table is loaded whole or not at all, with no hang in any interleaving, and
/// the summary and --report count only committed rows. Data-only loads into tables whose
/// constraints or triggers see across rows (a deferred UNIQUE, a plain UNIQUE with a
/// duplicate, a failing trigger) fail as one; a self-referencing foreign key, which
/// pg_restore's single COPY satisfies, loads; and tables created in this run are still
/// split across workers.
#[test]
fn loads_are_all_or_nothing_with_truthful_counts() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    // `parent` points at a row later in the file: satisfied only at the end of one COPY.
    cluster.psql(
        "src",
        "CREATE TABLE dup AS SELECT i AS id, NULLIF(i + 1, 60001) AS parent, md5(i::text) AS v \
           FROM generate_series(1, 60000) i; \
         INSERT INTO dup VALUES (1, NULL, 'the duplicate, in the last frame'); \
         CREATE TABLE tree AS SELECT i AS id, NULLIF(i + 1, 60001) AS parent, md5(i::text) AS v \
           FROM generate_series(1, 60000) i;",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-q", "-j", "2", "--frame-size", "64kB"]);

    let targets: [(&str, &str, &str, bool); 4] = [
        (
            "deferred UNIQUE",
            "dup",
            "CREATE TABLE dup (id int UNIQUE DEFERRABLE INITIALLY DEFERRED, parent int, v text)",
            false,
        ),
        (
            "plain UNIQUE",
            "dup",
            "CREATE TABLE dup (id int UNIQUE, parent int, v text)",
            false,
        ),
        (
            "failing trigger",
            "tree",
            "CREATE TABLE tree (id int, parent int, v text); \
             CREATE FUNCTION no_50000() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN IF NEW.id = 50000 THEN RAISE 'row 50000 refused'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER t BEFORE INSERT ON tree FOR EACH ROW EXECUTE FUNCTION no_50000()",
            false,
        ),
        (
            "self-referencing FOREIGN KEY",
            "tree",
            "CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree (id), v text)",
            true,
        ),
    ];
    for (i, target) in targets.into_iter().enumerate() {
        data_only_load_is_whole_or_nothing(&cluster, &archive, work.path(), i, target);
    }

    // Tables created in this run are split across workers, and equal to the source.
    cluster.create_db("full");
    let out = run_ok(
        cluster
            .pgarc()
            .args(["restore", "-j", "4", "-d", "full"])
            .arg(&archive),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workers at once"), "{stderr}");
    assert_eq!(
        cluster.table_fingerprints("full"),
        cluster.table_fingerprints("src")
    );
}

/// Class 3: a COPY the server refuses before any row is sent (a missing table, a missing
/// column) costs that table only, and the run loads everything else, as pg_restore does.
#[test]
fn a_refused_copy_costs_one_table() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE a AS SELECT i AS x FROM generate_series(1, 1000) i; \
         CREATE TABLE b AS SELECT i AS x, i AS y FROM generate_series(1, 1000) i; \
         CREATE TABLE c AS SELECT i AS x FROM generate_series(1, 1000) i; \
         CREATE TABLE d AS SELECT i AS x FROM generate_series(1, 1000) i; \
         CREATE TABLE e AS SELECT i AS x FROM generate_series(1, 1000) i;",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-q"]);
    // b lacks a column, d is missing: their COPYs are refused before any row.
    let ddl = "CREATE TABLE a (x int); CREATE TABLE b (x int); CREATE TABLE c (x int); \
               CREATE TABLE e (x int);";
    for jobs in ["1", "3"] {
        let (db, twin) = (format!("p{jobs}"), format!("s{jobs}"));
        for d in [&db, &twin] {
            cluster.create_db(d);
            cluster.psql(d, ddl);
        }
        let out = cluster
            .pgarc()
            .args(["restore", "-a", "-j", jobs, "-d", &db])
            .arg(&archive)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 2, "-j {jobs}: b and d only: {stderr}");
        assert!(errors.iter().any(|l| l.contains("public.b")), "{stderr}");
        assert!(errors.iter().any(|l| l.contains("public.d")), "{stderr}");
        assert!(!stderr.contains("connection"), "{stderr}");
        let stock = cluster
            .client("pg_restore")
            .args(["-a", "-j", jobs, "-d", &twin])
            .arg(&archive)
            .output()
            .unwrap();
        assert_eq!(stock.status.code(), Some(1));
        assert_eq!(
            cluster.table_fingerprints(&db),
            cluster.table_fingerprints(&twin),
            "-j {jobs}: what pg_restore loads"
        );
        assert_eq!(
            cluster.psql(&db, "SELECT count(*) FROM a").trim(),
            "1000",
            "{stderr}"
        );
    }
}

/// Class 3, across versions: PostgreSQL 15 archives (pgarc's and pg_dump's) restored into
/// PostgreSQL 18 with a list that leaves out one table's CREATE but keeps its data: the
/// entries that fail cost only themselves, and the database equals pg_restore 18's result.
#[test]
fn an_older_archive_with_failing_entries_restores_like_pg_restore() {
    let Some(old) = optional_bindir(15) else {
        return;
    };
    let new = newest_bindir();
    let source = Cluster::start_in(&old);
    source.create_fixtures_db("src");
    source.psql(
        "src",
        "CREATE TABLE app.gone AS SELECT i FROM generate_series(1, 500) i; \
         CREATE TABLE app.after_gone AS SELECT i FROM generate_series(1, 500) i;",
    );
    let target = Cluster::start_in(&new);
    target.psql_file(
        "postgres",
        &crate::util::repo_root().join("fixtures/sql/roles.sql"),
    );
    let work = tempfile::tempdir().unwrap();
    let pgarc_archive = work.path().join("pgarc");
    source.pgarc_dump("src", &pgarc_archive, &["-q", "-j", "2"]);
    let stock_archive = work.path().join("stock");
    run_ok(
        source
            .client("pg_dump")
            .args(["-Fd", "-d", "src", "-f"])
            .arg(&stock_archive),
    );
    for (name, archive) in [("pgarc", &pgarc_archive), ("stock", &stock_archive)] {
        let listing = run_ok(target.client("pg_restore").arg("-l").arg(archive)).stdout;
        let list: String = String::from_utf8(listing)
            .unwrap()
            .lines()
            .map(|l| {
                if l.contains(" TABLE app gone ") {
                    format!(";{l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let list_file = work.path().join(format!("{name}.list"));
        std::fs::write(&list_file, list).unwrap();
        let (db, twin) = (format!("{name}_pgarc"), format!("{name}_stock"));
        target.create_db(&db);
        target.create_db(&twin);
        let out = target
            .pgarc()
            .args(["restore", "-j", "2", "-d", &db, "-L"])
            .arg(&list_file)
            .arg(archive)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stock = target
            .client("pg_restore")
            .args(["-j", "2", "-d", &twin, "-L"])
            .arg(&list_file)
            .arg(archive)
            .output()
            .unwrap();
        let stock_err = String::from_utf8_lossy(&stock.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stock.status.code(), Some(1), "{name}: {stock_err}");
        // pg_restore's closing "errors ignored" counter counts a failed COPY twice; the
        // errors it prints are one per failing entry, as pgarc's.
        let printed = stock_err
            .lines()
            .filter(|l| l.starts_with("pg_restore: error:"))
            .count();
        assert!(printed > 0, "{stock_err}");
        assert_eq!(
            error_lines(&stderr).len(),
            printed,
            "{name}: the same failing entries as pg_restore 18: {stderr}\n{stock_err}"
        );
        assert!(stderr.contains("app.gone"), "{stderr}");
        assert!(!stderr.contains("connection"), "{stderr}");
        target
            .db_state(&db)
            .assert_same_data(&target.db_state(&twin), &db);
        assert_eq!(
            target
                .psql(&db, "SELECT count(*) FROM app.after_gone")
                .trim(),
            "500"
        );
    }
}

/// Every directory under `root` (itself included) and every file, with its mode.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((
            p.display().to_string(),
            meta.is_dir(),
            meta.permissions().mode() & 0o7777,
        ));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Class 4: the archive is private whatever the umask: directories 0700, files 0600, as
/// pg_dump's, including the files pg_dump itself writes (large objects) and the manifest.
#[test]
fn archives_are_private_whatever_the_umask() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    let work = tempfile::tempdir().unwrap();
    for umask in ["022", "000"] {
        let archive = work.path().join(format!("a{umask}"));
        let mut cmd = cluster.pgarc_dump_cmd("src", &archive);
        let args: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("umask {umask} && exec \"$@\" -q -j 2"))
            .arg("sh")
            .args(&args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let _ = &mut cmd;
        run_ok(&mut sh);
        let all = modes(&archive);
        assert!(all.len() > 10, "{all:?}");
        assert!(
            all.iter().any(|(p, _, _)| p.contains("blob")),
            "pg_dump's own files are there: {all:?}"
        );
        for (path, is_dir, mode) in all {
            let want = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "umask {umask}: {path} is {mode:o}");
        }
    }
}

/// Runs `cmd` to its end, sampling its peak resident set (VmHWM) as it runs: (output, peak
/// RSS in MiB).
fn output_and_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child.wait_with_output().unwrap(), peak_kib / 1024)
}

/// `n` copies of one zstd frame of `len` raw bytes, then the end frame, as a pgarc data file
/// and its frame index: rows of "x" (`len / 2` of them), or one row of `len - 1` x's.
fn bomb_frames(len: u64, one_row: bool, n: usize) -> (Vec<u8>, Vec<FrameIndexEntry>) {
    use sha2::Digest;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    let block: Vec<u8> = if one_row {
        vec![b'x'; 1 << 20]
    } else {
        b"x\n".repeat(1 << 19)
    };
    let mut left = if one_row { len - 1 } else { len };
    // The frame's rows digest, for the frame that must read as intact (the one row); the
    // frames of many rows are refused before their digest is checked.
    let mut digest = pgarc::archive::digest::StreamDigest::new();
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..take]).unwrap();
        if one_row {
            digest.feed(&block[..take]);
        }
        left -= take as u64;
    }
    if one_row {
        enc.write_all(b"\n").unwrap();
        digest.feed(b"\n");
    }
    let rows_sum = digest.finish().0.sum_bytes();
    let stored = enc.finish().unwrap();
    let rows = if one_row { 1 } else { len / 2 };
    let mut bytes = Vec::new();
    let mut index = Vec::new();
    let mut frame = |stored: &[u8], raw: u64, rows: u64, rows_sum: [u8; 16]| {
        index.push(FrameIndexEntry {
            offset: bytes.len() as u64,
            stored: stored.len() as u64,
            raw,
            rows,
            sha256: sha2::Sha256::digest(stored).into(),
            rows_sum: Some(rows_sum),
        });
        bytes.extend_from_slice(stored);
    };
    for _ in 0..n {
        frame(&stored, len, rows, rows_sum);
    }
    let end = pgarc::archive::frame::Frame::end(Codec::Zstd(1)).unwrap();
    frame(
        &end.stored,
        pgarc::archive::frame::END_MARKER.len() as u64,
        0,
        [0; 16],
    );
    (bytes, index)
}

/// Puts `bytes` and `index` in place of table `name`'s data file and frame index, with a
/// manifest that agrees: a consistent archive, as a hostile writer would make it.
fn replace_table_data(archive: &Path, name: &str, bytes: &[u8], index: &[FrameIndexEntry]) {
    let mut m = crate::util::read_manifest(archive);
    let file = crate::util::put_frame_index(archive, &mut m, name, index);
    std::fs::write(archive.join(&file), bytes).unwrap();
    crate::util::relist_file(archive, &mut m, &file);
    crate::util::write_manifest(archive, &m);
}

/// Class 5: a small archive whose consistent manifest and frame index describe frames of
/// 1 GiB is read within bounded memory. Frames of many rows over the spec's 64 MiB are
/// refused by their claim, naming the file and frame, the table reported once; frames of
/// one 1 GiB row (allowed) stream through verify in pieces.
#[test]
fn decompression_bombs_are_read_within_bounded_memory() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql("src", "CREATE TABLE t (v text); INSERT INTO t VALUES ('x')");
    let work = tempfile::tempdir().unwrap();

    // 4 frames, each 512 Mi rows of "x" in 1 GiB.
    let many = work.path().join("many");
    cluster.pgarc_dump("src", &many, &["-q", "-Z", "zstd:1"]);
    let (bytes, index) = bomb_frames(1 << 30, false, 4);
    assert!(
        bytes.len() < 2 << 20,
        "a small archive: {} bytes",
        bytes.len()
    );
    replace_table_data(&many, "t", &bytes, &index);
    let (out, rss) = output_and_peak_rss(crate::util::pgarc().args(["verify"]).arg(&many));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("frame 1") && stdout.contains("at most 64 MiB"),
        "{stdout}"
    );
    eprintln!("bomb of many-row frames: verify peaked at {rss} MiB");
    assert!(rss < 100, "verify peaked at {rss} MiB");
    cluster.create_db("dst");
    let (out, rss) = output_and_peak_rss(
        cluster
            .pgarc()
            .args(["restore", "-j", "4", "-d", "dst"])
            .arg(&many),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    eprintln!("bomb of many-row frames: restore -j 4 peaked at {rss} MiB");
    assert!(rss < 150, "restore -j 4 peaked at {rss} MiB");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "the table is reported once: {stderr}");
    assert!(
        errors[0].contains("public.t") && errors[0].contains("at most 64 MiB"),
        "{stderr}"
    );
    assert_eq!(cluster.psql("dst", "SELECT count(*) FROM t").trim(), "0");

    // 4 frames of one row of 1 GiB each: within the spec, read in bounded pieces.
    let single = work.path().join("single");
    cluster.pgarc_dump("src", &single, &["-q", "-Z", "zstd:1"]);
    let (bytes, index) = bomb_frames(1 << 30, true, 4);
    replace_table_data(&single, "t", &bytes, &index);
    let (out, rss) = output_and_peak_rss(
        crate::util::pgarc()
            .args(["verify", "-j", "4"])
            .arg(&single),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "4 GiB of rows, intact: {stdout}");
    eprintln!("frames of one 1 GiB row: verify -j 4 peaked at {rss} MiB");
    assert!(rss < 150, "verify -j 4 of 1 GiB frames peaked at {rss} MiB");
}

/// A session holding an exported snapshot (a psql with its transaction open): its id, and
/// the process to end when done.
fn export_snapshot(cluster: &Cluster, db: &str) -> (String, Child) {
    let mut child = cluster
        .client("psql")
        .args(["-X", "-q", "-A", "-t", "-d", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT pg_export_snapshot();\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Keep stdin open (the transaction lives as long as psql reads it).
    std::mem::forget(stdin);
    (line.trim().to_string(), child)
}

/// Class 7: TRUNCATE, VACUUM FULL and a rewriting ALTER TABLE committed after the snapshot
/// was exported and before pgarc locks the table make it look empty under the snapshot;
/// the dump refuses, naming exactly those tables, and writes nothing. A snapshot exported
/// after them dumps.
#[test]
fn tables_rewritten_after_the_snapshot_are_refused() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE cut AS SELECT i FROM generate_series(1, 1000) i; \
         CREATE TABLE packed AS SELECT i FROM generate_series(1, 1000) i; \
         CREATE TABLE retyped AS SELECT i FROM generate_series(1, 1000) i; \
         CREATE TABLE kept AS SELECT i FROM generate_series(1, 1000) i;",
    );
    let (snapshot, mut holder) = export_snapshot(&cluster, "src");
    assert!(snapshot.contains('-'), "{snapshot}");
    cluster.psql("src", "TRUNCATE cut");
    cluster.psql("src", "VACUUM FULL packed");
    cluster.psql("src", "ALTER TABLE retyped ALTER COLUMN i TYPE bigint");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    let out = cluster
        .pgarc_dump_cmd("src", &archive)
        .args(["-q", "--snapshot", &snapshot])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for t in ["public.cut", "public.packed", "public.retyped"] {
        assert!(stderr.contains(t), "{t} is named: {stderr}");
    }
    assert!(!stderr.contains("public.kept"), "{stderr}");
    assert!(!archive.exists(), "nothing was written");
    let _ = holder.kill();
    let _ = holder.wait();

    let (snapshot, mut holder) = export_snapshot(&cluster, "src");
    cluster.pgarc_dump("src", &archive, &["-q", "--snapshot", &snapshot]);
    assert!(archive.join("manifest.toml").exists());
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Class 8: `kill -9` of pgarc dump while pg_dump captures the schema leaves no pg_dump
/// running and no session open (the kernel kills the child with its parent).
#[test]
fn kill_9_of_a_dump_leaves_no_pg_dump() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    // Enough tables that pg_dump takes a while.
    cluster.psql(
        "src",
        "DO $$ BEGIN FOR i IN 1..1500 LOOP \
           EXECUTE format('CREATE TABLE t%s (a int PRIMARY KEY, b text, c timestamptz)', i); \
         END LOOP; END $$",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    let needle = archive.join(".pgarc-schema").display().to_string();
    let mut child = cluster
        .pgarc_dump_cmd("src", &archive)
        .args(["-q", "-j", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_cmdlines().iter().any(|c| c.contains(&needle)) {
        assert!(Instant::now() < deadline, "pg_dump never started");
        assert!(child.try_wait().unwrap().is_none(), "pgarc ended first");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = all_cmdlines()
            .into_iter()
            .filter(|c| c.contains(&needle))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_for_no_pgarc_sessions("a dump killed with SIGKILL");
}

/// Polls until a pgarc restore session is copying `table`.
fn wait_for_copy(cluster: &Cluster, child: &mut Child, table: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no COPY of {table} seen");
        assert!(child.try_wait().unwrap().is_none(), "restore ended first");
        let pid = cluster.psql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgarc restore%' \
                 AND query LIKE 'COPY%{table}%' AND state = 'active' LIMIT 1"
            ),
        );
        if !pid.trim().is_empty() {
            return pid.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Class 8, restore: a terminated worker session is named (which worker, which entry),
/// replaced, and the restore carries on, counting one error for the entry it ran; SIGINT
/// stops the restore saying what is complete and what is not (exit 130). Every claim
/// matches the database.
#[test]
fn restore_faults_are_named_and_accounted() {
    let cluster = crate::util::cluster_with_big_table(
        "CREATE TABLE small AS SELECT i FROM generate_series(1, 100) i; \
         CREATE TABLE other AS SELECT i FROM generate_series(1, 100) i;",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-q", "--frame-size", "256kB"]);

    cluster.create_db("t1");
    let mut child = crate::faults::start_restore(&cluster, &archive, "t1");
    let pid = wait_for_copy(&cluster, &mut child, "big");
    cluster.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("public.big") && errors[0].contains("session of worker"),
        "{stderr}"
    );
    assert!(stderr.contains("errors: 1"), "{stderr}");
    assert_eq!(cluster.psql("t1", "SELECT count(*) FROM big").trim(), "0");
    for t in ["small", "other"] {
        assert_eq!(
            cluster
                .psql("t1", &format!("SELECT count(*) FROM {t}"))
                .trim(),
            "100",
            "the restore carried on: {stderr}"
        );
    }

    cluster.create_db("t2");
    let mut child = crate::faults::start_restore(&cluster, &archive, "t2");
    wait_for_copy(&cluster, &mut child, "big");
    run_ok(Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("interrupted by SIGINT")
            && last.contains("tables is complete")
            && last.contains("unfinished: public.big"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(cluster.psql("t2", "SELECT count(*) FROM big").trim(), "0");
}

/// Class 9: without -Z, the archive is readable by the pg_restore of the schema's pg_dump:
/// gzip with pg_dump 15 (restored here by pg_restore 15), zstd from 16; the summary says
/// which pg_restore releases read it.
#[test]
fn the_default_codec_suits_the_pg_restore_of_the_same_release() {
    for (major, suffix, readers) in [
        (15, ".gz", "readable by pg_restore 12 and newer"),
        (18, ".zst", "built with zstd"),
    ] {
        let Some(bindir) = optional_bindir(major) else {
            continue;
        };
        let cluster = Cluster::start_in(&bindir);
        cluster.create_fixtures_db("src");
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("a");
        let stderr = cluster.pgarc_dump("src", &archive, &["-j", "2"]);
        assert!(stderr.contains(readers), "{major}: {stderr}");
        let data: Vec<String> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".dat") && n != "toc.dat")
            .collect();
        assert!(
            !data.is_empty() && data.iter().all(|n| n.ends_with(suffix)),
            "{major}: {data:?}"
        );
        cluster.create_db("dst");
        run_ok(
            cluster
                .client("pg_restore")
                .args(["-j", "2", "-d", "dst"])
                .arg(&archive),
        );
        cluster.assert_same_db(&cluster.db_state("src"), "dst");
    }
}

/// Class 6, long mode (`cargo test -- --include-ignored`, which the test command runs):
/// 100,000 tables with 63-byte names that share no prefix dump and restore, with pg_dump 15
/// and 18 (pg_dump's argument list overflowed at about 30,000 such tables).
#[test]
#[ignore = "long: 100,000 tables; the test command runs it"]
fn a_hundred_thousand_long_named_tables_dump_and_restore() {
    for major in [15, 18] {
        let Some(bindir) = optional_bindir(major) else {
            continue;
        };
        // pg_dump and pgarc's snapshot holder each lock every table in one transaction.
        let cluster = Cluster::start_in_with(&bindir, "-c max_locks_per_transaction=8192");
        cluster.create_db("src");
        let script: String = (0..100)
            .map(|b| {
                format!(
                    "DO $$ BEGIN FOR i IN {}..{} LOOP EXECUTE format('CREATE TABLE %I (a int)', \
                     't' || substr(md5(i::text) || md5((i * 7)::text), 1, 62)); END LOOP; END $$;\n",
                    b * 1000 + 1,
                    b * 1000 + 1000
                )
            })
            .collect();
        cluster.psql_script("src", &script);
        cluster.psql("src", "INSERT INTO t00003e3b9e5336685200ae85d21b4f5e25ad9ce1aa05cd81fbe57b5e9434ed VALUES (1), (2)");
        let count = "SELECT count(*), min(length(relname)), max(length(relname)) FROM pg_class \
                     WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace";
        assert_eq!(cluster.psql("src", count).trim(), "100000|63|63");
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("a");
        cluster.pgarc_dump("src", &archive, &["-q", "-j", "2"]);
        let m = crate::util::read_manifest(&archive);
        assert_eq!(m.tables.len(), 100_000, "{major}");
        cluster.create_db("dst");
        run_ok(
            cluster
                .pgarc()
                .args(["restore", "-q", "-j", "2", "-d", "dst"])
                .arg(&archive),
        );
        assert_eq!(cluster.psql("dst", count).trim(), "100000|63|63", "{major}");
        assert_eq!(
            cluster
                .psql(
                    "dst",
                    "SELECT sum(a) FROM t00003e3b9e5336685200ae85d21b4f5e25ad9ce1aa05cd81fbe57b5e9434ed"
                )
                .trim(),
            "3",
            "{major}"
        );
    }
}

/// Class 8: a FIFO in place of a data file is named as not a regular file (not "missing"),
/// by restore and verify alike, at once (reading it would block), and the database is not
/// touched.
#[test]
fn a_fifo_as_a_data_file_is_named_and_never_read() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE t AS SELECT i FROM generate_series(1, 10) i",
    );
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-q"]);
    let m = crate::util::read_manifest(&archive);
    let data = archive.join(&m.tables[0].file);
    std::fs::remove_file(&data).unwrap();
    nix::unistd::mkfifo(&data, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    cluster.create_db("dst");
    let out = output_within(
        cluster.pgarc().args(["restore", "-d", "dst"]).arg(&archive),
        Duration::from_secs(60),
        "restore with a FIFO",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file (a FIFO)"), "{stderr}");
    assert!(
        !stderr.contains("missing") && !stderr.contains("refused: refused"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        cluster
            .psql("dst", "SELECT count(*) FROM pg_class WHERE relname = 't'")
            .trim(),
        "0"
    );
    let out = output_within(
        crate::util::pgarc().arg("verify").arg(&archive),
        Duration::from_secs(60),
        "verify with a FIFO",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("not a regular file"), "{stdout}");
}
