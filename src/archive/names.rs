//! File names found in an archive (in toc.dat, the manifest, a large-object list) and the
//! paths they may lead to (format-spec §2, §8): the one place that decides whether a name
//! may be opened. Both the archive directory ([`super::ArchiveDir`]) and the data readers
//! use it; it uses neither.

use std::path::{Component, Path, PathBuf};

use super::error::Error;

/// Why a file name found in an archive is refused (format-spec §2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is not UTF-8")]
    NotUtf8,
    #[error("file name is empty")]
    Empty,
    #[error("file name {0:?} contains a NUL byte")]
    Nul(String),
    #[error("file name {0:?} leaves the archive directory (absolute or ..)")]
    Escapes(String),
}

/// Checks that a file name from the TOC or a blobs TOC stays inside the archive: relative, no
/// `..`, no NUL, UTF-8 (format-spec §2).
pub fn safe_relative_name(name: &[u8]) -> Result<&str, NameError> {
    let text = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    if text.contains('\0') {
        return Err(NameError::Nul(text.to_string()));
    }
    let path = Path::new(text);
    if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(NameError::Escapes(text.to_string()));
    }
    Ok(text)
}

/// Checks a file name found in an archive (format-spec §2) and returns its path: the name
/// must be relative, UTF-8, without `..` or NUL ([`safe_relative_name`]), and if the file
/// exists, the path must not resolve through a symbolic link to outside the archive
/// directory. Nothing outside the directory is opened: only the link is read.
pub fn inside_archive(root: &Path, name: &str) -> Result<PathBuf, Error> {
    let refuse = |problem: String| Error::NotArchive {
        path: root.join(name),
        problem,
    };
    let rel = safe_relative_name(name.as_bytes()).map_err(|e| refuse(e.to_string()))?;
    let path = root.join(rel);
    // Walk the components so that a link anywhere on the way is seen, even a dangling one.
    let mut at = root.to_path_buf();
    let mut links = false;
    for c in Path::new(rel).components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => links = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if links {
        let base = std::fs::canonicalize(root).map_err(|error| Error::Io {
            path: root.to_owned(),
            action: "could not resolve",
            error,
        })?;
        let escapes = match std::fs::canonicalize(&path) {
            Ok(target) => !target.starts_with(&base),
            // A link whose target does not exist: refuse it too rather than guess.
            Err(_) => true,
        };
        if escapes {
            let target = std::fs::read_link(&path)
                .map(|t| format!(" ({})", t.display()))
                .unwrap_or_default();
            return Err(refuse(format!(
                "resolves through a symbolic link{target} to outside the archive directory"
            )));
        }
    }
    Ok(path)
}
