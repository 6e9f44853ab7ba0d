//! Runs brizo jobs on a Slurm cluster, through slurmrestd, next to the publisher's data on the
//! cluster's shared filesystem.
//!
//! Only what is Slurm's lives here: the settings, slurmrestd's requests ([`rest`]) and the batch
//! script ([`script`]); the runner protocol is [`brizo_backend_remote`]'s. Each job is one
//! Slurm batch job whose script runs the job's image in a container on the node (Docker, as
//! root on the node), with the runner as its first process: no network unless the dataset
//! allows it, a read-only root filesystem, no capabilities left to the algorithm, memory, CPU
//! and process limits, the algorithm as an unprivileged uid. Slurm's own limits (time, memory,
//! CPUs) are set from the job's so the cluster's accounting agrees.
//!
//! Staging is a folder on the shared filesystem ([`FolderStaging`]): the plan and the files
//! travel as `file://` paths the runner opens through a bind of the job's folder, so the
//! container needs no network. Read-only mounts already on the shared filesystem (`shared`:
//! the datasets) are bound in without a copy. Slurm writes the container's output to a file in
//! the job's folder, which the service follows while the job runs.

mod rest;
mod script;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brizo_backend_core::{BackendError, BackendSettings, Capabilities, ComputeBackend};
use brizo_backend_remote::{
    FolderStaging, Image, ImageSource, LogRead, RemoteBackend, RemoteEngine, RemoteState,
    RemoteStatus, Staging, Submission,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use rest::Token;

/// Settings of a slurm backend (`[backends.slurm]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// slurmrestd, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    /// The Slurm user jobs are submitted as; it must be able to run containers on the nodes.
    #[serde(default = "default_user")]
    pub user: String,
    /// Its JWT (`scontrol token username=USER`). Prefer `token_file`: the file is read at
    /// each request, so a rotated token is picked up without a restart.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The partition jobs go to; empty for the cluster's default.
    #[serde(default)]
    pub partition: String,
    /// A folder on the filesystem the nodes share with this host, for the jobs' staged files.
    pub staging_dir: PathBuf,
    /// Folders of that filesystem holding data (the datasets): a read-only input under one of
    /// them is bound into the job's container where it lies, never copied.
    #[serde(default)]
    pub shared: Vec<PathBuf>,
    /// Where `brizo-runner` lies on the nodes.
    pub runner_path: String,
    /// The container engine's client on the nodes.
    #[serde(default = "default_docker")]
    pub docker: String,
    #[serde(default)]
    pub images: ImageSource,
    /// How often slurmrestd is asked while a job runs.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_user() -> String {
    "root".into()
}
fn default_docker() -> String {
    "docker".into()
}
fn default_poll_ms() -> u64 {
    300
}

/// Slurm's requests, for [`RemoteBackend`].
pub struct Slurm {
    rest: rest::Rest,
    staging: Arc<dyn Staging>,
    folder: Arc<FolderStaging>,
    config: SlurmConfig,
    /// `instance/name`: in each job's comment, so that two services on one cluster never take
    /// each other's jobs.
    scope: String,
}

/// The Slurm backend.
pub type SlurmBackend = RemoteBackend<Slurm>;

pub fn connect(
    config: SlurmConfig,
    instance: &str,
    name: &str,
) -> Result<SlurmBackend, BackendError> {
    let token = match (&config.token_file, config.token.is_empty()) {
        (Some(file), _) => Token::File(file.clone()),
        (None, false) => Token::Value(config.token.clone()),
        (None, true) => {
            return Err(BackendError::invalid_spec(
                "a slurm backend needs `token_file` (or `token`): a JWT from `scontrol token`",
            ));
        }
    };
    let rest = rest::Rest::new(&config.url, &config.user, token)?;
    let scope = format!("{instance}/{name}");
    let folder = Arc::new(FolderStaging::new(&config.staging_dir, &scope)?);
    Ok(RemoteBackend::new(Slurm {
        rest,
        staging: folder.clone(),
        folder,
        config,
        scope,
    }))
}

/// The registry's entry point: kind `slurm`, settings in `[backends.slurm]`.
pub async fn from_settings(
    settings: &BackendSettings,
) -> Result<Arc<dyn ComputeBackend>, BackendError> {
    let backend = connect(settings.parse()?, &settings.instance, &settings.name)?;
    if let Err(e) = backend.ping().await {
        // Serve anyway: jobs wait for the cluster to answer.
        tracing::warn!(backend = %settings.name, "{e}");
    }
    Ok(Arc::new(backend))
}

impl Slurm {
    /// Slurm job names: `brizo-<job id>`.
    pub fn job_name(job_id: &str) -> String {
        format!("brizo-{job_id}")
    }

    fn comment(&self, job_id: &str) -> String {
        format!("brizo {} {job_id}", self.scope)
    }

    /// Docker names allow letters, digits, `_`, `.` and `-`.
    fn container(&self, job_id: &str) -> String {
        let scope: String = self
            .scope
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("brizo-slurm-{scope}-{job_id}")
    }

    async fn engine_result(&self, job_id: &str) -> Result<Option<EngineResult>, BackendError> {
        brizo_backend_remote::staging::get_json(
            self.staging.as_ref(),
            job_id,
            script::ENGINE_RESULT,
        )
        .await
    }

    /// How an ended Slurm job ended. The script's report proves the container started;
    /// without it (cancelled in the queue, no image on the node) nothing ran. `lost`: its node
    /// failed and Slurm requeued it, so Slurm's own exit and state say nothing of the run.
    async fn ended(&self, job: &rest::Job, lost: bool) -> Result<RemoteState, BackendError> {
        let report = match self.job_id_of(job) {
            Some(id) => self.engine_result(&id).await?,
            None => None,
        };
        let (fallback_exit, reason) = if lost {
            (
                137,
                "the job's node failed (Slurm requeued it; brizo does not run a job twice)"
                    .to_string(),
            )
        } else {
            let detail = if job.state_reason.is_empty() || job.state_reason == "None" {
                String::new()
            } else {
                format!(" ({})", job.state_reason)
            };
            (
                exit_of_wait_status(job.exit_code),
                format!("the Slurm job ended {}{detail}", job.job_state),
            )
        };
        Ok(RemoteState::Ended {
            started: report.is_some(),
            exit_code: Some(report.as_ref().map_or(fallback_exit, |r| r.exit_code)),
            oom_killed: report.is_some_and(|r| r.oom_killed)
                || (!lost && job.job_state == "OUT_OF_MEMORY"),
            reason: Some(reason),
        })
    }

    /// The brizo job id of a Slurm job, from its comment (for the status of a run id).
    fn job_id_of(&self, job: &rest::Job) -> Option<String> {
        job.comment
            .strip_prefix(&format!("brizo {} ", self.scope))
            .map(str::to_string)
    }
}

/// How the container ended, as the job script saw it.
#[derive(Debug, Deserialize)]
struct EngineResult {
    exit_code: i64,
    #[serde(default)]
    oom_killed: bool,
}

/// A wait status as a shell would report it: the code, or 128 + the signal.
fn exit_of_wait_status(status: i64) -> i64 {
    if status & 0x7f != 0 {
        128 + (status & 0x7f)
    } else {
        (status >> 8) & 0xff
    }
}

fn is_under(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| path.starts_with(root))
}

#[async_trait]
impl RemoteEngine for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn label(&self) -> &'static str {
        "Slurm"
    }

    /// Every run is cut off the network by its container; inputs are staged by the service
    /// (or bound from the shared filesystem), never fetched from the node; Slurm's time limit
    /// is the backstop.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_network: true,
            fetches: vec![],
            never_fetches: vec![],
            backstop: true,
        }
    }

    fn staging(&self) -> &Arc<dyn Staging> {
        &self.staging
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_ms)
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.rest.ping().await
    }

    async fn resolve_image(&self, image: &str) -> Result<Image, BackendError> {
        brizo_backend_remote::images::resolve(image, &self.config.images).await
    }

    fn shares(&self, source: &Path) -> bool {
        is_under(source, &self.config.shared)
    }

    async fn submit(&self, submission: &Submission<'_>) -> Result<String, BackendError> {
        let spec = submission.spec;
        // `/data` is in memory in the container: the staged files and the outputs.
        let scratch_mib = ((submission.staged_bytes + spec.limits.output_bytes) >> 20) + 64;
        let memory_mib = (spec.limits.memory_bytes >> 20).max(4);
        // The container holds the runner and the in-memory /tmp and /data besides the
        // algorithm, whose own ceiling the runner enforces.
        let container_mib = memory_mib + (spec.limits.tmpfs_bytes >> 20) + scratch_mib + 64;
        let job_dir = self.folder.job_dir(&spec.job_id);
        let labels = [
            ("brizo.job-id".to_string(), spec.job_id.clone()),
            ("brizo.scope".to_string(), self.scope.clone()),
        ];
        let container = self.container(&spec.job_id);
        let text = script::Script {
            spec,
            image: &submission.image.run,
            container: &container,
            job_dir: &job_dir,
            plan_url: submission.plan_url,
            runner: &self.config.runner_path,
            docker: &self.config.docker,
            binds: submission.binds,
            scratch_mib,
            container_mib,
            labels: &labels,
        }
        .render();
        let log = job_dir.join(script::LOG).display().to_string();
        let mut job = json!({
            "name": Self::job_name(&spec.job_id),
            "comment": self.comment(&spec.job_id),
            "environment": { "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
            "current_working_directory": job_dir.display().to_string(),
            "standard_output": log,
            "standard_error": log,
            "memory_per_node": container_mib,
            "cpus_per_task": spec.limits.cpus.ceil().max(1.0) as u64,
            // A job whose node fails must end instead of running again behind the service's
            // back (the engine decides what a lost run means). slurmrestd 22.05 ignores this
            // (the job shows Requeue=1), so a requeued job is also ended in `status` and its
            // script refuses a second run.
            "requeue": false,
        });
        if let Some(secs) = spec.backstop_secs {
            job["time_limit"] = json!(secs.div_ceil(60).max(1));
        }
        if !self.config.partition.is_empty() {
            job["partition"] = json!(self.config.partition);
        }
        Ok(self.rest.submit(&text, job).await?.to_string())
    }

    async fn find(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        let (name, comment) = (Self::job_name(job_id), self.comment(job_id));
        Ok(self
            .rest
            .jobs()
            .await?
            .into_iter()
            .filter(|j| j.name == name && j.comment == comment)
            .map(|j| j.job_id)
            .max()
            .map(|id| id.to_string()))
    }

    async fn status(&self, run_id: &str) -> Result<RemoteStatus, BackendError> {
        let Some(job) = self.rest.job(run_id).await? else {
            return Ok(RemoteStatus {
                state: RemoteState::Unknown,
                log_ref: None,
            });
        };
        let lost =
            job.restart_cnt > 0 && job.job_state != "RUNNING" && job.job_state != "COMPLETING";
        if lost && job.job_state == "PENDING" {
            // Requeued after its node failed: brizo runs a job once.
            self.rest.cancel(run_id).await?;
        }
        let state = match job.job_state.as_str() {
            _ if lost => self.ended(&job, true).await?,
            "PENDING" | "REQUEUED" | "RESV_DEL_HOLD" | "SUSPENDED" => RemoteState::Waiting,
            // COMPLETING: the script still reports how the container ended.
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => {
                RemoteState::Running
            }
            _ => self.ended(&job, false).await?,
        };
        Ok(RemoteStatus {
            state,
            log_ref: None,
        })
    }

    async fn cancel(&self, run_id: &str) -> Result<(), BackendError> {
        self.rest.cancel(run_id).await
    }

    /// The job's output file from byte `cursor` on, a bounded piece at a time.
    async fn read_log(
        &self,
        job_id: &str,
        _run_id: &str,
        _status: &RemoteStatus,
        cursor: Option<String>,
    ) -> Result<LogRead, BackendError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let offset: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let path = self.folder.job_dir(job_id).join(script::LOG);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            // Slurm creates it when the job starts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogRead::default()),
            Err(e) => {
                return Err(
                    BackendError::unavailable(format!("the job's log {}", path.display()))
                        .because(e),
                );
            }
        };
        let io = |e: std::io::Error| {
            BackendError::unavailable(format!("the job's log {}", path.display())).because(e)
        };
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.take(1 << 20)
            .read_to_end(&mut bytes)
            .await
            .map_err(io)?;
        let next = offset + bytes.len() as u64;
        Ok(LogRead {
            bytes: bytes.into(),
            cursor: Some(next.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_read_as_a_shell_would() {
        assert_eq!(exit_of_wait_status(768), 3);
        assert_eq!(exit_of_wait_status(0), 0);
        assert_eq!(exit_of_wait_status(9), 137);
        assert_eq!(exit_of_wait_status(15), 143);
    }

    #[test]
    fn only_inputs_on_the_shared_filesystem_are_bound() {
        let roots = vec![PathBuf::from("/shared/datasets")];
        assert!(is_under(
            Path::new("/shared/datasets/weather/daily.csv"),
            &roots
        ));
        assert!(
            !is_under(Path::new("/shared/datasets-old/x"), &roots),
            "whole components only"
        );
        assert!(!is_under(Path::new("/srv/brizo/jobs/j1/algorithm"), &roots));
    }
}
