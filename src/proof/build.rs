//! A job's receipt from its record: what was asked, what was staged (digests), what ran
//! (image digest), how it ended, and how the agreement was settled.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::signers::local::PrivateKeySigner;

use super::digest::Digest;
use super::receipt::{
    FORMAT, Receipt, ReceiptAlgorithm, ReceiptApproval, ReceiptEncryption, ReceiptInput,
    ReceiptLimits, ReceiptSettlement, rfc3339,
};
use crate::chain::keeper::Keeper;
use crate::config::Config;
use crate::jobs::Job;
use crate::jobs::model::StagedDigests;
use crate::jobs::workspace::place_inputs;

/// The contracts a verifier needs to find the agreement and the anchor.
const CONTRACTS: [&str; 5] = [
    "AgreementStoreManager",
    "ComputeExecutionCondition",
    "DIDRegistry",
    "EscrowReward",
    "LockRewardCondition",
];

/// `signer` is the address whose key will sign it.
pub fn receipt(
    config: &Config,
    job: &Job,
    keeper: Option<&Keeper>,
    chain_id: Option<u64>,
    logs: Option<Digest>,
    signer: alloy::primitives::Address,
) -> Receipt {
    let staged = job.staged.clone().unwrap_or_default();
    let agreement = job.agreement.as_ref();
    let inputs = inputs_of(job, &staged);
    let contracts = keeper.map(contracts_of).unwrap_or_default();
    let provider = signer.to_string();
    Receipt {
        format: FORMAT.to_string(),
        job_id: job.id.clone(),
        agreement_id: agreement.map(|a| a.agreement_id.clone()),
        chain_id,
        contracts,
        provider,
        consumer: agreement.map(|a| a.consumer.clone()),
        inputs,
        algorithm: ReceiptAlgorithm {
            did: job.request.algorithm.did.clone(),
            raw: job.request.algorithm.rawcode.is_some(),
            size: staged.algorithm.as_ref().map(|d| d.size),
            sha256: staged.algorithm.as_ref().map(|d| d.sha256.clone()),
        },
        image: job.request.image.clone(),
        image_digest: job.image_digest.clone(),
        entrypoint: job.request.entrypoint.clone(),
        limits: ReceiptLimits {
            memory_mb: config.limits.memory_mb,
            millicpus: (config.limits.cpus * 1000.0).round() as u64,
            pids: config.limits.pids,
            tmpfs_mb: config.limits.tmpfs_mb,
            timeout_seconds: job.timeout_secs,
        },
        network: job.request.network,
        user: config.limits.user.clone(),
        started: job.date_started.map(rfc3339),
        finished: job.date_finished.map(rfc3339),
        exit_code: job.exit_code,
        outcome: job
            .outcome
            .map(|o| o.as_str().to_string())
            .unwrap_or_else(|| "failed".into()),
        outputs: job.outputs.clone(),
        logs,
        results_did: job.results_did.clone(),
        settlement: ReceiptSettlement {
            compute_tx: job.settlement.as_ref().and_then(|s| s.compute_tx.clone()),
            state: job.settlement.as_ref().map(|s| s.state.clone()),
            reward_tx: job.settlement.as_ref().and_then(|s| s.tx.clone()),
        },
        approval: job.approval.as_ref().map(decision),
        release: job.release.as_ref().map(decision),
        encryption: job.sealed.as_ref().map(|s| ReceiptEncryption {
            scheme: "brizo-seal-v1".into(),
            recipient: s.recipient.clone(),
            key_sha256: s.key_sha256.clone(),
            logs_plain: s.log_plain.clone(),
        }),
    }
}

/// The job's inputs as placed, with the digests of what was staged. An agreement job's inputs
/// are the dataset's (encrypted) files: named by DID only, never by location.
fn inputs_of(job: &Job, staged: &StagedDigests) -> Vec<ReceiptInput> {
    let agreement = job.agreement.as_ref();
    place_inputs(&job.request.inputs)
        .into_iter()
        .enumerate()
        .map(|(i, placed)| {
            let digest = staged.inputs.get(i).and_then(Option::as_ref);
            ReceiptInput {
                did: agreement.map(|a| a.did.clone()),
                source: match agreement {
                    Some(_) => None,
                    None => url::Url::parse(&placed.url)
                        .ok()
                        .map(|u| crate::storage::redact(&u)),
                },
                name: placed.name,
                index: placed.index,
                size: digest.map(|d| d.size),
                sha256: digest.map(|d| d.sha256.clone()),
            }
        })
        .collect()
}

/// The addresses of the keeper contracts the agreement lives in.
fn contracts_of(keeper: &Keeper) -> BTreeMap<String, String> {
    CONTRACTS
        .iter()
        .filter_map(|c| {
            keeper
                .addresses
                .get(c)
                .ok()
                .map(|a| (c.to_string(), a.to_string()))
        })
        .collect()
}

fn decision(a: &crate::jobs::model::Approval) -> ReceiptApproval {
    ReceiptApproval {
        state: serde_json::to_value(a.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        by: a.by.clone(),
        at: a.at.map(rfc3339),
        algorithm_sha256: a.algorithm_sha256.clone(),
        reason: a.reason.clone(),
        image_digest: a.image_digest.clone(),
    }
}

/// The key that signs receipts when the service runs without a chain: made once, kept in the
/// data folder (mode 0600).
pub fn node_key(data_dir: &Path) -> std::io::Result<PrivateKeySigner> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("node.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text.trim().parse().map_err(|_| {
            std::io::Error::other(format!("{} is not a private key", path.display()))
        });
    }
    let key = PrivateKeySigner::random();
    std::fs::create_dir_all(data_dir)?;
    // create_new: if another process made one meanwhile, theirs wins and is read back.
    use std::io::Write;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(hex::encode(key.to_bytes()).as_bytes())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => node_key(data_dir),
        Err(e) => Err(e),
    }
}
