use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{FetchedFile, JobSpec};

/// Why a backend call failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The engine behind the backend does not answer (daemon down, network). Retrying later helps.
    #[error("compute backend unavailable: {0}")]
    Unavailable(String),
    /// The image is not present where the job would run. Retrying does not help until it is.
    #[error("image {0} is not available to the backend; build or load it there first")]
    ImageNotFound(String),
    /// The spec cannot run as given (bad mount, bad limit). Retrying does not help.
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
    /// An input the run was to fetch itself cannot be had (missing, too large, no permission).
    /// Retrying does not help.
    #[error("{0}")]
    Input(String),
    /// The run ended without a usable result: it never started (its preparation failed), or
    /// what it returned cannot be read. Retrying does not help.
    #[error("{0}")]
    RunFailed(String),
    /// No run exists for this job id.
    #[error("no run for job {0}")]
    NotFound(String),
    #[error("compute backend error: {0}")]
    Other(String),
}

impl BackendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackendError::Unavailable(_))
    }
}

/// What the backend tells about a run it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The backend's own id for the run (container id, batch job id).
    pub run_id: String,
    /// Content digest of the image that actually runs (`sha256:...`), for receipts.
    pub image_digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: i64,
    /// The run was killed for exceeding its memory limit.
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    NotFound,
    Created,
    Running,
    Exited(ExitInfo),
}

/// A place jobs run. Every method is idempotent and keyed by the engine's job id, so the
/// engine can repeat any step after a crash without knowing how far the last attempt got.
#[async_trait]
pub trait ComputeBackend: Send + Sync + 'static {
    /// Short name used in config, logs and metrics (`docker`, `aws-batch`, ...).
    fn name(&self) -> &'static str;

    /// Whether the backend itself cuts a run off every network when `spec.network` is false.
    /// Remote engines whose isolation is the infrastructure's (subnets with no route out,
    /// security groups) answer false, and the engine says so on the jobs it sends them.
    fn isolates_network(&self) -> bool {
        true
    }

    /// Whether a run on this backend can fetch `url` itself (put it in [`JobSpec::fetch`]
    /// instead of staging it on the service host). Backends that only see the host's disk say no.
    fn fetches(&self, _url: &str) -> bool {
        false
    }

    /// Size and sha256 of each file the run fetched itself, once it ended (empty when it
    /// fetched nothing, or never got that far).
    async fn fetched(&self, _job_id: &str) -> Result<Vec<FetchedFile>, BackendError> {
        Ok(vec![])
    }

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), BackendError>;

    /// Creates and starts the run. When a run for `spec.job_id` already exists it is reused
    /// (and started if it was only created), never duplicated.
    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError>;

    async fn state(&self, job_id: &str) -> Result<RunState, BackendError>;

    /// Waits until the run exits. Returns at once for a run that already exited.
    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError>;

    /// The run's combined stdout and stderr from its beginning, following it until it ends.
    fn logs(&self, job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>>;

    /// Kills the run. Not an error when it already ended.
    async fn stop(&self, job_id: &str) -> Result<(), BackendError>;

    /// Removes every trace of the run. Not an error when there is none.
    async fn remove(&self, job_id: &str) -> Result<(), BackendError>;

    /// Job ids of all runs this backend instance holds, finished or not (for orphan cleanup).
    async fn list_runs(&self) -> Result<Vec<String>, BackendError>;
}
