//! Black-box tests of tessera over real HTTP on loopback: one test binary for the whole crate.

mod cli;
mod lifecycle;
mod negative;
mod support;
