//! The TLS of every HTTPS client in the process (reqwest for inputs and Squid, alloy's RPC
//! transport, object_store's cloud stores): rustls on ring, installed once at start.
//!
//! The crates' default TLS would be rustls on aws-lc-rs, whose C build is the slowest part of
//! a cold `cargo build`; ring builds in a fraction of that and is what rustls used for years.
//! reqwest is built without a provider of its own, so the process must name one before its
//! first client: `main` calls [`install`] first thing.

/// Makes ring the process's rustls provider. Harmless when one is installed already.
pub fn install() {
    // Err only when a provider is installed already (a second call): that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
