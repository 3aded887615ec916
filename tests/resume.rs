//! Issue 21 (resume), first step: `pgarc snapshot`, the process that holds a snapshot for
//! dumps to import, and to resume under, until it is told to stop.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{newest_bindir, run_ok, Cluster};

fn cluster_with_rows() -> Cluster {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    cluster
}

/// Starts `pgarc snapshot -d src ARGS` and reads the id it prints.
fn hold(cluster: &Cluster, args: &[&str], stdin: Stdio) -> (Child, String) {
    let mut child = cluster
        .pgarc()
        .args(["snapshot", "-d", "src"])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let id = line.trim().to_string();
    assert!(
        pgarc::pg::session::valid_snapshot_id(&id) && id.contains('-'),
        "a snapshot id on stdout: {line:?}"
    );
    (child, id)
}

/// [`hold`] with `--id-file` in a new temporary directory.
fn hold_with_id_file(cluster: &Cluster) -> (tempfile::TempDir, PathBuf, Child, String) {
    let work = tempfile::tempdir().unwrap();
    let id_file = work.path().join("snap.id");
    let (child, id) = hold(
        cluster,
        &["--id-file", &id_file.display().to_string()],
        Stdio::null(),
    );
    (work, id_file, child, id)
}

fn signal(child: &Child, name: &str) {
    crate::util::send_signal(child.id(), name);
}

/// Waits for `child` (at most a minute): its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "pgarc snapshot did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_held_snapshot_serves_dumps_until_it_is_released() {
    let cluster = cluster_with_rows();
    let (work, id_file, child, id) = hold_with_id_file(&cluster);
    assert_eq!(std::fs::read_to_string(&id_file).unwrap().trim(), id);
    let mode = std::fs::metadata(&id_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the id file is private");
    // Rows committed after the snapshot are not in a dump under it, however late it runs.
    cluster.psql(
        "src",
        "INSERT INTO t SELECT g FROM generate_series(1001, 2000) g",
    );
    std::thread::sleep(Duration::from_millis(300));
    let archive = work.path().join("a");
    cluster.pgarc_dump("src", &archive, &["-j", "2", "--snapshot", &id]);
    let m = crate::util::read_manifest(&archive);
    assert_eq!(m.snapshot_id, id);
    assert!(m.options.snapshot_imported);
    cluster.create_db("restored");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-d", "restored"])
            .arg(&archive),
    );
    assert_eq!(
        cluster.psql("restored", "SELECT count(*) FROM t").trim(),
        "1000"
    );

    signal(&child, "TERM");
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("released snapshot {id}")),
        "{stderr}"
    );
    assert!(!id_file.exists(), "the id file goes with the snapshot");
    // The snapshot is gone: a dump that names it is refused in one line.
    let out = cluster
        .pgarc_dump_cmd("src", &work.path().join("b"))
        .args(["--snapshot", &id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot import snapshot"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn end_of_input_releases_it_and_a_lost_session_is_said() {
    let cluster = cluster_with_rows();
    // --until-eof: the parent closes the pipe.
    let (mut child, _) = hold(&cluster, &["--until-eof", "-q"], Stdio::piped());
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "still holding");
    drop(child.stdin.take());
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "-q: nothing on stderr");

    // SIGINT releases it too.
    let (child, _) = hold(&cluster, &[], Stdio::null());
    signal(&child, "INT");
    assert_eq!(finish(child).0, Some(0));

    // The holder's backend terminated: exit 1, one line, the id file removed.
    let (_work, id_file, child, id) = hold_with_id_file(&cluster);
    cluster.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'pgarc snapshot holder'",
    );
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("snapshot lost") && last.contains(&id),
        "{stderr}"
    );
    assert!(!id_file.exists());
}

// ---- `pgarc dump --resume` (issue 21, acceptance 1, 3 and 4) ----

/// A source database for the kill points: `big` (300,000 rows, split into ctid-range chunks
/// of 4 MB), 30 small tables, 16 large objects, and `log`, which a concurrent workload writes
/// to while the dumps run. Every dump runs with 64 kB frames, so each table has many frames.
fn resume_source() -> Cluster {
    crate::util::cluster_with_big_table(
        "SELECT count(lo_from_bytea(0, convert_to(repeat(md5(g::text), g * 40), 'UTF8'))) \
         FROM generate_series(1, 16) g; \
         CREATE TABLE log (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now()); \
         INSERT INTO log (v) SELECT g FROM generate_series(1, 20000) g; \
         DO $$ BEGIN FOR i IN 1..30 LOOP \
           EXECUTE format('CREATE TABLE small_%s AS SELECT g, md5(g::text) AS h \
                           FROM generate_series(1, %s) g', i, i * 50); \
         END LOOP; END $$;",
    )
}

/// Writes to `src` (inserts, updates of the split table, deletes) until `stop` is set: what
/// a dump under an older snapshot must not see.
fn workload(cluster: &Cluster, stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut rounds = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        cluster.psql(
            "src",
            &format!(
                "INSERT INTO log (v) SELECT g FROM generate_series(1, 200) g; \
                 UPDATE big SET h = md5(h) WHERE id % 997 = {rounds}; \
                 DELETE FROM log WHERE id % 13 = {};",
                rounds % 13
            ),
        );
        rounds += 1;
    }
    rounds
}

/// A deterministic sequence of numbers in [0, 1) (xorshift64*), so that a failing kill point
/// can be replayed from the seed the assertion prints.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where a dump is killed with SIGKILL.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// A kill point inside pgarc (`PGARC_TEST_KILL_AT`).
    At(&'static str),
    /// While its pg_dump child is capturing the schema.
    WhilePgDump,
    /// This long after the journal's first record is durable.
    After(Duration),
}

/// The process ids of the children of `pid` whose command is `name`.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let comm = comm.split_once(" (")?.1;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == pid && comm == name).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// Runs `cmd` and kills it as `kill` says; `journal` is the file whose existence shows the
/// journal's first record. Returns whether the dump was killed (not finished first).
fn run_and_kill(mut cmd: Command, kill: Kill, journal: &std::path::Path) -> bool {
    if let Kill::At(point) = kill {
        cmd.env(pgarc::run::KILL_AT_VAR, point);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fired = false;
    let mut journal_seen: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            return match kill {
                Kill::At(_) => {
                    assert_eq!(status.code(), None, "killed at its kill point: {stderr}");
                    true
                }
                _ if fired => true,
                _ => {
                    assert!(status.success(), "{stderr}");
                    false
                }
            };
        }
        assert!(Instant::now() < deadline, "the dump did not end");
        match kill {
            Kill::At(_) => {}
            // Not `pg_dump --version`, which runs before the plan: the capture.
            Kill::WhilePgDump
                if !fired
                    && journal.exists()
                    && !children_named(child.id(), "pg_dump").is_empty() =>
            {
                signal(&child, "KILL");
                fired = true;
            }
            Kill::After(delay) if !fired => {
                if journal_seen.is_none() && journal.exists() {
                    journal_seen = Some(Instant::now());
                }
                if journal_seen.is_some_and(|t| t.elapsed() >= delay) {
                    signal(&child, "KILL");
                    fired = true;
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `resume` object of a `--report` file: (run, kept, done, redone).
fn resume_counts(report: &std::path::Path) -> (u64, u64, u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let r = &v["resume"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("resume.{k} in {v}"));
    (n("run"), n("kept"), n("done"), n("redone"))
}

/// The twenty kill points of acceptance 1: fixed ones (during pg_dump's capture, right after
/// it, right before and right after the manifest) and random instants over the copy, drawn
/// from `seed`; `n` of them.
fn kill_points(seed: u64, n: usize, span: Duration) -> Vec<Kill> {
    let mut points = vec![
        Kill::WhilePgDump,
        Kill::At("schema-captured"),
        Kill::At("before-manifest"),
        Kill::At("after-manifest"),
    ];
    let mut rng = Seeded(seed);
    while points.len() < n {
        points.push(Kill::After(span.mul_f64(rng.next() * 0.9)));
    }
    points
}

/// One store's half of acceptance 1: each kill point, then `--resume`, `verify`, and a restore
/// compared with the restore of an uninterrupted dump under the same snapshot.
struct DumpKills<'a> {
    cluster: &'a Cluster,
    snapshot: &'a str,
    expected: &'a crate::util::DbState,
    work: &'a std::path::Path,
    /// The S3 server, for `s3://` archives.
    s3: Option<&'a crate::util::s3::S3Server>,
}

const DUMP_ARGS: [&str; 8] = [
    "-j",
    "4",
    "--split-size",
    "4MB",
    "--frame-size",
    "64kB",
    "--pg-dump",
    "",
];

impl DumpKills<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.cluster.pgarc();
        if let Some(s3) = self.s3 {
            s3.env(&mut cmd);
        }
        cmd.args(args);
        cmd
    }

    /// The first run's command: `pgarc dump` into `target` under the held snapshot.
    fn dump_command(&self, target: &str, pg_dump: &str) -> Command {
        let mut args = DUMP_ARGS.to_vec();
        args[7] = pg_dump;
        let mut dump = self.command(&["dump", "-d", "src", "-f", target]);
        dump.args(["--snapshot", self.snapshot]).args(&args);
        dump
    }

    /// The file that holds the manifest of the archive at kill point `n`: it is there once
    /// the archive is complete.
    fn manifest(&self, n: usize) -> PathBuf {
        let file = pgarc::archive::manifest::MANIFEST_FILE;
        match self.s3 {
            Some(s3) => s3.object_file(&format!("kill{n}/{file}")),
            None => self.work.join(format!("kill{n}")).join(file),
        }
    }

    /// The archive's location and the file that shows its journal began.
    fn target(&self, n: usize) -> (String, PathBuf) {
        match self.s3 {
            Some(s3) => {
                let prefix = format!("kill{n}");
                let journal = s3.object_file(&format!("{prefix}/pgarc/journal.d/0000000000.rec"));
                (
                    format!("s3://{}/{prefix}", crate::util::s3::BUCKET),
                    journal,
                )
            }
            None => {
                let dir = self.work.join(format!("kill{n}"));
                let journal = dir.join("pgarc/journal");
                (dir.display().to_string(), journal)
            }
        }
    }

    /// Kills a dump as `kill` says, resumes it and checks the archive. Returns whether the
    /// resume continued a data file of the killed run in place (in a directory archive, a
    /// file the killed run had not finished is in the resumed archive under its name, where a
    /// rewrite names it for run 2).
    fn run(&self, n: usize, kill: Kill) -> bool {
        let (target, journal) = self.target(n);
        let pg_dump = self.cluster.bindir.join("pg_dump").display().to_string();
        let killed = run_and_kill(self.dump_command(&target, &pg_dump), kill, &journal);
        // A kill that lands after the manifest was written (the `after-manifest` point, or a
        // timed kill the dump outran by a hair) leaves a complete archive: by the archive's
        // state, not by whether the signal landed, is the resume's answer decided.
        let complete = self.manifest(n).exists();
        assert!(
            killed || complete,
            "kill point {n}: the dump ended without its manifest"
        );
        let partial: Vec<String> = match self.s3 {
            Some(_) => Vec::new(),
            None => unfinished_chunks(&journal)
                .iter()
                .map(|r| r["file"].as_str().unwrap().to_string())
                .collect(),
        };
        let report = self.work.join(format!("report{n}.json"));
        let out = self
            .command(&[
                "dump",
                "--resume",
                "-d",
                "src",
                "-j",
                "4",
                "-f",
                &target,
                "--pg-dump",
                &pg_dump,
            ])
            .arg("--report")
            .arg(&report)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("kill point {n} ({kill:?}, killed: {killed}) into {target}");
        if matches!(kill, Kill::At("after-manifest")) {
            assert!(
                complete,
                "{what}: no manifest after the after-manifest kill point"
            );
        }
        if complete {
            // The archive was complete: nothing to resume, and no journal is left.
            assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
            assert!(stderr.contains("nothing to resume"), "{what}: {stderr}");
            assert!(!journal.exists(), "{what}: the journal was left: {stderr}");
        } else {
            assert!(out.status.success(), "{what}: {stderr}");
            let (run, kept, done, redone) = resume_counts(&report);
            assert_eq!(run, 2, "{what}");
            // Bounded redo: at most one chunk per worker of the killed run.
            assert!(
                redone <= 4,
                "{what}: {redone} chunks copied again: {stderr}"
            );
            assert!(redone <= done, "{what}");
            assert!(kept + done > 0, "{what}");
        }
        self.check(&target, n, &what);
        partial
            .iter()
            .any(|f| std::path::Path::new(&target).join(f).exists())
    }

    /// The archive at `target` verifies and restores equal to the snapshot.
    fn check(&self, target: &str, n: usize, what: &str) {
        let verified = self.command(&["verify", target]).output().unwrap();
        assert!(
            verified.status.success(),
            "{what}: verify: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let db = format!("resumed{n}");
        self.cluster.create_db(&db);
        run_ok(&mut self.command(&["restore", "-j", "2", "-d", &db, target]));
        same_as_snapshot(self.cluster, self.expected, &db, what);
        self.cluster
            .psql("postgres", &format!("DROP DATABASE {db}"));
    }

    /// A machine crash, simulated in a directory: the dump is killed while the split table is
    /// being copied, the journal loses its barriers (so nothing it records is known to have
    /// been flushed) and a byte of a recorded chunk's frame is lost. The resume checks the
    /// frames it carries, copies that table again with a warning, and the archive is still the
    /// snapshot's.
    fn crashed(&self, n: usize) {
        let (target, journal) = self.target(n);
        let pg_dump = self.cluster.bindir.join("pg_dump").display().to_string();
        let mut child = self
            .dump_command(&target, &pg_dump)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while unfinished_chunks(&journal).len() < 3 {
            assert!(child.try_wait().unwrap().is_none(), "the dump ended first");
            assert!(Instant::now() < deadline, "no chunks were recorded");
            std::thread::sleep(Duration::from_millis(1));
        }
        signal(&child, "KILL");
        child.wait().unwrap();
        let chunks = unfinished_chunks(&journal);
        assert!(!chunks.is_empty(), "the split table was finished after all");
        let text = std::fs::read_to_string(&journal).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.contains(r#""record":"barrier""#))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&journal, kept).unwrap();
        let first = &chunks[0];
        let file = first["file"].as_str().unwrap();
        let frame: Vec<u64> = first["frames"]
            .as_str()
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .split('\t')
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        let path = std::path::Path::new(&target).join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(frame[0] + frame[1] / 2) as usize] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let out = self
            .command(&["dump", "--resume", "-d", "src", "-j", "4", "-f", &target])
            .args(["--pg-dump", &pg_dump])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("differs from the journal's SHA-256")
                && stderr.contains("they are copied again"),
            "the damaged chunk is found and its table copied again: {stderr}"
        );
        self.check(&target, n, "a resume after a simulated crash");
    }
}

impl DumpKills<'_> {
    /// A dump killed after two workers recorded the split table's last two chunks at once and
    /// before either finished its file: every chunk is recorded, the file is not. Made from a
    /// dump killed before its manifest, whose journal loses the split table's `file` record
    /// and gets a `chunk` record for the chunk that finished it. The resume finishes the file
    /// without copying anything.
    fn all_recorded_none_finished(&self, n: usize) {
        let (target, journal) = self.target(n);
        let pg_dump = self.cluster.bindir.join("pg_dump").display().to_string();
        let dump = self.dump_command(&target, &pg_dump);
        assert!(run_and_kill(dump, Kill::At("before-manifest"), &journal));
        let mut records: Vec<serde_json::Value> = std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let plan = records[0]["chunks"].as_array().unwrap().clone();
        let split = &plan.iter().find(|c| !c["pages"].is_null()).unwrap()["oid"];
        let recorded: Vec<(u64, String)> = records
            .iter()
            .filter(|r| r["record"] == "chunk" && &r["oid"] == split)
            .map(|r| {
                (
                    r["chunk"].as_u64().unwrap(),
                    r["frames"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let missing: Vec<usize> = (0..plan.len())
            .filter(|&i| &plan[i]["oid"] == split)
            .filter(|&i| !recorded.iter().any(|(c, _)| *c == i as u64))
            .collect();
        // One chunk finished the file unrecorded; or none, when the race happened for real.
        assert!(
            missing.len() <= 1,
            "one chunk finished the file: {missing:?}"
        );
        let at = records
            .iter()
            .position(|r| r["record"] == "file" && &r["oid"] == split)
            .unwrap();
        let file = records.remove(at);
        let lines: Vec<&str> = file["frames"].as_str().unwrap().lines().collect();
        let offset = |l: &str| l.split('\t').next().unwrap().to_string();
        let elsewhere: Vec<String> = recorded
            .iter()
            .flat_map(|(_, f)| f.lines().skip(1).map(offset).collect::<Vec<_>>())
            .collect();
        // Not the header, not the end frame, not the other chunks' frames.
        let mut frames = format!("{}\n", lines[0]);
        for l in &lines[1..lines.len() - 1] {
            if !elsewhere.contains(&offset(l)) {
                frames.push_str(&format!("{l}\n"));
            }
        }
        if let Some(&chunk) = missing.first() {
            let record = serde_json::json!({
                "seq": file["seq"], "record": "chunk", "run": 1, "chunk": chunk,
                "oid": split, "file": file["file"], "frames": frames,
                "checkpoint": {"durable": file["size"]},
            });
            records.insert(at, record);
        }
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&journal, text).unwrap();
        let report = self.work.join(format!("report{n}.json"));
        let out = self
            .command(&["dump", "--resume", "-d", "src", "-f", &target])
            .args(["--pg-dump", &pg_dump, "--report"])
            .arg(&report)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let (_, kept, done, redone) = resume_counts(&report);
        assert_eq!((kept, done, redone), (plan.len() as u64, 0, 0), "{stderr}");
        self.check(
            &target,
            n,
            "a resume of a table whose chunks were all recorded",
        );
    }
}

/// The `chunk` records of `journal` whose table has no `file` record yet, in order.
fn unfinished_chunks(journal: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let finished: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["record"] == "file")
        .map(|r| &r["oid"])
        .collect();
    records
        .iter()
        .filter(|r| r["record"] == "chunk" && !finished.contains(&&r["oid"]))
        .cloned()
        .collect()
}

/// Acceptance 1, 3 and 4 of issue 21 for `pgarc dump`: twenty SIGKILLs at different points
/// (ten into a directory, ten into an `s3://` prefix on s3s-fs), each resumed under the same
/// snapshot while a workload writes to the database; every resumed archive verifies and
/// restores equal to an uninterrupted dump of the snapshot, with at most one chunk per worker
/// copied again. Then a dump whose snapshot holder stopped: `--resume` refuses in one line,
/// exit 1, and changes nothing.
#[test]
fn a_dump_killed_anywhere_resumes_to_the_archive_an_uninterrupted_dump_gives() {
    let cluster = resume_source();
    let (holder, id) = hold(&cluster, &[], Stdio::null());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let work = tempfile::tempdir().unwrap();
    /// Stops the workload however the scope ends (a failed assertion too).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        let writes = scope.spawn(|| workload(&cluster, &stop));
        let _stop = StopOnDrop(&stop);
        // The uninterrupted dump under the snapshot, and the database it restores to.
        let reference = work.path().join("reference");
        let mut args = DUMP_ARGS[..6].to_vec();
        args.extend(["--snapshot", &id]);
        let started = Instant::now();
        cluster.pgarc_dump("src", &reference, &args);
        let span = started.elapsed();
        cluster.create_db("expected");
        run_ok(
            cluster
                .pgarc()
                .args(["restore", "-d", "expected"])
                .arg(&reference),
        );
        let expected = cluster.db_state("expected");
        assert!(
            expected
                .tables
                .iter()
                .any(|t| t.starts_with("public.big|300000|")),
            "the snapshot predates the workload's writes: {:?}",
            expected.tables
        );
        let s3 = crate::util::s3::S3Server::s3s_fs();
        let seed = 0x5eed_2111;
        for (half, store) in [(0, None), (1, Some(&s3))] {
            let kills = DumpKills {
                cluster: &cluster,
                snapshot: &id,
                expected: &expected,
                work: work.path(),
                s3: store,
            };
            let mut in_place = 0;
            for (i, kill) in kill_points(seed + half, 10, span).into_iter().enumerate() {
                in_place += usize::from(kills.run(half as usize * 10 + i, kill));
            }
            if store.is_none() {
                // Into a directory a partly copied table is continued in place (an object
                // store's half rewrites it, tool.md §11.2): both ways are checked above.
                assert!(
                    in_place > 0,
                    "no kill left a data file to continue in place"
                );
                kills.crashed(20);
                kills.all_recorded_none_finished(21);
            }
        }
        lost_snapshot_is_refused(&cluster, holder, &id, work.path());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            writes.join().unwrap() > 0,
            "the workload wrote during the dumps"
        );
    });
}

/// Asserts that `db` holds what `expected` (the restore of an uninterrupted dump under the same
/// snapshot) holds: schema, every table's rows and content hash, large objects, materialized
/// views. Not sequence values: they are not under any snapshot (pg_dump reads their current
/// value as it captures the schema), so two dumps of one snapshot taken at different moments
/// of a workload differ there, uninterrupted ones too.
fn same_as_snapshot(cluster: &Cluster, expected: &crate::util::DbState, db: &str, what: &str) {
    let mut got = cluster.db_state(db);
    got.sequences.clone_from(&expected.sequences);
    got.assert_same_data(expected, what);
    assert!(got.schema == expected.schema, "{what}: the schema differs");
}

/// Acceptance 4: the holder stopped, `--resume` refuses with one line naming the snapshot,
/// exit 1, and the archive's files are untouched.
fn lost_snapshot_is_refused(cluster: &Cluster, holder: Child, id: &str, work: &std::path::Path) {
    let dir = work.join("lost");
    let pg_dump = cluster.bindir.join("pg_dump").display().to_string();
    let mut dump = cluster.pgarc();
    dump.args(["dump", "-d", "src", "-f"]).arg(&dir).args([
        "--snapshot",
        id,
        "-j",
        "4",
        "--split-size",
        "4MB",
        "--pg-dump",
        &pg_dump,
    ]);
    assert!(run_and_kill(
        dump,
        Kill::At("before-manifest"),
        &dir.join("pgarc/journal")
    ));
    signal(&holder, "TERM");
    assert_eq!(finish(holder).0, Some(0));
    let before = tree(&dir);
    let out = cluster
        .pgarc()
        .args(["dump", "--resume", "-d", "src", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("snapshot lost") && stderr.contains(id) && stderr.contains("dump again"),
        "{stderr}"
    );
    assert_eq!(tree(&dir), before, "nothing was changed");
}

/// Every file under `dir` with its contents' length and hash.
fn tree(dir: &std::path::Path) -> Vec<(String, u64, String)> {
    let mut out: Vec<(String, u64, String)> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let sum = bytes.iter().fold(0u64, |h, &b| {
                h.wrapping_mul(1_099_511_628_211) ^ u64::from(b)
            });
            (
                p.display().to_string(),
                bytes.len() as u64,
                format!("{sum:x}"),
            )
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---- `pgarc restore --resume` (issue 21, acceptance 2, 3 and 4) ----

/// Waits until `query` (a count) is not 0 in `postgres`; false when `child` ended first.
fn wait_for(cluster: &Cluster, child: &mut Child, query: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "never saw: {query}");
        if cluster.psql("postgres", query).trim() != "0" {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

const RESTORE_COPYING: &str = "SELECT count(*) FROM pg_stat_activity WHERE application_name \
     LIKE 'pgarc restore%' AND query LIKE 'COPY%big%' AND state = 'active'";

/// Restores (and resumes restores of) one archive into fresh databases of one cluster.
struct RestoreKills<'a> {
    cluster: &'a Cluster,
    archive: &'a std::path::Path,
    expected: &'a crate::util::DbState,
    work: &'a std::path::Path,
}

impl RestoreKills<'_> {
    fn restore(&self, db: &str) -> Child {
        self.cluster
            .pgarc()
            .args(["restore", "-q", "-j", "4", "-d", db])
            .arg(self.archive)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `--resume` into `db`, then the checks of acceptance 2 and 3.
    fn resume_and_check(&self, db: &str, what: &str) {
        let report = self.work.join(format!("{db}.json"));
        let out = self
            .cluster
            .pgarc()
            .args(["restore", "--resume", "-j", "4", "-d", db, "--report"])
            .arg(&report)
            .arg(self.archive)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {stderr}");
        let (run, _kept, done, redone) = resume_counts(&report);
        assert!(run >= 2, "{what}");
        // Exactly once: what was in flight when it stopped, at most one load per worker.
        assert!(redone <= 4, "{what}: {redone} loads done again: {stderr}");
        assert!(redone <= done, "{what}");
        self.cluster.assert_same_db(self.expected, db);
        assert_eq!(
            self.cluster
                .psql(
                    db,
                    "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgarc_restore'"
                )
                .trim(),
            "0",
            "{what}: the ledger is gone"
        );
        self.cluster
            .psql("postgres", &format!("DROP DATABASE {db}"));
    }

    /// Kills a restore `delay` after it started; resumes it.
    fn kill_after(&self, n: usize, delay: Duration) {
        let db = format!("k{n}");
        self.cluster.create_db(&db);
        let mut child = self.restore(&db);
        std::thread::sleep(delay);
        signal(&child, "KILL");
        let status = child.wait().unwrap();
        let what = format!("restore kill point {n} at {delay:?} ({status})");
        let ledger = self.cluster.psql(
            &db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgarc_restore'",
        );
        if status.success() || ledger.trim() == "0" {
            // Finished before the kill, or killed before its ledger existed (then it had done
            // nothing): a resume is refused and a new restore is the way.
            let out = self
                .cluster
                .pgarc()
                .args(["restore", "--resume", "-d", &db])
                .arg(self.archive)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
            assert!(
                stderr.contains("no pgarc restore ledger"),
                "{what}: {stderr}"
            );
            let relations = self.cluster.psql(
                &db,
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
            );
            if relations.trim() != "0" {
                // Killed after it dropped its ledger, as it exited: it was complete.
                self.cluster.assert_same_db(self.expected, &db);
            }
            self.cluster
                .psql("postgres", &format!("DROP DATABASE {db}"));
            return;
        }
        self.resume_and_check(&db, &what);
    }
}

/// A source for the restore kill points: `big` (split when loaded), 30 small tables with
/// primary keys, an index and a foreign key (post-data work), 16 large objects.
fn restore_source() -> Cluster {
    crate::util::cluster_with_big_table(
        "ALTER TABLE big ADD PRIMARY KEY (id); CREATE INDEX big_h ON big (h); \
         SELECT count(lo_from_bytea(0, convert_to(repeat(md5(g::text), g * 40), 'UTF8'))) \
         FROM generate_series(1, 16) g; \
         DO $$ BEGIN FOR i IN 1..30 LOOP \
           EXECUTE format('CREATE TABLE small_%s (g int PRIMARY KEY, h text, \
                           b int REFERENCES big (id))', i); \
           EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text), g FROM \
                           generate_series(1, %s) g', i, i * 50); \
         END LOOP; END $$;",
    )
}

/// Acceptance 2, 3 and 4 of issue 21 for `pgarc restore`: twenty SIGKILLs of `restore -j 4`
/// at seeded random instants, a server restart and a terminated worker mid-load, each followed
/// by `--resume`: the database equals the source, no row twice, no table short, at most one
/// load per worker done again, the ledger gone. A stock pg_dump archive resumes too; a resume
/// with another archive is refused in one line and changes nothing.
#[test]
fn a_restore_stopped_anywhere_resumes_to_the_source_exactly_once() {
    let cluster = restore_source();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump(
        "src",
        &archive,
        &["-j", "4", "--split-size", "4MB", "--frame-size", "64kB"],
    );
    let expected = cluster.db_state("src");
    let kills = RestoreKills {
        cluster: &cluster,
        archive: &archive,
        expected: &expected,
        work: work.path(),
    };
    // How long an uninterrupted restore takes: the span the kill points are drawn from.
    cluster.create_db("whole");
    let started = Instant::now();
    let out = kills.restore("whole").wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = started.elapsed();
    cluster.assert_same_db(&expected, "whole");
    let mut rng = Seeded(0x2e57_04e1);
    for n in 0..20 {
        kills.kill_after(n, span.mul_f64(0.05 + rng.next() * 0.9));
    }

    // The server restarts while big is loaded: the restore stops; --resume finishes it.
    cluster.create_db("restarted");
    let mut child = kills.restore("restarted");
    assert!(wait_for(&cluster, &mut child, RESTORE_COPYING));
    assert!(cluster.pg_ctl(&["-m", "fast", "restart"]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kills.resume_and_check("restarted", "server restart");

    // A worker's session terminated mid-load: the restore ends with that error, the ledger
    // stays; --resume loads what did not commit.
    cluster.create_db("terminated");
    let mut child = kills.restore("terminated");
    assert!(wait_for(&cluster, &mut child, RESTORE_COPYING));
    cluster.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE \
         'pgarc restore%' AND query LIKE 'COPY%big%' AND state = 'active' LIMIT 1",
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--resume"), "the way on is said: {stderr}");
    kills.resume_and_check("terminated", "terminated worker");

    // A stock pg_dump archive: per entry.
    let stock = work.path().join("stock");
    cluster.stock_dump_uncompressed("src", &stock);
    let stock_kills = RestoreKills {
        archive: &stock,
        ..kills
    };
    cluster.create_db("stockdb");
    let mut child = stock_kills.restore("stockdb");
    assert!(wait_for(&cluster, &mut child, RESTORE_COPYING));
    signal(&child, "KILL");
    let _ = child.wait();
    // The killed client's backends finish the statements they had (a ledger row may still
    // commit): the "before" is taken once they are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'stockdb' \
             AND application_name LIKE 'pgarc restore%'",
        )
        .trim()
        != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the killed restore's sessions did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another archive is refused: one line naming the archive, exit 1, nothing changed.
    let before = cluster.psql("stockdb", "SELECT count(*) FROM pgarc_restore.done");
    let out = cluster
        .pgarc()
        .args(["restore", "--resume", "-d", "stockdb"])
        .arg(&archive)
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{refusal}");
    assert_eq!(refusal.trim_end().lines().count(), 1, "{refusal}");
    assert!(refusal.contains("archive differs"), "{refusal}");
    assert_eq!(
        cluster.psql("stockdb", "SELECT count(*) FROM pgarc_restore.done"),
        before
    );
    stock_kills.resume_and_check("stockdb", "stock archive");
}
