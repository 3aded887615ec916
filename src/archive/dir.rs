//! An archive directory on disk: where pgarc finds `toc.dat` and, later, the data files and
//! the manifest. All path handling for archive contents goes through here, so that the checks
//! against hostile file names (format-spec §8) have one home.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::Error;
use super::frame::{hex, parse_frame_index, FrameIndexEntry};
use super::manifest::{Manifest, TableRecord, MANIFEST_FILE, MANIFEST_MAX_BYTES};
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

/// What a restore trusts from a pgarc archive's manifest.
impl ArchiveDir {
    /// Reads `manifest.toml` if there is one. `Ok(None)` for a stock pg_dump archive; an
    /// error for a pgarc archive whose dump never finished or whose manifest is damaged.
    pub fn read_manifest(&self) -> Result<Option<Manifest>, Error> {
        let path = self.root.join(MANIFEST_FILE);
        let bytes = match read_bounded(&path, MANIFEST_MAX_BYTES) {
            Ok(b) => b,
            Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                if self.root.join("pgarc").is_dir() {
                    return Err(Error::NotArchive {
                        path,
                        problem: "missing: this pgarc archive is incomplete (its dump did not \
                                  finish); dump again"
                            .into(),
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Manifest::parse(&bytes)
            .map(Some)
            .map_err(|e| Error::NotArchive {
                path,
                problem: format!("{e}; run pgarc verify"),
            })
    }

    /// Reads a file the manifest lists, refusing it unless its size and SHA-256 match.
    pub fn read_listed_file(&self, manifest: &Manifest, rel: &str) -> Result<Vec<u8>, Error> {
        let path = self.root.join(rel);
        let record = manifest
            .files
            .iter()
            .find(|f| f.path == rel)
            .ok_or_else(|| Error::NotArchive {
                path: path.clone(),
                problem: "not listed in the manifest".into(),
            })?;
        let bytes = read_bounded(&path, MANIFEST_MAX_BYTES)?;
        let sum = hex(&Sha256::digest(&bytes));
        if bytes.len() as u64 != record.size || sum != record.sha256 {
            return Err(Error::NotArchive {
                path,
                problem: format!(
                    "does not match the manifest ({} bytes, SHA-256 {sum}; the manifest says {} \
                     bytes, {}): the archive is damaged; run pgarc verify",
                    bytes.len(),
                    record.size,
                    record.sha256
                ),
            });
        }
        Ok(bytes)
    }

    /// The frame index of a table, checked against the manifest.
    pub fn frame_index(
        &self,
        manifest: &Manifest,
        table: &TableRecord,
    ) -> Result<Vec<FrameIndexEntry>, Error> {
        let bytes = self.read_listed_file(manifest, &table.frame_index)?;
        parse_frame_index(&bytes).map_err(|e| Error::NotArchive {
            path: self.root.join(&table.frame_index),
            problem: e.to_string(),
        })
    }
}

/// Reads a whole file that must not exceed `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let io = |error| Error::Io {
        path: path.to_owned(),
        action: "could not read",
        error,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(Error::NotArchive {
            path: path.to_owned(),
            problem: format!("larger than {limit} bytes: refused"),
        });
    }
    Ok(bytes)
}
