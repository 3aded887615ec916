//! toc.dat written by stock pg_dump (15 to 18, every compression) reads and writes back byte
//! for byte, and `pgarc list` prints the entry lines `pg_restore -l` prints.
//!
//! Live archives come from the pg_dump releases installed here (CI installs all four); the
//! archives checked in under fixtures/archives keep every version tested where they are not.
//! `PGARC_UPDATE_FIXTURES=1` refreshes those from the live run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pgarc::archive::compat;
use pgarc::archive::toc::{ArchiveVersion, CompressionAlgorithm, HeaderCompression, Toc};

use crate::util::{self, entry_lines, pgarc_output, run_ok, Cluster};

/// pg_dump releases and the compressions each can write (`-Z` spelling, name).
const CASES: &[(u32, &[(&str, &str)])] = &[
    (14, &[("0", "none"), ("", "gzip")]),
    (15, &[("0", "none"), ("", "gzip")]),
    (
        16,
        &[
            ("none", "none"),
            ("", "gzip"),
            ("zstd", "zstd"),
            ("lz4", "lz4"),
        ],
    ),
    (
        17,
        &[
            ("none", "none"),
            ("", "gzip"),
            ("zstd", "zstd"),
            ("lz4", "lz4"),
        ],
    ),
    (
        18,
        &[
            ("none", "none"),
            ("", "gzip"),
            ("zstd", "zstd"),
            ("lz4", "lz4"),
        ],
    ),
];

fn expected_version(major: u32) -> ArchiveVersion {
    match major {
        12..=15 => ArchiveVersion::V1_14,
        16 => ArchiveVersion::V1_15,
        _ => ArchiveVersion::V1_16,
    }
}

fn fixtures_dir() -> PathBuf {
    util::repo_root().join("fixtures/archives")
}

/// Reads toc.dat, checks the byte-exact round trip, and returns the TOC.
fn assert_round_trip(dir: &Path) -> Toc {
    let bytes = std::fs::read(dir.join("toc.dat")).unwrap();
    let toc = Toc::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let written = toc.to_bytes().unwrap();
    assert!(
        written == bytes,
        "{}: rewritten toc.dat differs (first difference at byte {:?})",
        dir.display(),
        written.iter().zip(&bytes).position(|(a, b)| a != b)
    );
    toc
}

fn pgarc_list(dir: &Path) -> Vec<u8> {
    let (code, stdout, stderr) = pgarc_output([Path::new("list"), dir]);
    assert_eq!(code, 0, "pgarc list {} failed: {stderr}", dir.display());
    stdout
}

fn assert_same_entries(dir: &Path, ours: &[u8], theirs: &[u8]) {
    let (ours, theirs) = (entry_lines(ours), entry_lines(theirs));
    assert!(
        !theirs.is_empty(),
        "pg_restore listed nothing for {}",
        dir.display()
    );
    if ours != theirs {
        let show = |v: &[Vec<u8>]| {
            v.iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{}: pgarc list and pg_restore -l differ\n--- pgarc\n{}\n--- pg_restore\n{}",
            dir.display(),
            show(&ours),
            show(&theirs)
        );
    }
}

/// The object kinds the round trip must have covered.
fn assert_kinds_covered(toc: &Toc, major: u32) {
    let descs: BTreeSet<String> = toc
        .entries
        .iter()
        .filter_map(|e| e.desc.to_str_lossy().map(|s| s.into_owned()))
        .collect();
    let lo = if major >= 17 { "BLOB METADATA" } else { "BLOB" };
    for kind in [
        "TABLE DATA",
        "SEQUENCE SET",
        "MATERIALIZED VIEW DATA",
        "TABLE ATTACH",
        "BLOBS",
        lo,
        "ACL",
        "COMMENT",
        "POLICY",
        "TRIGGER",
        "FK CONSTRAINT",
    ] {
        assert!(
            descs.contains(kind),
            "no {kind} entry in the pg_dump {major} archive"
        );
    }
}

#[test]
fn stock_pg_dump_archives_round_trip_and_list_like_pg_restore() {
    let cluster = Cluster::start();
    cluster.create_fixtures_db("fixtures");
    let out = tempfile::tempdir().unwrap();
    let update = std::env::var_os("PGARC_UPDATE_FIXTURES").is_some();
    let mut tested = Vec::new();
    for &(major, compressions) in CASES {
        // pg_dump refuses servers newer than itself.
        if major < cluster.version.major {
            continue;
        }
        let Some(bindir) = util::optional_bindir(major) else {
            continue;
        };
        for &(flag, name) in compressions {
            let label = format!("pg{major}-{name}");
            let dir = out.path().join(&label);
            let mut dump = cluster.client_from(&bindir, "pg_dump");
            dump.args(["-Fd", "-d", "fixtures", "-f"]).arg(&dir);
            if !flag.is_empty() {
                dump.args(["-Z", flag]);
            }
            run_ok(&mut dump);

            let toc = assert_round_trip(&dir);
            assert_eq!(
                toc.header.version.minor,
                expected_version(major).minor,
                "{label}"
            );
            let algorithm = toc.header.compression.algorithm();
            assert_eq!(algorithm.name(), name, "{label}: header compression");
            if major < 16 {
                assert!(matches!(
                    toc.header.compression,
                    HeaderCompression::GzipLevel(_)
                ));
            }
            assert_kinds_covered(&toc, major);
            assert!(
                compat::readers(&toc.header).includes_major(major),
                "{label}"
            );

            let ours = pgarc_list(&dir);
            let theirs = run_ok(
                cluster
                    .client_from(&bindir, "pg_restore")
                    .arg("-l")
                    .arg(&dir),
            )
            .stdout;
            assert_same_entries(&dir, &ours, &theirs);
            let header = String::from_utf8_lossy(&ours);
            let readers = format!(";     Readable by: {}", compat::readers(&toc.header));
            assert!(header.contains(&readers), "{label}: {header}");

            if update {
                let dest = fixtures_dir().join(&label);
                let _ = std::fs::remove_dir_all(&dest);
                std::fs::create_dir_all(&dest).unwrap();
                for file in std::fs::read_dir(&dir).unwrap() {
                    let file = file.unwrap();
                    std::fs::copy(file.path(), dest.join(file.file_name())).unwrap();
                }
                std::fs::write(fixtures_dir().join(format!("{label}.list")), &theirs).unwrap();
            }
            tested.push(label);
        }
    }
    assert!(
        tested
            .iter()
            .any(|l| l.starts_with(&format!("pg{}-", cluster.version.major))),
        "the server's own pg_dump ({}) was not tested: {tested:?}",
        cluster.version.major
    );
    eprintln!("round-tripped and listed: {tested:?}");
}

#[test]
fn checked_in_archives_round_trip_and_list_like_pg_restore() {
    let mut seen = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let toc = assert_round_trip(dir);
        let recorded = std::fs::read(dir.with_extension("list")).unwrap();
        assert_same_entries(dir, &pgarc_list(dir), &recorded);
        seen.insert((
            toc.header.version.minor,
            toc.header.compression.algorithm().name(),
        ));
    }
    // Every archive version pg_dump 15 to 18 writes, and every compression header.
    for (minor, algorithm) in [
        (14, CompressionAlgorithm::None),
        (14, CompressionAlgorithm::Gzip),
        (15, CompressionAlgorithm::Gzip),
        (15, CompressionAlgorithm::Zstd),
        (15, CompressionAlgorithm::Lz4),
        (16, CompressionAlgorithm::None),
        (16, CompressionAlgorithm::Gzip),
        (16, CompressionAlgorithm::Zstd),
        (16, CompressionAlgorithm::Lz4),
    ] {
        assert!(
            seen.contains(&(minor, algorithm.name())),
            "no checked-in 1.{minor} archive with {} compression; seen {seen:?}",
            algorithm.name()
        );
    }
}
