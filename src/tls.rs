//! The TLS of every HTTPS client in the process (reqwest for inputs and Squid, alloy's RPC
//! transport, object_store's cloud stores): rustls on aws-lc-rs, installed once at start.
//!
//! aws-lc-rs is rustls' own default and the provider with post-quantum key exchange: the
//! hybrid X25519MLKEM768 group comes first in its list, so a server that speaks it (S3, Azure
//! and Google's front ends do) agrees a key a recording adversary cannot later recover with a
//! quantum computer; servers that don't fall back to X25519. The ring provider, which brizo
//! used for its faster build, has no such group (rustls 0.23.48 deprecated it for that).
//! reqwest is built without a provider of its own, and the process may link more than one, so
//! the process names its provider before its first client: `main` calls [`install`] first
//! thing.

/// Makes aws-lc-rs the process's rustls provider. Harmless when one is installed already.
pub fn install() {
    // Err only when a provider is installed already (a second call): that one stays.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    /// The provider installed offers the hybrid post-quantum group first, so a handshake
    /// with a server that supports it uses it.
    #[test]
    fn the_process_prefers_post_quantum_key_exchange() {
        super::install();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let first = provider.kx_groups.first().expect("key exchange groups");
        assert_eq!(first.name(), rustls::NamedGroup::X25519MLKEM768);
        assert!(
            provider
                .kx_groups
                .iter()
                .any(|g| g.name() == rustls::NamedGroup::X25519),
            "a classical fallback for servers without it"
        );
    }
}
