//! The provider's connection to a keeper deployment: its key, the contract addresses, and
//! transactions sent one at a time (so nonces never collide between jobs settling at once).

use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use super::agreement::{self, ConditionIds, Refusal, Terms};
use super::artifacts::Addresses;
use super::{ChainError, call_error};
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
        let addresses = Addresses::from_config(config)?;
        let signer = load_key(
            std::env::var("BRIZO_PROVIDER_KEY").ok(),
            &config.keystore_file,
            std::env::var("BRIZO_PROVIDER_KEY_PASSWORD").ok(),
        )?;
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
        self.provider
            .get_chain_id()
            .await
            .map_err(|e| call_error("reading the chain id", e))
    }

    /// The provider's public key, uncompressed (65 bytes), for ECIES.
    pub fn public_key(&self) -> Vec<u8> {
        self.signer
            .credential()
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Encrypts to the provider's key (what `services/encrypt` hands publishers).
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, ChainError> {
        ecies::encrypt(&self.public_key(), plain)
            .map_err(|e| ChainError::Config(format!("encryption failed: {e}")))
    }

    /// Decrypts what was encrypted to the provider's key.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, ChainError> {
        ecies::decrypt(&self.signer.to_bytes().0, cipher).map_err(|_| {
            ChainError::Config("cannot decrypt: not encrypted to this provider's key".into())
        })
    }

    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// Refuses to send while an earlier transaction of the provider is still pending: after a
    /// receipt timeout or a crash, its effect is not on chain yet, so a state check would let
    /// the same transaction go out twice. Retrying later (once it is mined) is safe.
    async fn nothing_pending(&self) -> Result<(), ChainError> {
        let pending = self
            .provider
            .get_transaction_count(self.address)
            .pending()
            .await
            .map_err(|e| call_error("reading the nonce", e))?;
        let mined = self
            .provider
            .get_transaction_count(self.address)
            .latest()
            .await
            .map_err(|e| call_error("reading the nonce", e))?;
        if pending > mined {
            return Err(ChainError::Unreachable(format!(
                "{} transaction(s) of the provider still pending; waiting for them before sending more",
                pending - mined
            )));
        }
        Ok(())
    }

    pub async fn check(&self, terms: &Terms) -> Result<Result<ConditionIds, Refusal>, ChainError> {
        agreement::check(&self.provider, &self.addresses, terms).await
    }

    pub async fn fulfill_compute(
        &self,
        terms: &Terms,
        ids: &ConditionIds,
    ) -> Result<Option<B256>, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        self.nothing_pending().await?;
        agreement::fulfill_compute(&self.provider, &self.addresses, terms, ids).await
    }

    pub async fn release_reward(
        &self,
        terms: &Terms,
        ids: &ConditionIds,
    ) -> Result<Option<B256>, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        self.nothing_pending().await?;
        agreement::release_reward(&self.provider, &self.addresses, terms, ids).await
    }

    /// Registers `did` with `checksum` unless it already carries it (receipt anchors).
    pub async fn anchor(
        &self,
        did: B256,
        checksum: B256,
        url: &str,
    ) -> Result<Option<B256>, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        self.nothing_pending().await?;
        let registry =
            super::contracts::DIDRegistry::new(self.addresses.get("DIDRegistry")?, &self.provider);
        let current = registry
            .getDIDRegister(did)
            .call()
            .await
            .map_err(|e| call_error("reading the anchor", e))?;
        if current.lastChecksum == checksum {
            return Ok(None);
        }
        agreement::register_did(
            &self.provider,
            &self.addresses,
            did,
            checksum,
            vec![self.address],
            url,
        )
        .await
        .map(Some)
    }

    pub async fn transfer_did(&self, did: B256, to: Address) -> Result<B256, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        self.nothing_pending().await?;
        let registry =
            super::contracts::DIDRegistry::new(self.addresses.get("DIDRegistry")?, &self.provider);
        let receipt = crate::send_tx!(
            registry.transferDIDOwnership(did, to),
            "transferring the results DID"
        );
        Ok(receipt.transaction_hash)
    }

    pub async fn register_did(
        &self,
        did: B256,
        checksum: B256,
        url: &str,
    ) -> Result<B256, ChainError> {
        let _one_at_a_time = self.transactions.lock().await;
        self.nothing_pending().await?;
        agreement::register_did(
            &self.provider,
            &self.addresses,
            did,
            checksum,
            vec![self.address],
            url,
        )
        .await
    }
}

/// The provider key: `BRIZO_PROVIDER_KEY` (hex), else the keystore file decrypted with
/// `BRIZO_PROVIDER_KEY_PASSWORD`. Errors never include the key.
fn load_key(
    env_key: Option<String>,
    keystore: &Path,
    password: Option<String>,
) -> Result<PrivateKeySigner, ChainError> {
    if let Some(hex_key) = env_key {
        return hex_key.trim().parse().map_err(|_| {
            ChainError::Config(
                "BRIZO_PROVIDER_KEY is not a valid private key (32 bytes of hex)".into(),
            )
        });
    }
    if keystore.as_os_str().is_empty() {
        return Err(ChainError::Config("no provider key: set BRIZO_PROVIDER_KEY, or chain.keystore_file and BRIZO_PROVIDER_KEY_PASSWORD".into()));
    }
    let password = password.ok_or_else(|| {
        ChainError::Config(
            "chain.keystore_file is set but BRIZO_PROVIDER_KEY_PASSWORD is not".into(),
        )
    })?;
    let failed = |e: String| ChainError::Config(format!("keystore {} {e}", keystore.display()));
    let key = super::keystore::decrypt(keystore, &password).map_err(failed)?;
    PrivateKeySigner::from_slice(&key)
        .map_err(|_| failed("holds bytes that are not a secp256k1 private key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

    /// The key in the Web3 Secret Storage Definition's PBKDF2 test vector.
    const SPEC_KEY: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";

    #[test]
    fn keys_come_from_the_environment_or_an_encrypted_keystore() {
        let from_env = load_key(Some(format!("0x{SPEC_KEY}")), Path::new(""), None).unwrap();
        // The Web3 Secret Storage Definition's PBKDF2 test vector (src/chain/keystore.rs).
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keystores/spec-pbkdf2.json");
        let from_keystore = load_key(None, &file, Some("testpassword".into())).unwrap();
        assert_eq!(from_env.address(), from_keystore.address());
        let wrong = load_key(None, &file, Some("wrong".into()))
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("keystore") && !wrong.contains(SPEC_KEY) && wrong.contains("password"),
            "{wrong}"
        );
        let bad = load_key(Some("0xnot-a-key".into()), Path::new(""), None)
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("BRIZO_PROVIDER_KEY") && !bad.contains("not-a-key"),
            "{bad}"
        );
        assert!(
            load_key(None, &file, None)
                .unwrap_err()
                .to_string()
                .contains("BRIZO_PROVIDER_KEY_PASSWORD")
        );
        assert!(
            load_key(None, Path::new(""), None)
                .unwrap_err()
                .to_string()
                .contains("no provider key")
        );
    }

    #[test]
    fn what_is_encrypted_to_the_provider_only_it_decrypts() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let public = signer
            .credential()
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let cipher = ecies::encrypt(&public, b"[{\"url\": \"file:///secret.csv\"}]").unwrap();
        assert!(!String::from_utf8_lossy(&cipher).contains("secret"));
        assert_eq!(
            ecies::decrypt(&signer.to_bytes().0, &cipher).unwrap(),
            b"[{\"url\": \"file:///secret.csv\"}]"
        );
        let other = PrivateKeySigner::random();
        assert!(ecies::decrypt(&other.to_bytes().0, &cipher).is_err());
    }
}
