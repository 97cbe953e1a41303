//! Black-box tests of tessera over real HTTP on loopback: one test binary for the whole crate.

// Test code may panic on what it does not expect: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod cli;
mod interop;
mod keys;
mod lifecycle;
mod negative;
mod support;
