//! `pgarc dump` against real servers and the stock tools (issue 3's acceptance): the fixtures
//! database restores with stock pg_restore `-j 4` and `-j 1` to an equal database; the COPY
//! text equals pg_dump's; split tables; consistency under a concurrent workload; a killed
//! snapshot holder; the manifest's checksums; no password anywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgarc::archive::frame::Codec;
use pgarc::archive::manifest::Manifest;
use pgarc::archive::toc::{Toc, TocEntry};

use crate::util::{
    all_cmdlines, default_bindir, newest_bindir, run_ok, sorted_byte_lines, Cluster,
};

fn pg_restore(cluster: &Cluster, archive: &Path, db: &str, jobs: &str) {
    cluster.create_db(db);
    run_ok(
        cluster
            .client("pg_restore")
            .args(["-j", jobs, "-d", db])
            .arg(archive),
    );
}

fn read_manifest(archive: &Path) -> Manifest {
    crate::util::read_manifest(archive)
}

/// The decompressed content of a pgarc data file, frame by frame through its index.
fn pgarc_data(
    archive: &Path,
    codec: Codec,
    record: &pgarc::archive::manifest::TableRecord,
) -> Vec<u8> {
    let bytes = std::fs::read(archive.join(&record.file)).unwrap();
    let frames = crate::util::frame_index_of(archive, record);
    let mut out = Vec::new();
    for f in frames {
        let stored = &bytes[f.offset as usize..(f.offset + f.stored) as usize];
        out.extend(codec.decode(stored, f.raw as usize).unwrap());
    }
    out
}

/// `pg_restore -l` entry lines without their dumpIds, sorted.
fn entries_without_ids(cluster: &Cluster, archive: &Path) -> Vec<String> {
    let out = run_ok(cluster.client("pg_restore").arg("-l").arg(archive));
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.is_empty())
        .map(|l| l.split_once("; ").map_or(l, |(_, rest)| rest).to_string())
        .collect();
    lines.sort();
    lines
}

fn table_data(toc: &Toc) -> BTreeMap<(String, String), TocEntry> {
    toc.entries
        .iter()
        .filter(|e| e.desc.is("TABLE DATA"))
        .map(|e| {
            let key = (
                e.namespace.to_str_lossy().unwrap().into_owned(),
                e.tag.to_str_lossy().unwrap().into_owned(),
            );
            (key, e.clone())
        })
        .collect()
}

/// Acceptance 1 and 2 on one server: the fixtures database, dumped with `-j 4`, restored by
/// stock pg_restore `-j 4` and `-j 1`, equals the source; every table's COPY text equals the
/// one stock pg_dump writes; the TOC has the same entries as pg_dump's.
fn fixtures_round_trip(cluster: &Cluster, compress: Option<&str>) {
    cluster.create_fixtures_db("src");
    let expected = cluster.db_state("src");
    assert!(expected.tables.len() > 15 && !expected.large_objects.is_empty());
    assert!(expected.matviews.iter().any(|m| m.contains("|unpopulated")));
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("pgarc");
    let mut args = vec!["-j", "4"];
    if let Some(z) = compress {
        args.extend(["-Z", z]);
    }
    let summary = cluster.pgarc_dump("src", &archive, &args);
    assert!(summary.contains("tables,"), "summary: {summary}");

    pg_restore(cluster, &archive, "restored_j4", "4");
    cluster.assert_same_db(&expected, "restored_j4");
    pg_restore(cluster, &archive, "restored_j1", "1");
    cluster.assert_same_db(&expected, "restored_j1");

    // Against stock pg_dump -Fd of the same database.
    let stock = work.path().join("stock");
    cluster.stock_dump_uncompressed("src", &stock);
    assert_eq!(
        entries_without_ids(cluster, &archive),
        entries_without_ids(cluster, &stock),
        "pgarc's TOC must hold exactly the entries of pg_dump's"
    );
    let manifest = read_manifest(&archive);
    let codec = Codec::parse(&manifest.options.compression).unwrap();
    let ours = table_data(&Toc::read_file(&archive.join("toc.dat")).unwrap());
    let theirs = table_data(&Toc::read_file(&stock.join("toc.dat")).unwrap());
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (key, their_entry) in &theirs {
        let our_entry = &ours[key];
        assert_eq!(
            our_entry.copy_stmt, their_entry.copy_stmt,
            "copyStmt of {key:?}"
        );
        assert_eq!(our_entry.owner, their_entry.owner, "owner of {key:?}");
        let record = manifest
            .tables
            .iter()
            .find(|t| t.dump_id == our_entry.dump_id)
            .expect("every TABLE DATA entry is in the manifest");
        let our_data = pgarc_data(&archive, codec, record);
        let their_file = their_entry.filename.to_str_lossy().unwrap().into_owned();
        let their_data = std::fs::read(stock.join(their_file)).unwrap();
        assert_eq!(
            sorted_byte_lines(&our_data),
            sorted_byte_lines(&their_data),
            "COPY text of {key:?}"
        );
        assert!(our_data.ends_with(b"\\.\n\n\n"));
        assert_eq!(
            record.rows as usize,
            their_data.iter().filter(|&&b| b == b'\n').count() - 3,
            "rows of {key:?}"
        );
    }
}

#[test]
fn fixtures_restore_with_stock_pg_restore_and_match_pg_dump() {
    // The default server with gzip (its pg_restore may be 15, which reads no zstd), and the
    // newest available release with the default compression, zstd.
    let cluster = Cluster::start();
    fixtures_round_trip(&cluster, Some("gzip"));
    drop(cluster);
    let newest = newest_bindir();
    if newest != default_bindir() {
        let cluster = Cluster::start_in(&newest);
        fixtures_round_trip(&cluster, None);
    }
}

/// pgarc keeps pg_dump from writing table data with prefix-tree patterns
/// (`--exclude-table-data`, one per 500 tables of a schema). Names that share prefixes, hold
/// pattern and regular-expression characters, quotes, dots, upper case and non-ASCII letters,
/// next to sequences and a materialized view whose names extend the tables' names: pg_dump
/// must write the data of none of the tables (else pgarc stops with an internal error) and
/// keep every sequence value and matview refresh, so the TOC equals pg_dump's and the
/// database round-trips.
#[test]
fn exclusion_patterns_exclude_exactly_the_tables() {
    let cluster = Cluster::start();
    cluster.create_db("src");
    let mut script = String::from("CREATE SCHEMA \"Odd.Schema|x\";\n");
    for name in [
        "t", "t1", "t10", "t1x", "T1", "a.b", "a|b", "a(1)", "x*", "y?", "$z", "q\"\"q", "ünï",
        "ü", "tab le",
    ] {
        let ident = format!("\"{}\"", name);
        script.push_str(&format!(
            "CREATE TABLE public.{ident} (id int); INSERT INTO public.{ident} VALUES (1), (2);\n\
             CREATE TABLE \"Odd.Schema|x\".{ident} (id int); \
             INSERT INTO \"Odd.Schema|x\".{ident} VALUES (3);\n"
        ));
    }
    // Relations whose names the table patterns must not match.
    script.push_str(
        "CREATE SEQUENCE public.t1_seq; SELECT setval('public.t1_seq', 41);\n\
         CREATE SEQUENCE public.\"t100\"; SELECT setval('public.t100', 7);\n\
         CREATE SEQUENCE \"Odd.Schema|x\".\"a.bc\"; SELECT setval('\"Odd.Schema|x\".\"a.bc\"', 9);\n\
         CREATE MATERIALIZED VIEW public.t1v AS SELECT * FROM public.t1;\n",
    );
    cluster.psql_script("src", &script);
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("pgarc");
    cluster.pgarc_dump("src", &archive, &["-j", "2", "-Z", "gzip"]);
    let stock = work.path().join("stock");
    cluster.stock_dump_uncompressed("src", &stock);
    let ours = entries_without_ids(&cluster, &archive);
    assert_eq!(ours, entries_without_ids(&cluster, &stock));
    assert_eq!(
        ours.iter().filter(|l| l.contains("SEQUENCE SET")).count(),
        3
    );
    assert_eq!(
        ours.iter()
            .filter(|l| l.contains("MATERIALIZED VIEW DATA"))
            .count(),
        1
    );
    assert_eq!(ours.iter().filter(|l| l.contains("TABLE DATA")).count(), 30);
    pg_restore(&cluster, &archive, "restored", "2");
    cluster.assert_same_db(&expected, "restored");
    assert_eq!(
        cluster
            .psql("restored", "SELECT last_value FROM public.t1_seq")
            .trim(),
        "41"
    );
}

/// A table of about `mb` MiB: `rows` rows of 200 bytes of text.
fn create_big_table(cluster: &Cluster, db: &str, table: &str, mb: u32) {
    cluster.psql(
        db,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, payload text, n numeric);
             INSERT INTO {table} SELECT g, repeat(md5(g::text), 6), g / 7.0
             FROM generate_series(1, {mb} * 4000) g;
             ANALYZE {table};"
        ),
    );
}

#[test]
fn big_tables_are_split_across_workers_and_still_restore() {
    let cluster = Cluster::start();
    cluster.create_db("src");
    create_big_table(&cluster, "src", "public.big", 12);
    cluster.psql(
        "src",
        "CREATE TABLE small (a int); INSERT INTO small VALUES (1), (2);",
    );
    let expected = cluster.db_state("src");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    let summary = cluster.pgarc_dump(
        "src",
        &archive,
        &["-j", "4", "-Z", "gzip:1", "--split-size", "1MB"],
    );
    let line = summary
        .lines()
        .find(|l| l.contains("split table public.big"))
        .unwrap_or_else(|| panic!("no split line in the summary:\n{summary}"));
    // "split table public.big: N chunks, copied by W workers, A at once"
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (chunks, workers, at_once) = (nums[0], nums[1], nums[2]);
    assert!(chunks >= 8, "{line}");
    assert!(workers >= 2 && at_once >= 2, "{line}");
    let manifest = read_manifest(&archive);
    let big = manifest.tables.iter().find(|t| t.name == "big").unwrap();
    assert_eq!(big.rows, 48_000);
    assert!(big.frames > 2, "several frames: {big:?}");
    pg_restore(&cluster, &archive, "r4", "4");
    cluster.assert_same_db(&expected, "r4");
    pg_restore(&cluster, &archive, "r1", "1");
    cluster.assert_same_db(&expected, "r1");
}

#[test]
fn dump_is_consistent_under_concurrent_transfers() {
    let cluster = Cluster::start();
    cluster.create_db("bank");
    cluster.psql(
        "bank",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         CREATE TABLE ledger (id bigserial PRIMARY KEY, account int NOT NULL, amount bigint NOT NULL, memo text);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
         INSERT INTO ledger (account, amount, memo) SELECT g, 1000, 'opening' FROM generate_series(1, 100) g;
         -- history that nets to zero per account, so that the ledger is big enough to split
         INSERT INTO ledger (account, amount, memo)
           SELECT g % 100 + 1, CASE WHEN g % 200 < 100 THEN 7 ELSE -7 END, repeat(md5(g::text), 4)
           FROM generate_series(0, 199999) g;
         CREATE PROCEDURE transfers(n int) LANGUAGE plpgsql AS $$
         DECLARE a int; b int; amt int;
         BEGIN
           FOR i IN 1..n LOOP
             a := 1 + floor(random() * 100); b := 1 + floor(random() * 100); amt := 1 + floor(random() * 50);
             INSERT INTO ledger (account, amount, memo) VALUES (a, -amt, 'out'), (b, amt, 'in');
             UPDATE accounts SET balance = balance - amt WHERE id = a;
             UPDATE accounts SET balance = balance + amt WHERE id = b;
             COMMIT;
           END LOOP;
         END $$;",
    );
    let check = "SELECT count(*) FILTER (WHERE a.balance <> coalesce(l.s, 0)) || ' ' || sum(a.balance)
                 FROM accounts a LEFT JOIN (SELECT account, sum(amount) s FROM ledger GROUP BY account) l
                 ON l.account = a.id";
    assert_eq!(cluster.psql("bank", check).trim(), "0 100000");
    let count = || -> u64 {
        cluster
            .psql("bank", "SELECT count(*) FROM ledger")
            .trim()
            .parse()
            .unwrap()
    };
    let mut workload = cluster
        .client("psql")
        .args(["-X", "-q", "-d", "bank", "-c", "CALL transfers(100000000)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before_wait = count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < before_wait + 200 {
        assert!(Instant::now() < deadline, "the workload does not commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = count();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump(
        "bank",
        &archive,
        &["-j", "4", "-Z", "gzip:1", "--split-size", "2MB"],
    );
    let after = count();
    let _ = workload.kill();
    let _ = workload.wait();
    assert!(
        after > before,
        "transfers committed while the dump ran ({before} -> {after})"
    );
    let manifest = read_manifest(&archive);
    let ledger = manifest.tables.iter().find(|t| t.name == "ledger").unwrap();
    assert!(ledger.rows as u64 > 200_100, "the snapshot holds transfers");
    pg_restore(&cluster, &archive, "copy", "4");
    assert_eq!(
        cluster.psql("copy", check).trim(),
        "0 100000",
        "every balance equals its ledger and the total is unchanged"
    );
    assert_eq!(
        cluster.psql("copy", "SELECT count(*) FROM ledger").trim(),
        ledger.rows.to_string()
    );
}

#[test]
fn killing_the_snapshot_holder_stops_the_dump_without_a_manifest() {
    let cluster = Cluster::start();
    cluster.create_db("src");
    create_big_table(&cluster, "src", "public.big", 40);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    let mut child = cluster
        .pgarc()
        .args(["dump", "-d", "src", "-j", "1", "-Z", "gzip:9", "-f"])
        .arg(&archive)
        .arg("--pg-dump")
        .arg(cluster.bindir.join("pg_dump"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        assert!(Instant::now() < deadline, "the dump never reached COPY");
        if child.try_wait().unwrap().is_some() {
            panic!("the dump finished before the snapshot holder could be killed");
        }
        let copying = cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgarc worker 1' AND query LIKE 'COPY%' AND state = 'active'",
        );
        if copying.trim() == "1" {
            let r = cluster.psql(
                "postgres",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgarc snapshot holder'",
            );
            break r.trim() == "t";
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(killed, "the snapshot holder was found and terminated");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("snapshot lost"), "stderr: {stderr}");
    assert!(stderr.contains("incomplete"), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!archive.join("manifest.toml").exists());
    cluster.wait_for_no_pgarc_sessions("a dump whose snapshot holder was killed");
}

fn sha256sum(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Every file under `dir`, relative, `/`-separated.
fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

const PASSWORD: &str = "Pw-7f3c1e-never-printed";

/// A server that asks for passwords, with the fixtures in `src` and a role `backup` whose
/// password is [`PASSWORD`].
fn password_cluster() -> Cluster {
    let cluster = Cluster::start_password_auth();
    cluster.create_fixtures_db("src");
    // On psql's standard input, not its argv: another test watches every process's argv
    // for the password while it dumps, and must see only what pgarc and pg_dump put there.
    cluster.psql_script(
        "postgres",
        &format!("CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{PASSWORD}';\n"),
    );
    cluster
}

/// Runs `pgarc dump` with no password given, in a pseudo-terminal (script(1)), typing
/// [`PASSWORD`] once the prompt is shown: the exit status and what the terminal showed.
fn dump_answering_the_prompt(cluster: &Cluster, out: &Path) -> (std::process::ExitStatus, String) {
    let mut script = Command::new("script");
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            script.env_remove(k);
        }
    }
    let mut child = script
        .args(["-qec"])
        .arg(format!(
            "{} dump -h 127.0.0.1 -p {} -U backup -d src -f {} --pg-dump {}",
            env!("CARGO_BIN_EXE_pgarc"),
            cluster.port,
            out.display(),
            cluster.bindir.join("pg_dump").display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Answer only once the prompt is shown.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        let mut stdin = child.stdin.take();
        let mut answered = None;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.ends_with(b": ") {
                if let Some(mut input) = stdin.take() {
                    use std::io::Write as _;
                    // rpassword prints the prompt, then turns echo off: leave it that moment.
                    std::thread::sleep(Duration::from_millis(300));
                    writeln!(input, "{PASSWORD}").unwrap();
                    // Kept open until the dump ends.
                    answered = Some(input);
                }
            }
        }
        let status = child.wait().unwrap();
        drop(answered);
        (status, String::from_utf8_lossy(&all).into_owned())
    });
    reader.join().unwrap()
}

/// The manifest lists every file with the size and SHA-256 sha256sum computes, and the
/// password reaches no argv (pgarc's or pg_dump's), no output and no archive file.
#[test]
fn manifest_checksums_match_sha256sum_and_no_password_leaks() {
    let cluster = password_cluster();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");

    // Watch every process's argv while the dump runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut leaks, mut pg_dumps) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for c in all_cmdlines() {
                    if c.contains(PASSWORD) {
                        leaks.push(c.clone());
                    }
                    if c.contains("pg_dump") && c.contains("--snapshot") {
                        pg_dumps += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (leaks, pg_dumps)
        })
    };
    let out = crate::util::pgarc()
        .env("PGPASSWORD", PASSWORD)
        .args(["dump", "-h", "127.0.0.1", "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "backup", "-d", "src", "-j", "2", "-f"])
        .arg(&archive)
        .arg("--pg-dump")
        .arg(cluster.bindir.join("pg_dump"))
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (leaks, pg_dumps) = watcher.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(pg_dumps > 0, "the watcher saw the pg_dump child");
    assert!(leaks.is_empty(), "password in argv: {leaks:?}");
    assert!(!stderr.contains(PASSWORD) && !String::from_utf8_lossy(&out.stdout).contains(PASSWORD));

    let manifest = read_manifest(&archive);
    assert_eq!(
        manifest.snapshot_id.split('-').count(),
        3,
        "{}",
        manifest.snapshot_id
    );
    assert!(manifest
        .server_version
        .starts_with(&cluster.version.major.to_string()));
    let listed: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
    let mut on_disk = all_files(&archive);
    on_disk.retain(|f| f != "manifest.toml");
    assert_eq!(listed, on_disk, "the manifest lists every file");
    for f in &manifest.files {
        let path = archive.join(&f.path);
        assert_eq!(sha256sum(&path), f.sha256, "{}", f.path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            f.size,
            "{}",
            f.path
        );
    }
    for f in all_files(&archive) {
        let bytes = std::fs::read(archive.join(&f)).unwrap();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "password in {f}"
        );
    }
}

/// Passwords come from libpq's sources (PGPASSWORD, the prompt on a terminal, the password
/// file), and a wrong or missing one is one line that says how to give it.
#[test]
fn passwords_come_from_libpqs_sources_and_fail_clearly() {
    let cluster = password_cluster();
    let work = tempfile::tempdir().unwrap();
    // A wrong password: one line naming the problem and the fix, exit 1, no archive.
    let out = crate::util::pgarc()
        .env("PGPASSWORD", "wrong")
        .args(["dump", "-h", "127.0.0.1", "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "backup", "-d", "src", "-f"])
        .arg(work.path().join("b"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed") && stderr.contains("PGPASSWORD"),
        "{stderr}"
    );
    assert!(!work.path().join("b").exists());

    // No password at all, -w: the error says how to give one.
    let out = crate::util::pgarc()
        .env("HOME", work.path())
        .args(["dump", "-w", "-h", "127.0.0.1", "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "backup", "-d", "src", "-f"])
        .arg(work.path().join("c"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("asks for a password"), "{stderr}");

    // No password given, but a terminal: pgarc asks, like libpq programs.
    let (status, text) = dump_answering_the_prompt(&cluster, &work.path().join("tty"));
    assert!(status.success(), "{text}");
    assert!(text.contains("Password for user backup:"), "{text}");
    assert!(!text.contains(PASSWORD), "the prompt does not echo: {text}");
    assert!(work.path().join("tty/manifest.toml").exists());

    // The password file works, with the right permissions.
    use std::os::unix::fs::PermissionsExt;
    let pgpass = work.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:*:*:backup:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = crate::util::pgarc()
        .env("PGPASSFILE", &pgpass)
        .args(["dump", "-w", "-h", "127.0.0.1", "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "backup", "-d", "src", "-Z", "none", "-f"])
        .arg(work.path().join("d"))
        .arg("--pg-dump")
        .arg(cluster.bindir.join("pg_dump"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_gets_one_line_errors() {
    let cluster = Cluster::start();
    cluster.create_db("src");
    let work = tempfile::tempdir().unwrap();
    let one_line_failure = |cmd: &mut Command, needle: &str| {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    // A non-empty output directory.
    let full = work.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "x").unwrap();
    one_line_failure(
        cluster.pgarc().args(["dump", "-d", "src", "-f"]).arg(&full),
        "not empty",
    );
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    one_line_failure(
        crate::util::pgarc()
            .args([
                "dump",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "src",
                "-f",
            ])
            .arg(work.path().join("a")),
        "is the server running",
    );
    // A database that does not exist.
    one_line_failure(
        cluster
            .pgarc()
            .args(["dump", "-d", "nosuchdb", "-f"])
            .arg(work.path().join("b")),
        "does not exist",
    );
    // pg_dump missing, or older than the server.
    one_line_failure(
        cluster
            .pgarc()
            .args([
                "dump",
                "-d",
                "src",
                "--pg-dump",
                "/nonexistent/pg_dump",
                "-f",
            ])
            .arg(work.path().join("c")),
        "could not run /nonexistent/pg_dump",
    );
    let old = work.path().join("pg_dump");
    std::fs::write(&old, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    one_line_failure(
        cluster
            .pgarc()
            .env("PGARC_PG_DUMP", &old)
            .args(["dump", "-d", "src", "-f"])
            .arg(work.path().join("d")),
        "older than the server",
    );
    // Bad options.
    one_line_failure(
        cluster
            .pgarc()
            .args(["dump", "-d", "src", "-Z", "lz5", "-f"])
            .arg(work.path().join("e")),
        "unknown compression",
    );
    one_line_failure(
        cluster
            .pgarc()
            .args(["dump", "-d", "src", "--snapshot", "x'; DROP", "-f"])
            .arg(work.path().join("f")),
        "invalid snapshot id",
    );
}
