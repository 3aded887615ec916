//! The manifest and the frame index are untrusted input (format-spec §8): parsing any bytes
//! must return a value or an error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgarc::archive::frame::parse_frame_index;
use pgarc::archive::manifest::{with_checksum, Manifest};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    // Past the checksum: the same bytes as a manifest body with a correct checksum line, so
    // that the TOML and the manifest's own rules are fuzzed too.
    if let Ok(m) = Manifest::parse(&with_checksum(data)) {
        // What parses serialises again and parses to the same value.
        assert_eq!(Manifest::parse(&m.to_bytes()).as_ref(), Ok(&m));
    }
    let _ = parse_frame_index(data);
});
