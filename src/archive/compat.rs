//! Which pg_restore versions can read an archive, from its header alone.
//!
//! pg_restore accepts every archive version from 1.0 up to its own `K_VERS_MAX` and refuses
//! newer ones with "unsupported version"; to restore data it also needs the header's
//! compression algorithm compiled in. The first pg_restore of each archive version is in
//! format-spec §3.5 and the reference notes (§1.5).

use std::fmt;

use super::toc::{CompressionAlgorithm, Header};

/// The set of pg_restore releases that read an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readers {
    /// The first PostgreSQL major version whose pg_restore reads the archive version.
    pub first_major: u32,
    /// Human wording of that first release, e.g. "10.3" where a minor release introduced it.
    pub first_release: &'static str,
    /// A library the pg_restore build needs to restore data (lz4 or zstd).
    pub needs_library: Option<&'static str>,
}

impl Readers {
    /// Whether a pg_restore of this major version reads the archive version. (A build
    /// without the needed library still lists the archive but refuses to restore its data.)
    pub fn includes_major(&self, major: u32) -> bool {
        major >= self.first_major
    }
}

impl fmt::Display for Readers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pg_restore {} and newer", self.first_release)?;
        if let Some(lib) = self.needs_library {
            write!(f, " built with {lib}")?;
        }
        Ok(())
    }
}

/// The pg_restore versions that read an archive with this header.
pub fn readers(header: &Header) -> Readers {
    let (first_major, first_release) = match header.version.minor {
        0..=12 => (9, "9.0"),
        13 => (11, "10.3"),
        14 => (12, "12"),
        15 => (16, "16"),
        _ => (17, "17"),
    };
    let needs_library = match header.compression.algorithm() {
        CompressionAlgorithm::Lz4 => Some("lz4"),
        CompressionAlgorithm::Zstd => Some("zstd"),
        _ => None,
    };
    Readers {
        first_major,
        first_release,
        needs_library,
    }
}
