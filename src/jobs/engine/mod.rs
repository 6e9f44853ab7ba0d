//! The engine: accepts jobs (the request path, here) and drives every unfinished one
//! through its phases apart from it. Three rooms:
//! - [`scheduler`]: the reconcile loop, slots, wake-ups and retries; it decides which step a
//!   job takes next and what a failed step means ([`policy`]); its slots are handed out in
//!   the order the jobs' status reports ([`line`]);
//! - [`run_steps`]: what happens up to the run's end (stage, start, follow, filter, publish);
//! - [`after_run`]: what a finished job still needs (cleanup, settlement, results asset,
//!   receipt, clearing a removed job).
//!
//! Each step reads the job from the store, acts, and writes the next phase before going on,
//! so after a crash the loop picks every job up where it stood. Every step is idempotent:
//! staging starts from an empty folder, the backend reuses a run it already has, publishing
//! overwrites, settlement reads the chain before it sends.

mod after_run;
mod approval;
mod health;
pub use health::Health;
mod line;
mod release;
pub use approval::AlgorithmReview;
mod policy;
mod run_steps;
mod scheduler;
#[cfg(test)]
mod tests;
mod waiting;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use brizo_backend_core::ComputeBackend;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::model::{
    AgreementRecord, Approval, Holds, Job, JobRequest, Outcome, Phase, PhaseTimings, new_job_id,
    now_epoch,
};
use super::store::{JobStore, StoreError, Transition};
use super::workspace;
use crate::chain::keeper::Keeper;
use crate::config::Config;
use crate::storage::{self, ResultsStore};
use policy::StepError;

/// The size of each job's disk, or none when this host cannot (or is told not to) give jobs
/// one; said once, at start-up.
fn disk_quota(config: &Config) -> Option<crate::jobs::disk::Quota> {
    use crate::jobs::disk::{self, DiskMode};
    let content = (config.outputs.max_output_mb << 20) + config.outputs.max_log_kb * 1024;
    match (config.limits.disk, disk::can_quota()) {
        (DiskMode::Off, _) => None,
        (_, Ok(())) => Some(disk::Quota::holding(content)),
        (mode, Err(why)) => {
            tracing::warn!(
                ?mode,
                "jobs write to plain folders, checked against the caps only after they end: {why}"
            );
            None
        }
    }
}

/// Fault injection for the crash tests (cargo feature `failpoints`): with
/// `FAILPOINTS=brizo::<name>=return` the job holds here, as if the process had stopped at
/// this line, until the test kills the process. Compiled to nothing otherwise.
async fn failpoint(name: &'static str, job: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        tracing::warn!(job, "failpoint {name} holds the job");
        std::future::pending::<()>().await;
    }
    let _ = (name, job);
}

/// Errors the request path reports; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("no job {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The compute backend does not answer; retrying later can help.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Engine {
    store: JobStore,
    pub metadata: crate::assets::metadata::MetadataStore,
    /// The keeper deployment, when the service runs with a chain (v1 jobs settle through it).
    pub keeper: Option<Arc<Keeper>>,
    /// The compute backends by name; each job runs on the one routing chose for it.
    pub backends: std::collections::BTreeMap<String, Arc<dyn ComputeBackend>>,
    pub results: ResultsStore,
    config: Arc<Config>,
    active: Mutex<HashMap<String, CancellationToken>>,
    retry_at: Mutex<HashMap<String, scheduler::Retry>>,
    /// When this process first saw each pending stop request (the grace counts from there).
    stop_seen: Mutex<HashMap<String, Instant>>,
    /// When each job waiting for approval last had its agreement read on chain.
    approval_checked: Mutex<HashMap<String, Instant>>,
    /// The key receipts are signed with, loaded (or made) once: the provider's, or the node's.
    receipt_key: Mutex<Option<alloy::signers::local::PrivateKeySigner>>,
    /// Each job's own filesystem, when jobs get one ([`crate::jobs::disk`]).
    disk: Option<crate::jobs::disk::Quota>,
    staging_slots: Arc<line::Line>,
    /// Held from the start of a job's staging until its run starts: the jobs staged ahead of
    /// the runs are bounded (each holds its disk, a loop device and its inputs on the host, and
    /// every mounted disk makes each container the engine starts or removes slower).
    ahead_slots: Arc<line::Line>,
    run_slots: Arc<line::Line>,
    wake: Notify,
    /// The latest round of health checks ([`health`]), `None` until the first.
    health: tokio::sync::watch::Sender<Option<Arc<Health>>>,
    /// Whether [`Engine::run`] keeps `health` current.
    health_watched: std::sync::atomic::AtomicBool,
}

const MAX_LIST: i64 = 1000;

impl Engine {
    pub fn new(
        config: Arc<Config>,
        store: JobStore,
        backends: std::collections::BTreeMap<String, Arc<dyn ComputeBackend>>,
        results: ResultsStore,
        keeper: Option<Arc<Keeper>>,
    ) -> Arc<Self> {
        let disk = disk_quota(&config);
        Arc::new(Self {
            disk,
            metadata: crate::assets::metadata::MetadataStore::new(store.pool()),
            keeper,
            staging_slots: line::Line::new(config.max_staging_jobs),
            ahead_slots: line::Line::new(config.max_staged_ahead()),
            run_slots: line::Line::new(config.max_running_jobs),
            store,
            backends,
            results,
            config,
            active: Mutex::default(),
            receipt_key: Mutex::default(),
            retry_at: Mutex::default(),
            stop_seen: Mutex::default(),
            approval_checked: Mutex::default(),
            wake: Notify::new(),
            health: tokio::sync::watch::Sender::new(None),
            health_watched: Default::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- request path -------------------------------------------------------------------

    /// Checks a request completely, then records it: a job that is accepted can run, and a
    /// request that is refused leaves nothing behind.
    pub async fn submit(&self, owner: &str, request: JobRequest) -> Result<Job, EngineError> {
        self.submit_under(owner, request, None, Holds::default())
            .await
    }

    /// Like `submit`, for a job that runs under a Service Agreement (settled when it ends);
    /// `holds` are the publisher's decisions it waits for (approval before it runs, release
    /// of its outputs after).
    pub async fn submit_under(
        &self,
        owner: &str,
        mut request: JobRequest,
        agreement: Option<AgreementRecord>,
        holds: Holds,
    ) -> Result<Job, EngineError> {
        self.check(&mut request).await?;
        self.record(owner, request, agreement, holds).await
    }

    /// Runs a finished job again for an audit: the same request, the image pinned to the
    /// digest that ran, as an operator job (no agreement, nothing settled).
    pub async fn rerun(&self, id: &str) -> Result<Job, EngineError> {
        let original = self.get(id, None).await?;
        if !original.is_finished() {
            return Err(EngineError::Conflict(format!(
                "job {id} has not finished; rerun it once it has"
            )));
        }
        let digest = original.image_digest.clone().ok_or_else(|| {
            EngineError::Conflict(format!(
                "job {id} never started a container; there is nothing to rerun"
            ))
        })?;
        let mut request = original.request.clone();
        // Checked as the original was (allowed images are named, not digests)...
        self.check(&mut request).await?;
        // ...then pinned to exactly what ran.
        request.image = digest;
        self.record("operator", request, None, Holds::default())
            .await
    }

    async fn record(
        &self,
        owner: &str,
        request: JobRequest,
        agreement: Option<AgreementRecord>,
        holds: Holds,
    ) -> Result<Job, EngineError> {
        let route = self.route(&request);
        let timeout_secs = request
            .timeout_seconds
            .unwrap_or(self.config.limits.default_timeout_secs)
            .min(self.config.limits.max_timeout_secs);
        let job = Job {
            id: new_job_id(),
            owner: owner.to_string(),
            request,
            phase: Phase::Queued,
            outcome: None,
            error: None,
            exit_code: None,
            image_digest: None,
            timeout_secs,
            stop_requested: false,
            removed: false,
            cleared: false,
            date_created: now_epoch(),
            date_started: None,
            date_finished: None,
            outputs: vec![],
            timings: PhaseTimings::default(),
            agreement,
            settlement: None,
            staged: None,
            receipt: None,
            results_did: None,
            backend: route.backend,
            backend_reason: route.reason,
            approval: holds.approval.then(Approval::pending),
            release: holds.release.then(Approval::pending),
            sealed: None,
        };
        self.store.insert(&job).await?;
        metrics::counter!("brizo_jobs_submitted_total").increment(1);
        info!(job = %job.id, image = %job.request.image, "job accepted");
        self.wake.notify_one();
        Ok(job)
    }

    /// Checks (and normalizes) a request as `submit` will, without recording anything.
    pub async fn check(&self, r: &mut JobRequest) -> Result<(), EngineError> {
        self.validate(r).await?;
        let route = self.route(r);
        if !self.backends.contains_key(&route.backend) {
            return Err(EngineError::Invalid(format!(
                "backend {} is not configured",
                route.backend
            )));
        }
        // Refuse now rather than queue behind an engine that is down: the client can retry.
        // An engine the background checks saw answer is taken at their word (a submission
        // does not wait for a round trip); one they saw down is asked again, so that an engine
        // that just came back is not refused for the rest of the interval.
        if self.health().await.backend(&route.backend).is_ok() {
            return Ok(());
        }
        let backend = &self.backends[&route.backend];
        backend.ping().await.map_err(|e| {
            EngineError::Unavailable(format!("{e}; nothing was recorded, try again later"))
        })
    }

    /// Where the job runs and why; a backend that does not cut its runs off the network itself
    /// is named as such, so that nobody takes its isolation for Docker's.
    pub fn route(&self, r: &JobRequest) -> super::routing::Route {
        let mut route =
            super::routing::route(&self.config.backends, &self.config.backend, &r.inputs);
        if self
            .backends
            .get(&route.backend)
            .is_some_and(|b| !b.capabilities().isolates_network)
            && !r.network
        {
            route.reason.push_str("; its network isolation is the infrastructure's (subnets, security groups), not the backend's");
        }
        route
    }

    /// The backend a job runs on.
    fn backend_of(&self, job: &Job) -> Result<&Arc<dyn ComputeBackend>, StepError> {
        self.backends.get(&job.backend).ok_or_else(|| {
            StepError::Retry(format!(
                "backend {:?} of job {} is not configured (any more)",
                job.backend, job.id
            ))
        })
    }

    async fn validate(&self, r: &mut JobRequest) -> Result<(), EngineError> {
        let invalid = |m: String| Err(EngineError::Invalid(m));
        let image = r.image.trim();
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("image must be a reference like \"name:tag\"".into());
        }
        if !self.image_allowed(image) {
            return invalid(format!(
                "image {image} is not one this publisher supports (images.allowed)"
            ));
        }
        r.image = image.to_string();
        workspace::command_line(&r.entrypoint).map_err(EngineError::Invalid)?;
        match (&r.algorithm.rawcode, &r.algorithm.url) {
            (Some(code), None) => {
                if code.len() as u64 > self.config.inputs.max_algorithm_kb * 1024 {
                    return invalid(format!(
                        "algorithm.rawcode is larger than {} KiB",
                        self.config.inputs.max_algorithm_kb
                    ));
                }
            }
            (None, Some(url)) if url.starts_with("file:") => {
                workspace::resolve_dataset_path(url, &self.config.inputs.dataset_roots)
                    .map_err(|e| EngineError::Invalid(format!("algorithm.url: {e}")))?;
            }
            (None, Some(url)) => {
                storage::vet_remote_url(url, self.config.inputs.allow_private_addresses)
                    .await
                    .map_err(|e| EngineError::Invalid(format!("algorithm.url: {e}")))?;
            }
            _ => return invalid("algorithm needs exactly one of rawcode or url".into()),
        }
        if let Some(key) = &r.encrypt_to {
            crate::seal::parse_public_key(key)
                .map_err(|e| EngineError::Invalid(format!("encryptTo: {e}")))?;
        }
        if r.timeout_seconds == Some(0) {
            return invalid("timeoutSeconds must be at least 1".into());
        }
        for (i, input) in r.inputs.iter().enumerate() {
            if let Some(name) = &input.name
                && !workspace::valid_input_name(name)
            {
                return invalid(format!(
                    "inputs[{i}].name {name:?}: use letters, digits and . _ : - only"
                ));
            }
            if input.url.starts_with("file:") {
                workspace::resolve_dataset_path(&input.url, &self.config.inputs.dataset_roots)
                    .map_err(|e| EngineError::Invalid(format!("inputs[{i}]: {e}")))?;
            } else {
                storage::vet_remote_url(&input.url, self.config.inputs.allow_private_addresses)
                    .await
                    .map_err(|e| EngineError::Invalid(format!("inputs[{i}]: {e}")))?;
            }
        }
        Ok(())
    }

    fn image_allowed(&self, image: &str) -> bool {
        let allowed = &self.config.images.allowed;
        allowed.is_empty()
            || allowed.iter().any(|a| match a.strip_suffix(":*") {
                Some(repo) => image.rsplit_once(':').is_some_and(|(r, _)| r == repo),
                None => a == image,
            })
    }

    /// A job visible to `owner` (`None`: the operator, who sees all).
    pub async fn get(&self, id: &str, owner: Option<&str>) -> Result<Job, EngineError> {
        match self.store.get(id).await? {
            Some(job) if !job.removed && owner.is_none_or(|o| o == job.owner) => Ok(job),
            _ => Err(EngineError::NotFound(id.to_string())),
        }
    }

    pub async fn list(&self, owner: Option<&str>) -> Result<Vec<Job>, EngineError> {
        Ok(self.store.list(owner, MAX_LIST).await?)
    }

    /// The jobs `owner` runs under one Service Agreement (removed ones included: an agreement
    /// buys one run, whatever became of it).
    pub async fn under_agreement(
        &self,
        owner: &str,
        agreement_id: &str,
    ) -> Result<Vec<Job>, EngineError> {
        Ok(self.store.by_agreement(owner, agreement_id).await?)
    }

    /// One page of jobs for the dashboard.
    pub async fn page(
        &self,
        filter: &crate::jobs::store::JobFilter,
    ) -> Result<Vec<Job>, EngineError> {
        Ok(self.store.page(filter).await?)
    }

    /// Changes whenever any job does.
    pub async fn fingerprint(&self) -> Result<String, EngineError> {
        Ok(self.store.fingerprint().await?)
    }

    /// Jobs finished per hour and outcome since `since`, and recent phase timings.
    pub async fn stats(
        &self,
        since: f64,
    ) -> Result<(Vec<(i64, String, i64)>, Vec<PhaseTimings>), EngineError> {
        Ok((
            self.store.finished_since(since).await?,
            self.store.recent_timings(200).await?,
        ))
    }

    /// Unfinished jobs (the dashboard counts them per backend).
    /// One job of `owner` under `agreement_id` by its id, removed or not, as
    /// [`Engine::under_agreement`] would list it.
    pub async fn under_agreement_by_id(
        &self,
        owner: &str,
        agreement_id: &str,
        id: &str,
    ) -> Result<Option<Job>, EngineError> {
        Ok(self.store.get(id).await?.filter(|job| {
            job.owner == owner
                && job
                    .agreement
                    .as_ref()
                    .is_some_and(|a| a.agreement_id == agreement_id)
        }))
    }

    pub async fn unfinished(&self) -> Result<Vec<Job>, EngineError> {
        Ok(self.store.unfinished().await?)
    }

    pub async fn stop(&self, id: &str, owner: Option<&str>) -> Result<Job, EngineError> {
        let job = self.get(id, owner).await?;
        if job.is_finished() {
            return Err(EngineError::Conflict(format!(
                "job {id} already finished ({})",
                job.phase.text()
            )));
        }
        self.store.request_stop(id).await?;
        self.interrupt(id);
        self.get(id, owner).await
    }

    /// Stops the job if it runs and removes everything it left: container, folder, logs,
    /// published results. The record stays, marked removed, so the id is never reused. The
    /// clearing is the reconcile loop's (retried until done), so an outage loses nothing.
    pub async fn remove(&self, id: &str, owner: Option<&str>) -> Result<(), EngineError> {
        self.get(id, owner).await?;
        self.store.mark_removed(id).await?;
        self.interrupt(id);
        self.wake.notify_one();
        Ok(())
    }

    fn interrupt(&self, id: &str) {
        if let Some(token) = self.active.lock().unwrap().get(id) {
            token.cancel();
        }
    }

    /// Where a finished job's log lives on this machine.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.config.logs_dir().join(format!("{id}.log"))
    }

    /// Ends a job as failed in `phase`, with the reason a consumer reads.
    async fn fail(&self, job: &Job, phase: Phase, reason: String) -> Result<(), StepError> {
        self.finish(job, Outcome::Failed, Some(reason), phase).await
    }

    /// Ends a job that did not get to run (or whose run cannot be judged).
    async fn finish(
        &self,
        job: &Job,
        outcome: Outcome,
        error: Option<String>,
        phase: Phase,
    ) -> Result<(), StepError> {
        info!(job = %job.id, outcome = outcome.as_str(), error = error.as_deref().unwrap_or(""), "job ends in phase {}", phase.code());
        self.store
            .transition(
                &job.id,
                phase,
                Transition {
                    outcome: Some(outcome),
                    error,
                    date_finished: Some(now_epoch()),
                    ..Default::default()
                },
            )
            .await?;
        self.record_finish(job, outcome);
        Ok(())
    }

    fn record_finish(&self, job: &Job, outcome: Outcome) {
        self.stop_seen.lock().unwrap().remove(&job.id);
        self.approval_checked.lock().unwrap().remove(&job.id);
        metrics::counter!("brizo_jobs_finished_total", "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("brizo_job_duration_seconds")
            .record((now_epoch() - job.date_created).max(0.0));
        info!(job = %job.id, outcome = outcome.as_str(), "job finished");
    }
}
