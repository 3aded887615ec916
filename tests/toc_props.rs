//! Property tests of the toc.dat reader and writer.
//!
//! 1. Mutations of real archives (flipped bytes, cuts, insertions, overwritten Ints) never make
//!    the reader panic, and whatever it accepts, it writes back into bytes it reads the same.
//! 2. Arbitrary TOCs written then read come back equal, field for field, in every version.
//!
//! The seeds are the checked-in archives of each version, so the mutations start from the
//! shapes pg_dump really writes.

use proptest::prelude::*;

use pgarc::archive::toc::{
    ArchiveVersion, CompressionAlgorithm, CreateTime, Header, HeaderCompression, Toc, TocEntry,
    TocStr,
};

use crate::util::repo_root;

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(repo_root().join("fixtures/archives"))
        .unwrap()
        .map(|e| e.unwrap().path().join("toc.dat"))
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "expected checked-in seed archives");
    seeds
}

/// `PROPTEST_CASES` when set (for long runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Cut {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Overwrite 5 bytes with an Int (sign byte + 4), e.g. a length field.
    Int {
        at: usize,
        negative: bool,
        value: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (
            any::<usize>(),
            any::<bool>(),
            prop_oneof![Just(u32::MAX), Just(0x7fff_ffff), Just(0), any::<u32>()]
        )
            .prop_map(|(at, negative, value)| Mutation::Int {
                at,
                negative,
                value
            }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if !bytes.is_empty() {
                bytes[at % len] ^= 1 << bit;
            }
        }
        Mutation::Cut { at } => bytes.truncate(at % len),
        Mutation::Insert { at, bytes: ins } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Int {
            at,
            negative,
            value,
        } => {
            if bytes.len() >= 5 {
                let at = at % (bytes.len() - 4);
                bytes[at] = u8::from(*negative);
                bytes[at + 1..at + 5].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn mutated_archives_never_panic_and_accepted_ones_round_trip(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let seeds = seeds();
        let mut bytes = seed.get(&seeds).clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Ok(toc) = Toc::parse(&bytes) {
            // Accepted input may be spelled non-canonically (a sign byte of 2); its canonical
            // rewrite must read back to the same TOC.
            let rewritten = toc.to_bytes().expect("an accepted TOC can be written");
            prop_assert_eq!(Toc::parse(&rewritten).expect("rewritten TOC reads"), toc);
        }
    }
}

fn toc_str() -> impl Strategy<Value = TocStr> {
    prop_oneof![
        Just(TocStr::NULL),
        Just(TocStr::from("")),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(TocStr::new),
    ]
}

fn required_str() -> impl Strategy<Value = TocStr> {
    proptest::collection::vec(any::<u8>(), 0..20).prop_map(TocStr::new)
}

fn entry(version: ArchiveVersion) -> impl Strategy<Value = TocEntry> {
    let strs = proptest::collection::vec(toc_str(), 10);
    let req = proptest::collection::vec(required_str(), 5);
    (
        1..=i32::MAX,
        any::<bool>(),
        -3..8i32,
        strs,
        req,
        0..128i32,
        proptest::collection::vec(1..=i32::MAX, 0..5),
    )
        .prop_map(
            move |(dump_id, had_dumper, section, s, r, relkind, deps)| TocEntry {
                dump_id,
                had_dumper,
                table_oid: r[0].clone(),
                oid: r[1].clone(),
                tag: s[0].clone(),
                desc: r[2].clone(),
                section,
                defn: s[1].clone(),
                drop_stmt: s[2].clone(),
                copy_stmt: s[3].clone(),
                namespace: s[4].clone(),
                tablespace: s[5].clone(),
                tableam: if version >= ArchiveVersion::V1_14 {
                    s[6].clone()
                } else {
                    TocStr::NULL
                },
                relkind: if version >= ArchiveVersion::V1_16 {
                    relkind
                } else {
                    0
                },
                owner: s[7].clone(),
                with_oids: r[3].clone(),
                deps,
                filename: r[4].clone(),
            },
        )
}

fn toc() -> impl Strategy<Value = Toc> {
    (12u8..=16, prop_oneof![Just(4u8), Just(8u8)]).prop_flat_map(|(minor, int_size)| {
        let version = ArchiveVersion::new(1, minor, 0);
        let compression = if minor >= 15 {
            (0u8..6)
                .prop_map(|c| HeaderCompression::Algorithm(CompressionAlgorithm::from_code(c)))
                .boxed()
        } else {
            (-1i32..10).prop_map(HeaderCompression::GzipLevel).boxed()
        };
        (
            compression,
            proptest::collection::vec(-100i32..3000, 7),
            proptest::collection::vec(toc_str(), 3),
            proptest::collection::vec(entry(version), 0..12),
        )
            .prop_map(move |(compression, t, s, entries)| Toc {
                header: Header {
                    version,
                    int_size,
                    off_size: 8,
                    format: 3,
                    compression,
                    created: CreateTime {
                        sec: t[0],
                        min: t[1],
                        hour: t[2],
                        mday: t[3],
                        mon: t[4],
                        year: t[5],
                        isdst: t[6],
                    },
                    dbname: s[0].clone(),
                    server_version: s[1].clone(),
                    pgdump_version: s[2].clone(),
                },
                entries,
            })
    })
}

proptest! {
    #[test]
    fn arbitrary_tocs_write_then_read_back_equal(toc in toc()) {
        let bytes = toc.to_bytes().unwrap();
        let back = Toc::parse(&bytes).unwrap();
        prop_assert_eq!(&back, &toc);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }
}
