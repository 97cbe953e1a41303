//! The Cookie and Authorization headers as the session extractor reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzzing::cookie(data));
