//! Checking a receipt, as anyone can: the hash of its canonical form, the provider's
//! signature, the outputs and logs one holds, and the anchor on chain. The first mismatch is
//! named.

use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::DynProvider;

use super::digest;
use super::receipt::{self, SignedReceipt};
use crate::assets::did;
use crate::chain::contracts::DIDRegistry;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mismatch {
    #[error("receipt format {0:?} is not one this verifier knows")]
    Format(String),
    #[error(
        "hash mismatch: the receipt's canonical form hashes to {computed}, not {claimed} (it was changed after signing)"
    )]
    Hash { computed: String, claimed: String },
    #[error("signature mismatch: signed by {signer}, not by the provider {provider}")]
    Signer { signer: String, provider: String },
    #[error("the signature is malformed")]
    Signature,
    #[error("output {0} is missing from the outputs folder")]
    MissingOutput(String),
    #[error("output {name}: {what} differs ({found} here, {expected} in the receipt)")]
    Output {
        name: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("output {0} is in the outputs folder but not in the receipt")]
    ExtraOutput(String),
    #[error("logs differ: sha256 {found} here, {expected} in the receipt")]
    Logs { found: String, expected: String },
    #[error("the receipt has no logs digest to compare with")]
    NoLogs,
    #[error("the receipt names no on-chain anchor")]
    NoAnchor,
    #[error(
        "anchor mismatch: {did} on chain has checksum {found}, not the receipt hash {expected}"
    )]
    Anchor {
        did: String,
        found: String,
        expected: String,
    },
    #[error("{0}")]
    Io(String),
}

/// Hash and signature; `provider`, when given, must be the signer too.
pub fn check_signature(signed: &SignedReceipt, provider: Option<Address>) -> Result<(), Mismatch> {
    if signed.receipt.format != receipt::FORMAT {
        return Err(Mismatch::Format(signed.receipt.format.clone()));
    }
    let computed = receipt::hash(&signed.receipt).to_string();
    if !computed.eq_ignore_ascii_case(&signed.hash) {
        return Err(Mismatch::Hash {
            computed,
            claimed: signed.hash.clone(),
        });
    }
    let signer = receipt::signer_of(signed).ok_or(Mismatch::Signature)?;
    let claimed: Option<Address> = signed.receipt.provider.parse().ok();
    let expected = provider.or(claimed);
    if Some(signer) != expected {
        return Err(Mismatch::Signer {
            signer: signer.to_string(),
            provider: signed.receipt.provider.clone(),
        });
    }
    Ok(())
}

/// Every file under `dir` must be an output of the receipt with its size and sha256, and
/// every output of the receipt must be there.
pub fn check_outputs(signed: &SignedReceipt, dir: &Path) -> Result<(), Mismatch> {
    for output in &signed.receipt.outputs {
        let path = dir.join(&output.name);
        if !path.is_file() {
            return Err(Mismatch::MissingOutput(output.name.clone()));
        }
        let d =
            digest::file(&path).map_err(|e| Mismatch::Io(format!("{}: {e}", path.display())))?;
        // Results encrypted to the consumer: the ciphertext as published (anyone can check
        // it) or the plaintext it decrypts to (the consumer checks that) both match.
        if output.plain_sha256.as_deref() == Some(d.sha256.as_str())
            && output.plain_size == Some(d.size)
        {
            continue;
        }
        if d.size != output.size {
            return Err(Mismatch::Output {
                name: output.name.clone(),
                what: "size",
                found: d.size.to_string(),
                expected: output.size.to_string(),
            });
        }
        if d.sha256 != output.sha256 {
            return Err(Mismatch::Output {
                name: output.name.clone(),
                what: "sha256",
                found: d.sha256,
                expected: output.sha256.clone(),
            });
        }
    }
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(|e| Mismatch::Io(e.to_string()))?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if !signed.receipt.outputs.iter().any(|o| o.name == rel) {
                return Err(Mismatch::ExtraOutput(rel));
            }
        }
    }
    Ok(())
}

pub fn check_logs(signed: &SignedReceipt, log: &Path) -> Result<(), Mismatch> {
    let expected = signed.receipt.logs.as_ref().ok_or(Mismatch::NoLogs)?;
    let d = digest::file(log).map_err(|e| Mismatch::Io(format!("{}: {e}", log.display())))?;
    let plain = signed
        .receipt
        .encryption
        .as_ref()
        .and_then(|e| e.logs_plain.as_ref());
    if plain.is_some_and(|p| p.sha256 == d.sha256) {
        return Ok(());
    }
    if d.sha256 != expected.sha256 {
        return Err(Mismatch::Logs {
            found: d.sha256,
            expected: expected.sha256.clone(),
        });
    }
    Ok(())
}

/// The anchor DID's checksum on chain must be the receipt hash.
pub async fn check_anchor(
    signed: &SignedReceipt,
    provider: &DynProvider,
    registry: Address,
) -> Result<(), Mismatch> {
    let anchor = signed.anchor.as_ref().ok_or(Mismatch::NoAnchor)?;
    let id = did::parse(&anchor.did).ok_or(Mismatch::NoAnchor)?;
    let register = DIDRegistry::new(registry, provider)
        .getDIDRegister(id)
        .call()
        .await
        .map_err(|e| Mismatch::Io(format!("reading the anchor: {e}")))?;
    let found = register.lastChecksum;
    let expected: B256 = signed.hash.parse().map_err(|_| Mismatch::Signature)?;
    if found != expected {
        return Err(Mismatch::Anchor {
            did: anchor.did.clone(),
            found: found.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}
