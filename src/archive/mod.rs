//! The archive format, and nothing else: pure code with no database, no async runtime and no
//! process spawning. Every other part of pgarc reads and writes archive files only through
//! this module, so the rules of `format-spec/` live in one place.
//!
//! - [`toc`]: the `toc.dat` model and its byte-exact reader and writer (archive versions 1.12
//!   to 1.16), built on the primitive encodings (Int, Str: [`toc::TocStr`]) in `primitive`.
//! - [`select`]: which entries pg_restore acts on (its `_tocEntryRequired` rules).
//! - [`list`]: the `pg_restore -l` style listing.
//! - [`compat`]: which pg_restore versions can read a given archive.
//! - [`ArchiveDir`]: an archive: toc.dat, the manifest, the files it holds, in a store.
//! - [`store`]: the storage seam every archive byte goes through: a local directory
//!   ([`store::LocalDir`]) or, in `crate::s3`, an S3-compatible object store; `s3://`
//!   locations and the AWS configuration conventions.
//! - `names`: which file names may be opened, and the paths they lead to (§2, §8).
//! - [`Error`]: one error type whose messages name the file and the problem.
//! - [`frame`]: data files as independently compressed frames of whole COPY rows, and the
//!   frame index (format-spec §4.1, §5.2).
//! - [`manifest`]: the manifest, written last, that proves the archive's integrity (§5.1).
//! - [`data`]: the one seam through which restore and verify reach an entry's data:
//!   located, cross-checked against the manifest, read as checked rows (typed problems).
//! - [`reader`]: the primitives under `data`: finding and decoding data files, frame checks,
//!   whole-file hashing, the COPY stream scanner.
//! - [`digest`]: a table's order-independent content digest (format 3, §5.3).
//! - [`writer`]: writing an archive into a store: data files frame by frame from many workers,
//!   toc.dat, frame indexes and the manifest, in the order of §6 and tool.md §1.

pub mod compat;
pub mod data;
pub mod digest;
mod dir;
mod error;
pub mod expect;
pub mod frame;
pub mod journal;
pub mod list;
pub mod manifest;
mod names;
mod primitive;
pub mod reader;
pub mod select;
pub mod store;
pub mod toc;
pub mod writer;

pub use dir::{ArchiveDir, ManifestState};
pub use error::{Error, TocError, TocErrorKind};
pub use names::{inside_archive, safe_relative_name, NameError};

/// The name of the table of contents inside a directory archive.
pub const TOC_FILE: &str = "toc.dat";
