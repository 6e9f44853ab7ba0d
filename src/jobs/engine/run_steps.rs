//! The run steps: everything up to the end of the run, phase by phase (stage 20, start 30,
//! follow 40, filter 50, publish 60). Each ends by writing the job's next phase, or ends the
//! job with a reason a consumer can read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use brizo_backend_core::{BackendError, ComputeBackend, ExitInfo, RemoteFile};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Engine;
use super::policy::StepError;
use crate::jobs::model::{
    ApprovalState, Job, Outcome, OutputFile, Phase, StagedDigests, now_epoch,
};
use crate::jobs::store::Transition;
use crate::jobs::workspace::{self, PlacedInput, Workspace, place_inputs};
use crate::proof::digest;
use crate::storage::{self, StorageError};

impl Engine {
    /// Phase 20: an empty workspace, the algorithm, the remote inputs. An input the job's
    /// backend fetches itself (S3 data next to AWS Batch) is not staged here: the run gets it
    /// straight from where it lies, and its digest comes from the backend after the run.
    pub(super) async fn stage(&self, job: &Job) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let blanks = self.config.blank_disks_dir();
        ws.create(
            &self.config.limits.user,
            self.disk.map(|q| (q.size, blanks.as_path())),
        )
        .await
        .map_err(|e| StepError::Retry(format!("job folder {}: {e}", ws.root.display())))?;
        if let Err(reason) = self.stage_algorithm(job, &ws).await {
            return self
                .fail(job, Phase::AlgorithmProvisioningFailed, reason)
                .await;
        }
        super::failpoint("brizo::stage", &job.id).await;
        let mut staged = StagedDigests::default();
        let io = |e: std::io::Error| StepError::Retry(format!("hashing what was staged: {e}"));
        staged.algorithm = Some(digest::path_async(ws.algorithm()).await.map_err(io)?);
        if let Some(reason) = changed_since_approval(job, staged.algorithm.as_ref()) {
            return self
                .fail(job, Phase::AlgorithmProvisioningFailed, reason)
                .await;
        }
        staged.inputs = match self.stage_inputs(job, &ws).await? {
            Ok(inputs) => inputs,
            Err(reason) => {
                return self.fail(job, Phase::DataProvisioningFailed, reason).await;
            }
        };
        // Digests are taken as the data is handed to the job, for its receipt.
        self.store.set_staged(&job.id, &staged).await?;
        // From when staging began, across retries and restarts: the job's place in the run
        // line is the moment it was staged ([`Job::ready_at`]), not its submission plus its
        // last attempt's time.
        let mut timings = job.timings.clone();
        timings.staging_ms = Some(((now_epoch() - job.staging_began()).max(0.0) * 1000.0) as u64);
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

    /// The job's inputs into its workspace, each with its digest, in the request's order;
    /// `None` for one its backend fetches itself. `Ok(Err(reason))` when an input cannot be
    /// had (missing, refused, over the cap): that ends the job.
    async fn stage_inputs(
        &self,
        job: &Job,
        ws: &Workspace,
    ) -> Result<Result<Vec<Option<digest::Digest>>, String>, StepError> {
        let backend = self.backend_of(job)?.clone();
        let mut digests = vec![];
        for placed in place_inputs(&job.request.inputs) {
            if self.backend_fetches(job, backend.as_ref(), &placed.url) {
                digests.push(None);
                continue;
            }
            match self.stage_input(ws, &placed).await {
                Ok(path) => {
                    digests.push(Some(digest::path_async(path).await.map_err(|e| {
                        StepError::Retry(format!("hashing what was staged: {e}"))
                    })?))
                }
                Err(reason) => return Ok(Err(reason)),
            }
        }
        Ok(Ok(digests))
    }

    /// Whether the job's backend fetches this input itself: only data the backend is
    /// configured to sit next to, and only what the backend says it can reach.
    fn backend_fetches(&self, job: &Job, backend: &dyn ComputeBackend, url: &str) -> bool {
        let near = self
            .config
            .backends
            .iter()
            .find(|b| b.name == job.backend)
            .is_some_and(|b| crate::jobs::routing::near(b, url));
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
    pub(super) async fn start_run(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let fetch = self.fetched_inputs(job)?;
        let spec = self
            .file_inputs(job)
            .and_then(|inputs| {
                workspace::build_spec(
                    &self.config,
                    &job.id,
                    &job.request,
                    job.timeout_secs,
                    &ws,
                    &inputs,
                )
            })
            .map(|mut spec| {
                spec.fetch = fetch;
                spec
            });
        let spec = match spec {
            Ok(spec) => spec,
            Err(reason) => {
                return self.fail(job, Phase::DataProvisioningFailed, reason).await;
            }
        };
        let mut spec = spec;
        let backend = self.backend_of(job)?;
        // The publisher approved an image, where the backend could name its digest: that image
        // runs, or nothing does. Started by its digest, so a re-tag after this check changes
        // nothing either.
        if let Some(pinned) = job.approval.as_ref().and_then(|a| a.image_digest.clone()) {
            let now = backend.image_digest(&spec.image).await?;
            if now.as_deref() != Some(pinned.as_str()) {
                let reason = format!(
                    "the image {} changed after the publisher approved it (approved {pinned}, now {})",
                    spec.image,
                    now.as_deref().unwrap_or("not on the engine")
                );
                return self
                    .fail(job, Phase::AlgorithmProvisioningFailed, reason)
                    .await;
            }
            spec.image = pinned;
        }
        let info = match backend.start(&spec).await {
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
    pub(super) async fn follow_run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<(), StepError> {
        super::failpoint("brizo::follow", &job.id).await;
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
                self.end_at_deadline(backend.as_ref(), job, timed_out)
                    .await?
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

    /// Ends a run that reached its deadline; how it ended. A run still queued then (a busy
    /// Batch queue) did no work, so it fails rather than times out, which counts as work done.
    async fn end_at_deadline(
        &self,
        backend: &dyn ComputeBackend,
        job: &Job,
        timed_out: Outcome,
    ) -> Result<(Outcome, Option<ExitInfo>, Option<String>), StepError> {
        backend.stop(&job.id).await?;
        Ok(match backend.wait(&job.id).await {
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
        })
    }

    /// Phase 50: lists outputs (regular files only: a symlink could point at the host) and
    /// applies the publisher's cap.
    pub(super) async fn filter_outputs(
        &self,
        job: &Job,
        started: Instant,
    ) -> Result<(), StepError> {
        // Outputs already listed and held for the publisher's review: only the decision is
        // awaited, or acted on (nothing is collected or listed again).
        if job.release.is_some() && job.timings.filtering_ms.is_some() {
            return self
                .after_review(job, job.outputs.clone(), Transition::default())
                .await;
        }
        // The run's outputs into the job folder (a remote run sends them back), and the digests
        // of what it fetched itself.
        match self.backend_of(job)?.collect(&job.id).await {
            Ok(collected) => self.record_fetched(job, &collected.fetched).await?,
            // A stopped or vanished run has nothing more to bring back; the folder is what it is.
            Err(BackendError::NotFound { .. }) => {}
            Err(e @ BackendError::RunFailed { .. }) => {
                return self.fail_publishing(job, e.to_string()).await;
            }
            Err(e) => return Err(e.into()),
        }
        super::failpoint("brizo::filter", &job.id).await;
        let mut outputs = match self.listed_outputs(job).await {
            Ok(outputs) => outputs,
            Err(reason) => return self.fail_publishing(job, reason).await,
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
        if job.release_pending() {
            // Held: the listing, with each file's hash for the review, stays on the record.
            let outputs = self.hashed(job, outputs).await?;
            // What filtering found (an output over the cap) is kept with it.
            let held = Transition {
                outputs: Some(outputs.clone()),
                timings: Some(timings),
                outcome: transition.outcome,
                error: transition.error.clone(),
                ..Default::default()
            };
            self.store
                .transition(&job.id, Phase::Filtering, held)
                .await?;
            return self.after_review(job, outputs, transition).await;
        }
        transition.outputs = Some(outputs);
        transition.timings = Some(timings);
        self.store
            .transition(&job.id, Phase::Publishing, transition)
            .await?;
        Ok(())
    }

    /// The job's outputs as the algorithm left them, or why they cannot be published: a tree
    /// that cannot be read (deeper than paths go, a name the filesystem refuses) does not
    /// heal, and a disk that filled up means the kernel refused writes, so what is there is
    /// cut short (said as such, rather than as the exit code it caused).
    async fn listed_outputs(&self, job: &Job) -> Result<Vec<OutputFile>, String> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let outputs_dir = ws.outputs();
        let outputs = tokio::task::spawn_blocking(move || list_outputs(&outputs_dir))
            .await
            .expect("listing does not panic")
            .map_err(|e| {
                format!("the job's outputs could not be listed: {e}; nothing was published")
            })?;
        if let Some(quota) = self.disk
            && crate::jobs::disk::is_full(&ws.disk(), quota)
        {
            return Err(format!(
                "the job filled its disk ({} MiB for /data/outputs and /data/logs: outputs.max_output_mb and outputs.max_log_kb); nothing was published",
                quota.content >> 20
            ));
        }
        Ok(outputs)
    }

    /// Phase 60 → 70: outputs and the log to the results store, with sizes and hashes of what
    /// was actually stored; then the container and the job folder go.
    pub(super) async fn publish(&self, job: &Job, started: Instant) -> Result<(), StepError> {
        let ws = Workspace::new(&self.config.jobs_dir(), &job.id);
        let sealing = match sealing_for(job)? {
            Ok(sealing) => sealing,
            Err(reason) => return self.fail_publishing(job, reason).await,
        };
        let key = sealing.as_ref().map(|(k, _, _)| k);
        let published = match self.put_outputs(&ws, job, key).await? {
            Ok(published) => published,
            Err(reason) => return self.fail_publishing(job, reason).await,
        };
        let log = self.log_path(&job.id);
        // Under review, the log is published only with the outputs' release.
        let mut log_digests = None;
        if log.exists()
            && !job
                .release
                .as_ref()
                .is_some_and(|r| r.state != ApprovalState::Approved)
        {
            let file = self
                .put_output(&ws, &job.id, "logs/algorithm.log", &log, key)
                .await
                .map_err(|e| StepError::Retry(e.to_string()))?;
            log_digests = Some(file);
        }
        if let Some((_, sealed_key, recipient)) = &sealing {
            self.store_sealed_key(&ws, job, sealed_key, recipient, log_digests.as_ref())
                .await?;
        }
        super::failpoint("brizo::publish", &job.id).await;
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

    /// Each listed output into the results store (encrypted with `key` if given), with the
    /// sizes and hashes of what was stored; `Ok(Err(reason))` when the algorithm left a file
    /// brizo cannot read (its mode, a vanished file), which does not heal by retrying.
    async fn put_outputs(
        &self,
        ws: &Workspace,
        job: &Job,
        key: Option<&crate::seal::ContentKey>,
    ) -> Result<Result<Vec<OutputFile>, String>, StepError> {
        let mut published = Vec::with_capacity(job.outputs.len());
        for output in &job.outputs {
            let source = ws.outputs().join(&output.name);
            let rel = format!("outputs/{}", output.name);
            match self.put_output(ws, &job.id, &rel, &source, key).await {
                Ok(mut file) => {
                    file.name = output.name.clone();
                    published.push(file);
                }
                Err(StorageError::Io(e)) => {
                    return Ok(Err(format!(
                        "output {} could not be read: {e}",
                        output.name
                    )));
                }
                Err(e) => return Err(StepError::Retry(e.to_string())),
            }
        }
        Ok(Ok(published))
    }

    /// The content key sealed to the consumer, into the results store beside the results, and
    /// on the job's record with the digests of the log it opens.
    async fn store_sealed_key(
        &self,
        ws: &Workspace,
        job: &Job,
        sealed_key: &[u8],
        recipient: &str,
        log: Option<&OutputFile>,
    ) -> Result<(), StepError> {
        let path = ws.root.join("key.ecies");
        tokio::fs::write(&path, sealed_key)
            .await
            .map_err(|e| StepError::Retry(format!("writing the sealed key: {e}")))?;
        let (_, key_sha256) = self
            .results
            .put_file(&job.id, "key.ecies", &path)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        let digest = |size, sha256| digest::Digest { size, sha256 };
        let sealed = crate::jobs::model::Sealed {
            recipient: recipient.to_string(),
            key_sha256,
            log: log.map(|f| digest(f.size, f.sha256.clone())),
            log_plain: log.and_then(|f| Some(digest(f.plain_size?, f.plain_sha256.clone()?))),
        };
        self.store.set_sealed(&job.id, &sealed).await?;
        Ok(())
    }

    /// Ends a job in publishing with `reason`, nothing published.
    async fn fail_publishing(&self, job: &Job, reason: String) -> Result<(), StepError> {
        let transition = Transition {
            outcome: Some(Outcome::Failed),
            error: Some(reason),
            outputs: Some(vec![]),
            ..Default::default()
        };
        self.store
            .transition(&job.id, Phase::Publishing, transition)
            .await?;
        Ok(())
    }

    /// One file into the results store as `rel`, encrypted with `key` when there is one (the
    /// ciphertext is made in the job's folder and goes with it). The digests are of what was
    /// stored, and for an encrypted file of the plaintext too.
    async fn put_output(
        &self,
        ws: &Workspace,
        job_id: &str,
        rel: &str,
        source: &std::path::Path,
        key: Option<&crate::seal::ContentKey>,
    ) -> Result<OutputFile, StorageError> {
        let Some(key) = key else {
            let (size, sha256) = self.results.put_file(job_id, rel, source).await?;
            return Ok(OutputFile {
                name: rel.to_string(),
                size,
                sha256,
                plain_size: None,
                plain_sha256: None,
            });
        };
        let sealed_dir = ws.root.join("sealed");
        tokio::fs::create_dir_all(&sealed_dir).await?;
        let target = sealed_dir.join(hex::encode(rel));
        let (key, from, to) = (key.clone(), source.to_path_buf(), target.clone());
        let plain = tokio::task::spawn_blocking(move || key.encrypt_file(&from, &to))
            .await
            .expect("encryption does not panic")
            .map_err(|e| match e {
                crate::seal::SealError::Io(e) => StorageError::Io(e),
                other => StorageError::Io(std::io::Error::other(other.to_string())),
            })?;
        let (size, sha256) = self.results.put_file(job_id, rel, &target).await?;
        let _ = tokio::fs::remove_file(&target).await;
        Ok(OutputFile {
            name: rel.to_string(),
            size,
            sha256,
            plain_size: Some(plain.0.size),
            plain_sha256: Some(plain.0.sha256),
        })
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

/// Why the staged algorithm (`got`) may not run: the publisher approved other bytes.
fn changed_since_approval(job: &Job, got: Option<&digest::Digest>) -> Option<String> {
    let approved = job.approval.as_ref()?.algorithm_sha256.as_deref();
    algorithm_mismatch(approved, got?)
}

/// The reason for [`changed_since_approval`], when the approved sha256 is not `got`'s.
fn algorithm_mismatch(approved: Option<&str>, got: &digest::Digest) -> Option<String> {
    let approved = approved?;
    (approved != got.sha256).then(|| {
        format!(
            "the algorithm changed after the publisher approved it (approved sha256 {approved}, now {})",
            got.sha256
        )
    })
}

/// A content key sealed to the consumer, with the key it was sealed to.
type Sealing = (crate::seal::ContentKey, Vec<u8>, String);

/// An encrypted job's sealing: a fresh content key for this attempt (a retried attempt makes
/// a new one and overwrites everything), sealed to the consumer to go beside the results.
/// `Ok(Err(reason))` when the job's key is not one to seal to.
fn sealing_for(job: &Job) -> Result<Result<Option<Sealing>, String>, StepError> {
    let Some(recipient) = &job.request.encrypt_to else {
        return Ok(Ok(None));
    };
    let public = match crate::seal::parse_public_key(recipient) {
        Ok(public) => public,
        Err(e) => return Ok(Err(format!("encryptTo: {e}; nothing was published"))),
    };
    let key = crate::seal::ContentKey::random();
    let sealed_key = key
        .seal(&public)
        .map_err(|e| StepError::Retry(format!("sealing the key: {e}")))?;
    Ok(Ok(Some((key, sealed_key, recipient.clone()))))
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
            plain_size: None,
            plain_sha256: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The publisher approved certain bytes: other bytes do not run, and the reason names both.
    #[test]
    fn an_algorithm_other_than_the_approved_one_is_refused() {
        let got = |sha256: &str| digest::Digest {
            size: 3,
            sha256: sha256.into(),
        };
        assert_eq!(
            algorithm_mismatch(None, &got("aa")),
            None,
            "nothing approved yet"
        );
        assert_eq!(algorithm_mismatch(Some("aa"), &got("aa")), None);
        let reason = algorithm_mismatch(Some("aa"), &got("bb")).expect("refused");
        assert!(
            reason.contains("changed after the publisher approved it")
                && reason.contains("approved sha256 aa, now bb"),
            "{reason}"
        );
    }
}
