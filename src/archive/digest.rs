//! A table's content digest (format-spec archive.md §5.3): an order-independent
//! hash of the table's rows as COPY text, additive so that the digests of frames, chunks and
//! workers combine into the table's whatever the split.
//!
//! Definition (format-spec archive.md §5.3):
//! - a **row line** is the bytes of one COPY text row without its terminating `\n` (in COPY
//!   text a raw `\n` byte only ends a row; the end-of-data marker `\.` is not a row);
//! - a row's **hash** is SHA-256 of its row line, read as an unsigned 256-bit big-endian
//!   integer;
//! - the **sum** is the sum of the rows' hashes modulo 2^256, written as 64 lower-case hex
//!   digits (big-endian); an empty table's sum is 0;
//! - **rows** is the number of row lines, **bytes** the sum of their lengths plus one per row
//!   (the `\n`s): the COPY text's size without the end-of-data marker.
//!
//! A sum, not XOR: under XOR a duplicated row would cancel itself out. Reordering rows never
//! changes the digest; any change to a row's bytes, a row more or a row less does, except
//! with the probability of a SHA-256 collision of the sums.

use sha2::{Digest as _, Sha256};

/// The digest of a set of rows: their hashes' sum modulo 2^256, rows and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsDigest {
    /// Little-endian 64-bit limbs of the sum.
    sum: [u64; 4],
    pub rows: u64,
    pub bytes: u64,
}

impl RowsDigest {
    /// Adds one row line (without its `\n`).
    pub fn add_row(&mut self, line: &[u8]) {
        self.add_hashed(&Sha256::digest(line).into(), line.len() as u64);
    }

    /// Adds a row by its line's SHA-256 and length.
    fn add_hashed(&mut self, h: &[u8; 32], len: u64) {
        self.add_sum(&limbs_of(h));
        self.rows += 1;
        self.bytes += len + 1;
    }

    /// Adds every row of `text`, COPY text of whole rows each ending in `\n` (a last line
    /// without one counts as a row too).
    pub fn add_copy_text(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        for line in body.split(|&b| b == b'\n') {
            self.add_row(line);
        }
    }

    /// The digest of the rows of `self` and of `other` together.
    pub fn combine(&mut self, other: &RowsDigest) {
        self.add_sum(&other.sum);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    fn add_sum(&mut self, limbs: &[u64; 4]) {
        let mut carry = false;
        for (a, &b) in self.sum.iter_mut().zip(limbs) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
        // The carry out of the top limb is dropped: modulo 2^256.
    }

    /// The sum as 64 lower-case hex digits, big-endian.
    pub fn sum_hex(&self) -> String {
        self.sum
            .iter()
            .rev()
            .map(|limb| format!("{limb:016x}"))
            .collect()
    }

    /// The sum as 32 bytes, big-endian (what [`Self::sum_hex`] spells).
    pub fn sum_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.sum.iter().enumerate() {
            out[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    /// A digest from its sum's 32 big-endian bytes and its counts.
    pub fn from_sum_bytes(sum: &[u8; 32], rows: u64, bytes: u64) -> RowsDigest {
        RowsDigest {
            sum: limbs_of(sum),
            rows,
            bytes,
        }
    }

    /// Whether two digests have the same sum and rows (bytes follow from the rows' lines).
    pub fn same_rows(&self, other: &RowsDigest) -> bool {
        self.sum == other.sum && self.rows == other.rows
    }

    /// Reads a sum written by [`Self::sum_hex`] (exactly 64 lower-case hex digits).
    pub fn from_parts(sum_hex: &str, rows: u64, bytes: u64) -> Option<RowsDigest> {
        let ok = sum_hex.len() == 64
            && sum_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return None;
        }
        let mut sum = [0u64; 4];
        for (i, limb) in sum.iter_mut().enumerate() {
            let start = 64 - 16 * (i + 1);
            *limb = u64::from_str_radix(&sum_hex[start..start + 16], 16).ok()?;
        }
        Some(RowsDigest { sum, rows, bytes })
    }
}

/// A 256-bit big-endian number as little-endian 64-bit limbs.
fn limbs_of(h: &[u8; 32]) -> [u64; 4] {
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        // Big-endian: the last 8 bytes are the lowest limb.
        let start = 32 - 8 * (i + 1);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[start..start + 8]);
        *limb = u64::from_be_bytes(b);
    }
    limbs
}

/// The digest of COPY text that arrives in pieces of any size (a row may span pieces, as
/// rows do in a decompressed stream or a server's COPY messages), in bounded memory: a row
/// being read is held as its running SHA-256, not as bytes.
#[derive(Default)]
pub struct StreamDigest {
    done: RowsDigest,
    /// The row line read so far, when the last piece ended inside it.
    partial: Option<(Sha256, u64)>,
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
                            self.done
                                .add_hashed(&h.finalize().into(), len + line.len() as u64);
                        }
                        None => self.done.add_row(line),
                    }
                    text = &text[p + 1..];
                }
                None => {
                    let (h, len) = self.partial.get_or_insert_with(|| (Sha256::new(), 0));
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
        assert_eq!(d.sum_hex(), "0".repeat(64));
        let one = of(&[b"abc"]);
        // SHA-256("abc").
        assert_eq!(
            one.sum_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((one.rows, one.bytes), (1, 4));
        assert_eq!(
            RowsDigest::from_parts(&one.sum_hex(), 1, 4),
            Some(one),
            "round trip"
        );
        assert_eq!(RowsDigest::from_parts(&"A".repeat(64), 0, 0), None);
        assert_eq!(RowsDigest::from_parts("00", 0, 0), None);
    }

    #[test]
    fn the_sum_wraps_modulo_2_256() {
        let mut d = RowsDigest::from_parts(&"f".repeat(64), 0, 0).unwrap();
        d.combine(&RowsDigest::from_parts(&format!("{}2", "0".repeat(63)), 0, 0).unwrap());
        assert_eq!(d.sum_hex(), format!("{}1", "0".repeat(63)));
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
