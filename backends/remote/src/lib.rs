//! What every remote brizo backend shares, written once: a cloud batch service or a cluster
//! scheduler implements only its own requests ([`RemoteEngine`]: submit, find, status, cancel,
//! logs, image lookup) and [`RemoteBackend`] makes it a [`ComputeBackend`].
//!
//! The service host's disk never reaches the job's machine. For each job the backend writes,
//! in its [`Staging`], the files of the spec's read-only mounts and a runner
//! [`Plan`](brizo_runner::Plan), then submits a job whose container starts `brizo-runner` (a
//! static binary the job's hosts provide) with one URL to that plan. The runner downloads,
//! drops root, runs the algorithm under the limits, and sends the writable folders and its
//! result back the same way. [`ComputeBackend::collect`] unpacks the writable folders into the
//! spec's host paths, so the engine publishes them as for any backend.
//!
//! Everything is found again from the job id alone (`meta.json` next to the staged files names
//! the engine's run; a run submitted just before a crash is found by [`RemoteEngine::find`]),
//! so a restarted service re-attaches.

mod collect;
pub mod container;
mod follow;
pub mod images;
mod stage;
pub mod staging;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brizo_backend_core::{
    BackendError, Capabilities, Collected, ComputeBackend, ExitInfo, FetchedFile, JobSpec, Mount,
    RemoteFile, RunInfo, RunState,
};
use brizo_runner::RunResult;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use container::ContainerOptions;
pub use images::ImageSource;
pub use staging::{Access, FolderStaging, ObjectStaging, Staging};

/// The image a run uses, as the engine will start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference the engine runs (a pinned `name@sha256:...`, or a local image id).
    pub run: String,
    /// Its content digest (`sha256:...`), for receipts.
    pub digest: String,
}

/// One run to submit, everything already staged.
#[derive(Debug)]
pub struct Submission<'a> {
    pub spec: &'a JobSpec,
    pub image: &'a Image,
    /// The URL the runner reads its plan from (`BRIZO_PLAN_URL`).
    pub plan_url: &'a str,
    /// Bytes of the files the runner places in the job's scratch, before any output.
    pub staged_bytes: u64,
    /// Read-only mounts whose source the job's host shares ([`RemoteEngine::shares`]): the
    /// engine binds them at their target, nothing of them was staged.
    pub binds: &'a [Mount],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteState {
    /// Accepted, not started yet (a queue, a pending allocation).
    Waiting,
    Running,
    Ended {
        /// Whether the job's container ever started (a job cancelled in the queue never did).
        started: bool,
        /// What the engine says the container exited with, when it knows.
        exit_code: Option<i64>,
        /// The engine ended it for its memory.
        oom_killed: bool,
        /// The engine's words on why it ended.
        reason: Option<String>,
    },
    /// The engine does not know the run (any more).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    pub state: RemoteState,
    /// Where the engine keeps the run's log, when that is part of its status (a CloudWatch
    /// stream name); handed back to [`RemoteEngine::read_log`].
    pub log_ref: Option<String>,
}

impl RemoteStatus {
    pub fn is_over(&self) -> bool {
        matches!(self.state, RemoteState::Ended { .. } | RemoteState::Unknown)
    }
}

/// What one read of a run's log returned.
#[derive(Debug, Clone, Default)]
pub struct LogRead {
    pub bytes: Bytes,
    /// Where the next read starts (a token, an offset); `None` keeps the previous one.
    pub cursor: Option<String>,
}

/// The requests a remote engine answers; [`RemoteBackend`] does the rest.
#[async_trait]
pub trait RemoteEngine: Send + Sync + 'static {
    /// Short name used in config, logs and metrics (`aws-batch`, `slurm`).
    fn name(&self) -> &'static str;
    /// The engine in words, for reasons a consumer reads (`AWS Batch`, `Slurm`).
    fn label(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    fn staging(&self) -> &Arc<dyn Staging>;
    /// How often the engine is asked while a run lasts.
    fn poll(&self) -> Duration;

    async fn ping(&self) -> Result<(), BackendError>;
    /// What to run for `image`, and its digest; `ImageNotFound` when the hosts cannot have it.
    async fn resolve_image(&self, image: &str) -> Result<Image, BackendError>;
    /// A URL the runner downloads an input it fetches itself through, and the input's size.
    /// Only called for URLs the capabilities say it fetches.
    async fn fetch_url(&self, file: &RemoteFile) -> Result<(String, u64), BackendError> {
        Err(BackendError::invalid_spec(format!(
            "{} does not fetch {}",
            self.label(),
            file.url
        )))
    }
    /// Whether the job's hosts see `source` at the same path (a shared filesystem): such a
    /// read-only mount is bound in where the job runs instead of staged.
    fn shares(&self, _source: &Path) -> bool {
        false
    }
    /// Submits the run; the engine's id for it. Scoped and named by `spec.job_id` so that
    /// [`RemoteEngine::find`] finds it again.
    async fn submit(&self, submission: &Submission<'_>) -> Result<String, BackendError>;
    /// The run submitted for `job_id`, if any (for a crash between submit and `meta.json`).
    async fn find(&self, job_id: &str) -> Result<Option<String>, BackendError>;
    async fn status(&self, run_id: &str) -> Result<RemoteStatus, BackendError>;
    /// Ends the run, whatever it does; not an error when it already ended.
    async fn cancel(&self, run_id: &str) -> Result<(), BackendError>;
    /// Deletes what the engine keeps of a run that is over (Azure Batch keeps a task record and
    /// its files in the job until deleted), so that nothing of it is left and a later run of the
    /// same job id is not taken for it. Not an error when it is gone; nothing by default.
    async fn forget(&self, _run_id: &str) -> Result<(), BackendError> {
        Ok(())
    }
    /// The run's log from `cursor` on (`None`: from its beginning).
    async fn read_log(
        &self,
        job_id: &str,
        run_id: &str,
        status: &RemoteStatus,
        cursor: Option<String>,
    ) -> Result<LogRead, BackendError>;
}

/// What the backend remembers of a job, next to its staged files.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    #[serde(alias = "batch_job_id")]
    run_id: String,
    image_digest: String,
    /// Writable mounts: where each one's archive goes on this host once the job ended.
    writable: Vec<(usize, PathBuf)>,
    /// The cap the runner enforced on them (an archive far over it is not unpacked).
    #[serde(default = "unlimited")]
    output_bytes: u64,
    /// Targets of the inputs the run fetched itself.
    #[serde(default)]
    fetched: Vec<String>,
}

fn unlimited() -> u64 {
    u64::MAX / 4
}

/// A [`ComputeBackend`] made of a [`RemoteEngine`] and the runner protocol.
pub struct RemoteBackend<E> {
    engine: Arc<E>,
}

impl<E: RemoteEngine> RemoteBackend<E> {
    pub fn new(engine: E) -> Self {
        Self {
            engine: Arc::new(engine),
        }
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    async fn meta(&self, job_id: &str) -> Result<Option<Meta>, BackendError> {
        staging::get_json(self.engine.staging().as_ref(), job_id, "meta.json").await
    }

    async fn result(&self, job_id: &str) -> Result<Option<RunResult>, BackendError> {
        staging::get_json(self.engine.staging().as_ref(), job_id, "result.json").await
    }

    /// The run of `job_id`: from meta.json, else as the engine finds it.
    async fn run_id(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        match self.meta(job_id).await? {
            Some(meta) => Ok(Some(meta.run_id)),
            None => self.engine.find(job_id).await,
        }
    }

    /// Where a job stands, read once: the engine's view, then (once over) the runner's result.
    async fn observe(&self, job_id: &str) -> Result<Observed, BackendError> {
        let Some(meta) = self.meta(job_id).await? else {
            return Ok(Observed::NotFound);
        };
        let status = self.engine.status(&meta.run_id).await?;
        if !status.is_over() {
            return Ok(Observed::Running);
        }
        let result = self.result(job_id).await?;
        Ok(Observed::Ended {
            state: status.state,
            result,
        })
    }
}

/// What `observe` found.
enum Observed {
    NotFound,
    /// Waiting or running.
    Running,
    Ended {
        state: RemoteState,
        result: Option<RunResult>,
    },
}

/// The exit of an ended run: the runner's word, else (killed by a stop or the backstop, or
/// never started) the engine's. `None` when neither knows the run any more.
fn exit_of(state: &RemoteState, result: Option<&RunResult>) -> Option<ExitInfo> {
    if let Some(result) = result {
        return Some(ExitInfo {
            exit_code: result.exit_code,
            oom_killed: result.oom_killed,
        });
    }
    match state {
        RemoteState::Ended {
            exit_code,
            oom_killed,
            ..
        } => Some(ExitInfo {
            exit_code: exit_code.filter(|c| *c != 0).unwrap_or(137),
            oom_killed: *oom_killed,
        }),
        _ => None,
    }
}

/// `RunFailed` when the run ended without its algorithm having run: the runner could not
/// prepare it, or the container never started (no image, no runner on the host, cancelled in
/// the queue).
fn never_started(
    label: &str,
    state: &RemoteState,
    result: Option<&RunResult>,
) -> Result<(), BackendError> {
    match (result, state) {
        (Some(result), _) if !result.algorithm_started => Err(BackendError::run_failed(format!(
            "the job could not be prepared on {label}: {}",
            result.runner_error.as_deref().unwrap_or("no reason given")
        ))),
        (
            None,
            RemoteState::Ended {
                started: false,
                reason,
                ..
            },
        ) => Err(BackendError::run_failed(format!(
            "the job never started on {label}: {}",
            reason.as_deref().unwrap_or("no reason given")
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl<E: RemoteEngine> ComputeBackend for RemoteBackend<E> {
    fn name(&self) -> &'static str {
        self.engine.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.engine.capabilities()
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.engine.ping().await
    }

    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError> {
        if let Some(meta) = self.meta(&spec.job_id).await? {
            return Ok(RunInfo {
                run_id: meta.run_id,
                image_digest: meta.image_digest,
            });
        }
        let image = self.engine.resolve_image(&spec.image).await?;
        let staged = stage::stage(self.engine.as_ref(), spec).await?;
        let run_id = match self.engine.find(&spec.job_id).await? {
            Some(id) => id,
            None => {
                let submission = Submission {
                    spec,
                    image: &image,
                    plan_url: &staged.plan_url,
                    staged_bytes: staged.staged_bytes,
                    binds: &staged.binds,
                };
                self.engine.submit(&submission).await?
            }
        };
        let meta = Meta {
            run_id: run_id.clone(),
            image_digest: image.digest.clone(),
            writable: staged.writable,
            output_bytes: spec.limits.output_bytes,
            fetched: spec.fetch.iter().map(|f| f.target.clone()).collect(),
        };
        self.engine
            .staging()
            .put(
                &spec.job_id,
                "meta.json",
                serde_json::to_vec(&meta).expect("meta serializes"),
            )
            .await?;
        Ok(RunInfo {
            run_id,
            image_digest: image.digest,
        })
    }

    /// A run waiting in the engine's queue counts as running: it is accepted and will run
    /// without anything more from the service.
    async fn state(&self, job_id: &str) -> Result<RunState, BackendError> {
        Ok(match self.observe(job_id).await? {
            Observed::NotFound => RunState::NotFound,
            Observed::Running => RunState::Running,
            Observed::Ended { state, result, .. } => match exit_of(&state, result.as_ref()) {
                Some(exit) => RunState::Exited(exit),
                None => RunState::NotFound,
            },
        })
    }

    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError> {
        loop {
            match self.observe(job_id).await? {
                Observed::Ended { state, result, .. } => {
                    let Some(exit) = exit_of(&state, result.as_ref()) else {
                        return Err(BackendError::not_found(job_id));
                    };
                    never_started(self.engine.label(), &state, result.as_ref())?;
                    return Ok(exit);
                }
                Observed::NotFound => return Err(BackendError::not_found(job_id)),
                Observed::Running => tokio::time::sleep(self.engine.poll()).await,
            }
        }
    }

    async fn collect(&self, job_id: &str) -> Result<Collected, BackendError> {
        let Some(meta) = self.meta(job_id).await? else {
            return Err(BackendError::not_found(job_id));
        };
        collect::unpack_writable(
            self.engine.staging().as_ref(),
            job_id,
            &meta.writable,
            meta.output_bytes,
        )
        .await?;
        let fetched = self
            .result(job_id)
            .await?
            .map(|r| {
                r.files
                    .into_iter()
                    .filter(|f| meta.fetched.contains(&f.path))
                    .map(|f| FetchedFile {
                        target: f.path,
                        size: f.size,
                        sha256: f.sha256,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Collected { fetched })
    }

    fn logs(&self, job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>> {
        follow::follow(self.engine.clone(), job_id.to_string())
    }

    async fn stop(&self, job_id: &str) -> Result<(), BackendError> {
        match self.run_id(job_id).await? {
            Some(id) => self.engine.cancel(&id).await,
            None => Ok(()),
        }
    }

    async fn remove(&self, job_id: &str) -> Result<(), BackendError> {
        if let Some(id) = self.run_id(job_id).await? {
            if !self.engine.status(&id).await?.is_over() {
                self.engine.cancel(&id).await?;
            }
            self.engine.forget(&id).await?;
        }
        self.engine.staging().delete_job(job_id).await
    }

    async fn list_runs(&self) -> Result<Vec<String>, BackendError> {
        self.engine.staging().jobs().await
    }
}
