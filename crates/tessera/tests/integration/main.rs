//! Black-box tests of tessera over real HTTP on loopback: one test binary for the whole crate.

// Test code may panic on what it does not expect: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod admin;
mod attacks;
mod audit;
mod backends;
mod browser;
mod cdp;
mod cli;
mod dbsc;
mod differential;
mod docs;
mod dpop;
mod external;
mod factors;
mod forward_auth;
mod interop;
mod keys;
mod lifecycle;
mod negative;
mod ops;
mod pages;
mod passkeys;
mod proxies;
mod round_trips;
mod scaleout;
mod startup;
mod support;
mod token_cache;
