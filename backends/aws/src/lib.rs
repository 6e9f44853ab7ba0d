//! Runs brizo jobs on AWS Batch, in the publisher's account, next to their S3 data.
//!
//! The service host's disk never reaches the job's machine. For each job the backend writes,
//! under its S3 staging prefix, the files of the spec's read-only mounts and a runner
//! [`Plan`](brizo_runner::Plan), then submits a Batch job whose container starts
//! `brizo-runner` (a static binary the compute environment's hosts provide, bind-mounted by the
//! job definition) with one presigned URL to that plan. The runner downloads, drops root, runs
//! the algorithm under the limits, and sends the writable folders and its result back through
//! presigned PUTs. When the job has ended, [`ComputeBackend::wait`] unpacks the writable folders
//! into the spec's host paths, so the engine publishes them as for any backend.
//!
//! Mapping onto Batch: one job definition per (image, runner, scratch size); memory and vCPUs
//! per job through container overrides; `DescribeJobs` for status; CloudWatch Logs for the log;
//! `TerminateJob` to stop. Everything is found again from the job id alone (a `meta.json` next
//! to the staged files names the Batch job), so a restarted service re-attaches.
//!
//! Network: Batch has no per-container "no network" on EC2, and the runner needs S3. The
//! algorithm's reach is the compute environment's: the Terraform module puts it in subnets whose
//! only route is the S3 endpoint. [`ComputeBackend::isolates_network`] says so to the engine.

pub mod emulator;
mod quirks;
mod staging;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_batch::types::{
    ContainerOverrides, ContainerProperties, Host, JobDefinitionType, JobDetail, JobStatus, JobSummary, JobTimeout, KeyValuePair, KeyValuesPair, LinuxParameters, LogConfiguration, LogDriver, MountPoint,
    ResourceRequirement, ResourceType, Tmpfs, Volume,
};
use brizo_backend_core::{BackendError, ComputeBackend, ExitInfo, FetchedFile, JobSpec, RunInfo, RunState};
use brizo_runner::{FileDownload, PLAN_URL_ENV, Plan, PlanLimits, RUNNER_PATH, RunResult, WritableDir};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::signer::Method;
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use staging::Staging;

/// How the backend learns an image's digest and that it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// The compute hosts use the images of the Docker engine on this host (moto runs Batch
    /// jobs on the local engine; so do single-host setups): it is asked for the image's id,
    /// and the job runs that id, so the receipt names exactly what ran.
    Docker,
    /// Images must be referenced by digest (`name@sha256:...`), which the hosts pull; nothing
    /// is looked up here.
    #[default]
    Pinned,
}

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

/// What the backend remembers of a job, next to its staged files.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    batch_job_id: String,
    image_digest: String,
    /// Writable mounts: where each one's archive goes on this host once the job ended.
    writable: Vec<(usize, PathBuf)>,
    /// The cap the runner enforced on them (an archive far over it is not unpacked).
    #[serde(default = "unlimited")]
    output_bytes: u64,
}

fn unlimited() -> u64 {
    u64::MAX / 4
}

pub struct AwsBatchBackend {
    batch: aws_sdk_batch::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    staging: Arc<Staging>,
    config: AwsBatchConfig,
    /// Job definition ARNs already registered, by name.
    definitions: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl AwsBatchBackend {
    /// `instance` and `name` scope the staging prefix, as labels scope Docker containers.
    pub async fn connect(config: AwsBatchConfig, instance: &str, name: &str) -> Result<Self, BackendError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(config.region.clone()));
        if !config.endpoint.is_empty() {
            loader = loader.endpoint_url(&config.endpoint);
        }
        let sdk = loader.load().await;
        let endpoint = (!config.endpoint.is_empty()).then_some(config.endpoint.as_str());
        let scope = format!("{instance}/{name}");
        let staging = Staging::new(&config.staging, &sdk, endpoint, &scope, Duration::from_secs(config.url_ttl_secs))?;
        Ok(Self {
            batch: aws_sdk_batch::Client::new(&sdk),
            logs: if config.endpoint.is_empty() {
                aws_sdk_cloudwatchlogs::Client::new(&sdk)
            } else {
                let conf = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk).interceptor(quirks::IntegerTimestamps).build();
                aws_sdk_cloudwatchlogs::Client::from_conf(conf)
            },
            staging: Arc::new(staging),
            config,
            definitions: Default::default(),
        })
    }

    /// Batch job names allow letters, digits, `-` and `_`, up to 128.
    pub fn job_name(job_id: &str) -> String {
        let clean: String = job_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        format!("brizo-{clean}").chars().take(128).collect()
    }

    async fn meta(&self, job_id: &str) -> Result<Option<Meta>, BackendError> {
        self.staging.get_json(job_id, "meta.json").await
    }

    async fn result(&self, job_id: &str) -> Result<Option<RunResult>, BackendError> {
        self.staging.get_json(job_id, "result.json").await
    }

    /// The Batch job of `job_id`: from meta.json, else by its name (submitted, then the service
    /// died before writing meta.json).
    async fn batch_job_id(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        match self.meta(job_id).await? {
            Some(meta) => Ok(Some(meta.batch_job_id)),
            None => self.find_submitted(job_id).await,
        }
    }

    /// Where a job stands, read once: Batch's view, then (once it ended) the runner's result.
    async fn observe(&self, job_id: &str) -> Result<Observed, BackendError> {
        let Some(meta) = self.meta(job_id).await? else { return Ok(Observed::NotFound) };
        let detail = self.describe(&meta.batch_job_id).await?;
        if !detail.as_ref().is_none_or(|d| is_final(d.status())) {
            return Ok(Observed::Running);
        }
        let result = self.result(job_id).await?;
        Ok(Observed::Ended { meta, detail, result })
    }

    /// The exit of an ended job: the runner's word, else (killed by a stop or the backstop,
    /// or never started) what Batch says. `None` when neither knows the job any more.
    async fn exit_of(&self, detail: Option<&JobDetail>, result: Option<&RunResult>) -> Result<Option<ExitInfo>, BackendError> {
        if let Some(result) = result {
            return Ok(Some(ExitInfo { exit_code: result.exit_code, oom_killed: result.oom_killed }));
        }
        let Some(detail) = detail else { return Ok(None) };
        let reason = detail.container().and_then(|c| c.reason()).unwrap_or_default();
        let exit_code = self.batch_exit_code(detail).await?.filter(|c| *c != 0).unwrap_or(137);
        Ok(Some(ExitInfo { exit_code, oom_killed: reason.contains("OutOfMemory") }))
    }

    async fn image_digest(&self, image: &str) -> Result<String, BackendError> {
        if let Some((_, digest)) = image.split_once('@') {
            return Ok(digest.to_string());
        }
        if self.config.images == ImageSource::Pinned {
            return Err(BackendError::InvalidSpec(format!(
                "image {image} is not pinned: with `images = \"pinned\"` reference images by digest (name@sha256:...)"
            )));
        }
        // Connected per call: the service starts, and serves, while the engine is down.
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| BackendError::Unavailable(format!("the local Docker engine (images = \"docker\"): {e}")))?;
        match docker.inspect_image(image).await {
            Ok(found) => Ok(found.id.unwrap_or_default()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Err(BackendError::ImageNotFound(image.to_string())),
            Err(e) => Err(BackendError::Unavailable(format!("asking the local engine about image {image}: {e}"))),
        }
    }

    /// The job definition for `image` (a digest or an id: what the receipt names) and the
    /// spec's scratch size, registered once.
    async fn definition(&self, spec: &JobSpec, image: &str, scratch_mib: u64) -> Result<String, BackendError> {
        let tmpfs_mib = (spec.limits.tmpfs_bytes >> 20).max(1) as i32;
        let identity = format!("{}\n{}\n{}\n{}\n{}", image, self.config.runner_host_path, tmpfs_mib, scratch_mib, self.config.log_group);
        let name = format!("{}-{}", self.config.job_definition_prefix, &hex::encode(sha2::Sha256::digest(identity.as_bytes()))[..24]);
        let mut known = self.definitions.lock().await;
        if let Some(arn) = known.get(&name) {
            return Ok(arn.clone());
        }
        let found = self.batch.describe_job_definitions().job_definition_name(&name).status("ACTIVE").send().await.map_err(sdk_error)?;
        let arn = match found.job_definitions().iter().filter_map(|d| d.job_definition_arn()).next() {
            Some(arn) => arn.to_string(),
            None => {
                let tmpfs = |path: &str, mib: i32| {
                    Tmpfs::builder().container_path(path).size(mib).mount_options("rw").mount_options("nosuid").mount_options("nodev").build()
                };
                let properties = ContainerProperties::builder()
                    .image(image)
                    .command(RUNNER_PATH)
                    // The runner starts as root to place read-only inputs, then drops to the
                    // job's uid for good before the algorithm runs.
                    .user("0")
                    .privileged(false)
                    .readonly_root_filesystem(true)
                    .volumes(Volume::builder().name("brizo-runner").host(Host::builder().source_path(&self.config.runner_host_path).build()).build())
                    .mount_points(MountPoint::builder().source_volume("brizo-runner").container_path(RUNNER_PATH).read_only(true).build())
                    .linux_parameters(LinuxParameters::builder().tmpfs(tmpfs("/tmp", tmpfs_mib)).tmpfs(tmpfs("/data", scratch_mib as i32)).build())
                    .resource_requirements(requirement(ResourceType::Vcpu, "1"))
                    .resource_requirements(requirement(ResourceType::Memory, "512"))
                    .log_configuration(
                        LogConfiguration::builder()
                            .log_driver(LogDriver::Awslogs)
                            .options("awslogs-group", &self.config.log_group)
                            .build(),
                    )
                    .build();
                let registered = self
                    .batch
                    .register_job_definition()
                    .job_definition_name(&name)
                    .r#type(JobDefinitionType::Container)
                    .container_properties(properties)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                registered.job_definition_arn().unwrap_or_default().to_string()
            }
        };
        known.insert(name, arn.clone());
        Ok(arn)
    }

    /// Uploads the read-only mounts and writes the plan; returns the plan's presigned URL, the
    /// writable mounts, and the bytes the job's files need in its scratch.
    async fn stage(&self, spec: &JobSpec) -> Result<(String, Vec<(usize, PathBuf)>, u64), BackendError> {
        let mut plan = Plan {
            dirs: vec![],
            files: vec![],
            writable: vec![],
            argv: spec.command.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            limits: PlanLimits { memory_bytes: spec.limits.memory_bytes, pids: spec.limits.pids, output_bytes: spec.limits.output_bytes },
            result_url: self.staging.presign(Method::PUT, &self.staging.key(&spec.job_id, "result.json")).await?,
        };
        let mut writable = vec![];
        for (n, mount) in spec.mounts.iter().enumerate() {
            if !mount.read_only {
                let put_url = self.staging.presign(Method::PUT, &self.staging.key(&spec.job_id, &format!("out/{n}.tar"))).await?;
                plan.writable.push(WritableDir { path: mount.target.clone(), put_url });
                writable.push((n, mount.source.clone()));
                continue;
            }
            let source = mount.source.clone();
            let entries = tokio::task::spawn_blocking(move || list_tree(&source))
                .await
                .expect("listing does not panic")
                .map_err(|e| BackendError::InvalidSpec(format!("mount {}: {e}", mount.source.display())))?;
            for (rel, is_dir) in entries {
                let target = if rel.as_os_str().is_empty() { mount.target.clone() } else { format!("{}/{}", mount.target, rel.display()) };
                if is_dir {
                    plan.dirs.push(target);
                    continue;
                }
                let key = self.staging.key(&spec.job_id, &format!("in/{n}/{}", if rel.as_os_str().is_empty() { "file".into() } else { rel.display().to_string() }));
                let size = self.staging.put_file(&key, &mount.source.join(&rel)).await?;
                plan.files.push(FileDownload { url: self.staging.presign(Method::GET, &key).await?, path: target, size });
            }
        }
        // Data the run fetches itself goes straight from its bucket into the container.
        for remote in &spec.fetch {
            let (url, size) = self.staging.presign_object(&remote.url, remote.max_bytes).await?;
            plan.files.push(FileDownload { url, path: remote.target.clone(), size });
        }
        let plan_key = self.staging.key(&spec.job_id, "plan.json");
        self.staging.put(&plan_key, serde_json::to_vec(&plan).expect("a plan serializes")).await?;
        let files: u64 = plan.files.iter().map(|f| f.size).sum();
        Ok((self.staging.presign(Method::GET, &plan_key).await?, writable, files))
    }

    async fn describe(&self, batch_job_id: &str) -> Result<Option<JobDetail>, BackendError> {
        let out = self.batch.describe_jobs().jobs(batch_job_id).send().await.map_err(sdk_error)?;
        Ok(out.jobs().first().cloned())
    }

    /// Batch accepts a TerminateJob for a job that already ended.
    async fn terminate(&self, batch_job_id: &str) -> Result<(), BackendError> {
        self.batch.terminate_job().job_id(batch_job_id).reason("stopped by brizo").send().await.map(|_| ()).map_err(sdk_error)
    }

    /// The queue's jobs named `name` (ListJobs returns them in every status when filtered).
    async fn jobs_named(&self, name: &str) -> Result<Vec<JobSummary>, BackendError> {
        let filter = KeyValuesPair::builder().name("JOB_NAME").values(name).build();
        let out = self.batch.list_jobs().job_queue(&self.config.job_queue).filters(filter).send().await.map_err(sdk_error)?;
        Ok(out.job_summary_list().iter().filter(|j| j.job_name() == Some(name)).cloned().collect())
    }

    /// A Batch job this service submitted for `job_id`, found by name (for a crash between
    /// SubmitJob and writing meta.json).
    async fn find_submitted(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        Ok(self.jobs_named(&Self::job_name(job_id)).await?.iter().find_map(|j| j.job_id().map(str::to_string)))
    }

    /// The exit code Batch itself knows (DescribeJobs; moto has it only in ListJobs).
    async fn batch_exit_code(&self, detail: &JobDetail) -> Result<Option<i64>, BackendError> {
        if let Some(code) = detail.container().and_then(|c| c.exit_code()) {
            return Ok(Some(code as i64));
        }
        let Some(name) = detail.job_name() else { return Ok(None) };
        Ok(self
            .jobs_named(name)
            .await?
            .iter()
            .find(|j| j.job_id() == detail.job_id())
            .and_then(|j| j.container())
            .and_then(|c| c.exit_code())
            .map(|c| c as i64))
    }


    /// Unpacks the writable folders the runner sent back into their host paths, streamed
    /// through a file next to each (never whole in memory).
    async fn collect_writable(&self, job_id: &str, meta: &Meta) -> Result<(), BackendError> {
        // The runner refuses to send more than the cap; tar adds headers and padding.
        let ceiling = meta.output_bytes.saturating_mul(2).saturating_add(64 << 20);
        for (n, dest) in &meta.writable {
            let archive = dest.with_file_name(format!(".{}.brizo-{n}.tar", dest.file_name().and_then(|f| f.to_str()).unwrap_or("mount")));
            match self.staging.download(&self.staging.key(job_id, &format!("out/{n}.tar")), &archive, ceiling).await? {
                None => continue,
                Some(size) if size > ceiling => {
                    tracing::warn!(job = %job_id, "the archive of {} is {size} bytes, far over the cap the runner enforces; not unpacked", dest.display());
                    continue;
                }
                Some(_) => {}
            }
            let (file, into) = (archive.clone(), dest.clone());
            let unpacked = tokio::task::spawn_blocking(move || unpack(&file, &into)).await.expect("unpacking does not panic");
            let _ = tokio::fs::remove_file(&archive).await;
            unpacked.map_err(|e| BackendError::RunFailed(format!("what the job returned in {} cannot be unpacked: {e}", dest.display())))?;
        }
        Ok(())
    }
}

/// What `observe` found.
enum Observed {
    NotFound,
    /// Queued or running.
    Running,
    Ended { meta: Meta, detail: Option<JobDetail>, result: Option<RunResult> },
}

/// `RunFailed` when the job ended without its algorithm having run: the runner could not
/// prepare it, or the container never started (no image, no runner on the host).
fn never_started(detail: Option<&JobDetail>, result: Option<&RunResult>) -> Result<(), BackendError> {
    match (result, detail) {
        (Some(result), _) if !result.algorithm_started => Err(BackendError::RunFailed(format!(
            "the job could not be prepared on AWS Batch: {}",
            result.runner_error.as_deref().unwrap_or("no reason given")
        ))),
        (None, Some(d)) if d.started_at().is_none() => {
            Err(BackendError::RunFailed(format!("the job never started on AWS Batch: {}", d.status_reason().unwrap_or("no reason given"))))
        }
        _ => Ok(()),
    }
}

fn requirement(kind: ResourceType, value: &str) -> ResourceRequirement {
    ResourceRequirement::builder().r#type(kind).value(value).build()
}

/// Paths under `root` relative to it (the empty path for `root` itself), with whether each is a
/// folder. Symlinks are not followed, and not staged: they could point anywhere on this host.
fn list_tree(root: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let mut out = vec![];
    for entry in walkdir::WalkDir::new(root).follow_links(false).follow_root_links(true) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(root).expect("walkdir stays under its root").to_path_buf();
        if entry.file_type().is_dir() {
            out.push((rel, true));
        } else if entry.file_type().is_file() {
            out.push((rel, false));
        }
    }
    Ok(out)
}

/// Regular files and folders only, never outside `dest`: the archive was made by the job's
/// container and is not trusted.
fn unpack(archive: &Path, dest: &Path) -> std::io::Result<()> {
    let mut reader = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in reader.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        // unpack_in refuses absolute paths and `..`.
        entry.unpack_in(dest)?;
    }
    // Modes from the archive are the job's choice: readable folders and files for the service.
    for entry in walkdir::WalkDir::new(dest).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let mode = if entry.file_type().is_dir() { 0o755 } else if entry.file_type().is_file() { 0o644 } else { continue };
        std::fs::set_permissions(entry.path(), std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    Ok(())
}

fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_batch::error::SdkError<E, R>) -> BackendError {
    use aws_sdk_batch::error::SdkError;
    let message = aws_sdk_batch::error::DisplayErrorContext(&e).to_string();
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => BackendError::Unavailable(format!("AWS Batch: {message}")),
        SdkError::ServiceError(_) => BackendError::Other(format!("AWS Batch: {message}")),
        _ => BackendError::Unavailable(format!("AWS Batch: {message}")),
    }
}

fn logs_error<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_cloudwatchlogs::error::SdkError<E, R>) -> BackendError {
    BackendError::Unavailable(format!("CloudWatch Logs: {}", aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)))
}

fn is_final(status: Option<&JobStatus>) -> bool {
    matches!(status, Some(JobStatus::Succeeded) | Some(JobStatus::Failed))
}

#[async_trait]
impl ComputeBackend for AwsBatchBackend {
    fn name(&self) -> &'static str {
        "aws-batch"
    }

    fn isolates_network(&self) -> bool {
        false
    }

    /// S3 objects: the runner downloads them in the job's container through presigned URLs.
    /// Never the staging bucket: a job must not reach another job's plan and upload URLs.
    fn fetches(&self, url: &str) -> bool {
        url.strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(bucket, key)| !bucket.is_empty() && bucket != self.staging.bucket() && !key.is_empty() && !key.ends_with('/'))
    }

    async fn fetched(&self, job_id: &str) -> Result<Vec<FetchedFile>, BackendError> {
        Ok(self
            .result(job_id)
            .await?
            .map(|r| r.files.into_iter().map(|f| FetchedFile { target: f.path, size: f.size, sha256: f.sha256 }).collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let queues = self.batch.describe_job_queues().job_queues(&self.config.job_queue).send().await.map_err(sdk_error)?;
        if queues.job_queues().is_empty() {
            return Err(BackendError::Unavailable(format!("job queue {} does not exist (apply terraform/modules/aws first)", self.config.job_queue)));
        }
        Ok(())
    }

    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError> {
        if let Some(meta) = self.meta(&spec.job_id).await? {
            return Ok(RunInfo { run_id: meta.batch_job_id, image_digest: meta.image_digest });
        }
        let image_digest = self.image_digest(&spec.image).await?;
        // Pinned references run as given; a local image runs by its id.
        let image = if spec.image.contains('@') { spec.image.clone() } else { image_digest.clone() };
        let (plan_url, writable, staged_bytes) = self.stage(spec).await?;
        // `/data` is in memory on the job's host: room for the job's files and its outputs,
        // rounded up to a power of two so that few job definitions serve all jobs.
        let scratch_mib = ((staged_bytes + spec.limits.output_bytes) >> 20).max(64).next_power_of_two() + 64;
        let definition = self.definition(spec, &image, scratch_mib).await?;
        let batch_job_id = match self.find_submitted(&spec.job_id).await? {
            Some(id) => id,
            None => {
                let memory_mib = (spec.limits.memory_bytes >> 20).max(4);
                // The container holds the runner and the in-memory /tmp and /data besides the
                // algorithm, whose own ceiling the runner enforces.
                let container_mib = memory_mib + (spec.limits.tmpfs_bytes >> 20) + scratch_mib + 64;
                let overrides = ContainerOverrides::builder()
                    .environment(KeyValuePair::builder().name(PLAN_URL_ENV).value(plan_url).build())
                    .resource_requirements(requirement(ResourceType::Memory, &container_mib.to_string()))
                    .resource_requirements(requirement(ResourceType::Vcpu, &format!("{}", spec.limits.cpus.ceil().max(1.0))))
                    .build();
                let submitted = self
                    .batch
                    .submit_job()
                    .job_name(Self::job_name(&spec.job_id))
                    .job_queue(&self.config.job_queue)
                    .job_definition(definition)
                    .container_overrides(overrides)
                    .set_timeout(spec.backstop_secs.map(|secs| JobTimeout::builder().attempt_duration_seconds(secs.clamp(60, i32::MAX as u64) as i32).build()))
                    .tags("brizo-job-id", &spec.job_id)
                    .send()
                    .await;
                let submitted = match submitted {
                    Ok(submitted) => submitted,
                    Err(e) => {
                        // The definition may have been deregistered meanwhile: look it up again.
                        self.definitions.lock().await.clear();
                        return Err(sdk_error(e));
                    }
                };
                submitted.job_id().unwrap_or_default().to_string()
            }
        };
        let meta = Meta { batch_job_id: batch_job_id.clone(), image_digest: image_digest.clone(), writable, output_bytes: spec.limits.output_bytes };
        self.staging.put(&self.staging.key(&spec.job_id, "meta.json"), serde_json::to_vec(&meta).expect("meta serializes")).await?;
        Ok(RunInfo { run_id: batch_job_id, image_digest })
    }

    /// A job waiting in the queue counts as running: it is accepted and will run without
    /// anything more from the engine.
    async fn state(&self, job_id: &str) -> Result<RunState, BackendError> {
        Ok(match self.observe(job_id).await? {
            Observed::NotFound => RunState::NotFound,
            Observed::Running => RunState::Running,
            Observed::Ended { detail, result, .. } => match self.exit_of(detail.as_ref(), result.as_ref()).await? {
                Some(exit) => RunState::Exited(exit),
                None => RunState::NotFound,
            },
        })
    }

    /// Like `state`, but a run whose algorithm never started is an error (`RunFailed`): the
    /// engine must not take it for work done.
    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError> {
        loop {
            match self.observe(job_id).await? {
                Observed::Ended { meta, detail, result } => {
                    let Some(exit) = self.exit_of(detail.as_ref(), result.as_ref()).await? else {
                        return Err(BackendError::NotFound(job_id.to_string()));
                    };
                    never_started(detail.as_ref(), result.as_ref())?;
                    self.collect_writable(job_id, &meta).await?;
                    return Ok(exit);
                }
                Observed::NotFound => return Err(BackendError::NotFound(job_id.to_string())),
                Observed::Running => tokio::time::sleep(Duration::from_millis(self.config.poll_ms)).await,
            }
        }
    }

    fn logs(&self, job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>> {
        struct Follow {
            backend: Arc<Inner>,
            job_id: String,
            token: Option<String>,
            done: bool,
            /// Empty reads since the job ended: CloudWatch stores events a moment after they
            /// are written, so the stream ends only after a few.
            quiet_after_end: u32,
        }
        let inner = Arc::new(Inner {
            batch: self.batch.clone(),
            logs: self.logs.clone(),
            staging: self.staging.clone(),
            log_group: self.config.log_group.clone(),
            poll: Duration::from_millis(self.config.poll_ms),
        });
        let state = Follow { backend: inner, job_id: job_id.to_string(), token: None, done: false, quiet_after_end: 0 };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                match s.backend.next_chunk(&s.job_id, s.token.clone()).await {
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    Ok(chunk) => {
                        let advanced = chunk.token.is_some() && chunk.token != s.token;
                        if chunk.token.is_some() {
                            s.token = chunk.token;
                        }
                        if !chunk.bytes.is_empty() {
                            s.quiet_after_end = 0;
                            return Some((Ok(chunk.bytes), s));
                        }
                        if chunk.ended && !advanced {
                            s.quiet_after_end += 1;
                            if s.quiet_after_end >= LOG_LINGER_READS {
                                return None;
                            }
                        }
                        tokio::time::sleep(s.backend.poll).await;
                    }
                }
            }
        })
        .boxed()
    }

    async fn stop(&self, job_id: &str) -> Result<(), BackendError> {
        match self.batch_job_id(job_id).await? {
            Some(id) => self.terminate(&id).await,
            None => Ok(()),
        }
    }

    async fn remove(&self, job_id: &str) -> Result<(), BackendError> {
        if let Some(id) = self.batch_job_id(job_id).await? {
            if self.describe(&id).await?.is_some_and(|d| !is_final(d.status())) {
                self.terminate(&id).await?;
            }
        }
        self.staging.delete_job(job_id).await
    }

    async fn list_runs(&self) -> Result<Vec<String>, BackendError> {
        self.staging.jobs().await
    }
}

/// Empty reads after the job ended before the log counts as complete.
const LOG_LINGER_READS: u32 = 3;

/// What following a log needs, owned, so the stream outlives the call that made it.
struct Inner {
    batch: aws_sdk_batch::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    staging: Arc<Staging>,
    log_group: String,
    poll: Duration,
}

struct Chunk {
    bytes: Bytes,
    token: Option<String>,
    /// The job has ended, so what the log holds now is all it will hold.
    ended: bool,
}

impl Inner {
    async fn next_chunk(&self, job_id: &str, token: Option<String>) -> Result<Chunk, BackendError> {
        let Some(meta) = self.staging.get_json::<Meta>(job_id, "meta.json").await? else {
            return Err(BackendError::NotFound(job_id.to_string()));
        };
        let out = self.batch.describe_jobs().jobs(&meta.batch_job_id).send().await.map_err(sdk_error)?;
        let detail = out.jobs().first();
        // Read whether the job had ended before reading the log, so that nothing logged between
        // the two reads is missed.
        let ended = detail.is_none_or(|d| is_final(d.status()));
        let stream = detail.and_then(|d| {
            d.container().and_then(|c| c.log_stream_name()).or_else(|| d.attempts().last().and_then(|a| a.container()).and_then(|c| c.log_stream_name()))
        });
        let Some(stream) = stream else { return Ok(Chunk { bytes: Bytes::new(), token, ended }) };
        let events = match self
            .logs
            .get_log_events()
            .log_group_name(&self.log_group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(events) => events,
            // The stream is announced before its first event is stored (and never created when
            // the job wrote nothing): keep looking while the job runs, then end with it.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                return Ok(Chunk { bytes: Bytes::new(), token, ended });
            }
            Err(e) => return Err(logs_error(e)),
        };
        let mut bytes = Vec::new();
        for event in events.events() {
            bytes.extend_from_slice(event.message().unwrap_or_default().as_bytes());
            bytes.push(b'\n');
        }
        Ok(Chunk { bytes: Bytes::from(bytes), token: events.next_forward_token().map(str::to_string), ended })
    }
}
