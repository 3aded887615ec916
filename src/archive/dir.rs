//! An archive directory on disk: where pgarc finds `toc.dat` and, later, the data files and
//! the manifest. All path handling for archive contents goes through here, so that the checks
//! against hostile file names (format-spec §8) have one home.

use std::path::{Path, PathBuf};

use super::error::Error;
use super::toc::Toc;
use super::TOC_FILE;

/// A directory that holds a directory-format archive.
#[derive(Debug, Clone)]
pub struct ArchiveDir {
    root: PathBuf,
}

impl ArchiveDir {
    /// Opens an existing archive directory; it must contain `toc.dat`.
    pub fn open(path: &Path) -> Result<ArchiveDir, Error> {
        let not_archive = |problem: &str| Error::NotArchive {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let meta = std::fs::metadata(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => not_archive("no such directory"),
            _ => Error::Io {
                path: path.to_owned(),
                action: "could not open",
                error,
            },
        })?;
        if !meta.is_dir() {
            return Err(not_archive(
                "not a directory: pgarc reads directory-format archives (pg_dump -Fd); \
                 use pg_restore for custom and tar files",
            ));
        }
        let dir = ArchiveDir {
            root: path.to_owned(),
        };
        if !dir.toc_path().is_file() {
            return Err(not_archive(
                "no toc.dat: not a directory-format archive, or one whose dump did not finish",
            ));
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn toc_path(&self) -> PathBuf {
        self.root.join(TOC_FILE)
    }

    pub fn read_toc(&self) -> Result<Toc, Error> {
        Toc::read_file(&self.toc_path())
    }
}
