//! The login and refresh request bodies (JSON and form-encoded).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzzing::bodies(data));
