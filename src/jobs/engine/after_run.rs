//! The after-run steps: what a finished job still needs, one step per turn: its container and
//! folder go, its agreement is settled, its results become an asset, its receipt is issued; a
//! removed job's leftovers are cleared. Each is idempotent and retried until done.

use std::time::Instant;

use tracing::info;

use super::Engine;
use super::policy::StepError;
use crate::jobs::model::{Job, Outcome, Settlement};
use crate::jobs::store::Transition;
use crate::jobs::workspace::Workspace;
use crate::proof::digest;
use crate::storage::StorageError;

impl Engine {
    /// Takes the next step a finished job still needs; false when there is none left.
    pub(super) async fn after_run_step(&self, job: &Job) -> Result<bool, StepError> {
        // The container and folder go first: nothing after needs them, and the chain steps
        // can take a while.
        if !job.removed && job.timings.cleanup_ms.is_none() {
            self.clean_run(job).await?;
        } else if job.agreement.is_some() && job.settlement.is_none() {
            self.settle(job).await?;
        } else if !job.removed
            && job.wants_results_asset()
            && job.results_did.is_none()
            && job.outcome == Some(Outcome::Succeeded)
        {
            self.publish_results_asset(job).await?;
        } else if !job.removed && job.receipt.is_none() {
            self.issue_receipt(job).await?;
        } else if job.removed && !job.cleared {
            self.clear_leftovers(job).await.map_err(StepError::Retry)?;
            self.store.mark_cleared(&job.id).await?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// A job under an agreement pays the publisher once its algorithm ran (whatever its exit:
    /// the provider did the work): the compute condition is fulfilled, then the reward
    /// released. A job that ended before the algorithm ran, through no fault of the
    /// consumer's, touches neither: after the agreement's time out the consumer gets the price
    /// back (ComputeExecutionCondition.abortByTimeOut, then EscrowReward.fulfill). Fulfilling
    /// compute earlier would make that refund impossible. Idempotent: the on-chain state is
    /// read before anything is sent.
    async fn settle(&self, job: &Job) -> Result<(), StepError> {
        let record = job
            .agreement
            .as_ref()
            .expect("settle is called for agreement jobs");
        let Some(keeper) = &self.keeper else {
            return Err(StepError::Retry(
                "the job runs under an agreement but the service has no chain configured".into(),
            ));
        };
        let (terms, ids) = crate::authorize::terms_of(record).map_err(StepError::Retry)?;
        let ran = job.exit_code.is_some() || job.outcome == Some(Outcome::TimedOut);
        let settlement = if ran {
            let compute_tx = keeper
                .fulfill_compute(&terms, &ids)
                .await
                .map_err(|e| StepError::Retry(e.to_string()))?;
            super::failpoint("brizo::settle", &job.id).await;
            let tx = keeper
                .release_reward(&terms, &ids)
                .await
                .map_err(|e| StepError::Retry(e.to_string()))?;
            Settlement {
                state: "paid".into(),
                tx: tx.map(|t| t.to_string()),
                compute_tx: compute_tx.map(|t| t.to_string()),
                reason: "the algorithm ran; the reward went to the publisher".into(),
            }
        } else {
            Settlement {
                state: "not_paid".into(),
                tx: None,
                compute_tx: None,
                reason: "the job ended before the algorithm ran; the reward stays in escrow and returns to the consumer once the agreement times out".into(),
            }
        };
        info!(job = %job.id, state = %settlement.state, "agreement settled");
        self.store.set_settlement(&job.id, &settlement).await?;
        Ok(())
    }

    /// Publishes a succeeded job's outputs as a new asset owned by the consumer: a DDO with
    /// its provenance in the metadata store (its file locations encrypted to the provider),
    /// registered in DIDRegistry, its ownership then transferred to the consumer.
    async fn publish_results_asset(&self, job: &Job) -> Result<(), StepError> {
        let Some(keeper) = &self.keeper else {
            return Err(StepError::Retry("publishing results needs a chain".into()));
        };
        let did = crate::assets::results::publish(
            &self.config,
            keeper,
            &self.metadata,
            &self.results,
            job,
        )
        .await
        .map_err(|e| StepError::Retry(format!("publishing the results asset: {e}")))?;
        info!(job = %job.id, did = %did, "results published as a new asset");
        self.store.set_results_did(&job.id, &did).await?;
        Ok(())
    }

    /// Signs the job's receipt, anchors its hash on chain when there is one, and publishes it
    /// beside the results. Idempotent: the same job gives the same receipt (ECDSA signatures
    /// here are deterministic), and an anchor already holding the hash is not sent again.
    async fn issue_receipt(&self, job: &Job) -> Result<(), StepError> {
        let log = self.log_path(&job.id);
        let logs = if log.exists() {
            Some(
                digest::path_async(log)
                    .await
                    .map_err(|e| StepError::Retry(e.to_string()))?,
            )
        } else {
            None
        };
        let chain_id = match &self.keeper {
            Some(k) => Some(
                k.chain_id()
                    .await
                    .map_err(|e| StepError::Retry(e.to_string()))?,
            ),
            None => None,
        };
        let key = self
            .receipt_key()
            .map_err(|e| StepError::Retry(format!("node key: {e}")))?;
        let receipt = crate::proof::build::receipt(
            &self.config,
            job,
            self.keeper.as_deref(),
            chain_id,
            logs,
            key.address(),
        );
        let mut signed = crate::proof::receipt::sign(receipt, &key);
        if let Some(keeper) = &self.keeper {
            let did = crate::proof::receipt::anchor_did(&job.id);
            let url = format!(
                "{}/api/v1/brizo/services/compute/results/{}/receipt",
                self.config.chain.public_url.trim_end_matches('/'),
                job.id
            );
            let hash: alloy::primitives::B256 = signed.hash.parse().expect("hash is 32 bytes");
            let tx = keeper
                .anchor(did, hash, &url)
                .await
                .map_err(|e| StepError::Retry(e.to_string()))?;
            signed.anchor = Some(crate::proof::receipt::Anchor {
                did: crate::assets::did::format(&did),
                tx: tx.map(|t| t.to_string()),
            });
        }
        super::failpoint("brizo::receipt", &job.id).await;
        let text = serde_json::to_string_pretty(&signed).expect("receipt serializes");
        let dir = self.config.data_dir.join("receipts");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        let file = dir.join(format!("{}.json", job.id));
        tokio::fs::write(&file, &text)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        self.results
            .put_file(&job.id, "receipt.json", &file)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        self.store.set_receipt(&job.id, &text).await?;
        info!(job = %job.id, hash = %signed.hash, "receipt issued");
        Ok(())
    }

    fn receipt_key(&self) -> std::io::Result<alloy::signers::local::PrivateKeySigner> {
        let mut slot = self.receipt_key.lock().unwrap();
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let key = match &self.keeper {
            Some(k) => k.signer().clone(),
            None => crate::proof::build::node_key(&self.config.data_dir)?,
        };
        *slot = Some(key.clone());
        Ok(key)
    }

    /// A finished job keeps its record, log and results; its container and folder go.
    async fn clean_run(&self, job: &Job) -> Result<(), StepError> {
        let started = Instant::now();
        self.backend_of(job)?.remove(&job.id).await?;
        Workspace::new(&self.config.jobs_dir(), &job.id)
            .remove()
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        if job.timings.cleanup_ms.is_none() {
            let mut timings = job.timings.clone();
            timings.cleanup_ms = Some(started.elapsed().as_millis() as u64);
            self.store
                .transition(
                    &job.id,
                    job.phase,
                    Transition {
                        timings: Some(timings),
                        ..Default::default()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Everything a removed job left, gone.
    async fn clear_leftovers(&self, job: &Job) -> Result<(), String> {
        if let Some(backend) = self.backends.get(&job.backend) {
            backend.remove(&job.id).await.map_err(|e| e.to_string())?;
        }
        Workspace::new(&self.config.jobs_dir(), &job.id)
            .remove()
            .await
            .map_err(|e| e.to_string())?;
        for file in [
            self.log_path(&job.id),
            self.config
                .data_dir
                .join("receipts")
                .join(format!("{}.json", job.id)),
        ] {
            match tokio::fs::remove_file(file).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
                _ => {}
            }
        }
        self.results
            .delete_job(&job.id)
            .await
            .map_err(|e: StorageError| e.to_string())
    }
}
