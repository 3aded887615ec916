//! The TOC listing of `pgarc list`, in the format of `pg_restore -l` (`PrintTOCSummary`).
//!
//! Entry lines are byte-identical to pg_restore's: `ID; TABLEOID OID DESC SCHEMA TAG OWNER`,
//! with the catalog OIDs read as unsigned integers, a `-` for a NULL schema, an empty owner for
//! a NULL one, and carriage returns and newlines in names turned into spaces. The header lines
//! all start with `;` (so a listing still works as a `-L` file) and add what pg_restore does not
//! say: the archive version and which pg_restore versions can read it.

use std::io::{self, Write};

use super::compat;
use super::select::{toc_reqs, Selection};
use super::toc::{HeaderCompression, Toc, TocEntry, TocStr};

/// Writes the whole listing: header comment lines, then one line per entry that pg_restore
/// without options would act on.
pub fn write_listing(toc: &Toc, out: &mut dyn Write) -> io::Result<()> {
    write_selected(toc, &Selection::default(), out)
}

/// The listing of the entries `sel` selects (`pg_restore -l` with selection options).
pub fn write_selected(toc: &Toc, sel: &Selection, out: &mut dyn Write) -> io::Result<()> {
    write_header(toc, out)?;
    let mut line = Vec::with_capacity(256);
    for (entry, reqs) in toc.entries.iter().zip(toc_reqs(&toc.entries, sel)) {
        if reqs.selected() {
            line.clear();
            entry_line(entry, &mut line);
            out.write_all(&line)?;
        }
    }
    Ok(())
}

fn write_header(toc: &Toc, out: &mut dyn Write) -> io::Result<()> {
    let h = &toc.header;
    let compression = match h.compression {
        HeaderCompression::GzipLevel(level) => {
            format!("{} (level {level})", h.compression.algorithm().name())
        }
        HeaderCompression::Algorithm(a) => a.name().to_owned(),
    };
    out.write_all(b";\n")?;
    writeln!(out, "; Archive created at {}", h.created)?;
    out.write_all(b";     dbname: ")?;
    out.write_all(&sanitize(&h.dbname, false))?;
    writeln!(out)?;
    writeln!(out, ";     TOC Entries: {}", toc.entries.len())?;
    writeln!(out, ";     Compression: {compression}")?;
    writeln!(out, ";     Dump Version: {}", h.version)?;
    writeln!(out, ";     Format: DIRECTORY")?;
    writeln!(out, ";     Integer: {} bytes", h.int_size)?;
    writeln!(out, ";     Offset: {} bytes", h.off_size)?;
    for (label, value) in [
        ("Dumped from database version", &h.server_version),
        ("Dumped by pg_dump version", &h.pgdump_version),
    ] {
        if !value.is_null() {
            write!(out, ";     {label}: ")?;
            out.write_all(&sanitize(value, false))?;
            writeln!(out)?;
        }
    }
    writeln!(out, ";     Readable by: {}", compat::readers(h))?;
    out.write_all(b";\n;\n; Selected TOC Entries:\n;\n")
}

/// One entry line, exactly as `pg_restore -l` prints it.
pub fn entry_line(e: &TocEntry, line: &mut Vec<u8>) {
    let ids = format!(
        "{}; {} {} ",
        e.dump_id,
        scan_u32(&e.table_oid),
        scan_u32(&e.oid)
    );
    line.extend_from_slice(ids.as_bytes());
    line.extend_from_slice(e.desc.as_bytes().unwrap_or_default());
    line.push(b' ');
    line.extend_from_slice(&sanitize(&e.namespace, true));
    line.push(b' ');
    line.extend_from_slice(&sanitize(&e.tag, false));
    line.push(b' ');
    line.extend_from_slice(&sanitize(&e.owner, false));
    line.push(b'\n');
}

/// pg_restore's `sanitize_line`: NULL becomes `-` (or nothing), CR and LF become spaces.
fn sanitize(s: &TocStr, want_hyphen: bool) -> Vec<u8> {
    match s.as_bytes() {
        None if want_hyphen => b"-".to_vec(),
        None => Vec::new(),
        Some(bytes) => bytes
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect(),
    }
}

/// `sscanf(s, "%u")` as `ReadToc` applies it to the catalog OID strings: leading white space,
/// an optional sign, decimal digits wrapping like `strtoul` does into 32 bits; 0 when there are
/// no digits.
fn scan_u32(s: &TocStr) -> u32 {
    let bytes = s.as_bytes().unwrap_or_default();
    let mut rest = bytes.trim_ascii_start();
    let negative = match rest.first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut overflow = false;
    for d in digits {
        value = value * 10 + u64::from(d - b'0');
        if value > u64::from(u32::MAX) {
            overflow = true;
            value = u64::from(u32::MAX);
        }
    }
    let value = if overflow { u32::MAX } else { value as u32 };
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_u32_matches_sscanf() {
        assert_eq!(scan_u32(&"1259".into()), 1259);
        assert_eq!(scan_u32(&" 42x".into()), 42);
        assert_eq!(scan_u32(&"abc".into()), 0);
        assert_eq!(scan_u32(&"-1".into()), u32::MAX);
        assert_eq!(scan_u32(&TocStr::NULL), 0);
    }

    #[test]
    fn names_are_sanitised_like_pg_restore() {
        assert_eq!(sanitize(&TocStr::NULL, true), b"-");
        assert_eq!(sanitize(&TocStr::NULL, false), b"");
        assert_eq!(sanitize(&"a\nb\rc".into(), true), b"a b c");
    }
}
