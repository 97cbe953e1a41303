//! The forward-auth access rules: path normaliser, host reading and method overrides.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzzing::access(data));
