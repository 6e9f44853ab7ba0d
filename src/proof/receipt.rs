//! The receipt: what ran (image digest, algorithm, inputs), how it ended (exit code, outcome,
//! outputs, logs) and under which agreement, in RFC 8785 canonical JSON, hashed with
//! keccak256 and signed by the provider (EIP-191 over the 32-byte hash).

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use crate::jobs::model::OutputFile;

pub const FORMAT: &str = "brizo-receipt/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub format: String,
    pub job_id: String,
    pub agreement_id: Option<String>,
    pub chain_id: Option<u64>,
    /// Keeper contract addresses (empty without a chain).
    pub contracts: BTreeMap<String, String>,
    /// The signer: the provider's address.
    pub provider: String,
    pub consumer: Option<String>,
    pub inputs: Vec<ReceiptInput>,
    pub algorithm: ReceiptAlgorithm,
    pub image: String,
    pub image_digest: Option<String>,
    pub entrypoint: String,
    pub limits: ReceiptLimits,
    pub network: bool,
    pub user: String,
    /// RFC 3339, UTC.
    pub started: Option<String>,
    pub finished: Option<String>,
    pub exit_code: Option<i64>,
    pub outcome: String,
    pub outputs: Vec<OutputFile>,
    pub logs: Option<Digest>,
    /// The results' own asset, when they were published as one.
    pub results_did: Option<String>,
    pub settlement: ReceiptSettlement,
    /// The publisher's decision, for a job whose dataset asks for approval (absent otherwise,
    /// so that receipts of jobs without one read as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ReceiptApproval>,
    /// The publisher's review of the outputs (`approved`: released, `rejected`: withheld),
    /// for a job whose dataset reviews them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReceiptApproval>,
    /// For results encrypted to the consumer: to whom, the sealed key's hash, and the log's
    /// plaintext digest (`logs` and `outputs[].sha256` are the ciphertexts';
    /// `outputs[].plainSha256` the plaintexts').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ReceiptEncryption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptEncryption {
    /// `brizo-seal-v1`: docs/encryption.md.
    pub scheme: String,
    /// The consumer's public key (SEC1, hex).
    pub recipient: String,
    pub key_sha256: String,
    pub logs_plain: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptApproval {
    /// `approved` or `rejected`.
    pub state: String,
    pub by: Option<String>,
    /// RFC 3339, UTC.
    pub at: Option<String>,
    /// sha256 of the algorithm approved.
    pub algorithm_sha256: Option<String>,
    pub reason: Option<String>,
    /// The image's digest when approved (absent where the backend cannot tell it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptInput {
    /// Folder under /data/inputs and the file's number in it.
    pub name: String,
    pub index: usize,
    /// The dataset's DID when the input came from one.
    pub did: Option<String>,
    /// The location, only when it is not secret (operator jobs; never a DDO's encrypted files).
    pub source: Option<String>,
    /// Absent when the input was never staged (the job failed before).
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptAlgorithm {
    pub did: Option<String>,
    /// True when the code came as raw code in the request.
    pub raw: bool,
    /// Absent when the algorithm was never staged.
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptLimits {
    pub memory_mb: u64,
    /// Thousandths of a CPU (integers keep the canonical form simple).
    pub millicpus: u64,
    pub pids: i64,
    pub tmpfs_mb: u64,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptSettlement {
    pub compute_tx: Option<String>,
    pub state: Option<String>,
    pub reward_tx: Option<String>,
}

/// The receipt with its hash and signature, and where its hash is anchored (not signed:
/// the anchor is made after signing, and verification reads it from the chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// 0x keccak256 of the receipt's RFC 8785 canonical JSON.
    pub hash: String,
    /// EIP-191 personal_sign of the 32 hash bytes by `receipt.provider`.
    pub signature: String,
    pub anchor: Option<Anchor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Anchor {
    /// The DID registered for this receipt: its checksum is the receipt hash.
    pub did: String,
    pub tx: Option<String>,
}

pub fn canonical(receipt: &Receipt) -> Vec<u8> {
    serde_jcs::to_vec(receipt).expect("receipts serialize")
}

pub fn hash(receipt: &Receipt) -> B256 {
    keccak256(canonical(receipt))
}

pub fn sign(receipt: Receipt, key: &PrivateKeySigner) -> SignedReceipt {
    let h = hash(&receipt);
    let signature = key
        .sign_message_sync(h.as_slice())
        .expect("local signing")
        .to_string();
    SignedReceipt {
        receipt,
        hash: h.to_string(),
        signature,
        anchor: None,
    }
}

/// The DID a job's receipt is anchored under: keccak256("brizo-receipt:" + job id).
pub fn anchor_did(job_id: &str) -> B256 {
    keccak256(format!("brizo-receipt:{job_id}"))
}

pub fn signer_of(signed: &SignedReceipt) -> Option<Address> {
    let h: B256 = signed.hash.parse().ok()?;
    let sig: alloy::primitives::Signature = signed.signature.parse().ok()?;
    sig.recover_address_from_msg(h.as_slice()).ok()
}

pub fn rfc3339(epoch: f64) -> String {
    chrono::DateTime::from_timestamp_millis((epoch * 1000.0) as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
