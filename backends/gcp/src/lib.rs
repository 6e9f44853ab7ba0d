//! Runs brizo jobs on Google Batch, in the publisher's project, next to their GCS data.
//!
//! Only what is Google's lives here: the settings, the Batch v1 and Cloud Logging requests
//! ([`rest`]), GCS for staging and for the data jobs fetch themselves ([`gcs`]). The runner
//! protocol (plan, staging, collecting outputs, the never-started rule, following logs) is
//! [`brizo_backend_remote`]'s, shared with every remote backend.
//!
//! Mapping onto Batch: one Batch job per brizo job, one task group of one task whose only
//! runnable is a container: the job's image with `brizo-runner` as its entrypoint, bind-mounted
//! read-only from the VM (the instance template of `terraform/modules/gcp` puts it there), the
//! limits as `computeResource` and as `docker run` options (read-only root, in-memory `/tmp` and
//! `/data`, capabilities dropped but those the runner needs), `maxRunDuration` as the backstop
//! and no retries (a failed run is the service's to judge). The VMs get no external IP, sit in
//! the configured subnetwork and run as the configured service account. The Batch job id is
//! derived from the brizo job id and the service's scope, and labels carry the same digest and
//! the brizo job id: a restarted service finds its job again by name. The log is the job's
//! `batch_task_logs` in Cloud Logging (`entries:list`); stop deletes the Batch job, and so does
//! removing the job once it ended.
//!
//! Network: Batch gives no per-container "no network", and the runner needs GCS. The
//! algorithm's reach is the subnetwork's: the Terraform module gives it Private Google Access
//! and no route to the internet. The capabilities say so to the engine.

pub mod gcs;
pub mod rest;

use std::collections::BTreeMap;
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

use gcs::Gcs;
use rest::{
    AllocationPolicy, Batch, ComputeResource, Container, Environment, InstancePolicy,
    InstancePolicyOrTemplate, Job, LocationPolicy, LogsPolicy, NetworkInterface, NetworkPolicy,
    Runnable, ServiceAccount, TaskGroup, TaskSpec,
};

pub use brizo_backend_remote::ImageSource;
pub use rest::API_VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpBatchConfig {
    /// The Google Cloud project jobs run in.
    pub project: String,
    /// The Batch location (a region, `europe-west4`).
    pub region: String,
    /// `gs://bucket[/prefix]` where jobs' staged files, plans and results are kept (a lifecycle
    /// rule of the Terraform module expires them).
    pub staging: String,
    /// The VPC network of the job VMs (`projects/P/global/networks/N`); empty: Batch's default.
    #[serde(default)]
    pub network: String,
    /// Its subnetwork (`projects/P/regions/R/subnetworks/S`), with Private Google Access.
    #[serde(default)]
    pub subnetwork: String,
    /// The service account job VMs run as (least privilege: read the runner, its own staging).
    #[serde(default)]
    pub service_account: String,
    /// An instance template of job VMs (the runner installed by its startup script). When set,
    /// its network settings are the VMs' and `network`/`subnetwork` are not sent.
    #[serde(default)]
    pub instance_template: String,
    /// A machine type for job VMs when there is no instance template (empty: Batch picks).
    #[serde(default)]
    pub machine_type: String,
    /// Override of the Batch endpoint (a stand-in server in tests). Empty for Google.
    #[serde(default)]
    pub batch_endpoint: String,
    /// Override of the Cloud Logging endpoint. Empty for Google.
    #[serde(default)]
    pub logging_endpoint: String,
    /// Override of the GCS endpoint (fake-gcs-server). Empty for Google.
    #[serde(default)]
    pub gcs_endpoint: String,
    /// Where the runner binary lies on job VMs (the startup script puts it there).
    #[serde(default = "default_runner_host_path")]
    pub runner_host_path: String,
    #[serde(default)]
    pub images: ImageSource,
    /// Lifetime of the signed URLs a job gets; it must cover queueing and running (at most 7
    /// days, V4's limit).
    #[serde(default = "default_url_ttl_secs")]
    pub url_ttl_secs: u64,
    /// How often Batch and Cloud Logging are polled while a job runs.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// How long after a job ended its log is still read: Cloud Logging stores entries some
    /// seconds after they are written.
    #[serde(default = "default_log_settle_ms")]
    pub log_settle_ms: u64,
}

fn default_runner_host_path() -> String {
    RUNNER_PATH.into()
}
fn default_url_ttl_secs() -> u64 {
    12 * 3600
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_log_settle_ms() -> u64 {
    10_000
}

/// Google Batch's requests, for [`RemoteBackend`].
pub struct GcpBatch {
    batch: Batch,
    gcs: Gcs,
    staging: Arc<dyn Staging>,
    config: GcpBatchConfig,
    /// `instance/name`: part of every Batch job id, so two services never share a job.
    scope: String,
    /// When each run was first seen over, for the log's settling time.
    ended: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// The Google Batch backend.
pub type GcpBatchBackend = RemoteBackend<GcpBatch>;

fn endpoint(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Connects to GCS and Batch with the standard Google credential chain (object_store's).
/// `instance` and `name` scope the staging prefix and the Batch job ids.
pub fn connect(
    config: GcpBatchConfig,
    instance: &str,
    name: &str,
) -> Result<GcpBatchBackend, BackendError> {
    let scope = format!("{instance}/{name}");
    let (gcs, staging) = Gcs::connect(
        &config.staging,
        endpoint(&config.gcs_endpoint),
        &scope,
        Duration::from_secs(config.url_ttl_secs),
    )?;
    let batch = Batch::new(
        gcs.credentials(),
        &config.project,
        &config.region,
        endpoint(&config.batch_endpoint),
        endpoint(&config.logging_endpoint),
    )?;
    Ok(RemoteBackend::new(GcpBatch {
        batch,
        gcs,
        staging: Arc::new(staging),
        config,
        scope,
        ended: Default::default(),
    }))
}

/// The registry's entry point: kind `gcp-batch`, settings in `[backends.gcp]`.
pub async fn from_settings(
    settings: &BackendSettings,
) -> Result<Arc<dyn ComputeBackend>, BackendError> {
    let config: GcpBatchConfig = settings.parse()?;
    let backend = connect(config, &settings.instance, &settings.name)?;
    if let Err(e) = backend.ping().await {
        // Serve anyway: jobs wait for Batch to answer.
        tracing::warn!(backend = %settings.name, "{e}");
    }
    Ok(Arc::new(backend))
}

/// A label value as Compute Engine takes it: lowercase letters, digits, `-` and `_`, at most 63.
pub fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect()
}

impl GcpBatch {
    /// The Batch job of a brizo job: `brizo-` and a digest of the scope and the job id. Batch
    /// job ids are at most 63 of lowercase letters, digits and `-`, starting with a letter,
    /// which brizo job ids need not be.
    pub fn batch_job_id(scope: &str, job_id: &str) -> String {
        let digest = sha2::Sha256::digest(format!("{scope}\n{job_id}").as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("brizo-{}", &hex[..40])
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn config(&self) -> &GcpBatchConfig {
        &self.config
    }

    /// The Batch job to create for a submission.
    pub fn job_for(&self, submission: &Submission<'_>) -> Job {
        let spec = submission.spec;
        let id = Self::batch_job_id(&self.scope, &spec.job_id);
        let labels = BTreeMap::from([
            ("brizo_run".to_string(), id),
            ("brizo_job".to_string(), label_value(&spec.job_id)),
        ]);
        Job {
            task_groups: vec![TaskGroup {
                task_spec: self.task_spec(submission),
                task_count: Some("1".into()),
                parallelism: Some("1".into()),
                name: None,
            }],
            allocation_policy: Some(self.allocation_policy(labels.clone())),
            labels,
            logs_policy: Some(LogsPolicy {
                destination: "CLOUD_LOGGING".into(),
            }),
            ..Job::default()
        }
    }

    /// The one task: the runner in the job's image, with the job's limits.
    fn task_spec(&self, submission: &Submission<'_>) -> TaskSpec {
        let spec = submission.spec;
        let container = ContainerOptions::for_spec(spec, submission.staged_bytes);
        TaskSpec {
            runnables: vec![Runnable {
                container: Some(Container {
                    image_uri: submission.image.run.clone(),
                    commands: vec![],
                    entrypoint: Some(RUNNER_PATH.into()),
                    volumes: vec![format!("{}:{RUNNER_PATH}:ro", self.config.runner_host_path)],
                    options: Some(shell_words::join(&container.options)),
                    block_external_network: None,
                }),
                environment: Some(Environment {
                    variables: BTreeMap::from([(
                        PLAN_URL_ENV.to_string(),
                        submission.plan_url.to_string(),
                    )]),
                }),
                display_name: Some("brizo-runner".into()),
            }],
            compute_resource: Some(ComputeResource {
                cpu_milli: format!("{}", (spec.limits.cpus * 1000.0).ceil().max(1.0)),
                memory_mib: container.memory_mib.to_string(),
                boot_disk_mib: None,
            }),
            max_run_duration: spec.backstop_secs.map(|s| rest::duration(s.max(1))),
            max_retry_count: 0,
            environment: None,
        }
    }

    /// Where and on what the task runs: the configured instance template, or a machine type
    /// (and network) of the config's; the region; the service account the VM acts as.
    fn allocation_policy(&self, labels: BTreeMap<String, String>) -> AllocationPolicy {
        let config = &self.config;
        let network = (config.instance_template.is_empty()
            && !(config.network.is_empty() && config.subnetwork.is_empty()))
        .then(|| NetworkPolicy {
            network_interfaces: vec![NetworkInterface {
                network: endpoint(&config.network).map(str::to_string),
                subnetwork: endpoint(&config.subnetwork).map(str::to_string),
                no_external_ip_address: true,
            }],
        });
        let instances = if !config.instance_template.is_empty() {
            vec![InstancePolicyOrTemplate {
                instance_template: Some(config.instance_template.clone()),
                policy: None,
            }]
        } else if !config.machine_type.is_empty() {
            vec![InstancePolicyOrTemplate {
                instance_template: None,
                policy: Some(InstancePolicy {
                    machine_type: Some(config.machine_type.clone()),
                }),
            }]
        } else {
            vec![]
        };
        AllocationPolicy {
            instances,
            network,
            service_account: endpoint(&config.service_account).map(|email| ServiceAccount {
                email: email.to_string(),
            }),
            location: Some(LocationPolicy {
                allowed_locations: vec![format!("regions/{}", config.region)],
            }),
            labels,
        }
    }
}

/// `(timestamp, insertIds at that timestamp)`: where the next log read starts.
fn parse_cursor(cursor: Option<&str>) -> (String, Vec<String>) {
    let cursor = cursor.map(|c| c.split_once('~').map_or(c, |(c, _)| c));
    match cursor.and_then(|c| c.split_once('|')) {
        Some((t, ids)) => (
            t.to_string(),
            ids.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (String::new(), vec![]),
    }
}

#[async_trait]
impl RemoteEngine for GcpBatch {
    fn name(&self) -> &'static str {
        "gcp-batch"
    }

    fn label(&self) -> &'static str {
        "Google Batch"
    }

    /// GCS objects: the runner downloads them in the job's container through V4 signed URLs.
    /// Never the staging bucket: a job must not reach another job's plan and upload URLs.
    /// Batch ends a task at its `maxRunDuration`, the backstop.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_network: false,
            fetches: vec!["gs://".into()],
            never_fetches: vec![format!("gs://{}/", self.gcs.staging_bucket)],
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
        self.batch.ping().await
    }

    async fn resolve_image(&self, image: &str) -> Result<Image, BackendError> {
        brizo_backend_remote::images::resolve(image, &self.config.images).await
    }

    async fn fetch_url(&self, file: &RemoteFile) -> Result<(String, u64), BackendError> {
        self.gcs.presign_object(&file.url, file.max_bytes).await
    }

    async fn submit(&self, submission: &Submission<'_>) -> Result<String, BackendError> {
        let id = Self::batch_job_id(&self.scope, &submission.spec.job_id);
        let job = self.job_for(submission);
        match self.batch.create_job(&id, &job).await {
            Ok(_) => Ok(id),
            // Created by an earlier attempt whose answer was lost: it is ours.
            Err(e) if e.to_string().contains("ALREADY_EXISTS") => Ok(id),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        let id = Self::batch_job_id(&self.scope, job_id);
        Ok(self.batch.get_job(&id).await?.map(|_| id))
    }

    async fn status(&self, run_id: &str) -> Result<RemoteStatus, BackendError> {
        let Some(job) = self.batch.get_job(run_id).await? else {
            return Ok(RemoteStatus {
                state: RemoteState::Unknown,
                log_ref: None,
            });
        };
        let status = job.status.clone().unwrap_or_default();
        let state = match status.state.as_str() {
            "SUCCEEDED" | "FAILED" | "DELETION_IN_PROGRESS" => {
                let events = match self.batch.first_task(run_id).await? {
                    Some(task) => task.status.status_events,
                    None => vec![],
                };
                let exit_code = events
                    .iter()
                    .rev()
                    .find_map(|e| e.task_execution.as_ref())
                    .map(|t| i64::from(t.exit_code));
                let started = exit_code.is_some()
                    || events
                        .iter()
                        .any(|e| e.task_state.as_deref() == Some("RUNNING"));
                let reason = status
                    .status_events
                    .last()
                    .map(|e| e.description.clone())
                    .or_else(|| {
                        (status.state == "DELETION_IN_PROGRESS")
                            .then(|| "the Batch job is being deleted".to_string())
                    });
                RemoteState::Ended {
                    started,
                    exit_code,
                    oom_killed: false,
                    reason,
                }
            }
            "RUNNING" => RemoteState::Running,
            _ => RemoteState::Waiting,
        };
        Ok(RemoteStatus {
            state,
            log_ref: job.uid,
        })
    }

    /// jobs.delete: Batch kills the task and removes the job; already gone is fine.
    async fn cancel(&self, run_id: &str) -> Result<(), BackendError> {
        self.batch.delete_job(run_id, "stopped by brizo").await
    }

    /// jobs.delete of an ended job: Batch keeps jobs (and their task records) until deleted, and
    /// a later run of the same brizo job id must not be taken for this one.
    async fn forget(&self, run_id: &str) -> Result<(), BackendError> {
        self.ended.lock().unwrap().remove(run_id);
        self.batch.delete_job(run_id, "removed by brizo").await
    }

    /// The job's `batch_task_logs` entries (stdout and stderr, one entry a line) from Cloud
    /// Logging, oldest first. The cursor is the last timestamp read and the entries read at it.
    async fn read_log(
        &self,
        _job_id: &str,
        run_id: &str,
        status: &RemoteStatus,
        cursor: Option<String>,
    ) -> Result<LogRead, BackendError> {
        let Some(uid) = &status.log_ref else {
            return Ok(LogRead::default());
        };
        let (mut since, mut seen) = parse_cursor(cursor.as_deref());
        let mut filter = format!(
            "logName=\"projects/{}/logs/{}\" AND labels.job_uid=\"{uid}\"",
            self.batch.project,
            rest::TASK_LOG
        );
        if !since.is_empty() {
            filter.push_str(&format!(" AND timestamp>=\"{since}\""));
        }
        let mut bytes = Vec::new();
        let mut token: Option<String> = None;
        // A few pages a read; the rest comes with the next one.
        for _ in 0..10 {
            let page = self.batch.log_entries(&filter, token.as_deref()).await?;
            for entry in page.entries {
                if entry.timestamp == since && seen.contains(&entry.insert_id) {
                    continue;
                }
                if entry.timestamp != since {
                    since = entry.timestamp.clone();
                    seen.clear();
                }
                seen.push(entry.insert_id);
                if let Some(text) = entry.text_payload {
                    bytes.extend_from_slice(text.as_bytes());
                    if !text.ends_with('\n') {
                        bytes.push(b'\n');
                    }
                }
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut cursor = (!since.is_empty()).then(|| format!("{since}|{}", seen.join(",")));
        // Entries of a job that just ended may still be on their way: until the settling time
        // is over, each read moves the cursor (a `~n` suffix), so that the log is not taken
        // as complete.
        if status.is_over() {
            let first = *self
                .ended
                .lock()
                .unwrap()
                .entry(run_id.to_string())
                .or_insert_with(std::time::Instant::now);
            let since_end = first.elapsed();
            if since_end < Duration::from_millis(self.config.log_settle_ms) {
                let base = cursor.clone().unwrap_or_else(|| "|".into());
                cursor = Some(format!("{base}~{}", since_end.as_millis()));
            }
        }
        Ok(LogRead {
            bytes: Bytes::from(bytes),
            cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_job_ids_fit_batch_and_depend_on_the_scope() {
        let a = GcpBatch::batch_job_id("inst/gcp", "Job-1");
        assert!(a.len() <= 63);
        assert!(a.starts_with("brizo-"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(a, GcpBatch::batch_job_id("inst/gcp", "Job-1"));
        assert_ne!(a, GcpBatch::batch_job_id("inst/gcp", "job-1"));
        assert_ne!(a, GcpBatch::batch_job_id("other/gcp", "Job-1"));
    }

    #[test]
    fn labels_are_what_compute_engine_takes() {
        assert_eq!(label_value("Job.1/A"), "job-1-a");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn the_log_cursor_is_a_timestamp_and_the_entries_read_at_it() {
        assert_eq!(parse_cursor(None), (String::new(), vec![]));
        assert_eq!(
            parse_cursor(Some("2026-01-01T00:00:00Z|a,b")),
            (
                "2026-01-01T00:00:00Z".to_string(),
                vec!["a".into(), "b".into()]
            )
        );
    }
}
