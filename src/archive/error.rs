//! Errors of the archive layer. Every message is one line that names the file, where in it the
//! problem is (byte offset, entry), and what is wrong, so that a user of `pgarc list` or
//! `pgarc verify` can tell damage from a version problem without a hex editor.

use std::fmt;
use std::path::PathBuf;

/// An error reading or writing an archive file. The message already contains the cause, so
/// these errors expose no `source()`: printing the chain would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{}: {action}: {error}{}", path.display(), io_hint(error))]
    Io {
        path: PathBuf,
        action: &'static str,
        error: std::io::Error,
    },
    /// The path is not a usable archive directory.
    #[error("{}: {problem}", path.display())]
    NotArchive { path: PathBuf, problem: String },
    /// No data file for an entry, with or without a compression suffix.
    #[error(
        "{}: data file missing (also looked for .gz, .lz4 and .zst): the archive is \
         incomplete; restore the missing file or leave this entry out",
        path.display()
    )]
    MissingDataFile { path: PathBuf },
    /// A data file is there but is not a regular file (a FIFO, a device, a directory).
    #[error(
        "{}: not a regular file (a {kind}): an archive's data files are regular files; \
         replace it with the file the dump wrote",
        path.display()
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// An object store refused or failed a request: where, and the problem with its fix.
    #[error("{location}: {problem}")]
    Store { location: String, problem: String },
    /// The file was read but its contents are not a valid `toc.dat`.
    #[error("{}: {error}", path.display())]
    Toc { path: PathBuf, error: TocError },
}

/// What to do about the I/O errors a user can fix.
fn io_hint(error: &std::io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(28) => " (the disk is full: free space or write elsewhere)",
        Some(122) => " (the disk quota is exhausted)",
        _ => "",
    }
}

/// A problem found while decoding or encoding `toc.dat` bytes, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TocError {
    /// Byte offset in the file where the offending item starts.
    pub offset: usize,
    /// The TOC entry being read: its position in the file (0-based) and dumpId if known.
    pub entry: Option<(usize, Option<i32>)>,
    pub kind: TocErrorKind,
}

impl fmt::Display for TocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match self.entry {
            Some((index, Some(id))) => write!(f, " (TOC entry #{} with dumpId {id}", index + 1)?,
            Some((index, None)) => write!(f, " (TOC entry #{}", index + 1)?,
            None => write!(f, " (")?,
        }
        if self.entry.is_some() {
            write!(f, ", ")?;
        }
        write!(f, "at byte {})", self.offset)
    }
}

/// What is wrong. Field names in messages are those of pg_dump's `TocEntry` and `ReadHead`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TocErrorKind {
    #[error("truncated: {what} needs {needed} bytes but only {available} remain")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("not a pg_dump archive: the file does not start with the magic string PGDMP")]
    BadMagic,
    #[error(
        "archive version {major}.{minor}.{rev} is not supported: pgarc reads versions 1.12 to 1.16 \
         (pg_dump 9.0 to 18){}",
        if *major > 1 || (*major == 1 && *minor > 16) {
            "; a newer pgarc is needed"
        } else {
            "; use pg_restore for archives this old"
        }
    )]
    UnsupportedVersion { major: u8, minor: u8, rev: u8 },
    #[error(
        "integer size {0} in the header is invalid (pg_dump writes 4; at most 32 is accepted)"
    )]
    BadIntSize(u8),
    #[error(
        "format byte {0} is not that of a directory archive (3); a custom-format (1) file is read \
         by pg_restore, not by pgarc"
    )]
    NotDirectoryFormat(u8),
    #[error("{what}: integer does not fit in 64 bits")]
    IntTooLarge { what: &'static str },
    #[error("{what}: value {value} is out of range")]
    OutOfRange { what: &'static str, value: i64 },
    #[error(
        "{what}: string length {len} runs past the end of the file ({available} bytes left): \
         the file is truncated or damaged"
    )]
    StringTooLong {
        what: &'static str,
        len: i64,
        available: usize,
    },
    #[error("{what} is NULL, which pg_restore cannot handle")]
    RequiredNull { what: &'static str },
    #[error("dependency {0:?} is not a dumpId")]
    BadDependency(String),
    #[error("dumpId {0} is out of range (must be > 0)")]
    BadDumpId(i64),
    #[error("{0} unexpected bytes after the last TOC entry")]
    TrailingBytes(usize),
    #[error("{what}: value {value} does not fit in an integer of {int_size} bytes")]
    DoesNotFit {
        what: &'static str,
        value: i64,
        int_size: u8,
    },
    #[error("header compression {found} cannot be stored in archive version 1.{minor}")]
    CompressionVersionMismatch { found: &'static str, minor: u8 },
}
