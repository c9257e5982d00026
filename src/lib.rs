//! profiled: per-account AI-assistant profiles on a shared Linux host.
//!
//! The daemon (`profiled`) and its client (`profilectl`) share this library.
//! Each module has one job; docs/DESIGN.md is the map of the whole. A
//! comment's "rule N" is a security rule of docs/SECURITY.md, where each is
//! written down with its threat, its mechanism and the tests that prove it.

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
