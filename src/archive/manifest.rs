//! The manifest (format-spec §5.1): `manifest.toml` beside `toc.dat`, written last. It names
//! the snapshot, the versions and the options that shaped the archive, and lists every other
//! file with its size and SHA-256 and every table with its rows and frame index. Its last line
//! is `manifest_sha256 = "<hex>"`, the SHA-256 of every byte before that line.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::frame::hex;

/// The manifest's file name, in the archive's root directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The format version this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// A manifest larger than this is refused rather than read (format-spec §8).
pub const MANIFEST_MAX_BYTES: u64 = 1 << 30;

const CHECKSUM_KEY: &str = "manifest_sha256 = \"";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub pgarc_version: String,
    /// UTC, RFC 3339, when the dump started and when the manifest was written.
    pub created_start: String,
    pub created_end: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub database: String,
    pub encoding: String,
    /// The snapshot every session imported (`pg_export_snapshot()` or `--snapshot`).
    pub snapshot_id: String,
    /// `pg_current_snapshot()` inside the snapshot: `xmin:xmax:xip,...`.
    pub current_snapshot: String,
    pub options: DumpOptionsRecord,
    #[serde(rename = "file", default)]
    pub files: Vec<FileRecord>,
    #[serde(rename = "table", default)]
    pub tables: Vec<TableRecord>,
}

/// Lookups into a manifest by file path and by dumpId, built once (an archive may list
/// hundreds of thousands of files; a linear search per table would be quadratic).
#[derive(Debug)]
pub struct ManifestIndex<'a> {
    pub manifest: &'a Manifest,
    files: std::collections::HashMap<&'a str, &'a FileRecord>,
    tables: std::collections::HashMap<i32, &'a TableRecord>,
}

impl<'a> ManifestIndex<'a> {
    pub fn new(manifest: &'a Manifest) -> Self {
        ManifestIndex {
            manifest,
            files: manifest
                .files
                .iter()
                .map(|f| (f.path.as_str(), f))
                .collect(),
            tables: manifest.tables.iter().map(|t| (t.dump_id, t)).collect(),
        }
    }

    pub fn file(&self, path: &str) -> Option<&'a FileRecord> {
        self.files.get(path).copied()
    }

    pub fn table(&self, dump_id: i32) -> Option<&'a TableRecord> {
        self.tables.get(&dump_id).copied()
    }
}

/// The options that shaped the archive. Never a password or a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpOptionsRecord {
    /// `none`, `gzip:LEVEL` or `zstd:LEVEL`.
    pub compression: String,
    /// Upper bound on a frame's raw bytes.
    pub frame_size: u64,
    /// Tables whose heap is larger than this were split into ctid ranges.
    pub split_size: u64,
    pub jobs: u32,
    /// Whether the snapshot came from the caller (`--snapshot`).
    pub snapshot_imported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Relative to the archive root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRecord {
    /// The TABLE DATA entry.
    pub dump_id: i32,
    pub schema: String,
    pub name: String,
    /// The data file and its frame index, relative paths.
    pub file: String,
    pub frame_index: String,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Number of frames, the end frame included.
    pub frames: u64,
}

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the last line is not manifest_sha256 = \"...\": the manifest is truncated or not a pgarc manifest")]
    NoChecksum,
    #[error("checksum mismatch: the manifest says {stated} but its contents hash to {actual}")]
    ChecksumMismatch { stated: String, actual: String },
    #[error("not valid TOML or not a pgarc manifest: {0}")]
    Syntax(String),
    #[error("manifest format {0} is not known to this pgarc (it reads format {MANIFEST_FORMAT}); use a newer pgarc")]
    UnknownFormat(u32),
}

impl Manifest {
    /// The bytes of the manifest file, checksum line included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let text = toml::to_string(self).expect("a manifest always serialises");
        with_checksum(text.as_bytes())
    }

    /// Parses a manifest after checking its own checksum.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let body_end = checked_body_len(bytes)?;
        let text = std::str::from_utf8(&bytes[..body_end])
            .map_err(|_| ManifestError::Syntax("not UTF-8".into()))?;
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let probe: FormatOnly =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(one_line(&e.to_string())))?;
        if probe.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat(probe.format));
        }
        toml::from_str(text).map_err(|e| ManifestError::Syntax(one_line(&e.to_string())))
    }
}

/// `body` (with a final newline added if missing) followed by its checksum line.
pub fn with_checksum(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let sum = hex(&Sha256::digest(&out));
    out.extend_from_slice(format!("{CHECKSUM_KEY}{sum}\"\n").as_bytes());
    out
}

/// Checks the trailing checksum line and returns the length of the body it covers.
pub fn checked_body_len(bytes: &[u8]) -> Result<usize, ManifestError> {
    let trimmed = bytes.strip_suffix(b"\n").ok_or(ManifestError::NoChecksum)?;
    let start = trimmed
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last = std::str::from_utf8(&trimmed[start..]).map_err(|_| ManifestError::NoChecksum)?;
    let stated = last
        .strip_prefix(CHECKSUM_KEY)
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or(ManifestError::NoChecksum)?;
    let actual = hex(&Sha256::digest(&bytes[..start]));
    if stated != actual {
        return Err(ManifestError::ChecksumMismatch {
            stated: stated.to_string(),
            actual,
        });
    }
    Ok(start)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Formats a time as RFC 3339 UTC with seconds, e.g. `2026-11-23T21:18:01Z`.
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            pgarc_version: "0.1.0".into(),
            created_start: "2026-11-23T21:18:01Z".into(),
            created_end: "2026-11-23T21:20:44Z".into(),
            server_version: "18.1".into(),
            pg_dump_version: "18.1".into(),
            database: "my \"db\"".into(),
            encoding: "UTF8".into(),
            snapshot_id: "00000003-00000D02-1".into(),
            current_snapshot: "790:801:790,795".into(),
            options: DumpOptionsRecord {
                compression: "zstd:3".into(),
                frame_size: 4 << 20,
                split_size: 1 << 28,
                jobs: 4,
                snapshot_imported: false,
            },
            files: vec![FileRecord {
                path: "toc.dat".into(),
                size: 10,
                sha256: "00".repeat(32),
            }],
            tables: vec![TableRecord {
                dump_id: 3380,
                schema: "public".into(),
                name: "child\ttab".into(),
                file: "3380.dat.zst".into(),
                frame_index: "pgarc/frames/3380.tsv".into(),
                rows: 1000,
                raw_bytes: 5000,
                stored_bytes: 900,
                frames: 2,
            }],
        }
    }

    #[test]
    fn round_trips_and_checks_itself() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text
            .lines()
            .last()
            .unwrap()
            .starts_with("manifest_sha256 = \""));

        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            Manifest::parse(&flipped),
            Err(ManifestError::ChecksumMismatch { .. })
        ));
        assert_eq!(
            Manifest::parse(&bytes[..bytes.len() - 10]),
            Err(ManifestError::NoChecksum)
        );
    }

    #[test]
    fn unknown_formats_are_refused_by_name() {
        let mut m = sample();
        m.format = 2;
        assert_eq!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::UnknownFormat(2))
        );
    }

    #[test]
    fn times_format_as_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_468_681);
        assert_eq!(rfc3339_utc(t), "2026-11-23T21:18:01Z");
        assert_eq!(rfc3339_utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
