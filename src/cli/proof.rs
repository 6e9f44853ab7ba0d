//! `brizo proof verify`: check a receipt's hash, signature, files and on-chain anchor.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub(super) enum ProofCommand {
    /// Check a receipt: its hash and the provider's signature; with --outputs and --logs, the
    /// files one holds; with --keeper-url, the anchor on chain. Exits non-zero at the first
    /// mismatch, naming it.
    Verify {
        receipt: PathBuf,
        /// Folder holding the job's outputs (as downloaded).
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// The job's log.
        #[arg(long)]
        logs: Option<PathBuf>,
        /// Ethereum node to check the on-chain anchor against.
        #[arg(long)]
        keeper_url: Option<String>,
        /// The provider address the receipt must be signed by (default: the one it names).
        #[arg(long)]
        provider: Option<String>,
    },
}

pub(super) async fn verify_receipt(
    path: PathBuf,
    outputs: Option<PathBuf>,
    logs: Option<PathBuf>,
    keeper_url: Option<String>,
    provider: Option<String>,
) -> anyhow::Result<()> {
    use crate::proof::{receipt::SignedReceipt, verify};
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let signed: SignedReceipt = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a brizo receipt", path.display()))?;
    let provider = provider
        .map(|p| p.parse::<alloy::primitives::Address>())
        .transpose()
        .context("--provider is not an address")?;
    let fail = |e: verify::Mismatch| anyhow::anyhow!("verification failed: {e}");
    verify::check_signature(&signed, provider).map_err(fail)?;
    println!(
        "ok  hash {} of the canonical receipt, signed by {}",
        signed.hash, signed.receipt.provider
    );
    if let Some(dir) = outputs {
        verify::check_outputs(&signed, &dir).map_err(fail)?;
        println!(
            "ok  {} output(s) in {} match",
            signed.receipt.outputs.len(),
            dir.display()
        );
    }
    if let Some(log) = logs {
        verify::check_logs(&signed, &log).map_err(fail)?;
        println!("ok  the log matches");
    }
    if let Some(url) = keeper_url {
        let registry = signed
            .receipt
            .contracts
            .get("DIDRegistry")
            .context("the receipt names no DIDRegistry")?
            .parse()?;
        let chain = crate::chain::provider(&url)?;
        verify::check_anchor(&signed, &chain, registry)
            .await
            .map_err(fail)?;
        println!(
            "ok  anchored on chain under {}",
            signed.anchor.as_ref().map(|a| a.did.as_str()).unwrap_or("")
        );
    }
    println!(
        "job {}: {} (exit code {}), image {} ({})",
        signed.receipt.job_id,
        signed.receipt.outcome,
        signed
            .receipt
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        signed.receipt.image,
        signed
            .receipt
            .image_digest
            .as_deref()
            .unwrap_or("no digest")
    );
    Ok(())
}
