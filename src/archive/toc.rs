//! `toc.dat` of a directory-format archive: the model, a reader and a writer that reproduce
//! pg_dump's bytes exactly for archive versions 1.12 to 1.16 (format-spec §3).
//!
//! The model keeps every field as stored: strings are raw bytes in the archive's encoding
//! (they need not be UTF-8) and NULL stays distinct from the empty string, because pg_restore
//! gives the two different meanings. Reading then writing an archive written by pg_dump gives
//! the same bytes; the only normalisations are those pg_dump itself could never write (a sign
//! byte other than 0 or 1, a hadDumper other than 0 or 1, a negative string length other than
//! -1), which the reader accepts the way pg_restore does and the writer spells canonically.
//!
//! The reader refuses what pg_restore would crash on or misread (NULL desc, tableoid, oid,
//! withOids or filename; dumpIds <= 0; non-numeric dependencies), and bytes after the last
//! entry, which pg_dump never writes and which therefore mean damage.

use std::fmt;
use std::path::Path;

use super::error::{Error, TocError, TocErrorKind};
pub use super::primitive::TocStr;
use super::primitive::{Reader, Writer};

/// The version triple in the header. pgarc reads and writes 1.12 to 1.16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveVersion {
    pub major: u8,
    pub minor: u8,
    pub rev: u8,
}

impl ArchiveVersion {
    pub const fn new(major: u8, minor: u8, rev: u8) -> Self {
        ArchiveVersion { major, minor, rev }
    }
    /// pg_dump 9.0 to 10.2.
    pub const V1_12: Self = Self::new(1, 12, 0);
    /// Search-path change; same layout as 1.12 (pg_dump 10.3 to 11).
    pub const V1_13: Self = Self::new(1, 13, 0);
    /// Adds tableam to every entry (pg_dump 12 to 15).
    pub const V1_14: Self = Self::new(1, 14, 0);
    /// The header stores the compression algorithm as a byte (pg_dump 16).
    pub const V1_15: Self = Self::new(1, 15, 0);
    /// Adds relkind to every entry; BLOB METADATA (pg_dump 17 and 18).
    pub const V1_16: Self = Self::new(1, 16, 0);

    /// Whether pgarc reads and writes this version (1.12.x to 1.16.x).
    pub fn is_supported(self) -> bool {
        self.major == 1 && (12..=16).contains(&self.minor)
    }

    fn at_least(self, other: Self) -> bool {
        (self.major, self.minor) >= (other.major, other.minor)
    }
}

impl fmt::Display for ArchiveVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}-{}", self.major, self.minor, self.rev)
    }
}

/// The compression field of the header, whose encoding changed in 1.15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCompression {
    /// Up to 1.14: a zlib level as an Int; -1 is zlib's default, 0 means none.
    GzipLevel(i32),
    /// From 1.15: the algorithm as one byte; the level is not stored.
    Algorithm(CompressionAlgorithm),
}

impl HeaderCompression {
    /// The algorithm that the field selects, as pg_restore 16 and newer interpret it.
    pub fn algorithm(self) -> CompressionAlgorithm {
        match self {
            HeaderCompression::GzipLevel(0) => CompressionAlgorithm::None,
            HeaderCompression::GzipLevel(_) => CompressionAlgorithm::Gzip,
            HeaderCompression::Algorithm(a) => a,
        }
    }
}

/// PostgreSQL's `pg_compress_algorithm` codes as stored from archive version 1.15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    None,
    Gzip,
    Lz4,
    Zstd,
    /// A code this pgarc does not know; kept so the header round-trips.
    Unknown(u8),
}

impl CompressionAlgorithm {
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Lz4,
            3 => Self::Zstd,
            other => Self::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Lz4 => 2,
            Self::Zstd => 3,
            Self::Unknown(code) => code,
        }
    }

    /// The name pg_restore prints (`get_compress_algorithm_name`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Unknown(_) => "???",
        }
    }
}

/// The creation time as pg_dump stored it: a local `struct tm`, display only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateTime {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    /// 0 to 11.
    pub mon: i32,
    /// Years since 1900.
    pub year: i32,
    pub isdst: i32,
}

impl fmt::Display for CreateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            i64::from(self.year) + 1900,
            i64::from(self.mon) + 1,
            self.mday,
            self.hour,
            self.min,
            self.sec
        )
    }
}

/// The archive header (`WriteHead`), plus the entry count that `WriteToc` writes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: ArchiveVersion,
    /// Bytes per Int; pg_dump writes `sizeof(int)` = 4.
    pub int_size: u8,
    /// Bytes per file offset; stored only (directory archives have no offsets).
    pub off_size: u8,
    /// Always 3 (`archTar`) in a directory archive's `toc.dat`.
    pub format: u8,
    pub compression: HeaderCompression,
    pub created: CreateTime,
    pub dbname: TocStr,
    pub server_version: TocStr,
    pub pgdump_version: TocStr,
}

/// The format byte that a directory archive's `toc.dat` carries.
pub const FORMAT_DIRECTORY_TOC: u8 = 3;

/// The section of an entry, which decides restore order and `--section` selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    None,
    PreData,
    Data,
    PostData,
}

impl Section {
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::None),
            2 => Some(Self::PreData),
            3 => Some(Self::Data),
            4 => Some(Self::PostData),
            _ => None,
        }
    }

    pub fn code(self) -> i32 {
        match self {
            Self::None => 1,
            Self::PreData => 2,
            Self::Data => 3,
            Self::PostData => 4,
        }
    }
}

/// One TOC entry, with every field a directory archive stores, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// Unique and > 0; need not be contiguous or in TOC order.
    pub dump_id: i32,
    /// Whether the entry has a data file (TABLE DATA, BLOBS).
    pub had_dumper: bool,
    /// Catalog OID of the object's system catalog, as a decimal string.
    pub table_oid: TocStr,
    /// The object's OID, as a decimal string.
    pub oid: TocStr,
    pub tag: TocStr,
    pub desc: TocStr,
    /// The raw section code; see [`Section::from_code`]. Unknown codes are kept, as pg_restore
    /// keeps them (and then restores nothing for the entry).
    pub section: i32,
    pub defn: TocStr,
    pub drop_stmt: TocStr,
    pub copy_stmt: TocStr,
    pub namespace: TocStr,
    pub tablespace: TocStr,
    /// From 1.14; NULL in older archives.
    pub tableam: TocStr,
    /// From 1.16: the pg_class.relkind character code, 0 where not a relation.
    pub relkind: i32,
    pub owner: TocStr,
    /// Always "false" in archives pg_restore can use.
    pub with_oids: TocStr,
    pub deps: Vec<i32>,
    /// The directory format's extra field: the data file name, "" when there is none.
    pub filename: TocStr,
}

impl TocEntry {
    pub fn section(&self) -> Option<Section> {
        Section::from_code(self.section)
    }

    /// `schema.name`, as messages name a table (unquoted, lossy for non-UTF-8 bytes).
    pub fn qualified_name(&self) -> String {
        format!(
            "{}.{}",
            self.namespace.to_str_lossy().unwrap_or_default(),
            self.tag.to_str_lossy().unwrap_or_default()
        )
    }
}

/// A whole `toc.dat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toc {
    pub header: Header,
    pub entries: Vec<TocEntry>,
}

/// Smallest possible encoded entry with intSize 1: 2 Ints + 15 Strs, all 2 bytes.
const MIN_ENTRY_BYTES: usize = 2 * 17;

/// An ENCODING entry whose definition names no encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ENCODING entry {0:?}")]
pub struct BadEncodingEntry(pub String);

impl Toc {
    /// Each entry's position in `entries`, by dumpId.
    pub fn positions_by_dump_id(&self) -> std::collections::HashMap<i32, usize> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.dump_id, i))
            .collect()
    }

    /// The archive's encoding, as pg_restore reads it from the ENCODING entry
    /// (`SET client_encoding = 'LATIN1';`): the text between its first pair of quotes.
    /// `None` without an ENCODING entry (archives that old are read as UTF8).
    pub fn encoding(&self) -> Result<Option<String>, BadEncodingEntry> {
        let Some(defn) = self
            .entries
            .iter()
            .find(|e| e.desc.is("ENCODING"))
            .and_then(|e| e.defn.carrier())
        else {
            return Ok(None);
        };
        match defn.split('\'').nth(1) {
            Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
            _ => Err(BadEncodingEntry(defn)),
        }
    }

    /// Decodes `toc.dat` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Toc, TocError> {
        Toc::parse_from(Reader::new(bytes))
    }

    /// Decodes `toc.dat` from a stream of `len` bytes, as it is read.
    pub fn read_from(src: impl std::io::Read, len: u64) -> Result<Toc, TocError> {
        Toc::parse_from(Reader::from_stream(
            src,
            usize::try_from(len).unwrap_or(usize::MAX),
        ))
    }

    fn parse_from(mut r: Reader<'_>) -> Result<Toc, TocError> {
        let header = read_header(&mut r)?;
        let count_at = r.pos();
        let count = r.int32("TOC entry count")?;
        let count = usize::try_from(count).map_err(|_| {
            r.error_at(
                count_at,
                TocErrorKind::OutOfRange {
                    what: "TOC entry count",
                    value: i64::from(count),
                },
            )
        })?;
        // Never trust the count for allocation: a hostile file could claim 2^31 entries.
        let mut entries = Vec::with_capacity(count.min(r.remaining() / MIN_ENTRY_BYTES + 1));
        for index in 0..count {
            r.entry = Some((index, None));
            entries.push(read_entry(&mut r, header.version)?);
        }
        r.entry = None;
        if r.remaining() > 0 {
            return Err(r.error_at(r.pos(), TocErrorKind::TrailingBytes(r.remaining())));
        }
        Ok(Toc { header, entries })
    }

    /// Encodes the TOC in the header's version and intSize.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TocError> {
        let mut w = Writer::new();
        write_header(&mut w, &self.header)?;
        let count = i64::try_from(self.entries.len()).unwrap_or(i64::MAX);
        w.int(count, "TOC entry count")?;
        for (index, entry) in self.entries.iter().enumerate() {
            write_entry(&mut w, entry, self.header.version).map_err(|mut e| {
                e.entry = Some((index, Some(entry.dump_id)));
                e
            })?;
        }
        Ok(w.out)
    }

    /// Reads `toc.dat` from a file, as it is read (never whole in memory).
    pub fn read_file(path: &Path) -> Result<Toc, Error> {
        let io = |error| Error::Io {
            path: path.to_owned(),
            action: "could not read",
            error,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Toc::read_from(std::io::BufReader::with_capacity(256 << 10, file), len).map_err(|error| {
            Error::Toc {
                path: path.to_owned(),
                error,
            }
        })
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, TocError> {
    let magic = r.bytes(5, "magic string")?;
    if magic != b"PGDMP" {
        return Err(r.error_at(0, TocErrorKind::BadMagic));
    }
    let at = r.pos();
    let major = r.byte("version")?;
    let minor = r.byte("version")?;
    let rev = r.byte("version")?;
    let version = ArchiveVersion::new(major, minor, rev);
    if !version.is_supported() {
        return Err(r.error_at(at, TocErrorKind::UnsupportedVersion { major, minor, rev }));
    }
    let at = r.pos();
    let int_size = r.byte("integer size")?;
    if int_size == 0 || int_size > 32 {
        return Err(r.error_at(at, TocErrorKind::BadIntSize(int_size)));
    }
    r.set_int_size(int_size);
    let off_size = r.byte("offset size")?;
    let at = r.pos();
    let format = r.byte("format")?;
    if format != FORMAT_DIRECTORY_TOC {
        return Err(r.error_at(at, TocErrorKind::NotDirectoryFormat(format)));
    }
    let compression = if version.at_least(ArchiveVersion::V1_15) {
        HeaderCompression::Algorithm(CompressionAlgorithm::from_code(r.byte("compression")?))
    } else {
        HeaderCompression::GzipLevel(r.int32("compression level")?)
    };
    let created = CreateTime {
        sec: r.int32("creation time")?,
        min: r.int32("creation time")?,
        hour: r.int32("creation time")?,
        mday: r.int32("creation time")?,
        mon: r.int32("creation time")?,
        year: r.int32("creation time")?,
        isdst: r.int32("creation time")?,
    };
    Ok(Header {
        version,
        int_size,
        off_size,
        format,
        compression,
        created,
        dbname: r.string("database name")?,
        server_version: r.string("server version")?,
        pgdump_version: r.string("pg_dump version")?,
    })
}

fn write_header(w: &mut Writer, h: &Header) -> Result<(), TocError> {
    w.out.extend_from_slice(b"PGDMP");
    w.byte(h.version.major);
    w.byte(h.version.minor);
    w.byte(h.version.rev);
    w.byte(h.int_size);
    w.set_int_size(h.int_size);
    w.byte(h.off_size);
    w.byte(h.format);
    match (h.compression, h.version.at_least(ArchiveVersion::V1_15)) {
        (HeaderCompression::Algorithm(a), true) => w.byte(a.code()),
        (HeaderCompression::GzipLevel(level), false) => {
            w.int(i64::from(level), "compression level")?
        }
        (HeaderCompression::Algorithm(_), false) => {
            return Err(compression_mismatch(w, "as an algorithm", h.version))
        }
        (HeaderCompression::GzipLevel(_), true) => {
            return Err(compression_mismatch(w, "as a gzip level", h.version))
        }
    }
    let t = &h.created;
    for v in [t.sec, t.min, t.hour, t.mday, t.mon, t.year, t.isdst] {
        w.int(i64::from(v), "creation time")?;
    }
    w.string(&h.dbname, "database name")?;
    w.string(&h.server_version, "server version")?;
    w.string(&h.pgdump_version, "pg_dump version")
}

fn compression_mismatch(w: &Writer, found: &'static str, version: ArchiveVersion) -> TocError {
    TocError {
        offset: w.out.len(),
        entry: None,
        kind: TocErrorKind::CompressionVersionMismatch {
            found,
            minor: version.minor,
        },
    }
}

fn read_entry(r: &mut Reader<'_>, version: ArchiveVersion) -> Result<TocEntry, TocError> {
    let at = r.pos();
    let dump_id = r.int32("dumpId")?;
    if dump_id <= 0 {
        return Err(r.error_at(at, TocErrorKind::BadDumpId(i64::from(dump_id))));
    }
    if let Some((index, _)) = r.entry {
        r.entry = Some((index, Some(dump_id)));
    }
    let had_dumper = r.int32("hadDumper")? != 0;
    let table_oid = r.required_string("tableoid")?;
    let oid = r.required_string("oid")?;
    let tag = r.string("tag")?;
    let desc = r.required_string("desc")?;
    let section = r.int32("section")?;
    let defn = r.string("defn")?;
    let drop_stmt = r.string("dropStmt")?;
    let copy_stmt = r.string("copyStmt")?;
    let namespace = r.string("namespace")?;
    let tablespace = r.string("tablespace")?;
    let tableam = if version.at_least(ArchiveVersion::V1_14) {
        r.string("tableam")?
    } else {
        TocStr::NULL
    };
    let relkind = if version.at_least(ArchiveVersion::V1_16) {
        r.int32("relkind")?
    } else {
        0
    };
    let owner = r.string("owner")?;
    let with_oids = r.required_string("withOids")?;
    let mut deps = Vec::new();
    loop {
        let at = r.pos();
        let dep = r.string("dependency")?;
        let Some(bytes) = dep.as_bytes() else { break };
        let parsed = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|&d| d > 0);
        match parsed {
            Some(d) => deps.push(d),
            None => {
                return Err(r.error_at(
                    at,
                    TocErrorKind::BadDependency(String::from_utf8_lossy(bytes).into_owned()),
                ))
            }
        }
    }
    let filename = r.required_string("filename")?;
    Ok(TocEntry {
        dump_id,
        had_dumper,
        table_oid,
        oid,
        tag,
        desc,
        section,
        defn,
        drop_stmt,
        copy_stmt,
        namespace,
        tablespace,
        tableam,
        relkind,
        owner,
        with_oids,
        deps,
        filename,
    })
}

fn write_entry(w: &mut Writer, e: &TocEntry, version: ArchiveVersion) -> Result<(), TocError> {
    if e.dump_id <= 0 {
        return Err(TocError {
            offset: w.out.len(),
            entry: None,
            kind: TocErrorKind::BadDumpId(i64::from(e.dump_id)),
        });
    }
    w.int(i64::from(e.dump_id), "dumpId")?;
    w.int(i64::from(e.had_dumper), "hadDumper")?;
    w.required_string(&e.table_oid, "tableoid")?;
    w.required_string(&e.oid, "oid")?;
    w.string(&e.tag, "tag")?;
    w.required_string(&e.desc, "desc")?;
    w.int(i64::from(e.section), "section")?;
    w.string(&e.defn, "defn")?;
    w.string(&e.drop_stmt, "dropStmt")?;
    w.string(&e.copy_stmt, "copyStmt")?;
    w.string(&e.namespace, "namespace")?;
    w.string(&e.tablespace, "tablespace")?;
    if version.at_least(ArchiveVersion::V1_14) {
        w.string(&e.tableam, "tableam")?;
    }
    if version.at_least(ArchiveVersion::V1_16) {
        w.int(i64::from(e.relkind), "relkind")?;
    }
    w.string(&e.owner, "owner")?;
    w.required_string(&e.with_oids, "withOids")?;
    for dep in &e.deps {
        w.string(&TocStr::new(dep.to_string()), "dependency")?;
    }
    w.string(&TocStr::NULL, "dependency")?;
    w.required_string(&e.filename, "filename")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_toc(version: ArchiveVersion) -> Toc {
        let compression = if version.at_least(ArchiveVersion::V1_15) {
            HeaderCompression::Algorithm(CompressionAlgorithm::Zstd)
        } else {
            HeaderCompression::GzipLevel(-1)
        };
        Toc {
            header: Header {
                version,
                int_size: 4,
                off_size: 8,
                format: 3,
                compression,
                created: CreateTime {
                    sec: 1,
                    min: 18,
                    hour: 21,
                    mday: 23,
                    mon: 10,
                    year: 126,
                    isdst: 0,
                },
                dbname: "fmt".into(),
                server_version: "15.18 (Debian 15.18-0+deb12u1)".into(),
                pgdump_version: "18.6".into(),
            },
            entries: vec![TocEntry {
                dump_id: 3380,
                had_dumper: true,
                table_oid: "0".into(),
                oid: "16395".into(),
                tag: "child".into(),
                desc: "TABLE DATA".into(),
                section: 3,
                defn: TocStr::NULL,
                drop_stmt: TocStr::NULL,
                copy_stmt: "COPY public.child (id, parent_id, payload, note) FROM stdin;\n".into(),
                namespace: "public".into(),
                tablespace: TocStr::NULL,
                tableam: TocStr::NULL,
                relkind: 0,
                owner: "postgres".into(),
                with_oids: "false".into(),
                deps: vec![217],
                filename: "3380.dat".into(),
            }],
        }
    }

    #[test]
    fn header_bytes_match_the_annotated_reference_dump() {
        let bytes = sample_toc(ArchiveVersion::V1_16).to_bytes().unwrap();
        assert_eq!(&bytes[..0x0c], b"PGDMP\x01\x10\x00\x04\x08\x03\x03");
        assert_eq!(&bytes[0x0c..0x11], [0, 1, 0, 0, 0]);
        assert_eq!(&bytes[0x2f..0x37], b"\x00\x03\x00\x00\x00fmt");
        // The 1.14 header stores an Int level: every later offset moves by 4.
        let old = sample_toc(ArchiveVersion::V1_14).to_bytes().unwrap();
        assert_eq!(&old[0x0b..0x10], [1, 1, 0, 0, 0]);
    }

    #[test]
    fn entry_fields_follow_the_version() {
        let v16 = sample_toc(ArchiveVersion::V1_16).to_bytes().unwrap();
        let v15 = sample_toc(ArchiveVersion::V1_15).to_bytes().unwrap();
        let mut v13 = sample_toc(ArchiveVersion::V1_13);
        v13.header.compression = HeaderCompression::GzipLevel(0);
        let v13 = v13.to_bytes().unwrap();
        // relkind (5 bytes) is only in 1.16; tableam (5 bytes for NULL) from 1.14; the 1.13
        // header's Int level is 4 bytes longer than the 1.15 byte.
        assert_eq!(v16.len(), v15.len() + 5);
        assert_eq!(v13.len() + 5, v15.len() + 4);
        for v in [
            ArchiveVersion::V1_13,
            ArchiveVersion::V1_14,
            ArchiveVersion::V1_16,
        ] {
            let toc = sample_toc(v);
            assert_eq!(Toc::parse(&toc.to_bytes().unwrap()).unwrap(), toc);
        }
        // The header's compression field must be spelled the way the version stores it.
        let mut wrong = sample_toc(ArchiveVersion::V1_13);
        wrong.header.compression = HeaderCompression::Algorithm(CompressionAlgorithm::Zstd);
        assert!(matches!(
            wrong.to_bytes().unwrap_err().kind,
            TocErrorKind::CompressionVersionMismatch { minor: 13, .. }
        ));
        let mut wrong = sample_toc(ArchiveVersion::V1_16);
        wrong.header.compression = HeaderCompression::GzipLevel(6);
        assert!(wrong.to_bytes().is_err());
    }

    #[test]
    fn damaged_headers_are_named() {
        let good = sample_toc(ArchiveVersion::V1_16).to_bytes().unwrap();
        let kind = |b: &[u8]| Toc::parse(b).unwrap_err().kind;
        assert_eq!(kind(b"PGDMX\x01\x10"), TocErrorKind::BadMagic);
        let mut v = good.clone();
        v[6] = 17;
        assert!(matches!(
            kind(&v),
            TocErrorKind::UnsupportedVersion { minor: 17, .. }
        ));
        assert!(kind(&v).to_string().contains("a newer pgarc is needed"));
        let mut v = good.clone();
        v[10] = 1;
        assert_eq!(kind(&v), TocErrorKind::NotDirectoryFormat(1));
        // Cut inside the last string's bytes, then inside its length Int.
        assert!(matches!(
            kind(&good[..good.len() - 3]),
            TocErrorKind::StringTooLong {
                what: "filename",
                len: 8,
                available: 5
            }
        ));
        assert!(matches!(
            kind(&good[..good.len() - 11]),
            TocErrorKind::Truncated {
                what: "filename",
                needed: 5,
                available: 2
            }
        ));
        let mut v = good.clone();
        v.push(0);
        assert_eq!(kind(&v), TocErrorKind::TrailingBytes(1));
    }

    #[test]
    fn errors_inside_an_entry_name_it() {
        let mut toc = sample_toc(ArchiveVersion::V1_16);
        toc.entries[0].filename = TocStr::NULL;
        // The writer refuses what pg_restore would crash on...
        let err = toc.to_bytes().unwrap_err();
        assert_eq!(err.kind, TocErrorKind::RequiredNull { what: "filename" });
        assert_eq!(err.entry, Some((0, Some(3380))));
        // ...and so does the reader, with the entry in the message.
        let mut bytes = sample_toc(ArchiveVersion::V1_16).to_bytes().unwrap();
        let n = bytes.len();
        bytes.splice(n - 13.., [1, 1, 0, 0, 0]);
        let err = Toc::parse(&bytes).unwrap_err();
        assert_eq!(err.kind, TocErrorKind::RequiredNull { what: "filename" });
        assert!(
            err.to_string().contains("TOC entry #1 with dumpId 3380"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_entry_count_does_not_preallocate() {
        let mut bytes = sample_toc(ArchiveVersion::V1_16).to_bytes().unwrap();
        // tocCount sits at 0x63 in this header (see the reference hexdump).
        bytes[0x63..0x68].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            Toc::parse(&bytes).unwrap_err().kind,
            TocErrorKind::Truncated { .. }
        ));
    }
}
