//! The manifest (format-spec §5.1): `manifest.toml` beside `toc.dat`, written last. It names
//! the snapshot, the versions and the options that shaped the archive, and lists every other
//! file with its size and SHA-256 and every table with its rows and frame index. Its last line
//! is `manifest_sha256 = "<hex>"`, the SHA-256 of every byte before that line.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::frame::hex;

/// The manifest's file name, in the archive's root directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The newest archive format version this code reads and writes (format-spec: the spec's
/// own version): content digests and the COPY settings (§5.3). An archive written without
/// digests is written as [`FORMAT_2`] or [`FORMAT_1`], the lowest version that carries it
/// (§9).
pub const FORMAT: FormatVersion = FormatVersion { major: 3, minor: 0 };
/// The last version of major 2: frame indexes may be inline, no digests.
pub const FORMAT_2: FormatVersion = FormatVersion { major: 2, minor: 0 };
/// The last version of major 1: every frame index a file under `pgarc/frames/`.
pub const FORMAT_1: FormatVersion = FormatVersion { major: 1, minor: 9 };
/// What `format = 1`, the integer that versions before 1.9 wrote, stands for: their
/// manifests read as 1.8 (format-spec §9).
pub const LEGACY_FORMAT: FormatVersion = FormatVersion { major: 1, minor: 8 };

/// An archive format version, `MAJOR.MINOR` (format-spec §9): a reader refuses another
/// major; within its major it reads a newer minor, ignoring the keys it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FormatVersion {
    pub major: u32,
    pub minor: u32,
}

impl FormatVersion {
    /// The minor version of `major` this code implements; None for a major it does not read.
    pub fn implemented(major: u32) -> Option<FormatVersion> {
        [FORMAT_1, FORMAT_2, FORMAT]
            .into_iter()
            .find(|v| v.major == major)
    }
}

impl std::fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl From<FormatVersion> for String {
    fn from(v: FormatVersion) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for FormatVersion {
    type Error = LayoutError;
    fn try_from(s: String) -> Result<Self, LayoutError> {
        let bad = || LayoutError::BadFormat(s.clone());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let number = |t: &str| {
            (!t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && (t == "0" || !t.starts_with('0')))
            .then(|| t.parse::<u32>().ok())
            .flatten()
        };
        Ok(FormatVersion {
            major: number(major).ok_or_else(bad)?,
            minor: number(minor).ok_or_else(bad)?,
        })
    }
}
/// A manifest larger than this is refused rather than read (format-spec §8).
pub const MANIFEST_MAX_BYTES: u64 = 1 << 30;

const CHECKSUM_KEY: &str = "manifest_sha256 = \"";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: FormatVersion,
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
    /// The session settings the rows were copied under (format 3, §5.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<CopySettings>,
    #[serde(rename = "file", default)]
    pub files: Vec<FileRecord>,
    #[serde(rename = "table", default)]
    pub tables: Vec<TableRecord>,
    /// Keys of a newer minor version that this reader does not know and ignored, as
    /// `block: key` (never written).
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

/// What checking an archive's files against its manifest needs, by file path and by
/// dumpId, built once and owning its data so that the whole manifest can be dropped: an
/// archive of 100,000 tables lists 200,000 files, and a linear search per table would be
/// quadratic.
#[derive(Debug, Default)]
pub struct ManifestIndex {
    files: std::collections::HashMap<String, ListedFile>,
    tables: std::collections::HashMap<i32, TableFiles>,
    /// Format 3: frame indexes and tables carry the rows' digests (§5.3).
    pub digests: bool,
}

/// A listed file's size and SHA-256 (None when the manifest's hex is not a SHA-256, which
/// then matches nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub size: u64,
    pub sha256: Option<[u8; 32]>,
}

/// Where a table's frame index is (format-spec §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexAt {
    /// A file of the archive, `pgarc/frames/<dumpId>.tsv`.
    File(String),
    /// In the manifest, as `frame_list` (format 2): the text the file would hold.
    Inline(String),
}

impl IndexAt {
    /// The archive file that holds the index: its own file, or the manifest.
    pub fn location(&self) -> &str {
        match self {
            IndexAt::File(path) => path,
            IndexAt::Inline(_) => MANIFEST_FILE,
        }
    }
}

/// A table's data file and frame index, as the manifest names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFiles {
    pub file: String,
    pub frame_index: IndexAt,
    pub rows: u64,
    pub raw_bytes: u64,
    pub frames: u64,
    /// The rows' digest (format 3), as the sum's 16 big-endian bytes.
    pub rows_sum: Option<[u8; 16]>,
}

impl ManifestIndex {
    pub fn new(manifest: &Manifest) -> Self {
        ManifestIndex {
            files: manifest
                .files
                .iter()
                .map(|f| {
                    let listed = ListedFile {
                        size: f.size,
                        sha256: super::frame::unhex(&f.sha256),
                    };
                    (f.path.clone(), listed)
                })
                .collect(),
            tables: manifest
                .tables
                .iter()
                .map(|t| {
                    let files = TableFiles {
                        file: t.file.clone(),
                        frame_index: t.index_at(),
                        rows: t.rows,
                        raw_bytes: t.raw_bytes,
                        frames: t.frames,
                        rows_sum: t.rows_sum.as_deref().and_then(super::frame::unhex),
                    };
                    (t.dump_id, files)
                })
                .collect(),
            digests: manifest.format.major >= 3,
        }
    }

    pub fn file(&self, path: &str) -> Option<&ListedFile> {
        self.files.get(path)
    }

    pub fn table(&self, dump_id: i32) -> Option<&TableFiles> {
        self.tables.get(&dump_id)
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

/// The session settings that shape COPY text, as the dump's sessions had them (format 3,
/// §5.3): a check that copies the rows again sets them to reproduce the same text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySettings {
    pub client_encoding: String,
    pub datestyle: String,
    pub intervalstyle: String,
    pub extra_float_digits: String,
    pub timezone: String,
    pub bytea_output: String,
    pub lc_monetary: String,
}

impl CopySettings {
    /// `(setting name, value)` for each, in the manifest's order.
    pub fn pairs(&self) -> [(&'static str, &str); 7] {
        let values = [
            &self.client_encoding,
            &self.datestyle,
            &self.intervalstyle,
            &self.extra_float_digits,
            &self.timezone,
            &self.bytea_output,
            &self.lc_monetary,
        ];
        std::array::from_fn(|i| (SETTING_KEYS[i], values[i].as_str()))
    }
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
    /// The data file and its frame index, relative paths; or, in format 2, the frame index
    /// itself in `frame_list` instead of a file (exactly one of the two).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_list: Option<String>,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Number of frames, the end frame included.
    pub frames: u64,
    /// The digest of the rows (format 3, §5.3): 32 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_sum: Option<String>,
}

impl TableRecord {
    /// Where the table's frame index is.
    pub fn index_at(&self) -> IndexAt {
        match (&self.frame_index, &self.frame_list) {
            (_, Some(list)) => IndexAt::Inline(list.clone()),
            (Some(path), None) => IndexAt::File(path.clone()),
            (None, None) => IndexAt::File(String::new()),
        }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the last line is not manifest_sha256 = \"...\": the manifest is truncated or not a pgarc manifest")]
    NoChecksum,
    #[error("checksum mismatch: the manifest says {stated} but its contents hash to {actual}")]
    ChecksumMismatch { stated: String, actual: String },
    #[error("not a pgarc manifest: not UTF-8")]
    NotUtf8,
    #[error("not a pgarc manifest: {}{problem}", line.map_or(String::new(), |l| format!("line {l}: ")))]
    Syntax {
        /// Where, when the problem is at a line.
        line: Option<usize>,
        problem: LayoutError,
    },
    #[error("archive format {0} is not known to this pgarc (it reads formats 1.x up to {FORMAT_1}, 2.x up to {FORMAT_2} and 3.x up to {FORMAT}); use the pgarc that wrote it")]
    UnknownFormat(FormatVersion),
}

impl Manifest {
    /// The bytes of the manifest file, checksum line included, in the layout of
    /// format-spec §5.1: `key = value` lines in a fixed order, `[options]`, then a
    /// `[[file]]` and a `[[table]]` block per record, blocks separated by a blank line.
    /// (A subset of TOML that any TOML reader reads.)
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut t = String::with_capacity(256 + self.files.len() * 128 + self.tables.len() * 256);
        let kv = |t: &mut String, key: &str, v: Value<'_>| {
            let _ = match v {
                Value::Str(s) => writeln!(t, "{key} = {}", quote(s)),
                Value::Int(i) => writeln!(t, "{key} = {i}"),
                Value::Bool(b) => writeln!(t, "{key} = {b}"),
            };
        };
        kv(&mut t, "format", Value::Str(&self.format.to_string()));
        for (key, v) in [
            ("pgarc_version", &self.pgarc_version),
            ("created_start", &self.created_start),
            ("created_end", &self.created_end),
            ("server_version", &self.server_version),
            ("pg_dump_version", &self.pg_dump_version),
            ("database", &self.database),
            ("encoding", &self.encoding),
            ("snapshot_id", &self.snapshot_id),
            ("current_snapshot", &self.current_snapshot),
        ] {
            kv(&mut t, key, Value::Str(v));
        }
        let o = &self.options;
        t.push_str("\n[options]\n");
        kv(&mut t, "compression", Value::Str(&o.compression));
        kv(&mut t, "frame_size", Value::Int(o.frame_size.into()));
        kv(&mut t, "split_size", Value::Int(o.split_size.into()));
        kv(&mut t, "jobs", Value::Int(o.jobs.into()));
        kv(
            &mut t,
            "snapshot_imported",
            Value::Bool(o.snapshot_imported),
        );
        if let Some(settings) = &self.settings {
            t.push_str("\n[settings]\n");
            for (key, v) in settings.pairs() {
                kv(&mut t, key, Value::Str(v));
            }
        }
        for f in &self.files {
            t.push_str("\n[[file]]\n");
            kv(&mut t, "path", Value::Str(&f.path));
            kv(&mut t, "size", Value::Int(f.size.into()));
            kv(&mut t, "sha256", Value::Str(&f.sha256));
        }
        for r in &self.tables {
            t.push_str("\n[[table]]\n");
            kv(&mut t, "dump_id", Value::Int(r.dump_id.into()));
            kv(&mut t, "schema", Value::Str(&r.schema));
            kv(&mut t, "name", Value::Str(&r.name));
            kv(&mut t, "file", Value::Str(&r.file));
            if let Some(path) = &r.frame_index {
                kv(&mut t, "frame_index", Value::Str(path));
            }
            if let Some(list) = &r.frame_list {
                kv(&mut t, "frame_list", Value::Str(list));
            }
            kv(&mut t, "rows", Value::Int(r.rows.into()));
            kv(&mut t, "raw_bytes", Value::Int(r.raw_bytes.into()));
            kv(&mut t, "stored_bytes", Value::Int(r.stored_bytes.into()));
            kv(&mut t, "frames", Value::Int(r.frames.into()));
            if let Some(sum) = &r.rows_sum {
                kv(&mut t, "rows_sum", Value::Str(sum));
            }
        }
        with_checksum(t.as_bytes())
    }

    /// Parses a manifest after checking its own checksum. The reader takes the layout
    /// [`Manifest::to_bytes`] writes, in one pass over the lines (no document tree: an
    /// archive of 100,000 tables has a 48 MB manifest), and also the literal strings
    /// (`'...'`) and blank-line variations that earlier pgarc versions (through a TOML
    /// library) wrote.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let body_end = checked_body_len(bytes)?;
        let text = std::str::from_utf8(&bytes[..body_end]).map_err(|_| ManifestError::NotUtf8)?;
        parse_body(text)
    }
}

/// A value as the manifest holds it.
enum Value<'a> {
    Str(&'a str),
    Int(i128),
    Bool(bool),
}

/// A TOML basic string: `"`, `\\` and control characters escaped.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                q.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A parsed value.
#[derive(Debug)]
enum Parsed {
    Str(String),
    Int(i128),
    Bool(bool),
}

/// The value at the start of `s` (after `key = `) and the text after it. Strings may be
/// basic (`"..."`, with escapes), literal (`'...'`), or either kind multi-line (`"""`,
/// `'''`), as a TOML library writes text with quotes or line breaks.
fn parse_value(s: &str) -> Result<(Parsed, &str), LayoutError> {
    let unclosed = || LayoutError::UnclosedString;
    for (open, escapes) in [("\"\"\"", true), ("'''", false)] {
        if let Some(body) = s.strip_prefix(open) {
            let body = body.strip_prefix('\n').unwrap_or(body);
            let end = body.find(open).ok_or_else(unclosed)?;
            let raw = &body[..end];
            let text = if escapes {
                unescape(raw, true)?
            } else {
                raw.to_string()
            };
            return Ok((Parsed::Str(text), &body[end + 3..]));
        }
    }
    if let Some(body) = s.strip_prefix('"') {
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\n' => break,
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.ok_or_else(unclosed)?;
        return Ok((
            Parsed::Str(unescape(&body[..end], false)?),
            &body[end + 1..],
        ));
    }
    if let Some(body) = s.strip_prefix('\'') {
        let end = body
            .find(['\'', '\n'])
            .filter(|&i| body[i..].starts_with('\''));
        let end = end.ok_or_else(unclosed)?;
        return Ok((Parsed::Str(body[..end].to_string()), &body[end + 1..]));
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(s.len());
    let v = match &s[..end] {
        "true" => Parsed::Bool(true),
        "false" => Parsed::Bool(false),
        w => Parsed::Int(
            w.parse::<i128>()
                .map_err(|_| LayoutError::NotAValue(w.to_string()))?,
        ),
    };
    Ok((v, &s[end..]))
}

/// The text of a basic string's body, escapes resolved; `multi_line` allows line breaks.
fn unescape(raw: &str, multi_line: bool) -> Result<String, LayoutError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next().ok_or(LayoutError::TrailingBackslash)?;
                match e {
                    'b' => out.push('\u{8}'),
                    't' => out.push('\t'),
                    'n' => out.push('\n'),
                    'f' => out.push('\u{c}'),
                    'r' => out.push('\r'),
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let hex: String = chars.by_ref().take(n).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| LayoutError::BadEscape(format!("{e}{hex}")))?;
                        out.push(code);
                    }
                    other => return Err(LayoutError::UnknownEscape(other)),
                }
            }
            '\n' if multi_line => out.push('\n'),
            c if (c as u32) < 0x20 && c != '\t' => return Err(LayoutError::ControlCharacter),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What is wrong with a manifest's layout (§5.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a string without its closing quote")]
    UnclosedString,
    #[error("a string ending in a backslash")]
    TrailingBackslash,
    #[error("a bad escape \\{0}")]
    BadEscape(String),
    #[error("an unknown escape \\{0}")]
    UnknownEscape(char),
    #[error("a control character in a string")]
    ControlCharacter,
    #[error("{0:?} is not a value this manifest holds")]
    NotAValue(String),
    #[error("unexpected {0:?} after the value")]
    AfterValue(String),
    #[error("unexpected section {0}")]
    UnexpectedSection(String),
    #[error("expected key = value, found {0:?}")]
    NotKeyValue(String),
    #[error("unknown key {key:?} in {what}")]
    UnknownKey { key: String, what: String },
    #[error("key {key:?} given twice in {what}")]
    DuplicateKey { key: String, what: String },
    #[error("{key} in {what} is not {expected}")]
    WrongType {
        key: String,
        what: String,
        expected: &'static str,
    },
    #[error("{key} = {value} in {what} is out of range")]
    OutOfRange {
        key: String,
        value: i128,
        what: String,
    },
    #[error("{what} has no {key}")]
    Missing { key: String, what: String },
    #[error("no [options]")]
    NoOptions,
    #[error("{what} has both frame_index and frame_list")]
    TwoIndexes { what: String },
    #[error("format {0:?} is not MAJOR.MINOR")]
    BadFormat(String),
    #[error("format must be the first key")]
    FormatNotFirst,
}

/// The record being filled, and which of its keys were set.
#[derive(Default)]
struct Fields {
    values: std::collections::HashMap<String, Parsed>,
}

impl Fields {
    fn put(
        &mut self,
        key: &str,
        v: Parsed,
        allowed: &[&str],
        what: &str,
    ) -> Result<(), LayoutError> {
        let named = || (key.to_string(), what.to_string());
        if !allowed.contains(&key) {
            let (key, what) = named();
            return Err(LayoutError::UnknownKey { key, what });
        }
        if self.values.insert(key.to_string(), v).is_some() {
            let (key, what) = named();
            return Err(LayoutError::DuplicateKey { key, what });
        }
        Ok(())
    }

    /// The value of `key`, removed; `Missing` when it was not given.
    fn take(&mut self, key: &str, what: &str) -> Result<Parsed, LayoutError> {
        self.values.remove(key).ok_or_else(|| LayoutError::Missing {
            key: key.to_string(),
            what: what.to_string(),
        })
    }

    fn wrong_type(key: &str, what: &str, expected: &'static str) -> LayoutError {
        LayoutError::WrongType {
            key: key.to_string(),
            what: what.to_string(),
            expected,
        }
    }

    fn str(&mut self, key: &str, what: &str) -> Result<String, LayoutError> {
        match self.take(key, what)? {
            Parsed::Str(s) => Ok(s),
            _ => Err(Self::wrong_type(key, what, "a string")),
        }
    }

    /// An optional string key.
    fn opt_str(&mut self, key: &str, what: &str) -> Result<Option<String>, LayoutError> {
        match self.values.contains_key(key) {
            true => self.str(key, what).map(Some),
            false => Ok(None),
        }
    }

    fn int<T: TryFrom<i128>>(&mut self, key: &str, what: &str) -> Result<T, LayoutError> {
        match self.take(key, what)? {
            Parsed::Int(i) => T::try_from(i).map_err(|_| LayoutError::OutOfRange {
                key: key.to_string(),
                value: i,
                what: what.to_string(),
            }),
            _ => Err(Self::wrong_type(key, what, "an integer")),
        }
    }

    fn bool(&mut self, key: &str, what: &str) -> Result<bool, LayoutError> {
        match self.take(key, what)? {
            Parsed::Bool(b) => Ok(b),
            _ => Err(Self::wrong_type(key, what, "true or false")),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "pgarc_version",
    "created_start",
    "created_end",
    "server_version",
    "pg_dump_version",
    "database",
    "encoding",
    "snapshot_id",
    "current_snapshot",
];
const OPTION_KEYS: &[&str] = &[
    "compression",
    "frame_size",
    "split_size",
    "jobs",
    "snapshot_imported",
];
/// `[settings]`'s keys, in the manifest's order (and [`CopySettings::pairs`]'s).
const SETTING_KEYS: [&str; 7] = [
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "timezone",
    "bytea_output",
    "lc_monetary",
];
const FILE_KEYS: &[&str] = &["path", "size", "sha256"];
/// A `[[table]]`'s keys: format 1 knows the first nine (its frame index is always a file),
/// format 2 adds `frame_list` (an inline frame index), format 3 `rows_sum` (the digest).
const TABLE_KEYS: &[&str] = &[
    "dump_id",
    "schema",
    "name",
    "file",
    "frame_index",
    "rows",
    "raw_bytes",
    "stored_bytes",
    "frames",
    "frame_list",
    "rows_sum",
];

/// The `[[table]]` keys of format major `major`.
fn keys_of_table(major: u32) -> &'static [&'static str] {
    match major {
        1 => &TABLE_KEYS[..9],
        2 => &TABLE_KEYS[..10],
        _ => TABLE_KEYS,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Top,
    Options,
    Settings,
    File,
    Table,
}

/// The `[[file]]` and `[[table]]` records read so far.
#[derive(Default)]
struct Records {
    options: Option<Fields>,
    settings: Option<Fields>,
    files: Vec<FileRecord>,
    tables: Vec<TableRecord>,
    /// Format 3: every `[[table]]` has `rows_sum`.
    digests: bool,
}

impl Records {
    /// Closes the block being filled into its record.
    fn close(&mut self, block: Block, f: &mut Fields) -> Result<(), LayoutError> {
        match block {
            Block::File => {
                let what = format!("[[file]] #{}", self.files.len() + 1);
                self.files.push(FileRecord {
                    path: f.str("path", &what)?,
                    size: f.int("size", &what)?,
                    sha256: f.str("sha256", &what)?,
                });
            }
            Block::Table => {
                let what = format!("[[table]] #{}", self.tables.len() + 1);
                self.tables.push(TableRecord {
                    dump_id: f.int("dump_id", &what)?,
                    schema: f.str("schema", &what)?,
                    name: f.str("name", &what)?,
                    file: f.str("file", &what)?,
                    frame_index: f.opt_str("frame_index", &what)?,
                    frame_list: f.opt_str("frame_list", &what)?,
                    rows: f.int("rows", &what)?,
                    raw_bytes: f.int("raw_bytes", &what)?,
                    stored_bytes: f.int("stored_bytes", &what)?,
                    frames: f.int("frames", &what)?,
                    rows_sum: if self.digests {
                        let sum = f.str("rows_sum", &what)?;
                        if crate::archive::digest::RowsDigest::from_parts(&sum, 0, 0).is_none() {
                            return Err(LayoutError::WrongType {
                                key: "rows_sum".into(),
                                what,
                                expected: "32 lower-case hex digits",
                            });
                        }
                        Some(sum)
                    } else {
                        None
                    },
                });
                let t = self.tables.last().expect("just pushed");
                match (&t.frame_index, &t.frame_list) {
                    (Some(_), Some(_)) => return Err(LayoutError::TwoIndexes { what }),
                    (None, None) => {
                        return Err(LayoutError::Missing {
                            key: "frame_index".into(),
                            what,
                        })
                    }
                    _ => {}
                }
            }
            Block::Options => self.options = Some(std::mem::take(f)),
            Block::Settings => self.settings = Some(std::mem::take(f)),
            Block::Top => {}
        }
        Ok(())
    }
}

fn parse_body(text: &str) -> Result<Manifest, ManifestError> {
    let syntax = |line: usize, problem: LayoutError| ManifestError::Syntax {
        line: Some(line),
        problem,
    };
    let mut top = Fields::default();
    let mut records = Records::default();
    let mut block = Block::Top;
    let mut current = Fields::default();
    let mut rest = text;
    let mut version: Option<FormatVersion> = None;
    let mut newer = false;
    let mut table_keys = keys_of_table(FORMAT.major);
    let mut ignored: Vec<String> = Vec::new();
    // The line number of what `rest` starts with, counted only for an error message.
    let line_of = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    let syntax = |rest: &str, e: LayoutError| syntax(line_of(rest), e);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let n = rest;
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = rest[..line_end].trim();
        if line.starts_with('#') {
            rest = &rest[line_end..];
            continue;
        }
        let next = match line {
            "[options]" if block == Block::Top => Some(Block::Options),
            "[settings]" if block == Block::Options && records.digests => Some(Block::Settings),
            "[[file]]" => Some(Block::File),
            "[[table]]" => Some(Block::Table),
            l if l.starts_with('[') => {
                return Err(syntax(n, LayoutError::UnexpectedSection(l.to_string())));
            }
            _ => None,
        };
        if let Some(next) = next {
            records
                .close(block, &mut current)
                .map_err(|e| syntax(n, e))?;
            current = Fields::default();
            block = next;
            rest = &rest[line_end..];
            continue;
        }
        let (key, after) = rest[..line_end]
            .split_once('=')
            .ok_or_else(|| syntax(n, LayoutError::NotKeyValue(line.to_string())))?;
        let key = key.trim();
        let value_start = line_end - after.len();
        let (value, tail) = parse_value(rest[value_start..].trim_start_matches([' ', '\t']))
            .map_err(|e| syntax(n, e))?;
        let tail_end = tail.find('\n').unwrap_or(tail.len());
        let trailing = tail[..tail_end].trim();
        if !(trailing.is_empty() || trailing.starts_with('#')) {
            return Err(syntax(n, LayoutError::AfterValue(trailing.to_string())));
        }
        rest = &tail[tail_end..];
        if block == Block::Top && key == "format" {
            let v = format_version(&value).map_err(|e| syntax(n, e))?;
            let Some(implemented) = FormatVersion::implemented(v.major) else {
                return Err(ManifestError::UnknownFormat(v));
            };
            newer = v > implemented;
            table_keys = keys_of_table(v.major);
            records.digests = v.major >= 3;
            version = Some(v);
            continue;
        }
        if version.is_none() {
            return Err(syntax(n, LayoutError::FormatNotFirst));
        }
        let (fields, allowed, what) = match block {
            Block::Top => (&mut top, TOP_KEYS, "the manifest"),
            Block::Options => (&mut current, OPTION_KEYS, "[options]"),
            Block::Settings => (&mut current, &SETTING_KEYS[..], "[settings]"),
            Block::File => (&mut current, FILE_KEYS, "a [[file]]"),
            Block::Table => (&mut current, table_keys, "a [[table]]"),
        };
        if newer && !allowed.contains(&key) {
            // A newer minor's key: ignored, as format-spec §9 says, and named for verify.
            ignored.push(format!("{what}: {key}"));
            continue;
        }
        fields
            .put(key, value, allowed, what)
            .map_err(|e| syntax(n, e))?;
    }
    records
        .close(block, &mut current)
        .map_err(|e| syntax("", e))?;
    let format = version.ok_or(ManifestError::Syntax {
        line: None,
        problem: LayoutError::Missing {
            key: "format".into(),
            what: "the manifest".into(),
        },
    })?;
    ignored.sort();
    ignored.dedup();
    let mut m = build(top, records).map_err(|problem| ManifestError::Syntax {
        line: None,
        problem,
    })?;
    m.format = format;
    m.ignored_keys = ignored;
    Ok(m)
}

/// The `format` key's value: `"MAJOR.MINOR"`, or the integer `1` of versions before 1.9.
fn format_version(value: &Parsed) -> Result<FormatVersion, LayoutError> {
    match value {
        Parsed::Str(s) => FormatVersion::try_from(s.clone()),
        Parsed::Int(1) => Ok(LEGACY_FORMAT),
        Parsed::Int(i) => Ok(FormatVersion {
            major: u32::try_from(*i).unwrap_or(u32::MAX),
            minor: 0,
        }),
        Parsed::Bool(_) => Err(LayoutError::WrongType {
            key: "format".into(),
            what: "the manifest".into(),
            expected: "a version string",
        }),
    }
}

/// The manifest from its parsed blocks.
fn build(mut top: Fields, records: Records) -> Result<Manifest, LayoutError> {
    let mut o = records.options.ok_or(LayoutError::NoOptions)?;
    let w = "the manifest";
    let settings = match (records.settings, records.digests) {
        (Some(mut f), true) => {
            let mut v = |k: &str| f.str(k, "[settings]");
            Some(CopySettings {
                client_encoding: v("client_encoding")?,
                datestyle: v("datestyle")?,
                intervalstyle: v("intervalstyle")?,
                extra_float_digits: v("extra_float_digits")?,
                timezone: v("timezone")?,
                bytea_output: v("bytea_output")?,
                lc_monetary: v("lc_monetary")?,
            })
        }
        (None, true) => {
            return Err(LayoutError::Missing {
                key: "[settings]".into(),
                what: w.into(),
            })
        }
        (_, false) => None,
    };
    Ok(Manifest {
        format: FORMAT,
        pgarc_version: top.str("pgarc_version", w)?,
        created_start: top.str("created_start", w)?,
        created_end: top.str("created_end", w)?,
        server_version: top.str("server_version", w)?,
        pg_dump_version: top.str("pg_dump_version", w)?,
        database: top.str("database", w)?,
        encoding: top.str("encoding", w)?,
        snapshot_id: top.str("snapshot_id", w)?,
        current_snapshot: top.str("current_snapshot", w)?,
        options: DumpOptionsRecord {
            compression: o.str("compression", "[options]")?,
            frame_size: o.int("frame_size", "[options]")?,
            split_size: o.int("split_size", "[options]")?,
            jobs: o.int("jobs", "[options]")?,
            snapshot_imported: o.bool("snapshot_imported", "[options]")?,
        },
        settings,
        files: records.files,
        tables: records.tables,
        ignored_keys: Vec::new(),
    })
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
            format: FORMAT_1,
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
            settings: None,
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
                frame_index: Some("pgarc/frames/3380.tsv".into()),
                frame_list: None,
                rows: 1000,
                raw_bytes: 5000,
                stored_bytes: 900,
                frames: 2,
                rows_sum: None,
            }],
            ignored_keys: Vec::new(),
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

    /// What pgarc writes is TOML any TOML reader reads, and manifests that earlier pgarc
    /// versions wrote through the toml library (literal strings for text with quotes) read
    /// back the same.
    #[test]
    fn the_layout_is_toml_and_reads_what_the_toml_library_wrote() {
        let mut m = sample();
        m.tables[0].name = "it's \"quoted\" \\ and\nnew é 日本 \u{7f}".into();
        m.tables.push(TableRecord {
            dump_id: -1,
            name: "second".into(),
            ..m.tables[0].clone()
        });
        let bytes = m.to_bytes();
        let body = &bytes[..checked_body_len(&bytes).unwrap()];
        let via_toml: Manifest = toml::from_str(std::str::from_utf8(body).unwrap()).unwrap();
        assert_eq!(via_toml, m);
        let old = with_checksum(toml::to_string(&m).unwrap().as_bytes());
        assert_eq!(Manifest::parse(&old).unwrap(), m);
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn damaged_layouts_are_named_by_line() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let body = &text[..text.rfind("manifest_sha256").unwrap()];
        for (change, expect) in [
            (body.replace("size = 10", "size = -10"), "out of range"),
            (body.replace("size = 10", "size = ten"), "not a value"),
            (
                body.replace("rows = 1000", "rows = 1000\nrows = 1"),
                "given twice",
            ),
            (
                body.replace("frames = 2", "shadow = 2"),
                "unknown key \"shadow\"",
            ),
            (body.replace("sha256 = ", "sha256 = \"x"), "after the value"),
            (
                body.replace("path = \"toc.dat\"", "path = \"toc.dat"),
                "closing quote",
            ),
            (body.replace("[options]", "[other]"), "unexpected section"),
            (body.replace("path = \"toc.dat\"\n", ""), "has no path"),
        ] {
            let err = Manifest::parse(&with_checksum(change.as_bytes())).unwrap_err();
            assert!(err.to_string().contains(expect), "{expect}: {err}");
            assert!(err.to_string().contains("line "), "{err}");
        }
    }

    /// The manifest's bytes with `edit` applied to its body and a new checksum.
    fn edited(m: &Manifest, edit: impl Fn(&str) -> String) -> Vec<u8> {
        let bytes = m.to_bytes();
        let body = std::str::from_utf8(&bytes[..checked_body_len(&bytes).unwrap()]).unwrap();
        with_checksum(edit(body).as_bytes())
    }

    /// format-spec §9: a newer minor's unknown keys are ignored and named; the same keys
    /// under this minor are refused; the integer format of earlier versions reads as 1.8.
    #[test]
    fn newer_minor_versions_are_read_and_their_unknown_keys_ignored() {
        let m = sample();
        let future = |format: &str| {
            edited(&m, |body| {
                body.replacen("format = \"1.9\"", &format!("format = {format}"), 1)
                    .replacen("pgarc_version", "future_top = 1\npgarc_version", 1)
                    .replace("[[table]]\n", "[[table]]\nfuture_digest = \"x\"\n")
            })
        };
        let read = Manifest::parse(&future("\"1.10\"")).unwrap();
        assert_eq!(
            read.format,
            FormatVersion {
                major: 1,
                minor: 10
            }
        );
        assert_eq!(
            read.ignored_keys,
            vec!["a [[table]]: future_digest", "the manifest: future_top"]
        );
        assert_eq!(
            (read.files, read.tables),
            (m.files.clone(), m.tables.clone())
        );
        let err = Manifest::parse(&future("\"1.9\"")).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::Syntax {
                problem: LayoutError::UnknownKey { .. },
                ..
            }
        ));
        let legacy = edited(&m, |body| {
            body.replacen("format = \"1.9\"", "format = 1", 1)
        });
        assert_eq!(Manifest::parse(&legacy).unwrap().format, LEGACY_FORMAT);
        for bad in ["\"1\"", "\"1.09\"", "\"one.two\"", "true"] {
            let err = Manifest::parse(&future(bad)).unwrap_err();
            assert!(
                matches!(&err, ManifestError::Syntax { line: Some(1), .. }),
                "{bad}: {err}"
            );
        }
        let not_first = edited(&m, |body| {
            let rest = body.strip_prefix("format = \"1.9\"\n").unwrap();
            rest.replacen("[options]", "format = \"1.9\"\n[options]", 1)
        });
        assert!(matches!(
            Manifest::parse(&not_first),
            Err(ManifestError::Syntax {
                problem: LayoutError::FormatNotFirst,
                ..
            })
        ));
    }

    #[test]
    fn a_frame_index_is_a_file_or_inline_in_format_2_and_never_both() {
        let list = "offset\tstored\traw\trows\tsha256\n".to_string();
        let mut m = sample();
        m.format = FORMAT_2;
        m.tables[0].frame_index = None;
        m.tables[0].frame_list = Some(list.clone());
        let parsed = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(parsed.tables[0].frame_list.as_deref(), Some(list.as_str()));
        assert_eq!(parsed.tables[0].index_at(), IndexAt::Inline(list.clone()));
        assert_eq!(
            ManifestIndex::new(&parsed)
                .table(3380)
                .unwrap()
                .frame_index
                .location(),
            MANIFEST_FILE
        );
        // Format 1 has no frame_list.
        m.format = FORMAT_1;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Syntax { problem: LayoutError::UnknownKey { key, .. }, .. }) if key == "frame_list"
        ));
        // Both, or neither.
        m.format = FORMAT_2;
        m.tables[0].frame_index = Some("pgarc/frames/3380.tsv".into());
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Syntax {
                problem: LayoutError::TwoIndexes { .. },
                ..
            })
        ));
        m.tables[0].frame_index = None;
        m.tables[0].frame_list = None;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Syntax { problem: LayoutError::Missing { key, .. }, .. }) if key == "frame_index"
        ));
        // Format 1 archives still read.
        let mut old = sample();
        old.format = FORMAT_1;
        assert_eq!(Manifest::parse(&old.to_bytes()).unwrap().format, FORMAT_1);
    }

    fn settings() -> CopySettings {
        CopySettings {
            client_encoding: "LATIN1".into(),
            datestyle: "ISO, MDY".into(),
            intervalstyle: "postgres".into(),
            extra_float_digits: "3".into(),
            timezone: "Europe/Paris".into(),
            bytea_output: "hex".into(),
            lc_monetary: "C".into(),
        }
    }

    /// Format 3 (§5.3): `[settings]` and every `[[table]]`'s `rows_sum` are required; format
    /// 2 and 1 have neither.
    #[test]
    fn format_3_carries_settings_and_digests_and_earlier_formats_refuse_them() {
        let mut m = sample();
        m.format = FORMAT;
        m.settings = Some(settings());
        m.tables[0].rows_sum = Some("0a".repeat(16));
        let bytes = m.to_bytes();
        let parsed = Manifest::parse(&bytes).unwrap();
        assert_eq!(parsed, m);
        let index = ManifestIndex::new(&parsed);
        assert!(index.digests);
        assert_eq!(index.table(3380).unwrap().rows_sum, Some([0x0a; 16]));
        let body = std::str::from_utf8(&bytes[..checked_body_len(&bytes).unwrap()]).unwrap();
        let via_toml: Manifest = toml::from_str(body).unwrap();
        assert_eq!(via_toml, m);
        for (edit, expect) in [
            (body.replace("rows_sum", "shadow_sum"), "unknown key"),
            (
                body.replace(&format!("rows_sum = \"{}\"\n", "0a".repeat(16)), ""),
                "has no rows_sum",
            ),
            (
                body.replace(&"0a".repeat(16), &"0A".repeat(16)),
                "32 lower-case hex digits",
            ),
            (
                body.replace("timezone = \"Europe/Paris\"\n", ""),
                "has no timezone",
            ),
            (body.replace("[settings]\n", ""), "unknown key"),
            (
                body.replace("format = \"3.0\"", "format = \"2.0\""),
                "unexpected section [settings]",
            ),
        ] {
            let err = Manifest::parse(&with_checksum(edit.as_bytes())).unwrap_err();
            assert!(err.to_string().contains(expect), "{expect}: {err}");
        }
        // No [settings] at all.
        let mut none = m.clone();
        none.settings = None;
        let err = Manifest::parse(&none.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("[settings]"), "{err}");
        // Format 2 refuses rows_sum.
        let mut two = m.clone();
        two.format = FORMAT_2;
        two.settings = None;
        let err = Manifest::parse(&two.to_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("unknown key \"rows_sum\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_formats_are_refused_by_name() {
        let mut m = sample();
        m.format = FormatVersion { major: 4, minor: 0 };
        assert_eq!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::UnknownFormat(m.format))
        );
    }

    #[test]
    fn times_format_as_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_468_681);
        assert_eq!(rfc3339_utc(t), "2026-11-23T21:18:01Z");
        assert_eq!(rfc3339_utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
