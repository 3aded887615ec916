//! The data-file framing of format-spec §4.1 against stock pg_restore: a pg_dump archive whose
//! data files are rewritten as independently compressed frames of whole rows, in shuffled
//! order (as several workers would write them), followed by the end frame, restores with
//! `pg_restore -j 1` and `-j 4` to tables equal to the source.

use pgarc::archive::frame::{Codec, Frame, RowBatcher, END_MARKER};
use pgarc::archive::toc::{ArchiveVersion, HeaderCompression, Toc};

use crate::util::{run_ok, sorted_byte_lines, Cluster};

/// Splits a COPY body into frames of at most `limit` raw bytes, in a deterministic shuffle.
fn shuffled_frames(codec: Codec, body: &[u8], limit: usize) -> Vec<Frame> {
    let mut batcher = RowBatcher::new(limit);
    let mut batches: Vec<Vec<u8>> = body
        .split_inclusive(|&b| b == b'\n')
        .filter_map(|row| batcher.push(row))
        .collect();
    batches.extend(batcher.finish());
    // Odd batches first, then even ones reversed: no frame is where the row order puts it.
    let (odd, even): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 1);
    odd.into_iter()
        .chain(even.into_iter().rev())
        .map(|(_, raw)| Frame::of_rows(codec, &raw).unwrap())
        .collect()
}

#[test]
fn stock_pg_restore_restores_data_files_written_as_shuffled_frames() {
    let cluster = Cluster::start();
    cluster.create_fixtures_db("src");
    let expected = cluster.table_fingerprints("src");
    assert!(
        expected.len() > 15,
        "fixtures hold many tables: {expected:?}"
    );
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("plain");
    cluster.stock_dump_uncompressed("src", &plain);

    let mut codecs = vec![Codec::Gzip(6), Codec::None];
    if cluster.version.major >= 16 {
        codecs.push(Codec::Zstd(3));
    }
    for codec in codecs {
        let dir = work.path().join(format!("framed{}", codec.suffix()));
        std::fs::create_dir(&dir).unwrap();
        for f in std::fs::read_dir(&plain).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
        let mut toc = Toc::read_file(&dir.join("toc.dat")).unwrap();
        let mut multi_frame_tables = 0;
        for entry in toc.entries.iter().filter(|e| e.desc.is("TABLE DATA")) {
            let name = String::from_utf8(entry.filename.as_bytes().unwrap().to_vec()).unwrap();
            let raw = std::fs::read(dir.join(&name)).unwrap();
            let body = raw
                .strip_suffix(END_MARKER)
                .expect("pg_dump ends data with the marker");
            let frames = shuffled_frames(codec, body, 512);
            multi_frame_tables += usize::from(frames.len() > 1);
            // The frames hold exactly the original rows, and they decode on their own.
            let mut decoded = Vec::new();
            for f in &frames {
                decoded.extend(codec.decode(&f.stored, 4096).unwrap());
            }
            let original = sorted_byte_lines(body);
            assert_eq!(sorted_byte_lines(&decoded), original, "{name}");
            let rows: u64 = frames.iter().map(|f| f.rows).sum();
            assert_eq!(rows as usize, original.len(), "{name}");

            let mut file = Vec::new();
            for f in frames.iter().chain([&Frame::end(codec).unwrap()]) {
                file.extend_from_slice(&f.stored);
            }
            std::fs::remove_file(dir.join(&name)).unwrap();
            std::fs::write(dir.join(format!("{name}{}", codec.suffix())), file).unwrap();
        }
        assert!(multi_frame_tables >= 3, "several tables span many frames");
        toc.header.compression = if toc.header.version >= ArchiveVersion::V1_15 {
            HeaderCompression::Algorithm(codec.algorithm())
        } else {
            HeaderCompression::GzipLevel(if codec == Codec::None { 0 } else { -1 })
        };
        std::fs::write(dir.join("toc.dat"), toc.to_bytes().unwrap()).unwrap();

        for jobs in ["1", "4"] {
            let db = format!("restored_{}_{jobs}", codec.algorithm().name());
            cluster.create_db(&db);
            run_ok(
                cluster
                    .client("pg_restore")
                    .args(["--exit-on-error", "-j", jobs, "-d", &db])
                    .arg(&dir),
            );
            assert_eq!(cluster.table_fingerprints(&db), expected, "{db}");
        }
    }
}
