//! Issue 21 (resume), first step: `pgarc snapshot`, the process that holds a snapshot for
//! dumps to import, and to resume under, until it is told to stop.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
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
