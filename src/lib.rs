//! profiled: per-account AI-assistant profiles on a shared Linux host.
//!
//! The daemon (`profiled`) and its client (`profilectl`) share this library.
//! Each module has one job; see `docs/` and DESIGN.md for the whole picture.

pub mod accounts;
pub mod agents;
pub mod api;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod builtin;
pub mod client;
pub mod config;
pub mod creds;
pub mod daemon;
pub mod fdlimit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod logging;
pub mod manpages;
pub mod metrics;
pub mod organize;
pub mod profile;
pub mod search;
pub mod server;
pub mod service;
pub mod statefs;
pub mod store;
pub mod timefmt;
pub mod usage;
pub mod watch;
