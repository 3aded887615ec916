//! An archive directory on disk: opening it, its `toc.dat` (checked against the manifest when
//! there is one), its manifest, and the list of every file in it. Names are resolved to
//! paths through `names` (format-spec §2, §8); where an entry's data lives is `data`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::Error;
use super::manifest::{ListedFile, Manifest, ManifestIndex, MANIFEST_FILE, MANIFEST_MAX_BYTES};
use super::store::{LocalDir, Stat, Store};
use super::toc::Toc;
use super::TOC_FILE;

/// A directory-format archive, in whatever store holds it.
#[derive(Debug, Clone)]
pub struct ArchiveDir {
    store: Arc<dyn Store>,
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
        Self::open_store(Arc::new(LocalDir::new(path)))
    }

    /// Opens the archive a store holds; it must hold `toc.dat` (or, damaged, a manifest).
    pub fn open_store(store: Arc<dyn Store>) -> Result<ArchiveDir, Error> {
        let dir = ArchiveDir { store };
        let toc = dir.store.stat(TOC_FILE);
        // A damaged pgarc archive may have lost toc.dat: its manifest still says what it held.
        let found = |stat: &Result<Stat, Error>| matches!(stat, Ok(Stat::File(_)));
        if !found(&toc) && !found(&dir.store.stat(MANIFEST_FILE)) {
            // A toc.dat that is a symbolic link to outside the archive is refused by name.
            dir.resolve(TOC_FILE)?;
            if let Err(e @ Error::Store { .. }) = toc {
                return Err(e);
            }
            let problem = if dir.store.stat(super::writer::STARTED_FILE)? != Stat::Absent {
                "incomplete: a pgarc dump that did not finish (no toc.dat and no \
                 manifest.toml); remove it and dump again"
            } else if dir.store.list()?.is_empty() {
                "no archive here: no toc.dat, nothing at all; check the path"
            } else {
                "no toc.dat: not a directory-format archive, or one whose dump did not finish"
            };
            return Err(Error::NotArchive {
                path: dir.root(),
                problem: problem.into(),
            });
        }
        Ok(dir)
    }

    /// The archive's location, for messages: its directory, or `s3://BUCKET/PREFIX`.
    pub fn root(&self) -> PathBuf {
        self.store.location()
    }

    /// The store that holds the archive's files.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn toc_path(&self) -> PathBuf {
        self.root().join(TOC_FILE)
    }

    /// Reads and parses toc.dat, and refuses it if any entry names a file outside the archive.
    pub fn read_toc(&self) -> Result<Toc, Error> {
        let path = self.resolve(TOC_FILE)?;
        let size = match self.store.stat(TOC_FILE)? {
            Stat::File(size) => size,
            _ => {
                return Err(Error::Io {
                    path,
                    action: "could not read",
                    error: std::io::ErrorKind::NotFound.into(),
                })
            }
        };
        let file = self.store.open(TOC_FILE, 0, Some(size))?;
        let toc = Toc::read_from(std::io::BufReader::with_capacity(256 << 10, file), size)
            .map_err(|error| Error::Toc {
                path: path.clone(),
                error,
            })?;
        self.check_toc_names(&toc)?;
        Ok(toc)
    }

    /// The path of a file the archive names (in toc.dat, a blobs TOC or the manifest), after
    /// the checks of format-spec §2: see [`inside_archive`].
    pub fn resolve(&self, name: &str) -> Result<PathBuf, Error> {
        self.store.resolve(name)
    }

    /// Every file name in toc.dat must stay inside the archive, and so must the data files
    /// it names where they exist (with any compression suffix): the first refused name.
    pub fn check_toc_names(&self, toc: &Toc) -> Result<(), Error> {
        match self.refused_names(toc).into_iter().next() {
            None => Ok(()),
            Some(refused) => Err(Error::NotArchive {
                path: self.toc_path(),
                problem: format!(
                    "{}: refused; the archive is damaged or was made to read files it does \
                     not own",
                    refused.problem
                ),
            }),
        }
    }
}

/// What the archive's manifest is, for `pgarc verify`.
#[derive(Debug)]
pub enum ManifestState {
    /// No manifest: a stock pg_dump archive.
    Absent,
    /// No manifest but a `pgarc/` directory: a pgarc dump that did not finish, or damage.
    Missing,
    /// A manifest that cannot be trusted: the problem, one line.
    Bad(Error),
    Good(Box<Manifest>),
}

/// What a restore trusts from a pgarc archive's manifest.
impl ArchiveDir {
    /// Reads the manifest and says what it is; never fails.
    pub fn manifest_state(&self) -> ManifestState {
        let path = match self.resolve(MANIFEST_FILE) {
            Ok(p) => p,
            Err(e) => return ManifestState::Bad(e),
        };
        match self.read_bounded(MANIFEST_FILE, MANIFEST_MAX_BYTES) {
            Ok(bytes) => match Manifest::parse(&bytes) {
                Ok(m) => ManifestState::Good(Box::new(m)),
                Err(e) => ManifestState::Bad(Error::NotArchive {
                    path,
                    problem: e.to_string(),
                }),
            },
            Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                match self.store.has_under("pgarc") {
                    Ok(true) => ManifestState::Missing,
                    Ok(false) => ManifestState::Absent,
                    Err(e) => ManifestState::Bad(e),
                }
            }
            Err(e) => ManifestState::Bad(e),
        }
    }

    /// Reads a small file of the archive (toc.dat, a frame index, a blobs TOC) whole.
    pub fn read_small_file(&self, rel: &str) -> Result<Vec<u8>, Error> {
        self.read_bounded(rel, MANIFEST_MAX_BYTES)
    }

    /// Reads `manifest.toml` if there is one. `Ok(None)` for a stock pg_dump archive; an
    /// error for a pgarc archive whose dump never finished or whose manifest is damaged.
    pub fn read_manifest(&self) -> Result<Option<Manifest>, Error> {
        match self.manifest_state() {
            ManifestState::Absent => Ok(None),
            ManifestState::Good(m) => Ok(Some(*m)),
            ManifestState::Missing => Err(Error::NotArchive {
                path: self.root().join(MANIFEST_FILE),
                problem: "missing: this pgarc archive is incomplete (its dump did not finish); \
                          dump again"
                    .into(),
            }),
            ManifestState::Bad(Error::NotArchive { path, problem }) => Err(Error::NotArchive {
                path,
                problem: format!("{problem}; run pgarc verify"),
            }),
            ManifestState::Bad(e) => Err(e),
        }
    }

    /// Reads toc.dat as the manifest lists it: parsed as it is read and hashed on the way,
    /// refused unless its size and SHA-256 match (then nothing of it is used), with the
    /// name checks of [`ArchiveDir::read_toc`].
    pub fn read_listed_toc(&self, manifest: &ManifestIndex) -> Result<Toc, Error> {
        let path = self.resolve(TOC_FILE)?;
        let record = manifest.file(TOC_FILE).ok_or_else(|| Error::NotArchive {
            path: path.clone(),
            problem: "not listed in the manifest".into(),
        })?;
        let file = self.store.open(TOC_FILE, 0, None)?;
        let mut hashing = super::reader::HashingReader::new(file);
        let parsed = Toc::read_from(
            std::io::BufReader::with_capacity(256 << 10, &mut hashing),
            record.size,
        );
        let (digest, size) = hashing.finish();
        check_listed(&path, record, size, &digest)?;
        let toc = parsed.map_err(|error| Error::Toc {
            path: path.clone(),
            error,
        })?;
        self.check_toc_names(&toc)?;
        Ok(toc)
    }
}

/// Refuses a file whose size or SHA-256 differs from what the manifest lists.
fn check_listed(
    path: &Path,
    listed: &ListedFile,
    size: u64,
    digest: &[u8; 32],
) -> Result<(), Error> {
    match super::data::listed_problem(listed, size, digest) {
        None => Ok(()),
        Some(problem) => Err(Error::NotArchive {
            path: path.to_owned(),
            problem: format!("{problem}; run pgarc verify"),
        }),
    }
}

impl ArchiveDir {
    /// Reads a whole file that must not exceed `limit` bytes.
    fn read_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>, Error> {
        use std::io::Read;
        let path = self.resolve(name)?;
        let io = |error| Error::Io {
            path: path.clone(),
            action: "could not read",
            error,
        };
        // The size just looked up bounds the read (an object store then needs no second
        // lookup to know where the file ends).
        let to = match self.store.stat(name)? {
            Stat::Absent => return Err(io(std::io::ErrorKind::NotFound.into())),
            Stat::File(size) => Some(size),
            Stat::Special(_) => None,
        };
        let f = self.store.open(name, 0, to)?;
        let mut bytes = Vec::new();
        f.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > limit {
            return Err(Error::NotArchive {
                path: path.clone(),
                problem: format!("larger than {limit} bytes: refused"),
            });
        }
        Ok(bytes)
    }

    /// Every file in the archive (not directories), as `/`-separated paths relative to the
    /// root, sorted. Symbolic links are listed as files and never followed.
    pub fn all_files(&self) -> Result<Vec<String>, Error> {
        self.store.list()
    }
}
