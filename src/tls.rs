//! The TLS of every HTTPS client in the process (reqwest for inputs and Squid, alloy's RPC
//! transport, object_store's cloud stores): rustls on aws-lc-rs, installed once at start.
//!
//! aws-lc-rs is rustls' own default and the provider with post-quantum key exchange: the
//! hybrid X25519MLKEM768 group comes first in its list, so a server that speaks it agrees a
//! key a recording adversary cannot later recover with a quantum computer; with a server that
//! does not, the handshake falls back to a classical group (X25519, whose key share the client
//! sends beside the hybrid one, for most). The ring provider, which brizo used for its faster
//! build, has no such group (rustls 0.23.48 deprecated it for that).
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
    use std::sync::Arc;

    use rustls::NamedGroup;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A self-signed certificate for `localhost` (P-256, valid until 2126) and its key, made
    /// with `openssl req -x509` for this test only.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATigAwIBAgIUK+hW11eeSuXyDe+XW4wR7SXN13cwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzE1NDc0MVoYDzIxMjYxMTEz
MTU0NzQxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR00Fy7j+d72wKmyDL/qCrvrSBHnD/kf3QMaQabfFmkiIUiz7Z8baEO
rQ2gda909GgbKj94EaySJPRKETRr4rzIo2YwZDAdBgNVHQ4EFgQUoLiq/pny0iyK
wtMBFJa7wm1CohUwHwYDVR0jBBgwFoAUoLiq/pny0iyKwtMBFJa7wm1CohUwFAYD
VR0RBA0wC4IJbG9jYWxob3N0MAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0EAwIDRwAw
RAIgfAI9+QZNEO7vpEnUCEv0A0GRmYz42dmkcWFcUgQTHzYCIFAw+wk1mOuxM6QV
MXQZ9u/1TPBdhHvNxeis8BUTP5j5
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2RFxxe9m4s8HWIze
E7TWAwZ1U6ER2y7iilGTluX3xZ2hRANCAAR00Fy7j+d72wKmyDL/qCrvrSBHnD/k
f3QMaQabfFmkiIUiz7Z8baEOrQ2gda909GgbKj94EaySJPRKETRr4rzI
-----END PRIVATE KEY-----
";

    /// The provider installed offers the hybrid post-quantum group first, and X25519 for
    /// servers without it.
    #[test]
    fn the_process_prefers_post_quantum_key_exchange() {
        super::install();
        let provider = CryptoProvider::get_default().expect("installed");
        let groups: Vec<NamedGroup> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups.first(),
            Some(&NamedGroup::X25519MLKEM768),
            "{groups:?}"
        );
        assert!(groups.contains(&NamedGroup::X25519), "{groups:?}");
    }

    /// An HTTPS request from a reqwest client, built as the service builds its own (no
    /// provider of reqwest's: the process's), agrees X25519MLKEM768 with a server that offers
    /// it. With ring, the provider before, the same handshake agreed X25519.
    #[tokio::test]
    async fn an_https_request_agrees_a_post_quantum_key() {
        super::install();
        let provider = CryptoProvider::get_default().expect("installed").clone();
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let group = tls
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .map(|g| g.name());
            // The request's head, then a whole answer.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tls.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
            tls.shutdown().await.unwrap();
            group
        });
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(CERT.as_bytes()).unwrap())
            .resolve("localhost", addr)
            .no_proxy()
            .build()
            .unwrap();
        let body = client
            .get(format!("https://localhost:{}/", addr.port()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        assert_eq!(server.await.unwrap(), Some(NamedGroup::X25519MLKEM768));
    }
}
