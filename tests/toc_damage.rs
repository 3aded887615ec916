//! Damaged input never panics: each case gives one line on stderr that names the file and the
//! problem, and exit code 1.

use std::path::Path;

use crate::util::{pgarc_output, repo_root};

/// A real 1.16 toc.dat (pg_dump 18, no compression).
fn good_toc() -> Vec<u8> {
    std::fs::read(repo_root().join("fixtures/archives/pg18-none/toc.dat")).unwrap()
}

/// Writes `toc` as the toc.dat of a fresh archive directory and runs `pgarc list` on it.
fn list_damaged(toc: &[u8]) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("toc.dat"), toc).unwrap();
    let (code, _, stderr) = pgarc_output([Path::new("list"), dir.path()]);
    (code, stderr, dir)
}

fn assert_one_line_error(code: i32, stderr: &str, fragments: &[&str]) {
    assert_eq!(code, 1, "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("pgarc: "), "{stderr}");
    for f in fragments {
        assert!(stderr.contains(f), "{stderr:?} does not mention {f:?}");
    }
}

#[test]
fn damaged_toc_files_are_named_with_the_problem() {
    let good = good_toc();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            vec!["truncated"],
        ),
        ("empty", Vec::new(), vec!["truncated", "magic string"]),
        (
            "wrong magic",
            with(&|v| v[..5].copy_from_slice(b"PGDMX")),
            vec!["PGDMP"],
        ),
        (
            "newer version",
            with(&|v| v[6] = 17),
            vec!["1.17.0", "not supported", "newer pgarc"],
        ),
        (
            "older version",
            with(&|v| v[6] = 11),
            vec!["1.11.0", "not supported"],
        ),
        ("custom format", with(&|v| v[10] = 1), vec!["format byte 1"]),
        ("int size", with(&|v| v[8] = 200), vec!["integer size 200"]),
        (
            "trailing bytes",
            with(&|v| v.extend_from_slice(b"junk")),
            vec!["4 unexpected bytes"],
        ),
        (
            // The database name's length (at byte 0x2f of a 1.16 header) set to 2^31-1 in a
            // file cut to 1 KB.
            "absurd length",
            with(&|v| {
                v[0x2f..0x34].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0x7f]);
                v.truncate(1024);
            }),
            vec!["database name", "string length 2147483647", "at byte 47"],
        ),
    ];
    for (name, bytes, fragments) in cases {
        let (code, stderr, dir) = list_damaged(&bytes);
        let path = dir.path().join("toc.dat");
        let mut all = fragments.clone();
        let path = path.display().to_string();
        all.push(&path);
        eprintln!("{name}: {}", stderr.trim_end());
        assert_one_line_error(code, &stderr, &all);
    }
}

#[test]
fn a_damaged_entry_is_named_by_position_and_dump_id() {
    let mut toc = good_toc();
    // Cut the file in the middle of the entries: the error names the entry being read.
    toc.truncate(toc.len() - 200);
    let (code, stderr, _dir) = list_damaged(&toc);
    assert_one_line_error(code, &stderr, &["truncated", "TOC entry #", "with dumpId"]);
}

#[test]
fn a_directory_that_is_not_an_archive_is_refused() {
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = pgarc_output([Path::new("list"), empty.path()]);
    assert_one_line_error(code, &stderr, &["no toc.dat"]);

    let missing = empty.path().join("nope");
    let (code, _, stderr) = pgarc_output([Path::new("list"), &missing]);
    assert_one_line_error(code, &stderr, &["no such directory"]);

    let file = empty.path().join("custom.dump");
    std::fs::write(&file, b"PGDMP").unwrap();
    let (code, _, stderr) = pgarc_output([Path::new("list"), &file]);
    assert_one_line_error(code, &stderr, &["not a directory", "pg_restore"]);
}
