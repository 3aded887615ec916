//! Issue 7: the pg_dump-shaped interface. Selection options against the stock tools, `-L`
//! lists against pg_restore, progress output on a terminal and off it, and the JSON report
//! against its published schema.

use std::path::Path;
use std::process::Command;

use crate::util::{entry_lines, newest_bindir, repo_root, run_ok, Cluster};

/// The entry lines of a listing without their dump IDs, sorted (IDs differ by design: pgarc
/// appends its TABLE DATA entries).
fn toc_set(listing: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = entry_lines(listing)
        .iter()
        .map(|l| {
            let l = String::from_utf8_lossy(l);
            l.split_once("; ")
                .map_or(l.to_string(), |(_, rest)| rest.to_string())
        })
        .collect();
    lines.sort();
    lines
}

fn pg_restore_list(cluster: &Cluster, dir: &Path, extra: &[&str]) -> Vec<u8> {
    run_ok(cluster.client("pg_restore").arg("-l").args(extra).arg(dir)).stdout
}

/// The manifest's per-table row counts: (schema, name, rows).
fn manifest_rows(dir: &Path) -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest");
    let value: toml::Value = toml::from_str(&text).expect("manifest parses");
    value
        .get("table")
        .and_then(|t| t.as_array())
        .map(|tables| {
            tables
                .iter()
                .map(|t| {
                    (
                        t["schema"].as_str().unwrap().to_string(),
                        t["name"].as_str().unwrap().to_string(),
                        t["rows"].as_integer().unwrap() as u64,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn count_rows(cluster: &Cluster, db: &str, schema: &str, name: &str) -> u64 {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    cluster
        .psql(
            db,
            &format!("SELECT count(*) FROM ONLY {}.{}", q(schema), q(name)),
        )
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn selection_options_give_pg_dumps_toc_and_every_included_tables_rows() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("fx");
    let work = tempfile::tempdir().unwrap();
    let combos: &[&[&str]] = &[
        &["-n", "app"],
        &["-n", "APP", "-N", "app"],
        &["-N", "app"],
        &["-n", "\"Mixed Schema\""],
        &["-t", "app.orders"],
        &["-t", "app.events*", "-T", "app.events_view"],
        &["-t", "\"Mixed Schema\".*", "-t", "app.c?rs"],
        &[
            "-n",
            "app",
            "-T",
            "app.order*",
            "--exclude-table-data",
            "app.cars",
        ],
        &["--exclude-table-data", "*"],
        &["--exclude-table-data", "app.measurements_20*"],
        &["-T", "app.(cars|vehicles)"],
        &["-n", "app", "-t", "app.customers"],
        &["-t", "fx.app.nothing"],
        &["-n", "app", "--no-unlogged-table-data"],
        &["-a", "-n", "app"],
        &["--section=data", "-t", "app.orders"],
        &["-s", "-N", "\"Mixed Schema\""],
    ];
    for (i, args) in combos.iter().enumerate() {
        let ours = work.path().join(format!("pgarc-{i}"));
        let theirs = work.path().join(format!("pg_dump-{i}"));
        cluster.pgarc_dump("fx", &ours, &[&["-q", "-j", "2"][..], args].concat());
        run_ok(
            cluster
                .client("pg_dump")
                .args(["-Fd", "-d", "fx", "-f"])
                .arg(&theirs)
                .args(*args),
        );
        let ours_toc = toc_set(&pg_restore_list(&cluster, &ours, &[]));
        let theirs_toc = toc_set(&pg_restore_list(&cluster, &theirs, &[]));
        assert_eq!(ours_toc, theirs_toc, "TOC of pgarc dump {args:?}");
        // Every TABLE DATA entry is pgarc's, with every row of its table.
        let data_entries = ours_toc
            .iter()
            .filter(|l| l.contains(" TABLE DATA "))
            .count();
        let rows = manifest_rows(&ours);
        assert_eq!(rows.len(), data_entries, "data files of {args:?}");
        for (schema, name, n) in rows {
            assert_eq!(
                n,
                count_rows(&cluster, "fx", &schema, &name),
                "rows of {schema}.{name} in pgarc dump {args:?}"
            );
        }
    }
    // The fixtures cover what the combinations are meant to exercise.
    let all = toc_set(&pg_restore_list(
        &cluster,
        &work.path().join("pgarc-0"),
        &[],
    ));
    assert!(all.iter().any(|l| l.contains("TABLE DATA app scratch")));
    let unlogged = toc_set(&pg_restore_list(
        &cluster,
        &work.path().join("pgarc-13"),
        &[],
    ));
    assert!(!unlogged
        .iter()
        .any(|l| l.contains("TABLE DATA app scratch")));
    assert!(unlogged.iter().any(|l| l.contains("TABLE app scratch")));

    // Errors as pg_dump's: a pattern matching nothing, a cross-database name.
    for (args, expected) in [
        (
            &["-t", "nosuch", "--strict-names"][..],
            "no matching tables were found for pattern \"nosuch\"",
        ),
        (&["-n", "nosuch"][..], "no matching schemas were found"),
        (
            &["-t", "otherdb.app.orders"][..],
            "cross-database references are not implemented",
        ),
    ] {
        let out = cluster
            .pgarc_dump_cmd("fx", &work.path().join("refused"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!work.path().join("refused").join("manifest.toml").exists());
    }
}

#[test]
fn a_list_file_restores_what_pg_restore_restores() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("fx");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("fx", &archive, &["-q", "-j", "2"]);
    let listing = run_ok(cluster.pgarc().args(["restore", "-l"]).arg(&archive)).stdout;
    assert_eq!(
        entry_lines(&listing),
        entry_lines(&pg_restore_list(&cluster, &archive, &[])),
        "pgarc restore -l lists what pg_restore -l lists"
    );
    // Comment out a table's data, an index, a comment and a whole table (definition and
    // data), and move one entry to the end.
    let text = String::from_utf8(listing).unwrap();
    let mut kept = Vec::new();
    let mut moved = Vec::new();
    for line in text.lines() {
        let drop = line.contains("TABLE DATA app orders ")
            || line.contains(" INDEX app ")
            || (line.contains(" COMMENT ") && line.contains("TABLE"))
            || line.contains(" app cars ");
        if drop {
            kept.push(format!(";{line}"));
        } else if line.contains("SEQUENCE SET app ticket_seq") {
            moved.push(line.to_string());
        } else {
            kept.push(line.to_string());
        }
    }
    kept.extend(moved);
    let commented = kept
        .iter()
        .filter(|l| l.starts_with(";") && l.contains("; "))
        .count();
    assert!(
        commented >= 4,
        "the list comments out entries:\n{}",
        kept.join("\n")
    );
    let list = work.path().join("list");
    std::fs::write(&list, kept.join("\n") + "\n").unwrap();

    // The same selection is listed, in the same order.
    let ours = run_ok(
        cluster
            .pgarc()
            .args(["restore", "-l", "-L"])
            .arg(&list)
            .arg(&archive),
    );
    let theirs = pg_restore_list(&cluster, &archive, &["-L", list.to_str().unwrap()]);
    assert_eq!(entry_lines(&ours.stdout), entry_lines(&theirs));

    cluster.create_db("by_pgarc");
    cluster.create_db("by_pg_restore");
    let ours = cluster
        .pgarc()
        .args(["restore", "-q", "-j", "3", "-d", "by_pgarc", "-L"])
        .arg(&list)
        .arg(&archive)
        .output()
        .unwrap();
    let out = cluster
        .client("pg_restore")
        .args(["-d", "by_pg_restore", "-L"])
        .arg(&list)
        .arg(&archive)
        .output()
        .unwrap();
    // pg_restore reports errors for the entries that need a commented-out table (its
    // constraints and data); pgarc restores the same entries and meets the same errors.
    let (ours_err, theirs_err) = (
        String::from_utf8_lossy(&ours.stderr),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        ours.status.code(),
        out.status.code(),
        "pgarc:\n{ours_err}\npg_restore:\n{theirs_err}"
    );
    let errors = |s: &str| s.lines().filter(|l| l.contains("error:")).count();
    assert_eq!(
        errors(&ours_err),
        errors(&theirs_err),
        "pgarc:\n{ours_err}\npg_restore:\n{theirs_err}"
    );
    let expected = cluster.db_state("by_pg_restore");
    cluster.assert_same_db(&expected, "by_pgarc");
    assert!(
        !cluster
            .psql("by_pgarc", "SELECT to_regclass('app.cars') IS NULL")
            .contains('f'),
        "app.cars was commented out: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_rows(&cluster, "by_pgarc", "app", "orders"), 0);
    assert!(count_rows(&cluster, "by_pgarc", "app", "customers") > 0);
}

#[test]
fn restore_name_filters_match_pg_restore() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("fx");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    cluster.pgarc_dump("fx", &archive, &["-q"]);
    for args in [
        &["-n", "app"][..],
        &["-N", "app"],
        &["-t", "orders", "-t", "customers"],
        &["-n", "app", "-t", "orders", "-I", "orders_pkey"],
        &["-s"],
        &["-a", "-n", "app"],
        &["--section", "pre-data", "-x"],
    ] {
        let ours = run_ok(
            cluster
                .pgarc()
                .args(["restore", "-l"])
                .args(args)
                .arg(&archive),
        );
        let theirs = pg_restore_list(&cluster, &archive, args);
        assert_eq!(
            entry_lines(&ours.stdout),
            entry_lines(&theirs),
            "restore -l {args:?}"
        );
    }
    // A data-only restore with --disable-triggers loads rows a trigger would refuse, and
    // -1 restores all or nothing.
    cluster.create_db("schema_first");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-s", "-d", "schema_first"])
            .arg(&archive),
    );
    cluster.psql(
        "schema_first",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'refused'; END$$; \
         CREATE TRIGGER no_rows BEFORE INSERT ON app.customers FOR EACH ROW EXECUTE FUNCTION refuse()",
    );
    let refused = cluster
        .pgarc()
        .args([
            "restore",
            "-q",
            "-a",
            "-1",
            "-t",
            "customers",
            "-d",
            "schema_first",
        ])
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"));
    assert_eq!(count_rows(&cluster, "schema_first", "app", "customers"), 0);
    run_ok(
        cluster
            .pgarc()
            .args([
                "restore",
                "-q",
                "-a",
                "--disable-triggers",
                "-t",
                "customers",
            ])
            .args(["-d", "schema_first"])
            .arg(&archive),
    );
    assert_eq!(
        count_rows(&cluster, "schema_first", "app", "customers"),
        count_rows(&cluster, "fx", "app", "customers")
    );
    let enabled = cluster.psql(
        "schema_first",
        "SELECT tgenabled FROM pg_trigger WHERE tgname = 'no_rows'",
    );
    assert_eq!(enabled.trim(), "O", "the trigger is enabled again");
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`) and returns what the terminal
/// showed, and the exit status.
fn under_pty(cmd: &Command) -> (i32, String) {
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            line.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            ));
        }
    }
    line.push_str(&shell_quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&a.to_string_lossy()));
    }
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("env {line}"), "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("run script(1)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn progress_shows_bars_on_a_terminal_lines_elsewhere_and_nothing_when_quiet() {
    let cluster = crate::util::cluster_with_big_table("");
    let work = tempfile::tempdir().unwrap();
    let dump = |name: &str, extra: &[&str]| {
        let mut cmd = cluster.pgarc();
        cmd.args(["dump", "-d", "src", "-j", "2", "--split-size", "8MB", "-f"])
            .arg(work.path().join(name))
            .arg("--pg-dump")
            .arg(cluster.bindir.join("pg_dump"))
            .args(extra)
            .env("PGARC_PROGRESS_INTERVAL", "0.05");
        cmd
    };
    // A terminal: the bar and the worker lines are drawn, and the bar ends at 100 %.
    let (code, screen) = under_pty(&dump("tty", &[]));
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("pgarc dump ["), "{screen}");
    assert!(screen.contains("worker 1: "), "{screen}");
    assert!(screen.contains("(100%)"), "{screen}");
    assert!(
        screen.contains("\x1b["),
        "drawn in place with escape sequences: {screen}"
    );

    // Not a terminal: plain lines, no escape sequences.
    let out = run_ok(&mut dump("pipe", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pgarc: dump: ") && l.contains(" of about "))
        .collect();
    assert!(!lines.is_empty(), "{stderr}");
    assert!(lines[0].contains("/s"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert!(stderr.contains("pgarc: dumped database"), "{stderr}");

    // --quiet: nothing at all on success, on a terminal or not.
    let out = run_ok(&mut dump("quiet", &["-q"]));
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
    let (code, screen) = under_pty(&dump("quiet-tty", &["--quiet"]));
    assert_eq!((code, screen.trim()), (0, ""));
    // ... but errors still.
    let out = dump("quiet", &["-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // Restore: plain lines with the manifest's total.
    cluster.create_db("dst");
    let out = run_ok(
        cluster
            .pgarc()
            .args(["restore", "-j", "2", "-d", "dst"])
            .arg(work.path().join("pipe"))
            .env("PGARC_PROGRESS_INTERVAL", "0.05"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("pgarc: restore: ") && l.contains(" of about ")),
        "{stderr}"
    );
}

/// Validates `report` against the published schema with Python's jsonschema (an independent
/// implementation of JSON Schema).
pub fn validate(report: &Path) {
    let schema = repo_root().join("format-spec/report.schema.json");
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft202012Validator.check_schema(schema)\n\
                  jsonschema.validate(json.load(open(sys.argv[2])), schema, \
                  cls=jsonschema.Draft202012Validator)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .arg(report)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the report does not match its schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_json_report_matches_its_schema_and_the_tables_counts() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("fx");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a");
    let report = work.path().join("dump.json");
    cluster.pgarc_dump(
        "fx",
        &archive,
        &["-q", "-j", "2", "--report", report.to_str().unwrap()],
    );
    validate(&report);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["command"], "dump");
    let tables = json["tables"].as_array().unwrap();
    assert_eq!(tables.len(), manifest_rows(&archive).len());
    assert!(tables.len() >= 10);
    let mut total = 0;
    for t in tables {
        let (schema, name) = (t["schema"].as_str().unwrap(), t["name"].as_str().unwrap());
        let rows = t["rows"].as_u64().unwrap();
        assert_eq!(
            rows,
            count_rows(&cluster, "fx", schema, name),
            "{schema}.{name}"
        );
        total += rows;
    }
    assert_eq!(json["totals"]["rows"].as_u64(), Some(total));

    // A report that cannot be written: exit 1, and the message says the archive is complete
    // (it is: the manifest is there).
    let elsewhere = work.path().join("complete");
    let out = cluster
        .pgarc_dump_cmd("fx", &elsewhere)
        .args(["-q", "--report", "/nonexistent/dir/r.json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is complete, but cannot write the report"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(elsewhere.join("manifest.toml").exists());

    // A damaged report would be refused: the check can fail.
    let broken = work.path().join("broken.json");
    std::fs::write(&broken, br#"{"report_format": 1, "command": "dump"}"#).unwrap();
    let schema = repo_root().join("format-spec/report.schema.json");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
        ])
        .arg(&schema)
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());

    cluster.create_db("dst");
    let report = work.path().join("restore.json");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-j", "2", "-d", "dst", "--report"])
            .arg(&report)
            .arg(&archive),
    );
    validate(&report);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["command"], "restore");
    for t in json["tables"].as_array().unwrap() {
        let (schema, name) = (t["schema"].as_str().unwrap(), t["name"].as_str().unwrap());
        assert_eq!(
            t["rows"].as_u64().unwrap(),
            count_rows(&cluster, "dst", schema, name),
            "{schema}.{name}"
        );
    }
}
