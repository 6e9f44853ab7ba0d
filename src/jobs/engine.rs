//! The reconcile loop: drives every unfinished job through its phases, apart from the
//! request path. Each step reads the job from the store, acts, and writes the next phase
//! before going on, so after a crash the loop picks every job up where it stood. Every step
//! is idempotent: staging starts from an empty folder, the backend reuses a run it already
//! has, publishing overwrites.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brizo_backend_core::{BackendError, ComputeBackend, ErrorClass, ExitInfo, RemoteFile};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::model::{
    AgreementRecord, Job, JobRequest, Outcome, OutputFile, Phase, PhaseTimings, Settlement,
    StagedDigests, new_job_id, now_epoch,
};
use super::store::{JobStore, StoreError, Transition};
use super::workspace::{self, PlacedInput, Workspace, place_inputs};
use crate::chain::keeper::Keeper;
use crate::config::Config;
use crate::proof::digest;
use crate::storage::{self, ResultsStore, StorageError};

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

/// Why a drive step stopped short.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// Something outside us is down (backend, results store, disk full); the job stays where
    /// it is and the loop retries it later.
    #[error("{0}")]
    Retry(String),
    /// The backend failed; what happens next is [`policy`]'s to say, from the error's class.
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the drive loop does after a step failed.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Try the step again after the backoff.
    Retry,
    /// End the job now as failed, with the error as its reason, in this phase.
    Fail(Phase),
}

/// Attempts an unclassified backend error gets before the job fails with it.
const MAX_UNKNOWN_ATTEMPTS: u32 = 6;

/// The engine's error policy: the backend error's class alone decides. A permanent error is
/// never retried; an unknown one a bounded number of times; a transient one (the engine is
/// away) until it answers again.
fn policy(e: &BackendError, attempts: u32) -> Action {
    match e.class() {
        ErrorClass::Transient => Action::Retry,
        ErrorClass::Unknown if attempts < MAX_UNKNOWN_ATTEMPTS => Action::Retry,
        ErrorClass::BadJob => Action::Fail(Phase::AlgorithmProvisioningFailed),
        ErrorClass::BadInput => Action::Fail(Phase::DataProvisioningFailed),
        _ => Action::Fail(Phase::Finished),
    }
}

pub struct Engine {
    pub store: JobStore,
    pub metadata: crate::assets::metadata::MetadataStore,
    /// The keeper deployment, when the service runs with a chain (v1 jobs settle through it).
    pub keeper: Option<Arc<Keeper>>,
    /// The compute backends by name; each job runs on the one routing chose for it.
    pub backends: std::collections::BTreeMap<String, Arc<dyn ComputeBackend>>,
    pub results: ResultsStore,
    config: Arc<Config>,
    active: Mutex<HashMap<String, CancellationToken>>,
    retry_at: Mutex<HashMap<String, (Instant, u32)>>,
    /// The key receipts are signed with, loaded (or made) once: the provider's, or the node's.
    receipt_key: Mutex<Option<alloy::signers::local::PrivateKeySigner>>,
    staging_slots: Arc<Semaphore>,
    run_slots: Arc<Semaphore>,
    wake: Notify,
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
        Arc::new(Self {
            metadata: crate::assets::metadata::MetadataStore::new(store.pool()),
            keeper,
            staging_slots: Arc::new(Semaphore::new(config.max_staging_jobs)),
            run_slots: Arc::new(Semaphore::new(config.max_running_jobs)),
            store,
            backends,
            results,
            config,
            active: Mutex::default(),
            receipt_key: Mutex::default(),
            retry_at: Mutex::default(),
            wake: Notify::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- request path -------------------------------------------------------------------

    /// Checks a request completely, then records it: a job that is accepted can run, and a
    /// request that is refused leaves nothing behind.
    pub async fn submit(&self, owner: &str, request: JobRequest) -> Result<Job, EngineError> {
        self.submit_under(owner, request, None).await
    }

    /// Like `submit`, for a job that runs under a Service Agreement (settled when it ends).
    pub async fn submit_under(
        &self,
        owner: &str,
        mut request: JobRequest,
        agreement: Option<AgreementRecord>,
    ) -> Result<Job, EngineError> {
        self.check(&mut request).await?;
        self.record(owner, request, agreement).await
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
        self.record("operator", request, None).await
    }

    async fn record(
        &self,
        owner: &str,
        request: JobRequest,
        agreement: Option<AgreementRecord>,
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
        let backend = self.backends.get(&route.backend).ok_or_else(|| {
            EngineError::Invalid(format!("backend {} is not configured", route.backend))
        })?;
        // Refuse now rather than queue behind an engine that is down: the client can retry.
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

    // ---- reconcile loop -----------------------------------------------------------------

    /// Runs until `shutdown`. Unfinished jobs are picked up at once when submitted and, for
    /// anything missed (restarts, retries), on every tick.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = Duration::from_millis(self.config.reconcile_interval_ms.max(10));
        self.sweep_orphans().await;
        let mut ticks = 0u64;
        loop {
            if let Err(e) = self.reconcile_once().await {
                warn!("reconcile: {e}");
            }
            ticks += 1;
            if ticks.is_multiple_of(60) {
                self.sweep_orphans().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
        // Drivers end with the runtime, without stopping anything: their containers go on and
        // are re-attached at the next start. (Cancelling their tokens would mean "stop the job".)
    }

    async fn reconcile_once(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut jobs = self.store.unfinished().await?;
        // Finished jobs whose agreement is not settled yet (the chain was down) come back too.
        jobs.extend(self.store.unsettled().await?);
        let now = Instant::now();
        let mut queued = 0;
        // Runs that already go on (re-attached after a restart) take their slots before any
        // queued job can: otherwise new starts would overshoot max_running_jobs.
        let mut permits: HashMap<String, OwnedSemaphorePermit> = HashMap::new();
        for job in jobs.iter().filter(|j| j.phase == Phase::Running) {
            if !self.active.lock().unwrap().contains_key(&job.id)
                && let Ok(permit) = self.run_slots.clone().try_acquire_owned()
            {
                permits.insert(job.id.clone(), permit);
            }
        }
        for job in jobs {
            if matches!(job.phase, Phase::Queued | Phase::Provisioned) {
                queued += 1;
            }
            if self.active.lock().unwrap().contains_key(&job.id) {
                continue;
            }
            if self
                .retry_at
                .lock()
                .unwrap()
                .get(&job.id)
                .is_some_and(|(at, _)| *at > now)
            {
                continue;
            }
            let token = CancellationToken::new();
            self.active
                .lock()
                .unwrap()
                .insert(job.id.clone(), token.clone());
            let engine = self.clone();
            let permit = permits.remove(&job.id);
            tokio::spawn(async move { engine.drive(job.id, token, permit).await });
        }
        metrics::gauge!("brizo_jobs_queued").set(queued as f64);
        metrics::gauge!("brizo_jobs_active").set(self.active.lock().unwrap().len() as f64);
        Ok(())
    }

    async fn drive(
        self: Arc<Self>,
        id: String,
        cancel: CancellationToken,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let result = self.drive_steps(&id, &cancel, permit).await;
        self.active.lock().unwrap().remove(&id);
        match result {
            Ok(()) => {
                self.retry_at.lock().unwrap().remove(&id);
            }
            Err(StepError::Retry(reason)) => self.retry_later(&id, &reason),
            Err(StepError::Backend(e)) => {
                let attempts = self
                    .retry_at
                    .lock()
                    .unwrap()
                    .get(&id)
                    .map(|(_, n)| n + 1)
                    .unwrap_or(1);
                match policy(&e, attempts) {
                    Action::Retry => self.retry_later(&id, &e.to_string()),
                    Action::Fail(phase) => {
                        if let Err(failed) = self.give_up(&id, e.to_string(), phase).await {
                            self.retry_later(&id, &failed.to_string());
                        } else {
                            self.retry_at.lock().unwrap().remove(&id);
                        }
                    }
                }
            }
            Err(StepError::Store(e)) => warn!(job = %id, "job store: {e}; will retry"),
        }
        self.wake.notify_one();
    }

    fn retry_later(&self, id: &str, reason: &str) {
        let mut retries = self.retry_at.lock().unwrap();
        let attempts = retries.get(id).map(|(_, n)| n + 1).unwrap_or(1);
        let delay = Duration::from_millis(500u64.saturating_mul(1 << attempts.min(6)));
        warn!(job = %id, attempt = attempts, "will retry in {delay:?}: {reason}");
        retries.insert(id.to_string(), (Instant::now() + delay, attempts));
    }

    /// Ends a job the policy gave up on, with the reason. A finished job (its after-run steps
    /// failed) is left to them: they retry on their own.
    async fn give_up(&self, id: &str, reason: String, phase: Phase) -> Result<(), StepError> {
        let Some(job) = self.store.get(id).await? else {
            return Ok(());
        };
        if job.is_finished() {
            return Err(StepError::Retry(reason));
        }
        self.finish(&job, Outcome::Failed, Some(reason), phase)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn drive_steps(
        &self,
        id: &str,
        cancel: &CancellationToken,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), StepError> {
        let mut run_permit: Option<OwnedSemaphorePermit> = permit;
        loop {
            let Some(job) = self.store.get(id).await? else {
                return Ok(());
            };
            if job.is_finished() {
                // One step per turn, each re-reading the job: a removal can arrive meanwhile.
                // The container and folder go first: nothing after needs them, and the chain
                // steps can take a while.
                if !job.removed && job.timings.cleanup_ms.is_none() {
                    self.clean_run(&job).await?;
                    continue;
                }
                if job.agreement.is_some() && job.settlement.is_none() {
                    self.settle(&job).await?;
                    continue;
                }
                if !job.removed
                    && job.wants_results_asset()
                    && job.results_did.is_none()
                    && job.outcome == Some(Outcome::Succeeded)
                {
                    self.publish_results_asset(&job).await?;
                    continue;
                }
                if !job.removed && job.receipt.is_none() {
                    self.issue_receipt(&job).await?;
                    continue;
                }
                if job.removed && !job.cleared {
                    self.clear_leftovers(&job).await.map_err(StepError::Retry)?;
                    self.store.mark_cleared(&job.id).await?;
                }
                return Ok(());
            }
            // A stop before the algorithm ran ends the job at once.
            if job.stop_requested
                && matches!(
                    job.phase,
                    Phase::Queued | Phase::Staging | Phase::Provisioned
                )
            {
                let reason = if job.removed {
                    "removed before it ran"
                } else {
                    "stopped before it ran"
                };
                self.finish(&job, Outcome::Stopped, Some(reason.into()), Phase::Finished)
                    .await?;
                continue;
            }
            let started = Instant::now();
            let phase = job.phase;
            match phase {
                Phase::Queued | Phase::Staging => {
                    // A stop while waiting for a slot ends the wait (the loop then finishes the job).
                    let _slot = tokio::select! {
                        slot = self.staging_slots.clone().acquire_owned() => slot.expect("semaphore open"),
                        _ = cancel.cancelled() => continue,
                    };
                    let mut job = job;
                    if job.phase == Phase::Queued {
                        job.timings.queued_ms =
                            Some(((now_epoch() - job.date_created).max(0.0) * 1000.0) as u64);
                        let transition = Transition {
                            timings: Some(job.timings.clone()),
                            ..Default::default()
                        };
                        self.store
                            .transition(id, Phase::Staging, transition)
                            .await?;
                    }
                    // Staging has the job's own time limit, counted from when it began (so a
                    // restart does not start it over), and a stop or removal ends it at once.
                    let began =
                        job.date_created + job.timings.queued_ms.unwrap_or(0) as f64 / 1000.0;
                    let left = Duration::from_secs_f64(
                        (began + job.timeout_secs as f64 - now_epoch()).max(0.0),
                    );
                    tokio::select! {
                        staged = tokio::time::timeout(left, self.stage(&job, Instant::now())) => match staged {
                            Ok(staged) => staged?,
                            Err(_) => {
                                let reason = format!(
                                    "the job's inputs did not arrive within its {} s limit; nothing ran",
                                    job.timeout_secs
                                );
                                self.finish(&job, Outcome::Failed, Some(reason), Phase::DataProvisioningFailed).await?;
                            }
                        },
                        _ = cancel.cancelled() => continue,
                    }
                }
                Phase::Provisioned => {
                    if run_permit.is_none() {
                        tokio::select! {
                            permit = self.run_slots.clone().acquire_owned() => run_permit = Some(permit.expect("semaphore open")),
                            _ = cancel.cancelled() => continue,
                        }
                    }
                    self.start_run(&job, started).await?;
                }
                Phase::Running => {
                    // A job re-attached after a restart takes a slot when one is free, but
                    // never waits for one: its container already runs.
                    let _slot = run_permit
                        .take()
                        .or_else(|| self.run_slots.clone().try_acquire_owned().ok());
                    self.follow_run(&job, cancel, started).await?;
                }
                Phase::Filtering => self.filter_outputs(&job, started).await?,
                Phase::Publishing => self.publish(&job, started).await?,
                Phase::Finished
                | Phase::DataProvisioningFailed
                | Phase::AlgorithmProvisioningFailed => unreachable!(),
            }
            metrics::histogram!("brizo_job_phase_seconds", "phase" => phase.name())
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// Phase 20: an empty workspace, the algorithm, the remote inputs. An input the job's
    /// backend fetches itself (S3 data next to AWS Batch) is not staged here: the run gets it
    /// straight from where it lies, and its digest comes from the backend after the run.
    async fn stage(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        ws.create(&self.config.limits.user)
            .await
            .map_err(|e| StepError::Retry(format!("job folder {}: {e}", ws.root.display())))?;
        if let Err(reason) = self.stage_algorithm(job, &ws).await {
            return self
                .finish(
                    job,
                    Outcome::Failed,
                    Some(reason),
                    Phase::AlgorithmProvisioningFailed,
                )
                .await;
        }
        let mut staged = StagedDigests::default();
        let io = |e: std::io::Error| StepError::Retry(format!("hashing what was staged: {e}"));
        staged.algorithm = Some(digest::path_async(ws.algorithm()).await.map_err(io)?);
        let backend = self.backend_of(job)?.clone();
        for placed in place_inputs(&job.request.inputs) {
            if self.backend_fetches(job, backend.as_ref(), &placed.url) {
                staged.inputs.push(None);
                continue;
            }
            match self.stage_input(&ws, &placed).await {
                Ok(path) => staged
                    .inputs
                    .push(Some(digest::path_async(path).await.map_err(io)?)),
                Err(reason) => {
                    return self
                        .finish(
                            job,
                            Outcome::Failed,
                            Some(reason),
                            Phase::DataProvisioningFailed,
                        )
                        .await;
                }
            }
        }
        // Digests are taken as the data is handed to the job, for its receipt.
        self.store.set_staged(&job.id, &staged).await?;
        let mut timings = job.timings.clone();
        timings.staging_ms = Some(started.elapsed().as_millis() as u64);
        self.store
            .transition(
                &job.id,
                Phase::Provisioned,
                Transition {
                    timings: Some(timings),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Whether the job's backend fetches this input itself: only data the backend is
    /// configured to sit next to, and only what the backend says it can reach.
    fn backend_fetches(&self, job: &Job, backend: &dyn ComputeBackend, url: &str) -> bool {
        let near = self
            .config
            .backends
            .iter()
            .find(|b| b.name == job.backend)
            .is_some_and(|b| super::routing::near(b, url));
        near && backend.capabilities().can_fetch(url)
    }

    /// The inputs the job's backend fetches itself, with their place in the container.
    fn fetched_inputs(&self, job: &Job) -> Result<Vec<RemoteFile>, StepError> {
        let backend = self.backend_of(job)?;
        Ok(place_inputs(&job.request.inputs)
            .into_iter()
            .filter(|p| self.backend_fetches(job, backend.as_ref(), &p.url))
            .map(|p| RemoteFile {
                target: p.target(),
                url: p.url,
                max_bytes: self.config.inputs.max_input_mb << 20,
            })
            .collect())
    }

    /// Digests of the inputs the run fetched, as the backend reports them, into the record.
    async fn record_fetched(
        &self,
        job: &Job,
        fetched: &[brizo_backend_core::FetchedFile],
    ) -> Result<(), StepError> {
        let Some(mut staged) = job.staged.clone() else {
            return Ok(());
        };
        if staged.inputs.iter().all(Option::is_some) {
            return Ok(());
        }
        for (i, placed) in place_inputs(&job.request.inputs).into_iter().enumerate() {
            let target = placed.target();
            if let (Some(slot @ None), Some(f)) = (
                staged.inputs.get_mut(i),
                fetched.iter().find(|f| f.target == target),
            ) {
                *slot = Some(digest::Digest {
                    size: f.size,
                    sha256: f.sha256.clone(),
                });
            }
        }
        self.store.set_staged(&job.id, &staged).await?;
        Ok(())
    }

    async fn stage_algorithm(&self, job: &Job, ws: &Workspace) -> Result<(), String> {
        let dest = ws.algorithm();
        match (&job.request.algorithm.rawcode, &job.request.algorithm.url) {
            (Some(code), _) => tokio::fs::write(&dest, code)
                .await
                .map_err(|e| format!("writing the algorithm: {e}"))?,
            (None, Some(url)) if url.starts_with("file:") => {
                let source =
                    workspace::resolve_dataset_path(url, &self.config.inputs.dataset_roots)?;
                let size = tokio::fs::metadata(&source)
                    .await
                    .map_err(|e| format!("algorithm {url}: {e}"))?
                    .len();
                if size > self.config.inputs.max_algorithm_kb * 1024 {
                    return Err(format!(
                        "algorithm {url} is larger than {} KiB",
                        self.config.inputs.max_algorithm_kb
                    ));
                }
                tokio::fs::copy(&source, &dest)
                    .await
                    .map_err(|e| format!("copying the algorithm: {e}"))?;
            }
            (None, Some(url)) => {
                let allow_private = self.config.inputs.allow_private_addresses;
                let url = storage::vet_remote_url(url, allow_private)
                    .await
                    .map_err(|e| e.to_string())?;
                storage::fetch_to_file(
                    &url,
                    &dest,
                    self.config.inputs.max_algorithm_kb * 1024,
                    allow_private,
                )
                .await
                .map_err(|e| format!("fetching the algorithm: {e}"))?;
            }
            (None, None) => return Err("the job names no algorithm".into()),
        }
        set_mode(&dest, 0o644).map_err(|e| e.to_string())
    }

    /// Puts one input in place; returns the path whose content the job sees.
    async fn stage_input(&self, ws: &Workspace, placed: &PlacedInput) -> Result<PathBuf, String> {
        let dir = ws.inputs().join(&placed.name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        set_mode(&dir, 0o755).map_err(|e| e.to_string())?;
        let dest = dir.join(placed.index.to_string());
        if placed.url.starts_with("file:") {
            // Bind-mounted, not copied: only a mount point is made here.
            let host =
                workspace::resolve_dataset_path(&placed.url, &self.config.inputs.dataset_roots)?;
            if host.is_dir() {
                tokio::fs::create_dir_all(&dest)
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                tokio::fs::write(&dest, b"")
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(host);
        }
        let allow_private = self.config.inputs.allow_private_addresses;
        let url = storage::vet_remote_url(&placed.url, allow_private)
            .await
            .map_err(|e| e.to_string())?;
        storage::fetch_to_file(
            &url,
            &dest,
            self.config.inputs.max_input_mb << 20,
            allow_private,
        )
        .await
        .map_err(|e| format!("input {}: {e}", placed.rel()))?;
        set_mode(&dest, 0o644).map_err(|e| e.to_string())?;
        Ok(dest)
    }

    fn file_inputs(&self, job: &Job) -> Result<Vec<(PlacedInput, PathBuf)>, String> {
        place_inputs(&job.request.inputs)
            .into_iter()
            .filter(|p| p.url.starts_with("file:"))
            .map(|p| {
                workspace::resolve_dataset_path(&p.url, &self.config.inputs.dataset_roots)
                    .map(|host| (p, host))
            })
            .collect()
    }

    /// Phase 30 → 40: the container starts.
    async fn start_run(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let fetch = self.fetched_inputs(job)?;
        let spec = self
            .file_inputs(job)
            .and_then(|inputs| workspace::build_spec(&self.config, job, &ws, &inputs))
            .map(|mut spec| {
                spec.fetch = fetch;
                spec
            });
        let spec = match spec {
            Ok(spec) => spec,
            Err(reason) => {
                return self
                    .finish(
                        job,
                        Outcome::Failed,
                        Some(reason),
                        Phase::DataProvisioningFailed,
                    )
                    .await;
            }
        };
        let info = match self.backend_of(job)?.start(&spec).await {
            Ok(info) => info,
            // The policy decides: a bad image or spec, or an input the run cannot fetch, ends
            // the job in the matching phase; an engine that is away is retried.
            Err(e) => return Err(e.into()),
        };
        let mut timings = job.timings.clone();
        timings.starting_ms = Some(started.elapsed().as_millis() as u64);
        self.store
            .transition(
                &job.id,
                Phase::Running,
                Transition {
                    image_digest: Some(info.image_digest),
                    date_started: Some(now_epoch()),
                    timings: Some(timings),
                    ..Default::default()
                },
            )
            .await?;
        debug!(job = %job.id, container = %info.run_id, "started");
        Ok(())
    }

    /// Phase 40: logs to disk while the run lasts; the deadline and stop requests enforced.
    async fn follow_run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<(), StepError> {
        let backend = self.backend_of(job)?;
        let logs = tokio::spawn(copy_logs(
            backend.logs(&job.id),
            self.log_path(&job.id),
            self.config.outputs.max_log_kb * 1024,
        ));
        let deadline_epoch = job.date_started.unwrap_or_else(now_epoch) + job.timeout_secs as f64;
        let remaining = Duration::from_secs_f64((deadline_epoch - now_epoch()).max(0.0));
        let (stop_requested, _) = self.store.stop_requested(&job.id).await?;
        let ended = if stop_requested {
            None
        } else {
            tokio::select! {
                exit = backend.wait(&job.id) => Some(Ok(exit)),
                _ = tokio::time::sleep(remaining) => Some(Err(Outcome::TimedOut)),
                _ = cancel.cancelled() => None,
            }
        };
        let (outcome, exit, reason) = match ended {
            Some(Ok(Ok(exit))) => {
                let (outcome, reason) = judge_exit(exit, self.config.limits.memory_mb);
                (outcome, Some(exit), reason)
            }
            // Never ran, or returned nothing readable: failed, and no exit code (no work done).
            Some(Ok(Err(e @ BackendError::RunFailed { .. }))) => {
                (Outcome::Failed, None, Some(e.to_string()))
            }
            Some(Ok(Err(BackendError::NotFound { .. }))) => (
                Outcome::Failed,
                None,
                Some(
                    "the container disappeared while the job ran (removed outside brizo?)"
                        .to_string(),
                ),
            ),
            Some(Ok(Err(e))) => {
                logs.abort();
                return Err(e.into());
            }
            Some(Err(timed_out)) => {
                backend.stop(&job.id).await?;
                match backend.wait(&job.id).await {
                    // Still queued at the deadline (a busy Batch queue): nothing ran, so this is
                    // not a timed-out run, which would count as work done.
                    Err(e @ BackendError::RunFailed { .. }) => (
                        Outcome::Failed,
                        None,
                        Some(format!(
                            "the job did not start within its {} s limit: {e}",
                            job.timeout_secs
                        )),
                    ),
                    exit => (
                        timed_out,
                        exit.ok(),
                        Some(format!(
                            "the algorithm ran longer than its {} s limit and was killed",
                            job.timeout_secs
                        )),
                    ),
                }
            }
            None => {
                // Stop or removal requested (the token fires for both; the store says which).
                backend.stop(&job.id).await?;
                let exit = backend.wait(&job.id).await.ok();
                (
                    Outcome::Stopped,
                    exit,
                    Some("stopped on request".to_string()),
                )
            }
        };
        // The log stream ends with the run; wait for the last lines, but not forever.
        let _ = tokio::time::timeout(Duration::from_secs(10), logs).await;
        let mut timings = job.timings.clone();
        timings.running_ms = Some(started.elapsed().as_millis() as u64);
        self.store
            .transition(
                &job.id,
                Phase::Filtering,
                Transition {
                    outcome: Some(outcome),
                    error: reason,
                    exit_code: exit.map(|e| e.exit_code),
                    timings: Some(timings),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Phase 50: lists outputs (regular files only: a symlink could point at the host) and
    /// applies the publisher's cap.
    async fn filter_outputs(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        // The run's outputs into the job folder (a remote run sends them back), and the digests
        // of what it fetched itself.
        match self.backend_of(job)?.collect(&job.id).await {
            Ok(collected) => self.record_fetched(job, &collected.fetched).await?,
            // A stopped or vanished run has nothing more to bring back; the folder is what it is.
            Err(BackendError::NotFound { .. }) => {}
            Err(e @ BackendError::RunFailed { .. }) => {
                let transition = Transition {
                    outcome: Some(Outcome::Failed),
                    error: Some(e.to_string()),
                    outputs: Some(vec![]),
                    ..Default::default()
                };
                self.store
                    .transition(&job.id, Phase::Publishing, transition)
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let outputs_dir = ws.outputs();
        let listed = tokio::task::spawn_blocking(move || list_outputs(&outputs_dir))
            .await
            .expect("listing does not panic");
        // What the algorithm left cannot be read (a tree deeper than paths go, a name the
        // filesystem refuses): that does not heal, so the job ends with the reason.
        let mut outputs = match listed {
            Ok(outputs) => outputs,
            Err(e) => {
                let transition = Transition {
                    outcome: Some(Outcome::Failed),
                    error: Some(format!(
                        "the job's outputs could not be listed: {e}; nothing was published"
                    )),
                    outputs: Some(vec![]),
                    ..Default::default()
                };
                self.store
                    .transition(&job.id, Phase::Publishing, transition)
                    .await?;
                return Ok(());
            }
        };
        let total: u64 = outputs.iter().map(|o| o.size).sum();
        let cap = self.config.outputs.max_output_mb << 20;
        let mut transition = Transition::default();
        if total > cap {
            outputs.clear();
            transition.outcome = Some(Outcome::Failed);
            transition.error = Some(format!(
                "outputs total {total} bytes, over the publisher's cap of {cap} bytes (outputs.max_output_mb); nothing was published"
            ));
        }
        let mut timings = job.timings.clone();
        timings.filtering_ms = Some(started.elapsed().as_millis() as u64);
        transition.outputs = Some(outputs);
        transition.timings = Some(timings);
        self.store
            .transition(&job.id, Phase::Publishing, transition)
            .await?;
        Ok(())
    }

    /// Phase 60 → 70: outputs and the log to the results store, with sizes and hashes of what
    /// was actually stored; then the container and the job folder go.
    async fn publish(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let mut published = Vec::with_capacity(job.outputs.len());
        for output in &job.outputs {
            match self
                .results
                .put_file(
                    &job.id,
                    &format!("outputs/{}", output.name),
                    &ws.outputs().join(&output.name),
                )
                .await
            {
                Ok((size, sha256)) => published.push(OutputFile {
                    name: output.name.clone(),
                    size,
                    sha256,
                }),
                // The algorithm left a file brizo cannot read (its mode, a vanished file): that
                // does not heal by retrying, so the job ends with the reason.
                Err(StorageError::Io(e)) => {
                    let reason = format!("output {} could not be read: {e}", output.name);
                    self.store
                        .transition(
                            &job.id,
                            Phase::Publishing,
                            Transition {
                                outcome: Some(Outcome::Failed),
                                error: Some(reason),
                                outputs: Some(vec![]),
                                ..Default::default()
                            },
                        )
                        .await?;
                    return Ok(());
                }
                Err(e) => return Err(StepError::Retry(e.to_string())),
            }
        }
        let log = self.log_path(&job.id);
        if log.exists() {
            self.results
                .put_file(&job.id, "logs/algorithm.log", &log)
                .await
                .map_err(|e| StepError::Retry(e.to_string()))?;
        }
        let mut timings = job.timings.clone();
        timings.publishing_ms = Some(started.elapsed().as_millis() as u64);
        let outcome = job.outcome.unwrap_or(Outcome::Failed);
        self.store
            .transition(
                &job.id,
                Phase::Finished,
                Transition {
                    outputs: Some(published),
                    date_finished: Some(now_epoch()),
                    timings: Some(timings),
                    ..Default::default()
                },
            )
            .await?;
        self.record_finish(job, outcome);
        Ok(())
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
        metrics::counter!("brizo_jobs_finished_total", "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("brizo_job_duration_seconds")
            .record((now_epoch() - job.date_created).max(0.0));
        info!(job = %job.id, outcome = outcome.as_str(), "job finished");
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

    /// Removes containers and job folders that belong to no unfinished job of this instance
    /// (left by a crash between finishing and cleaning, or by a deleted database).
    pub async fn sweep_orphans(&self) {
        let mut folders = vec![];
        if let Ok(mut dir) = tokio::fs::read_dir(self.config.jobs_dir()).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                folders.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        for (name, backend) in &self.backends {
            let runs = match backend.list_runs().await {
                Ok(runs) => runs,
                Err(e) => {
                    warn!(backend = %name, "orphan sweep: {e}");
                    continue;
                }
            };
            for id in runs {
                if self.is_orphan(&id).await {
                    info!(job = %id, backend = %name, "removing the run of a finished or unknown job");
                    if let Err(e) = backend.remove(&id).await {
                        warn!(job = %id, "orphan run: {e}");
                    }
                }
            }
        }
        for id in folders {
            if self.is_orphan(&id).await {
                let _ = Workspace::new(&self.config.jobs_dir(), &id).remove().await;
            }
        }
    }

    async fn is_orphan(&self, id: &str) -> bool {
        if self.active.lock().unwrap().contains_key(id) {
            return false;
        }
        match self.store.is_settled(id).await {
            Ok(settled) => settled,
            Err(e) => {
                warn!("orphan sweep: {e}");
                false
            }
        }
    }
}

fn judge_exit(exit: ExitInfo, memory_mb: u64) -> (Outcome, Option<String>) {
    if exit.oom_killed {
        (
            Outcome::OutOfMemory,
            Some(format!(
                "the algorithm ran out of memory (limit {memory_mb} MiB) and was killed"
            )),
        )
    } else if exit.exit_code == 0 {
        (Outcome::Succeeded, None)
    } else {
        (
            Outcome::Failed,
            Some(format!("the algorithm exited with code {}", exit.exit_code)),
        )
    }
}

/// Writes the run's log from its beginning (so a re-attach after a restart rewrites it whole),
/// cutting it at `cap` bytes with a marker.
async fn copy_logs(
    mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>,
    path: PathBuf,
    cap: u64,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::File::create(&path).await?;
    let mut written = 0u64;
    let mut cut = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        if cut {
            continue;
        }
        let room = cap.saturating_sub(written) as usize;
        if chunk.len() > room {
            file.write_all(&chunk[..room]).await?;
            file.write_all(
                b"\n[brizo: log cut here, over the publisher's limit (outputs.max_log_kb)]\n",
            )
            .await?;
            cut = true;
        } else {
            file.write_all(&chunk).await?;
        }
        written += chunk.len() as u64;
        // Readers follow the file while it grows.
        file.flush().await?;
    }
    file.flush().await
}

fn list_outputs(dir: &std::path::Path) -> std::io::Result<Vec<OutputFile>> {
    let mut out = vec![];
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        // A name that is not UTF-8 cannot be published under its own name: left out.
        let Some(rel) = entry
            .path()
            .strip_prefix(dir)
            .expect("under dir")
            .to_str()
            .map(str::to_string)
        else {
            continue;
        };
        out.push(OutputFile {
            name: rel,
            size: entry.metadata().map_err(std::io::Error::other)?.len(),
            sha256: String::new(),
        });
    }
    Ok(out)
}

fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
