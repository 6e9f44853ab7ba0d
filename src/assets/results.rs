//! A job's results as a new asset owned by its consumer (`output.publishOutput`): a dataset
//! DDO whose provenance names the source dataset, the algorithm, the agreement and the job;
//! its file locations (in the results store) encrypted to the provider like any dataset's.
//! Idempotent: the DID is derived from the job id, and each step checks what is done.

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::SignerSync;
use serde_json::json;

use super::did;
use super::metadata::MetadataStore;
use super::resolver::DDO_PATH;
use crate::chain::contracts::DIDRegistry;
use crate::chain::keeper::Keeper;
use crate::config::Config;
use crate::jobs::Job;
use crate::storage::ResultsStore;

pub fn results_did(job_id: &str) -> B256 {
    keccak256(format!("brizo-results:{job_id}"))
}

pub async fn publish(
    config: &Config,
    keeper: &Keeper,
    metadata: &MetadataStore,
    results: &ResultsStore,
    job: &Job,
) -> anyhow::Result<String> {
    let agreement = job
        .agreement
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("only agreement jobs publish results"))?;
    let consumer: Address = agreement.consumer.parse()?;
    let id = results_did(&job.id);
    let did_text = did::format(&id);
    let base = config.chain.public_url.trim_end_matches('/');
    let ddo_url = format!("{base}{DDO_PATH}/{did_text}");
    let files: Vec<serde_json::Value> =
        job.outputs.iter().enumerate().map(|(i, o)| json!({"index": i, "url": results.location(&job.id, &format!("outputs/{}", o.name))})).collect();
    let encrypted = keeper.encrypt(serde_json::Value::Array(files).to_string().as_bytes())?;
    let created = crate::proof::receipt::rfc3339(
        job.date_finished
            .unwrap_or_else(crate::jobs::model::now_epoch),
    );
    let provider = keeper.address.to_string();
    let ddo = json!({
        "@context": "https://w3id.org/did/v1",
        "id": did_text,
        "created": created,
        "publicKey": [{"id": did_text, "type": "EthereumECDSAKey", "owner": consumer.to_string()}],
        "service": [{
            "type": "metadata", "index": 0, "serviceEndpoint": ddo_url,
            "attributes": {
                "main": {"type": "dataset", "name": format!("results of compute job {}", job.id), "author": provider, "dateCreated": created,
                         "files": job.outputs.iter().enumerate().map(|(i, o)| json!({"index": i, "name": o.name, "contentLength": o.size, "checksum": o.sha256, "checksumType": "sha256"})).collect::<Vec<_>>()},
                "encryptedFiles": format!("0x{}", hex::encode(encrypted)),
                "additionalInformation": {"provenance": {
                    "sourceDatasets": [agreement.did],
                    "algorithm": {"did": job.request.algorithm.did, "sha256": job.staged.as_ref().and_then(|s| s.algorithm.as_ref()).map(|d| d.sha256.clone())},
                    "agreementId": agreement.agreement_id, "jobId": job.id, "image": job.request.image, "imageDigest": job.image_digest,
                    "provider": provider}},
            }
        }],
        "proof": {"type": "DDOIntegritySignature", "created": created, "creator": provider,
                  "signatureValue": keeper.signer().sign_message_sync(did_text.as_bytes())?.to_string()},
    });
    metadata.publish(&ddo).await?;
    let registry = DIDRegistry::new(keeper.addresses.get("DIDRegistry")?, &keeper.provider);
    let owner = registry.getDIDOwner(id).call().await?;
    if owner != consumer {
        if owner == Address::ZERO {
            keeper
                .register_did(id, keccak256(ddo.to_string()), &ddo_url)
                .await?;
        }
        keeper.transfer_did(id, consumer).await?;
    }
    Ok(did_text)
}
