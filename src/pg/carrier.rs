//! Text in the database's (or the archive's) encoding, carried in a Rust `String`.
//!
//! PostgreSQL names, DDL and COPY statements are bytes in the server encoding: LATIN1,
//! EUC_JP, SQL_ASCII holding any byte. pgarc builds SQL with ordinary string operations
//! (quoting, `format!`, searching for ASCII keywords), so such text is kept as a *carrier*:
//! each byte becomes the one `char` of the same value (U+0000 to U+00FF, the ISO 8859-1
//! decoding), which any byte sequence has and which [`to_bytes`] reverses exactly. Every
//! server encoding is ASCII-compatible (no byte of a multibyte character is below 0x80), and
//! a carrier maps ASCII to itself and every other byte to a non-ASCII `char`, so ASCII
//! operations (quote doubling, keyword search, splitting on `;` or `.`) mean on a carrier
//! what they mean on the bytes.
//!
//! A carrier is for SQL and names on their way to the server; it is never shown as it is:
//! [`display`] turns it into readable text for messages.

/// The carrier of `bytes`.
pub fn from_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The bytes a carrier stands for. A `char` above U+00FF cannot come from [`from_bytes`]; if
/// one does occur (text typed by the user, mixed in), its UTF-8 bytes are used, which is
/// what pg_restore sends for command-line text.
pub fn to_bytes(carrier: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(carrier.len());
    for c in carrier.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// A carrier as readable text: its bytes as UTF-8 where they are, `\xNN` elsewhere.
pub fn display(carrier: &str) -> String {
    super::wire::escape_invalid_utf8(&to_bytes(carrier))
}

/// The carrier of text the user gave (command-line patterns, role names): its bytes, as
/// pg_dump and pg_restore take their arguments.
pub fn from_user(text: &str) -> String {
    from_bytes(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_sequence_round_trips_and_ascii_operations_agree() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(to_bytes(&from_bytes(&all)), all);
        let latin1 = b"caf\xe9 \"x\" 'y'";
        let c = from_bytes(latin1);
        assert_eq!(
            to_bytes(&c.replace('"', "\"\"")),
            b"caf\xe9 \"\"x\"\" 'y'".to_vec()
        );
        assert_eq!(display(&c), "caf\\xe9 \"x\" 'y'");
        assert_eq!(display(&from_user("café")), "café");
        assert_eq!(to_bytes(&from_user("日本")), "日本".as_bytes());
    }
}
