//! `pgarc verify` (issue 5): the damage matrix, quick mode's documented coverage, stock
//! archives, and hostile file names refused by verify, list and restore.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgarc::archive::frame::{hex, FrameIndexEntry};
use pgarc::archive::manifest::Manifest;
use pgarc::archive::toc::{Toc, TocStr};
use sha2::{Digest, Sha256};

use crate::util::{newest_bindir, pgarc, Cluster};

/// Runs `pgarc verify [args] archive`: (exit code, stdout).
pub(crate) fn verify(archive: &Path, args: &[&str]) -> (i32, String) {
    let out = pgarc()
        .arg("verify")
        .args(args)
        .arg(archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn manifest(archive: &Path) -> Manifest {
    crate::util::read_manifest(archive)
}

fn frames(archive: &Path, table: &str) -> (String, Vec<FrameIndexEntry>) {
    let m = manifest(archive);
    let t = m.tables.iter().find(|t| t.name == table).unwrap();
    let index = crate::util::frame_index_of(archive, t);
    (t.file.clone(), index)
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// One kind of damage: how to make it, what a full verify must name, and whether `--quick`
/// catches it (the list in `pgarc help verify` and format-spec/tool.md §2).
type Apply = Box<dyn Fn(&Path)>;

struct Damage {
    name: &'static str,
    apply: Apply,
    names: Vec<String>,
    quick_catches: bool,
}

/// Every kind of damage the matrix applies to a copy of `good` (an archive with tables
/// alpha and beta of at least five frames each).
fn damage_kinds(good: &Path) -> Vec<Damage> {
    let (alpha, alpha_frames) = frames(good, "alpha");
    let (beta, beta_frames) = frames(good, "beta");
    assert!(alpha_frames.len() >= 5 && beta_frames.len() >= 5);
    let size = |f: &str| std::fs::metadata(good.join(f)).unwrap().len();
    assert_ne!(size(&alpha), size(&beta), "the swap changes both sizes");
    let mid = alpha_frames.len() / 2;
    let victim = alpha_frames[mid];
    let donor = beta_frames[beta_frames.len() / 2];
    let frame_name = |n: usize, f: &FrameIndexEntry| {
        format!("frame {n} (bytes {}..{})", f.offset, f.offset + f.stored)
    };

    vec![
        Damage {
            name: "a flipped byte in toc.dat",
            apply: Box::new(|a: &Path| flip(&a.join("toc.dat"), 200)),
            names: vec!["toc.dat: SHA-256".into()],
            quick_catches: true,
        },
        Damage {
            name: "a flipped byte inside a middle frame of a data file",
            apply: Box::new({
                let alpha = alpha.clone();
                move |a: &Path| flip(&a.join(&alpha), victim.offset + victim.stored / 2)
            }),
            names: vec![format!(
                "{alpha}, {}, table public.alpha: checksum mismatch",
                frame_name(mid + 1, &victim)
            )],
            quick_catches: false,
        },
        Damage {
            name: "a flipped byte in the manifest",
            apply: Box::new(|a: &Path| flip(&a.join("manifest.toml"), 100)),
            names: vec!["manifest.toml: checksum mismatch".into()],
            quick_catches: true,
        },
        Damage {
            name: "a truncated data file",
            apply: Box::new({
                let alpha = alpha.clone();
                move |a: &Path| {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(a.join(&alpha))
                        .unwrap();
                    f.set_len(victim.offset + 10).unwrap();
                }
            }),
            names: vec![
                format!("{alpha}: {} bytes, the manifest says", victim.offset + 10),
                format!(
                    "{alpha}, {}, table public.alpha: the file ends inside this frame",
                    frame_name(mid + 1, &victim)
                ),
            ],
            quick_catches: true,
        },
        Damage {
            name: "a deleted file",
            apply: Box::new({
                let beta = beta.clone();
                move |a: &Path| std::fs::remove_file(a.join(&beta)).unwrap()
            }),
            names: vec![format!("{beta}: missing")],
            quick_catches: true,
        },
        Damage {
            name: "an added file",
            apply: Box::new(|a: &Path| std::fs::write(a.join("pgarc/notes.txt"), "hi").unwrap()),
            names: vec!["pgarc/notes.txt: not listed in the manifest".into()],
            quick_catches: true,
        },
        Damage {
            name: "two data files swapped",
            apply: Box::new({
                let (alpha, beta) = (alpha.clone(), beta.clone());
                move |a: &Path| {
                    std::fs::rename(a.join(&alpha), a.join("x")).unwrap();
                    std::fs::rename(a.join(&beta), a.join(&alpha)).unwrap();
                    std::fs::rename(a.join("x"), a.join(&beta)).unwrap();
                }
            }),
            names: vec![
                format!("{alpha}, frame 1 "),
                format!("{beta}, frame 1 "),
                format!("{alpha}: {} bytes", size(&beta)),
            ],
            quick_catches: true,
        },
        Damage {
            name: "a frame replaced by a valid frame of another table",
            apply: Box::new({
                let (alpha, beta) = (alpha.clone(), beta.clone());
                move |a: &Path| {
                    let mut bytes = std::fs::read(a.join(&alpha)).unwrap();
                    let other = std::fs::read(a.join(&beta)).unwrap();
                    let frame =
                        &other[donor.offset as usize..(donor.offset + donor.stored) as usize];
                    bytes.splice(
                        victim.offset as usize..(victim.offset + victim.stored) as usize,
                        frame.iter().copied(),
                    );
                    std::fs::write(a.join(&alpha), bytes).unwrap();
                }
            }),
            names: vec![format!(
                "{alpha}, {}, table public.alpha: checksum mismatch",
                frame_name(mid + 1, &victim)
            )],
            // Quick reads no middle frame: it sees this only through the file's size.
            quick_catches: donor.stored != victim.stored,
        },
    ]
}

/// Acceptance 1: each kind of damage is found and named, exit 1; the untouched archive gives
/// exit 0; `--quick` catches exactly the kinds it documents.
#[test]
fn every_kind_of_damage_is_found_and_named() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.psql(
        "src",
        "CREATE TABLE alpha AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 30000) i;
         CREATE TABLE beta AS SELECT i AS id, repeat('b', i % 50) AS t FROM generate_series(1, 20000) i;
         CREATE TABLE gamma (x int); INSERT INTO gamma VALUES (1), (2)",
    );
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    cluster.pgarc_dump("src", &good, &["--frame-size", "16kB"]);

    let (code, out) = verify(&good, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact") && out.contains("50002 rows"),
        "{out}"
    );
    let (code, out) = verify(&good, &["--quick", "-j", "1"]);
    assert_eq!(code, 0, "{out}");

    let damages = damage_kinds(&good);

    for (i, d) in damages.iter().enumerate() {
        let case = work.path().join(format!("case{i}"));
        copy_dir(&good, &case);
        (d.apply)(&case);
        let (code, out) = verify(&case, &["-j", "2"]);
        assert_eq!(code, 1, "{}: exit 1 expected: {out}", d.name);
        assert!(out.contains("DAMAGED"), "{}: {out}", d.name);
        for n in &d.names {
            assert!(
                out.contains(n.as_str()),
                "{}: {n:?} not named in:\n{out}",
                d.name
            );
        }
        for line in out.lines() {
            assert!(
                line.starts_with("pgarc: "),
                "{}: one line per problem: {out}",
                d.name
            );
        }
        let (code, out) = verify(&case, &["--quick"]);
        let expected = if d.quick_catches { 1 } else { 0 };
        assert_eq!(code, expected, "{}: --quick: {out}", d.name);
    }

    // Could not run at all: exit 2.
    let (code, out) = verify(&work.path().join("nothing-here"), &[]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
}

/// A stock pg_dump archive gets a structural check and says integrity cannot be proven; a
/// truncated data file in it is named.
#[test]
fn stock_archives_get_a_structural_check() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_fixtures_db("src");
    let work = tempfile::tempdir().unwrap();
    let stock = work.path().join("stock");
    let ok = cluster
        .client("pg_dump")
        .args(["-Fd", "-Z", "gzip", "-d", "src", "-f"])
        .arg(&stock)
        .status()
        .unwrap();
    assert!(ok.success());
    let (code, out) = verify(&stock, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("structure intact") && out.contains("integrity cannot be proven"),
        "{out}"
    );
    // Truncate the biggest data file inside its compressed stream.
    let biggest = std::fs::read_dir(&stock)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "gz") && !p.to_string_lossy().contains("blob")
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&biggest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&biggest)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let (code, out) = verify(&stock, &[]);
    assert_eq!(code, 1, "{out}");
    let name = biggest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(out.contains(&name) && out.contains("DAMAGED"), "{out}");
    // --quick does not decompress: it still finds the structure intact.
    let (code, out) = verify(&stock, &["--quick"]);
    assert_eq!(code, 0, "{out}");
}

/// Rewrites toc.dat with entry `dump_id`'s file name replaced, and the manifest to match, as
/// someone crafting a hostile archive would (the checksums then hold).
fn rename_in_toc(archive: &Path, dump_id: i32, name: &str) {
    let toc_path = archive.join("toc.dat");
    let mut toc = Toc::parse(&std::fs::read(&toc_path).unwrap()).unwrap();
    let e = toc
        .entries
        .iter_mut()
        .find(|e| e.dump_id == dump_id)
        .unwrap();
    e.filename = TocStr::new(name);
    let bytes = toc.to_bytes().unwrap();
    std::fs::write(&toc_path, &bytes).unwrap();
    let mut m = manifest(archive);
    let f = m.files.iter_mut().find(|f| f.path == "toc.dat").unwrap();
    f.size = bytes.len() as u64;
    f.sha256 = hex(&Sha256::digest(&bytes));
    std::fs::write(archive.join("manifest.toml"), m.to_bytes()).unwrap();
}

fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

/// Acceptance 2: absolute names, `..` and symbolic links out of the archive are refused by
/// verify, list and restore, and nothing outside the archive is read or changed.
#[test]
fn hostile_file_names_are_refused_by_verify_list_and_restore() {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("src");
    cluster.create_db("target");
    cluster.psql(
        "src",
        "CREATE TABLE t AS SELECT i AS id FROM generate_series(1, 1000) i",
    );
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    cluster.pgarc_dump("src", &good, &[]);
    let m = manifest(&good);
    let table = &m.tables[0];
    // Outside the archive: a file with valid data for the table (what an attacker would plant,
    // or a file the attacker wants pgarc to read).
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::copy(good.join(&table.file), outside.join(&table.file)).unwrap();
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = snapshot_of(&outside);
    let stem = table.file.trim_end_matches(".zst");

    let absolute = outside.join(stem).to_string_lossy().into_owned();
    type Hostile<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>);
    let cases: Vec<Hostile> = vec![
        (
            "absolute",
            Box::new(move |a: &Path| rename_in_toc(a, table.dump_id, &absolute)),
        ),
        (
            "dot-dot",
            Box::new(move |a: &Path| {
                rename_in_toc(a, table.dump_id, &format!("../outside/{stem}"))
            }),
        ),
        (
            "symlink",
            Box::new({
                let (outside, file) = (outside.clone(), table.file.clone());
                move |a: &Path| {
                    std::fs::remove_file(a.join(&file)).unwrap();
                    std::os::unix::fs::symlink(outside.join(&file), a.join(&file)).unwrap();
                }
            }),
        ),
    ];
    for (name, apply) in cases {
        let case = work.path().join(name);
        copy_dir(&good, &case);
        apply(&case);

        let (code, out) = verify(&case, &[]);
        assert_eq!(code, 1, "{name}: verify: {out}");
        assert!(
            out.contains("leaves the archive directory") || out.contains("outside the archive"),
            "{name}: verify names the problem: {out}"
        );

        let out = pgarc().arg("list").arg(&case).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: list: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: list printed nothing");
        assert!(stderr.contains("refused"), "{name}: list: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");

        let out = cluster
            .pgarc()
            .args(["restore", "-d", "target"])
            .arg(&case)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: restore: {stderr}");
        assert!(stderr.contains("refused"), "{name}: restore: {stderr}");
        assert_eq!(
            cluster
                .psql(
                    "target",
                    "SELECT count(*) FROM pg_class WHERE relname = 't'"
                )
                .trim(),
            "0",
            "{name}: nothing was restored"
        );
        assert_eq!(snapshot_of(&outside), before, "{name}: outside untouched");
    }
}
