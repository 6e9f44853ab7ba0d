//! brizo: a publisher's compute-to-data agent. See README.md.

pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod authorize;
pub mod backends;
pub mod chain;
pub mod cli;
pub mod client;
pub mod config;
pub mod jobs;
pub mod memory;
pub mod proof;
pub mod seal;
pub mod squid;
pub mod storage;
pub mod terraform;
pub mod tls;
pub mod trial;
