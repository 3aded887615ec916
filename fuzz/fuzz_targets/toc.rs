//! toc.dat is untrusted input (format-spec §8.1): parsing any bytes must return a value or an
//! error, never panic or allocate without bound. What parses must write and parse back to the
//! same value, and list without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgarc::archive::toc::Toc;

fuzz_target!(|data: &[u8]| {
    if let Ok(toc) = Toc::parse(data) {
        if let Ok(bytes) = toc.to_bytes() {
            assert_eq!(Toc::parse(&bytes).as_ref().ok(), Some(&toc));
        }
        let mut listing = Vec::new();
        let _ = pgarc::archive::list::write_listing(&toc, &mut listing);
    }
});
