//! Finding PostgreSQL programs and their major versions.
//!
//! pgarc runs the stock `pg_dump` for the schema and the test suite runs `initdb`, `pg_ctl`,
//! `pg_dump` and `pg_restore` of several releases, so both need the same answers to "where is
//! the bin directory of PostgreSQL N" and "which release is this binary". The conventions are
//! those of the Debian/PGDG packages (`/usr/lib/postgresql/N/bin`) and of `pg_config --bindir`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL program's release, from its `--version` output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ToolVersion {
    /// The major version: 18 for 18.6 (and 9 for 9.6.24: pgarc needs 10 or newer anyway).
    pub major: u32,
    /// The version string as printed, e.g. `18.6` or `15.18 (Debian 15.18-0+deb12u1)`.
    pub full: String,
}

/// Why a program's version could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("could not run {}: {source}", path.display())]
    Run {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} --version printed {output:?}, which is not a PostgreSQL version", path.display())]
    Unrecognised { path: PathBuf, output: String },
}

/// Parses `pg_dump (PostgreSQL) 18.6` and the like: the version follows the last `)`.
pub fn parse_version_output(output: &str) -> Option<ToolVersion> {
    let line = output.lines().next()?.trim();
    let rest = line.rsplit_once(") ").map_or(line, |(_, v)| v).trim();
    let major: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(ToolVersion {
        major,
        full: rest.to_owned(),
    })
}

/// Runs `PROGRAM --version` and parses the answer.
pub fn tool_version(path: &Path) -> Result<ToolVersion, ToolError> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|source| ToolError::Run {
            path: path.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version_output(&text).ok_or_else(|| ToolError::Unrecognised {
        path: path.to_owned(),
        output: text.trim().to_owned(),
    })
}

/// The bin directory that `pg_config --bindir` names, when pg_config is on PATH.
pub fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

/// The bin directories of Debian/PGDG packages (`/usr/lib/postgresql/N/bin`), newest first.
pub fn debian_bindirs() -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let major = d.file_name().to_str()?.parse().ok()?;
            let bin = d.path().join("bin");
            bin.is_dir().then_some((major, bin))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found
}

/// Finds the pg_dump to capture the schema with: `explicit` (from `--pg-dump` or
/// `PGARC_PG_DUMP`, named by `source`) must do; otherwise the first pg_dump on PATH, in
/// `pg_config --bindir` or in `/usr/lib/postgresql/N/bin` whose major version is at least the
/// server's. The error says which programs were found and what to do.
pub fn find_pg_dump(
    explicit: Option<(&Path, &str)>,
    server_major: u32,
    server_version: &str,
) -> Result<(PathBuf, ToolVersion), FindError> {
    let too_old = |path: &Path, v: &ToolVersion| FindError::TooOld {
        path: path.to_owned(),
        found: v.full.clone(),
        server_version: server_version.to_string(),
        server_major,
    };
    if let Some((path, source)) = explicit {
        let v = tool_version(path).map_err(|error| FindError::Given {
            error,
            given_by: source.to_string(),
        })?;
        if v.major < server_major {
            return Err(too_old(path, &v));
        }
        return Ok((path.to_owned(), v));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pg_dump"))
                .collect()
        })
        .unwrap_or_default();
    candidates.extend(pg_config_bindir().map(|d| d.join("pg_dump")));
    candidates.extend(debian_bindirs().into_iter().map(|(_, d)| d.join("pg_dump")));
    let mut seen = Vec::new();
    let mut tried = std::collections::HashSet::new();
    for path in candidates.into_iter().filter(|p| p.is_file()) {
        if !tried.insert(std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone())) {
            continue;
        }
        if let Ok(v) = tool_version(&path) {
            if v.major >= server_major {
                return Ok((path, v));
            }
            seen.push(format!("{} ({})", path.display(), v.full));
        }
    }
    if seen.is_empty() {
        Err(FindError::NotFound { server_major })
    } else {
        Err(FindError::OnlyOlder {
            server_major,
            seen: seen.join(", "),
        })
    }
}

/// Why no usable pg_dump was found, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("{error} (given by {given_by})")]
    Given { error: ToolError, given_by: String },
    #[error(
        "{} is pg_dump {found}, older than the server ({server_version}): the schema must be \
         captured by pg_dump {server_major} or newer; install it (e.g. apt install \
         postgresql-client-{server_major}) and pass --pg-dump PATH",
        path.display()
    )]
    TooOld {
        path: PathBuf,
        found: String,
        server_version: String,
        server_major: u32,
    },
    #[error(
        "pg_dump not found (searched PATH, pg_config --bindir and /usr/lib/postgresql): \
         install the PostgreSQL {server_major} client tools or pass --pg-dump PATH"
    )]
    NotFound { server_major: u32 },
    #[error(
        "no pg_dump of version {server_major} or newer found, only {seen}: install the \
         PostgreSQL {server_major} client tools and pass --pg-dump PATH"
    )]
    OnlyOlder { server_major: u32, seen: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = parse_version_output("pg_dump (PostgreSQL) 18.6\n").unwrap();
        assert_eq!((v.major, v.full.as_str()), (18, "18.6"));
        let v = parse_version_output("pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)");
        assert_eq!(v.unwrap().major, 15);
        let v = parse_version_output("initdb (PostgreSQL) 17beta1").unwrap();
        assert_eq!(v.major, 17);
        assert!(parse_version_output("bash: no such thing").is_none());
        assert!(parse_version_output("").is_none());
    }
}
