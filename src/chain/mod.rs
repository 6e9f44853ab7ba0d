//! The chain side: the Ocean keeper contracts (alloy), a local development chain, and the
//! provider's view of agreements.

pub mod agreement;
pub mod artifacts;
pub mod contracts;
pub mod deploy;
pub mod dev;
pub mod keeper;
mod keystore;

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

/// One error type for everything that talks to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node does not answer; retrying later can help.
    #[error("chain node unreachable: {0}")]
    Unreachable(String),
    /// A deployment, artifact or key that cannot be used as configured.
    #[error("{0}")]
    Config(String),
    /// A transaction was refused or reverted.
    #[error("{what}: {message}")]
    Transaction { what: String, message: String },
}

/// How long a sent transaction may take to be mined before we give up waiting (it may still
/// be mined; callers re-check state before sending again).
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A provider that signs with `key` (hex private key).
pub fn signing_provider(
    url: &str,
    key: &str,
) -> Result<(DynProvider, alloy::primitives::Address), ChainError> {
    let signer: PrivateKeySigner = key.trim().parse().map_err(|_| {
        ChainError::Config("not a valid private key (expected 32 bytes of hex)".into())
    })?;
    let address = signer.address();
    let url = url
        .parse()
        .map_err(|e| ChainError::Config(format!("keeper URL {url:?}: {e}")))?;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased();
    Ok((provider, address))
}

/// A read-only provider.
pub fn provider(url: &str) -> Result<DynProvider, ChainError> {
    let url = url
        .parse()
        .map_err(|e| ChainError::Config(format!("keeper URL {url:?}: {e}")))?;
    Ok(ProviderBuilder::new().connect_http(url).erased())
}

/// Classifies a failed call: transport trouble is retryable, the rest is the call's fault.
pub fn call_error(what: &str, e: impl std::fmt::Display) -> ChainError {
    let message = e.to_string();
    let lower = message.to_lowercase();
    if lower.contains("error sending request")
        || lower.contains("connection refused")
        || lower.contains("timed out")
        || lower.contains("transport")
    {
        ChainError::Unreachable(format!("{what}: {message}"))
    } else {
        ChainError::Transaction {
            what: what.to_string(),
            message,
        }
    }
}

/// Sends a contract call, waits for its receipt and checks that it succeeded.
#[macro_export]
macro_rules! send_tx {
    ($call:expr, $what:expr) => {{
        let what: &str = &$what;
        let pending = $call
            .send()
            .await
            .map_err(|e| $crate::chain::call_error(what, e))?;
        let receipt = pending
            .with_timeout(Some($crate::chain::RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| $crate::chain::call_error(what, e))?;
        if !receipt.status() {
            return Err($crate::chain::ChainError::Transaction {
                what: what.to_string(),
                message: format!("reverted in {}", receipt.transaction_hash),
            });
        }
        receipt
    }};
}

/// Waits until the node answers (a freshly started one takes a moment).
pub async fn wait_for_node(provider: &DynProvider, patience: Duration) -> Result<u64, ChainError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match provider.get_chain_id().await {
            Ok(id) => return Ok(id),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ChainError::Unreachable(e.to_string()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
