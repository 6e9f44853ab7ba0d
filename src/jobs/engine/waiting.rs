//! What each unfinished job waits for, from what the scheduler knows: its phase, its place in
//! the queue for a slot, the slots free, and a step that failed and waits to be tried again.

use std::collections::HashMap;
use std::time::Instant;

use super::{Engine, EngineError};
use crate::jobs::model::{Job, Phase, WaitReason, Waiting};

impl Engine {
    /// What `job` waits for; `None` once it runs or has ended. Its place in its queue is a
    /// count the store makes (a status poll of one job among hundreds queued reads one number).
    pub async fn waiting(&self, job: &Job) -> Result<Option<Waiting>, EngineError> {
        if job.is_finished() {
            return Ok(None);
        }
        let in_line = matches!(job.phase, Phase::Queued | Phase::Provisioned)
            && !job.stop_requested
            && !job.approval_pending();
        let place = if in_line {
            Some(self.store.ahead_of(job, &self.out_of_line()).await? + 1)
        } else {
            None
        };
        Ok(self.wait_of(job, place))
    }

    /// What each of `jobs` waits for (one look at the queue for all of them: a list's page).
    pub async fn waiting_all(&self, jobs: &[Job]) -> Result<HashMap<String, Waiting>, EngineError> {
        let mut found = HashMap::new();
        if jobs.iter().all(Job::is_finished) {
            return Ok(found);
        }
        // In the order slots are handed out ([`super::line`]): staging slots by submission,
        // run slots by when staging ended. Only the phases that
        // wait for a slot have a place, and only those asked about are read.
        let phases: Vec<Phase> = [Phase::Queued, Phase::Provisioned]
            .into_iter()
            .filter(|p| jobs.iter().any(|j| j.phase == *p && !j.stop_requested))
            .collect();
        let mut queue = self.store.queue(&phases).await?;
        queue.sort_by(|a, b| {
            a.ready_at
                .total_cmp(&b.ready_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let away = self.out_of_line();
        let place = |job: &Job| {
            queue
                .iter()
                .filter(|q| q.phase == job.phase && !q.stop_requested && !q.pending_approval)
                .filter(|q| q.id == job.id || !away.contains(&q.id))
                .position(|q| q.id == job.id)
                .map(|i| i + 1)
        };
        for job in jobs.iter().filter(|j| !j.is_finished()) {
            if let Some(waiting) = self.wait_of(job, place(job)) {
                found.insert(job.id.clone(), waiting);
            }
        }
        Ok(found)
    }

    /// Jobs out of line for now: they wait out a retry's pause and take their place again
    /// when their next driver starts, so a slot freed meanwhile goes to the next in line, as
    /// its status said.
    fn out_of_line(&self) -> Vec<String> {
        let retried: Vec<String> = self.retry_at.lock().unwrap().keys().cloned().collect();
        let active = self.active.lock().unwrap();
        retried
            .into_iter()
            .filter(|id| !active.contains_key(id))
            .collect()
    }

    fn wait_of(&self, job: &Job, position: Option<usize>) -> Option<Waiting> {
        self.held_back(job).or_else(|| self.in_line(job, position))
    }

    /// A wait that is not for a place in line: a stop under way, a retry's pause, the
    /// publisher's approval or review.
    fn held_back(&self, job: &Job) -> Option<Waiting> {
        let waiting = |reason, text: String| {
            Some(Waiting {
                reason,
                text,
                position: None,
            })
        };
        if job.stop_requested {
            return waiting(
                WaitReason::Stopping,
                format!(
                    "stopping on request; it ends within {} s (limits.grace_secs) even if the backend does not answer",
                    self.config.limits.grace_secs
                ),
            );
        }
        if let Some(retry) = self.retry_at.lock().unwrap().get(&job.id)
            && retry.at > Instant::now()
        {
            let secs = retry.at.saturating_duration_since(Instant::now()).as_secs() + 1;
            return waiting(
                WaitReason::Retrying,
                format!(
                    "attempt {} failed: {}; trying again in {secs} s",
                    retry.attempts, retry.reason
                ),
            );
        }
        if job.phase == Phase::Queued && job.approval_pending() {
            return waiting(
                WaitReason::Approval,
                "waiting for the publisher to approve it (its dataset asks for approval of each job); not approved before the agreement expires, it ends without running and is not charged".into(),
            );
        }
        if job.phase == Phase::Filtering
            && job.release_pending()
            && job.timings.filtering_ms.is_some()
        {
            return waiting(
                WaitReason::Review,
                "the run ended; its outputs wait for the publisher's review before they are released".into(),
            );
        }
        None
    }

    /// A wait for a place: to be staged, or for a run slot; what it is doing meanwhile.
    fn in_line(&self, job: &Job, position: Option<usize>) -> Option<Waiting> {
        let waiting = |reason, text: String, position| {
            Some(Waiting {
                reason,
                text,
                position,
            })
        };
        match job.phase {
            Phase::Queued => {
                let ahead = position.unwrap_or(1) - 1;
                waiting(
                    WaitReason::StagingSlot,
                    format!(
                        "waiting to be staged: {ahead} job(s) ahead of it; {} stage at once (max_staging_jobs), and at most {} wait staged or staging for a run slot",
                        self.config.max_staging_jobs,
                        self.config.max_staged_ahead()
                    ),
                    position,
                )
            }
            Phase::Staging => waiting(
                WaitReason::Staging,
                "putting its algorithm and inputs in place".into(),
                None,
            ),
            Phase::Provisioned => {
                // The first `free` staged jobs have a slot (or are about to take one).
                let free = self.run_slots.available();
                match position {
                    Some(p) if p > free => waiting(
                        WaitReason::RunSlot,
                        format!(
                            "waiting for a run slot: {} job(s) ahead of it; {} run at once (max_running_jobs)",
                            p - free - 1,
                            self.config.max_running_jobs
                        ),
                        Some(p - free),
                    ),
                    _ => waiting(
                        WaitReason::Starting,
                        format!("starting on backend {}", job.backend),
                        None,
                    ),
                }
            }
            _ => None,
        }
    }
}
