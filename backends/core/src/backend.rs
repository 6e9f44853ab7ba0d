use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{BackendError, FetchedFile, JobSpec};

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

/// What a backend can do, as one answer the engine plans with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether the backend itself cuts a run off every network when `spec.network` is false.
    /// Remote engines whose isolation is the infrastructure's (subnets with no route out,
    /// security groups) say false, and the engine says so on the jobs it sends them.
    pub isolates_network: bool,
    /// Inputs a run can fetch itself (put in [`JobSpec::fetch`] instead of being staged on the
    /// service host): objects under these URL prefixes (`s3://`), ...
    pub fetches: Vec<String>,
    /// ... except under these (a staging bucket that holds other jobs' URLs).
    pub never_fetches: Vec<String>,
    /// Whether the engine behind it ends a run at [`JobSpec::backstop_secs`] by itself, so a
    /// run the service lost still stops.
    pub backstop: bool,
}

impl Capabilities {
    /// A backend that only sees the host's disk and isolates its runs itself (Docker).
    pub fn local() -> Self {
        Self {
            isolates_network: true,
            fetches: vec![],
            never_fetches: vec![],
            backstop: false,
        }
    }

    /// Whether a run can fetch the object at `url` itself: under a fetch prefix, not under an
    /// excluded one, and an object (a key that does not end in `/`), not a prefix.
    pub fn can_fetch(&self, url: &str) -> bool {
        let under = |prefix: &String| url.starts_with(prefix.as_str());
        let object = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .is_some_and(|(bucket, key)| {
                !bucket.is_empty() && !key.is_empty() && !key.ends_with('/')
            });
        object && self.fetches.iter().any(under) && !self.never_fetches.iter().any(under)
    }
}

/// What [`ComputeBackend::collect`] found besides the outputs it put in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Size and sha256 of each file the run fetched itself (empty when it fetched nothing).
    pub fetched: Vec<FetchedFile>,
}

/// A place jobs run. Every method is idempotent and keyed by the engine's job id, so the
/// engine can repeat any step after a crash without knowing how far the last attempt got.
#[async_trait]
pub trait ComputeBackend: Send + Sync + 'static {
    /// Short name used in config, logs and metrics (`docker`, `aws-batch`, ...).
    fn name(&self) -> &'static str;

    /// What this backend can do; the engine plans each job from it.
    fn capabilities(&self) -> Capabilities;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), BackendError>;

    /// Creates and starts the run. When a run for `spec.job_id` already exists it is reused
    /// (and started if it was only created), never duplicated.
    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError>;

    async fn state(&self, job_id: &str) -> Result<RunState, BackendError>;

    /// Waits until the run exits. Returns at once for a run that already exited. A run whose
    /// algorithm never started is `RunFailed`: the engine must not take it for work done.
    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError>;

    /// After the run exited: brings its writable mounts' content into their host paths (a
    /// remote backend unpacks what the run sent back; a local one has it there already) and
    /// says what the run fetched itself. Repeatable; the engine calls it once the run ended.
    async fn collect(&self, job_id: &str) -> Result<Collected, BackendError>;

    /// The run's combined stdout and stderr from its beginning, following it until it ends.
    fn logs(&self, job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>>;

    /// Kills the run. Not an error when it already ended.
    async fn stop(&self, job_id: &str) -> Result<(), BackendError>;

    /// Removes every trace of the run. Not an error when there is none.
    async fn remove(&self, job_id: &str) -> Result<(), BackendError>;

    /// Job ids of all runs this backend instance holds, finished or not (for orphan cleanup).
    async fn list_runs(&self) -> Result<Vec<String>, BackendError>;

    /// The digest `image` would run with now, when the backend can tell without running it
    /// (`None`: it cannot, or the image is not there). A digest returned here is a valid
    /// `JobSpec::image`: a job the publisher approved is started with exactly that image.
    async fn image_digest(&self, _image: &str) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
}
