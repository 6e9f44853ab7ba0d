//! Runs brizo jobs on AWS Batch, in the publisher's account, next to their S3 data.
//!
//! Only what is AWS's lives here: the settings, the Batch and CloudWatch requests, S3 for
//! staging and for the data jobs fetch themselves, and the emulator quirks. The runner
//! protocol (plan, staging, collecting outputs, the never-started rule, following logs) is
//! [`brizo_backend_remote`]'s, shared with every remote backend.
//!
//! Mapping onto Batch: one job definition per (image, runner, scratch size) starts
//! `brizo-runner` from a host path bind-mounted read-only; memory and vCPUs per job through
//! container overrides; `DescribeJobs` for status; CloudWatch Logs for the log; `TerminateJob`
//! to stop; the job's name (`brizo-<job id>`) to find a run submitted just before a crash.
//!
//! Network: Batch has no per-container "no network" on EC2, and the runner needs S3. The
//! algorithm's reach is the compute environment's: the Terraform module puts it in subnets whose
//! only route is the S3 endpoint. The capabilities say so to the engine.

mod quirks;
mod staging;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_batch::types::{
    ContainerOverrides, ContainerProperties, Host, JobDefinitionType, JobDetail, JobStatus,
    JobSummary, JobTimeout, KeyValuePair, KeyValuesPair, LinuxParameters, LogConfiguration,
    LogDriver, MountPoint, ResourceRequirement, ResourceType, Tmpfs, Volume,
};
use brizo_backend_core::{
    BackendError, BackendSettings, Capabilities, ComputeBackend, JobSpec, RemoteFile,
};
use brizo_backend_remote::{
    Image, LogRead, RemoteBackend, RemoteEngine, RemoteState, RemoteStatus, Staging, Submission,
};
use brizo_runner::{PLAN_URL_ENV, RUNNER_PATH};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use staging::S3;

pub use brizo_backend_remote::ImageSource;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsBatchConfig {
    pub region: String,
    /// Override of every AWS endpoint (an emulator such as moto). Empty for AWS itself.
    #[serde(default)]
    pub endpoint: String,
    pub job_queue: String,
    /// `s3://bucket[/prefix]` where jobs' staged files, plans and results are kept.
    pub staging: String,
    /// CloudWatch Logs group of the job containers (the job definitions send logs there).
    #[serde(default = "default_log_group")]
    pub log_group: String,
    /// Job definitions are named `<prefix>-<hash>`; the service's IAM policy allows this prefix.
    #[serde(default = "default_prefix")]
    pub job_definition_prefix: String,
    /// Where the runner binary lies on the compute environment's hosts.
    pub runner_host_path: String,
    #[serde(default)]
    pub images: ImageSource,
    /// Lifetime of the presigned URLs a job gets; it must cover queueing and running.
    #[serde(default = "default_url_ttl_secs")]
    pub url_ttl_secs: u64,
    /// How often Batch and CloudWatch are polled while a job runs.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_log_group() -> String {
    "/aws/batch/job".into()
}
fn default_prefix() -> String {
    "brizo".into()
}
fn default_url_ttl_secs() -> u64 {
    12 * 3600
}
fn default_poll_ms() -> u64 {
    500
}

/// AWS Batch's requests, for [`RemoteBackend`].
pub struct AwsBatch {
    batch: aws_sdk_batch::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    s3: S3,
    staging: Arc<dyn Staging>,
    config: AwsBatchConfig,
    /// Job definition ARNs already registered, by name.
    definitions: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// The AWS Batch backend.
pub type AwsBatchBackend = RemoteBackend<AwsBatch>;

/// Connects to Batch, CloudWatch Logs and S3 with the SDK's credential chain. `instance` and
/// `name` scope the staging prefix, as labels scope Docker containers.
pub async fn connect(
    config: AwsBatchConfig,
    instance: &str,
    name: &str,
) -> Result<AwsBatchBackend, BackendError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()));
    if !config.endpoint.is_empty() {
        loader = loader.endpoint_url(&config.endpoint);
    }
    let sdk = loader.load().await;
    let endpoint = (!config.endpoint.is_empty()).then_some(config.endpoint.as_str());
    let (s3, staging) = S3::connect(
        &config.staging,
        &sdk,
        endpoint,
        &format!("{instance}/{name}"),
        Duration::from_secs(config.url_ttl_secs),
    )?;
    let logs = if config.endpoint.is_empty() {
        aws_sdk_cloudwatchlogs::Client::new(&sdk)
    } else {
        let conf = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .interceptor(quirks::IntegerTimestamps)
            .build();
        aws_sdk_cloudwatchlogs::Client::from_conf(conf)
    };
    Ok(RemoteBackend::new(AwsBatch {
        batch: aws_sdk_batch::Client::new(&sdk),
        logs,
        s3,
        staging: Arc::new(staging),
        config,
        definitions: Default::default(),
    }))
}

/// The registry's entry point: kind `aws-batch`, settings in `[backends.aws]`.
pub async fn from_settings(
    settings: &BackendSettings,
) -> Result<Arc<dyn ComputeBackend>, BackendError> {
    let config: AwsBatchConfig = settings.parse()?;
    let backend = connect(config, &settings.instance, &settings.name).await?;
    if let Err(e) = backend.ping().await {
        // Serve anyway: jobs wait for the queue to answer.
        tracing::warn!(backend = %settings.name, "{e}");
    }
    Ok(Arc::new(backend))
}

impl AwsBatch {
    /// Batch job names allow letters, digits, `-` and `_`, up to 128.
    pub fn job_name(job_id: &str) -> String {
        let clean: String = job_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("brizo-{clean}").chars().take(128).collect()
    }

    /// The job definition for `image` (a digest or an id: what the receipt names) and the
    /// spec's scratch size, registered once.
    async fn definition(
        &self,
        spec: &JobSpec,
        image: &str,
        scratch_mib: u64,
    ) -> Result<String, BackendError> {
        let tmpfs_mib = (spec.limits.tmpfs_bytes >> 20).max(1) as i32;
        let identity = format!(
            "{}\n{}\n{}\n{}\n{}",
            image, self.config.runner_host_path, tmpfs_mib, scratch_mib, self.config.log_group
        );
        let name = format!(
            "{}-{}",
            self.config.job_definition_prefix,
            &hex::encode(sha2::Sha256::digest(identity.as_bytes()))[..24]
        );
        let mut known = self.definitions.lock().await;
        if let Some(arn) = known.get(&name) {
            return Ok(arn.clone());
        }
        let found = self
            .batch
            .describe_job_definitions()
            .job_definition_name(&name)
            .status("ACTIVE")
            .send()
            .await
            .map_err(sdk_error)?;
        let arn = match found
            .job_definitions()
            .iter()
            .filter_map(|d| d.job_definition_arn())
            .next()
        {
            Some(arn) => arn.to_string(),
            None => {
                let properties = self.container_properties(image, tmpfs_mib, scratch_mib);
                self.register(&name, properties).await?
            }
        };
        known.insert(name, arn.clone());
        Ok(arn)
    }

    /// The container of every job of one image: the runner as its first process (root only
    /// until it drops to the job's uid), a read-only root, tmpfs scratch, logs to CloudWatch.
    fn container_properties(
        &self,
        image: &str,
        tmpfs_mib: i32,
        scratch_mib: u64,
    ) -> ContainerProperties {
        let tmpfs = |path: &str, mib: i32| {
            Tmpfs::builder()
                .container_path(path)
                .size(mib)
                .mount_options("rw")
                .mount_options("nosuid")
                .mount_options("nodev")
                .build()
        };
        ContainerProperties::builder()
            .image(image)
            .command(RUNNER_PATH)
            // The runner starts as root to place read-only inputs, then drops to the
            // job's uid for good before the algorithm runs.
            .user("0")
            .privileged(false)
            .readonly_root_filesystem(true)
            .volumes(
                Volume::builder()
                    .name("brizo-runner")
                    .host(
                        Host::builder()
                            .source_path(&self.config.runner_host_path)
                            .build(),
                    )
                    .build(),
            )
            .mount_points(
                MountPoint::builder()
                    .source_volume("brizo-runner")
                    .container_path(RUNNER_PATH)
                    .read_only(true)
                    .build(),
            )
            .linux_parameters(
                LinuxParameters::builder()
                    .tmpfs(tmpfs("/tmp", tmpfs_mib))
                    .tmpfs(tmpfs("/data", scratch_mib as i32))
                    .build(),
            )
            .resource_requirements(requirement(ResourceType::Vcpu, "1"))
            .resource_requirements(requirement(ResourceType::Memory, "512"))
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &self.config.log_group)
                    .build(),
            )
            .build()
    }

    /// Registers a job definition; its ARN.
    async fn register(
        &self,
        name: &str,
        properties: ContainerProperties,
    ) -> Result<String, BackendError> {
        let registered = self
            .batch
            .register_job_definition()
            .job_definition_name(name)
            .r#type(JobDefinitionType::Container)
            .container_properties(properties)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(registered
            .job_definition_arn()
            .unwrap_or_default()
            .to_string())
    }

    async fn describe(&self, batch_job_id: &str) -> Result<Option<JobDetail>, BackendError> {
        let out = self
            .batch
            .describe_jobs()
            .jobs(batch_job_id)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.jobs().first().cloned())
    }

    /// Batch accepts a TerminateJob for a job that already ended.
    async fn terminate(&self, batch_job_id: &str) -> Result<(), BackendError> {
        self.batch
            .terminate_job()
            .job_id(batch_job_id)
            .reason("stopped by brizo")
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error)
    }

    /// The queue's jobs named `name` (ListJobs returns them in every status when filtered).
    async fn jobs_named(&self, name: &str) -> Result<Vec<JobSummary>, BackendError> {
        let filter = KeyValuesPair::builder()
            .name("JOB_NAME")
            .values(name)
            .build();
        let out = self
            .batch
            .list_jobs()
            .job_queue(&self.config.job_queue)
            .filters(filter)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out
            .job_summary_list()
            .iter()
            .filter(|j| j.job_name() == Some(name))
            .cloned()
            .collect())
    }

    /// The exit code Batch itself knows (DescribeJobs; moto has it only in ListJobs).
    async fn batch_exit_code(&self, detail: &JobDetail) -> Result<Option<i64>, BackendError> {
        if let Some(code) = detail.container().and_then(|c| c.exit_code()) {
            return Ok(Some(code as i64));
        }
        let Some(name) = detail.job_name() else {
            return Ok(None);
        };
        Ok(self
            .jobs_named(name)
            .await?
            .iter()
            .find(|j| j.job_id() == detail.job_id())
            .and_then(|j| j.container())
            .and_then(|c| c.exit_code())
            .map(|c| c as i64))
    }

    /// A Batch job this service submitted for `job_id`, found by name.
    async fn find_submitted(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        Ok(self
            .jobs_named(&Self::job_name(job_id))
            .await?
            .iter()
            .find_map(|j| j.job_id().map(str::to_string)))
    }
}

/// Error codes AWS answers when it sheds load: waiting helps, so they are transient, like a
/// 429 or a 5xx (a Batch `ServerException`), and unlike a request AWS refused.
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServerException",
];

fn sdk_error<E>(
    e: aws_sdk_batch::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> BackendError
where
    E: std::error::Error + aws_sdk_batch::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    use aws_sdk_batch::error::SdkError;
    let message = format!(
        "AWS Batch: {}",
        aws_sdk_batch::error::DisplayErrorContext(&e)
    );
    match &e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let shed = ctx.err().code().is_some_and(|c| THROTTLING.contains(&c));
            if shed || status == 429 || status >= 500 {
                BackendError::unavailable(message)
            } else {
                BackendError::other(message)
            }
        }
        _ => BackendError::unavailable(message),
    }
}

fn logs_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_cloudwatchlogs::error::SdkError<E, R>,
) -> BackendError {
    BackendError::unavailable(format!(
        "CloudWatch Logs: {}",
        aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
    ))
}

fn is_final(status: Option<&JobStatus>) -> bool {
    matches!(status, Some(JobStatus::Succeeded) | Some(JobStatus::Failed))
}

fn requirement(kind: ResourceType, value: &str) -> ResourceRequirement {
    ResourceRequirement::builder()
        .r#type(kind)
        .value(value)
        .build()
}

#[async_trait]
impl RemoteEngine for AwsBatch {
    fn name(&self) -> &'static str {
        "aws-batch"
    }

    fn label(&self) -> &'static str {
        "AWS Batch"
    }

    /// S3 objects: the runner downloads them in the job's container through presigned URLs.
    /// Never the staging bucket: a job must not reach another job's plan and upload URLs.
    /// Batch ends a job at its `attemptDurationSeconds`, the backstop.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolates_network: false,
            fetches: vec!["s3://".into()],
            never_fetches: vec![format!("s3://{}/", self.s3.staging_bucket)],
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
        let queues = self
            .batch
            .describe_job_queues()
            .job_queues(&self.config.job_queue)
            .send()
            .await
            .map_err(sdk_error)?;
        if queues.job_queues().is_empty() {
            return Err(BackendError::unavailable(format!(
                "job queue {} does not exist (apply terraform/modules/aws first)",
                self.config.job_queue
            )));
        }
        Ok(())
    }

    async fn resolve_image(&self, image: &str) -> Result<Image, BackendError> {
        brizo_backend_remote::images::resolve(image, &self.config.images).await
    }

    async fn fetch_url(&self, file: &RemoteFile) -> Result<(String, u64), BackendError> {
        self.s3.presign_object(&file.url, file.max_bytes).await
    }

    async fn submit(&self, submission: &Submission<'_>) -> Result<String, BackendError> {
        let spec = submission.spec;
        // `/data` is in memory on the job's host: room for the job's files and its outputs,
        // rounded up to a power of two so that few job definitions serve all jobs.
        let scratch_mib = ((submission.staged_bytes + spec.limits.output_bytes) >> 20)
            .max(64)
            .next_power_of_two()
            + 64;
        let definition = self
            .definition(spec, &submission.image.run, scratch_mib)
            .await?;
        let memory_mib = (spec.limits.memory_bytes >> 20).max(4);
        // The container holds the runner and the in-memory /tmp and /data besides the
        // algorithm, whose own ceiling the runner enforces.
        let container_mib = memory_mib + (spec.limits.tmpfs_bytes >> 20) + scratch_mib + 64;
        let overrides = ContainerOverrides::builder()
            .environment(
                KeyValuePair::builder()
                    .name(PLAN_URL_ENV)
                    .value(submission.plan_url)
                    .build(),
            )
            .resource_requirements(requirement(
                ResourceType::Memory,
                &container_mib.to_string(),
            ))
            .resource_requirements(requirement(
                ResourceType::Vcpu,
                &format!("{}", spec.limits.cpus.ceil().max(1.0)),
            ))
            .build();
        let submitted = self
            .batch
            .submit_job()
            .job_name(Self::job_name(&spec.job_id))
            .job_queue(&self.config.job_queue)
            .job_definition(definition)
            .container_overrides(overrides)
            .set_timeout(spec.backstop_secs.map(|secs| {
                JobTimeout::builder()
                    .attempt_duration_seconds(secs.clamp(60, i32::MAX as u64) as i32)
                    .build()
            }))
            .tags("brizo-job-id", &spec.job_id)
            .send()
            .await;
        match submitted {
            Ok(submitted) => Ok(submitted.job_id().unwrap_or_default().to_string()),
            Err(e) => {
                // The definition may have been deregistered meanwhile: look it up again.
                self.definitions.lock().await.clear();
                Err(sdk_error(e))
            }
        }
    }

    async fn find(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        self.find_submitted(job_id).await
    }

    async fn status(&self, run_id: &str) -> Result<RemoteStatus, BackendError> {
        let Some(detail) = self.describe(run_id).await? else {
            return Ok(RemoteStatus {
                state: RemoteState::Unknown,
                log_ref: None,
            });
        };
        let log_ref = detail
            .container()
            .and_then(|c| c.log_stream_name())
            .or_else(|| {
                detail
                    .attempts()
                    .last()
                    .and_then(|a| a.container())
                    .and_then(|c| c.log_stream_name())
            })
            .map(str::to_string);
        let state = match detail.status() {
            s if is_final(s) => RemoteState::Ended {
                started: detail.started_at().is_some(),
                exit_code: self.batch_exit_code(&detail).await?,
                oom_killed: detail
                    .container()
                    .and_then(|c| c.reason())
                    .is_some_and(|r| r.contains("OutOfMemory")),
                reason: detail.status_reason().map(str::to_string),
            },
            Some(JobStatus::Running) => RemoteState::Running,
            _ => RemoteState::Waiting,
        };
        Ok(RemoteStatus { state, log_ref })
    }

    async fn cancel(&self, run_id: &str) -> Result<(), BackendError> {
        self.terminate(run_id).await
    }

    async fn read_log(
        &self,
        _job_id: &str,
        _run_id: &str,
        status: &RemoteStatus,
        cursor: Option<String>,
    ) -> Result<LogRead, BackendError> {
        let Some(stream) = &status.log_ref else {
            return Ok(LogRead::default());
        };
        let events = match self
            .logs
            .get_log_events()
            .log_group_name(&self.config.log_group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(cursor)
            .send()
            .await
        {
            Ok(events) => events,
            // The stream is announced before its first event is stored (and never created when
            // the job wrote nothing): keep looking while the job runs, then end with it.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(LogRead::default());
            }
            Err(e) => return Err(logs_error(e)),
        };
        let mut bytes = Vec::new();
        for event in events.events() {
            bytes.extend_from_slice(event.message().unwrap_or_default().as_bytes());
            bytes.push(b'\n');
        }
        Ok(LogRead {
            bytes: Bytes::from(bytes),
            cursor: events.next_forward_token().map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_batch::error::{ErrorMetadata, SdkError};
    use aws_sdk_batch::operation::submit_job::SubmitJobError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use brizo_backend_core::ErrorClass;

    fn answered(status: u16, code: &str) -> ErrorClass {
        let error = SubmitJobError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        super::sdk_error(SdkError::service_error(error, raw)).class()
    }

    #[test]
    fn throttling_and_server_errors_are_waited_out_and_refusals_are_not() {
        assert_eq!(answered(400, "ThrottlingException"), ErrorClass::Transient);
        assert_eq!(
            answered(400, "TooManyRequestsException"),
            ErrorClass::Transient
        );
        assert_eq!(answered(429, "SlowDown"), ErrorClass::Transient);
        assert_eq!(answered(500, "ServerException"), ErrorClass::Transient);
        assert_eq!(answered(503, "Whatever"), ErrorClass::Transient);
        assert_eq!(answered(400, "ClientException"), ErrorClass::Unknown);
        assert_eq!(answered(403, "AccessDeniedException"), ErrorClass::Unknown);
    }
}
