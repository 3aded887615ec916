//! A table's content digest (format-spec archive.md §5.3): an order-independent hash of the
//! table's rows as COPY text, additive so that the digests of frames, chunks and workers
//! combine into the table's whatever the split.
//!
//! Definition (format-spec archive.md §5.3):
//! - a **row line** is the bytes of one COPY text row without its terminating `\n` (in COPY
//!   text a raw `\n` byte only ends a row; the end-of-data marker `\.` is not a row);
//! - a row's **hash** is XXH3-128 (seed 0, the default secret) of its row line, as the
//!   unsigned 128-bit integer whose big-endian bytes are XXH128's canonical form;
//! - the **sum** is the sum of the rows' hashes modulo 2^128, written as 32 lower-case hex
//!   digits (big-endian); an empty table's sum is 0;
//! - **rows** is the number of row lines, **bytes** the sum of their lengths plus one per row
//!   (the `\n`s): the COPY text's size without the end-of-data marker.
//!
//! A sum, not XOR: under XOR a duplicated row would cancel itself out. Reordering rows never
//! changes the digest; any accidental change to a row's bytes, a row more or a row less does,
//! except with a probability of about 2^-128. It detects accidental divergence, not
//! tampering: an additive multiset hash of this size is not collision-resistant against an
//! adversary whatever the per-row hash (Wagner's generalized birthday attack), which is why
//! the per-row hash is XXH3-128, nine times faster than SHA-256 on short rows, rather than a
//! cryptographic hash (format-spec archive.md §5.3 says more).

use xxhash_rust::xxh3::{xxh3_128, Xxh3Default};

/// The digest of a set of rows: their hashes' sum modulo 2^128, rows and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsDigest {
    sum: u128,
    pub rows: u64,
    pub bytes: u64,
}

impl RowsDigest {
    /// Adds one row line (without its `\n`).
    pub fn add_row(&mut self, line: &[u8]) {
        self.add_hashed(xxh3_128(line), line.len() as u64);
    }

    /// Adds a row by its line's hash and length.
    fn add_hashed(&mut self, h: u128, len: u64) {
        // Modulo 2^128: the carry out of the top bit is dropped.
        self.sum = self.sum.wrapping_add(h);
        self.rows += 1;
        self.bytes += len + 1;
    }

    /// Adds every row of `text`, COPY text of whole rows each ending in `\n` (a last line
    /// without one counts as a row too).
    pub fn add_copy_text(&mut self, text: &[u8]) {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text) {
            self.add_row(&text[start..end]);
            start = end + 1;
        }
        if start < text.len() {
            self.add_row(&text[start..]);
        }
    }

    /// The digest of the rows of `self` and of `other` together.
    pub fn combine(&mut self, other: &RowsDigest) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    /// The sum as 32 lower-case hex digits, big-endian.
    pub fn sum_hex(&self) -> String {
        format!("{:032x}", self.sum)
    }

    /// The sum as 16 bytes, big-endian (what [`Self::sum_hex`] spells).
    pub fn sum_bytes(&self) -> [u8; 16] {
        self.sum.to_be_bytes()
    }

    /// A digest from its sum's 16 big-endian bytes and its counts.
    pub fn from_sum_bytes(sum: &[u8; 16], rows: u64, bytes: u64) -> RowsDigest {
        RowsDigest {
            sum: u128::from_be_bytes(*sum),
            rows,
            bytes,
        }
    }

    /// Whether two digests have the same sum and rows (bytes follow from the rows' lines).
    pub fn same_rows(&self, other: &RowsDigest) -> bool {
        self.sum == other.sum && self.rows == other.rows
    }

    /// Reads a sum written by [`Self::sum_hex`] (exactly 32 lower-case hex digits).
    pub fn from_parts(sum_hex: &str, rows: u64, bytes: u64) -> Option<RowsDigest> {
        let sum = super::frame::unhex::<16>(sum_hex)?;
        Some(RowsDigest::from_sum_bytes(&sum, rows, bytes))
    }
}

/// The digest of COPY text that arrives in pieces of any size (a row may span pieces, as
/// rows do in a decompressed stream or a server's COPY messages), in bounded memory: a row
/// being read is held as its running hash state, not as bytes.
#[derive(Default)]
pub struct StreamDigest {
    done: RowsDigest,
    /// The row line read so far, when the last piece ended inside it, and its length.
    partial: Option<(Box<Xxh3Default>, u64)>,
}

impl StreamDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next piece of text.
    pub fn feed(&mut self, mut text: &[u8]) {
        while !text.is_empty() {
            match memchr::memchr(b'\n', text) {
                Some(p) => {
                    let line = &text[..p];
                    match self.partial.take() {
                        Some((mut h, len)) => {
                            h.update(line);
                            self.done.add_hashed(h.digest128(), len + line.len() as u64);
                        }
                        None => self.done.add_row(line),
                    }
                    text = &text[p + 1..];
                }
                None => {
                    let (h, len) = self
                        .partial
                        .get_or_insert_with(|| (Box::new(Xxh3Default::new()), 0));
                    h.update(text);
                    *len += text.len() as u64;
                    break;
                }
            }
        }
    }

    /// The digest of the rows fed so far, whole rows only; and whether a row was left
    /// without its line end.
    pub fn finish(&self) -> (RowsDigest, bool) {
        (self.done, self.partial.is_some())
    }
}

impl super::reader::RowSink for StreamDigest {
    fn put(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn a_stream_cut_inside_a_row_says_so() {
        let mut s = StreamDigest::new();
        s.feed(b"ab\ncd");
        let (d, partial) = s.finish();
        assert_eq!((d, partial), (of(&[b"ab"]), true));
        s.feed(b"e\n");
        assert_eq!(s.finish(), (of(&[b"ab", b"cde"]), false));
    }

    fn of(rows: &[&[u8]]) -> RowsDigest {
        let mut d = RowsDigest::default();
        for r in rows {
            d.add_row(r);
        }
        d
    }

    #[test]
    fn an_empty_table_is_zero_and_one_row_is_its_hash() {
        let d = RowsDigest::default();
        assert_eq!(d.sum_hex(), "0".repeat(32));
        let one = of(&[b"abc"]);
        // XXH3-128("abc"), canonical form (xxhsum -H2, Python's xxhash.xxh3_128_hexdigest).
        assert_eq!(one.sum_hex(), "06b05ab6733a618578af5f94892f3950");
        // XXH3-128 of the empty string: the reference vector of the xxHash specification.
        assert_eq!(of(&[b""]).sum_hex(), "99aa06d3014798d86001c324468d497f");
        // format-spec archive.md §5.3's example.
        assert_eq!(
            of(&[b"1\ta", b"2\tb"]).sum_hex(),
            "562a8f305b5735d60f3e2124590cb2cc"
        );
        assert_eq!((one.rows, one.bytes), (1, 4));
        assert_eq!(
            RowsDigest::from_parts(&one.sum_hex(), 1, 4),
            Some(one),
            "round trip"
        );
        assert_eq!(RowsDigest::from_parts(&"A".repeat(32), 0, 0), None);
        assert_eq!(RowsDigest::from_parts(&"a".repeat(64), 0, 0), None);
        assert_eq!(RowsDigest::from_parts("00", 0, 0), None);
    }

    #[test]
    fn the_sum_wraps_modulo_2_128() {
        let mut d = RowsDigest::from_parts(&"f".repeat(32), 0, 0).unwrap();
        d.combine(&RowsDigest::from_parts(&format!("{}2", "0".repeat(31)), 0, 0).unwrap());
        assert_eq!(d.sum_hex(), format!("{}1", "0".repeat(31)));
    }

    #[test]
    fn the_classes_of_change_issue_19_names_change_the_digest() {
        let base = of(&[b"1\tab\t\\N", b"2\tcd\tx", b"3\tef\ty"]);
        for changed in [
            of(&[b"1\tab\t\\N", b"2\tcd\tz", b"3\tef\ty"]), // a value
            of(&[b"1\tab\t\\N", b"2\tcd\tx"]),              // a row deleted
            of(&[b"1\tab\t\\N", b"2\tcd\tx", b"3\tef\ty", b"3\tef\ty"]), // duplicated
            of(&[b"1\t\\N\tab", b"2\tcd\tx", b"3\tef\ty"]), // values swapped
            of(&[b"1\tab\t", b"2\tcd\tx", b"3\tef\ty"]),    // NULL -> ''
            of(&[b"1\tab \t\\N", b"2\tcd\tx", b"3\tef\ty"]), // trailing space
        ] {
            assert_ne!(changed, base);
        }
        // A row duplicated twice more is not the row alone (no XOR cancelling).
        assert_ne!(of(&[b"a", b"a", b"a"]), of(&[b"a"]));
        assert_ne!(of(&[b"a", b"a"]).sum_hex(), RowsDigest::default().sum_hex());
    }

    proptest! {
        /// Any order and any split into parts give the same digest.
        #[test]
        fn order_and_split_do_not_matter(
            rows in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40), 0..60),
            cut in 0usize..60,
            seed in any::<u64>(),
        ) {
            let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
            let whole = of(&refs);
            let cut = cut.min(refs.len());
            let mut parts = of(&refs[..cut]);
            parts.combine(&of(&refs[cut..]));
            prop_assert_eq!(parts, whole);
            let mut shuffled = refs.clone();
            let n = shuffled.len();
            if n > 1 {
                let mut s = seed;
                for i in (1..n).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (s >> 33) as usize % (i + 1));
                }
            }
            prop_assert_eq!(of(&shuffled), whole);
            let mut text = Vec::new();
            for r in &refs {
                text.extend_from_slice(r);
                text.push(b'\n');
            }
            let mut from_text = RowsDigest::default();
            from_text.add_copy_text(&text);
            prop_assert_eq!(from_text, whole);
            prop_assert_eq!(whole.bytes, text.len() as u64);
            // In pieces of any size, rows spanning them.
            let piece = 1 + (seed as usize % 17);
            let mut stream = StreamDigest::new();
            for p in text.chunks(piece) {
                stream.feed(p);
            }
            prop_assert_eq!(stream.finish(), (whole, false));
            prop_assert_eq!(RowsDigest::from_sum_bytes(&whole.sum_bytes(), whole.rows, whole.bytes), whole);
            prop_assert_eq!(hex_of(&whole.sum_bytes()), whole.sum_hex());
        }
    }
}
