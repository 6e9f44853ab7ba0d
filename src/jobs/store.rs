//! Durable job records in SQLite. Every phase change is written here before the engine acts
//! on it, so a restart knows exactly where each job stood.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::model::{
    AgreementRecord, Approval, Job, JobRequest, Outcome, OutputFile, Phase, PhaseTimings, Sealed,
    Settlement, StagedDigests,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job store holds a record it cannot read ({0}); was it written by a newer brizo?")]
    Corrupt(String),
}

/// An unfinished job's place in the queue: what [`JobStore::queue`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub id: String,
    pub phase: Phase,
    pub stop_requested: bool,
    /// Waiting for the publisher's approval: not in line for a slot.
    pub pending_approval: bool,
    /// When it got in line for its current slot: created, plus the time it queued and staged.
    pub ready_at: f64,
}

#[derive(Clone)]
pub struct JobStore {
    pool: SqlitePool,
    cache: std::sync::Arc<ReadCache>,
}

/// Finished jobs with work left: an agreement to settle (removed or not), a results asset or
/// a receipt to issue, or a removed job's leftovers to clear.
/// The jobs the reconcile loop drives, oldest first (from the `jobs_to_drive` index alone).
/// Both lists come as one row, `id:status` joined by commas: sqlx's SQLite worker hands each
/// row to the async side over a channel, and in a burst a pass read hundreds of rows, more
/// than once per job.
const UNFINISHED_IDS: &str = "SELECT group_concat(job, ',') FROM (SELECT id || ':' || status AS job
     FROM jobs WHERE status NOT IN (31, 32, 70) ORDER BY date_created)";
/// Finished jobs with work left after the run; the condition is the `jobs_unsettled` index's
/// (migrations/0012), word for word, so that SQLite reads that index and not every job.
const UNSETTLED_IDS: &str = "SELECT group_concat(id || ':' || status, ',')
     FROM jobs WHERE status IN (31, 32, 70) AND (
        (agreement IS NOT NULL AND settlement IS NULL)
        OR (removed = 0 AND (receipt IS NULL
            OR (status = 70 AND outcome = 'succeeded' AND results_did IS NULL
                AND json_extract(agreement, '$.output.publishOutput') IN (1, '1', 'true'))))
        OR (removed = 1 AND cleared = 0))";

/// One page of the dashboard's job list (see [`JobStore::page`]).
const PAGE: &str = "SELECT * FROM jobs WHERE removed = 0
               AND (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR outcome = ?2)
               AND (?3 IS NULL OR backend = ?3) AND (?4 IS NULL OR owner = ?4)
               AND (?5 IS NULL OR date_created < ?5)
             ORDER BY date_created DESC LIMIT ?6";

/// What the dashboard filters jobs by; `None`: any.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<i64>,
    pub outcome: Option<String>,
    pub backend: Option<String>,
    pub owner: Option<String>,
    pub before: Option<f64>,
    pub limit: i64,
}

/// The fields a phase change writes.
#[derive(Debug, Default)]
pub struct Transition {
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub image_digest: Option<String>,
    pub date_started: Option<f64>,
    pub date_finished: Option<f64>,
    pub outputs: Option<Vec<OutputFile>>,
    pub timings: Option<PhaseTimings>,
}

impl JobStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash (kill -9) without losing committed rows.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // 1 MiB of page cache per connection instead of 2: the hot rows are in the read
            // cache above it, and the OS caches the file anyway.
            .pragma("cache_size", "-1024");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        super::schema::migrator().run(&pool).await?;
        Ok(Self {
            pool,
            cache: Default::default(),
        })
    }

    /// Runs `query`, a write of job `id` that ends in `RETURNING *`, and keeps the row it
    /// returns in the read cache: the engine reads each job again right after each of its
    /// writes, and those reads were most of the queries a job cost.
    async fn write_returning<'q>(
        &self,
        id: &str,
        query: sqlx::query::Query<'q, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>,
    ) -> Result<(), StoreError> {
        let seen = self.cache.writes();
        let row = query.fetch_optional(&self.pool).await?;
        match row.as_ref().map(job_from_row) {
            Some(Ok(job)) => self.cache.replace(job, seen),
            // Written, but not readable back (or gone): the next read goes to the database.
            _ => self.cache.forget(id),
        }
        Ok(())
    }

    /// The database, for the other stores that live in it.
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    pub async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        let query = sqlx::query(
            "INSERT INTO jobs (id, owner, request, status, timeout_secs, date_created, timings, agreement, backend, backend_reason, approval, release)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&job.id)
        .bind(&job.owner)
        .bind(serde_json::to_string(&job.request).expect("request serializes"))
        .bind(job.phase.code())
        .bind(job.timeout_secs as i64)
        .bind(job.date_created)
        .bind(serde_json::to_string(&job.timings).expect("timings serialize"))
        .bind(job.agreement.as_ref().map(|a| serde_json::to_string(a).expect("agreement serializes")))
        .bind(&job.backend)
        .bind(&job.backend_reason)
        .bind(job.approval.as_ref().map(|a| serde_json::to_string(a).expect("approval serializes")))
        .bind(job.release.as_ref().map(|a| serde_json::to_string(a).expect("release serializes")));
        self.write_returning(&job.id, query).await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self.cache.get(id) {
            return Ok(Some(job));
        }
        let seen = self.cache.writes();
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let job = row.map(|r| job_from_row(&r)).transpose()?;
        if let Some(job) = &job {
            self.cache.keep(job, seen);
        }
        Ok(job)
    }

    /// Jobs visible to `owner` (all owners when `None`), newest first, removed ones left out.
    pub async fn list(&self, owner: Option<&str>, limit: i64) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE removed = 0 AND (?1 IS NULL OR owner = ?1)
             ORDER BY date_created DESC LIMIT ?2",
        )
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every job the engine still has to drive, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE status NOT IN (31, 32, 70) ORDER BY date_created",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The unfinished jobs as the queue sees them, oldest first: only the few fields a place
    /// in the queue depends on. A status poll of a queued job asks for this; with hundreds
    /// queued, reading and parsing every whole record (requests, algorithms) for each poll
    /// was most of the service's CPU under a burst.
    ///
    /// Only the jobs in `phases` (at most two: a place in a queue only counts among the jobs
    /// waiting for the same kind of slot), so a poll of a job waiting for a run slot does not
    /// read the hundreds waiting to stage.
    pub async fn queue(&self, phases: &[Phase]) -> Result<Vec<QueueEntry>, StoreError> {
        let Some(first) = phases.first() else {
            return Ok(vec![]);
        };
        let second = phases.get(1).unwrap_or(first);
        assert!(phases.len() <= 2, "queue: at most two phases");
        let rows = sqlx::query(
            "SELECT id, status, stop_requested, date_created,
                    json_extract(approval, '$.state') = 'pending' AS pending,
                    coalesce(json_extract(timings, '$.queuedMs'), 0)
                      + coalesce(json_extract(timings, '$.stagingMs'), 0) AS staged_ms
             FROM jobs WHERE status IN (?1, ?2) AND status NOT IN (31, 32, 70)
             ORDER BY date_created",
        )
        .bind(first.code())
        .bind(second.code())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: i64 = r.try_get("status")?;
                let staged_ms: i64 = r.try_get("staged_ms")?;
                let created: f64 = r.try_get("date_created")?;
                Ok(QueueEntry {
                    id: r.try_get("id")?,
                    phase: Phase::from_code(status)
                        .ok_or_else(|| StoreError::Corrupt(format!("status: {status}")))?,
                    stop_requested: r.try_get::<i64, _>("stop_requested")? != 0,
                    pending_approval: r.try_get::<Option<bool>, _>("pending")?.unwrap_or(false),
                    ready_at: created + staged_ms as f64 / 1000.0,
                })
            })
            .collect()
    }

    /// How many jobs are ahead of `job` in its queue (the jobs of its phase that wait for the
    /// same kind of slot and got in line before it), but for those in `away` (out of line for
    /// now: a retry's pause), counted by SQLite: a poll of one queued job among hundreds
    /// reads one number, not hundreds of entries.
    pub async fn ahead_of(&self, job: &Job, away: &[String]) -> Result<usize, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS ahead FROM (
               SELECT id, date_created
                    + (coalesce(json_extract(timings, '$.queuedMs'), 0)
                       + coalesce(json_extract(timings, '$.stagingMs'), 0)) / 1000.0 AS ready_at
               FROM jobs
               WHERE status = ?1 AND status NOT IN (31, 32, 70) AND stop_requested = 0
                 AND coalesce(json_extract(approval, '$.state') = 'pending', 0) = 0
                 AND id NOT IN (SELECT value FROM json_each(?4)))
             WHERE ready_at < ?2 OR (ready_at = ?2 AND id < ?3)",
        )
        .bind(job.phase.code())
        .bind(job.ready_at())
        .bind(&job.id)
        .bind(serde_json::to_string(away).expect("ids serialize"))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("ahead")? as usize)
    }

    /// Ids of jobs whose runs and folders must be gone: finished or removed.
    pub async fn is_settled(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT status, removed FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => true,
            Some(r) => {
                let status: i64 = r.try_get("status")?;
                Phase::from_code(status).is_none_or(|p| p.is_terminal())
            }
        })
    }

    /// Moves a job to `phase`, writing the given fields alongside (others stay as they are).
    pub async fn transition(
        &self,
        id: &str,
        phase: Phase,
        t: Transition,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(
            "UPDATE jobs SET status = ?,
                outcome = COALESCE(?, outcome), error = COALESCE(?, error),
                exit_code = COALESCE(?, exit_code), image_digest = COALESCE(?, image_digest),
                date_started = COALESCE(?, date_started), date_finished = COALESCE(?, date_finished),
                outputs = COALESCE(?, outputs), timings = COALESCE(?, timings)
             WHERE id = ? RETURNING *",
        )
        .bind(phase.code())
        .bind(t.outcome.map(|o| o.as_str()))
        .bind(t.error)
        .bind(t.exit_code)
        .bind(t.image_digest)
        .bind(t.date_started)
        .bind(t.date_finished)
        .bind(t.outputs.map(|o| serde_json::to_string(&o).expect("outputs serialize")))
        .bind(t.timings.map(|o| serde_json::to_string(&o).expect("timings serialize")))
        .bind(id);
        self.write_returning(id, query).await
    }

    pub async fn set_staged(&self, id: &str, staged: &StagedDigests) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET staged = ? WHERE id = ? RETURNING *")
            .bind(serde_json::to_string(staged).expect("digests serialize"))
            .bind(id);
        self.write_returning(id, query).await
    }

    pub async fn mark_cleared(&self, id: &str) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET cleared = 1 WHERE id = ? RETURNING *").bind(id);
        self.write_returning(id, query).await
    }

    pub async fn set_results_did(&self, id: &str, did: &str) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET results_did = ? WHERE id = ? RETURNING *")
            .bind(did)
            .bind(id);
        self.write_returning(id, query).await
    }

    pub async fn set_receipt(&self, id: &str, receipt: &str) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET receipt = ? WHERE id = ? RETURNING *")
            .bind(receipt)
            .bind(id);
        self.write_returning(id, query).await
    }

    pub async fn set_settlement(
        &self,
        id: &str,
        settlement: &Settlement,
    ) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET settlement = ? WHERE id = ? RETURNING *")
            .bind(serde_json::to_string(settlement).expect("settlement serializes"))
            .bind(id);
        self.write_returning(id, query).await
    }

    /// Jobs of `owner` under `agreement_id` (v1 lists), oldest first, removed ones included
    /// (a v1 client sees `removed: 1`).
    pub async fn by_agreement(
        &self,
        owner: &str,
        agreement_id: &str,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE owner = ? AND json_extract(agreement, '$.agreementId') = ? ORDER BY date_created")
            .bind(owner)
            .bind(agreement_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The jobs the engine drives, by id and phase only (the loop looks at them on every
    /// wake-up; decoding whole records for it cost a burst of jobs more CPU than their runs):
    /// the unfinished ones, oldest first, then the finished ones with work left.
    pub async fn to_drive(&self) -> Result<Vec<(String, Phase)>, StoreError> {
        let mut jobs = vec![];
        for query in [UNFINISHED_IDS, UNSETTLED_IDS] {
            let joined: Option<String> = sqlx::query_scalar(query).fetch_one(&self.pool).await?;
            for entry in joined.iter().flat_map(|j| j.split(',')) {
                let (id, phase) = entry
                    .split_once(':')
                    .and_then(|(id, status)| Some((id, Phase::from_code(status.parse().ok()?)?)))
                    .ok_or_else(|| StoreError::Corrupt(format!("job and status: {entry}")))?;
                jobs.push((id.to_string(), phase));
            }
        }
        Ok(jobs)
    }

    /// Records the publisher's decision, only while it is still pending (two operators
    /// deciding at once: the first one's decision stands). True when it was recorded.
    pub async fn decide(&self, id: &str, approval: &Approval) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET approval = ? WHERE id = ? AND json_extract(approval, '$.state') = 'pending'",
        )
        .bind(serde_json::to_string(approval).expect("approval serializes"))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.cache.forget(id);
        Ok(done.rows_affected() == 1)
    }

    /// One page of jobs, newest first, for the dashboard: those matching every filter given,
    /// created before `before` (the last one of the previous page).
    pub async fn page(&self, f: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(PAGE)
            .bind(f.status)
            .bind(&f.outcome)
            .bind(&f.backend)
            .bind(&f.owner)
            .bind(f.before)
            .bind(f.limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Changes whenever any job does (a cheap look for live views): the count of writes this
    /// process made, which are all the writes there are. Reading the table for it cost a scan
    /// of every job per look, per open dashboard.
    pub async fn fingerprint(&self) -> Result<String, StoreError> {
        Ok(self.cache.writes().to_string())
    }

    /// Jobs finished since `since`, by hour and outcome; and the timings of the last `recent`
    /// finished jobs.
    pub async fn finished_since(&self, since: f64) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT CAST(date_finished / 3600 AS INTEGER) AS hour, COALESCE(outcome, 'failed') AS outcome, COUNT(*) AS n
             FROM jobs WHERE date_finished >= ? GROUP BY hour, outcome ORDER BY hour",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("hour")?, r.try_get("outcome")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn recent_timings(&self, recent: i64) -> Result<Vec<PhaseTimings>, StoreError> {
        let rows = sqlx::query(
            "SELECT timings FROM jobs WHERE date_finished IS NOT NULL ORDER BY date_finished DESC LIMIT ?",
        )
        .bind(recent)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("timings").ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }

    /// Records what an encrypted job published.
    pub async fn set_sealed(&self, id: &str, sealed: &Sealed) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE jobs SET sealed = ? WHERE id = ? RETURNING *")
            .bind(serde_json::to_string(sealed).expect("sealed serializes"))
            .bind(id);
        self.write_returning(id, query).await
    }

    /// Records the publisher's release (or withholding) of the outputs, only while pending.
    pub async fn decide_release(&self, id: &str, release: &Approval) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET release = ? WHERE id = ? AND json_extract(release, '$.state') = 'pending'",
        )
        .bind(serde_json::to_string(release).expect("release serializes"))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.cache.forget(id);
        Ok(done.rows_affected() == 1)
    }

    pub async fn request_stop(&self, id: &str) -> Result<(), StoreError> {
        let query =
            sqlx::query("UPDATE jobs SET stop_requested = 1 WHERE id = ? RETURNING *").bind(id);
        self.write_returning(id, query).await
    }

    /// Marks a job removed (and stopping, if it still runs); the engine clears what it left.
    pub async fn mark_removed(&self, id: &str) -> Result<(), StoreError> {
        let query =
            sqlx::query("UPDATE jobs SET removed = 1, stop_requested = 1 WHERE id = ? RETURNING *")
                .bind(id);
        self.write_returning(id, query).await
    }

    pub async fn stop_requested(&self, id: &str) -> Result<(bool, bool), StoreError> {
        if let Some(job) = self.cache.get(id) {
            return Ok((job.stop_requested, job.removed));
        }
        let row = sqlx::query("SELECT stop_requested, removed FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => (
                r.try_get::<i64, _>("stop_requested")? != 0,
                r.try_get::<i64, _>("removed")? != 0,
            ),
            None => (true, true),
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn job_from_row(r: &SqliteRow) -> Result<Job, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let status: i64 = r.try_get("status")?;
    let request: String = r.try_get("request")?;
    let outputs: String = r.try_get("outputs")?;
    let timings: String = r.try_get("timings")?;
    let outcome: Option<String> = r.try_get("outcome")?;
    let agreement: Option<String> = r.try_get("agreement")?;
    let settlement: Option<String> = r.try_get("settlement")?;
    let staged: Option<String> = r.try_get("staged")?;
    let approval: Option<String> = r.try_get("approval")?;
    let release: Option<String> = r.try_get("release")?;
    let sealed: Option<String> = r.try_get("sealed")?;
    Ok(Job {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        request: serde_json::from_str::<JobRequest>(&request)
            .map_err(|e| corrupt("request", &e))?,
        phase: Phase::from_code(status).ok_or_else(|| corrupt("status", &status))?,
        outcome: match outcome {
            Some(o) => Some(Outcome::parse(&o).ok_or_else(|| corrupt("outcome", &o))?),
            None => None,
        },
        error: r.try_get("error")?,
        exit_code: r.try_get("exit_code")?,
        image_digest: r.try_get("image_digest")?,
        timeout_secs: r.try_get::<i64, _>("timeout_secs")? as u64,
        stop_requested: r.try_get::<i64, _>("stop_requested")? != 0,
        removed: r.try_get::<i64, _>("removed")? != 0,
        cleared: r.try_get::<i64, _>("cleared")? != 0,
        date_created: r.try_get("date_created")?,
        date_started: r.try_get("date_started")?,
        date_finished: r.try_get("date_finished")?,
        outputs: serde_json::from_str(&outputs).map_err(|e| corrupt("outputs", &e))?,
        timings: serde_json::from_str(&timings).map_err(|e| corrupt("timings", &e))?,
        agreement: agreement
            .map(|a| serde_json::from_str::<AgreementRecord>(&a))
            .transpose()
            .map_err(|e| corrupt("agreement", &e))?,
        settlement: settlement
            .map(|s| serde_json::from_str::<Settlement>(&s))
            .transpose()
            .map_err(|e| corrupt("settlement", &e))?,
        staged: staged
            .map(|s| serde_json::from_str::<StagedDigests>(&s))
            .transpose()
            .map_err(|e| corrupt("staged", &e))?,
        receipt: r.try_get("receipt")?,
        approval: approval
            .map(|a| serde_json::from_str::<Approval>(&a))
            .transpose()
            .map_err(|e| corrupt("approval", &e))?,
        release: release
            .map(|a| serde_json::from_str::<Approval>(&a))
            .transpose()
            .map_err(|e| corrupt("release", &e))?,
        sealed: sealed
            .map(|a| serde_json::from_str::<Sealed>(&a))
            .transpose()
            .map_err(|e| corrupt("sealed", &e))?,
        results_did: r.try_get("results_did")?,
        backend: r.try_get("backend")?,
        backend_reason: r.try_get("backend_reason")?,
    })
}

/// The jobs read by id lately, as the store holds them. Status polls (a client's, the
/// dashboard's, the engine's own steps) read the same few jobs over and over; going to SQLite
/// for each made the status path a sixth of the server's speed. Only this process writes the
/// jobs table, and every write forgets its job here after it is committed, so a hit is what a
/// read of the row would give.
#[derive(Default)]
struct ReadCache {
    jobs: std::sync::Mutex<std::collections::HashMap<String, Job>>,
    /// Counts writes: a read that saw a write happen while it went to the database does not
    /// keep what it read (the row may be older than the write).
    writes: std::sync::atomic::AtomicU64,
}

/// Enough for every job a publisher's clients poll at once; beyond it, one is dropped per
/// insert (which one does not matter: a miss only costs a query).
const CACHED_JOBS: usize = 512;

impl ReadCache {
    fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn keep(&self, job: &Job, writes_seen: u64) {
        let mut jobs = self.jobs.lock().unwrap();
        // Checked under the lock `forget` takes too: no write can slip in between.
        if self.writes() != writes_seen {
            return;
        }
        if jobs.len() >= CACHED_JOBS
            && let Some(any) = jobs.keys().next().cloned()
        {
            jobs.remove(&any);
        }
        jobs.insert(job.id.clone(), job.clone());
    }

    /// After a write of `job` that returned its row: keeps that row when no other write
    /// ended since `writes_seen` (read before the write began), which makes it the latest.
    /// A write that committed after it but had not ended yet forgets it when it ends.
    fn replace(&self, job: Job, writes_seen: u64) {
        let mut jobs = self.jobs.lock().unwrap();
        let before = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if before != writes_seen {
            jobs.remove(&job.id);
            return;
        }
        if jobs.len() >= CACHED_JOBS
            && !jobs.contains_key(&job.id)
            && let Some(any) = jobs.keys().next().cloned()
        {
            jobs.remove(&any);
        }
        jobs.insert(job.id.clone(), job);
    }

    fn forget(&self, id: &str) {
        let mut jobs = self.jobs.lock().unwrap();
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        jobs.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            owner: "alice".into(),
            request: serde_json::from_value(serde_json::json!({
                "image": "brizo/python:3.11-bookworm", "entrypoint": "python3 $ALGO",
                "algorithm": {"rawcode": "print(1)"}}))
            .unwrap(),
            phase: Phase::Queued,
            outcome: None,
            error: None,
            exit_code: None,
            image_digest: None,
            timeout_secs: 60,
            stop_requested: false,
            removed: false,
            cleared: false,
            date_created: 1.0,
            date_started: None,
            date_finished: None,
            outputs: vec![],
            timings: PhaseTimings::default(),
            agreement: None,
            settlement: None,
            staged: None,
            receipt: None,
            results_did: None,
            backend: "local".into(),
            backend_reason: "default".into(),
            approval: None,
            release: None,
            sealed: None,
        }
    }

    /// `EXPLAIN QUERY PLAN` of one of the store's own queries (a constant: nothing from
    /// outside), to bind as the query itself would be.
    fn explain(
        query: &str,
    ) -> sqlx::query::Query<'static, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>
    {
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
    }

    /// The plan's steps ("SCAN jobs USING INDEX ...").
    async fn query_plan(
        pool: &SqlitePool,
        explain: sqlx::query::Query<'_, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>,
    ) -> Vec<String> {
        explain
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn reads_see_every_write_and_a_read_older_than_a_write_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        store.insert(&job("j1")).await.unwrap();
        assert_eq!(store.get("j1").await.unwrap().unwrap().phase, Phase::Queued);
        // Now cached; each write must show at the next read.
        store.request_stop("j1").await.unwrap();
        assert!(store.get("j1").await.unwrap().unwrap().stop_requested);
        store
            .transition("j1", Phase::Running, Transition::default())
            .await
            .unwrap();
        assert_eq!(
            store.get("j1").await.unwrap().unwrap().phase,
            Phase::Running
        );
        store.set_receipt("j1", "{}").await.unwrap();
        assert_eq!(
            store.get("j1").await.unwrap().unwrap().receipt.as_deref(),
            Some("{}")
        );

        // A read that went to the database before a write finished is not kept.
        let stale = store.get("j1").await.unwrap().unwrap();
        store.cache.forget("j1");
        let seen = store.cache.writes();
        store.mark_removed("j1").await.unwrap();
        store.cache.keep(&stale, seen);
        assert!(store.get("j1").await.unwrap().unwrap().removed);
    }

    /// A write keeps the row it returned, so the read after it needs no query; that row is
    /// the record a read of the database gives; and a write another write overtook keeps
    /// nothing.
    #[tokio::test]
    async fn a_write_keeps_the_row_it_returned_unless_another_write_ended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        let mut submitted = job("j1");
        submitted.timings.queued_ms = Some(7);
        store.insert(&submitted).await.unwrap();
        let transition = Transition {
            image_digest: Some("sha256:abc".into()),
            date_started: Some(5.0),
            ..Default::default()
        };
        store
            .transition("j1", Phase::Running, transition)
            .await
            .unwrap();
        store.set_receipt("j1", "{\"r\":1}").await.unwrap();
        let kept = store.cache.get("j1").expect("the write's row is kept");
        assert_eq!(kept.phase, Phase::Running);
        assert_eq!(kept.receipt.as_deref(), Some("{\"r\":1}"));
        store.cache.forget("j1");
        let read = store.get("j1").await.unwrap().unwrap();
        assert_eq!(format!("{kept:?}"), format!("{read:?}"));

        // Another write ended between this one's start and its end: its row may be older.
        let seen = store.cache.writes();
        store.request_stop("j1").await.unwrap();
        store.cache.replace(kept, seen);
        assert!(store.cache.get("j1").is_none(), "an overtaken row was kept");
        assert!(store.get("j1").await.unwrap().unwrap().stop_requested);
        assert_eq!(store.stop_requested("j1").await.unwrap(), (true, false));
    }

    /// A store with a job of each kind the queue tells apart: stopped ("plain"), staged,
    /// pending approval, approved, and finished.
    async fn queue_store() -> (tempfile::TempDir, JobStore) {
        use crate::jobs::model::{Approval, ApprovalState};
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        let mut staged = job("staged");
        staged.date_created = 2.0;
        staged.phase = Phase::Provisioned;
        staged.timings.queued_ms = Some(500);
        staged.timings.staging_ms = Some(1500);
        let mut pending = job("pending");
        pending.date_created = 3.0;
        pending.approval = Some(Approval::pending());
        let mut approved = job("approved");
        approved.date_created = 4.0;
        approved.approval = Some(Approval {
            state: ApprovalState::Approved,
            ..Approval::pending()
        });
        let mut done = job("done");
        done.phase = Phase::Finished;
        for j in [job("plain"), staged, pending, approved, done] {
            store.insert(&j).await.unwrap();
        }
        store.request_stop("plain").await.unwrap();
        (dir, store)
    }

    /// The queue's light read says what the whole records say: phase, stop, a pending
    /// approval, and when each job got in line (created, plus its queued and staging time).
    #[tokio::test]
    async fn the_queue_agrees_with_the_whole_records() {
        let (_dir, store) = queue_store().await;
        let queue = store
            .queue(&[Phase::Queued, Phase::Provisioned])
            .await
            .unwrap();
        let whole = store.unfinished().await.unwrap();
        assert_eq!(queue.len(), 4, "{queue:?}");
        for (entry, job) in queue.iter().zip(&whole) {
            let expected = QueueEntry {
                id: job.id.clone(),
                phase: job.phase,
                stop_requested: job.stop_requested,
                pending_approval: job.approval_pending(),
                ready_at: job.ready_at(),
            };
            assert_eq!(entry, &expected);
        }
        assert_eq!(queue[1].ready_at, 4.0);
        assert!(queue[0].stop_requested && queue[2].pending_approval);
        assert!(!queue[3].pending_approval);
        // One phase: only its jobs.
        let staged = store.queue(&[Phase::Provisioned]).await.unwrap();
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].id, "staged");
        assert!(store.queue(&[]).await.unwrap().is_empty());
    }

    /// The count of the jobs ahead of one is its place in the queue, less one: stopped jobs
    /// and those pending approval hold no place, nor do the jobs it is told are away.
    #[tokio::test]
    async fn the_jobs_ahead_of_one_are_its_place_in_the_queue() {
        let (_dir, store) = queue_store().await;
        let mut later = job("later");
        later.date_created = 9.0;
        store.insert(&later).await.unwrap();
        let mut queue = store
            .queue(&[Phase::Queued, Phase::Provisioned])
            .await
            .unwrap();
        queue.sort_by(|a, b| a.ready_at.total_cmp(&b.ready_at));
        let mut checked = 0;
        for job in store.unfinished().await.unwrap() {
            let in_line: Vec<&QueueEntry> = queue
                .iter()
                .filter(|q| q.phase == job.phase && !q.stop_requested && !q.pending_approval)
                .collect();
            let Some(place) = in_line.iter().position(|q| q.id == job.id) else {
                continue;
            };
            assert_eq!(
                store.ahead_of(&job, &[]).await.unwrap(),
                place,
                "{}",
                job.id
            );
            checked += 1;
        }
        // approved (Queued, first in line), later (Queued, second), staged (Provisioned).
        assert_eq!(checked, 3);
        let later = store.get("later").await.unwrap().unwrap();
        assert_eq!(store.ahead_of(&later, &[]).await.unwrap(), 1);
        // A job out of line (a retry's pause) is not ahead of anyone; others are still counted.
        let approved = ["approved".to_string()];
        assert_eq!(store.ahead_of(&later, &approved).await.unwrap(), 0);
        let elsewhere = ["staged".to_string(), "nobody".to_string()];
        assert_eq!(store.ahead_of(&later, &elsewhere).await.unwrap(), 1);
    }

    /// A reconcile pass reads only what is in flight: both of its queries are answered from
    /// the indexes that hold just those jobs, never by a scan of every job ever run.
    #[tokio::test]
    async fn a_reconcile_pass_reads_only_the_jobs_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        for (query, index) in [
            (UNFINISHED_IDS, "USING COVERING INDEX jobs_to_drive"),
            (UNSETTLED_IDS, "USING INDEX jobs_unsettled"),
        ] {
            let plan = query_plan(&store.pool, explain(query)).await;
            assert!(
                plan.iter().any(|d| d.contains(index))
                    && !plan.iter().any(|d| d.contains("TEMP B-TREE")),
                "{query}: {plan:?}"
            );
        }
        // And they still find their jobs.
        let mut done = job("done");
        done.phase = Phase::Finished;
        let mut running = job("running");
        running.phase = Phase::Running;
        running.date_created = 5.0;
        store.insert(&running).await.unwrap();
        store.insert(&job("queued")).await.unwrap();
        store.insert(&done).await.unwrap();
        let found = store.to_drive().await.unwrap();
        // Oldest first; a finished job without a receipt yet still has work left.
        let expected = [
            ("queued", Phase::Queued),
            ("running", Phase::Running),
            ("done", Phase::Finished),
        ];
        assert_eq!(found, expected.map(|(id, p)| (id.to_string(), p)));
    }

    /// The dashboard pages through 100,000 jobs newest first without reading them all: each
    /// page is the next 50 by date, and SQLite walks the date index for it (no scan, no sort).
    #[tokio::test]
    async fn a_hundred_thousand_jobs_page_by_date_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).await.unwrap();
        let request = serde_json::to_string(&job("x").request).unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO jobs (id, owner, request, status, outcome, timeout_secs, date_created, timings, backend, backend_reason)
             SELECT printf('job%06d', i), 'operator', ?, 70, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
                    60, i, '{}', 'local', 'default' FROM n",
        )
        .bind(&request)
        .execute(&store.pool)
        .await
        .unwrap();

        let mut filter = JobFilter {
            limit: 50,
            ..Default::default()
        };
        let first = store.page(&filter).await.unwrap();
        assert_eq!(first.len(), 50);
        assert_eq!(first[0].id, "job100000");
        filter.before = Some(first.last().unwrap().date_created);
        let second = store.page(&filter).await.unwrap();
        assert_eq!(second[0].id, "job099950");
        // Deep in the history, filtered: every tenth job failed.
        filter.before = Some(500.0);
        filter.outcome = Some("failed".into());
        let deep = store.page(&filter).await.unwrap();
        assert_eq!(deep.len(), 49);
        assert_eq!(deep[0].id, "job000490");
        assert!(deep.iter().all(|j| j.outcome == Some(Outcome::Failed)));

        let plan = query_plan(
            &store.pool,
            explain(PAGE)
                .bind(None::<i64>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(Some(99_000.0))
                .bind(50),
        )
        .await;
        assert!(
            plan.iter().any(|d| d.contains("USING INDEX jobs_created"))
                && !plan.iter().any(|d| d.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
