//! Runs brizo jobs as containers on the local Docker engine (bollard).
//!
//! One container per job, named `brizo-<job id>` and labelled with the job id and the brizo
//! instance, so a restarted service finds its runs again and never touches another instance's.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig,
    Mount as DockerMount, MountType,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use brizo_backend_core::{
    BackendError, BackendSettings, Capabilities, Collected, ComputeBackend, ExitInfo, JobSpec,
    RunInfo, RunState,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};

pub const LABEL_JOB: &str = "brizo.job-id";
pub const LABEL_INSTANCE: &str = "brizo.instance";
pub const LABEL_BACKEND: &str = "brizo.backend";
/// The image as the job named it: the container itself is made from the image's id.
pub const LABEL_IMAGE: &str = "brizo.image";
/// Ceiling of the engine's own log of a job container (json-file `max-size`).
pub const ENGINE_LOG_MAX: &str = "64m";
/// Exit code of a process ended by SIGKILL (128 + 9), which is what the OOM killer sends.
const SIGKILL_EXIT: i64 = 137;
/// How long past a run's finish its late "oom" event is waited for (see `oom_logged`).
pub const LATE_OOM_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Slack on top of the event query's own end before it counts as unanswered.
const EVENTS_DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

pub struct DockerBackend {
    engine: Arc<Engine>,
    instance: String,
    /// The backend's name in brizo's config, labelled on its containers.
    name: String,
}

/// The connection to dockerd, made (and its API version agreed) on first use and kept once it
/// worked: the service starts while the engine is down and uses it as soon as it is up.
struct Engine {
    socket: String,
    client: tokio::sync::Mutex<Option<Docker>>,
}

impl Engine {
    async fn client(&self) -> Result<Docker, BackendError> {
        let mut client = self.client.lock().await;
        if let Some(docker) = client.as_ref() {
            return Ok(docker.clone());
        }
        let docker = Docker::connect_with_unix(&self.socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(unavailable)?;
        // The engine may be older than bollard's default API version (Debian's 20.10 speaks 1.41).
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        *client = Some(docker.clone());
        Ok(docker)
    }
}

impl DockerBackend {
    /// A backend for the engine at `socket` (a unix socket path; `None` for `DOCKER_HOST` when
    /// it names a unix socket, else `/var/run/docker.sock`). Connecting is tried at once, but an
    /// engine that is down is not an error here: `ping` and every call report it until it is up.
    /// `instance` scopes everything this backend lists and cleans up.
    pub async fn connect(
        socket: Option<&str>,
        instance: &str,
        name: &str,
    ) -> Result<Self, BackendError> {
        let host = std::env::var("DOCKER_HOST").ok();
        let socket = socket
            .map(str::to_string)
            .or_else(|| {
                host.as_deref()
                    .and_then(|h| h.strip_prefix("unix://"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "/var/run/docker.sock".to_string());
        let backend = Self {
            engine: Arc::new(Engine {
                socket,
                client: Default::default(),
            }),
            instance: instance.to_string(),
            name: name.to_string(),
        };
        if let Err(e) = backend.engine.client().await {
            tracing::warn!("{e}");
        }
        Ok(backend)
    }

    pub fn container_name(job_id: &str) -> String {
        format!("brizo-{job_id}")
    }

    /// Whether the engine logged an "oom" event for the job's container around the time it
    /// finished (`finished_at` as the engine reports it, RFC 3339; `None` for just now).
    ///
    /// Docker sets `State.OOMKilled` from containerd's OOM event, which travels apart from the
    /// task's exit event: when the exit is handled first, the flag stays false for good (seen
    /// on Docker 20.10 with cgroup v1, under load). The daemon still logs the "oom" event when
    /// it comes, so this reads the engine's event log, waiting up to [`LATE_OOM_GRACE`] past
    /// the finish for it. Long after the finish it answers from the log at once; the engine
    /// keeps only its last events there, so an OOM kill read back much later can be missed.
    pub async fn oom_logged(
        &self,
        job_id: &str,
        finished_at: Option<&str>,
    ) -> Result<bool, BackendError> {
        let docker = self.engine.client().await?;
        let now = Utc::now();
        let finished = finished_at
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t <= now)
            .unwrap_or(now);
        // The kill comes before the exit; the event may be logged a little after it.
        let since = finished - chrono::Duration::seconds(30);
        let until = (finished + LATE_OOM_GRACE).max(now);
        let stamp =
            |t: DateTime<Utc>| format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos());
        let name = Self::container_name(job_id);
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("event", vec!["oom".to_string()]),
            ("container", vec![name]),
        ]);
        let options = EventsOptionsBuilder::new()
            .since(&stamp(since))
            .until(&stamp(until))
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));
        // The engine ends the stream at `until`; the deadline guards against one that does not.
        let deadline = (until - now).to_std().unwrap_or_default() + EVENTS_DEADLINE_MARGIN;
        match tokio::time::timeout(deadline, events.next()).await {
            Ok(Some(Ok(_))) => Ok(true),
            Ok(None) => Ok(false),
            Ok(Some(Err(e))) => Err(classify(e, job_id)),
            Err(_) => Err(BackendError::unavailable(format!(
                "the engine's event log did not answer within {deadline:?}"
            ))),
        }
    }

    async fn inspect(
        &self,
        job_id: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, BackendError> {
        match self
            .engine
            .client()
            .await?
            .inspect_container(&Self::container_name(job_id), None)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e, job_id)),
        }
    }

    /// Creates the job's container, or finds the one an earlier attempt made; (its id, its
    /// image's id, whether it still has to be started).
    async fn create(
        &self,
        docker: &Docker,
        spec: &JobSpec,
        name: &str,
    ) -> Result<(String, String, bool), BackendError> {
        let image = match docker.inspect_image(&spec.image).await {
            Ok(image) => image,
            Err(e) if status_of(&e) == Some(404) => {
                // The image went after an earlier attempt made the container: that one runs.
                if let Some(c) = self.inspect(&spec.job_id).await? {
                    return Ok(run_of(c));
                }
                return Err(BackendError::image_not_found(spec.image.clone()));
            }
            // The engine rejects the reference itself ("invalid reference format").
            Err(e) if status_of(&e) == Some(400) => {
                return Err(BackendError::invalid_spec(format!(
                    "image {:?}: {}",
                    spec.image,
                    message_of(&e)
                )));
            }
            Err(e) => return Err(classify(e, &spec.job_id)),
        };
        let Some(id) = image.id else {
            return Err(BackendError::other(format!(
                "the engine named no id for the image {:?}",
                spec.image
            )));
        };
        // Made from the id just read, not the name: the container runs exactly the image its
        // receipt names, even if the name is re-tagged between the look-up and the create.
        let mut body = self.create_body(spec);
        body.image = Some(id.clone());
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match docker.create_container(Some(options), body).await {
            Ok(made) => Ok((made.id, id, true)),
            // A concurrent start created it first: use that one.
            Err(e) if status_of(&e) == Some(409) => {
                Ok(run_of(self.inspect(&spec.job_id).await?.ok_or_else(
                    || BackendError::not_found(spec.job_id.clone()),
                )?))
            }
            Err(e) if status_of(&e) == Some(400) => Err(BackendError::invalid_spec(message_of(&e))),
            // The image went between its look-up and the create (a re-tag, then a prune): the
            // next attempt looks the name up again, and runs what it names now or says the
            // image is missing.
            Err(e) if status_of(&e) == Some(404) => Err(BackendError::unavailable(format!(
                "the image {:?} ({id}) went before its container was made; looking it up again",
                spec.image
            ))),
            Err(e) => Err(classify(e, &spec.job_id)),
        }
    }

    /// Starts a created container. A command the runtime cannot start ends the job: its
    /// container goes at once, not with a retry.
    async fn start_created(
        &self,
        docker: &Docker,
        spec: &JobSpec,
        name: &str,
    ) -> Result<(), BackendError> {
        match docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            // 304: already started by a concurrent call.
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            // The runtime could not start the command (no such executable, not executable).
            Err(e) if cannot_start(&e) => {
                let _ = self.remove(&spec.job_id).await;
                Err(BackendError::invalid_spec(format!(
                    "the container could not start its command {:?}: {}",
                    spec.command.first().map(String::as_str).unwrap_or_default(),
                    message_of(&e)
                )))
            }
            Err(e) => Err(classify(e, &spec.job_id)),
        }
    }

    fn create_body(&self, spec: &JobSpec) -> ContainerCreateBody {
        let mounts = spec
            .mounts
            .iter()
            .map(|m| DockerMount {
                target: Some(m.target.clone()),
                source: Some(m.source.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let host_config = HostConfig {
            network_mode: Some(if spec.network { "bridge" } else { "none" }.to_string()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}", spec.limits.tmpfs_bytes),
            )])),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            memory: Some(spec.limits.memory_bytes as i64),
            // Equal to memory: no swap, so the memory limit is a real ceiling and OOM is visible.
            memory_swap: Some(spec.limits.memory_bytes as i64),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            pids_limit: Some(spec.limits.pids),
            // The engine keeps its own copy of the output: bound it, so a chatty algorithm
            // cannot fill the host's disk (brizo's copy has its own, smaller cap).
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), ENGINE_LOG_MAX.to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            mounts: Some(mounts),
            ..Default::default()
        };
        let labels = HashMap::from([
            (LABEL_JOB.to_string(), spec.job_id.clone()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_BACKEND.to_string(), self.name.clone()),
            (LABEL_IMAGE.to_string(), spec.image.clone()),
        ]);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            // Our argv replaces the image's entrypoint and command entirely.
            entrypoint: Some(spec.command.clone()),
            cmd: None,
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: Some(spec.user.clone()),
            working_dir: spec.working_dir.clone(),
            network_disabled: Some(!spec.network),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// An existing container as `start` needs it: its id, its image's id, and whether it still
/// has to be started.
fn run_of(c: bollard::models::ContainerInspectResponse) -> (String, String, bool) {
    let created =
        c.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::CREATED);
    (
        c.id.unwrap_or_default(),
        c.image.unwrap_or_default(),
        created,
    )
}

/// Settings of a docker backend (`[backends.docker]`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// The engine's unix socket; empty for `DOCKER_HOST` or `/var/run/docker.sock`.
    #[serde(default)]
    pub socket: String,
}

/// The registry's entry point: kind `docker`.
pub async fn from_settings(
    settings: &BackendSettings,
) -> Result<Arc<dyn ComputeBackend>, BackendError> {
    let parsed: DockerSettings = settings.parse()?;
    let backend = DockerBackend::connect(
        (!parsed.socket.is_empty()).then_some(parsed.socket.as_str()),
        &settings.instance,
        &settings.name,
    )
    .await?;
    if let Err(e) = backend.ping().await {
        // Serve anyway: /health says what is down, submissions answer 503, and queued jobs go
        // on when the engine is back.
        tracing::warn!(backend = %settings.name, "{e}");
    }
    Ok(Arc::new(backend))
}

#[async_trait]
impl ComputeBackend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::local()
    }

    /// Writable mounts are bind mounts: what the run wrote is on the host already, whether
    /// or not its container is still there (so the engine is not made to ask the engine).
    async fn collect(&self, _job_id: &str) -> Result<Collected, BackendError> {
        Ok(Collected::default())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.engine
            .client()
            .await?
            .ping()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// The local image's id: what a container made from `image` now would run (the engine
    /// never pulls; an image that is not there is `None`).
    async fn image_digest(&self, image: &str) -> Result<Option<String>, BackendError> {
        let docker = self.engine.client().await?;
        match docker.inspect_image(image).await {
            Ok(found) => Ok(found.id),
            Err(e) if matches!(status_of(&e), Some(404 | 400)) => Ok(None),
            Err(e) => Err(classify(e, image)),
        }
    }

    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError> {
        if let Some(file) = spec.fetch.first() {
            return Err(BackendError::invalid_spec(format!(
                "the docker backend does not fetch {}; the engine stages it",
                file.url
            )));
        }
        let docker = self.engine.client().await?;
        let name = Self::container_name(&spec.job_id);
        // (run id, image id, whether it still has to be started). Create is tried first: a
        // container made by an earlier attempt answers 409 and is read then. A container made
        // here is not inspected at all (create answers its id, the image was just looked up):
        // each call less per job is throughput on a busy engine. The image look-up stays: the
        // receipt binds the image's id, and the container is made from that id.
        let (run_id, image_digest, to_start) = self.create(&docker, spec, &name).await?;
        if to_start {
            self.start_created(&docker, spec, &name).await?;
        }
        Ok(RunInfo {
            run_id,
            image_digest,
        })
    }

    async fn state(&self, job_id: &str) -> Result<RunState, BackendError> {
        let Some(c) = self.inspect(job_id).await? else {
            return Ok(RunState::NotFound);
        };
        let memory_limited = c.host_config.as_ref().and_then(|h| h.memory).unwrap_or(0) > 0;
        let state = c.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
                let exit_code = state.exit_code.unwrap_or(-1);
                let mut oom_killed = state.oom_killed.unwrap_or(false);
                // Only a SIGKILL under a memory limit can be an OOM kill the flag missed. The
                // event log is a second look, not a condition of the answer: an engine behind a
                // proxy that refuses /events still reports its runs' exits.
                if !oom_killed && exit_code == SIGKILL_EXIT && memory_limited {
                    oom_killed = self
                        .oom_logged(job_id, state.finished_at.as_deref())
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(job = job_id, "no second look for an OOM kill: {e}");
                            false
                        });
                }
                RunState::Exited(ExitInfo {
                    exit_code,
                    oom_killed,
                })
            }
            _ => RunState::Running,
        })
    }

    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError> {
        let docker = self.engine.client().await?;
        let name = Self::container_name(job_id);
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiter = docker.wait_container(&name, Some(options));
        while let Some(item) = waiter.next().await {
            match item {
                Ok(_) => {}
                // bollard reports a non-zero exit as an error; the exit itself is what we wait for.
                Err(DockerError::DockerContainerWaitError { .. }) => {}
                Err(e) => return Err(classify(e, job_id)),
            }
        }
        // Inspect for the facts (exit code, OOM): the wait response has no OOM flag.
        match self.state(job_id).await? {
            RunState::Exited(info) => Ok(info),
            RunState::NotFound => Err(BackendError::not_found(job_id.to_string())),
            other => Err(BackendError::other(format!(
                "wait ended while the container is {other:?}"
            ))),
        }
    }

    fn logs(&self, job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let job = job_id.to_string();
        let engine = self.engine.clone();
        futures::stream::once(async move { engine.client().await })
            .flat_map(move |client| match client {
                Ok(docker) => {
                    let job = job.clone();
                    docker
                        .logs(&Self::container_name(&job), Some(options.clone()))
                        .map(move |item| {
                            item.map(|out| out.into_bytes())
                                .map_err(|e| classify(e, &job))
                        })
                        .boxed()
                }
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn stop(&self, job_id: &str) -> Result<(), BackendError> {
        let docker = self.engine.client().await?;
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match docker
            .kill_container(&Self::container_name(job_id), Some(options))
            .await
        {
            // 404: no container; 409: not running. Either way it is stopped.
            Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => Ok(()),
            other => other.map_err(|e| classify(e, job_id)),
        }
    }

    async fn remove(&self, job_id: &str) -> Result<(), BackendError> {
        let docker = self.engine.client().await?;
        // By name first, in one call: the backend names every container after its job. When
        // there is none by that name, by the labels, which tie a container to a job whoever
        // made or renamed it.
        match remove_container(&docker, &Self::container_name(job_id)).await {
            Err(e) if status_of(&e) == Some(404) => {}
            other => return other.map_err(|e| classify(e, job_id)),
        }
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_INSTANCE}={}", self.instance),
                format!("{LABEL_JOB}={job_id}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(unavailable)?;
        for id in containers.into_iter().filter_map(|c| c.id) {
            match remove_container(&docker, &id).await {
                Err(e) if status_of(&e) == Some(404) => {}
                other => other.map_err(|e| classify(e, job_id))?,
            }
        }
        Ok(())
    }

    async fn list_runs(&self) -> Result<Vec<String>, BackendError> {
        let docker = self.engine.client().await?;
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_INSTANCE}={}", self.instance)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(unavailable)?;
        Ok(containers
            .into_iter()
            .filter_map(|c| c.labels.and_then(|mut l| l.remove(LABEL_JOB)))
            .collect())
    }
}

/// Removes a container with its anonymous volumes, killing it if it runs. 409 (a removal
/// already in progress, by a concurrent call) counts as done.
async fn remove_container(docker: &Docker, name_or_id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name_or_id, Some(options)).await {
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        other => other,
    }
}

/// A start refused because of the job itself, as the engine words it (Docker 20.10 answers
/// 400 for a missing executable; older engines 500 with the runtime's message).
fn cannot_start(e: &DockerError) -> bool {
    let message = message_of(e);
    status_of(e) == Some(400)
        || (status_of(e) == Some(500)
            && [
                "executable file not found",
                "no such file or directory",
                "permission denied",
                "exec format error",
            ]
            .iter()
            .any(|m| message.contains(m)))
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn unavailable(e: DockerError) -> BackendError {
    BackendError::unavailable(
        "the Docker engine (is dockerd running? `scripts/dockerd.sh start` starts it)",
    )
    .because(e)
}

fn classify(e: DockerError, job_id: &str) -> BackendError {
    match status_of(&e) {
        Some(404) => BackendError::not_found(job_id.to_string()),
        Some(_) => BackendError::other(message_of(&e)),
        None => unavailable(e),
    }
}
