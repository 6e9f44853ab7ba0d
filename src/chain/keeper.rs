//! The provider's connection to a keeper deployment: its key, the contract addresses, and
//! transactions sent one at a time (so nonces never collide between jobs settling at once).

use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use super::agreement::{self, ConditionIds, Refusal, Terms};
use super::artifacts::Addresses;
use super::{call_error, ChainError};
use crate::config::ChainConfig;

pub struct Keeper {
    pub url: String,
    pub provider: DynProvider,
    /// The provider's address (its key signs transactions and decrypts file locations).
    pub address: Address,
    pub addresses: Addresses,
    pub network: String,
    signer: PrivateKeySigner,
    transactions: tokio::sync::Mutex<()>,
}

impl Keeper {
    /// `None` when no keeper URL is configured. The node need not answer yet.
    pub fn connect(config: &ChainConfig) -> Result<Option<Keeper>, ChainError> {
        if config.keeper_url.is_empty() {
            return Ok(None);
        }
        if config.artifacts_dir.as_os_str().is_empty() {
            return Err(ChainError::Config("chain.keeper_url is set but chain.artifacts_dir is not (--artifacts-dir)".into()));
        }
        let addresses = Addresses::load(&config.artifacts_dir, &config.network)?;
        let signer = load_key(&config.keystore_file)?;
        let key = hex::encode(signer.to_bytes());
        let (provider, address) = super::signing_provider(&config.keeper_url, &key)?;
        Ok(Some(Keeper {
            url: config.keeper_url.clone(),
            provider,
            address,
            addresses,
            network: config.network.clone(),
            signer,
            transactions: Default::default(),
        }))
    }

    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.provider.get_chain_id().await.map_err(|e| call_error("reading the chain id", e))
    }

    /// The provider's public key, uncompressed (65 bytes), for ECIES.
    pub fn public_key(&self) -> Vec<u8> {
        self.signer.credential().verifying_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// Encrypts to the provider's key (what `services/encrypt` hands publishers).
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, ChainError> {
        ecies::encrypt(&self.public_key(), plain).map_err(|e| ChainError::Config(format!("encryption failed: {e}")))
    }

    /// Decrypts what was encrypted to the provider's key.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, ChainError> {
        ecies::decrypt(&self.signer.to_bytes().0, cipher).map_err(|_| ChainError::Config("cannot decrypt: not encrypted to this provider's key".into()))
    }

    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    pub async fn check(&self, terms: &Terms) -> Result<Result<ConditionIds, Refusal>, ChainError> {
        agreement::check(&self.provider, &self.addresses, terms).await
    }

    pub async fn fulfill_compute(&self, terms: &Terms, ids: &ConditionIds) -> Result<Option<B256>, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        agreement::fulfill_compute(&self.provider, &self.addresses, terms, ids).await
    }

    pub async fn release_reward(&self, terms: &Terms, ids: &ConditionIds) -> Result<Option<B256>, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        agreement::release_reward(&self.provider, &self.addresses, terms, ids).await
    }

    pub async fn register_did(&self, did: B256, checksum: B256, url: &str) -> Result<B256, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        agreement::register_did(&self.provider, &self.addresses, did, checksum, vec![self.address], url).await
    }
}

/// The provider key: `BRIZO_PROVIDER_KEY` (hex), else the keystore file decrypted with
/// `BRIZO_PROVIDER_KEY_PASSWORD`. Errors never include the key.
fn load_key(keystore: &Path) -> Result<PrivateKeySigner, ChainError> {
    if let Ok(hex_key) = std::env::var("BRIZO_PROVIDER_KEY") {
        return hex_key.trim().parse().map_err(|_| ChainError::Config("BRIZO_PROVIDER_KEY is not a valid private key (32 bytes of hex)".into()));
    }
    if keystore.as_os_str().is_empty() {
        return Err(ChainError::Config("no provider key: set BRIZO_PROVIDER_KEY, or chain.keystore_file and BRIZO_PROVIDER_KEY_PASSWORD".into()));
    }
    let password = std::env::var("BRIZO_PROVIDER_KEY_PASSWORD")
        .map_err(|_| ChainError::Config("chain.keystore_file is set but BRIZO_PROVIDER_KEY_PASSWORD is not".into()))?;
    PrivateKeySigner::decrypt_keystore(keystore, password)
        .map_err(|e| ChainError::Config(format!("keystore {}: {e}", keystore.display())))
}
