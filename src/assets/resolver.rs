//! DID → DDO: `DIDRegistry.getBlockNumberUpdated(did)` gives the block of the latest
//! registration; its `DIDAttributeRegistered` event carries the DDO's URL. A URL of this
//! service's own metadata store is read from the store; any other is fetched under the same
//! rules as user inputs (no loopback/private addresses unless allowed, size and time limits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use serde_json::Value;

use super::metadata::{MetadataStore, Registration};
use super::{AssetError, did};
use crate::chain::call_error;
use crate::chain::contracts::DIDRegistry;
use crate::chain::keeper::Keeper;
use crate::config::Config;

/// The path the metadata store serves DDOs on (Aquarius').
pub const DDO_PATH: &str = "/api/v1/aquarius/assets/ddo";

#[derive(Debug, Clone)]
pub struct Resolved {
    pub did: String,
    pub ddo: Value,
    /// The DID's owner on chain.
    pub owner: Address,
    /// Who registered the DDO's current URL (`_lastUpdatedBy`). Ownership can be handed to
    /// anyone without their consent; registering cannot, so trust decisions look at both.
    pub registrant: Address,
    pub url: String,
}

pub struct Resolver {
    keeper: Arc<Keeper>,
    store: MetadataStore,
    own_prefix: String,
    allow_private: bool,
    timeout: Duration,
    max_bytes: u64,
    cache_for: Duration,
    cache: Mutex<HashMap<B256, (Instant, Resolved)>>,
}

impl Resolver {
    pub fn new(config: &Config, keeper: Arc<Keeper>, store: MetadataStore) -> Self {
        Self {
            keeper,
            store,
            own_prefix: format!(
                "{}{DDO_PATH}/",
                config.chain.public_url.trim_end_matches('/')
            ),
            allow_private: config.inputs.allow_private_addresses,
            timeout: Duration::from_secs(config.chain.ddo_timeout_secs),
            max_bytes: config.chain.ddo_max_kb * 1024,
            cache_for: Duration::from_secs(config.chain.ddo_cache_secs),
            cache: Mutex::default(),
        }
    }

    pub async fn resolve(&self, did_text: &str) -> Result<Resolved, AssetError> {
        let id = did::parse(did_text)
            .ok_or_else(|| AssetError::Invalid(format!("{did_text:?} is not a did:op DID")))?;
        if let Some((at, hit)) = self.cache.lock().unwrap().get(&id)
            && at.elapsed() < self.cache_for
        {
            return Ok(hit.clone());
        }
        let resolved = self.resolve_uncached(id).await?;
        self.cache
            .lock()
            .unwrap()
            .insert(id, (Instant::now(), resolved.clone()));
        Ok(resolved)
    }

    /// Drops a cached resolution (its DDO was just replaced).
    pub fn forget(&self, id: &B256) {
        self.cache.lock().unwrap().remove(id);
    }

    async fn resolve_uncached(&self, id: B256) -> Result<Resolved, AssetError> {
        let did = did::format(&id);
        let (registration, url) = self
            .registration(id)
            .await?
            .ok_or_else(|| AssetError::NotFound(did.clone()))?;
        let ddo = self.fetch(&did, &url).await?;
        if ddo.get("id").and_then(Value::as_str).and_then(did::parse) != Some(id) {
            return Err(AssetError::Fetch {
                did,
                message: format!("the document at {url} describes another DID"),
            });
        }
        Ok(Resolved {
            did,
            ddo,
            owner: registration.owner,
            registrant: registration.registrant,
            url,
        })
    }

    /// The DID's owner, who registered its current URL, and that URL; `None` when the DID is
    /// not registered. Read from the chain every time (no cache).
    pub async fn registration(
        &self,
        id: B256,
    ) -> Result<Option<(Registration, String)>, AssetError> {
        let did = did::format(&id);
        let p = &self.keeper.provider;
        let registry_address = self.keeper.addresses.get("DIDRegistry")?;
        let registry = DIDRegistry::new(registry_address, p);
        let block = registry
            .getBlockNumberUpdated(id)
            .call()
            .await
            .map_err(|e| call_error("resolving the DID", e))?;
        if block.is_zero() {
            return Ok(None);
        }
        let block = block.to::<u64>();
        let filter = Filter::new()
            .address(registry_address)
            .event_signature(DIDRegistry::DIDAttributeRegistered::SIGNATURE_HASH)
            .topic1(id)
            .from_block(block)
            .to_block(block);
        let logs = p
            .get_logs(&filter)
            .await
            .map_err(|e| call_error("reading the DID's registration", e))?;
        let event = logs
            .iter()
            .rev()
            .find_map(|log| log.log_decode::<DIDRegistry::DIDAttributeRegistered>().ok())
            .ok_or_else(|| AssetError::Fetch {
                did: did.clone(),
                message: format!("no DIDAttributeRegistered event at block {block}"),
            })?;
        let url = event.inner.data._value.clone();
        let registrant = event.inner.data._lastUpdatedBy;
        let owner = registry
            .getDIDOwner(id)
            .call()
            .await
            .map_err(|e| call_error("reading the DID owner", e))?;
        Ok(Some((Registration { owner, registrant }, url)))
    }

    async fn fetch(&self, did: &str, url: &str) -> Result<Value, AssetError> {
        let fail = |message: String| AssetError::Fetch {
            did: did.to_string(),
            message,
        };
        if let Some(rest) = url.strip_prefix(&self.own_prefix) {
            return self
                .store
                .get(rest)
                .await?
                .ok_or_else(|| fail(format!("{url} is not in this service's metadata store")));
        }
        let parsed = crate::storage::vet_remote_url(url, self.allow_private)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let bytes =
            crate::storage::fetch_bytes(&parsed, self.max_bytes, self.allow_private, self.timeout)
                .await
                .map_err(|e| fail(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("{url} is not JSON: {e}")))
    }
}
