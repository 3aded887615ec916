//! format-spec/vectors: the conformance vectors of archive.md §11. Each vector is a small
//! archive made from one real dump and then changed as a buggy writer or an attacker would
//! change it; `verdicts.tsv` says what a reader must conclude. The test runs `pgarc verify` on
//! every vector and compares; `regenerated_conformance_vectors_get_their_verdicts` makes
//! them again from a fresh dump and checks those too (`PGARC_UPDATE_VECTORS=1`: in place).

use std::path::{Path, PathBuf};

use pgarc::archive::frame::{Codec, Frame};
use pgarc::archive::manifest::{checked_body_len, with_checksum, Manifest};
use pgarc::archive::toc::{Toc, TocStr};

use crate::util::{newest_bindir, read_manifest, relist_file, repo_root, write_manifest, Cluster};

fn vectors_dir() -> PathBuf {
    repo_root().join("format-spec/vectors")
}

/// One line of verdicts.tsv.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    name: String,
    /// `valid`, `damaged` or `refused`.
    verdict: String,
    /// The archive file a `damaged` verdict names (`-` otherwise).
    file: String,
    /// Text pgarc's message contains (`-` for none).
    text: String,
}

fn read_verdicts(dir: &Path) -> Vec<Verdict> {
    let text = std::fs::read_to_string(dir.join("verdicts.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "verdicts.tsv: 4 tab-separated fields: {l:?}");
            Verdict {
                name: f[0].into(),
                verdict: f[1].into(),
                file: f[2].into(),
                text: f[3].into(),
            }
        })
        .collect()
}

/// Every vector gets its verdict from `pgarc verify`: exit 0 for valid, 1 naming the file for
/// damaged, 2 for refused; and every vector directory has a verdict.
#[test]
fn conformance_vectors_get_their_verdicts() {
    check_vectors(&vectors_dir());
}

/// The vectors in `dir` against its verdicts.tsv.
fn check_vectors(dir: &Path) {
    let verdicts = read_verdicts(dir);
    assert!(verdicts.len() >= 20, "at least 20 vectors");
    let mut dirs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|d| d.path().is_dir())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut named: Vec<String> = verdicts.iter().map(|v| v.name.clone()).collect();
    named.sort();
    assert_eq!(dirs, named, "one verdict per vector directory");
    for v in &verdicts {
        let (code, out) = crate::verify::verify(&dir.join(&v.name), &[]);
        let expected = match v.verdict.as_str() {
            "valid" => 0,
            "damaged" => 1,
            "refused" => 2,
            other => panic!("{}: unknown verdict {other:?}", v.name),
        };
        assert_eq!(
            code, expected,
            "{}: exit {expected} expected:\n{out}",
            v.name
        );
        if v.verdict == "damaged" {
            assert!(
                out.lines().any(|l| l.contains(&format!(": {}", v.file))
                    && (v.text == "-" || l.contains(&v.text))),
                "{}: a problem with {} ({:?}) expected:\n{out}",
                v.name,
                v.file,
                v.text
            );
        } else if v.text != "-" {
            assert!(
                out.contains(&v.text),
                "{}: {:?} expected:\n{out}",
                v.name,
                v.text
            );
        }
    }
}

/// Makes the vectors again from a fresh dump (PostgreSQL 18, pgarc and stock pg_dump) and
/// checks that each gets the verdict the generator gives it: the cases still describe the
/// code. With `PGARC_UPDATE_VECTORS=1` they replace format-spec/vectors (run it when the
/// format changes, review the diff, and commit it with the change); otherwise they are made
/// in a temporary directory.
#[test]
fn regenerated_conformance_vectors_get_their_verdicts() {
    let scratch = tempfile::tempdir().unwrap();
    let out = if std::env::var_os("PGARC_UPDATE_VECTORS").is_some() {
        vectors_dir()
    } else {
        scratch.path().join("vectors")
    };
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("v");
    cluster.psql(
        "v",
        "CREATE TABLE alpha AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 300) i;
         CREATE TABLE beta AS SELECT i AS id, repeat('b', i % 20) AS t FROM generate_series(1, 100) i;
         SELECT lo_from_bytea(0, 'a large object');",
    );
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    cluster.pgarc_dump("v", &base, &["--frame-size", "4kB"]);
    // Format 2 (and, edited, 1.x): the same dump without digests.
    let base2 = work.path().join("base2");
    cluster.pgarc_dump("v", &base2, &["--frame-size", "4kB", "--no-digest"]);
    let stock = work.path().join("stock");
    crate::util::run_ok(
        cluster
            .client("pg_dump")
            .args(["-Fd", "-f"])
            .arg(&stock)
            .arg("v"),
    );

    let mut lines = vec![
        "# name\tverdict\tfile\ttext: archive.md §11; only the verdict and the file are normative"
            .to_string(),
    ];
    for (name, from, verdict, file, text, change) in cases() {
        let dir = out.join(name);
        copy_tree(
            match from {
                "stock" => &stock,
                "pgarc2" => &base2,
                _ => &base,
            },
            &dir,
        );
        change(&dir);
        let file = match file.strip_prefix('@') {
            Some(what) => table_file(&dir, what),
            None => file.to_string(),
        };
        lines.push(format!("{name}\t{verdict}\t{file}\t{text}"));
    }
    std::fs::write(out.join("verdicts.tsv"), lines.join("\n") + "\n").unwrap();
    check_vectors(&out);
}

type Change = Box<dyn Fn(&Path)>;

/// (name, made from, verdict, file (`@table` for that table's data file), text, change).
fn cases() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Change,
)> {
    vec![
        (
            "valid-pgarc",
            "pgarc",
            "valid",
            "-",
            "intact",
            Box::new(|_: &Path| {}),
        ),
        (
            "valid-stock",
            "stock",
            "valid",
            "-",
            "structure intact",
            Box::new(|_: &Path| {}),
        ),
        (
            "valid-format-1-integer",
            "pgarc2",
            "valid",
            "-",
            "intact",
            Box::new(|d: &Path| {
                crate::util::externalize_frame_indexes(d);
                edit_manifest_text(d, |t| t.replacen("format = \"1.9\"", "format = 1", 1))
            }),
        ),
        (
            "valid-format-1.9",
            "pgarc2",
            "valid",
            "-",
            "intact",
            Box::new(|d: &Path| crate::util::externalize_frame_indexes(d)),
        ),
        (
            "frame-list-in-format-1",
            "pgarc2",
            "damaged",
            "manifest.toml",
            "unknown key \"frame_list\"",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| t.replacen("format = \"2.0\"", "format = \"1.9\"", 1))
            }),
        ),
        (
            "frame-list-and-file",
            "pgarc",
            "damaged",
            "manifest.toml",
            "both frame_index and frame_list",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| {
                    t.replacen(
                        "frame_list = ",
                        "frame_index = \"pgarc/frames/1.tsv\"\nframe_list = ",
                        1,
                    )
                })
            }),
        ),
        (
            "frame-list-disagrees",
            "pgarc",
            "damaged",
            "manifest.toml",
            "rows, the manifest says",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                let t = m.tables.iter_mut().find(|t| t.name == "beta").unwrap();
                let list = t.frame_list.clone().expect("beta's index is inline");
                // The first frame's rows, one more: the list no longer adds up to the record.
                let mut lines: Vec<String> = list.lines().map(str::to_string).collect();
                let mut f: Vec<String> = lines[1].split('\t').map(str::to_string).collect();
                f[3] = (f[3].parse::<u64>().unwrap() + 1).to_string();
                lines[1] = f.join("\t");
                t.frame_list = Some(lines.join("\n") + "\n");
                write_manifest(d, &m);
            }),
        ),
        (
            "valid-newer-minor",
            "pgarc2",
            "valid",
            "-",
            "not checked: a [[table]]: digest",
            Box::new(|d: &Path| {
                crate::util::externalize_frame_indexes(d);
                edit_manifest_text(d, |t| {
                    t.replacen("format = \"1.9\"", "format = \"1.42\"", 1)
                        .replace("[[table]]\n", "[[table]]\ndigest = \"later\"\n")
                })
            }),
        ),
        (
            "valid-stream-in-pgarc",
            "pgarc",
            "valid",
            "-",
            "intact",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                crate::util::drop_table_record(d, &mut m, "beta");
                write_manifest(d, &m);
            }),
        ),
        (
            "newer-major",
            "pgarc",
            "damaged",
            "manifest.toml",
            "archive format 4.0 is not known",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| t.replacen("format = \"3.0\"", "format = \"4.0\"", 1))
            }),
        ),
        (
            "valid-format-2",
            "pgarc2",
            "valid",
            "-",
            "intact",
            Box::new(|_: &Path| {}),
        ),
        (
            "rows-sum-in-format-2",
            "pgarc",
            "damaged",
            "manifest.toml",
            "unexpected section [settings]",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| t.replacen("format = \"3.0\"", "format = \"2.0\"", 1))
            }),
        ),
        (
            "no-settings",
            "pgarc",
            "damaged",
            "manifest.toml",
            "has no [settings]",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| {
                    let start = t.find("[settings]\n").unwrap();
                    let end = start + t[start..].find("\n\n").unwrap() + 1;
                    format!("{}{}", &t[..start], &t[end..])
                })
            }),
        ),
        (
            "table-rows-sum-disagrees",
            "pgarc",
            "damaged",
            "manifest.toml",
            "rows_sum add up to",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                let t = m.tables.iter_mut().find(|t| t.name == "beta").unwrap();
                t.rows_sum = Some("1".repeat(32));
                write_manifest(d, &m);
            }),
        ),
        (
            "frame-rows-sum-wrong",
            "pgarc",
            "damaged",
            "@alpha",
            "rows' digest is",
            Box::new(|d: &Path| {
                // A writer that summed the wrong rows: the frame's rows_sum, and the table's
                // with it, say something else; every size and SHA-256 still agrees.
                let mut m = read_manifest(d);
                let t = m.tables.iter().find(|t| t.name == "alpha").unwrap().clone();
                let mut index = crate::util::frame_index_of(d, &t);
                index[0].rows_sum = Some([0x11; 16]);
                crate::util::put_frame_index(d, &mut m, "alpha", &index);
                write_manifest(d, &m);
            }),
        ),
        (
            "unknown-key-same-minor",
            "pgarc",
            "damaged",
            "manifest.toml",
            "unknown key \"digest\"",
            Box::new(|d: &Path| {
                edit_manifest_text(d, |t| {
                    t.replace("[[table]]\n", "[[table]]\ndigest = \"later\"\n")
                })
            }),
        ),
        (
            "manifest-checksum",
            "pgarc",
            "damaged",
            "manifest.toml",
            "checksum mismatch",
            Box::new(|d: &Path| {
                let p = d.join("manifest.toml");
                let t = std::fs::read_to_string(&p)
                    .unwrap()
                    .replacen("jobs = ", "jobs = 1", 1);
                std::fs::write(p, t).unwrap();
            }),
        ),
        (
            "unfinished-no-manifest",
            "pgarc",
            "damaged",
            "manifest.toml",
            "missing",
            Box::new(|d: &Path| std::fs::remove_file(d.join("manifest.toml")).unwrap()),
        ),
        (
            "toc-flipped-byte",
            "pgarc",
            "damaged",
            "toc.dat",
            "SHA-256 is",
            Box::new(|d: &Path| flip(&d.join("toc.dat"), 40)),
        ),
        (
            "frame-flipped-byte",
            "pgarc",
            "damaged",
            "@alpha",
            "checksum mismatch",
            Box::new(|d: &Path| {
                let (file, index) = frames(d, "alpha");
                let f = index[1];
                flip(&d.join(file), f.offset + f.stored / 2);
            }),
        ),
        (
            "data-truncated",
            "pgarc",
            "damaged",
            "@alpha",
            "truncated",
            Box::new(|d: &Path| {
                let (file, index) = frames(d, "alpha");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join(file))
                    .unwrap();
                f.set_len(index[1].offset + 5).unwrap();
            }),
        ),
        (
            "data-missing",
            "pgarc",
            "damaged",
            "@beta",
            "missing",
            Box::new(|d: &Path| std::fs::remove_file(d.join(table_file(d, "beta"))).unwrap()),
        ),
        (
            "file-added",
            "pgarc",
            "damaged",
            "pgarc/notes.txt",
            "not listed in the manifest",
            Box::new(|d: &Path| std::fs::write(d.join("pgarc/notes.txt"), "hello").unwrap()),
        ),
        (
            "symlink-out-of-archive",
            "pgarc",
            "damaged",
            "@beta",
            "symbolic link",
            Box::new(|d: &Path| {
                let file = table_file(d, "beta");
                std::fs::remove_file(d.join(&file)).unwrap();
                std::os::unix::fs::symlink("../valid-pgarc/".to_string() + &file, d.join(&file))
                    .unwrap();
            }),
        ),
        (
            "toc-name-escapes",
            "pgarc",
            "damaged",
            "toc.dat",
            "leaves the archive directory",
            Box::new(|d: &Path| {
                edit_toc(d, |toc| {
                    let e = toc
                        .entries
                        .iter_mut()
                        .find(|e| e.desc.is("TABLE DATA"))
                        .unwrap();
                    e.filename = TocStr::new("../outside.dat");
                })
            }),
        ),
        (
            "table-without-entry",
            "pgarc",
            "damaged",
            "toc.dat",
            "has no entry",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                m.tables[0].dump_id = 99999;
                write_manifest(d, &m);
            }),
        ),
        (
            "tables-swapped-in-manifest",
            "pgarc",
            "damaged",
            "toc.dat",
            "the manifest",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                let (a, b) = (m.tables[0].dump_id, m.tables[1].dump_id);
                m.tables[0].dump_id = b;
                m.tables[1].dump_id = a;
                write_manifest(d, &m);
            }),
        ),
        (
            "index-gap",
            "pgarc",
            "damaged",
            "@alpha.tsv",
            "starts at",
            Box::new(|d: &Path| {
                edit_index_text(d, "alpha", |lines| {
                    let mut f: Vec<String> = lines[2].split('\t').map(str::to_string).collect();
                    let off: u64 = f[0].parse().unwrap();
                    f[0] = (off + 1).to_string();
                    lines[2] = f.join("\t");
                })
            }),
        ),
        (
            "index-uppercase-hex",
            "pgarc",
            "damaged",
            "@alpha.tsv",
            "bad sha256",
            Box::new(|d: &Path| {
                edit_index_text(d, "alpha", |lines| lines[1] = lines[1].to_uppercase())
            }),
        ),
        (
            "index-leading-zero",
            "pgarc",
            "damaged",
            "@alpha.tsv",
            "is not a number",
            Box::new(|d: &Path| {
                edit_index_text(d, "alpha", |lines| lines[1] = format!("0{}", lines[1]))
            }),
        ),
        (
            "index-disagrees-with-table",
            "pgarc",
            "damaged",
            "@alpha.tsv",
            "rows, the manifest says",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                m.tables
                    .iter_mut()
                    .find(|t| t.name == "alpha")
                    .unwrap()
                    .rows += 1;
                write_manifest(d, &m);
            }),
        ),
        (
            "frame-claims-too-much",
            "pgarc",
            "damaged",
            "@alpha",
            "at most 64 MiB",
            Box::new(|d: &Path| {
                let (_, mut index) = frames(d, "alpha");
                index[0].raw += 100 << 20;
                rewrite_index(d, "alpha", &index);
            }),
        ),
        (
            "marker-inside-data",
            "pgarc",
            "damaged",
            "@alpha",
            "end-of-data marker",
            Box::new(|d: &Path| replace_first_frame(d, "alpha", b"1\tx\n\\.\n")),
        ),
        (
            "lz4-framed-file",
            "pgarc",
            "damaged",
            "@alpha",
            "lz4",
            Box::new(|d: &Path| {
                let mut m = read_manifest(d);
                let t = m.tables.iter_mut().find(|t| t.name == "alpha").unwrap();
                let old = t.file.clone();
                t.file = pgarc::archive::data::strip_codec_suffix(&old).to_string() + ".lz4";
                std::fs::rename(d.join(&old), d.join(&t.file)).unwrap();
                let new = t.file.clone();
                m.files.iter_mut().find(|f| f.path == old).unwrap().path = new;
                m.files.sort_by(|a, b| a.path.cmp(&b.path));
                write_manifest(d, &m);
            }),
        ),
        (
            "blob-list-bad-line",
            "pgarc",
            "damaged",
            "@blobs",
            "expected \"OID FILE\"",
            Box::new(|d: &Path| {
                let list = table_file(d, "blobs");
                std::fs::write(d.join(&list), "no-space-here\n").unwrap();
                let mut m = read_manifest(d);
                relist_file(d, &mut m, &list);
                write_manifest(d, &m);
            }),
        ),
        (
            "stock-truncated",
            "stock",
            "damaged",
            "@stock-data",
            "does not decompress",
            Box::new(|d: &Path| {
                let file = table_file(d, "stock-data");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join(file))
                    .unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len / 2).unwrap();
            }),
        ),
        (
            "not-an-archive",
            "pgarc",
            "refused",
            "-",
            "not a directory-format archive",
            Box::new(|d: &Path| {
                for entry in std::fs::read_dir(d).unwrap().flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(p).unwrap()
                    } else {
                        std::fs::remove_file(p).unwrap()
                    }
                }
                std::fs::write(d.join("README.txt"), "no toc.dat here").unwrap();
            }),
        ),
    ]
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The archive file a verdict names for `what`: a table's data file (`alpha`), its frame
/// index (`alpha.tsv`), the large-object list (`blobs`), or a stock data file (`stock-data`).
fn table_file(dir: &Path, what: &str) -> String {
    match what {
        "blobs" => std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("blobs"))
            .unwrap(),
        "stock-data" => {
            let toc = Toc::parse(&std::fs::read(dir.join("toc.dat")).unwrap()).unwrap();
            let e = toc
                .entries
                .iter()
                .find(|e| e.desc.is("TABLE DATA"))
                .unwrap();
            let name = e.filename.to_str_lossy().unwrap().into_owned();
            std::iter::once("")
                .chain(pgarc::archive::reader::SUFFIXES.iter().map(|(s, _)| *s))
                .map(|s| format!("{name}{s}"))
                .find(|n| dir.join(n).exists())
                .unwrap()
        }
        _ => {
            let (table, index) = match what.strip_suffix(".tsv") {
                Some(t) => (t, true),
                None => (what, false),
            };
            let m = read_manifest(dir);
            let t = m.tables.iter().find(|t| t.name == table).unwrap();
            if index {
                t.frame_index
                    .clone()
                    .unwrap_or_else(|| "manifest.toml".into())
            } else {
                t.file.clone()
            }
        }
    }
}

fn frames(dir: &Path, table: &str) -> (String, Vec<pgarc::archive::frame::FrameIndexEntry>) {
    let m = read_manifest(dir);
    let t = m.tables.iter().find(|t| t.name == table).unwrap();
    (t.file.clone(), crate::util::frame_index_of(dir, t))
}

/// Rewrites the manifest's text (format line included) and its checksum.
fn edit_manifest_text(dir: &Path, edit: impl Fn(&str) -> String) {
    let p = dir.join("manifest.toml");
    let bytes = std::fs::read(&p).unwrap();
    let body = std::str::from_utf8(&bytes[..checked_body_len(&bytes).unwrap()]).unwrap();
    std::fs::write(p, with_checksum(edit(body).as_bytes())).unwrap();
}

/// Changes toc.dat and lists it again in the manifest: a consistent, hostile archive.
fn edit_toc(dir: &Path, edit: impl Fn(&mut Toc)) {
    let p = dir.join("toc.dat");
    let mut toc = Toc::parse(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut toc);
    std::fs::write(&p, toc.to_bytes().unwrap()).unwrap();
    let mut m = read_manifest(dir);
    relist_file(dir, &mut m, "toc.dat");
    write_manifest(dir, &m);
}

/// Changes a frame index's lines (0 is the header) and lists it again.
fn edit_index_text(dir: &Path, table: &str, edit: impl Fn(&mut Vec<String>)) {
    let rel = table_file(dir, &format!("{table}.tsv"));
    let text = std::fs::read_to_string(dir.join(&rel)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    std::fs::write(dir.join(&rel), lines.join("\n") + "\n").unwrap();
    let mut m = read_manifest(dir);
    relist_file(dir, &mut m, &rel);
    write_manifest(dir, &m);
}

/// Writes a table's frame index and makes its `[[table]]` and `[[file]]` records agree.
fn rewrite_index(dir: &Path, table: &str, index: &[pgarc::archive::frame::FrameIndexEntry]) {
    let mut m: Manifest = read_manifest(dir);
    let file = crate::util::put_frame_index(dir, &mut m, table, index);
    relist_file(dir, &mut m, &file);
    write_manifest(dir, &m);
}

/// Puts a frame of `rows` in place of a table's first frame, with a consistent index and
/// manifest: damage only the frame's contents can reveal.
fn replace_first_frame(dir: &Path, table: &str, rows: &[u8]) {
    let (file, index) = frames(dir, table);
    let bytes = std::fs::read(dir.join(&file)).unwrap();
    let frame = Frame::of_rows(Codec::Zstd(3), rows).unwrap();
    let mut out = frame.stored.clone();
    let mut new_index = vec![frame.index_entry(0)];
    for f in &index[1..] {
        let offset = out.len() as u64;
        out.extend_from_slice(&bytes[f.offset as usize..(f.offset + f.stored) as usize]);
        new_index.push(pgarc::archive::frame::FrameIndexEntry { offset, ..*f });
    }
    std::fs::write(dir.join(&file), out).unwrap();
    rewrite_index(dir, table, &new_index);
}
