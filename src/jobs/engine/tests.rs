//! The engine's steps against an in-memory backend, the way kube-rs tests reconcilers: each
//! test scripts what the backend answers (a start refused, an engine away, a run that never
//! ends, outputs over the cap) and checks where the job ends and why. The real backends are
//! tested against their real engines (Docker, Slurm, moto) in `tests/`; these tests are about
//! the engine's decisions, quickly and for every branch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use brizo_backend_core::{
    BackendError, Capabilities, Collected, ComputeBackend, ErrorClass, ExitInfo, JobSpec, RunInfo,
    RunState,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::policy::{Action, policy};
use crate::config::{Config, Overrides};
use crate::jobs::model::{Job, JobRequest, Outcome, Phase};
use crate::jobs::store::JobStore;
use crate::storage::ResultsStore;

type MakeError = Box<dyn Fn() -> BackendError + Send + Sync>;

/// What the in-memory backend answers; tests change it while the job goes on.
#[derive(Default)]
struct Script {
    /// `start` fails with this (every time, or `start_failures` times when that is set).
    start_error: Option<MakeError>,
    start_failures: Option<u32>,
    /// How the run ends by itself, and when; `None`: it runs until it is stopped.
    exit: Option<(ExitInfo, Duration)>,
    /// `wait`, `stop` and `remove` fail with this while it is set (an engine that is away).
    away: Option<MakeError>,
    /// `wait` says the run is gone.
    vanished: bool,
    /// `collect` fails with this.
    collect_error: Option<MakeError>,
    /// The algorithm writes this many bytes to `/data/outputs/out.bin`.
    writes_output: Option<usize>,
}

struct Run {
    started: Instant,
    ended: Option<ExitInfo>,
    outputs: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct MemoryBackend {
    script: Mutex<Script>,
    runs: Mutex<HashMap<String, Run>>,
    starts: Mutex<Vec<String>>,
    stops: Mutex<Vec<String>>,
    removes: Mutex<Vec<String>>,
}

impl MemoryBackend {
    fn scripted(f: impl FnOnce(&mut Script)) -> Arc<Self> {
        let b = Self::default();
        f(&mut b.script.lock().unwrap());
        Arc::new(b)
    }
    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }
    fn away(&self) -> Result<(), BackendError> {
        match &self.script.lock().unwrap().away {
            Some(e) => Err(e()),
            None => Ok(()),
        }
    }
    fn count(list: &Mutex<Vec<String>>, id: &str) -> usize {
        list.lock().unwrap().iter().filter(|j| *j == id).count()
    }
    /// Whether the job's run was removed (by its cleanup; the orphan sweep may remove it
    /// again, which is harmless: removal is idempotent).
    fn removed(&self, id: &str) -> bool {
        Self::count(&self.removes, id) >= 1
    }
}

#[async_trait]
impl ComputeBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::local()
    }
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
    async fn start(&self, spec: &JobSpec) -> Result<RunInfo, BackendError> {
        {
            let mut script = self.script.lock().unwrap();
            if let Some(make) = &script.start_error {
                let error = make();
                match script.start_failures.as_mut() {
                    Some(0) => {}
                    Some(n) => {
                        *n -= 1;
                        return Err(error);
                    }
                    None => return Err(error),
                }
            }
        }
        self.starts.lock().unwrap().push(spec.job_id.clone());
        let outputs = spec
            .mounts
            .iter()
            .find(|m| m.target == "/data/outputs")
            .map(|m| m.source.clone());
        if let (Some(bytes), Some(dir)) = (self.script.lock().unwrap().writes_output, &outputs) {
            std::fs::write(dir.join("out.bin"), vec![7u8; bytes]).unwrap();
        }
        self.runs
            .lock()
            .unwrap()
            .entry(spec.job_id.clone())
            .or_insert(Run {
                started: Instant::now(),
                ended: None,
                outputs,
            });
        Ok(RunInfo {
            run_id: format!("mem-{}", spec.job_id),
            image_digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"
                .into(),
        })
    }
    async fn state(&self, job_id: &str) -> Result<RunState, BackendError> {
        Ok(match self.runs.lock().unwrap().get(job_id) {
            None => RunState::NotFound,
            Some(Run { ended: Some(e), .. }) => RunState::Exited(*e),
            Some(_) => RunState::Running,
        })
    }
    async fn wait(&self, job_id: &str) -> Result<ExitInfo, BackendError> {
        loop {
            self.away()?;
            if self.script.lock().unwrap().vanished {
                return Err(BackendError::not_found(job_id));
            }
            {
                let exit = self.script.lock().unwrap().exit;
                let mut runs = self.runs.lock().unwrap();
                let run = runs
                    .get_mut(job_id)
                    .ok_or_else(|| BackendError::not_found(job_id))?;
                if let Some(ended) = run.ended {
                    return Ok(ended);
                }
                if let Some((exit, after)) = exit
                    && run.started.elapsed() >= after
                {
                    run.ended = Some(exit);
                    return Ok(exit);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn collect(&self, _job_id: &str) -> Result<Collected, BackendError> {
        match &self.script.lock().unwrap().collect_error {
            Some(e) => Err(e()),
            None => Ok(Collected::default()),
        }
    }
    fn logs(&self, _job_id: &str) -> BoxStream<'static, Result<Bytes, BackendError>> {
        Box::pin(futures::stream::iter([Ok(Bytes::from_static(
            b"hello from memory\n",
        ))]))
    }
    async fn stop(&self, job_id: &str) -> Result<(), BackendError> {
        self.away()?;
        self.stops.lock().unwrap().push(job_id.to_string());
        if let Some(run) = self.runs.lock().unwrap().get_mut(job_id) {
            run.ended.get_or_insert(ExitInfo {
                exit_code: 137,
                oom_killed: false,
            });
        }
        Ok(())
    }
    async fn remove(&self, job_id: &str) -> Result<(), BackendError> {
        self.away()?;
        self.removes.lock().unwrap().push(job_id.to_string());
        if let Some(run) = self.runs.lock().unwrap().remove(job_id)
            && let Some(dir) = run.outputs
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
    async fn list_runs(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.runs.lock().unwrap().keys().cloned().collect())
    }
}

/// An engine on a data folder whose only backend is `backend`, its loop (once started)
/// running until `shutdown` is cancelled, when the rig drops.
struct Rig {
    engine: Arc<Engine>,
    backend: Arc<MemoryBackend>,
    shutdown: CancellationToken,
    /// The data folder, removed with the rig when it owns it.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Job disks still mounted in the folder (a test that ends with a job under way).
        if let Some(dir) = &self.dir {
            crate::jobs::disk::detach_all_under(dir.path());
        }
    }
}

async fn rig(backend: Arc<MemoryBackend>, tweak: impl FnOnce(&mut Config)) -> Rig {
    rig_in(tempfile::tempdir().unwrap(), backend, tweak).await
}

/// A rig on `dir`, which may hold the jobs of an engine that stopped there.
async fn rig_in(
    dir: tempfile::TempDir,
    backend: Arc<MemoryBackend>,
    tweak: impl FnOnce(&mut Config),
) -> Rig {
    let r = idle_rig(dir, backend, tweak).await;
    r.start();
    r
}

/// A rig whose loop is not started yet: the engine as a process finds it when it starts.
async fn idle_rig(
    dir: tempfile::TempDir,
    backend: Arc<MemoryBackend>,
    tweak: impl FnOnce(&mut Config),
) -> Rig {
    Rig {
        engine: engine_on(dir.path(), backend.clone(), tweak).await,
        backend,
        shutdown: CancellationToken::new(),
        dir: Some(dir),
    }
}

/// An engine on the data folder `dir` whose only backend is `backend`, its loop not started.
async fn engine_on(
    dir: &std::path::Path,
    backend: Arc<MemoryBackend>,
    tweak: impl FnOnce(&mut Config),
) -> Arc<Engine> {
    let mut config = Config::load(
        None,
        Overrides {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    config.reconcile_interval_ms = 20;
    config.retry_backoff_ms = 5;
    config.limits.user = format!("{}:{}", nix_uid(), nix_uid());
    tweak(&mut config);
    let store = JobStore::open(&config.database_path()).await.unwrap();
    let results = ResultsStore::open(&config.outputs.results_url).unwrap();
    let mut backends: BTreeMap<String, Arc<dyn ComputeBackend>> = BTreeMap::new();
    backends.insert(config.backend.clone(), backend);
    Engine::new(Arc::new(config), store, backends, results, None)
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn request(timeout: u64) -> JobRequest {
    serde_json::from_value(serde_json::json!({
        "image": "brizo/python:3.11-bookworm",
        "entrypoint": "python3 $ALGO",
        "algorithm": {"rawcode": "print(1)"},
        "timeoutSeconds": timeout,
    }))
    .unwrap()
}

impl Rig {
    /// Starts the engine's loop, as the service does once it is up.
    fn start(&self) {
        tokio::spawn(self.engine.clone().run(self.shutdown.clone()));
    }

    async fn submit(&self, timeout: u64) -> String {
        self.engine
            .submit("alice", request(timeout))
            .await
            .unwrap()
            .id
    }

    /// A job submitted once the one before it is in `phase`: jobs submitted at the same
    /// moment are staged in the order their drivers get to a free slot, which a test that
    /// names each job's place must not leave to chance.
    async fn submit_to(&self, phase: Phase) -> String {
        let id = self.submit(600).await;
        self.reaches(&id, phase).await;
        id
    }

    /// A job held for the publisher's approval (its dataset asks for it).
    async fn submit_held(&self) -> String {
        let held = crate::jobs::model::Holds {
            approval: true,
            release: false,
        };
        self.engine
            .submit_under("alice", request(600), None, held)
            .await
            .unwrap()
            .id
    }

    /// The job once it ended and its after-run steps are done (its receipt issued).
    async fn ended(&self, id: &str) -> Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = self.engine.get(id, None).await.unwrap();
            if job.is_finished() && job.receipt.is_some() {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not end: phase {:?}, error {:?}",
                job.phase,
                job.error
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the job waits for now, as its status says.
    async fn waiting(&self, id: &str) -> Option<crate::jobs::model::Waiting> {
        let job = self.engine.get(id, None).await.unwrap();
        self.engine.waiting(&job).await.unwrap()
    }

    /// What the job waits for, once its status gives `reason`.
    async fn waits_for(
        &self,
        id: &str,
        reason: crate::jobs::model::WaitReason,
    ) -> crate::jobs::model::Waiting {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.engine.get(id, None).await.unwrap();
            if let Some(w) = self.engine.waiting(&job).await.unwrap()
                && w.reason == reason
            {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "never waiting for {reason:?}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn reaches(&self, id: &str, phase: Phase) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = self.engine.get(id, None).await.unwrap();
            if job.phase == phase {
                return;
            }
            if Instant::now() > deadline {
                let waits = self.engine.waiting(&job).await.unwrap();
                let others: Vec<(String, Phase, bool)> = self
                    .engine
                    .unfinished()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|j| (j.id, j.phase, j.stop_requested))
                    .collect();
                let active: Vec<String> =
                    self.engine.active.lock().unwrap().keys().cloned().collect();
                eprintln!("unfinished {others:?}; drivers {active:?}");
                panic!(
                    "job {id} never reached {phase:?}: it is {:?} (error {:?}), waiting for {waits:?}; slots free: ahead {}, staging {}, run {}",
                    job.phase,
                    job.error,
                    self.engine.ahead_slots.available(),
                    self.engine.staging_slots.available(),
                    self.engine.run_slots.available()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The jobs `ids`, once as many are in each phase as `want` says, and still after `hold`
/// more (however many reconcile ticks, 20 ms, go by); fails if they ever leave that state.
async fn settled(
    engine: &Engine,
    ids: &[String],
    want: [(Phase, usize); 3],
    hold: Duration,
) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held_since: Option<Instant> = None;
    loop {
        let mut jobs = vec![];
        for id in ids {
            jobs.push(engine.get(id, None).await.unwrap());
        }
        let count = |p: Phase| jobs.iter().filter(|j| j.phase == p).count();
        let phases: Vec<Phase> = jobs.iter().map(|j| j.phase).collect();
        if want.iter().all(|(p, n)| count(*p) == *n) {
            let since = *held_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                return jobs;
            }
        } else {
            assert!(held_since.is_none(), "phases {phases:?} after {want:?}");
            assert!(
                Instant::now() < deadline,
                "phases {phases:?}, want {want:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One job runs at a time and one stages: two places ahead of the runs.
fn one_at_a_time(c: &mut Config) {
    c.max_running_jobs = 1;
    c.max_staging_jobs = 1;
}

fn exits(code: i64) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        oom_killed: false,
    }
}

#[test]
fn the_policy_acts_on_the_class_alone() {
    let cases: [(BackendError, u32, Action); 7] = [
        (BackendError::unavailable("down"), 100, Action::Retry),
        (BackendError::other("odd"), 1, Action::Retry),
        (BackendError::other("odd"), 6, Action::Fail(Phase::Finished)),
        (
            BackendError::invalid_spec("bad"),
            1,
            Action::Fail(Phase::AlgorithmProvisioningFailed),
        ),
        (
            BackendError::image_not_found("x"),
            1,
            Action::Fail(Phase::AlgorithmProvisioningFailed),
        ),
        (
            BackendError::input("gone"),
            1,
            Action::Fail(Phase::DataProvisioningFailed),
        ),
        (
            BackendError::run_failed("never ran"),
            1,
            Action::Fail(Phase::Finished),
        ),
    ];
    for (error, attempts, action) in cases {
        assert_eq!(policy(&error, attempts), action, "{error} after {attempts}");
    }
    assert_eq!(
        BackendError::unavailable("x").class(),
        ErrorClass::Transient
    );
}

#[tokio::test]
async fn a_run_that_exits_0_succeeds_and_leaves_nothing() {
    let r = rig(
        MemoryBackend::scripted(|s| s.exit = Some((exits(0), Duration::ZERO))),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Succeeded), "{:?}", job.error);
    assert_eq!(job.exit_code, Some(0));
    assert_eq!(job.phase, Phase::Finished);
    assert!(r.backend.removed(&id));
    assert!(!r.engine.config().jobs_dir().join(&id).exists());
    let log = std::fs::read_to_string(r.engine.log_path(&id)).unwrap();
    assert_eq!(log, "hello from memory\n");
}

#[tokio::test]
async fn a_start_the_backend_refuses_as_bad_ends_the_job_at_once_with_the_reason() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| {
                BackendError::invalid_spec("executable file not found: pyhton3")
            }))
        }),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.phase, Phase::AlgorithmProvisioningFailed);
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(job.error.as_deref().unwrap().contains("pyhton3"), "{job:?}");
    assert_eq!(job.exit_code, None);
    // Whatever the refused start left is removed.
    assert!(r.backend.removed(&id));
}

#[tokio::test]
async fn an_engine_that_is_away_is_waited_for_and_the_job_then_runs() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| BackendError::unavailable("daemon down")));
            s.start_failures = Some(3);
            s.exit = Some((exits(0), Duration::ZERO));
        }),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Succeeded), "{:?}", job.error);
    assert_eq!(MemoryBackend::count(&r.backend.starts, &id), 1);
}

#[tokio::test]
async fn an_unclassified_error_gives_up_after_bounded_attempts_with_the_last_reason() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| BackendError::other("engine said 418")))
        }),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(job.error.as_deref().unwrap().contains("418"), "{job:?}");
    assert_eq!(MemoryBackend::count(&r.backend.starts, &id), 0);
}

#[tokio::test]
async fn exit_codes_and_out_of_memory_are_judged() {
    let r = rig(
        MemoryBackend::scripted(|s| s.exit = Some((exits(3), Duration::ZERO))),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(
        (job.outcome, job.exit_code),
        (Some(Outcome::Failed), Some(3))
    );
    assert!(job.error.unwrap().contains("exited with code 3"));

    r.backend.set(|s| {
        s.exit = Some((
            ExitInfo {
                exit_code: 137,
                oom_killed: true,
            },
            Duration::ZERO,
        ))
    });
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::OutOfMemory));
    assert!(job.error.unwrap().contains("out of memory"));
}

#[tokio::test]
async fn a_run_past_its_timeout_is_stopped_and_times_out() {
    let r = rig(MemoryBackend::scripted(|_| {}), |_| {}).await;
    let id = r.submit(1).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::TimedOut));
    assert!(job.error.unwrap().contains("1 s limit"));
    assert_eq!(MemoryBackend::count(&r.backend.stops, &id), 1);
    assert!(r.backend.removed(&id));
}

#[tokio::test]
async fn a_stop_ends_a_running_job_and_a_queued_one_never_starts() {
    let r = rig(MemoryBackend::scripted(|_| {}), |c| c.max_running_jobs = 1).await;
    let running = r.submit(600).await;
    r.reaches(&running, Phase::Running).await;
    let queued = r.submit(600).await;
    r.reaches(&queued, Phase::Provisioned).await;

    r.engine.stop(&queued, Some("alice")).await.unwrap();
    let job = r.ended(&queued).await;
    assert_eq!(job.outcome, Some(Outcome::Stopped));
    assert_eq!(job.error.as_deref(), Some("stopped before it ran"));
    assert_eq!(MemoryBackend::count(&r.backend.starts, &queued), 0);

    r.engine.stop(&running, Some("alice")).await.unwrap();
    let job = r.ended(&running).await;
    assert_eq!(job.outcome, Some(Outcome::Stopped));
    assert_eq!(MemoryBackend::count(&r.backend.stops, &running), 1);
    assert!(r.backend.removed(&running));
    // Another consumer cannot stop it, nor see it.
    assert!(r.engine.stop(&running, Some("mallory")).await.is_err());
}

#[tokio::test]
async fn an_engine_that_stays_away_while_running_ends_the_job_after_the_grace() {
    let backend = MemoryBackend::scripted(|_| {});
    let r = rig(backend.clone(), |c| c.limits.grace_secs = 1).await;
    let id = r.submit(1).await;
    r.reaches(&id, Phase::Running).await;
    backend.set(|s| s.away = Some(Box::new(|| BackendError::unavailable("daemon restarting"))));
    // It ends (as failed, with the last error), though the engine never answers again...
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = r.engine.get(&id, None).await.unwrap();
        if job.is_finished() {
            break job;
        }
        assert!(Instant::now() < deadline, "stuck in {:?}", job.phase);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.outcome, Some(Outcome::Failed));
    let reason = job.error.unwrap();
    assert!(reason.contains("1 s of grace"), "{reason}");
    assert!(reason.contains("daemon restarting"), "{reason}");
    // ...and what it left goes once the engine is back.
    assert!(!backend.removed(&id));
    backend.set(|s| s.away = None);
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(backend.removed(&id));
}

#[tokio::test]
async fn a_stop_the_engine_cannot_carry_out_still_ends_the_job_within_the_grace() {
    let backend = MemoryBackend::scripted(|_| {});
    let r = rig(backend.clone(), |c| c.limits.grace_secs = 1).await;
    let id = r.submit(600).await;
    r.reaches(&id, Phase::Running).await;
    backend.set(|s| s.away = Some(Box::new(|| BackendError::unavailable("daemon gone"))));
    r.engine.stop(&id, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = r.engine.get(&id, None).await.unwrap();
        if job.is_finished() {
            break job;
        }
        assert!(Instant::now() < deadline, "stuck in {:?}", job.phase);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.outcome, Some(Outcome::Stopped));
    assert!(job.error.unwrap().contains("did not confirm"));
    backend.set(|s| s.away = None);
    r.ended(&id).await;
    assert!(backend.removed(&id));
}

#[tokio::test]
async fn a_job_that_cannot_start_within_max_wait_fails_with_why() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| BackendError::unavailable("no capacity")))
        }),
        |c| c.limits.max_wait_secs = 1,
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    let reason = job.error.unwrap();
    assert!(reason.contains("did not start within 1 s"), "{reason}");
    assert!(reason.contains("no capacity"), "{reason}");
}

#[tokio::test]
async fn outputs_over_the_cap_fail_the_job_and_nothing_is_published() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.exit = Some((exits(0), Duration::ZERO));
            s.writes_output = Some(2 << 20);
        }),
        |c| c.outputs.max_output_mb = 1,
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(job.error.unwrap().contains("over the publisher's cap"));
    assert!(job.outputs.is_empty());
}

#[tokio::test]
async fn a_run_whose_results_cannot_be_read_or_that_vanished_fails_with_the_reason() {
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.exit = Some((exits(0), Duration::ZERO));
            s.collect_error = Some(Box::new(|| BackendError::run_failed("archive is corrupt")));
        }),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(job.error.unwrap().contains("archive is corrupt"));

    r.backend.set(|s| {
        s.collect_error = None;
        s.exit = None;
    });
    let id = r.submit(60).await;
    r.reaches(&id, Phase::Running).await;
    r.backend.set(|s| s.vanished = true);
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Failed));
    assert!(job.error.unwrap().contains("disappeared"));
}

#[tokio::test]
async fn a_removed_job_leaves_nothing_and_is_hidden() {
    let r = rig(
        MemoryBackend::scripted(|s| s.exit = Some((exits(0), Duration::ZERO))),
        |_| {},
    )
    .await;
    let id = r.submit(60).await;
    let job = r.ended(&id).await;
    assert_eq!(job.outcome, Some(Outcome::Succeeded));
    r.engine.remove(&id, Some("alice")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.engine.store.get(&id).await.unwrap().unwrap().cleared {
        assert!(Instant::now() < deadline, "leftovers never cleared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r.engine.get(&id, Some("alice")).await.is_err());
    assert!(!r.engine.log_path(&id).exists());
    assert!(
        !r.engine
            .config()
            .data_dir
            .join("results")
            .join(&id)
            .exists()
    );
}

#[tokio::test]
async fn an_unfinished_job_says_what_it_waits_for_and_its_place_in_the_queue() {
    use crate::jobs::model::WaitReason;
    let r = rig(MemoryBackend::scripted(|_| {}), |c| c.max_running_jobs = 1).await;
    let running = r.submit(600).await;
    r.reaches(&running, Phase::Running).await;
    let second = r.submit(600).await;
    r.reaches(&second, Phase::Provisioned).await;
    let third = r.submit(600).await;
    r.reaches(&third, Phase::Provisioned).await;
    assert_eq!(
        r.waiting(&running).await,
        None,
        "a running job waits for nothing"
    );
    let w = r.waiting(&second).await.unwrap();
    assert_eq!(
        (w.reason, w.position),
        (WaitReason::RunSlot, Some(1)),
        "{w:?}"
    );
    assert!(w.text.contains("0 job(s) ahead"), "{}", w.text);
    let w = r.waiting(&third).await.unwrap();
    assert_eq!(
        (w.reason, w.position),
        (WaitReason::RunSlot, Some(2)),
        "{w:?}"
    );

    // The slot frees: the next one runs and the last moves up.
    r.engine.stop(&running, None).await.unwrap();
    r.reaches(&second, Phase::Running).await;
    let w = r.waiting(&third).await.unwrap();
    assert_eq!(
        (w.reason, w.position),
        (WaitReason::RunSlot, Some(1)),
        "{w:?}"
    );

    // A stop asked for is what it waits on then.
    r.engine.stop(&second, None).await.unwrap();
    let job = r.engine.get(&second, None).await.unwrap();
    if !job.is_finished() {
        let w = r.engine.waiting(&job).await.unwrap().unwrap();
        assert_eq!(w.reason, WaitReason::Stopping);
    }
}

/// Staging runs ahead of the runs by a bounded number of jobs: a burst does not stage (mount
/// a disk for, fetch the inputs of) every job it holds while the runs take their turns.
#[tokio::test]
async fn staging_runs_ahead_of_the_runs_by_a_bounded_number_of_jobs() {
    use crate::jobs::model::WaitReason;
    let r = rig(MemoryBackend::scripted(|_| {}), one_at_a_time).await;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(r.submit(600).await);
    }
    // One runs, two wait staged (a run slot's and a staging slot's worth); the rest stay
    // queued.
    let want = [
        (Phase::Running, 1),
        (Phase::Provisioned, 2),
        (Phase::Queued, 2),
    ];
    let jobs = settled(&r.engine, &ids, want, Duration::from_millis(500)).await;
    for job in jobs.iter().filter(|j| j.phase == Phase::Queued) {
        let w = r.engine.waiting(job).await.unwrap().unwrap();
        assert_eq!(w.reason, WaitReason::StagingSlot, "{w:?}");
        assert!(w.text.contains("at most 2 wait staged"), "{}", w.text);
    }
    // A run slot frees: a staged job runs, and one more queued job is staged; no more.
    let running = jobs.iter().find(|j| j.phase == Phase::Running).unwrap();
    r.engine.stop(&running.id, None).await.unwrap();
    r.ended(&running.id).await;
    let want = [
        (Phase::Running, 1),
        (Phase::Provisioned, 2),
        (Phase::Queued, 1),
    ];
    settled(&r.engine, &ids, want, Duration::from_millis(300)).await;
    for id in ids.iter().filter(|id| **id != running.id) {
        r.engine.stop(id, None).await.unwrap();
        assert!(r.ended(id).await.is_finished());
    }
}

/// Slots go in the order the status reports places, not in the order drivers happened to
/// ask: a job the publisher approves late was submitted before the ones queued meanwhile,
/// its status puts it first in line, and it is the one staged when an ahead slot frees.
#[tokio::test]
async fn slots_go_in_the_order_the_status_reports() {
    use crate::jobs::model::WaitReason;
    let r = rig(MemoryBackend::scripted(|_| {}), one_at_a_time).await;
    let running = r.submit(600).await;
    r.reaches(&running, Phase::Running).await;
    let approved = r.submit_held().await;
    // Two wait staged for the run slot (all the ahead slots); the last waits to be staged.
    let b = r.submit_to(Phase::Provisioned).await;
    let c = r.submit_to(Phase::Provisioned).await;
    let d = r.submit(600).await;
    let place = async |id: &str| {
        let w = r.waiting(id).await.unwrap();
        (w.reason, w.position)
    };
    assert_eq!(place(&d).await, (WaitReason::StagingSlot, Some(1)));

    // Approved now, it was submitted before d: first in line, and first staged.
    r.engine.approve(&approved, "publisher").await.unwrap();
    assert_eq!(place(&approved).await, (WaitReason::StagingSlot, Some(1)));
    assert_eq!(place(&d).await, (WaitReason::StagingSlot, Some(2)));
    // Its driver gets in line behind d's (at the next reconcile pass), then a slot frees.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.engine.ahead_slots.in_line() < 2 {
        assert!(
            Instant::now() < deadline,
            "the approved job never got in line"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.engine.stop(&running, None).await.unwrap();
    r.reaches(&b, Phase::Running).await;
    r.reaches(&approved, Phase::Provisioned).await;
    let job = r.engine.get(&d, None).await.unwrap();
    assert_eq!(job.phase, Phase::Queued, "d waits behind the approved job");

    // And the runs start in that order.
    for id in [&b, &c, &approved] {
        r.reaches(id, Phase::Running).await;
        r.engine.stop(id, None).await.unwrap();
        r.ended(id).await;
    }
    r.reaches(&d, Phase::Running).await;
    r.engine.stop(&d, None).await.unwrap();
    r.ended(&d).await;
    let starts = r.backend.starts.lock().unwrap().clone();
    assert_eq!(starts, [running, b, c, approved, d]);
}

#[tokio::test]
async fn a_job_whose_start_failed_says_why_and_when_it_is_tried_again() {
    use crate::jobs::model::WaitReason;
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| {
                BackendError::unavailable("engine is upgrading")
            }))
        }),
        |c| c.retry_backoff_ms = 2000,
    )
    .await;
    let id = r.submit(600).await;
    let w = r.waits_for(&id, WaitReason::Retrying).await;
    assert!(w.text.contains("engine is upgrading"), "{}", w.text);
    assert!(w.text.contains("trying again in"), "{}", w.text);
}

/// A job whose start failed waits out the pause staged, its inputs on disk: it keeps its
/// place ahead of the runs (no queued job is staged in its stead, past the bound), and it
/// is out of the run line meanwhile (the job behind it is first, and gets the next slot).
/// Back from the pause, it takes the place its staging gave it.
#[tokio::test]
async fn a_job_waiting_to_retry_its_start_keeps_its_place_ahead_and_leaves_the_run_line() {
    use crate::jobs::model::WaitReason;
    let r = rig(
        MemoryBackend::scripted(|s| {
            s.start_error = Some(Box::new(|| {
                BackendError::unavailable("engine is upgrading")
            }));
            s.start_failures = Some(1);
        }),
        |c| {
            one_at_a_time(c);
            // The first retry comes 10 s later (twice this): time enough for the checks
            // below on a loaded machine.
            c.retry_backoff_ms = 5000;
        },
    )
    .await;
    let first = r.submit(600).await;
    r.waits_for(&first, WaitReason::Retrying).await;
    // b takes the run slot the pause left free; c is staged in b's place ahead; d waits,
    // for the first job still holds its place ahead.
    let b = r.submit_to(Phase::Running).await;
    let c = r.submit_to(Phase::Provisioned).await;
    let d = r.submit(600).await;
    let ids = [first.clone(), b.clone(), c.clone(), d.clone()];
    let want = [
        (Phase::Running, 1),
        (Phase::Provisioned, 2),
        (Phase::Queued, 1),
    ];
    settled(&r.engine, &ids, want, Duration::from_millis(300)).await;
    let place = async |id: &str| {
        let w = r.waiting(id).await.unwrap();
        (w.reason, w.position)
    };
    assert_eq!(place(&c).await, (WaitReason::RunSlot, Some(1)));
    assert_eq!(place(&d).await, (WaitReason::StagingSlot, Some(1)));
    assert_eq!(
        place(&first).await,
        (WaitReason::Retrying, None),
        "the pause is over too soon for this test"
    );

    // Back from its pause, it is in line again, before c (it was staged first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.engine.run_slots.in_line() < 2 {
        assert!(
            Instant::now() < deadline,
            "the first job never got back in line"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(place(&first).await, (WaitReason::RunSlot, Some(1)));
    assert_eq!(place(&c).await, (WaitReason::RunSlot, Some(2)));
    for id in [&b, &first, &c, &d] {
        r.reaches(id, Phase::Running).await;
        r.engine.stop(id, None).await.unwrap();
        r.ended(id).await;
    }
    let starts = r.backend.starts.lock().unwrap().clone();
    assert_eq!(starts, [b, first, c, d]);
}

/// A process that stops (a crash, a kill) and starts again keeps the bound on jobs staged
/// ahead of the runs: the jobs it finds staged take their places before any queued job can.
#[tokio::test]
async fn a_restart_keeps_the_bound_on_jobs_staged_ahead() {
    let backend = MemoryBackend::scripted(|_| {});
    let dir = tempfile::tempdir().unwrap();
    // One runs, two wait staged, two are queued; then the process ends where it stands:
    // its runtime goes, and every task with it (the run goes on in the backend).
    let (path, before) = (dir.path().to_path_buf(), backend.clone());
    let ids = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Not the folder's owner: it stays, job disks and all, for the next start.
            let r = Rig {
                engine: engine_on(&path, before.clone(), one_at_a_time).await,
                backend: before,
                shutdown: CancellationToken::new(),
                dir: None,
            };
            r.start();
            let ids = vec![
                r.submit_to(Phase::Running).await,
                r.submit_to(Phase::Provisioned).await,
                r.submit_to(Phase::Provisioned).await,
                r.submit(600).await,
                r.submit(600).await,
            ];
            let want = [
                (Phase::Running, 1),
                (Phase::Provisioned, 2),
                (Phase::Queued, 2),
            ];
            settled(&r.engine, &ids, want, Duration::from_millis(200)).await;
            ids
        })
    })
    .join()
    .unwrap();

    // Started again on the same folder: the run is followed again, the two staged jobs keep
    // their places ahead, and the queued ones still wait.
    let r = rig_in(dir, backend, one_at_a_time).await;
    let want = [
        (Phase::Running, 1),
        (Phase::Provisioned, 2),
        (Phase::Queued, 2),
    ];
    let jobs = settled(&r.engine, &ids, want, Duration::from_millis(500)).await;
    let running = jobs.iter().find(|j| j.phase == Phase::Running).unwrap();
    assert_eq!(running.id, ids[0]);
    for id in &ids {
        r.reaches(id, Phase::Running).await;
        r.engine.stop(id, None).await.unwrap();
        r.ended(id).await;
    }
    let starts = r.backend.starts.lock().unwrap().clone();
    assert_eq!(starts, ids, "each started once, in the order of its place");
}

/// A job the process finds staging when it starts keeps its staging slot: it is taken for
/// it before any queued job's driver runs, even one submitted before it (the publisher
/// approved it just before the stop), so it stays first, as its status says.
#[tokio::test]
async fn a_job_found_staging_at_a_start_keeps_its_slots() {
    use crate::jobs::model::WaitReason;
    use crate::jobs::store::Transition;
    let dir = tempfile::tempdir().unwrap();
    let r = idle_rig(dir, MemoryBackend::scripted(|_| {}), one_at_a_time).await;
    let approved = r.submit_held().await;
    let staging = r.submit(600).await;
    r.engine.approve(&approved, "publisher").await.unwrap();
    r.engine
        .store
        .transition(&staging, Phase::Staging, Transition::default())
        .await
        .unwrap();

    // The first pass: the slots are taken before it returns (this runtime runs one task at
    // a time, so no driver has run yet).
    r.engine.reconcile_once().await.unwrap();
    assert_eq!(r.engine.staging_slots.available(), 0);
    assert_eq!(r.engine.ahead_slots.available(), 1);
    let w = r.waiting(&approved).await.unwrap();
    assert_eq!((w.reason, w.position), (WaitReason::StagingSlot, Some(1)));
    assert_eq!(
        r.waiting(&staging).await.unwrap().reason,
        WaitReason::Staging
    );

    r.start();
    r.reaches(&staging, Phase::Running).await;
    r.reaches(&approved, Phase::Provisioned).await;
    let starts = r.backend.starts.lock().unwrap().clone();
    assert_eq!(starts, std::slice::from_ref(&staging));
    for id in [&approved, &staging] {
        r.engine.stop(id, None).await.unwrap();
        r.ended(id).await;
    }
}

/// A run whose backend stops answering waits out a retry's pause with its container still
/// going: it keeps its run slot meanwhile, so no other job starts past max_running_jobs.
#[tokio::test]
async fn a_run_waiting_to_be_followed_again_keeps_its_run_slot() {
    use crate::jobs::model::WaitReason;
    let backend = MemoryBackend::scripted(|_| {});
    let r = rig(backend.clone(), |c| {
        c.max_running_jobs = 1;
        // A 2 s pause after the first failure.
        c.retry_backoff_ms = 1000;
    })
    .await;
    let running = r.submit_to(Phase::Running).await;
    let next = r.submit_to(Phase::Provisioned).await;
    backend.set(|s| s.away = Some(Box::new(|| BackendError::unavailable("daemon restarting"))));
    r.waits_for(&running, WaitReason::Retrying).await;
    let ids = [running.clone(), next.clone()];
    let want = [
        (Phase::Running, 1),
        (Phase::Provisioned, 1),
        (Phase::Queued, 0),
    ];
    settled(&r.engine, &ids, want, Duration::from_millis(500)).await;
    assert_eq!(r.engine.run_slots.available(), 0);
    assert_eq!(
        r.waiting(&running).await.map(|w| w.reason),
        Some(WaitReason::Retrying),
        "the pause is over too soon for this test"
    );

    // The engine back, the run is followed again; the next starts once it ends.
    backend.set(|s| s.away = None);
    r.engine.stop(&running, None).await.unwrap();
    r.ended(&running).await;
    r.reaches(&next, Phase::Running).await;
    r.engine.stop(&next, None).await.unwrap();
    r.ended(&next).await;
    let starts = r.backend.starts.lock().unwrap().clone();
    assert_eq!(starts, ids);
}

/// A job found staging when there is no place ahead of the runs for it (the limits were
/// lowered across the restart) takes no staging slot either: holding one while waiting for
/// a place would hold up the jobs that have theirs.
#[tokio::test]
async fn a_job_found_staging_without_a_place_ahead_takes_no_staging_slot() {
    use crate::jobs::store::Transition;
    let r = idle_rig(
        tempfile::tempdir().unwrap(),
        MemoryBackend::scripted(|_| {}),
        one_at_a_time,
    )
    .await;
    // Three further along than two places ahead allow: two staged, then one staging.
    for phase in [Phase::Provisioned, Phase::Provisioned, Phase::Staging] {
        let id = r.submit(600).await;
        r.engine
            .store
            .transition(&id, phase, Transition::default())
            .await
            .unwrap();
    }
    r.engine.reconcile_once().await.unwrap();
    assert_eq!(r.engine.ahead_slots.available(), 0);
    assert_eq!(r.engine.staging_slots.available(), 1);
}
