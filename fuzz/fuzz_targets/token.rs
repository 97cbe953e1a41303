//! Token parsing and verification, opaque and JWS (with claims).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzzing::token(data));
