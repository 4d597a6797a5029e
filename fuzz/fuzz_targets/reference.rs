//! Image references: any string parses or is refused with an error (never a
//! panic), and whatever parses prints as a string that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_registry::{ImageRef, Reference};

fuzz_target!(|input: &str| {
    if let Ok(image) = input.parse::<ImageRef>() {
        let printed = image.to_string();
        let again: ImageRef = printed.parse().unwrap_or_else(|e| {
            panic!("{input:?} parsed, printed as {printed:?}, which fails: {e}")
        });
        assert_eq!(again, image, "{input:?} → {printed:?} does not round-trip");
    }
    if let Ok(reference) = input.parse::<Reference>() {
        let printed = reference.to_string();
        let again: Reference = printed.parse().unwrap_or_else(|e| {
            panic!("{input:?} parsed, printed as {printed:?}, which fails: {e}")
        });
        assert_eq!(
            again, reference,
            "{input:?} → {printed:?} does not round-trip"
        );
        let _ = reference.manifest_reference();
        let _ = reference.api_host();
    }
});
