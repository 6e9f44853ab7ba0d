//! The publisher's approval of a job whose dataset asks for one (`privacy.requiresApproval`):
//! what the publisher sees before deciding (the algorithm's code and hash, the image, the
//! consumer), the decision itself, and the gate the scheduler keeps shut until then. An
//! approval not given before the agreement expires is a rejection; either way the consumer is
//! not charged (the reward stays in escrow, refunded after the agreement's time-out).

use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::Digest as _;
use tracing::info;

use super::policy::StepError;
use super::{Engine, EngineError};
use crate::chain::agreement::Refusal;
use crate::jobs::model::{Approval, ApprovalState, Job, Phase};
use crate::jobs::workspace;
use crate::storage;

/// How often a pending job's agreement is read on chain to see whether it expired.
const EXPIRY_CHECK: Duration = Duration::from_secs(15);

/// What the publisher reviews before approving a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmReview {
    pub job_id: String,
    /// The consumer's address (v1), or the job's owner.
    pub consumer: String,
    pub agreement_id: Option<String>,
    pub dataset_did: Option<String>,
    pub algorithm_did: Option<String>,
    /// True when the code came as raw code in the request.
    pub raw: bool,
    pub image: String,
    pub entrypoint: String,
    pub size: u64,
    /// sha256 of the code, hex: the job will run exactly these bytes or fail.
    pub sha256: String,
    /// The code, when it is text.
    pub code: Option<String>,
    /// The image's digest as the backend has it now (what approving pins the job to), or
    /// `None` where the backend cannot tell before running it, or the image is not there.
    pub image_digest: Option<String>,
    pub approval: Option<Approval>,
}

/// What the gate says of a queued job.
pub(super) enum Gate {
    /// No approval needed, or given: it goes on.
    Open,
    /// Waiting for the publisher.
    Held,
    /// Rejected, or its agreement expired first: it has just been ended.
    Ended,
}

impl Engine {
    /// The algorithm of a job, as the job would run it, for the publisher to review.
    pub async fn review(&self, id: &str) -> Result<AlgorithmReview, EngineError> {
        let job = self.get(id, None).await?;
        let code = self.algorithm_bytes(&job).await?;
        let agreement = job.agreement.as_ref();
        Ok(AlgorithmReview {
            job_id: job.id.clone(),
            consumer: agreement
                .map(|a| a.consumer.clone())
                .unwrap_or_else(|| job.owner.clone()),
            agreement_id: agreement.map(|a| a.agreement_id.clone()),
            dataset_did: agreement.map(|a| a.did.clone()),
            algorithm_did: job.request.algorithm.did.clone(),
            raw: job.request.algorithm.rawcode.is_some(),
            image: job.request.image.clone(),
            entrypoint: job.request.entrypoint.clone(),
            size: code.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&code)),
            code: String::from_utf8(code).ok(),
            image_digest: self.image_digest_now(&job).await?,
            approval: job.approval,
        })
    }

    /// Approves a pending job: it runs, with the algorithm the publisher saw.
    pub async fn approve(&self, id: &str, by: &str) -> Result<Job, EngineError> {
        let job = self.get(id, None).await?;
        self.pending(&job)?;
        if self.agreement_expired(&job).await {
            self.decide(&job, rejection(by, EXPIRED)).await?;
            return Err(EngineError::Conflict(format!(
                "job {id} cannot be approved: {EXPIRED}; it ends without running"
            )));
        }
        let code = self.algorithm_bytes(&job).await?;
        let approval = Approval {
            algorithm_sha256: Some(hex::encode(sha2::Sha256::digest(&code))),
            image_digest: self.image_digest_now(&job).await?,
            ..Approval::decided(ApprovalState::Approved, by, None)
        };
        self.decide(&job, approval).await?;
        info!(job = %id, by, "approved");
        self.get(id, None).await
    }

    /// The digest the job's image has on its backend now, where the backend can tell.
    async fn image_digest_now(&self, job: &Job) -> Result<Option<String>, EngineError> {
        let backend = self
            .backend_of(job)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        backend
            .image_digest(&job.request.image)
            .await
            .map_err(|e| EngineError::Unavailable(format!("reading the image's digest: {e}")))
    }

    /// Rejects a pending job: it ends without running, with the reason, and is not paid for.
    pub async fn reject(&self, id: &str, by: &str, reason: &str) -> Result<Job, EngineError> {
        let job = self.get(id, None).await?;
        self.pending(&job)?;
        let reason = if reason.trim().is_empty() {
            "no reason given".to_string()
        } else {
            reason.trim().to_string()
        };
        self.decide(&job, rejection(by, &reason)).await?;
        info!(job = %id, by, reason, "rejected");
        self.get(id, None).await
    }

    fn pending(&self, job: &Job) -> Result<(), EngineError> {
        match &job.approval {
            Some(a) if a.state == ApprovalState::Pending && !job.is_finished() => Ok(()),
            Some(a) => Err(EngineError::Conflict(format!(
                "job {} was already decided ({:?}) or has ended",
                job.id, a.state
            ))),
            None => Err(EngineError::Conflict(format!(
                "job {} needs no approval (its dataset does not ask for one)",
                job.id
            ))),
        }
    }

    async fn decide(&self, job: &Job, approval: Approval) -> Result<(), EngineError> {
        if !self.store.decide(&job.id, &approval).await? {
            return Err(EngineError::Conflict(format!(
                "job {} was decided meanwhile",
                job.id
            )));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The scheduler's gate, for a job still queued: `Ok(true)` lets it go on; `Ok(false)`
    /// holds it (pending); a rejection or an expired agreement ends it here.
    pub(super) async fn approval_gate(&self, job: &Job) -> Result<Gate, StepError> {
        let Some(approval) = &job.approval else {
            return Ok(Gate::Open);
        };
        let reason = match approval.state {
            ApprovalState::Approved => return Ok(Gate::Open),
            ApprovalState::Rejected => format!(
                "rejected by the publisher: {}; nothing ran and the reward stays in escrow for the consumer",
                approval.reason.as_deref().unwrap_or("no reason given")
            ),
            ApprovalState::Pending => {
                if !self.agreement_expired_now_and_then(job).await {
                    return Ok(Gate::Held);
                }
                let _ = self
                    .store
                    .decide(&job.id, &rejection("brizo", EXPIRED))
                    .await?;
                format!("{EXPIRED}; nothing ran and the reward stays in escrow for the consumer")
            }
        };
        self.fail(job, Phase::Finished, reason).await?;
        Ok(Gate::Ended)
    }

    /// Like [`Self::agreement_expired`], at most once per [`EXPIRY_CHECK`] per job.
    pub(super) async fn agreement_expired_now_and_then(&self, job: &Job) -> bool {
        {
            let mut checked = self.approval_checked.lock().unwrap();
            let now = Instant::now();
            match checked.get(&job.id) {
                Some(at) if now.duration_since(*at) < EXPIRY_CHECK => return false,
                _ => {
                    checked.insert(job.id.clone(), now);
                }
            }
        }
        self.agreement_expired(job).await
    }

    /// Whether the job's agreement can no longer be fulfilled (its compute condition timed
    /// out). A chain that does not answer says nothing: the job keeps waiting.
    async fn agreement_expired(&self, job: &Job) -> bool {
        let (Some(record), Some(keeper)) = (&job.agreement, &self.keeper) else {
            return false;
        };
        let Ok((terms, _)) = crate::authorize::terms_of(record) else {
            return false;
        };
        matches!(keeper.check(&terms).await, Ok(Err(Refusal::Expired)))
    }

    /// The algorithm's bytes, from where the job takes them.
    async fn algorithm_bytes(&self, job: &Job) -> Result<Vec<u8>, EngineError> {
        let limit = self.config.inputs.max_algorithm_kb * 1024;
        let unusable =
            |e: String| EngineError::Conflict(format!("the algorithm cannot be read: {e}"));
        match (&job.request.algorithm.rawcode, &job.request.algorithm.url) {
            (Some(code), _) => Ok(code.as_bytes().to_vec()),
            (None, Some(url)) if url.starts_with("file:") => {
                let path = workspace::resolve_dataset_path(url, &self.config.inputs.dataset_roots)
                    .map_err(unusable)?;
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| unusable(e.to_string()))?;
                if bytes.len() as u64 > limit {
                    return Err(unusable(format!("larger than {limit} bytes")));
                }
                Ok(bytes)
            }
            (None, Some(url)) => {
                let allow = self.config.inputs.allow_private_addresses;
                let url = storage::vet_remote_url(url, allow)
                    .await
                    .map_err(|e| unusable(e.to_string()))?;
                storage::fetch_bytes(&url, limit, allow, Duration::from_secs(30))
                    .await
                    .map_err(|e| unusable(e.to_string()))
            }
            (None, None) => Err(unusable("the job names no algorithm".into())),
        }
    }
}

const EXPIRED: &str = "the agreement expired before the publisher approved the job";

fn rejection(by: &str, reason: &str) -> Approval {
    Approval::decided(ApprovalState::Rejected, by, Some(reason))
}
