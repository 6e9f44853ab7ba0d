//! The scheduler: the reconcile loop, the staging and run slots, wake-ups and retries. It
//! decides which step a job takes next; the steps themselves are the other rooms'.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after the last trim the engine gives freed memory back again, once idle.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(5);

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Engine;
use super::approval::Gate;
use super::line::Place;
use super::policy::{Action, StepError, policy};
use crate::jobs::model::{Job, Outcome, Phase, now_epoch};
use crate::jobs::store::{StoreError, Transition};
use crate::jobs::workspace::Workspace;

/// A job whose last drive failed: when to try again, how often it was tried, and why it
/// failed (the reason a job that runs out of time ends with). It keeps meanwhile what it
/// still occupies (`kept`): a job staged or staging its place ahead of the runs (its inputs
/// stay on disk, and the bound on jobs staged ahead counts them), a run under way its run
/// slot (its container goes on). A job whose start failed gives its run slot back.
pub(super) struct Retry {
    pub at: Instant,
    pub attempts: u32,
    pub reason: String,
    kept: Slots,
}

/// The slots a job's driver holds across its steps: its place ahead of the runs (from the
/// start of its staging until its run has started), its staging slot (taken for it when a
/// restart finds it staging; otherwise held by the staging step alone), its run slot while
/// it waits to start, and the same slot once its run is under way (`running`).
#[derive(Default)]
pub(super) struct Slots {
    ahead: Option<Place>,
    staging: Option<Place>,
    run: Option<Place>,
    running: Option<Place>,
}

impl Engine {
    // ---- reconcile loop -----------------------------------------------------------------

    /// Runs until `shutdown`. Unfinished jobs are picked up at once when submitted and, for
    /// anything missed (restarts, retries), on every tick.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = Duration::from_millis(self.config.reconcile_interval_ms.max(10));
        tokio::spawn(self.clone().watch_health(shutdown.clone()));
        self.sweep_orphans().await;
        let mut ticks = 0u64;
        let mut busy_since_trim = false;
        let mut trimmed = Instant::now();
        loop {
            if let Err(e) = self.reconcile_once().await {
                warn!("reconcile: {e}");
            }
            ticks += 1;
            if ticks.is_multiple_of(60) {
                self.sweep_orphans().await;
            }
            // Idle after work: what the jobs used goes back to the system.
            let idle = self.active.lock().unwrap().is_empty();
            busy_since_trim |= !idle;
            if idle && busy_since_trim && trimmed.elapsed() > IDLE_TRIM_AFTER {
                crate::memory::release_free();
                busy_since_trim = false;
                trimmed = Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
        // Drivers end with the runtime, without stopping anything: their containers go on and
        // are re-attached at the next start. (Cancelling their tokens would mean "stop the job".)
    }

    pub(super) async fn reconcile_once(self: &Arc<Self>) -> Result<(), StoreError> {
        // Finished jobs whose agreement is not settled yet (the chain was down) come too.
        let jobs = self.store.to_drive().await?;
        let now = Instant::now();
        let mut queued = 0;
        let mut to_start = vec![];
        for (id, phase) in jobs {
            if matches!(phase, Phase::Queued | Phase::Provisioned) {
                queued += 1;
            }
            let in_backoff = || {
                let retries = self.retry_at.lock().unwrap();
                retries.get(&id).is_some_and(|r| r.at > now)
            };
            if !self.active.lock().unwrap().contains_key(&id) && !in_backoff() {
                to_start.push((id, phase));
            }
        }
        // Jobs further along than queued ones (after a restart, or back from a retry) take
        // the slots they held before any queued job's driver can: a run that goes on its run
        // slot (or new starts would overshoot max_running_jobs), a job staged or staging its
        // place ahead of the runs (or queued jobs would stage past the bound), and a job
        // staging its staging slot (it stays first, as its status says).
        let held: Vec<Slots> = to_start
            .iter()
            .map(|(id, phase)| self.slots_held(id, *phase))
            .collect();
        for ((id, _), slots) in to_start.into_iter().zip(held) {
            let token = CancellationToken::new();
            self.active
                .lock()
                .unwrap()
                .insert(id.clone(), token.clone());
            let engine = self.clone();
            tokio::spawn(async move { engine.drive(id, token, slots).await });
        }
        metrics::gauge!("brizo_jobs_queued").set(queued as f64);
        metrics::gauge!("brizo_jobs_active").set(self.active.lock().unwrap().len() as f64);
        Ok(())
    }

    /// The slots a job gets before its driver starts, from what it held when its last
    /// driver ended: what it kept through a retry's pause, or, after a restart, the slots its
    /// phase says it had, when they are free (they are, unless the limits were lowered).
    fn slots_held(&self, id: &str, phase: Phase) -> Slots {
        let kept = self
            .retry_at
            .lock()
            .unwrap()
            .get_mut(id)
            .map(|r| std::mem::take(&mut r.kept))
            .unwrap_or_default();
        match phase {
            Phase::Running => Slots {
                running: kept.running.or_else(|| self.run_slots.try_take()),
                ..Default::default()
            },
            Phase::Staging => {
                let ahead = kept.ahead.or_else(|| self.ahead_slots.try_take());
                // The staging slot only with a place ahead: waiting for that place while
                // holding a staging slot could hold up every job that has its place.
                let staging = ahead.as_ref().and_then(|_| self.staging_slots.try_take());
                Slots {
                    ahead,
                    staging,
                    ..Default::default()
                }
            }
            Phase::Provisioned => Slots {
                ahead: kept.ahead.or_else(|| self.ahead_slots.try_take()),
                ..Default::default()
            },
            _ => Slots::default(),
        }
    }

    async fn drive(self: Arc<Self>, id: String, cancel: CancellationToken, mut slots: Slots) {
        let result = self.drive_steps(&id, &cancel, &mut slots).await;
        // Kept through a retry's pause; every other slot goes back now.
        let kept = Slots {
            ahead: slots.ahead.take(),
            running: slots.running.take(),
            ..Default::default()
        };
        drop(slots);
        match result {
            Ok(()) => {
                self.retry_at.lock().unwrap().remove(&id);
            }
            Err(StepError::Retry(reason)) => self.retry_later(&id, &reason, kept),
            Err(StepError::Backend(e)) => {
                let attempts = self
                    .retry_at
                    .lock()
                    .unwrap()
                    .get(&id)
                    .map(|r| r.attempts + 1)
                    .unwrap_or(1);
                match policy(&e, attempts) {
                    Action::Retry => self.retry_later(&id, &e.to_string(), kept),
                    Action::Fail(phase) => {
                        if let Err(failed) = self.give_up(&id, e.to_string(), phase).await {
                            self.retry_later(&id, &failed.to_string(), kept);
                        } else {
                            self.retry_at.lock().unwrap().remove(&id);
                        }
                    }
                }
            }
            Err(StepError::Store(e)) => self.retry_later(&id, &format!("job store: {e}"), kept),
            Err(StepError::Held) => {}
        }
        // Only now, its retry recorded: a reconcile pass on another thread must not start a
        // driver for it before the pause is known. A job held for the publisher is looked
        // at again on the next tick.
        self.active.lock().unwrap().remove(&id);
        // No wake-up for the loop here: every other unfinished job has its driver already
        // (waiting for a slot this one may just have freed), a retry waits for its time, and
        // a pass per ended drive read every job in flight for nothing.
    }

    fn retry_later(&self, id: &str, reason: &str, kept: Slots) {
        let mut retries = self.retry_at.lock().unwrap();
        let attempts = retries.get(id).map(|r| r.attempts + 1).unwrap_or(1);
        let delay = Duration::from_millis(
            self.config
                .retry_backoff_ms
                .max(1)
                .saturating_mul(1 << attempts.min(6)),
        );
        warn!(job = %id, attempt = attempts, "will retry in {delay:?}: {reason}");
        let retry = Retry {
            at: Instant::now() + delay,
            attempts,
            reason: reason.to_string(),
            kept,
        };
        retries.insert(id.to_string(), retry);
    }

    /// The job's last failure, for the reason it ends with when it runs out of time.
    fn last_failure(&self, id: &str) -> String {
        self.retry_at
            .lock()
            .unwrap()
            .get(id)
            .map(|r| format!(" (last attempt: {})", r.reason))
            .unwrap_or_default()
    }

    /// Whether an unfinished job ran out of time: every job has a bound, whatever its input,
    /// its algorithm or the backend do. Before its run it must start within
    /// `limits.max_wait_secs` of its submission; once running, end within its timeout plus
    /// `limits.grace_secs`; once a stop is asked for, end within the grace. Returns how the
    /// job ends and why, or how long it has left.
    fn overdue(&self, job: &Job) -> Result<Duration, (Outcome, String)> {
        let limits = &self.config.limits;
        let now = now_epoch();
        let grace = limits.grace_secs as f64;
        let mut left = match job.phase {
            Phase::Queued | Phase::Staging | Phase::Provisioned => {
                let end = job.date_created + limits.max_wait_secs as f64;
                if now > end {
                    return Err((
                        Outcome::Failed,
                        format!(
                            "the job did not start within {} s of its submission (limits.max_wait_secs){}; nothing ran",
                            limits.max_wait_secs,
                            self.last_failure(&job.id)
                        ),
                    ));
                }
                end - now
            }
            Phase::Filtering if job.release_pending() => {
                // Under review: the publisher has limits.max_wait_secs after the run's bound.
                let end = job.date_started.unwrap_or(job.date_created)
                    + job.timeout_secs as f64
                    + grace
                    + limits.max_wait_secs as f64;
                if now > end {
                    return Err((
                        Outcome::Failed,
                        format!(
                            "the publisher did not review the outputs within {} s (limits.max_wait_secs); nothing was published",
                            limits.max_wait_secs
                        ),
                    ));
                }
                end - now
            }
            _ => {
                let end =
                    job.date_started.unwrap_or(job.date_created) + job.timeout_secs as f64 + grace;
                if now > end {
                    return Err((
                        Outcome::Failed,
                        format!(
                            "the job did not end within its {} s limit plus {} s of grace (limits.grace_secs){}",
                            job.timeout_secs,
                            limits.grace_secs,
                            self.last_failure(&job.id)
                        ),
                    ));
                }
                end - now
            }
        };
        if job.stop_requested {
            let seen = *self
                .stop_seen
                .lock()
                .unwrap()
                .entry(job.id.clone())
                .or_insert_with(Instant::now);
            let waited = seen.elapsed().as_secs_f64();
            if waited > grace {
                return Err((
                    Outcome::Stopped,
                    format!(
                        "stopped on request; the backend did not confirm within {} s{}, and its run is removed once it answers",
                        limits.grace_secs,
                        self.last_failure(&job.id)
                    ),
                ));
            }
            left = left.min(grace - waited);
        }
        Ok(Duration::from_secs_f64(left.max(0.0)))
    }

    /// Ends a job the policy gave up on, with the reason. A finished job (its after-run steps
    /// failed) is left to them: they retry on their own.
    async fn give_up(&self, id: &str, reason: String, phase: Phase) -> Result<(), StepError> {
        let Some(job) = self.store.get(id).await? else {
            return Ok(());
        };
        if job.is_finished() {
            return Err(StepError::Retry(reason));
        }
        self.fail(&job, phase, reason).await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn drive_steps(
        &self,
        id: &str,
        cancel: &CancellationToken,
        slots: &mut Slots,
    ) -> Result<(), StepError> {
        loop {
            let Some(job) = self.store.get(id).await? else {
                return Ok(());
            };
            if job.is_finished() {
                // Its after-run steps hold no slot (a job that failed before its run held
                // its place ahead of the runs until here).
                *slots = Slots::default();
                // One after-run step per turn, each re-reading the job: a removal can arrive
                // meanwhile.
                if self.after_run_step(&job).await? {
                    continue;
                }
                return Ok(());
            }
            // A stop before the algorithm ran ends the job at once.
            if job.stop_requested
                && matches!(
                    job.phase,
                    Phase::Queued | Phase::Staging | Phase::Provisioned
                )
            {
                let reason = if job.removed {
                    "removed before it ran"
                } else {
                    "stopped before it ran"
                };
                self.finish(&job, Outcome::Stopped, Some(reason.into()), Phase::Finished)
                    .await?;
                continue;
            }
            // A job whose dataset asks for approval goes no further until it is given.
            if job.phase == Phase::Queued {
                match self.approval_gate(&job).await? {
                    Gate::Open => {}
                    Gate::Held => return Err(StepError::Held),
                    Gate::Ended => continue,
                }
            }
            let left = match self.overdue(&job) {
                Ok(left) => left,
                Err((outcome, reason)) => {
                    self.finish(&job, outcome, Some(reason), Phase::Finished)
                        .await?;
                    continue;
                }
            };
            let started = Instant::now();
            let phase = job.phase;
            // No step outlasts the job's bound: one that hangs (an engine that accepts the
            // connection and never answers) is cut there, and the next turn ends the job.
            let step = self.run_step(&job, cancel, slots, started);
            match tokio::time::timeout(left, step).await {
                Ok(done) => done?,
                Err(_) => {
                    return Err(StepError::Retry(format!(
                        "phase {} did not end in time",
                        phase.code()
                    )));
                }
            }
            metrics::histogram!("brizo_job_phase_seconds", "phase" => phase.name())
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// One step of an unfinished job, from its phase: the slots it needs first, then the
    /// run step.
    async fn run_step(
        &self,
        job: &Job,
        cancel: &CancellationToken,
        slots: &mut Slots,
        started: Instant,
    ) -> Result<(), StepError> {
        match job.phase {
            Phase::Queued | Phase::Staging => self.stage_in_turn(job, cancel, slots).await?,
            Phase::Provisioned => {
                // In line from when its staging ended, as its status counts.
                if slots.run.is_none() {
                    tokio::select! {
                        place = self.run_slots.take((job.ready_at(), &job.id)) => slots.run = Some(place),
                        _ = cancel.cancelled() => return Ok(()),
                    }
                }
                if let Err(e) = self.start_run(job, started).await {
                    // No run slot is left idle for a job waiting to be tried again.
                    slots.run = None;
                    return Err(e);
                }
                // Its run started, the job is no longer ahead of the runs: the next one may
                // stage. (Not before: a start that failed leaves it staged, waiting to be
                // tried again.)
                slots.ahead = None;
            }
            Phase::Running => {
                // A job re-attached after a restart takes a slot when one is free, but
                // never waits for one: its container already runs.
                if slots.running.is_none() {
                    slots.running = slots.run.take().or_else(|| self.run_slots.try_take());
                }
                self.follow_run(job, cancel, started).await?;
                slots.running = None;
            }
            Phase::Filtering => self.filter_outputs(job, started).await?,
            Phase::Publishing => self.publish(job, started).await?,
            Phase::Finished
            | Phase::DataProvisioningFailed
            | Phase::AlgorithmProvisioningFailed => unreachable!(),
        }
        Ok(())
    }

    /// Stages a queued job once it has its place ahead of the runs and a staging slot, within
    /// the job's own time limit; a stop or removal ends the wait or the staging at once.
    async fn stage_in_turn(
        &self,
        job: &Job,
        cancel: &CancellationToken,
        slots: &mut Slots,
    ) -> Result<(), StepError> {
        let id = job.id.as_str();
        // A stop while waiting for a slot ends the wait (the loop then finishes the job).
        // The place ahead of the runs first, kept until the run starts; then a
        // staging slot, for the staging only.
        // Both in the order of submission, as the job's status counts its place (a job
        // found staging after a restart keeps the place its submission gave it).
        let turn = (job.date_created, id);
        if slots.ahead.is_none() {
            // Never a staging slot held while waiting for a place (see `slots_held`).
            slots.staging = None;
            tokio::select! {
                ahead = self.ahead_slots.take(turn) => slots.ahead = Some(ahead),
                _ = cancel.cancelled() => return Ok(()),
            }
        }
        let _slot = match slots.staging.take() {
            Some(slot) => slot,
            None => tokio::select! {
                slot = self.staging_slots.take(turn) => slot,
                _ = cancel.cancelled() => return Ok(()),
            },
        };
        let mut job = job.clone();
        if job.phase == Phase::Queued {
            job.timings.queued_ms =
                Some(((now_epoch() - job.date_created).max(0.0) * 1000.0) as u64);
            let transition = Transition {
                timings: Some(job.timings.clone()),
                ..Default::default()
            };
            self.store
                .transition(id, Phase::Staging, transition)
                .await?;
        }
        // Staging has the job's own time limit, counted from when it began (so a
        // restart does not start it over), and a stop or removal ends it at once.
        let began = job.staging_began();
        let left =
            Duration::from_secs_f64((began + job.timeout_secs as f64 - now_epoch()).max(0.0));
        tokio::select! {
            staged = tokio::time::timeout(left, self.stage(&job)) => match staged {
                Ok(staged) => staged?,
                Err(_) => {
                    let reason = format!(
                        "the job's inputs did not arrive within its {} s limit; nothing ran",
                        job.timeout_secs
                    );
                    self.fail(&job, Phase::DataProvisioningFailed, reason).await?;
                }
            },
            _ = cancel.cancelled() => return Ok(()),
        }
        Ok(())
    }

    /// Removes containers and job folders that belong to no unfinished job of this instance
    /// (left by a crash between finishing and cleaning, or by a deleted database).
    pub async fn sweep_orphans(&self) {
        let mut folders = vec![];
        if let Ok(mut dir) = tokio::fs::read_dir(self.config.jobs_dir()).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                folders.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        for (name, backend) in &self.backends {
            let runs = match backend.list_runs().await {
                Ok(runs) => runs,
                Err(e) => {
                    warn!(backend = %name, "orphan sweep: {e}");
                    continue;
                }
            };
            for id in runs {
                if self.is_orphan(&id).await {
                    info!(job = %id, backend = %name, "removing the run of a finished or unknown job");
                    if let Err(e) = backend.remove(&id).await {
                        warn!(job = %id, "orphan run: {e}");
                    }
                }
            }
        }
        for id in folders {
            if self.is_orphan(&id).await {
                let _ = Workspace::new(&self.config.jobs_dir(), &id).remove().await;
            }
        }
    }

    async fn is_orphan(&self, id: &str) -> bool {
        if self.active.lock().unwrap().contains_key(id) {
            return false;
        }
        match self.store.is_settled(id).await {
            Ok(settled) => settled,
            Err(e) => {
                warn!("orphan sweep: {e}");
                false
            }
        }
    }
}
