//! Publishing an asset the Ocean way, as a publisher's tool does it: the file list encrypted
//! to the provider (`services/encrypt`), the DID registered on chain with the provider and the
//! DDO's URL, then the DDO, signed, stored in the metadata store.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::DynProvider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};

use super::did;
use super::resolver::DDO_PATH;
use crate::chain::artifacts::Addresses;

/// What the publisher states about a dataset's compute service.
#[derive(Debug, Clone)]
pub struct DatasetTerms {
    pub name: String,
    /// File locations (file:// under the provider's dataset roots, s3://, https://, ...):
    /// encrypted, never public.
    pub files: Vec<String>,
    pub price: U256,
    pub timeout_secs: u64,
    pub allow_raw_algorithm: bool,
    pub trusted_algorithms: Vec<String>,
    pub allow_network_access: bool,
    /// Each job waits for the publisher's approval (`privacy.requiresApproval`).
    pub requires_approval: bool,
    /// Outputs are held until the publisher releases them (`privacy.reviewOutputs`).
    pub review_outputs: bool,
    /// Every job's results are encrypted to its consumer (`privacy.encryptResults`).
    pub encrypt_results: bool,
    /// A public sample to try algorithms on before buying (uploaded to the service apart).
    pub sample: Vec<crate::assets::ddo::SampleFile>,
    /// `(image, tag)`.
    pub containers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct AlgorithmTerms {
    pub name: String,
    pub file: String,
    pub image: String,
    pub tag: String,
    pub entrypoint: String,
}

pub enum Asset {
    Dataset(DatasetTerms),
    Algorithm(AlgorithmTerms),
}

/// Registers the DID on chain with `publisher`'s key, then publishes through the service at
/// `service` (its encrypt endpoint and metadata store). Returns the DID.
pub async fn publish(
    service: &str,
    chain: &DynProvider,
    addresses: &Addresses,
    publisher: &PrivateKeySigner,
    asset: &Asset,
) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let service = service.trim_end_matches('/');
    let provider = provider_address(&http, service).await?;
    let id = B256::from(rand::random::<[u8; 32]>());
    let did_text = did::format(&id);
    let encrypted_files = encrypt_files(&http, service, &did_text, publisher, asset).await?;
    let ddo_url = format!("{service}{DDO_PATH}/{did_text}");
    let ddo = ddo_of(asset, &did_text, service, publisher, encrypted_files)?;
    // On chain first, then the DDO, as squid-py does: the metadata store accepts a DDO only
    // for a DID registered to its creator.
    let checksum = keccak256(ddo.to_string());
    crate::chain::agreement::register_did(chain, addresses, id, checksum, vec![provider], &ddo_url)
        .await?;
    let res = http
        .post(format!("{service}{DDO_PATH}"))
        .json(&ddo)
        .send()
        .await?;
    if !res.status().is_success() {
        let status = res.status();
        anyhow::bail!(
            "{did_text} is registered on chain, but the metadata store refused its DDO ({status}): {}",
            res.text().await.unwrap_or_default()
        );
    }
    Ok(did_text)
}

/// The provider's address, as the service answers it (it has one only with a chain).
async fn provider_address(http: &reqwest::Client, service: &str) -> anyhow::Result<Address> {
    let info: Value = http
        .get(format!("{service}/api/v1/brizo"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(info["provider-address"]
        .as_str()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{service} runs without a chain; start it with --keeper-url and --artifacts-dir"
            )
        })?
        .parse()?)
}

/// The asset's file locations encrypted to the provider by its encrypt endpoint.
async fn encrypt_files(
    http: &reqwest::Client,
    service: &str,
    did_text: &str,
    publisher: &PrivateKeySigner,
    asset: &Asset,
) -> anyhow::Result<String> {
    let files: Vec<&str> = match asset {
        Asset::Dataset(d) => d.files.iter().map(String::as_str).collect(),
        Asset::Algorithm(a) => vec![a.file.as_str()],
    };
    let list: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, url)| json!({"index": i, "url": url}))
        .collect();
    let encrypted: Value = http
        .post(format!("{service}/api/v1/brizo/services/encrypt"))
        .json(&json!({"documentId": did_text, "document": Value::Array(list).to_string(), "publisherAddress": publisher.address().to_string()}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(encrypted["encryptedDocument"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The asset's DDO, signed by its publisher: the metadata service (with the encrypted files)
/// and, for a dataset, the compute service with its price and policy.
fn ddo_of(
    asset: &Asset,
    did_text: &str,
    service: &str,
    publisher: &PrivateKeySigner,
    encrypted_files: String,
) -> anyhow::Result<Value> {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ddo_url = format!("{service}{DDO_PATH}/{did_text}");
    let mut services = vec![];
    let main = match asset {
        Asset::Dataset(d) => {
            services.push(json!({"type": "compute", "index": 1, "serviceEndpoint": format!("{service}/api/v1/brizo/services/compute"),
                "attributes": {"main": {
                    "name": format!("compute on {}", d.name), "creator": publisher.address().to_string(), "datePublished": now,
                    "price": d.price.to_string(), "timeout": d.timeout_secs, "sample": d.sample,
                    "privacy": {"allowRawAlgorithm": d.allow_raw_algorithm, "trustedAlgorithms": d.trusted_algorithms, "allowNetworkAccess": d.allow_network_access, "requiresApproval": d.requires_approval, "reviewOutputs": d.review_outputs, "encryptResults": d.encrypt_results},
                    "provider": {"type": "Azure", "environment": {"cluster": {"type": "docker"},
                        "supportedContainers": d.containers.iter().map(|(i, t)| json!({"image": i, "tag": t})).collect::<Vec<_>>(),
                        "supportedServers": []}}}}}));
            json!({"type": "dataset", "name": d.name, "author": publisher.address().to_string(), "dateCreated": now,
                   "files": (0..d.files.len()).map(|i| json!({"index": i})).collect::<Vec<_>>()})
        }
        Asset::Algorithm(a) => {
            json!({"type": "algorithm", "name": a.name, "author": publisher.address().to_string(), "dateCreated": now,
            "files": [{"index": 0}],
            "algorithm": {"language": "", "format": "", "version": "", "container": {"entrypoint": a.entrypoint, "image": a.image, "tag": a.tag}}})
        }
    };
    services.insert(0, json!({"type": "metadata", "index": 0, "serviceEndpoint": ddo_url, "attributes": {"main": main, "encryptedFiles": encrypted_files}}));
    let signature = publisher
        .sign_message_sync(did_text.as_bytes())?
        .to_string();
    Ok(json!({
        "@context": "https://w3id.org/did/v1",
        "id": did_text,
        "created": now,
        "publicKey": [{"id": did_text, "type": "EthereumECDSAKey", "owner": publisher.address().to_string()}],
        "service": services,
        "proof": {"type": "DDOIntegritySignature", "created": now, "creator": publisher.address().to_string(), "signatureValue": signature},
    }))
}
