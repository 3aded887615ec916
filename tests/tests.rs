//! pgarc's integration tests: one binary, one set of helpers (`util`), one module per topic.

mod util;

// toc.dat against the real pg_dump and pg_restore, live and through checked-in archives.
mod toc_compat;
// Data files written as frames (format-spec §4.1) restore with stock pg_restore.
mod dump;
mod frames_compat;
// Damaged and hostile toc.dat: one-line errors, exit code 1, never a panic.
mod toc_damage;
// Property tests of the toc.dat reader and writer, seeded from real archives.
mod toc_props;
// pgarc restore against real servers and stock pg_restore.
mod restore;
// pgarc verify: the damage matrix, stock archives, hostile file names.
mod verify;
// Failures in dump and restore: no manifest, no leftovers, the cause and unfinished tables named.
mod faults;
// Issue 7: selection options against pg_dump and pg_restore, progress, the JSON report.
mod interface;
// TLS: sslmode against a server with a throwaway CA.
mod tls;
// Issue 8: servers 14 to 18, pg_dump 14 to 18 archives, pg_restore 15 to 18.
mod versions;
// Issue 16: encodings, all-or-nothing loads, refused COPYs, private archives, bombs,
// rewritten tables, faults that end clearly, and the default codec's readers.
mod trust;
// format-spec/vectors: the conformance vectors and their verdicts.
mod vectors;
// Issue 19: content digests, verify --against, restore --verify.
mod compare;
// Issue 20: archives in S3-compatible object storage, against Garage and s3s-fs.
mod s3;
// Issue 21: resume; first step, pgarc snapshot.
mod resume;
// Issue 22: the Debian package, man pages, completions, --version.
mod package;
