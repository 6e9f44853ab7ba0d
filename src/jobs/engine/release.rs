//! The publisher's review of a job's outputs before they leave (`privacy.reviewOutputs`):
//! after the run the outputs are listed, hashed and held (status 50); the publisher reads
//! them and releases or withholds them. Withheld, nothing is published (not the log either)
//! and nothing is paid; released, the job goes on as any other. An agreement that expires
//! before the review withholds them.

use std::path::PathBuf;

use tracing::info;

use super::policy::StepError;
use super::{Engine, EngineError};
use crate::jobs::model::{Approval, ApprovalState, Job, Outcome, OutputFile, Phase};
use crate::jobs::store::Transition;
use crate::jobs::workspace::Workspace;
use crate::proof::digest;

const EXPIRED: &str = "the agreement expired before the publisher released the outputs";

impl Engine {
    /// The outputs held for review (names, sizes, sha256).
    pub async fn held_outputs(&self, id: &str) -> Result<Vec<OutputFile>, EngineError> {
        let job = self.held(id).await?;
        Ok(job.outputs)
    }

    /// Where one held output lies, for the publisher to read it. Only a listed name is
    /// served: a name is never turned into a path on its own.
    pub async fn held_output(&self, id: &str, name: &str) -> Result<PathBuf, EngineError> {
        let job = self.held(id).await?;
        if !job.outputs.iter().any(|o| o.name == name) {
            return Err(EngineError::NotFound(format!(
                "{id}: no held output {name:?}"
            )));
        }
        Ok(Workspace::new(&self.config.jobs_dir(), &job.id)
            .outputs()
            .join(name))
    }

    /// Releases the held outputs: they are published and the job goes on.
    pub async fn release_outputs(&self, id: &str, by: &str) -> Result<Job, EngineError> {
        let job = self.held(id).await?;
        let release = Approval::decided(ApprovalState::Approved, by, None);
        self.decide_release(&job, release).await?;
        info!(job = %id, by, "outputs released");
        self.get(id, None).await
    }

    /// Withholds the held outputs: nothing is published, the job fails with the reason and is
    /// not paid.
    pub async fn withhold_outputs(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<Job, EngineError> {
        let job = self.held(id).await?;
        let reason = match reason.trim() {
            "" => "no reason given",
            r => r,
        };
        self.decide_release(&job, withholding(by, reason)).await?;
        info!(job = %id, by, reason, "outputs withheld");
        self.get(id, None).await
    }

    async fn held(&self, id: &str) -> Result<Job, EngineError> {
        let job = self.get(id, None).await?;
        if !job.release_pending() {
            return Err(EngineError::Conflict(format!(
                "job {id} has no outputs held for review (its dataset does not review outputs, or they were decided)"
            )));
        }
        if job.phase != Phase::Filtering || job.timings.filtering_ms.is_none() {
            return Err(EngineError::Conflict(format!(
                "job {id} has not finished its run yet; its outputs are held once it has"
            )));
        }
        Ok(job)
    }

    async fn decide_release(&self, job: &Job, release: Approval) -> Result<(), EngineError> {
        if !self.store.decide_release(&job.id, &release).await? {
            return Err(EngineError::Conflict(format!(
                "job {}'s outputs were decided meanwhile",
                job.id
            )));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Each listed output with its sha256, for the review.
    pub(super) async fn hashed(
        &self,
        job: &Job,
        outputs: Vec<OutputFile>,
    ) -> Result<Vec<OutputFile>, StepError> {
        let dir = Workspace::new(&self.config.jobs_dir(), &job.id).outputs();
        let mut hashed = Vec::with_capacity(outputs.len());
        for mut output in outputs {
            let d = digest::path_async(dir.join(&output.name))
                .await
                .map_err(|e| StepError::Retry(format!("hashing {}: {e}", output.name)))?;
            output.sha256 = d.sha256;
            hashed.push(output);
        }
        Ok(hashed)
    }

    /// After the outputs are held: waits for the decision (the drive ends, and comes back),
    /// then goes on to publishing with `transition` (what filtering found), or without
    /// anything when withheld.
    pub(super) async fn after_review(
        &self,
        job: &Job,
        outputs: Vec<OutputFile>,
        mut transition: Transition,
    ) -> Result<(), StepError> {
        let job = self
            .store
            .get(&job.id)
            .await?
            .unwrap_or_else(|| job.clone());
        let decision = job.release.clone();
        let withheld = match decision.as_ref().map(|r| r.state) {
            Some(ApprovalState::Approved) | None => None,
            Some(ApprovalState::Rejected) => decision.and_then(|r| r.reason),
            Some(ApprovalState::Pending) => {
                if !self.agreement_expired_now_and_then(&job).await {
                    return Err(StepError::Held);
                }
                let _ = self
                    .store
                    .decide_release(&job.id, &withholding("brizo", EXPIRED))
                    .await?;
                Some(EXPIRED.to_string())
            }
        };
        match withheld {
            Some(reason) => {
                transition.outcome = Some(Outcome::Failed);
                transition.error = Some(format!(
                    "the publisher withheld the outputs: {reason}; nothing was published"
                ));
                transition.outputs = Some(vec![]);
            }
            None if transition.outputs.is_none() => transition.outputs = Some(outputs),
            None => {}
        }
        self.store
            .transition(&job.id, Phase::Publishing, transition)
            .await?;
        Ok(())
    }
}

fn withholding(by: &str, reason: &str) -> Approval {
    Approval::decided(ApprovalState::Rejected, by, Some(reason))
}
