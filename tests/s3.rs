//! Issue 20: archives in S3-compatible object storage, against two independent real servers
//! with authentication on (Garage, s3s-fs): dump, verify, restore and list through `s3://`,
//! the prefix copied down by another S3 client restores with stock pg_restore, and the
//! faults: a dump that fails midway, wrong credentials, a missing bucket, an existing archive,
//! transient errors, a damaged object.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::util::s3::{Faults, FlakyProxy, Kind, S3Server, BUCKET};
use crate::util::{entry_lines, newest_bindir, run_ok, Cluster};

/// A cluster with the fixtures database `src` plus `wide`: 400,000 rows of hex digests,
/// about 25 MiB compressed, so that its data file is a multipart upload of several parts
/// written by several workers; and 24 more large objects.
fn source() -> Cluster {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE wide AS SELECT i AS id, md5(i::text) || md5((i * 7)::text) || \
         md5((i * 13)::text) || md5((i * 31)::text) AS h FROM generate_series(1, 400000) i",
    );
    // Large objects are files pg_dump writes itself, uploaded several at a time.
    cluster.psql(
        "src",
        "SELECT count(lo_from_bytea(0, convert_to(repeat(md5(g::text), g * 40), 'UTF8'))) \
         FROM generate_series(1, 24) g",
    );
    cluster
}

/// `pgarc dump -d src -j 4 --split-size 8MB -f URL` through `endpoint`.
fn s3_dump_cmd(cluster: &Cluster, s3: &S3Server, endpoint: &str, url: &str) -> Command {
    let mut cmd = cluster.pgarc();
    s3.env_to(&mut cmd, endpoint);
    cmd.args([
        "dump",
        "-d",
        "src",
        "-j",
        "4",
        "--split-size",
        "8MB",
        "-f",
        url,
    ])
    .arg("--pg-dump")
    .arg(cluster.bindir.join("pg_dump"))
    .stdin(Stdio::null());
    cmd
}

fn s3_dump(cluster: &Cluster, s3: &S3Server, endpoint: &str, url: &str, extra: &[&str]) -> Output {
    s3_dump_cmd(cluster, s3, endpoint, url)
        .args(extra)
        .output()
        .unwrap()
}

fn pgarc_s3(cluster: &Cluster, s3: &S3Server, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = cluster.pgarc();
    s3.env_to(&mut cmd, endpoint);
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {stderr}");
    stderr
}

/// Dump, verify, restore and list through `s3://` on one server; the copied-down prefix
/// restores with stock pg_restore -j 4; both databases equal the source.
fn round_trip(kind: Kind) {
    let s3 = S3Server::start(kind);
    let cluster = source();
    // Authentication is on: a wrong secret is refused.
    let mut cmd = cluster.pgarc();
    s3.env(&mut cmd);
    let refused = cmd
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "0000000000000000000000000000000000000000",
        )
        .args(["list", &format!("s3://{BUCKET}/x")])
        .output()
        .unwrap();
    one_line_failure(&refused, 1, &["AWS_SECRET_ACCESS_KEY"], &s3.secret);
    let expected = cluster.db_state("src");
    let url = format!("s3://{BUCKET}/backups/nightly");
    // No credential in any process's argv while the dump runs (pg_dump included), nor in
    // its output, its report or the archive.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, secret) = (watching.clone(), s3.secret.clone());
        std::thread::spawn(move || {
            let mut leaks = Vec::new();
            while watching.load(Ordering::SeqCst) {
                // The test's own S3 server was started with it on its command line.
                let server = crate::util::s3::s3_cache_dir().display().to_string();
                leaks.extend(
                    crate::util::all_cmdlines()
                        .into_iter()
                        .filter(|c| c.contains(&secret) && !c.starts_with(&server)),
                );
                leaks.dedup();
                std::thread::sleep(Duration::from_millis(5));
            }
            leaks
        })
    };
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_arg = report.path().display().to_string();
    let dumped = s3_dump(
        &cluster,
        &s3,
        &s3.endpoint,
        &url,
        &["--report", &report_arg],
    );
    watching.store(false, Ordering::SeqCst);
    assert_eq!(
        watcher.join().unwrap(),
        Vec::<String>::new(),
        "secret in argv"
    );
    let said = ok(&dumped, "dump");
    assert!(
        !said.contains(&s3.secret) && !said.contains(&s3.key_id),
        "{said}"
    );
    let report_text = std::fs::read_to_string(report.path()).unwrap();
    assert!(report_text.contains(&url) && !report_text.contains(&s3.secret));
    // Nothing was left open (s3s-fs does not implement listing uploads).
    if kind == Kind::Garage {
        assert_eq!(
            s3.open_uploads(),
            Vec::<String>::new(),
            "no upload left open"
        );
    }
    let verify = pgarc_s3(&cluster, &s3, &s3.endpoint, &["verify", &url]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && said.contains("intact"), "{said}");

    cluster.create_db("viapgarc");
    let restore = pgarc_s3(
        &cluster,
        &s3,
        &s3.endpoint,
        &["restore", "-j", "4", "-d", "viapgarc", "--verify", &url],
    );
    ok(&restore, "restore");
    cluster.assert_same_db(&expected, "viapgarc");

    let copy = tempfile::tempdir().unwrap();
    let down = copy.path().join("archive");
    s3.copy_down("backups/nightly", &down);
    for f in walkdir_files(&down) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&s3.secret) && !text.contains(&s3.key_id),
            "credential in {}",
            f.display()
        );
    }
    cluster.create_db("viastock");
    run_ok(
        cluster
            .client("pg_restore")
            .args(["-j", "4", "-d", "viastock"])
            .arg(&down),
    );
    cluster.assert_same_db(&expected, "viastock");
    // The copy is the archive: pgarc verify passes it too.
    let local = crate::util::pgarc()
        .arg("verify")
        .arg(&down)
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    let listed = pgarc_s3(&cluster, &s3, &s3.endpoint, &["list", &url]);
    ok(&listed, "list");
    let stock = run_ok(cluster.client("pg_restore").arg("-l").arg(&down));
    assert_eq!(entry_lines(&listed.stdout), entry_lines(&stock.stdout));
    let local_list = run_ok(crate::util::pgarc().arg("list").arg(&down));
    assert_eq!(
        listed.stdout, local_list.stdout,
        "list of s3:// and of its copy"
    );

    // A stock pg_dump -Fd archive put into the bucket by another tool restores too.
    let stock_dir = copy.path().join("stock");
    run_ok(
        cluster
            .client("pg_dump")
            .args(["-Fd", "-j", "2", "-d", "src", "-f"])
            .arg(&stock_dir),
    );
    s3.copy_up(&stock_dir, "stock/src");
    let stock_url = format!("s3://{BUCKET}/stock/src");
    let v = pgarc_s3(&cluster, &s3, &s3.endpoint, &["verify", &stock_url]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    cluster.create_db("fromstock");
    ok(
        &pgarc_s3(
            &cluster,
            &s3,
            &s3.endpoint,
            &[
                "restore",
                "-j",
                "4",
                "-d",
                "fromstock",
                "--verify",
                &stock_url,
            ],
        ),
        "restore of a stock archive from s3://",
    );
    cluster.assert_same_db(&expected, "fromstock");
}

#[test]
fn dump_verify_restore_and_list_through_garage() {
    round_trip(Kind::Garage);
}

#[test]
fn dump_verify_restore_and_list_through_s3s_fs() {
    round_trip(Kind::S3sFs);
}

/// Every file under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The one line a failed command printed, checked to be one line, to name `needles`, and
/// to hold no secret. The exit status is 1, or 2 for `pgarc verify` (it could not run).
fn one_line_failure(out: &Output, code: i32, needles: &[&str], secret: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} in: {stderr}");
    }
    assert!(!stderr.contains(secret), "no secret in: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    stderr
}

#[test]
fn refusals_name_the_bucket_and_the_fix_in_one_line() {
    let s3 = S3Server::start(Kind::S3sFs);
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql("src", "CREATE TABLE t AS SELECT 1 AS x");
    let url = format!("s3://{BUCKET}/one");
    // Wrong secret key: refused before the server is touched, by dump, restore and verify.
    for args in [
        vec!["dump", "-d", "src", "-f", &url],
        vec!["verify", &url],
        vec!["restore", "-d", "src", &url],
    ] {
        let mut cmd = cluster.pgarc();
        s3.env(&mut cmd);
        cmd.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-key-0123456789");
        let out = cmd.args(&args).stdin(Stdio::null()).output().unwrap();
        one_line_failure(
            &out,
            if args[0] == "verify" { 2 } else { 1 },
            &[BUCKET, "AWS_SECRET_ACCESS_KEY"],
            "not-the-secret-key-0123456789",
        );
    }
    // An access key the server does not know.
    let mut cmd = cluster.pgarc();
    s3.env(&mut cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "AKNOSUCHKEY000");
    let out = cmd.args(["verify", &url]).output().unwrap();
    one_line_failure(&out, 2, &["AWS_ACCESS_KEY_ID"], &s3.secret);
    // A missing bucket.
    let out = pgarc_s3(
        &cluster,
        &s3,
        &s3.endpoint,
        &["list", "s3://no-such-bucket-here/x"],
    );
    one_line_failure(
        &out,
        1,
        &["no-such-bucket-here", "does not exist"],
        &s3.secret,
    );
    // An endpoint nobody listens on.
    let closed = format!("http://127.0.0.1:{}", crate::util::free_port());
    let out = pgarc_s3(&cluster, &s3, &closed, &["verify", &url]);
    one_line_failure(
        &out,
        2,
        &["cannot reach the endpoint", "AWS_ENDPOINT_URL"],
        &s3.secret,
    );
    // Plain HTTP to a host that is not loopback, without --s3-allow-http.
    let out = pgarc_s3(&cluster, &s3, "http://192.0.2.1:9000", &["verify", &url]);
    one_line_failure(&out, 2, &["--s3-allow-http"], &s3.secret);
    // An archive already at the prefix: the second dump is refused before it starts.
    ok(
        &s3_dump(&cluster, &s3, &s3.endpoint, &url, &[]),
        "first dump",
    );
    let out = s3_dump(&cluster, &s3, &s3.endpoint, &url, &[]);
    one_line_failure(&out, 1, &[&url, "already holds an archive"], &s3.secret);
    // An empty prefix is not an archive.
    let out = pgarc_s3(
        &cluster,
        &s3,
        &s3.endpoint,
        &["list", &format!("s3://{BUCKET}/empty")],
    );
    one_line_failure(&out, 1, &["no archive here"], &s3.secret);
}

/// Waits for `child`, at most a minute.
fn wait(child: &mut std::process::Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "pgarc did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

/// Starts a dump into `s3://BUCKET/prefix` through `slow`, waits until a part has gone up
/// (an upload is open), lets `stop` stop it, and checks the outcome: exit `code` saying
/// "incomplete", no manifest, no multipart upload left open, and verify saying incomplete.
fn stopped_midway(
    cluster: &Cluster,
    s3: &S3Server,
    slow: &FlakyProxy,
    prefix: &str,
    code: i32,
    stop: impl FnOnce(&std::process::Child),
) {
    let url = format!("s3://{BUCKET}/{prefix}");
    let before = slow.parts.load(Ordering::SeqCst);
    let mut child = s3_dump_cmd(cluster, s3, &slow.endpoint, &url)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow.parts.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "no part was ever uploaded");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the dump ended too soon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&child);
    let out = wait(&mut child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains("incomplete"), "{stderr}");
    let keys = s3.keys(prefix);
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.toml")),
        "{keys:?}"
    );
    assert_eq!(s3.open_uploads(), Vec::<String>::new(), "uploads aborted");
    // verify says the prefix holds an incomplete archive.
    let v = pgarc_s3(cluster, s3, &s3.endpoint, &["verify", &url]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert_ne!(v.status.code(), Some(0), "{said}");
    assert!(said.contains("incomplete"), "{said}");
}

#[test]
fn a_dump_interrupted_or_whose_server_stops_leaves_no_manifest_and_no_open_upload() {
    let s3 = S3Server::start(Kind::Garage);
    let cluster = source();
    // Parts go up slowly, so that the dump can be stopped while uploads are open.
    let slow = FlakyProxy::start(
        &s3.endpoint,
        Faults {
            flaky: false,
            part_delay: Duration::from_millis(700),
        },
    );
    // SIGINT to pgarc.
    stopped_midway(&cluster, &s3, &slow, "interrupted", 130, |child| {
        crate::util::send_signal(child.id(), "INT");
    });
    // The database server stopped.
    stopped_midway(&cluster, &s3, &slow, "stopped", 1, |_| {
        assert!(cluster.pg_ctl(&["-m", "immediate", "stop"]));
    });
}

#[test]
fn transient_faults_are_retried_and_a_damaged_object_is_named_with_its_frame() {
    let s3 = S3Server::start(Kind::S3sFs);
    let cluster = source();
    let expected = cluster.db_state("src");
    let flaky = FlakyProxy::start(
        &s3.endpoint,
        Faults {
            flaky: true,
            part_delay: Duration::ZERO,
        },
    );
    let url = format!("s3://{BUCKET}/flaky");
    ok(
        &s3_dump(&cluster, &s3, &flaky.endpoint, &url, &[]),
        "dump through faults",
    );
    let during_dump = flaky.faults.load(Ordering::SeqCst);
    assert!(
        during_dump >= 3,
        "faults injected during the dump: {during_dump}"
    );
    cluster.create_db("restored");
    ok(
        &pgarc_s3(
            &cluster,
            &s3,
            &flaky.endpoint,
            &["restore", "-j", "4", "-d", "restored", &url],
        ),
        "restore through faults",
    );
    assert!(
        flaky.faults.load(Ordering::SeqCst) > during_dump,
        "faults during the restore"
    );
    cluster.assert_same_db(&expected, "restored");
    let v = pgarc_s3(&cluster, &s3, &flaky.endpoint, &["verify", &url]);
    ok(&v, "verify through faults");

    // One bit of the big table's data file flipped: verify names the object and the frame.
    let m = {
        let copy = tempfile::tempdir().unwrap();
        s3.copy_down("flaky", copy.path());
        crate::util::read_manifest(copy.path())
    };
    let wide = m.tables.iter().find(|t| t.name == "wide").unwrap();
    s3.tool(&["flip", BUCKET, &format!("flaky/{}", wide.file), "100000"]);
    let v = pgarc_s3(&cluster, &s3, &s3.endpoint, &["verify", &url]);
    let said = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{}, frame ", wide.file)) && said.contains("DAMAGED"),
        "{said}"
    );
}
