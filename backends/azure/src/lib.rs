//! Runs brizo jobs on Azure Batch, in the publisher's subscription, next to their Blob data.
//!
//! Only what is Azure's lives here: the settings, the Batch REST requests ([`rest`]), Blob for
//! staging and for the data tasks fetch themselves ([`blob`]). The runner protocol (plan,
//! staging, collecting outputs, the never-started rule, following logs) is
//! [`brizo_backend_remote`]'s, shared with every remote backend.
//!
//! Mapping onto Batch: the pool (container-enabled, made by `terraform/modules/azure`) has the
//! runner on every node (its start task puts it at `runner_host_path`); one Batch job, also
//! Terraform's, holds one task per brizo job. The task runs `brizo-runner` in the job's image,
//! bind-mounted read-only, with the limits as `docker create` options (`containerRunOptions`:
//! memory, CPUs, pids, read-only root, in-memory `/tmp` and `/data`, capabilities dropped but
//! those the runner needs to place files and give up root); `maxWallClockTime` is the backstop
//! and `maxTaskRetryCount` 0 (a failed run is the service's to judge). The task id is derived
//! from the brizo job id and the service's scope, so a restarted service finds its task again;
//! its stdout.txt and stderr.txt are the log; TerminateTask stops it; removing a job deletes its
//! task.
//!
//! Credentials: Batch takes a Microsoft Entra ID token of the identity brizo runs as, from the
//! standard Azure credential chain ([`entra`]), by default, or the account's access key
//! ([`shared_key`], `auth = "shared_key"`); Blob takes the standard chain as object_store reads
//! it ([`blob`]).
//!
//! Network: Batch gives no per-container "no network", and the runner needs Blob. The
//! algorithm's reach is the pool's: the Terraform module puts it in a subnet whose only way out
//! is the storage account's private endpoint. The capabilities say so to the engine.

pub mod blob;
pub mod entra;
pub mod rest;
pub mod shared_key;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brizo_backend_core::{BackendError, BackendSettings, Capabilities, ComputeBackend, RemoteFile};
use brizo_backend_remote::{
    ContainerOptions, Image, LogRead, RemoteBackend, RemoteEngine, RemoteState, RemoteStatus,
    Staging, Submission,
};
use brizo_runner::{PLAN_URL_ENV, RUNNER_PATH};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use blob::Blob;
use rest::{
    Auth, AutoUser, Batch, ContainerSettings, EnvironmentSetting, TaskAdd, TaskConstraints,
    UserIdentity,
};

pub use brizo_backend_remote::ImageSource;
pub use rest::API_VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBatchConfig {
    /// The Batch account's URL, `https://<account>.<region>.batch.azure.com`.
    pub batch_url: String,
    /// The Batch account's name.
    pub batch_account: String,
    /// How brizo authenticates to Batch. `entra`, the default: Microsoft Entra ID tokens of the
    /// identity brizo runs as, from the standard Azure credential chain (environment service
    /// principal, workload identity, managed identity, Azure CLI; see [`entra`]); that identity
    /// needs a Batch role on the account (terraform/modules/azure assigns it). `shared_key`: the
    /// account's access key from `batch_key_env`, which gives full control of the account (the
    /// Terraform module turns Shared Key off unless asked).
    #[serde(default)]
    pub auth: BatchAuth,
    /// With `auth = "shared_key"`: the environment variable holding the account's access key
    /// (never the config file).
    #[serde(default = "default_key_env")]
    pub batch_key_env: String,
    /// With `auth = "entra"`: the token scope, Batch's resource and `/.default`. Another cloud's
    /// Batch resource when not Azure's public cloud (`https://batch.chinacloudapi.cn//.default`).
    #[serde(default = "default_entra_scope")]
    pub entra_scope: String,
    /// The pool tasks run on (container-enabled, the runner on its nodes).
    pub pool_id: String,
    /// The Batch job brizo's tasks go into (on `pool_id`).
    pub job_id: String,
    /// The storage account of the staging container and of the data tasks fetch themselves.
    pub storage_account: String,
    /// Where jobs' staged files, plans and results are kept (an expiry rule cleans it up).
    pub staging_container: String,
    #[serde(default = "default_staging_prefix")]
    pub staging_prefix: String,
    /// The storage account's blob endpoint when it is not `https://<account>.blob.core.windows.net`
    /// (Azurite, a sovereign cloud). Empty for Azure itself.
    #[serde(default)]
    pub blob_endpoint: String,
    /// Where the runner binary lies on the pool's nodes (the start task puts it there).
    #[serde(default = "default_runner_host_path")]
    pub runner_host_path: String,
    #[serde(default)]
    pub images: ImageSource,
    /// Lifetime of the SAS URLs a task gets; it must cover queueing and running.
    #[serde(default = "default_url_ttl_secs")]
    pub url_ttl_secs: u64,
    /// How long Batch keeps an ended task's folder (its stdout/stderr).
    #[serde(default = "default_retention_secs")]
    pub retention_secs: u64,
    /// How often Batch is polled while a task runs.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

/// How requests to Batch are authenticated: see [`AzureBatchConfig::auth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchAuth {
    #[default]
    Entra,
    SharedKey,
}

/// The most one read of a task file asks for.
const LOG_READ_BYTES: u64 = 4 << 20;

fn default_key_env() -> String {
    "AZURE_BATCH_ACCESS_KEY".into()
}
fn default_entra_scope() -> String {
    entra::BATCH_SCOPE.into()
}
fn default_staging_prefix() -> String {
    "jobs".into()
}
fn default_runner_host_path() -> String {
    RUNNER_PATH.into()
}
fn default_url_ttl_secs() -> u64 {
    12 * 3600
}
fn default_retention_secs() -> u64 {
    7 * 24 * 3600
}
fn default_poll_ms() -> u64 {
    500
}

/// Azure Batch's requests, for [`RemoteBackend`].
pub struct AzureBatch {
    batch: Batch,
    blob: Blob,
    staging: Arc<dyn Staging>,
    config: AzureBatchConfig,
    /// `instance/name`: part of every task id, so two services never share a task.
    scope: String,
}

/// The Azure Batch backend.
pub type AzureBatchBackend = RemoteBackend<AzureBatch>;

/// Connects to Batch (as `auth` says) and Blob (the standard Azure credential chain).
/// `instance` and `name` scope the staging prefix and the task ids. No token is asked for
/// here: the first request to Batch does.
pub fn connect(
    config: AzureBatchConfig,
    instance: &str,
    name: &str,
) -> Result<AzureBatchBackend, BackendError> {
    let auth = match config.auth {
        BatchAuth::Entra => {
            let chain = entra::Chain::from_env(rest::http_client()?)?;
            Auth::Entra(Arc::new(entra::Tokens::new(chain, &config.entra_scope)))
        }
        BatchAuth::SharedKey => {
            let key = std::env::var(&config.batch_key_env).map_err(|_| {
                BackendError::invalid_spec(format!(
                    "auth = \"shared_key\" but the Batch account key is not in ${} (set it, name another variable in batch_key_env, \
                     or use auth = \"entra\" with an identity that has a Batch role)",
                    config.batch_key_env
                ))
            })?;
            Auth::SharedKey(shared_key::SharedKey::new(&config.batch_account, &key)?)
        }
    };
    let batch = Batch::new(&config.batch_url, auth)?;
    let scope = format!("{instance}/{name}");
    let endpoint = (!config.blob_endpoint.is_empty()).then_some(config.blob_endpoint.as_str());
    let (blob, staging) = Blob::connect(
        &config.storage_account,
        endpoint,
        &config.staging_container,
        &config.staging_prefix,
        &scope,
        Duration::from_secs(config.url_ttl_secs),
    )?;
    Ok(RemoteBackend::new(AzureBatch {
        batch,
        blob,
        staging: Arc::new(staging),
        config,
        scope,
    }))
}

/// The registry's entry point: kind `azure-batch`, settings in `[backends.azure]`.
pub async fn from_settings(
    settings: &BackendSettings,
) -> Result<Arc<dyn ComputeBackend>, BackendError> {
    let config: AzureBatchConfig = settings.parse()?;
    let backend = connect(config, &settings.instance, &settings.name)?;
    if let Err(e) = backend.ping().await {
        // Serve anyway: jobs wait for Batch to answer.
        tracing::warn!(backend = %settings.name, "{e}");
    }
    Ok(Arc::new(backend))
}

impl AzureBatch {
    /// The task of a brizo job: `brizo-` and a digest of the scope and the job id. Batch ids
    /// are at most 64 of `[A-Za-z0-9_-]` and case-insensitive, which job ids need not be.
    pub fn task_id(scope: &str, job_id: &str) -> String {
        let digest = sha2::Sha256::digest(format!("{scope}\n{job_id}").as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("brizo-{}", &hex[..40])
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn config(&self) -> &AzureBatchConfig {
        &self.config
    }

    /// The task to add for a submission: the runner in the job's image, the limits as
    /// `docker create` options.
    pub fn task_for(&self, submission: &Submission<'_>) -> TaskAdd {
        let spec = submission.spec;
        let mut options = ContainerOptions::for_spec(spec, submission.staged_bytes).options;
        options.extend([
            "-v".into(),
            format!("{}:{RUNNER_PATH}:ro", self.config.runner_host_path),
        ]);
        TaskAdd {
            id: Self::task_id(&self.scope, &spec.job_id),
            display_name: Some(
                format!("brizo job {}", spec.job_id)
                    .chars()
                    .take(1024)
                    .collect(),
            ),
            command_line: RUNNER_PATH.into(),
            container_settings: ContainerSettings {
                image_name: submission.image.run.clone(),
                container_run_options: shell_words::join(&options),
                working_directory: "containerImageDefault".into(),
            },
            environment_settings: vec![EnvironmentSetting {
                name: PLAN_URL_ENV.into(),
                value: submission.plan_url.into(),
            }],
            constraints: TaskConstraints {
                max_wall_clock_time: spec.backstop_secs.map(|s| rest::iso_duration(s.max(1))),
                retention_time: Some(rest::iso_duration(self.config.retention_secs)),
                max_task_retry_count: 0,
            },
            user_identity: UserIdentity {
                auto_user: AutoUser {
                    scope: "task".into(),
                    elevation_level: "nonadmin".into(),
                },
            },
        }
    }

    /// New bytes of one task file from `offset`, and the offset after them.
    async fn read_file(
        &self,
        task_id: &str,
        name: &str,
        offset: u64,
    ) -> Result<(Bytes, u64), BackendError> {
        let job = &self.config.job_id;
        let Some(size) = self.batch.task_file_size(job, task_id, name).await? else {
            return Ok((Bytes::new(), offset));
        };
        if size <= offset {
            return Ok((Bytes::new(), offset));
        }
        // At most a few MiB per read: a long log comes in pieces, never whole in memory.
        let end = (size - 1).min(offset + LOG_READ_BYTES - 1);
        let bytes = self
            .batch
            .task_file_range(job, task_id, name, offset, end)
            .await?;
        let next = offset + bytes.len() as u64;
        Ok((bytes, next))
    }
}

#[async_trait]
impl RemoteEngine for AzureBatch {
    fn name(&self) -> &'static str {
        "azure-batch"
    }

    fn label(&self) -> &'static str {
        "Azure Batch"
    }

    /// Blobs of the configured storage account: the runner downloads them in the task's
    /// container through SAS URLs. Never the staging container: a task must not reach another
    /// job's plan and upload URLs. Batch ends a task at its `maxWallClockTime`, the backstop.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_network: false,
            fetches: vec![format!("az://{}/", self.blob.account)],
            never_fetches: vec![format!(
                "az://{}/{}/",
                self.blob.account, self.blob.staging_container
            )],
            backstop: true,
        }
    }

    fn staging(&self) -> &Arc<dyn Staging> {
        &self.staging
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_ms)
    }

    /// The configured job takes tasks and runs them on the configured pool, which exists.
    async fn ping(&self) -> Result<(), BackendError> {
        let (job_id, pool_id) = (&self.config.job_id, &self.config.pool_id);
        let job = match self.batch.job(job_id).await? {
            None => {
                return Err(BackendError::unavailable(format!(
                    "Batch job {job_id} does not exist (apply terraform/modules/azure first)"
                )));
            }
            Some(job) if job.state != "active" => {
                return Err(BackendError::unavailable(format!(
                    "Batch job {job_id} is {}, not active: it takes no tasks",
                    job.state
                )));
            }
            Some(job) => job,
        };
        let on = job.pool_info.map(|p| p.pool_id).unwrap_or_default();
        if !on.eq_ignore_ascii_case(pool_id) {
            return Err(BackendError::unavailable(format!(
                "Batch job {job_id} runs on pool {on:?}, not on the configured pool {pool_id}"
            )));
        }
        match self.batch.pool(pool_id).await? {
            None => Err(BackendError::unavailable(format!(
                "Batch pool {pool_id} does not exist (apply terraform/modules/azure first)"
            ))),
            Some(pool) if pool.state != "active" => Err(BackendError::unavailable(format!(
                "Batch pool {pool_id} is {}, not active",
                pool.state
            ))),
            Some(pool) => {
                if pool.current_dedicated_nodes + pool.current_low_priority_nodes == 0 {
                    tracing::info!(
                        "Batch pool {pool_id} has no node right now ({}): tasks wait for one",
                        pool.allocation_state
                    );
                }
                Ok(())
            }
        }
    }

    async fn resolve_image(&self, image: &str) -> Result<Image, BackendError> {
        brizo_backend_remote::images::resolve(image, &self.config.images).await
    }

    async fn fetch_url(&self, file: &RemoteFile) -> Result<(String, u64), BackendError> {
        self.blob.presign_blob(&file.url, file.max_bytes).await
    }

    async fn submit(&self, submission: &Submission<'_>) -> Result<String, BackendError> {
        let task = self.task_for(submission);
        self.batch.add_task(&self.config.job_id, &task).await?;
        Ok(task.id)
    }

    async fn find(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        let id = Self::task_id(&self.scope, job_id);
        Ok(self
            .batch
            .task(&self.config.job_id, &id)
            .await?
            .map(|t| t.id))
    }

    async fn status(&self, run_id: &str) -> Result<RemoteStatus, BackendError> {
        let Some(task) = self.batch.task(&self.config.job_id, run_id).await? else {
            return Ok(RemoteStatus {
                state: RemoteState::Unknown,
                log_ref: None,
            });
        };
        let state = match task.state.as_str() {
            "completed" => {
                let info = task.execution_info.unwrap_or_default();
                let failure = info.failure_info.as_ref();
                // A task whose container never ran (no image, terminated in the queue) has a
                // failure and no exit code of its program.
                let started =
                    info.start_time.is_some() && !(failure.is_some() && info.exit_code.is_none());
                RemoteState::Ended {
                    started,
                    exit_code: info.exit_code,
                    oom_killed: false,
                    reason: failure.map(|f| {
                        format!(
                            "{} ({})",
                            f.message.as_deref().unwrap_or("no message"),
                            f.code.as_deref().unwrap_or(&f.category)
                        )
                    }),
                }
            }
            "running" => RemoteState::Running,
            _ => RemoteState::Waiting,
        };
        Ok(RemoteStatus {
            state,
            log_ref: None,
        })
    }

    async fn cancel(&self, run_id: &str) -> Result<(), BackendError> {
        self.batch.terminate_task(&self.config.job_id, run_id).await
    }

    /// Task_Delete: the task record and its folder on the node go with the job.
    async fn forget(&self, run_id: &str) -> Result<(), BackendError> {
        self.batch.delete_task(&self.config.job_id, run_id).await
    }

    /// stdout.txt, then stderr.txt; the cursor is both offsets (`out:err`).
    async fn read_log(
        &self,
        _job_id: &str,
        run_id: &str,
        _status: &RemoteStatus,
        cursor: Option<String>,
    ) -> Result<LogRead, BackendError> {
        let (out, err) = cursor
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .and_then(|(o, e)| Some((o.parse().ok()?, e.parse().ok()?)))
            .unwrap_or((0u64, 0u64));
        let (stdout, out_next) = self.read_file(run_id, "stdout.txt", out).await?;
        let (stderr, err_next) = self.read_file(run_id, "stderr.txt", err).await?;
        let mut bytes = stdout.to_vec();
        bytes.extend_from_slice(&stderr);
        Ok(LogRead {
            bytes: Bytes::from(bytes),
            cursor: Some(format!("{out_next}:{err_next}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_fit_batch_and_depend_on_the_scope() {
        let a = AzureBatch::task_id("inst/azure", "Job-1");
        assert!(a.len() <= 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(a, AzureBatch::task_id("inst/azure", "Job-1"));
        assert_ne!(a, AzureBatch::task_id("inst/azure", "job-1"));
        assert_ne!(a, AzureBatch::task_id("other/azure", "Job-1"));
    }
}
