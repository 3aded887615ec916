//! The manifest and the frame index are untrusted input (format-spec §8): parsing any bytes
//! must return a value or an error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgarc::archive::frame::parse_frame_index;
use pgarc::archive::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        // What parses serialises again and parses to the same value.
        assert_eq!(Manifest::parse(&m.to_bytes()).as_ref(), Ok(&m));
    }
    let _ = parse_frame_index(data);
});
