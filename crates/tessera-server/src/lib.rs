//! tessera's server: the service layer ([`service`], no HTTP) and the HTTP API ([`http`]),
//! plus configuration, TLS, the runner and the [`Builder`] that assembles them.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(unreachable_pub)]

pub mod access;
pub mod builder;
pub mod clock;
pub mod config;
mod connection;
pub mod http;
pub mod master_key;
pub mod metrics;
pub mod serve;
pub mod service;
pub mod shutdown;
pub mod tls;

pub use builder::{Builder, Server};
pub use config::Config;
pub use service::Tessera;
